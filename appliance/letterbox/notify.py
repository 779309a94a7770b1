"""Telling systemd how the box is doing (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

The unit is `Type=notify` (appliance/systemd/letterbox.service): systemd counts the
box as started only at READY=1, which `Appliance.start` sends once every listener
is bound, shows the STATUS line in `systemctl status`, restarts the process when
WATCHDOG=1 stops arriving within `WatchdogSec`, and knows a slow stop is a drain
when STOPPING=1 came first.

sdnotify does the socket work, but it encodes as Latin-1, swallows every error
unless `debug=True`, and connects once (docs/findings.md, "sdnotify"). So this module is the only
user of it: it keeps STATUS to one line of ASCII (a newline would start a new
field, and systemd expects UTF-8), logs a failure once instead of never, and
reconnects once on error (systemd re-executing itself rebinds its socket).

Without NOTIFY_SOCKET (a developer's terminal, the tests) every call is a no-op.

The watchdog ping is a task on the event loop itself, not a thread: a thread
would keep pinging while the loop is wedged, and the wedged loop is exactly what
the watchdog is there to catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import unicodedata
from collections.abc import Callable, Mapping

import sdnotify

log = logging.getLogger("letterbox.notify")

MAX_STATUS = 400  # systemctl shows one line; keep it readable


def ascii_line(text: str) -> str:
    """One line of printable ASCII: accents dropped (é → e), anything else → '?'."""
    flat = unicodedata.normalize("NFKD", text)
    out = []
    for ch in flat:
        if unicodedata.combining(ch):
            continue
        if ch in "\r\n\t":
            out.append(" ")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("?")
    return " ".join("".join(out).split())[:MAX_STATUS]


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of WatchdogSec, as sd_watchdog_enabled(3) advises),
    or None when systemd does not watch this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # WATCHDOG_PID names the process the watchdog is for; a child that inherited the
    # environment must not ping on its parent's behalf.
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    """The process's one channel to systemd; harmless when systemd is not listening."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self.interval = watchdog_interval(env, os.getpid()) if self.address else None
        self._sd: sdnotify.SystemdNotifier | None = None
        self._warned = False
        self._watchdog: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._last_status: str | None = None
        self.sent: list[str] = []  # what went out, for the log and the tests

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _connect(self) -> sdnotify.SystemdNotifier | None:
        previous = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = self.address or ""
        try:
            return sdnotify.SystemdNotifier(debug=True)
        except (OSError, TypeError, IndexError) as exc:
            self._warn(f"cannot reach systemd at {self.address}: {exc}")
            return None
        finally:
            if previous is None:
                os.environ.pop("NOTIFY_SOCKET", None)
            else:
                os.environ["NOTIFY_SOCKET"] = previous

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning("%s (further notification errors are not logged)", message)
            self._warned = True

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one datagram; False if it could not go out."""
        if not self.enabled:
            return False
        message = "\n".join(fields)
        for attempt in (1, 2):
            if self._sd is None:
                self._sd = self._connect()
                if self._sd is None:
                    return False
            try:
                self._sd.notify(message)
            except OSError as exc:
                self._sd = None  # reconnect once: systemd may have rebound its socket
                if attempt == 2:
                    self._warn(f"cannot notify systemd: {exc}")
                    return False
                continue
            self.sent.append(message)
            return True
        return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={ascii_line(status)}")
        self._last_status = ascii_line(status)

    def status(self, text: str) -> None:
        """Send STATUS= only when the line changed."""
        line = ascii_line(text)
        if line != self._last_status:
            self._last_status = line
            self.send(f"STATUS={line}")

    def stopping(self, status: str = "Stopping: letting sessions finish") -> None:
        self.send("STOPPING=1", f"STATUS={ascii_line(status)}")
        self._last_status = ascii_line(status)

    # -- tasks on the event loop ---------------------------------------------------------

    def start(self, status: Callable[[], str] | None = None, refresh: float = 10.0) -> None:
        """Start the watchdog pings (if systemd asked for them) and, with `status`,
        a refresh of the STATUS line every `refresh` seconds (sent when it changed)."""
        if not self.enabled:
            return
        if self.interval is not None and self._watchdog is None:
            self._watchdog = asyncio.create_task(self._ping(self.interval), name="watchdog")
        if status is not None and self._status_task is None:
            self._status_task = asyncio.create_task(
                self._refresh(status, refresh), name="notify-status"
            )

    async def _ping(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _refresh(self, status: Callable[[], str], every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                # Building the line reads the drive (statvfs, SQLite): on a failing
                # USB stick that can hang, and the loop must keep pinging the watchdog.
                self.status(await asyncio.to_thread(status))
            except Exception:  # a status line must never take the box down
                log.exception("could not build the status line")

    async def close(self) -> None:
        for task in (self._watchdog, self._status_task):
            if task is not None:
                task.cancel()
        for task in (self._watchdog, self._status_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watchdog = self._status_task = None

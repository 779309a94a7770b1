"""Postfix's `smtp-source` as the load generator, and timing a load "until stored".

smtp-source is a small C program, so the client costs little CPU next to any of the servers
and is the same for all of them. It aborts on the first reply that is not positive, so a
server that refuses or drops mail fails the load instead of looking fast.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peers.postfix import SMTP_SOURCE


class LoadFailed(RuntimeError):
    """smtp-source exited with an error, or the messages were not all stored in time."""


@dataclass(frozen=True)
class Load:
    """One smtp-source invocation: how many messages, how big, how many parallel sessions.

    `reuse_sessions` is smtp-source's `-d` (several messages per connection); off, each
    message gets its own connection, as from independent senders on the Internet.
    """

    key: str
    title: str
    messages: int
    size: int
    sessions: int
    reuse_sessions: bool = False

    def argv(self, port: int, sender: str, recipient: str) -> list[str]:
        argv = [
            SMTP_SOURCE,
            "-s",
            str(self.sessions),
            "-m",
            str(self.messages),
            "-l",
            str(self.size),
            "-f",
            sender,
            "-t",
            recipient,
        ]
        if self.reuse_sessions:
            argv.append("-d")
        return [*argv, f"127.0.0.1:{port}"]

    def scaled(self, divisor: int) -> Load:
        """The same load with fewer messages, for trying the benchmark out quickly."""
        messages = max(1, self.messages // divisor)
        return Load(
            self.key,
            f"{self.title} (÷{divisor}: {messages} msgs)",
            messages,
            self.size,
            min(self.sessions, messages),
            self.reuse_sessions,
        )


@dataclass
class Timing:
    """When the client finished and when the last message was stored, from the load start."""

    client_seconds: float
    stored_seconds: float
    stored: int


def run_load(
    load: Load,
    port: int,
    *,
    sender: str,
    recipient: str,
    stored: Callable[[], int],
    expected: int,
    log: Path,
    timeout: float = 600.0,
) -> Timing:
    """Run smtp-source and wait until `stored()` reaches `expected`.

    The clock starts just before smtp-source starts and stops at the first poll that sees
    every message stored. Nothing is counted while smtp-source runs (no message can be
    missing once it has finished, and counting a Maildir of 10,000 files costs CPU the servers
    should have); afterwards the poll interval is 0.5 % of the time so far (20-500 ms), so
    the end is seen to within 0.5 % at little cost. For a server that answers 250 only after
    storing, `stored` returns `expected` at once and the two times are the same.
    """
    with open(log, "ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            load.argv(port, sender, recipient),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    guard = threading.Timer(timeout, proc.kill)  # a wedged server must not hang the run
    guard.start()
    try:
        returncode = proc.wait()  # blocking waitpid: the exit is seen at once
        client_done = time.monotonic()
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if client_done - started >= timeout:
        raise LoadFailed(f"smtp-source did not finish within {timeout:.0f} s")
    if returncode:
        raise LoadFailed(f"smtp-source exited {returncode}: {_tail(log)}")
    while True:
        now = time.monotonic()
        count = stored()
        if count >= expected:
            return Timing(client_done - started, now - started, count)
        if now - started > timeout:
            raise LoadFailed(
                f"after {timeout:.0f} s only {count} of {expected} messages were stored"
            )
        time.sleep(min(0.5, max(0.02, (now - started) / 200)))


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no output)"

"""systemd notification against a real AF_UNIX datagram socket that the test binds."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from letterbox.notify import Notifier, ascii_line, watchdog_interval

from tests.integration.harness import write_config


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """Our stand-in for systemd's notify socket: a bound datagram socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode("ascii"))
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return got


def test_status_text_is_one_line_of_ascii() -> None:
    assert ascii_line("Drive «Müller» online\nREADY=1") == "Drive ?Muller? online READY=1"
    assert ascii_line("a\tb  c") == "a b c"
    assert len(ascii_line("x" * 1000)) == 400


def test_watchdog_interval_is_half_of_watchdogsec_and_only_for_its_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.send("READY=1") is False
    n.ready("x")
    n.stopping()


def test_messages_arrive_and_status_is_sent_only_when_it_changes(
    systemd: tuple[str, socket.socket],
) -> None:
    path, sock = systemd
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("Receiving mail; drive online")
    n.status("Receiving mail; drive online")  # unchanged: not sent again
    n.status("Drive offline (unplugged)")
    n.stopping()
    assert drain(sock) == [
        "READY=1\nSTATUS=Receiving mail; drive online",
        "STATUS=Drive offline (unplugged)",
        "STOPPING=1\nSTATUS=Stopping: letting sessions finish",
    ]


def test_abstract_socket_and_reconnect_after_systemd_rebinds(tmp_path: Path) -> None:
    name = f"letterbox-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    n = Notifier({"NOTIFY_SOCKET": "@" + name})
    assert n.send("STATUS=one")
    sock.close()  # systemd re-executing: its socket goes away and comes back
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert n.send("STATUS=two")
        assert drain(sock) == ["STATUS=two"]
    finally:
        sock.close()


def test_no_watchdog_pings_while_the_loop_is_blocked(systemd: tuple[str, socket.socket]) -> None:
    """The ping comes from the event loop: a wedged loop stops it, so systemd restarts us."""
    path, sock = systemd
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # a ping every 50 ms
    assert n.interval == 0.05

    async def go() -> tuple[list[str], list[str], list[str]]:
        n.start()
        await asyncio.sleep(0.3)
        before = drain(sock)
        time.sleep(0.5)  # the loop is stuck: ten intervals without a turn
        during = drain(sock)
        await asyncio.sleep(0.3)
        after = drain(sock)
        await n.close()
        return before, during, after

    before, during, after = asyncio.run(go())
    assert len(before) >= 4 and set(before) == {"WATCHDOG=1"}
    assert during == []
    assert len(after) >= 3 and set(after) == {"WATCHDOG=1"}


def test_status_refresh_follows_the_box(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    n = Notifier({"NOTIFY_SOCKET": path})
    lines = iter(["Drive online", "Drive online", "Drive offline (unplugged)"])
    current = ["Drive online"]

    def status() -> str:
        current[0] = next(lines, current[0])
        return current[0]

    async def go() -> None:
        n.ready("Drive online")
        n.start(status, refresh=0.05)
        await asyncio.sleep(0.3)
        await n.close()

    asyncio.run(go())
    assert drain(sock) == ["READY=1\nSTATUS=Drive online", "STATUS=Drive offline (unplugged)"]


@pytest.mark.slow
def test_a_running_box_reports_ready_status_watchdog_stopping_in_order(
    tmp_path: Path, systemd: tuple[str, socket.socket]
) -> None:
    path, sock = systemd
    config = write_config(tmp_path / "letterbox.toml")
    port = int(config.read_text().split("[smtp]\nport = ")[1].split("\n")[0])
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "letterbox.cli",
            "--data",
            str(tmp_path / "data"),
            "--config",
            str(config),
            "run",
            "--dev",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: list[tuple[float, str]] = []
    sock.settimeout(30)
    try:
        first = sock.recv(4096).decode("ascii")
        ready_at = time.monotonic()
        # READY=1 only once every listener is bound: SMTP answers right away.
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            assert smtp.noop()[0] == 250
        while len([m for _, m in got if m == "WATCHDOG=1"]) < 3:
            got.append((time.monotonic(), sock.recv(4096).decode("ascii")))
        proc.send_signal(signal.SIGTERM)
        while not any(m.startswith("STOPPING=1") for _, m in got):
            got.append((time.monotonic(), sock.recv(4096).decode("ascii")))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got += [(time.monotonic(), m) for m in drain(sock)]

    assert first.startswith("READY=1\nSTATUS=Receiving mail; drive online; 1 mailboxes, ")
    assert "unclaimed" in first
    messages = [m for _, m in got]
    stopping = next(i for i, m in enumerate(messages) if m.startswith("STOPPING=1"))
    assert set(messages[:stopping]) == {"WATCHDOG=1"}
    assert messages[stopping] == "STOPPING=1\nSTATUS=Stopping: letting sessions finish"
    assert all(m == "WATCHDOG=1" for m in messages[stopping + 1 :])  # still alive while draining
    pings = [t for t, m in got[:stopping] if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip([ready_at, *pings], pings, strict=False)]
    assert max(gaps) < 0.4  # every 0.2 s, well inside WatchdogSec

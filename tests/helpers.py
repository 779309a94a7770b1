"""Helpers shared by tests: cheap Argon2id limits and distinct test messages."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from letterbox.crypto import Argon2Limits

FAST_ARGON2 = Argon2Limits(opslimit=1, memlimit=8192)
PASSWORD = "correct horse battery staple"


def message(n: int, size: int = 0, subject: str | None = None) -> bytes:
    """A distinct RFC 5322 message of roughly `size` bytes."""
    head = (
        f"From: sender{n}@example.net\r\nTo: anna@example.org\r\n"
        f"Subject: {subject or f'message {n}'}\r\nMessage-ID: <{n}@example.net>\r\n\r\n"
    ).encode()
    body = f"body of message {n}\r\n".encode()
    pad = max(0, size - len(head) - len(body))
    return head + body + (b"x" * 76 + b"\r\n") * (pad // 78) + b"y" * (pad % 78)


def unverified_tls() -> ssl.SSLContext:
    """A client context for the box's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def letterbox_cli(
    data: Path, *args: str, stdin: str = "", config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`letterbox --data DATA [--config FILE] ARGS...` as a person runs it: a real process."""
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "letterbox.cli", "--data", str(data), *extra, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(port: int, host: str = "127.0.0.1") -> None:
    """The port refuses connections: nothing listens there any more.

    Only ECONNREFUSED counts. A connection that is accepted, or that hangs until a
    timeout, is a listener still there, and fails the test.
    """
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except ConnectionRefusedError:
        return
    sock.close()
    raise AssertionError(f"{host}:{port} still accepts connections")


class ListenerBox:
    """A listener (SMTP or POP3) serving on its own event loop in a thread, with a
    real drive behind it, so tests talk to it with blocking sockets as clients do.

    Subclasses open `self.drive`, call `start_loop()`, then start `self.listener`
    through `call` and set `self.port`."""

    drive: Any
    listener: Any
    port: int

    def start_loop(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: object, timeout: float = 60) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def wait_idle(self, timeout: float = 10) -> None:
        """Until every session has ended (the server closed or the client left)."""
        deadline = time.monotonic() + timeout
        while self.listener.sessions and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.listener.sessions, "sessions still open"

    def close(self) -> None:
        self.call(self.listener.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        if self.drive is not None:
            self.drive.close()

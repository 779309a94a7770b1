"""Helpers shared by tests: cheap Argon2id limits and distinct test messages."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

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

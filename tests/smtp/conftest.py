"""A real gateway for tests: a real drive in a tmp dir, a real listener on 127.0.0.1.

The listener runs on its own event loop in a thread, so tests can use blocking
clients (smtplib, raw sockets, swaks) exactly as a sending MTA would, and read
what arrived straight from the drive afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import SmtpSettings
from letterbox.crypto import Argon2Limits
from letterbox.drive import Drive
from letterbox.smtp import Gateway, SmtpListener
from letterbox.tls import box_context

from tests.helpers import ListenerBox

PASSWORD = "correct horse"
CHEAP = Argon2Limits(1, 8192)
DOMAIN = "home.test"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


class Box(ListenerBox):
    """A running gateway and the drive behind it."""

    def __init__(self, root: Path, settings: SmtpSettings, *, tls: bool = True) -> None:
        self.root = root
        self.settings = settings
        self.drive: Drive | None = Drive.open(
            root / "drive", BoxKeys.load_or_create(root), limits=CHEAP, hostname="mx.home.test"
        )
        self.mailboxes: dict[str, str] = {}
        for address in (ALICE, BOB, "postmaster@home.test", "jörg@home.test"):
            self.add_mailbox(address)
        self.gateway = Gateway(settings, lambda: self.drive, debug=False)
        self.tls_context = box_context(root, "mx.home.test") if tls else None
        self.start_loop()
        self.listener = SmtpListener(
            self.gateway,
            settings,
            hostname="mx.home.test",
            host="127.0.0.1",
            port=0,
            tls_context=self.tls_context,
        )
        self.call(self.listener.start())
        self.port = self.listener.port

    def add_mailbox(self, address: str, quota: int = 1 << 30) -> None:
        assert self.drive is not None
        info, _ = self.drive.create_mailbox(address, quota=quota, password=PASSWORD)
        self.mailboxes[address] = info.id

    def messages(self, address: str) -> list[bytes]:
        """Everything stored for `address`, decrypted, in arrival order."""
        assert self.drive is not None
        mailbox_id = self.mailboxes[address]
        secret = self.drive.unlock(mailbox_id, PASSWORD)
        return [
            self.drive.open_message(mailbox_id, d.id, secret).read()
            for d in self.drive.list(mailbox_id)
        ]

    def stored_files(self) -> list[Path]:
        """Every blob and temporary on the drive: what a refusal must not leave behind."""
        assert self.drive is not None
        blobs = self.drive.layout.blobs
        return [p for p in blobs.rglob("*") if p.is_file()]


def settings(**overrides: object) -> SmtpSettings:
    base = SmtpSettings(local_domains=["extra.test"], timeout=30)
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def make_box(tmp_path: Path) -> Iterator[Callable[..., Box]]:
    boxes: list[Box] = []

    def make(tls: bool = True, **overrides: object) -> Box:
        box = Box(tmp_path / f"box{len(boxes)}", settings(**overrides), tls=tls)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()


@pytest.fixture
def box(make_box: Callable[..., Box]) -> Box:
    return make_box()


def strip_received(message: bytes) -> bytes:
    """The message without the trace fields the gateway prepended (and only those):
    one Return-Path line (RFC 5321 §4.4), then the folded Received header."""
    assert message.startswith(b"Return-Path: <"), message[:80]
    end = message.index(b"\r\n") + 2
    assert message[end - 3 : end] == b">\r\n", message[:end]
    assert message[end:].startswith(b"Received: "), message[:160]
    while True:
        end = message.index(b"\r\n", end) + 2
        if message[end : end + 1] not in (b"\t", b" "):
            return message[end:]


class Wire:
    """A raw SMTP client: send exact bytes, read exact replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: code and the text lines."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                more = self.sock.recv(65536)
                if not more:
                    raise ConnectionError(f"closed; had {self.buf!r}, {lines}")
                self.buf += more
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode()
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines

    def code(self) -> int:
        return self.reply()[0]

    def line(self) -> str:
        code, lines = self.reply()
        return f"{code} {lines[-1]}"

    def cmd(self, command: str) -> str:
        self.send(command.encode() + b"\r\n")
        return self.line()

    def closed(self, timeout: float = 10) -> bool:
        """True if the server closes the connection (after any pending replies)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                more = self.sock.recv(65536)
                if not more:
                    return True
                self.buf += more
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(box: Box) -> Iterator[Callable[[], Wire]]:
    opened: list[Wire] = []

    def open_wire(target: Box | None = None, ehlo: bool = True) -> Wire:
        w = Wire((target or box).connect())
        opened.append(w)
        assert w.code() == 220
        if ehlo:
            w.send(b"EHLO client.example\r\n")
            assert w.code() == 250
        return w

    yield open_wire  # type: ignore[misc]
    for w in opened:
        w.close()


def rss_kib(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")

"""A real POP3 server for tests: a real drive in a tmp dir, a real listener on 127.0.0.1.

The listener runs on its own event loop in a thread, so tests use blocking clients
(poplib, raw sockets, mpop, curl) exactly as a mail client would, and look at the
drive afterwards. Nothing is a mock: the maildrop is the drive's.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.crypto import Argon2Limits, PersonalKey
from letterbox.drive import Drive
from letterbox.pop3 import DriveAuthenticator, Pop3Listener, SessionOptions
from letterbox.ratelimit import FailureLimiter
from letterbox.tls import box_context

from tests.helpers import ListenerBox

PASSWORD = "correct horse"
CHEAP = Argon2Limits(1, 8192)
ALICE = "alice@home.test"
BOB = "bob@home.test"
CAROL = "carol@home.test"  # end-to-end


def mail(n: int, body: bytes = b"") -> bytes:
    """A distinct CRLF message, as the SMTP gateway would have stored it."""
    return (
        f"From: sender{n}@example.net\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@example.net>\r\n\r\nbody of message {n}\r\n"
    ).encode() + body


class Pop3Box(ListenerBox):
    """A running POP3 listener and the drive behind it."""

    def __init__(
        self,
        root: Path,
        *,
        plaintext: str = "always",
        tls: bool = True,
        failure_delay: float = 0.0,
        max_failures: int = 10,
        timeout: float = 30,
        max_connections_per_address: int = 20,
        max_bad_commands: int = 10,
        expire: str = "NEVER",
    ) -> None:
        self.root = root
        self.drive: Drive | None = Drive.open(
            root / "drive", BoxKeys.load_or_create(root), limits=CHEAP, hostname="box.home.test"
        )
        self.mailboxes: dict[str, str] = {}
        for address in (ALICE, BOB):
            info, _ = self.drive.create_mailbox(address, quota=1 << 30, password=PASSWORD)
            self.mailboxes[address] = info.id
        info, _ = self.drive.create_mailbox(
            CAROL, quota=1 << 30, identity_key=PersonalKey.generate().identity_key
        )
        self.mailboxes[CAROL] = info.id
        self.tls_context = box_context(root, "box.home.test") if tls else None
        self.limiter = FailureLimiter(max_failures=max_failures, window=60)
        self.auth = DriveAuthenticator(
            lambda: self.drive, failure_delay=failure_delay, limiter=self.limiter
        )
        self.options = SessionOptions(
            authenticator=self.auth,
            hostname="box.home.test",
            tls_context=self.tls_context,
            expire=expire,
            timeout=timeout,
            max_bad_commands=max_bad_commands,
        )
        self.start_loop()
        self.listener = Pop3Listener(
            self.options,
            host="127.0.0.1",
            port=0,
            tls_port=0 if tls else None,
            plaintext=plaintext,  # type: ignore[arg-type]
            max_connections_per_address=max_connections_per_address,
        )
        self.call(self.listener.start())
        self.port = self.listener.port
        self.tls_port = self.listener.tls_port

    def deliver(self, *messages: bytes, to: str = ALICE) -> list[str]:
        assert self.drive is not None
        return [self.drive.deliver("sender@example.net", [to], m)[0] for m in messages]

    def stored(self, address: str = ALICE) -> list[str]:
        """Delivery ids still on the drive, in arrival order."""
        assert self.drive is not None
        return [d.id for d in self.drive.list(self.mailboxes[address])]


@pytest.fixture
def make_box(tmp_path: Path) -> Iterator[Callable[..., Pop3Box]]:
    boxes: list[Pop3Box] = []

    def make(**kwargs: object) -> Pop3Box:
        box = Pop3Box(tmp_path / f"box{len(boxes)}", **kwargs)  # type: ignore[arg-type]
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()


@pytest.fixture
def box(make_box: Callable[..., Pop3Box]) -> Pop3Box:
    return make_box()


class Wire:
    """A raw POP3 client: send exact bytes, read exact lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def multiline(self) -> list[bytes]:
        """The lines of a multi-line body, up to and without the "." line (still stuffed)."""
        lines = []
        while True:
            line = self.line()
            if line == b".\r\n":
                return lines
            lines.append(line)

    def cmd(self, command: bytes) -> bytes:
        self.send(command + b"\r\n")
        return self.line()

    def closed(self, timeout: float = 5) -> bool:
        """True if the server closes the connection (after anything still buffered)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except TimeoutError:
            return False
        except ConnectionError:
            return True


@pytest.fixture
def wire(box: Pop3Box) -> Iterator[Wire]:
    sock = box.connect()
    w = Wire(sock)
    assert w.line().startswith(b"+OK")
    yield w
    sock.close()


def login(w: Wire, user: str = ALICE, password: str = PASSWORD) -> bytes:
    assert w.cmd(f"USER {user}".encode()).startswith(b"+OK")
    return w.cmd(f"PASS {password}".encode())

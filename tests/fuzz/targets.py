"""Fuzz targets: one function per parser, bytes in, an AssertionError if a promise breaks.

The same targets run under hypothesis in the suite (tests/fuzz/test_targets.py,
a bounded number of examples) and under atheris for long runs (`make fuzz`,
tests/fuzz/atheris_main.py). Each states what must hold for any input:

* `data_reader`: smtp/data.py's DataReader agrees with a plain model of
  RFC 5321 §4.1.1.4 and §4.5.2 (the end mark is CRLF "." CRLF only, dots
  unstuffed, a bare CR or LF refuses the message), whatever the chunking, and
  the bytes after the end mark are handed back untouched.
* `syntax`: smtp/syntax.py's parse_path raises nothing but PathError, and
  what it accepts parses again to the same address.
* `pop3`: a real Pop3Session over a real socket pair, logged in against a
  real drive, answers any byte stream with well-formed replies only
  (sessions.check_pop3) and never logs an unexpected error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
from pathlib import Path

from letterbox.boxkeys import BoxKeys
from letterbox.crypto import Argon2Limits
from letterbox.drive import Drive
from letterbox.pop3 import DriveAuthenticator, SessionOptions
from letterbox.pop3.session import READ_LIMIT, Pop3Session
from letterbox.ratelimit import FailureLimiter
from letterbox.smtp.data import DataError, DataReader
from letterbox.smtp.syntax import PathError, parse_path

from tests.fuzz import sessions

END = b"\r\n.\r\n"

# -- smtp/data.py ------------------------------------------------------------------------------


def data_model(wire: bytes) -> tuple[bytes, bool, bytes] | None:
    """What DATA must produce from `wire` (the bytes after "DATA" CRLF), as one buffer.

    None while no end mark has arrived; else (message, bare CR/LF seen, rest).
    """
    buf = b"\r\n" + wire  # the DATA command's own CRLF starts the first line
    end = buf.find(END)
    if end < 0:
        return None
    region = buf[: end + 2]  # the CRLF before the dot is the message's
    crlf = region.count(b"\r\n")
    bare = region.count(b"\r") != crlf or region.count(b"\n") != crlf
    message = region.replace(b"\r\n.", b"\r\n")[2:]
    return message, bare, buf[end + len(END) :]


Fed = tuple[bytes, "DataError | None", bool, bytes, int, int]


def feed(wire: bytes, cuts: list[int], max_size: int, max_line: int = 0) -> Fed:
    """Feed `wire` cut at `cuts`; return (output, error, done, rest, size, received)."""
    reader = DataReader(max_size, max_line)
    out = []
    rest = b""
    pieces = []
    last = 0
    for cut in sorted({c for c in cuts if 0 < c < len(wire)}):
        pieces.append(wire[last:cut])
        last = cut
    pieces.append(wire[last:])
    for i, piece in enumerate(pieces):
        content, after = reader.feed(piece)
        out.append(content)
        if reader.done:
            rest = after + b"".join(pieces[i + 1 :])
            break
        assert after == b""
    return b"".join(out), reader.error, reader.done, rest, reader.size, reader.received


def data_reader(data: bytes) -> None:
    if len(data) < 3:
        return
    step = data[0] % 64 + 1
    limit = (data[1] << 4) or 1 << 30  # sometimes small enough to trip TOO_BIG
    wire = data[2:]
    whole = feed(wire, [], limit)
    cut = feed(wire, list(range(step, len(wire), step)), limit)
    bytewise = feed(wire, list(range(1, len(wire))), limit)
    # Chunking changes nothing but which error is found first.
    for other in (cut, bytewise):
        assert other[2:4] == whole[2:4], (other, whole)
        assert (other[1] is None) == (whole[1] is None)
        if whole[1] is None:
            assert other[0] == whole[0] and other[4] == whole[4]
    out, error, done, rest, size, received = whole
    model = data_model(wire)
    assert done == (model is not None)
    if model is None:
        return
    message, bare, after = model
    assert rest == after and received == len(wire) - len(after)
    if error is None:
        assert not bare and out == message and size == len(message) <= limit
    else:
        assert bare or len(message) > limit, (error, message[:100])
        if not bare:
            assert error is DataError.TOO_BIG
        elif len(message) <= limit:
            assert error is DataError.BARE_NEWLINE


# -- smtp/syntax.py ----------------------------------------------------------------------------


def syntax(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for keyword, null_ok in (("FROM", True), ("TO", False)):
        try:
            path = parse_path(f"{keyword}:{text}", keyword, null_ok=null_ok)
        except PathError:
            continue
        assert null_ok or path.address
        assert all(k == k.upper() for k in path.params)
        if path.address:
            again = parse_path(f"{keyword}:<{path.address}>", keyword, null_ok=null_ok)
            assert again.address == path.address, (text, path, again)


# -- the POP3 session --------------------------------------------------------------------------

USER = "alice@home.test"
PASSWORD = "correct horse"


class Pop3Target:
    """A drive with one mailbox and three messages, and an event loop to run sessions on."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="lbx-fuzz-")
        root = Path(self._tmp.name)
        self.drive = Drive.open(
            root / "drive", BoxKeys.load_or_create(root), limits=Argon2Limits(1, 8192)
        )
        info, _ = self.drive.create_mailbox(USER, quota=1 << 30, password=PASSWORD)
        self.mailbox = info.id
        self.loop = asyncio.new_event_loop()
        self.options = SessionOptions(
            authenticator=DriveAuthenticator(
                lambda: self.drive,
                failure_delay=0,
                limiter=FailureLimiter(max_failures=1 << 30, window=60),
            ),
            hostname="box.home.test",
            timeout=5,
        )
        self.errors: list[str] = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = lambda record: self.errors.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("letterbox.pop3").addHandler(handler)
        self.refill()

    def refill(self) -> None:
        """Back to three messages, whatever the last session deleted."""
        while len(self.drive.list(self.mailbox)) < 3:
            n = len(self.drive.list(self.mailbox))
            body = b"Subject: %d\r\n\r\n.dot\r\n..two\r\n.\r\nend\r\n" % n + b"x" * 70_000 * n
            self.drive.deliver("s@example.net", [USER], body)

    def close(self) -> None:
        self.loop.close()
        self.drive.close()
        self._tmp.cleanup()

    def run(self, data: bytes) -> bytes:
        """Serve one session on a socket pair: `data` in (then EOF), the replies out."""
        server, client = socket.socketpair()
        try:
            return self.loop.run_until_complete(self._session(server, client, data))
        finally:
            server.close()
            client.close()

    async def _session(self, server: socket.socket, client: socket.socket, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(sock=server, limit=READ_LIMIT)
        session = Pop3Session(reader, writer, self.options, plaintext_login=True)
        creader, cwriter = await asyncio.open_connection(sock=client)

        async def talk() -> bytes:
            cwriter.write(data)
            with contextlib.suppress(ConnectionError):
                await cwriter.drain()
                cwriter.write_eof()
            got = bytearray()
            with contextlib.suppress(ConnectionError):
                while more := await creader.read(65536):
                    got += more
            cwriter.close()
            return bytes(got)

        async with asyncio.timeout(30):
            received, _ = await asyncio.gather(talk(), session.run())
        return received


_target: Pop3Target | None = None


def pop3(data: bytes) -> None:
    global _target
    if _target is None:
        _target = Pop3Target()
    _target.errors.clear()
    received = _target.run(data)
    problems = sessions.check_pop3(data.split(b"\n"), received)
    assert not problems, (problems, data[:300], received[:300])
    assert not _target.errors, _target.errors
    _target.refill()

"""Seeded hostile sessions for the SMTP and POP3 listeners, and checks of what came back.

A session is made from a `random.Random`, so a seed names it exactly: a mix of
valid commands (with their arguments mangled or not), random bytes, NULs, lines
far over the limits, bare CR and LF, invalid UTF-8 and whole DATA bodies,
sent pipelined in random chunks, and ended by QUIT, a half-close, a plain close
or a reset. The checkers read the server's byte stream the way a client would
and list everything that is not a well-formed reply (RFC 5321 §4.2 for SMTP,
RFC 1939 §3 for POP3), so the network fuzz test (and `make fuzz`) can run
thousands of them.
"""

from __future__ import annotations

import base64
import random
import re
import socket
import struct
from dataclasses import dataclass, field

ENDINGS = ("quit", "half", "close", "reset")


@dataclass
class Session:
    """What to send, in order, and how to end the connection."""

    chunks: list[bytes]
    ending: str  # one of ENDINGS: "quit" is already among the chunks
    # SMTP: a valid delivery made in lockstep before the rest (its 250 is awaited).
    delivery: bytes | None = None
    delivery_rcpt: str = ""
    lines: list[bytes] = field(default_factory=list)  # the command lines, for POP3's checker


def _chunked(rng: random.Random, data: bytes) -> list[bytes]:
    """Cut the stream anywhere: pipelining (RFC 2920, RFC 2449 §6.6) in any segmentation."""
    if rng.random() < 0.3:
        return [data]
    chunks = []
    i = 0
    while i < len(data):
        n = rng.choice((1, 2, 7, 64, 512, 4096, 65536))
        chunks.append(data[i : i + n])
        i += n
    return chunks


_PRINTABLE = b" \tABCDEFGHIJKLMNOPQRSTUVWXYZ:<>@.=-0123456789"
SMTP_VERBS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP")
SMTP_VERBS += ("BDAT", "AUTH", "ehlo", "mail", "QUIT", "STARTTLS", "DATA", "TURN")


def _junk(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))  # any bytes, CR and LF included
    if kind == 1:
        return bytes(rng.choice(_PRINTABLE) for _ in range(40))
    if kind == 2:
        return b"NOOP \x00\x00" + rng.randbytes(5).replace(b"\n", b"")
    if kind == 3:
        return rng.choice((b"NOOP ", b"X", b"RCPT TO:<")) + b"x" * rng.choice(
            (300, 600, 1100, 9000, 70_000, 200_000)
        )
    if kind == 4:
        return b"\xff\xfe\xc3(" + rng.randbytes(3)
    if kind == 5:
        return b""  # an empty line
    return "日本語 ünïcödé".encode()


def _line_end(rng: random.Random) -> bytes:
    return rng.choices((b"\r\n", b"\n", b"\r", b""), weights=(85, 6, 5, 4))[0]


# -- SMTP --------------------------------------------------------------------------------------

SMTP_ADDRESSES = (
    "<{rcpt}>",
    "<nobody@letterbox.test>",
    "<someone@example.com>",
    "<>",
    "<a@b@c>",
    "<jörg@letterbox.test>",
    '<"quoted \\"local\\""@letterbox.test>',
    "<@route,@x:{rcpt}>",
    "{rcpt}",
    "<" + "l" * 300 + "@letterbox.test>",
    "<unterminated@letterbox.test",
)
SMTP_PARAMS = ("", " SIZE=100", " SIZE=abc", " BODY=8BITMIME", " BODY=BINARYMIME", " SMTPUTF8")
SMTP_PARAMS += (" FOO=bar", " SIZE=" + "9" * 40, " NOTIFY=NEVER", " =x", " SIZE=1 SIZE=2")


def _smtp_body(rng: random.Random) -> bytes:
    parts = [b"Subject: fuzz\r\n\r\n"]
    for _ in range(rng.randrange(0, 12)):
        parts.append(
            rng.choice(
                (
                    b"plain line\r\n",
                    b".stuffed line\r\n",
                    b"..\r\n",
                    b"x" * rng.choice((10, 998, 2000)) + b"\r\n",
                    b"bare LF\n",
                    b"bare CR\r",
                    b"\n.\r\n",  # smuggling shapes never end the data
                    b"\r\n.\n",
                    b"\x00\x01\x02\xff\r\n",
                    rng.randbytes(rng.randrange(1, 300)),
                )
            )
        )
    if rng.random() < 0.9:
        parts.append(b"\r\n.\r\n")
    return b"".join(parts)


def _smtp_command(rng: random.Random, rcpt: str) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        return _junk(rng) + _line_end(rng)
    verb = rng.choice(SMTP_VERBS)
    if verb.upper() in ("EHLO", "HELO"):
        arg = rng.choice(("client.example", "", "[127.0.0.1]", "x" * 300, "a b c", "évil"))
        line = f"{verb} {arg}".encode()
    elif verb.upper() == "MAIL":
        address = rng.choice(SMTP_ADDRESSES).format(rcpt=rcpt)
        line = f"{verb} FROM:{address}{rng.choice(SMTP_PARAMS)}".encode()
    elif verb == "RCPT":
        address = rng.choice(SMTP_ADDRESSES).format(rcpt=rcpt)
        line = f"RCPT TO:{address}{rng.choice(('', ' NOTIFY=NEVER', ' X'))}".encode()
    elif verb == "DATA":
        return b"DATA\r\n" + (_smtp_body(rng) if rng.random() < 0.7 else b"")
    else:
        line = verb.encode() + rng.choice((b"", b" arg", b" " + rng.randbytes(4)))
    return line + _line_end(rng)


def canary(n: int) -> bytes:
    """The message of session `n`'s valid delivery: it must be kept, byte for byte."""
    return (
        f"Subject: fuzz canary {n}\r\nMessage-ID: <canary{n}@fuzz.test>\r\n\r\n"
        f"kept {n}\r\n.leading dot\r\n"
    ).encode()


def smtp_session(rng: random.Random, rcpt: str, keep: str, n: int) -> Session:
    """A hostile SMTP session; some begin with a valid delivery to `keep` (made in lockstep)."""
    delivery = canary(n) if rng.random() < 0.4 else None
    commands = [_smtp_command(rng, rcpt) for _ in range(rng.randrange(1, 25))]
    ending = rng.choice(ENDINGS)
    if ending == "quit":
        commands.append(b"QUIT\r\n")
    return Session(_chunked(rng, b"".join(commands)), ending, delivery, keep)


_SMTP_LINE = re.compile(rb"([2-5][0-5]\d)([ -])([\x20-\x7e]*)")
# RFC 3463/2034: an error reply carries an enhanced status code.
_ENHANCED = re.compile(rb"[245]\.\d{1,3}\.\d{1,3}( |$)")


def check_smtp(received: bytes, *, cut: bool = False) -> list[str]:
    """What in the server's byte stream is not a well-formed SMTP reply.

    `cut`: the connection was reset, so the last line may be incomplete.
    """
    problems: list[str] = []
    lines = received.split(b"\r\n")
    tail = lines.pop()  # after the last CRLF: must be empty unless cut off
    if tail and not cut and not _tls_started(lines):
        problems.append(f"incomplete last line {tail[:80]!r}")
    if not lines:
        return problems
    if not lines[0].startswith((b"220 ", b"220-", b"421 ", b"554 ")):
        problems.append(f"greeting {lines[0][:80]!r}")
    continued: bytes | None = None
    for line in lines:
        m = _SMTP_LINE.fullmatch(line)
        if not m:
            problems.append(f"malformed reply line {line[:80]!r}")
            break
        code, sep, text = m.groups()
        if continued is not None and code != continued:
            problems.append(f"multi-line reply changes code: {line[:80]!r}")
        continued = code if sep == b"-" else None
        if code[:1] in b"45" and not _ENHANCED.match(text):
            problems.append(f"error reply without an enhanced code: {line[:80]!r}")
        if line.startswith(b"220 2.0.0 Ready to start TLS"):
            break  # the rest is TLS records
    return problems


def _tls_started(lines: list[bytes]) -> bool:
    return any(line.startswith(b"220 2.0.0 Ready to start TLS") for line in lines)


# -- POP3 --------------------------------------------------------------------------------------


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _pop3_command(rng: random.Random, user: str, password: str) -> bytes:
    if rng.random() < 0.2:
        return _junk(rng) + _line_end(rng)
    n = rng.choice(("1", "2", "3", "0", "-1", "99999999999999", "abc", "1 2", "", "１", " 1"))
    line = rng.choice(
        (
            "CAPA",
            "STAT",
            "LIST",
            f"LIST {n}",
            "UIDL",
            f"UIDL {n}",
            f"RETR {n}",
            f"TOP {n} {rng.choice(('0', '1', '5', 'x', '-1'))}",
            f"DELE {n}",
            "RSET",
            "NOOP",
            "noop",
            f"USER {user}",
            f"USER {rng.choice(('nobody@letterbox.test', '', 'x' * 300))}",
            f"PASS {password}",
            "PASS wrong password",
            f"AUTH PLAIN {_plain(user, password)}",
            f"AUTH PLAIN {_plain(user, 'wrong')}",
            "AUTH PLAIN !!!notbase64",
            "AUTH PLAIN AGFiYwBk",
            "AUTH",
            "AUTH CRAM-MD5",
            "APOP user 0123456789abcdef0123456789abcdef",
            "STAT extra",
            "XTND XMIT",
        )
    )
    return line.encode() + _line_end(rng)


def pop3_session(rng: random.Random, user: str, password: str) -> Session:
    """A hostile POP3 session; most log in first, so TRANSACTION is fuzzed too."""
    commands: list[bytes] = []
    if rng.random() < 0.7:
        commands += [f"USER {user}\r\n".encode(), f"PASS {password}\r\n".encode()]
    commands += [_pop3_command(rng, user, password) for _ in range(rng.randrange(1, 30))]
    if rng.random() < 0.05:
        commands.append(b"STLS\r\n")  # then garbage where the TLS handshake should be
        commands.append(rng.randbytes(50))
    ending = rng.choice(ENDINGS)
    if ending == "quit":
        commands.append(b"QUIT\r\n")
    data = b"".join(commands)
    return Session(_chunked(rng, data), ending, lines=data.split(b"\n"))


_POP3_STATUS = re.compile(rb"(\+OK|-ERR)( [\x20-\x7e]*)?\r\n")
POP3_COMMAND_LIMIT = 255  # RFC 2449 §4
POP3_SASL_LIMIT = 4096


def _pop3_multiline(line: bytes) -> bool:
    """Would +OK to this command line start a multi-line response (RFC 1939, 2449)?"""
    text = line.rstrip(b"\r")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    verb, _, arg = decoded.partition(" ")
    verb = verb.upper()
    if verb in ("CAPA", "RETR", "TOP"):
        return True
    return verb in ("LIST", "UIDL", "AUTH") and not arg.split()


def check_pop3(lines: list[bytes], received: bytes, *, cut: bool = False) -> list[str]:
    """What in the server's byte stream is not a well-formed POP3 reply, given the
    command lines sent (each answered in order, RFC 2449 §6.6)."""
    problems: list[str] = []
    pos = 0

    def next_line() -> bytes | None:
        nonlocal pos
        end = received.find(b"\r\n", pos)
        if end < 0:
            return None
        line = received[pos : end + 2]
        pos = end + 2
        return line

    greeting = next_line()
    if greeting is None:
        return [] if cut or not received else [f"no greeting: {received[:80]!r}"]
    if not _POP3_STATUS.fullmatch(greeting):
        return [f"greeting {greeting[:80]!r}"]
    commands = iter(lines[:-1])  # the last piece has no LF: never a command
    for command in commands:
        status = next_line()
        if status is None:
            break
        if status == b"+ \r\n":  # SASL continuation: the next line is the response
            next(commands, None)
            status = next_line()
            if status is None:
                break
        if not _POP3_STATUS.fullmatch(status):
            problems.append(f"malformed status line {status[:80]!r} for {command[:60]!r}")
            break
        if status.startswith(b"+OK Begin TLS"):
            return problems  # the rest is TLS records
        if status.startswith(b"+OK") and _pop3_multiline(command):
            while (body := next_line()) is not None and body != b".\r\n":
                pass
            if body is None:
                if not cut:
                    problems.append(f"multi-line response to {command[:60]!r} not terminated")
                return problems
    rest = received[pos:]
    # After the last reply, only a closing notice (too many bad commands, shutting down).
    if rest and not (rest.startswith(b"-ERR ") and _POP3_STATUS.fullmatch(rest)) and not cut:
        problems.append(f"unexpected bytes after the replies: {rest[:80]!r}")
    return problems


# -- running one ---------------------------------------------------------------------------------


class _Replies:
    """Lockstep reading of SMTP replies, keeping every byte for the checker."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()
        self.start = 0

    def next(self) -> bytes:
        """The last line of the next whole reply."""
        while True:
            pending = bytes(self.received[self.start :])
            if pending.endswith(b"\r\n"):
                last = pending[:-2].rsplit(b"\r\n", 1)[-1]
                if last[3:4] == b" ":
                    self.start = len(self.received)
                    return last
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError(f"closed during the delivery: {pending[:200]!r}")
            self.received += more


def run(port: int, session: Session, *, timeout: float = 20) -> tuple[bytes, bool, bool]:
    """Play `session` against 127.0.0.1:`port`.

    Returns (everything received, whether the connection was cut, whether the
    lockstep delivery got its 250). A server that neither answers nor closes
    within `timeout` raises TimeoutError.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    replies = _Replies(sock)
    stored = False
    cut = False
    try:
        if session.delivery is not None:
            replies.next()  # the greeting
            for line in (b"EHLO fuzz.example", b"MAIL FROM:<fuzz@example.org>"):
                sock.sendall(line + b"\r\n")
                replies.next()
            sock.sendall(f"RCPT TO:<{session.delivery_rcpt}>\r\n".encode())
            replies.next()
            sock.sendall(b"DATA\r\n")
            if replies.next().startswith(b"354"):
                sock.sendall(session.delivery.replace(b"\r\n.", b"\r\n..") + b".\r\n")
                stored = replies.next().startswith(b"250 2.0.0")
        for chunk in session.chunks:
            sock.sendall(chunk)
        if session.ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            cut = True
        elif session.ending == "close":
            cut = True  # closed without reading: only the server's health is judged
        else:
            sock.shutdown(socket.SHUT_WR)
            while more := sock.recv(65536):
                replies.received += more
    except TimeoutError:
        raise  # neither an answer nor a close: the server is stuck
    except OSError:
        # Reset, broken pipe, or no longer connected: the server hung up on us
        # (too many bad commands, a refused TLS handshake...).
        cut = True
    finally:
        sock.close()
    return bytes(replies.received), cut, stored

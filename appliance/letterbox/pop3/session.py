"""One POP3 session: a line state machine that streams its replies (RFC 1939).

Modelled on twisted.mail's POP3: the session reads one command line at a time,
looks the verb up in a table that says in which states it is allowed, and answers
from replies.py; a message is never held whole, it streams from the maildrop
through wire.Encoder onto the socket, 64 KiB at a time with the writer drained in
between, so memory stays flat whatever its size.

States (RFC 1939 §3): AUTHORIZATION → (USER/PASS or AUTH PLAIN) → TRANSACTION →
(QUIT) → UPDATE. The session talks to storage only through maildrop.Maildrop and
maildrop.Authenticator, so `letterbox run` (drive) and `letterbox bridge` (drive
API) serve the same protocol code.

Rules kept here, and why:

* **DELE takes effect at QUIT only** (RFC 1939 §6): deletions are a set of
  numbers until the UPDATE state, where the maildrop deletes them in one atomic,
  durable batch before "+OK" is sent. A connection that ends any other way
  (dropped, idle timeout, shutdown, a message failing verification) deletes and
  marks nothing.
* **No cleartext password before TLS** unless allowed (RFC 2595 §2.1, §4): on a
  connection without TLS, USER and AUTH PLAIN answer [AUTH] and CAPA lists
  neither, unless `plaintext_login` (a configuration choice, or --dev on
  loopback). STLS throws away anything pipelined after it (the same injection
  as CVE-2011-0411 for SMTP) and forgets a USER given before it.
* **Response codes** (RFC 2449 RESP-CODES, RFC 3206 AUTH-RESP-CODE): every login
  failure carries [AUTH], [SYS/TEMP] or [IN-USE]; an unknown user and a wrong
  password get the same reply (the authenticator also makes them take the same
  time).
* **Pipelining** (RFC 2449 §6.6): commands are read and answered strictly in
  order, and replies only wait for the socket (drain) when its buffer is full.
* **Bounded input**: command lines of at most 255 octets (RFC 2449 §4), SASL lines
  of at most 4 KiB; longer lines are discarded unread, bad commands are counted
  and the session ends after `max_bad_commands`; the idle timer (RFC 1939 §3: at
  least 10 minutes) closes the connection without a reply and without UPDATE.
* **A message that fails verification**: before its first byte, -ERR [SYS/PERM];
  after (the stream is verified chunk by chunk), the connection is dropped
  without the terminating ".", so no client takes a damaged message for whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from letterbox.pop3 import replies as R
from letterbox.pop3.maildrop import (
    Authenticator,
    EndToEndOnly,
    Entry,
    LoginRefused,
    LoginThrottled,
    MailboxInUse,
    Maildrop,
    MaildropUnavailable,
    MessageGone,
    MessageUnreadable,
)
from letterbox.pop3.replies import Reply
from letterbox.pop3.wire import Encoder

log = logging.getLogger("letterbox.pop3")

COMMAND_LIMIT = 255  # RFC 2449 §4: a command line, CRLF included
SASL_LIMIT = 4096  # AUTH lines and SASL responses (RFC 5034 §4 lets them be longer)
READ_LIMIT = 8192  # StreamReader buffer limit: a longer line is discarded unread
TLS_HANDSHAKE_TIMEOUT = 30.0
CLOSE_FLUSH_TIMEOUT = 10.0  # for the last replies of a session

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"


class Registry(Protocol):
    """What a session needs from its listener: admission, and being forgotten."""

    def admit(self, session: Pop3Session) -> Reply | None: ...

    def release(self, session: Pop3Session) -> None: ...


@dataclass
class SessionOptions:
    """What every session of a listener shares."""

    authenticator: Authenticator
    hostname: str = "letterbox.local"
    # STLS is offered on a connection without TLS when there is a context.
    tls_context: ssl.SSLContext | None = None
    # RFC 2449 EXPIRE: "NEVER" or a number of days (drive.keep_days).
    expire: str = "NEVER"
    timeout: float = 600.0
    max_bad_commands: int = 10
    # Failed logins before the session is closed (the authenticator limits per address).
    max_login_failures: int = 3
    debug: bool = False


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    commands: int = 0
    retrieved: int = 0
    deleted: int = 0
    octets: int = 0


_TOO_LONG = object()  # a line over the read limit, already discarded


class Pop3Session:
    """A server-side POP3 session on one connection (asyncio streams)."""

    # verb -> (method name, states in which it is allowed)
    _COMMANDS: ClassVar[dict[str, tuple[str, frozenset[str]]]] = {
        "CAPA": ("do_capa", frozenset({AUTHORIZATION, TRANSACTION})),
        "QUIT": ("do_quit", frozenset({AUTHORIZATION, TRANSACTION})),
        "USER": ("do_user", frozenset({AUTHORIZATION})),
        "PASS": ("do_pass", frozenset({AUTHORIZATION})),
        "AUTH": ("do_auth", frozenset({AUTHORIZATION})),
        "APOP": ("do_apop", frozenset({AUTHORIZATION})),
        "STLS": ("do_stls", frozenset({AUTHORIZATION})),
        "STAT": ("do_stat", frozenset({TRANSACTION})),
        "LIST": ("do_list", frozenset({TRANSACTION})),
        "UIDL": ("do_uidl", frozenset({TRANSACTION})),
        "RETR": ("do_retr", frozenset({TRANSACTION})),
        "TOP": ("do_top", frozenset({TRANSACTION})),
        "DELE": ("do_dele", frozenset({TRANSACTION})),
        "RSET": ("do_rset", frozenset({TRANSACTION})),
        "NOOP": ("do_noop", frozenset({TRANSACTION})),
    }

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        options: SessionOptions,
        *,
        tls: bool = False,
        plaintext_login: bool = False,
        registry: Registry | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.options = options
        self.registry = registry
        self.tls = tls
        self.plaintext_login = plaintext_login
        self.peer: Any = writer.get_extra_info("peername")
        self.client = str(self.peer[0]) if isinstance(self.peer, tuple) and self.peer else ""
        self.state = AUTHORIZATION
        self.stats = _Stats()
        self._user: str | None = None
        self._login_failures = 0
        self._errors = 0
        self._maildrop: Maildrop | None = None
        self._entries: list[Entry] = []
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()
        self._closing = False  # the session ends after the current command
        self._stopping = False  # the listener is shutting down
        self._idle = False  # waiting for a command line
        self._released = False

    @property
    def sid(self) -> str:
        return f"{id(self) & 0xFFFFFF:06x}"

    @property
    def updating(self) -> bool:
        """In the UPDATE state: deleting; a forced stop waits for it."""
        return self.state == UPDATE

    # -- the command loop -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.registry is not None:
                refusal = self.registry.admit(self)
                if refusal is not None:
                    self._send(refusal)
                    await self._close()
                    return
            self._send(R.GREETING, host=self.options.hostname)
            while not self._closing:
                if self._stopping:
                    self._send(R.SHUTTING_DOWN)
                    break
                raw = await self._next_line()
                if raw is None:
                    break
                self.stats.commands += 1
                await self._dispatch(raw)
                if self._errors >= self.options.max_bad_commands and not self._closing:
                    log.info("session %s: %d bad commands, closing", self.sid, self._errors)
                    self._send(R.TOO_MANY_ERRORS)
                    break
        except TimeoutError:
            # RFC 1939 §3: the autologout timer closes without a reply and without UPDATE
            # (also when the client stopped reading a response).
            log.info("session %s: no progress for %g s, closing", self.sid, self.options.timeout)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            log.exception("session %s: unexpected error, closing", self.sid)
            with contextlib.suppress(Exception):
                self._send(R.INTERNAL_ERROR)
        finally:
            await self._end()

    async def _next_line(self) -> bytes | object | None:
        """The next line with its LF; None at end of input. Raises TimeoutError when idle."""
        await self._drain()
        self._idle = True
        try:
            async with asyncio.timeout(self.options.timeout):
                try:
                    return await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return None  # end of input; a last line without LF is not a command
                except asyncio.LimitOverrunError as exc:
                    await self._discard_line(exc.consumed)
                    return _TOO_LONG
        finally:
            self._idle = False

    async def _discard_line(self, consumed: int) -> None:
        await self.reader.readexactly(consumed)
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)

    async def _dispatch(self, raw: bytes | object) -> None:
        if not isinstance(raw, bytes):
            self._bad(R.LINE_TOO_LONG)
            return
        line = raw[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad(R.BAD_ENCODING)
            return
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            self._bad(R.BAD_ENCODING)
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if len(raw) > (SASL_LIMIT if verb == "AUTH" else COMMAND_LIMIT):
            self._bad(R.LINE_TOO_LONG)
            return
        entry = self._COMMANDS.get(verb)
        if entry is None:
            self._bad(R.UNKNOWN_COMMAND)
            return
        name, states = entry
        if self.state not in states:
            if self.state == AUTHORIZATION:
                self._bad(R.NEED_LOGIN)
            elif verb in ("USER", "PASS", "AUTH", "APOP"):
                self._bad(R.ALREADY_LOGGED_IN)
            else:
                self._bad(R.WRONG_STATE)
            return
        handler: Callable[[str], Awaitable[None]] = getattr(self, name)
        await handler(arg)

    # -- output ---------------------------------------------------------------------------

    def _send(self, reply: Reply, **fields: object) -> None:
        self._write(reply.line(**fields))

    def _bad(self, reply: Reply, **fields: object) -> None:
        self._errors += 1
        self._send(reply, **fields)

    def _write(self, data: bytes) -> None:
        if not self.writer.transport.is_closing():
            self.writer.write(data)

    async def _drain(self) -> None:
        """Wait while the socket's buffer is full; a client that stops reading times out."""
        async with asyncio.timeout(self.options.timeout):
            await self.writer.drain()

    # -- AUTHORIZATION ----------------------------------------------------------------------

    def _may_login(self) -> bool:
        return self.tls or self.plaintext_login

    async def do_capa(self, arg: str) -> None:
        lines = ["TOP", "UIDL"]
        if self.state == AUTHORIZATION and self._may_login():
            lines += ["USER", "SASL PLAIN"]
        lines += [
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            f"EXPIRE {self.options.expire}",
            "IMPLEMENTATION Letterbox",
        ]
        if self.state == AUTHORIZATION and not self.tls and self.options.tls_context is not None:
            lines.append("STLS")
        self._write(R.multiline(R.CAPA.line(), lines))

    async def do_user(self, arg: str) -> None:
        if not self._may_login():
            self._send(R.PLAINTEXT_REFUSED)
            return
        name = arg.strip(" ")
        if not name:
            self._bad(R.SYNTAX, usage="USER name")
            return
        self._user = name
        self._send(R.USER_OK)

    async def do_pass(self, arg: str) -> None:
        # RFC 1939 §7: PASS has one argument, so spaces belong to the password.
        if not self._may_login():
            self._send(R.PLAINTEXT_REFUSED)
            return
        user, self._user = self._user, None
        if user is None:
            self._bad(R.NEED_USER)
            return
        await self._login(user, arg)

    async def do_apop(self, arg: str) -> None:
        self._bad(R.APOP_UNSUPPORTED)

    async def do_auth(self, arg: str) -> None:
        parts = arg.split()
        if not parts:
            # RFC 1734 clients send a bare AUTH to learn the mechanisms.
            mechanisms = ["PLAIN"] if self._may_login() else []
            self._write(R.multiline(R.SASL_MECHANISMS.line(), mechanisms))
            return
        if parts[0].upper() != "PLAIN" or len(parts) > 2:
            self._bad(R.SASL_UNSUPPORTED)
            return
        if not self._may_login():
            self._send(R.PLAINTEXT_REFUSED)
            return
        if len(parts) == 2:
            response = parts[1]
        else:
            self._write(R.SASL_CONTINUE)
            raw = await self._next_line()
            if raw is None:
                self._closing = True
                return
            if not isinstance(raw, bytes):
                self._bad(R.LINE_TOO_LONG)
                return
            response = raw.rstrip(b"\r\n").decode("ascii", "replace").strip()
        if response == "*":
            self._send(R.SASL_CANCELLED)
            return
        credentials = _decode_plain(response)
        if credentials is None:
            self._bad(R.SASL_MALFORMED)
            return
        await self._login(*credentials)

    async def _login(self, user: str, password: str) -> None:
        try:
            maildrop = await self.options.authenticator.login(user, password, self.client)
        except (LoginRefused, EndToEndOnly) as exc:
            # An end-to-end mailbox has no password on the box: a failed login too.
            self._login_failures += 1
            self._send(R.END_TO_END if isinstance(exc, EndToEndOnly) else R.LOGIN_REFUSED)
            if self._login_failures >= self.options.max_login_failures:
                log.info("session %s: %d failed logins, closing", self.sid, self._login_failures)
                self._closing = True
            return
        except LoginThrottled:
            self._send(R.LOGIN_THROTTLED)
            self._closing = True
            return
        except MailboxInUse:
            self._send(R.IN_USE)
            return
        except MaildropUnavailable:
            self._send(R.DRIVE_OFFLINE)
            return
        try:
            entries = await maildrop.entries()
        except BaseException as exc:
            await maildrop.close()
            if isinstance(exc, MaildropUnavailable):
                self._send(R.DRIVE_OFFLINE)
                return
            raise
        self._maildrop = maildrop
        self._entries = entries
        self.state = TRANSACTION
        if self._closing or self.writer.transport.is_closing():
            return  # the client left while the key was unwrapped: _end() closes it
        count, octets = self._totals()
        self._send(R.LOGGED_IN, count=count, octets=octets)

    async def do_stls(self, arg: str) -> None:
        if arg.strip(" "):
            self._bad(R.SYNTAX, usage="STLS")
            return
        if self.tls:
            self._bad(R.TLS_ACTIVE)
            return
        context = self.options.tls_context
        if context is None:
            self._bad(R.TLS_UNAVAILABLE)
            return
        self._send(R.TLS_READY)
        # RFC 2595 §4, and CVE-2011-0411 for SMTP: whatever was pipelined after STLS
        # came in clear and must not run inside TLS. No await between this and
        # start_tls pausing the socket, so nothing more can slip into the buffer.
        self.reader._buffer.clear()  # type: ignore[attr-defined]
        self._user = None
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("session %s: TLS handshake failed: %s", self.sid, exc.__class__.__name__)
            self.writer.transport.abort()
            self._closing = True
            return
        self.reader._transport = self.writer.transport  # type: ignore[attr-defined]
        self.tls = True

    # -- TRANSACTION ------------------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        live = [e for i, e in enumerate(self._entries) if i not in self._deleted]
        return len(live), sum(e.size for e in live)

    def _number(self, text: str, usage: str) -> int | None:
        """The index of a listed, undeleted message, or None with the reply sent."""
        if not text.isdigit() or not text.isascii() or len(text) > 12:
            self._bad(R.SYNTAX, usage=usage)
            return None
        n = int(text)
        if not 1 <= n <= len(self._entries):
            self._send(R.NO_SUCH_MESSAGE)
            return None
        if n - 1 in self._deleted:
            self._send(R.MESSAGE_DELETED, n=n)
            return None
        return n - 1

    async def do_stat(self, arg: str) -> None:
        if arg.strip(" "):
            self._bad(R.SYNTAX, usage="STAT")
            return
        count, octets = self._totals()
        self._send(R.STAT, count=count, octets=octets)

    async def do_list(self, arg: str) -> None:
        await self._listing(arg, "LIST [msg]", lambda e: str(e.size), R.SCAN_ONE, "size")

    async def do_uidl(self, arg: str) -> None:
        await self._listing(arg, "UIDL [msg]", lambda e: e.uid, R.UIDL_ONE, "uid")

    async def _listing(
        self, arg: str, usage: str, value: Callable[[Entry], str], one: Reply, key: str
    ) -> None:
        args = arg.split()
        if len(args) > 1:
            self._bad(R.SYNTAX, usage=usage)
            return
        if args:
            i = self._number(args[0], usage)
            if i is not None:
                self._send(one, n=i + 1, **{key: value(self._entries[i])})
            return
        if one is R.SCAN_ONE:
            count, octets = self._totals()
            first = R.SCAN_ALL.line(count=count, octets=octets)
        else:
            first = R.UIDL_ALL.line()
        self._write(first)
        batch: list[str] = []
        for i, e in enumerate(self._entries):
            if i in self._deleted:
                continue
            batch.append(f"{i + 1} {value(e)}\r\n")
            if len(batch) >= 1024:
                self._write("".join(batch).encode("ascii", "replace"))
                batch = []
                await self._drain()
        self._write("".join(batch).encode("ascii", "replace") + b".\r\n")

    async def do_retr(self, arg: str) -> None:
        args = arg.split()
        if len(args) != 1:
            self._bad(R.SYNTAX, usage="RETR msg")
            return
        i = self._number(args[0], "RETR msg")
        if i is None:
            return
        entry = self._entries[i]
        if await self._stream(i, R.RETR.line(size=entry.size), None):
            self._retrieved.add(i)
            self.stats.retrieved += 1

    async def do_top(self, arg: str) -> None:
        args = arg.split()
        if len(args) != 2 or not args[1].isdigit() or not args[1].isascii() or len(args[1]) > 12:
            self._bad(R.SYNTAX, usage="TOP msg lines")
            return
        i = self._number(args[0], "TOP msg lines")
        if i is None:
            return
        await self._stream(i, R.TOP.line(), int(args[1]))

    async def _stream(self, i: int, first_line: bytes, body_lines: int | None) -> bool:
        """Send message `i` as a multi-line response; True if it was sent whole."""
        assert self._maildrop is not None
        entry = self._entries[i]
        stream = self._maildrop.read(entry.uid)
        try:
            it = aiter(stream)
            try:
                first = await anext(it)
            except StopAsyncIteration:
                first = b""
            except (MaildropUnavailable, MessageGone, MessageUnreadable) as exc:
                self._send(_read_failure(exc), n=i + 1)
                return False
            self._write(first_line)
            encoder = Encoder(body_lines)
            self._write(encoder.feed(first))
            try:
                while not encoder.done:
                    await self._drain()
                    try:
                        chunk = await anext(it)
                    except StopAsyncIteration:
                        break
                    self._write(encoder.feed(chunk))
            except (MaildropUnavailable, MessageGone, MessageUnreadable) as exc:
                # Part of it is on the wire already: ending the response would pass
                # off a truncated or damaged message as whole. Drop the connection.
                log.error(
                    "session %s: message failed while being sent (%s); dropping the connection",
                    self.sid,
                    exc.__class__.__name__,
                )
                self.writer.transport.abort()
                self._closing = True
                return False
            self._write(encoder.finish())
            self.stats.octets += encoder.octets
            if body_lines is None and encoder.octets != entry.size:
                log.warning(
                    "session %s: message %d listed as %d octets, sent %d (line ends made CRLF)",
                    self.sid,
                    i + 1,
                    entry.size,
                    encoder.octets,
                )
            return True
        finally:
            await _aclose(stream)

    async def do_dele(self, arg: str) -> None:
        args = arg.split()
        if len(args) != 1:
            self._bad(R.SYNTAX, usage="DELE msg")
            return
        i = self._number(args[0], "DELE msg")
        if i is None:
            return
        self._deleted.add(i)
        self._send(R.DELETED, n=i + 1)

    async def do_rset(self, arg: str) -> None:
        if arg.strip(" "):
            self._bad(R.SYNTAX, usage="RSET")
            return
        self._deleted.clear()
        count, octets = self._totals()
        self._send(R.RSET, count=count, octets=octets)

    async def do_noop(self, arg: str) -> None:
        if arg.strip(" "):
            self._bad(R.SYNTAX, usage="NOOP")
            return
        self._send(R.NOOP)

    async def do_quit(self, arg: str) -> None:
        if arg.strip(" "):
            self._bad(R.SYNTAX, usage="QUIT")
            return
        self._closing = True
        if self.state == AUTHORIZATION:
            self._send(R.BYE)
            return
        # RFC 1939 §6: the UPDATE state. All of the deletions, durably, or none.
        self.state = UPDATE
        maildrop = self._maildrop
        assert maildrop is not None
        doomed = [self._entries[i].uid for i in sorted(self._deleted)]
        if doomed:
            try:
                await maildrop.delete(doomed)
            except Exception as exc:
                if not isinstance(exc, MaildropUnavailable):
                    log.exception("session %s: deleting failed", self.sid)
                self._send(R.UPDATE_FAILED)
                return
            self.stats.deleted = len(doomed)
        kept = [self._entries[i].uid for i in sorted(self._retrieved - self._deleted)]
        if kept:
            try:
                await maildrop.mark_retrieved(kept)
            except Exception as exc:  # only an eviction preference: not worth an -ERR
                log.warning(
                    "session %s: could not mark messages retrieved (%s)",
                    self.sid,
                    exc.__class__.__name__,
                )
        self._send(R.BYE_UPDATED, deleted=len(doomed))

    # -- ending -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The box is stopping: end now if waiting for a command, else after this one."""
        self._stopping = True
        if self._idle and not self.writer.transport.is_closing():
            self._send(R.SHUTTING_DOWN)
            self._closing = True
            self.writer.transport.close()  # ends the read with EOF; no UPDATE

    def force_close(self) -> None:
        """The grace period is over: drop the connection, unless deletions are being made
        durable (UPDATE), which finish and get their reply."""
        if self.state == UPDATE:
            return
        self._closing = True
        self.writer.transport.abort()

    async def _close(self) -> None:
        """Flush the last replies, briefly: a client that stopped reading is cut off."""
        transport = self.writer.transport
        if transport.is_closing():
            return
        try:
            async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT):
                await self.writer.drain()
        except Exception:
            transport.abort()
            return
        transport.close()

    async def _end(self) -> None:
        """Forget the maildrop (and its key) and the connection slot, then close."""
        if self._released:
            return
        self._released = True
        maildrop, self._maildrop = self._maildrop, None
        if maildrop is not None:
            try:
                await maildrop.close()
            except Exception:
                log.exception("session %s: closing the maildrop failed", self.sid)
        if self.registry is not None:
            self.registry.release(self)
        with contextlib.suppress(Exception):
            await self._close()
        s = self.stats
        who = f" from {self.client}" if self.options.debug else ""
        log.info(
            "session %s%s closed: %s, %d commands, %d retrieved (%d octets), %d deleted, %.2f s",
            self.sid,
            who,
            "TLS" if self.tls else "plain",
            s.commands,
            s.retrieved,
            s.octets,
            s.deleted,
            time.monotonic() - s.started,
        )


def _read_failure(exc: Exception) -> Reply:
    if isinstance(exc, MaildropUnavailable):
        return R.DRIVE_OFFLINE
    if isinstance(exc, MessageGone):
        return R.MESSAGE_GONE
    return R.MESSAGE_UNREADABLE


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def _decode_plain(response: str) -> tuple[str, str] | None:
    """RFC 4616 PLAIN: base64 of authzid NUL authcid NUL password; the authorization
    identity must be empty or the same as the authentication identity."""
    try:
        raw = base64.b64decode(response.encode("ascii"), validate=True)
        authzid, authcid, password = raw.decode("utf-8").split("\0")
    except (ValueError, binascii.Error, UnicodeError):
        return None
    if not authcid or not password or authzid not in ("", authcid):
        return None
    return authcid, password

"""One SMTP session: a subclass of aiosmtpd's `SMTP` with our own command loop and DATA.

aiosmtpd 1.4.6 (docs/findings.md, "aiosmtpd") buffers DATA whole in memory, resets the idle timer
on commands only, keeps `command_size_limits` in a class-level dict that every
new connection clears and every EHLO grows, rejects the null sender "<>", sends
replies without enhanced status codes, and spends ~160 µs per connection in
`__init__` introspecting handler hooks. So this subclass keeps what aiosmtpd
does well - the asyncio protocol shell: `connection_made`, `connection_lost`,
`_reset_timeout`, `_cb_client_connected`, `Session` - and replaces the rest:

* `__init__` sets exactly the attributes those inherited methods read (a test
  compares them with what `SMTP.__init__` sets, tests/smtp/test_aiosmtpd_pin.py);
* `_handle_client` is our command loop: CRLF-only command lines (RFC 5321
  §2.3.8), per-session command size limits (§4.5.3.1.4, RFC 1870, RFC 6531),
  a bad-command limit, replies from replies.py only;
* `smtp_DATA` streams through data.DataReader into the drive in ≤64 KiB pieces,
  resetting the idle timer on progress;
* STARTTLS uses the public `StreamWriter.start_tls` and throws away anything the
  client pipelined in clear after it (RFC 3207 §4.2, CVE-2011-0411).

Protocol code never touches the drive: it asks handler.Gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aiosmtpd.smtp import SMTP, Session

from letterbox.config import SmtpSettings
from letterbox.logsafe import escape
from letterbox.smtp import replies as R
from letterbox.smtp.data import DataError, DataReader
from letterbox.smtp.handler import Gateway, Transaction
from letterbox.smtp.received import TlsInfo, ip_literal, received_header, return_path_header
from letterbox.smtp.replies import Reply
from letterbox.smtp.syntax import PathError, parse_path

log = logging.getLogger("letterbox.smtp")

# aiosmtpd logs every peer, command and address at INFO on "mail.log"; our own
# logs name no addresses unless log.debug is set (the appliance turns it back on).
logging.getLogger("mail.log").setLevel(logging.WARNING)

READ_LIMIT = 64 * 1024  # StreamReader buffer limit: pauses the socket beyond 2x this
DATA_CHUNK = 64 * 1024  # what one DATA read hands to the drive at most
# The idle timer restarts during DATA only after this much more data: a client
# trickling a byte every few seconds is still cut off at `timeout`, a slow but
# real upload (>= 64 KiB per timeout period, ~220 B/s at 300 s) is not.
DATA_PROGRESS = 64 * 1024
COMMAND_LIMIT = 512  # RFC 5321 §4.5.3.1.4, CRLF included
# After EHLO, MAIL may carry SIZE= (+26, RFC 1870 §3), SMTPUTF8 (+10, RFC 6531
# §3.4) and BODY=8BITMIME (+14, RFC 6152 gives no figure; its length).
MAIL_LIMIT_EHLO = COMMAND_LIMIT + 26 + 10 + 14
TLS_HANDSHAKE_TIMEOUT = 30.0


class Registry(Protocol):
    """What a session needs from its listener: admission, and being forgotten."""

    def admit(self, session: SmtpSession) -> Reply | None: ...

    def release(self, session: SmtpSession) -> None: ...


@dataclass
class SessionContext:
    """Everything the sessions of one listener share."""

    gateway: Gateway
    settings: SmtpSettings
    hostname: str
    registry: Registry
    tls_context: ssl.SSLContext | None = None
    debug: bool = False


_TOO_LONG = object()  # a command line over READ_LIMIT, already discarded


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    commands: int = 0
    stored: int = 0
    refused: int = 0
    replies: Counter[int] = field(default_factory=Counter)


class SmtpSession(SMTP):
    """A server-side SMTP session (one TCP connection)."""

    _COMMANDS: ClassVar[dict[str, str]] = {}

    def __init__(self, ctx: SessionContext) -> None:
        # Deliberately not SMTP.__init__ (see the module docstring); these are the
        # attributes that the inherited connection_made/connection_lost/
        # _reset_timeout/_cb_client_connected read, and what SMTP.__init__ sets
        # (tests/smtp/test_aiosmtpd_pin.py keeps the two lists in step).
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=READ_LIMIT, loop=loop),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.loop = loop
        self.__ident__ = "Letterbox"
        self.event_handler = None
        self.hostname = ctx.hostname
        self.tls_context = ctx.tls_context
        self.require_starttls = False
        self.data_size_limit = ctx.settings.max_message_size
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self._timeout_duration = float(ctx.settings.timeout)
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._tls_handshake_okay = True
        self._tls_protocol = None  # aiosmtpd's own STARTTLS is not used
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport: Any = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._auth_require_tls = True
        self._auth_required = False
        self._auth_methods: dict[str, Any] = {}
        self._auth_callback = None
        self._authenticator = None
        self._handle_hooks: dict[str, Callable[..., Awaitable[Any]]] = {}
        self._ehlo_hook_ver = None
        self._smtp_methods: dict[str, Any] = {}
        self._enforce_call_limit = False
        self._proxy_timeout = None
        # ours
        self.ctx = ctx
        self.gateway = ctx.gateway
        self.settings = ctx.settings
        self._limits: dict[str, int] = {}  # per session, never shared: docs/findings.md
        self._pending = bytearray()  # bytes read past the end of DATA (RFC 2920 pipelining)
        self._txn: Transaction | None = None
        self._tls: TlsInfo | None = None
        self._errors = 0
        self._stopping = False  # the listener is shutting down
        self._waiting_idle = False  # blocked on a command with no transaction open
        self._released = False
        self.stats = _Stats()
        self.peer: Any = None

    @property
    def _session(self) -> Session:
        """aiosmtpd's per-connection state, set in `connection_made` before any command."""
        assert self.session is not None
        return self.session

    # -- lifecycle -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._release()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        """The client closed its sending side: finish what it sent, then end.

        aiosmtpd cancels the command loop here, which drops the reply to a
        pipelined QUIT or to a message whose end mark came with the EOF. The
        stream reader's EOF ends the loop (or the DATA) by itself instead.
        """
        return asyncio.StreamReaderProtocol.eof_received(self)

    def _timeout_cb(self) -> None:
        """Idle too long (RFC 5321 §4.5.3.2.7): say so with 421, then close."""
        if self.transport is None or self.transport.is_closing():
            return
        log.info("session %s: timeout after %.0f s", self._sid, self._timeout_duration)
        self._close_with(R.TIMEOUT)

    def _release(self) -> None:
        """Forget the session: abort an unfinished message, free its connection slot."""
        if self._released:
            return
        self._released = True
        self.gateway.abort(self._txn)
        self._txn = None
        self.ctx.registry.release(self)
        s = self.stats
        replies = " ".join(f"{code}x{n}" for code, n in sorted(s.replies.items()))
        who = f" from {ip_literal(self.peer)}" if self.ctx.debug else ""
        log.info(
            "session %s%s closed: %d stored, %d refused, %d commands, replies %s, %.2f s",
            self._sid,
            who,
            s.stored,
            s.refused,
            s.commands,
            replies or "none",
            time.monotonic() - s.started,
        )

    @property
    def _sid(self) -> str:
        return f"{id(self) & 0xFFFFFF:06x}"

    # -- shutdown (called by the listener) -------------------------------------------------

    def shutdown(self) -> None:
        """Stop soon: now if idle between transactions, else after the current one."""
        self._stopping = True
        if self._waiting_idle and self._txn is None:
            self._close_with(R.SHUTTING_DOWN)

    def force_close(self) -> None:
        """The grace period is over: drop an unfinished message, unless it is committing."""
        if self._txn is not None and self._txn.committing:
            return  # its commit finishes, the client gets its 250, then the session ends
        self.gateway.abort(self._txn)
        self._txn = None
        self._close_with(R.SHUTTING_DOWN)

    @property
    def committing(self) -> bool:
        return self._txn is not None and self._txn.committing

    def _close_with(self, reply: Reply) -> None:
        if self.transport is None:
            return
        self.stats.replies[reply.code] += 1
        with contextlib.suppress(Exception):
            self._writer.write(reply.line())
        self.transport.close()

    # -- output ---------------------------------------------------------------------------

    def _send(self, reply: Reply, **fields: object) -> None:
        self.stats.replies[reply.code] += 1
        if reply.permanent:
            self._errors += 1
        self._writer.write(reply.line(**fields))

    def _send_raw(self, code: int, data: bytes) -> None:
        self.stats.replies[code] += 1
        self._writer.write(data)

    # -- the command loop -----------------------------------------------------------------

    async def _handle_client(self) -> None:
        try:
            refusal = self.ctx.registry.admit(self)
            if refusal is not None:
                self._close_with(refusal)
                return
            self._send(R.GREETING, host=self.hostname)
            while self.transport is not None and not self.transport.is_closing():
                raw = await self._next_line()
                if raw is None:
                    break
                self.stats.commands += 1
                await self._dispatch(raw)
                if self.transport is None or self.transport.is_closing():
                    break
                if self._errors >= self.settings.max_bad_commands:
                    log.info("session %s: %d errors, closing", self._sid, self._errors)
                    self._close_with(R.TOO_MANY_ERRORS)
                    break
                if self._stopping and self._txn is None:
                    self._close_with(R.SHUTTING_DOWN)
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: unexpected error, closing", self._sid)
            self._close_with(R.INTERNAL_ERROR)
        finally:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            self._release()

    async def _next_line(self) -> bytes | object | None:
        """The next command line with its terminator; None at end of input."""
        if self._pending:
            i = self._pending.find(b"\n")
            if i >= 0:
                line = bytes(self._pending[: i + 1])
                del self._pending[: i + 1]
                return line
        await self._writer.drain()
        self._waiting_idle = self._txn is None
        if self._stopping and self._waiting_idle:
            self._close_with(R.SHUTTING_DOWN)
            return None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as exc:
            await self._discard_line(exc.consumed)
            self._pending.clear()
            return _TOO_LONG
        finally:
            self._waiting_idle = False
        if self._pending:
            line = bytes(self._pending) + line
            self._pending.clear()
        return line

    async def _discard_line(self, consumed: int) -> None:
        """Read and drop the rest of an over-long line, through its LF."""
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)

    async def _dispatch(self, raw: bytes | object) -> None:
        if not isinstance(raw, bytes):
            self._send(R.LINE_TOO_LONG)
            return
        # RFC 5321 §2.3.8: CR and LF only as the CRLF that ends a command.
        if not raw.endswith(b"\r\n") or b"\r" in raw[:-2]:
            self._send(R.BAD_LINE_ENDING)
            return
        line = raw[:-2]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._send(R.BAD_ENCODING)
            return
        if "\x00" in text:
            self._send(R.BAD_ENCODING)
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if len(raw) > self._limits.get(verb, COMMAND_LIMIT):
            self._send(R.LINE_TOO_LONG)
            return
        name = self._COMMANDS.get(verb)
        if name is None:
            self._send(R.UNRECOGNIZED)
            return
        self._reset_timeout()  # a valid command is activity
        await getattr(self, name)(arg.strip(" "))

    # -- commands -------------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.gateway.abort(self._txn)
        self._txn = None

    async def smtp_EHLO(self, arg: str) -> None:
        if not arg:
            self._send(R.SYNTAX, usage="EHLO domain")
            return
        self._reset_transaction()  # RFC 5321 §4.1.4: EHLO resets like RSET
        self._session.host_name = arg
        self._session.extended_smtp = True
        self._limits = {"MAIL": MAIL_LIMIT_EHLO}
        lines = [
            self.hostname,
            "PIPELINING",  # RFC 2920
            f"SIZE {self.settings.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
        ]
        if self.tls_context is not None and self._tls is None:
            lines.append("STARTTLS")  # RFC 3207
        self._send_raw(250, R.multiline(250, lines))

    async def smtp_HELO(self, arg: str) -> None:
        if not arg:
            self._send(R.SYNTAX, usage="HELO domain")
            return
        self._reset_transaction()
        self._session.host_name = arg
        self._session.extended_smtp = False
        self._limits = {}
        self._send(R.HELO, host=self.hostname)

    async def smtp_NOOP(self, arg: str) -> None:
        self._send(R.OK)

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            self._send(R.SYNTAX, usage="RSET")
            return
        self._reset_transaction()
        self._send(R.OK)

    async def smtp_QUIT(self, arg: str) -> None:
        if arg:
            self._send(R.SYNTAX, usage="QUIT")
            return
        self._reset_transaction()
        self._send(R.CLOSING)
        self.transport.close()

    async def smtp_HELP(self, arg: str) -> None:
        self._send(R.HELP)

    async def smtp_VRFY(self, arg: str) -> None:
        # RFC 5321 §3.5.3 allows refusing; answering would tell anyone which
        # household members exist.
        self._send(R.VRFY_DISABLED)

    smtp_EXPN = smtp_VRFY

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            self._send(R.SYNTAX, usage="STARTTLS")
            return
        if self.tls_context is None:
            self._send(R.TLS_UNAVAILABLE)
            return
        if self._tls is not None:
            self._send(R.TLS_ACTIVE)
            return
        # RFC 3207 §4.2 and CVE-2011-0411: commands pipelined after STARTTLS came
        # in clear text and must not run inside the TLS session. Nothing can
        # arrive between this and start_tls pausing the socket: no await between.
        self._pending.clear()
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self._reset_transaction()
        self._send(R.TLS_READY)
        try:
            await self._writer.start_tls(
                self.tls_context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("session %s: TLS handshake failed: %s", self._sid, exc.__class__.__name__)
            if self.transport is not None:
                self.transport.close()
            return
        self.transport = self._writer.transport
        self._reader._transport = self.transport  # type: ignore[attr-defined]  # flow control
        ssl_object = self.transport.get_extra_info("ssl_object")
        name, _, bits = ssl_object.cipher() if ssl_object else ("unknown", "", 0)
        self._tls = TlsInfo(ssl_object.version() if ssl_object else "unknown", name, bits or 0)
        self._session.ssl = {"version": self._tls.version, "cipher": self._tls.cipher}
        # RFC 3207 §4.2: forget what the client said before; it must EHLO again.
        self._session.host_name = None
        self._session.extended_smtp = False
        self._limits = {}

    async def smtp_MAIL(self, arg: str) -> None:
        if not self._session.host_name:
            self._send(R.NEED_HELO)
            return
        if self._txn is not None:
            self._send(R.NESTED_MAIL)
            return
        try:
            path = parse_path(arg, "FROM", null_ok=True)
        except PathError:
            self._send(R.BAD_SENDER)
            return
        if path.params and not self._session.extended_smtp:
            self._send(R.SYNTAX, usage="MAIL FROM:<address> (parameters need EHLO)")
            return
        params = dict(path.params)
        size_hint: int | None = None
        body = params.pop("BODY", "7BIT")
        if body is None or body.upper() not in ("7BIT", "8BITMIME"):
            self._send(R.BAD_BODY)
            return
        smtputf8 = "SMTPUTF8" in params
        if params.pop("SMTPUTF8", None) is not None:
            self._send(R.SYNTAX, usage="SMTPUTF8 takes no value")
            return
        if "SIZE" in params:
            size = params.pop("SIZE")
            if size is None or not size.isdigit() or not size.isascii():
                self._send(R.BAD_SIZE)
                return
            size_hint = int(size)
        if params:
            self._send(R.UNKNOWN_PARAMETER)
            return
        if not smtputf8 and not path.address.isascii():
            self._send(R.UTF8_UNDECLARED)  # RFC 6531 §3.4
            return
        txn = Transaction(mail_from=path.address, size_hint=size_hint, smtputf8=smtputf8)
        reply = self.gateway.mail(txn)
        if reply is R.SENDER_OK:
            self._txn = txn
        self._send(reply, limit=self.settings.max_message_size)

    async def smtp_RCPT(self, arg: str) -> None:
        if not self._session.host_name:
            self._send(R.NEED_HELO)
            return
        txn = self._txn
        if txn is None:
            self._send(R.NEED_MAIL)
            return
        try:
            path = parse_path(arg, "TO", null_ok=False)
        except PathError:
            self._send(R.BAD_RECIPIENT)
            return
        if path.params:  # no DSN (RFC 3461) offered, so no NOTIFY= or ORCPT=
            self._send(R.UNKNOWN_PARAMETER)
            return
        if not txn.smtputf8 and not path.address.isascii():
            self._send(R.UTF8_UNDECLARED)
            return
        reply = self.gateway.rcpt(txn, path.address)
        if self.ctx.debug and reply is not R.RECIPIENT_OK:
            log.info(
                "session %s: RCPT <%s>: %d %s",
                self._sid,
                escape(path.address),
                reply.code,
                reply.enhanced,
            )
        self._send(reply)

    async def smtp_DATA(self, arg: str) -> None:
        if not self._session.host_name:
            self._send(R.NEED_HELO)
            return
        txn = self._txn
        if txn is None:
            self._send(R.NEED_MAIL)
            return
        if arg:
            self._send(R.SYNTAX, usage="DATA")
            return
        if not txn.recipients:
            self._send(R.NO_VALID_RECIPIENTS)
            return
        if self._pending or self._reader._buffer:  # type: ignore[attr-defined]
            # RFC 2920 §3.1: DATA ends a pipelined group; the client must wait for
            # 354. Whatever it sent already is not known to be message or commands.
            self._close_with(R.EARLY_DATA)
            self._reset_transaction()
            return
        header = return_path_header(txn.mail_from, utf8=txn.smtputf8) + received_header(
            helo=self._session.host_name or "",
            peer=self.peer,
            host=self.hostname,
            trace=txn.trace,
            extended=self._session.extended_smtp,
            tls=self._tls,
            utf8=txn.smtputf8,
            recipients=txn.recipients,
        )
        failure = self.gateway.begin_body(txn, header)
        if failure is not None:
            self._txn = None
            self._send(failure)
            return
        self._send(R.START_DATA)
        await self._writer.drain()
        reply, fields = await self._receive(txn)
        self._txn = None
        if reply is R.STORED:
            self.stats.stored += 1
        else:
            self.stats.refused += 1
        self._send(reply, **fields)
        if reply is R.BARE_NEWLINE:
            # The client's idea of where lines (and so the data) end differs from
            # ours: whatever it sent next cannot be trusted to be commands. Close,
            # as Postfix does with smtpd_forbid_bare_newline (data.py).
            self._pending.clear()
            self.transport.close()

    async def _receive(self, txn: Transaction) -> tuple[Reply, dict[str, object]]:
        """Stream the message into the drive; the reply once it is durable or refused."""
        reader = DataReader(self.settings.max_message_size, self.settings.max_line_length)
        refused: Reply | None = None
        progress = 0
        while not reader.done:
            chunk = await self._reader.read(DATA_CHUNK)
            if not chunk:
                raise ConnectionResetError("end of input during DATA")
            progress += len(chunk)
            if progress >= DATA_PROGRESS:
                self._reset_timeout()
                progress = 0
            content, rest = reader.feed(chunk)
            if content and refused is None:
                refused = self.gateway.write(txn, content)
            if reader.error is not None and refused is None:
                self.gateway.abort(txn)  # nothing of a refused message stays
                refused = {
                    DataError.TOO_BIG: R.SIZE_EXCEEDED,
                    DataError.BARE_NEWLINE: R.BARE_NEWLINE,
                    DataError.LINE_TOO_LONG: R.DATA_LINE_TOO_LONG,
                }[reader.error]
            if rest:
                self._pending[:0] = rest
        fields: dict[str, object] = {}
        if refused is R.SIZE_EXCEEDED:
            fields["limit"] = self.settings.max_message_size
        elif refused is R.DATA_LINE_TOO_LONG:
            fields["limit"] = self.settings.max_line_length
        if refused is not None:
            self.gateway.abort(txn)
            self.gateway.refused_message(txn, refused, reader.received)
            return refused, fields
        # No idle timeout while the drive commits: a slow disk is not the client's fault.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            reply = await self.gateway.commit(txn)
        finally:
            if self.transport is not None:
                self._reset_timeout()
        return reply, {"trace": txn.trace}


SmtpSession._COMMANDS = {
    name[len("smtp_") :]: name for name in dir(SmtpSession) if name.startswith("smtp_")
}
# aiosmtpd's AUTH (and its HELP's view of it) is not offered on the inbound MX.
SmtpSession._COMMANDS.pop("AUTH", None)

"""The POP3 listeners: port 110 with STLS and port 995 with implicit TLS, and a graceful stop.

It owns what spans sessions, as smtp/listener.py does for SMTP: how many
connections one address holds (`pop3.max_connections_per_address`, then
-ERR [SYS/TEMP]), whether a connection may log in before TLS (`plaintext`:
"always" when `pop3.allow_plaintext_login` is set, "loopback" under --dev, else
"never"), and shutting down: stop accepting, close sessions waiting for a command
at once (no UPDATE: nothing is deleted), let a command in progress (a RETR, a
login) finish within the grace period, then drop the rest, except sessions in the
UPDATE state, whose durable delete runs to its end and gets its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from typing import Literal

from letterbox.pop3 import replies as R
from letterbox.pop3.replies import Reply
from letterbox.pop3.session import READ_LIMIT, TLS_HANDSHAKE_TIMEOUT, Pop3Session, SessionOptions
from letterbox.sessions import Refusal, SessionRegistry

log = logging.getLogger("letterbox.pop3")

UPDATE_WAIT = 30.0  # after the grace period, how long deletions in flight may still take

Plaintext = Literal["always", "loopback", "never"]


class Pop3Listener:
    """One or two listening sockets (plain with STLS, implicit TLS) and their sessions."""

    def __init__(
        self,
        options: SessionOptions,
        *,
        host: str,
        port: int | None,
        tls_port: int | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        plaintext: Plaintext = "never",
        max_connections_per_address: int = 20,
    ) -> None:
        """`port` None: no plain listener; `tls_port` None: no implicit-TLS listener
        (it needs `implicit_tls_context`, by default `options.tls_context`). Port 0
        picks a free port; `port`/`tls_port` hold the bound ones after start()."""
        self.options = options
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self._tls_context = implicit_tls_context or options.tls_context
        self.plaintext = plaintext
        self.max_connections_per_address = max_connections_per_address
        self._registry: SessionRegistry[Pop3Session] = SessionRegistry(
            "POP3", max_connections_per_address, UPDATE_WAIT
        )
        self.sessions = self._registry.sessions
        self._servers: list[asyncio.Server] = []

    async def start(self) -> list[tuple[str, int, bool]]:
        """Listen; returns the bound (address, port, implicit TLS) triples."""
        bound: list[tuple[str, int, bool]] = []
        if self.port is not None:
            server = await asyncio.start_server(
                lambda r, w: self._serve(r, w, tls=False),
                host=self.host or None,
                port=self.port,
                limit=READ_LIMIT,
                reuse_address=True,
                backlog=128,
            )
            self._servers.append(server)
            socks = [s.getsockname()[:2] for s in server.sockets]
            self.port = socks[0][1] if socks else self.port
            bound += [(a, p, False) for a, p in socks]
        if self.tls_port is not None:
            if self._tls_context is None:
                raise ValueError("POP3S needs a TLS context")
            server = await asyncio.start_server(
                lambda r, w: self._serve(r, w, tls=True),
                host=self.host or None,
                port=self.tls_port,
                limit=READ_LIMIT,
                reuse_address=True,
                backlog=128,
                ssl=self._tls_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
            self._servers.append(server)
            socks = [s.getsockname()[:2] for s in server.sockets]
            self.tls_port = socks[0][1] if socks else self.tls_port
            bound += [(a, p, True) for a, p in socks]
        return bound

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool
    ) -> None:
        peer = writer.get_extra_info("peername")
        session = Pop3Session(
            reader,
            writer,
            self.options,
            tls=tls,
            plaintext_login=self._plaintext_ok(peer),
            registry=self,
        )
        await session.run()

    def _plaintext_ok(self, peer: object) -> bool:
        if self.plaintext == "always":
            return True
        if self.plaintext == "loopback":
            return _is_loopback(peer)
        return False

    # -- Registry, for the sessions ------------------------------------------------------

    def admit(self, session: Pop3Session) -> Reply | None:
        refusal = self._registry.admit(session, session.client)
        return None if refusal is None else _REFUSALS[refusal]

    def release(self, session: Pop3Session) -> None:
        self._registry.release(session)

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop accepting; let commands in progress finish within `grace` seconds."""
        self._registry.stopping = True
        for server in self._servers:
            server.close()
        await self._registry.drain(grace)
        for server in self._servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    def hurry(self) -> None:
        """End the grace period now (a second SIGINT/SIGTERM)."""
        self._registry.hurry()


_REFUSALS = {Refusal.SHUTTING_DOWN: R.SHUTTING_DOWN, Refusal.TOO_MANY: R.TOO_MANY_CONNECTIONS}


def _is_loopback(peer: object) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return isinstance(peer, str)  # a Unix socket: local by definition
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback

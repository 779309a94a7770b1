"""The SMTP listener: a socket, the live sessions, per-address caps, and a graceful stop.

It owns what spans sessions: how many connections one address holds
(`smtp.max_connections_per_address`, then 421 4.7.0), and shutting down without
losing or double-promising mail: stop accepting, close idle sessions with
421 4.3.2 at once, let a message in flight finish within the grace period, then
drop what is still unfinished (aborted in the drive, 421, never a 250) while
commits already handed to the drive run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from letterbox.config import SmtpSettings
from letterbox.sessions import Refusal, SessionRegistry
from letterbox.smtp import replies as R
from letterbox.smtp.handler import Gateway
from letterbox.smtp.replies import Reply
from letterbox.smtp.server import SessionContext, SmtpSession

log = logging.getLogger("letterbox.smtp")

COMMIT_WAIT = 30.0  # after the grace period, how long commits in flight may still take


class SmtpListener:
    def __init__(
        self,
        gateway: Gateway,
        settings: SmtpSettings,
        *,
        hostname: str,
        host: str,
        port: int,
        tls_context: ssl.SSLContext | None,
        debug: bool = False,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._registry: SessionRegistry[SmtpSession] = SessionRegistry(
            "SMTP", settings.max_connections_per_address, COMMIT_WAIT
        )
        self.sessions = self._registry.sessions
        self._server: asyncio.Server | None = None
        self._ctx = SessionContext(
            gateway=gateway,
            settings=settings,
            hostname=hostname,
            registry=self,
            tls_context=tls_context,
            debug=debug,
        )

    async def start(self) -> list[tuple[str, int]]:
        """Listen; returns the bound (address, port) pairs (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SmtpSession(self._ctx),
            host=self.host or None,
            port=self.port,
            reuse_address=True,
            backlog=256,
        )
        bound = [s.getsockname()[:2] for s in self._server.sockets]
        if bound:
            self.port = bound[0][1]
        return bound

    def reconfigure(self, settings: SmtpSettings) -> None:
        """New settings for sessions that start from now on (EHLO's SIZE, DATA's
        limit); sessions already open keep theirs until they end."""
        self.settings = settings
        self._ctx.settings = settings
        self._ctx.gateway.reconfigure(settings)

    # -- Registry, for the sessions ------------------------------------------------------

    def admit(self, session: SmtpSession) -> Reply | None:
        refusal = self._registry.admit(session, _address(session.peer))
        return None if refusal is None else _REFUSALS[refusal]

    def release(self, session: SmtpSession) -> None:
        self._registry.release(session)

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop accepting; let sessions finish within `grace` seconds; then drop the rest."""
        self._registry.stopping = True
        if self._server is not None:
            self._server.close()
        await self._registry.drain(grace)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def hurry(self) -> None:
        """End the grace period now (a second SIGINT/SIGTERM)."""
        self._registry.hurry()


_REFUSALS = {Refusal.SHUTTING_DOWN: R.SHUTTING_DOWN, Refusal.TOO_MANY: R.TOO_MANY_CONNECTIONS}


def _address(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

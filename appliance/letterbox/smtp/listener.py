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
from collections import Counter

from letterbox.config import SmtpSettings
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
        self.sessions: set[SmtpSession] = set()
        self._per_address: Counter[str] = Counter()
        self._stopping = False
        self._server: asyncio.Server | None = None
        self._empty = asyncio.Event()
        self._empty.set()
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

    # -- Registry, for the sessions ------------------------------------------------------

    def admit(self, session: SmtpSession) -> Reply | None:
        if self._stopping:
            return R.SHUTTING_DOWN
        address = _address(session.peer)
        if self._per_address[address] >= self.settings.max_connections_per_address:
            log.warning(
                "refused a connection: %d open from one address already", self._per_address[address]
            )
            return R.TOO_MANY_CONNECTIONS
        self._per_address[address] += 1
        self.sessions.add(session)
        self._empty.clear()
        return None

    def release(self, session: SmtpSession) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        address = _address(session.peer)
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
        if not self.sessions:
            self._empty.set()

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop accepting; let sessions finish within `grace` seconds; then drop the rest."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        busy = len(self.sessions)
        for session in list(self.sessions):
            session.shutdown()
        if busy:
            log.info("SMTP stopping: %d sessions open, up to %.0f s to finish", busy, grace)
        if not await self._wait_empty(grace):
            log.warning(
                "SMTP: %d sessions still open after %.0f s; closing them", len(self.sessions), grace
            )
            for session in list(self.sessions):
                session.force_close()
            if not await self._wait_empty(COMMIT_WAIT):
                log.error("SMTP: %d sessions did not end", len(self.sessions))
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def hurry(self) -> None:
        """End the grace period now (a second SIGINT/SIGTERM)."""
        for session in list(self.sessions):
            session.force_close()

    async def _wait_empty(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _address(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

"""The live sessions of one listener: per-address caps and a graceful drain.

SMTP and POP3 share this. It counts the connections each client address holds,
and stops without cutting a message or a QUIT short: stop accepting, ask every
session to finish (`shutdown`), wait up to the grace period, then force the rest
(`force_close`) and wait a last while for work that must not be cut (a commit
already handed to the drive, a QUIT's deletions). Each protocol says how a
refusal sounds on its wire.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("letterbox")


class Closable(Protocol):
    def shutdown(self) -> None:
        """Finish the current command or message, then close."""

    def force_close(self) -> None:
        """Close now (what is unfinished is aborted, never acknowledged)."""


S = TypeVar("S", bound=Closable)


class Refusal(enum.Enum):
    SHUTTING_DOWN = "shutting down"
    TOO_MANY = "too many connections from one address"


class SessionRegistry(Generic[S]):
    def __init__(self, protocol: str, max_per_address: int, final_wait: float) -> None:
        self.protocol = protocol
        self.max_per_address = max_per_address
        self.final_wait = final_wait  # after the grace period, for work that must finish
        self.sessions: set[S] = set()
        self.stopping = False
        self._per_address: Counter[str] = Counter()
        self._addresses: dict[S, str] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def admit(self, session: S, address: str) -> Refusal | None:
        if self.stopping:
            return Refusal.SHUTTING_DOWN
        if self._per_address[address] >= self.max_per_address:
            log.warning(
                "%s: refused a connection: %d open from one address already",
                self.protocol,
                self._per_address[address],
            )
            return Refusal.TOO_MANY
        self._per_address[address] += 1
        self._addresses[session] = address
        self.sessions.add(session)
        self._empty.clear()
        return None

    def release(self, session: S) -> None:
        address = self._addresses.pop(session, None)
        if address is None:
            return
        self.sessions.discard(session)
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
        if not self.sessions:
            self._empty.set()

    async def drain(self, grace: float) -> None:
        """Ask every session to finish, wait `grace` seconds, then close what is left."""
        self.stopping = True
        busy = len(self.sessions)
        for session in list(self.sessions):
            session.shutdown()
        if busy:
            log.info(
                "%s stopping: %d sessions open, up to %.0f s to finish", self.protocol, busy, grace
            )
        if await self._wait_empty(grace):
            return
        log.warning(
            "%s: %d sessions still open after %.0f s; closing them",
            self.protocol,
            len(self.sessions),
            grace,
        )
        self.hurry()
        if not await self._wait_empty(self.final_wait):
            log.error("%s: %d sessions did not end", self.protocol, len(self.sessions))

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

"""The session registry both listeners use: per-address caps and the graceful drain."""

from __future__ import annotations

import asyncio

from letterbox.sessions import Refusal, SessionRegistry


class FakeSession:
    """Stands in for a protocol session: the registry only calls these two methods."""

    def __init__(self, registry: SessionRegistry[FakeSession], finishes: bool) -> None:
        self.registry = registry
        self.finishes = finishes
        self.forced = False

    def shutdown(self) -> None:
        if self.finishes:  # an idle session ends at once when asked
            self.registry.release(self)

    def force_close(self) -> None:
        self.forced = True
        self.registry.release(self)


def test_caps_per_address_and_release() -> None:
    async def go() -> None:
        reg: SessionRegistry[FakeSession] = SessionRegistry("TEST", 2, 1.0)
        a, b, c, d = (FakeSession(reg, True) for _ in range(4))
        assert reg.admit(a, "192.0.2.1") is None
        assert reg.admit(b, "192.0.2.1") is None
        assert reg.admit(c, "192.0.2.1") is Refusal.TOO_MANY
        assert reg.admit(d, "192.0.2.2") is None  # another address has its own count
        reg.release(a)
        reg.release(a)  # twice is harmless
        assert reg.admit(c, "192.0.2.1") is None
        assert reg.sessions == {b, c, d}

    asyncio.run(go())


def test_drain_waits_then_forces_the_stragglers() -> None:
    async def go() -> None:
        reg: SessionRegistry[FakeSession] = SessionRegistry("TEST", 10, 1.0)
        idle, busy = FakeSession(reg, True), FakeSession(reg, False)
        reg.admit(idle, "192.0.2.1")
        reg.admit(busy, "192.0.2.1")
        await reg.drain(0.05)
        assert not idle.forced and busy.forced and not reg.sessions
        assert reg.admit(FakeSession(reg, True), "192.0.2.1") is Refusal.SHUTTING_DOWN

    asyncio.run(go())

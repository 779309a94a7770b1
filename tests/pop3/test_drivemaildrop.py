"""The drive maildrop and its authenticator, called directly (no sockets), on a real drive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from letterbox.crypto import Argon2Limits, PersonalKey
from letterbox.drive import Drive
from letterbox.pop3 import (
    DriveAuthenticator,
    EndToEndOnly,
    Entry,
    LoginRefused,
    LoginThrottled,
    MailboxInUse,
    MaildropUnavailable,
    MessageGone,
    MessageUnreadable,
)
from letterbox.pop3.drivemaildrop import READ_AHEAD
from letterbox.ratelimit import FailureLimiter

from tests.helpers import PASSWORD, message

ADDRESS = "anna@example.org"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mailbox(drive: Drive) -> str:
    info, _ = drive.create_mailbox(ADDRESS, quota=1 << 30, password=PASSWORD)
    return info.id


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _read(maildrop, uid: str) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join([chunk async for chunk in maildrop.read(uid)])


def test_login_lists_reads_and_deletes(drive: Drive, mailbox: str):
    ids = [drive.deliver("s@example.net", [ADDRESS], message(i, 200_000 * i))[0] for i in range(3)]

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0)
        md = await auth.login(ADDRESS, PASSWORD, "192.0.2.1")
        entries = await md.entries()
        assert entries == [Entry(d.id, d.plain_size) for d in drive.list(mailbox)]
        assert [e.uid for e in entries] == ids
        for i, e in enumerate(entries):
            assert await _read(md, e.uid) == message(i, 200_000 * i)
        await md.mark_retrieved([ids[0]])
        await md.delete([ids[1], ids[2]])
        await md.close()
        assert md._secret is None and mailbox not in auth.in_use

    run(go())
    assert [(d.id, d.retrieved) for d in drive.list(mailbox)] == [(ids[0], True)]


def test_a_read_stopped_early_closes_cleanly(drive: Drive, mailbox: str):
    [uid] = drive.deliver("s@example.net", [ADDRESS], message(1, 1_000_000))

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0)
        md = await auth.login(ADDRESS, PASSWORD, "192.0.2.1")
        stream = md.read(uid)
        first = await anext(stream)
        assert len(first) == READ_AHEAD  # several 64 KiB chunks per trip to the executor
        await stream.aclose()  # the worker decrypting the next chunk is waited for
        assert await _read(md, uid) == message(1, 1_000_000)
        await md.close()

    run(go())


def test_refusals(drive: Drive, mailbox: str):
    drive.create_mailbox(
        "e2e@example.org", quota=1 << 20, identity_key=PersonalKey.generate().identity_key
    )
    state: dict[str, Drive | None] = {"drive": drive}

    async def go() -> None:
        auth = DriveAuthenticator(lambda: state["drive"], failure_delay=0)
        for user, password in (
            (ADDRESS, "wrong"),
            ("nobody@example.org", PASSWORD),
            ("", ""),
            ("no address", PASSWORD),
        ):
            with pytest.raises(LoginRefused):
                await auth.login(user, password, "192.0.2.1")
        with pytest.raises(EndToEndOnly):
            await auth.login("e2e@example.org", "anything", "192.0.2.1")
        md = await auth.login(ADDRESS.upper(), PASSWORD, "192.0.2.1")
        with pytest.raises(MailboxInUse):
            await auth.login(ADDRESS, PASSWORD, "192.0.2.2")
        await md.close()
        await md.close()  # twice is fine
        state["drive"] = None
        with pytest.raises(MaildropUnavailable):
            await auth.login(ADDRESS, PASSWORD, "192.0.2.1")
        state["drive"] = drive
        (await auth.login(ADDRESS, PASSWORD, "192.0.2.1"))  # released: logs in again

    run(go())


def test_read_failures(drive: Drive, mailbox: str):
    ids = [drive.deliver("s@example.net", [ADDRESS], message(i))[0] for i in range(2)]
    blob_id, _ = drive.sealed_meta(mailbox, ids[1])
    path = drive.blob_path(blob_id)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0)
        md = await auth.login(ADDRESS, PASSWORD, "192.0.2.1")
        drive.delete(mailbox, [ids[0]])
        with pytest.raises(MessageGone):
            await _read(md, ids[0])
        with pytest.raises(MessageUnreadable):
            await _read(md, ids[1])
        with pytest.raises(MessageGone):
            await _read(md, "f" * 32)
        await md.close()
        with pytest.raises(MaildropUnavailable):  # the key is gone with the session
            await _read(md, ids[1])

    run(go())


def test_unknown_users_cost_an_argon2id_too(open_drive: Callable[..., Drive]):
    """The decoy keyring: an unknown name takes as long as a wrong password."""
    drive = open_drive()
    drive.limits = Argon2Limits(3, 64 << 20)  # slow enough to see
    drive.create_mailbox(ADDRESS, quota=1 << 20, password=PASSWORD)

    async def attempt(user: str) -> float:
        started = time.monotonic()
        with pytest.raises(LoginRefused):
            await auth.login(user, "wrong", "192.0.2.1")
        return time.monotonic() - started

    async def go() -> tuple[float, float]:
        await attempt("nobody@example.org")  # makes the decoy
        # The fastest of a few: robust against a busy machine.
        known = [await attempt(ADDRESS) for _ in range(3)]
        unknown = [await attempt("nobody@example.org") for _ in range(3)]
        return min(known), min(unknown)

    auth = DriveAuthenticator(lambda: drive, failure_delay=0)
    known, unknown = run(go())
    assert known > 0.05 and unknown > 0.05
    assert 0.5 < known / unknown < 2, (known, unknown)


def test_failures_are_answered_after_the_delay(drive: Drive, mailbox: str):
    async def go() -> float:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0.3)
        started = time.monotonic()
        with pytest.raises(LoginRefused):
            await auth.login(ADDRESS, "wrong", "192.0.2.1")
        return time.monotonic() - started

    assert run(go()) >= 0.3


def test_an_end_to_end_mailbox_is_a_failed_login_after_the_delay(drive: Drive, mailbox: str):
    """Its reply says "end-to-end", but no sooner than any failure's, and counted:
    answered at once, it let anyone probe addresses at full speed."""
    drive.create_mailbox(
        "e2e@example.org", quota=1 << 20, identity_key=PersonalKey.generate().identity_key
    )
    limiter = FailureLimiter(max_failures=3, window=60, clock=Clock())

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0.3, limiter=limiter)
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(EndToEndOnly):
                await auth.login("e2e@example.org", "anything", "192.0.2.7")
            assert time.monotonic() - started >= 0.3
        # Three failures from that address: now even the right password of another
        # mailbox is refused unchecked, and so is the end-to-end address.
        with pytest.raises(LoginThrottled):
            await auth.login(ADDRESS, PASSWORD, "192.0.2.7")
        with pytest.raises(LoginThrottled):
            await auth.login("e2e@example.org", "anything", "192.0.2.7")

    run(go())


def test_throttling_per_address(drive: Drive, mailbox: str):
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0, limiter=limiter)
        for _ in range(3):
            with pytest.raises(LoginRefused):
                await auth.login(ADDRESS, "wrong", "2001:db8:1:2::5")
        with pytest.raises(LoginThrottled):  # the right password, unchecked
            await auth.login(ADDRESS, PASSWORD, "2001:db8:1:2::5")
        with pytest.raises(LoginThrottled):  # the same /64
            await auth.login(ADDRESS, PASSWORD, "2001:db8:1:2:ffff::1")
        md = await auth.login(ADDRESS, PASSWORD, "2001:db8:1:3::5")  # another /64
        await md.close()
        clock.now += 61
        md = await auth.login(ADDRESS, PASSWORD, "2001:db8:1:2::5")
        await md.close()

    run(go())


def test_concurrent_wrong_logins_from_one_address_are_all_counted(drive: Drive, mailbox: str):
    """Sessions from one address that log in at once: each is counted before its
    Argon2id runs, so no more than the limit are ever checked."""
    limiter = FailureLimiter(max_failures=3, window=60, clock=Clock())

    async def go() -> list[str]:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0, limiter=limiter)

        async def attempt() -> str:
            try:
                await auth.login(ADDRESS, "wrong", "192.0.2.9")
            except (LoginRefused, LoginThrottled) as exc:
                return type(exc).__name__
            return "in"

        return await asyncio.gather(*(attempt() for _ in range(8)))

    outcomes = run(go())
    assert sorted(outcomes) == ["LoginRefused"] * 3 + ["LoginThrottled"] * 5


def test_right_passwords_do_not_use_up_the_limit(drive: Drive, mailbox: str):
    """A mail client polling every minute logs in far more often than the limit."""
    limiter = FailureLimiter(max_failures=3, window=900, clock=Clock())

    async def go() -> None:
        auth = DriveAuthenticator(lambda: drive, failure_delay=0, limiter=limiter)
        for _ in range(6):
            md = await auth.login(ADDRESS, PASSWORD, "192.0.2.10")
            await md.close()

    run(go())

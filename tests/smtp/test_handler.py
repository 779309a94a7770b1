"""The gateway's policy and its use of the drive, without sockets (a real drive, no mocks)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import SmtpSettings
from letterbox.drive import Drive
from letterbox.smtp import replies as R
from letterbox.smtp.handler import Gateway, Transaction

from tests.smtp.conftest import CHEAP, PASSWORD


@pytest.fixture
def drive(tmp_path: Path):
    d = Drive.open(tmp_path / "drive", BoxKeys.load_or_create(tmp_path), limits=CHEAP)
    d.create_mailbox("anna@home.test", quota=1 << 30, password=PASSWORD)
    d.create_mailbox("tiny@home.test", quota=5000, password=PASSWORD)
    yield d
    d.close()


def gateway(drive: Drive | None, **kw: object) -> Gateway:
    return Gateway(SmtpSettings(local_domains=["Extra.Test."], **kw), lambda: drive)  # type: ignore[arg-type]


def files(drive: Drive) -> list[Path]:
    return [p for p in drive.layout.blobs.rglob("*") if p.is_file()]


def test_rcpt_policy(drive: Drive):
    g = gateway(drive)
    txn = Transaction("x@example.org")
    assert g.rcpt(txn, "someone@example.com") is R.RELAY_DENIED
    assert g.rcpt(txn, "nobody@home.test") is R.UNKNOWN_USER
    assert g.rcpt(txn, "nobody@extra.test") is R.UNKNOWN_USER  # configured domain, case folded
    assert files(drive) == []  # refusals open nothing on the drive
    assert g.rcpt(txn, "ANNA@Home.Test") is R.RECIPIENT_OK
    assert txn.delivery is not None  # a small blob waits in memory until the commit
    g.abort(txn)
    g.abort(txn)  # twice is fine
    assert files(drive) == []


def test_size_hint_larger_than_the_quota_is_refused_at_rcpt(drive: Drive):
    g = gateway(drive)
    txn = Transaction("x@example.org", size_hint=10_000)
    assert g.rcpt(txn, "tiny@home.test") is R.OVER_QUOTA
    assert g.rcpt(txn, "anna@home.test") is R.RECIPIENT_OK
    g.abort(txn)


def test_size_hint_over_the_fixed_maximum_is_refused_at_mail(drive: Drive):
    g = gateway(drive, max_message_size=1000)
    assert g.mail(Transaction("x@example.org", size_hint=1001)) is R.SIZE_EXCEEDED
    assert g.mail(Transaction("x@example.org", size_hint=1000)) is R.SENDER_OK


def test_no_drive_is_451_not_a_refusal():
    g = gateway(None)
    txn = Transaction("x@example.org")
    assert g.rcpt(txn, "anna@home.test") is R.DRIVE_UNAVAILABLE
    assert g.rcpt(txn, "anna@extra.test") is R.DRIVE_UNAVAILABLE


def test_the_drive_going_away_mid_message(drive: Drive):
    current: list[Drive | None] = [drive]
    g = Gateway(SmtpSettings(), lambda: current[0])
    txn = Transaction("x@example.org")
    assert g.rcpt(txn, "anna@home.test") is R.RECIPIENT_OK
    assert g.write(txn, b"Subject: x\r\n\r\n") is None
    current[0] = None  # unplugged: this delivery still finishes against its drive
    assert asyncio.run(g.commit(txn)) is R.STORED
    txn2 = Transaction("x@example.org")
    assert g.rcpt(txn2, "anna@home.test") is R.DRIVE_UNAVAILABLE


def test_closed_drive_gives_451(drive: Drive):
    g = gateway(drive)
    txn = Transaction("x@example.org")
    assert g.rcpt(txn, "anna@home.test") is R.RECIPIENT_OK
    g.write(txn, b"hello\r\n")
    drive.close()
    temporary = ("451", "4.3.0")
    reply = asyncio.run(g.commit(txn))
    assert (str(reply.code), reply.enhanced) == temporary
    assert asyncio.run(g.commit(txn)) is R.DRIVE_UNAVAILABLE  # no delivery left
    reply = g.rcpt(Transaction("x@example.org"), "anna@home.test")
    assert (str(reply.code), reply.enhanced) == temporary


def test_commit_over_quota_is_552_5_2_2_and_leaves_nothing(drive: Drive):
    g = gateway(drive)
    txn = Transaction("x@example.org")
    assert g.rcpt(txn, "tiny@home.test") is R.RECIPIENT_OK
    g.write(txn, b"z" * 10_000)
    assert asyncio.run(g.commit(txn)) is R.OVER_QUOTA
    assert files(drive) == []


def test_a_client_hanging_up_during_commit_neither_loses_the_message_nor_breaks_the_drive(
    drive: Drive,
):
    """Cancelling the drive's own commit future would kill its committer thread;
    the gateway shields it, so the message is stored and later commits work."""
    g = gateway(drive)
    mailbox = drive.find_mailbox("anna@home.test")
    assert mailbox is not None

    async def scenario() -> None:
        txns = []
        for i in range(10):
            txn = Transaction("x@example.org")
            g.rcpt(txn, "anna@home.test")
            g.write(txn, b"message %d\r\n" % i * 50_000)
            txns.append(txn)
        tasks = [asyncio.ensure_future(g.commit(t)) for t in txns]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()  # what connection_lost does to the session
        await asyncio.gather(*tasks, return_exceptions=True)
        later = Transaction("x@example.org")
        g.rcpt(later, "anna@home.test")
        g.write(later, b"later\r\n")
        assert await asyncio.wait_for(g.commit(later), 10) is R.STORED

    asyncio.run(scenario())
    assert len(drive.list(mailbox.id)) == 11


def test_logs_name_addresses_only_in_debug_mode(drive: Drive, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="letterbox.smtp")
    for debug in (False, True):
        g = Gateway(SmtpSettings(), lambda: drive, debug=debug)
        txn = Transaction("sender@example.org")
        g.rcpt(txn, "anna@home.test")
        g.write(txn, b"Subject: secret plans\r\n\r\nx\r\n")
        assert asyncio.run(g.commit(txn)) is R.STORED
        named = "anna@home.test" in caplog.text or "sender@example.org" in caplog.text
        assert named is debug
        assert "secret plans" not in caplog.text

"""The SMTP gateway tells the drive manager when the drive fails under a message.

The hook is how an I/O error during delivery reaches DriveManager.report_io_error
(the manager then checks the drive and may take it offline; test_manager.py).
"""

from __future__ import annotations

import asyncio

from letterbox.config import SmtpSettings
from letterbox.drive import Drive, DriveError, DriveUnavailable
from letterbox.smtp import Gateway
from letterbox.smtp.handler import Transaction


def test_a_failing_commit_is_reported_and_answered_451(drive: Drive) -> None:
    drive.create_mailbox("alice@home.test", quota=1 << 20, password="pw")
    reported: list[DriveError] = []
    gateway = Gateway(SmtpSettings(), lambda: drive, on_unavailable=reported.append)
    txn = Transaction("bob@example.org")
    assert gateway.rcpt(txn, "alice@home.test").code == 250
    assert gateway.write(txn, b"Subject: hi\r\n\r\nhello\r\n") is None
    # The blob directories vanish (a failing stick): the commit's rename fails.
    blobs = drive.layout.blobs
    away = blobs.with_name("blobs-away")
    away.mkdir()
    for sub in blobs.iterdir():
        if sub.name != "tmp":
            sub.rename(away / sub.name)
    try:
        reply = asyncio.run(gateway.commit(txn))
    finally:
        for sub in away.iterdir():
            sub.rename(blobs / sub.name)
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert len(reported) == 1 and isinstance(reported[0], DriveUnavailable)


def test_refusals_that_are_not_drive_failures_are_not_reported(drive: Drive) -> None:
    reported: list[DriveError] = []
    gateway = Gateway(
        SmtpSettings(local_domains=["home.test"]), lambda: drive, on_unavailable=reported.append
    )
    txn = Transaction("bob@example.org")
    assert gateway.rcpt(txn, "nobody@home.test").code == 550
    assert reported == []

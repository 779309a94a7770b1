"""SMTP log lines that carry what a client sent (debug mode: addresses) stay one line.

Under SMTPUTF8 (RFC 6531) an address may hold any non-ASCII character, U+2028
LINE SEPARATOR and U+0085 NEXT LINE among them, which log viewers show as line
breaks: a sender could make its entry read as several of the box's own.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import SmtpSettings
from letterbox.drive import Drive
from letterbox.smtp import Gateway, SmtpListener
from letterbox.smtp import replies as R
from letterbox.smtp.handler import Transaction

from tests.helpers import ListenerBox
from tests.smtp.conftest import CHEAP, PASSWORD

SENDER = "x\u2028INFO letterbox: forged\u0085@example.org"
STRANGER = "nobody\u2028\u202e@home.test"


@pytest.fixture
def drive(tmp_path: Path):
    d = Drive.open(tmp_path / "drive", BoxKeys.load_or_create(tmp_path), limits=CHEAP)
    d.create_mailbox("anna@home.test", quota=1 << 30, password=PASSWORD)
    d.create_mailbox("tiny@home.test", quota=100, password=PASSWORD)
    yield d
    d.close()


def _check(caplog: pytest.LogCaptureFixture, *expected: str) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records)
    for line in text.splitlines():  # str.splitlines breaks at U+2028 and U+0085 too
        assert line.isprintable(), repr(line)
    for part in expected:
        assert part in text, (part, text)


def test_stored_and_refused_lines_escape_the_addresses(
    drive: Drive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="letterbox.smtp")
    g = Gateway(SmtpSettings(), lambda: drive, debug=True)
    txn = Transaction(SENDER)
    assert g.rcpt(txn, "anna@home.test") is R.RECIPIENT_OK
    g.write(txn, b"Subject: hi\r\n\r\nx\r\n")
    assert asyncio.run(g.commit(txn)) is R.STORED
    refused = Transaction(SENDER)
    assert g.rcpt(refused, "tiny@home.test") is R.RECIPIENT_OK
    g.refused_message(refused, R.SIZE_EXCEEDED, 5000)
    g.abort(refused)
    _check(caplog, "from <x\\u2028INFO letterbox: forged\\x85@example.org>", "refused ")


class DebugBox(ListenerBox):
    def __init__(self, drive: Drive) -> None:
        self.drive = None  # the fixture's: it closes it
        settings = SmtpSettings(timeout=30)
        self.gateway = Gateway(settings, lambda: drive, debug=True)
        self.start_loop()
        self.listener = SmtpListener(
            self.gateway,
            settings,
            hostname="mx.home.test",
            host="127.0.0.1",
            port=0,
            tls_context=None,
            debug=True,
        )
        self.call(self.listener.start())
        self.port = self.listener.port


def test_a_refused_rcpt_is_logged_escaped(drive: Drive, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="letterbox.smtp")
    box = DebugBox(drive)
    try:
        with smtplib.SMTP("127.0.0.1", box.port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            code, _ = smtp.mail("sender@example.org", ["SMTPUTF8"])
            assert code == 250
            code, _ = smtp.rcpt(STRANGER)
            assert code == 550
    finally:
        box.close()
    _check(caplog, "RCPT <nobody\\u2028\\u202e@home.test>: 550")

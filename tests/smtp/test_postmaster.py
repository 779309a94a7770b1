"""postmaster@, abuse@ and bare <postmaster> (RFC 5321 §4.5.1, §4.1.1.3; RFC 2142) through
a real listener, with real clients (smtplib, swaks), read back from the real drive."""

from __future__ import annotations

import dataclasses
import smtplib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import SmtpSettings
from letterbox.drive import Drive
from letterbox.smtp import Gateway, SmtpListener
from letterbox.smtp.postmaster import chosen_mailbox, is_role, role_mailbox

from tests.helpers import ListenerBox
from tests.smtp.conftest import CHEAP, PASSWORD, strip_received

ANNA, BEN = "anna@home.test", "ben@home.test"
MSG = b"Subject: bounce report\r\n\r\nYour mail to us bounced.\r\n"


class RoleBox(ListenerBox):
    """A gateway on 127.0.0.1 whose drive holds exactly the mailboxes a test asks for."""

    def __init__(self, root: Path, addresses: list[str], **settings: object) -> None:
        self.drive: Drive | None = Drive.open(
            root / "drive", BoxKeys.load_or_create(root), limits=CHEAP
        )
        self.ids: dict[str, str] = {}
        for address in addresses:
            self.add(address)
        self.settings = SmtpSettings(local_domains=["extra.test"], timeout=30, **settings)  # type: ignore[arg-type]
        self.gateway = Gateway(self.settings, lambda: self.drive)
        self.start_loop()
        self.listener = SmtpListener(
            self.gateway,
            self.settings,
            hostname="mx.home.test",
            host="127.0.0.1",
            port=0,
            tls_context=None,
        )
        self.call(self.listener.start())
        self.port = self.listener.port

    def add(self, address: str) -> None:
        assert self.drive is not None
        info, _ = self.drive.create_mailbox(address, quota=1 << 30, password=PASSWORD)
        self.ids[address] = info.id

    def choose(self, address: str) -> None:
        """What the Mail settings page does: reconfigure the gateway."""
        self.gateway.reconfigure(dataclasses.replace(self.settings, postmaster=address))

    def messages(self, address: str) -> list[bytes]:
        assert self.drive is not None
        mailbox_id = self.ids[address]
        secret = self.drive.unlock(mailbox_id, PASSWORD)
        return [
            strip_received(self.drive.open_message(mailbox_id, d.id, secret).read())
            for d in self.drive.list(mailbox_id)
        ]

    def send(self, *recipients: str) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            return client.sendmail("mailer-daemon@example.net", list(recipients), MSG)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., RoleBox]]:
    boxes: list[RoleBox] = []

    def _make(addresses: list[str], **settings: object) -> RoleBox:
        box = RoleBox(tmp_path / f"box{len(boxes)}", addresses, **settings)
        boxes.append(box)
        return box

    yield _make
    for box in boxes:
        box.close()


def test_role_addresses_are_recognised_in_any_case() -> None:
    for address in ("postmaster", "PostMaster", "postmaster@a.test", "ABUSE@A.test"):
        assert is_role(address), address
    for address in ("abuse", "anna@a.test", "postmaster.x@a.test", "x@postmaster"):
        assert not is_role(address), address


def test_role_mailbox_own_mailbox_then_chosen_then_first() -> None:
    boxes = ["anna@a.test", "ben@a.test", "postmaster@b.test"]
    assert role_mailbox("postmaster@b.test", boxes) == "postmaster@b.test"
    assert role_mailbox("Postmaster@B.Test", boxes, "ben@a.test") == "postmaster@b.test"
    assert role_mailbox("postmaster@a.test", boxes) == "anna@a.test"
    assert role_mailbox("postmaster@a.test", boxes, "BEN@a.test") == "ben@a.test"
    assert role_mailbox("abuse@b.test", boxes, "ben@a.test") == "ben@a.test"
    assert role_mailbox("postmaster", boxes, "ben@a.test") == "postmaster@b.test"
    assert role_mailbox("postmaster", boxes[:2], "ben@a.test") == "ben@a.test"
    assert role_mailbox("abuse@a.test", boxes, "gone@a.test") == "anna@a.test"  # removed
    assert role_mailbox("postmaster", []) is None
    assert chosen_mailbox(boxes, "") == "anna@a.test"


def test_postmaster_and_abuse_go_to_the_first_mailbox_by_default(
    make: Callable[..., RoleBox],
) -> None:
    box = make([ANNA, BEN])
    assert box.send("postmaster@home.test") == {}
    assert box.send("ABUSE@Home.Test") == {}
    assert box.send("PostMaster") == {}  # bare, any case (RFC 5321 §4.1.1.3)
    assert box.send("postmaster@extra.test") == {}  # a configured domain with no mailbox
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        box.send("postmaster@elsewhere.example")  # never a relay
    assert refused.value.recipients["postmaster@elsewhere.example"][0] == 554
    assert box.messages(ANNA) == [MSG] * 4
    assert box.messages(BEN) == []


def test_the_chosen_mailbox_gets_it_from_the_next_session_on(
    make: Callable[..., RoleBox],
) -> None:
    box = make([ANNA, BEN])
    box.choose(BEN)
    assert box.send("postmaster@home.test", "abuse@home.test") == {}
    assert box.send("postmaster") == {}
    assert box.messages(BEN) == [MSG, MSG]  # one message for both of the first send
    assert box.messages(ANNA) == []


def test_a_real_postmaster_mailbox_gets_its_own_mail(make: Callable[..., RoleBox]) -> None:
    box = make([ANNA, "postmaster@home.test"], postmaster=ANNA)
    assert box.send("postmaster@home.test") == {}
    assert box.send("postmaster") == {}
    assert box.send("abuse@home.test") == {}  # no abuse@ mailbox: the chosen one
    assert box.messages("postmaster@home.test") == [MSG, MSG]
    assert box.messages(ANNA) == [MSG]


def test_swaks_to_postmaster_and_the_trace_names_it(make: Callable[..., RoleBox]) -> None:
    box = make([ANNA])
    done = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{box.port}", "--to", "postmaster@home.test",
         "--from", "<>", "--body", "a report", "--suppress-data"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<-  250 2.1.5 Recipient ok" in done.stdout
    assert box.drive is not None
    secret = box.drive.unlock(box.ids[ANNA], PASSWORD)
    [delivery] = box.drive.list(box.ids[ANNA])
    stored = box.drive.open_message(box.ids[ANNA], delivery.id, secret).read()
    assert stored.startswith(b"Return-Path: <>\r\nReceived: from ")
    assert b"\tfor <postmaster@home.test>; " in stored  # the address as sent


def test_with_no_mailbox_at_all_postmaster_is_450_and_the_rest_unchanged(
    make: Callable[..., RoleBox],
) -> None:
    box = make([])
    for rcpt in ("postmaster@extra.test", "postmaster", "abuse@extra.test"):
        with smtplib.SMTP("127.0.0.1", box.port, timeout=10) as client:
            client.ehlo()
            client.mail("x@example.net")
            code, text = client.rcpt(rcpt)
            assert (code, text[:5]) == (450, b"4.2.1"), rcpt
    with smtplib.SMTP("127.0.0.1", box.port, timeout=10) as client:
        client.ehlo()
        client.mail("x@example.net")
        assert client.rcpt("nobody@extra.test")[0] == 550
        assert client.rcpt("postmaster@elsewhere.example")[0] == 554  # never a relay

"""Drive.remove_mailbox: everything of the mailbox goes, nothing of anyone else's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from letterbox.drive import Drive, MailboxNotFound
from letterbox.drive.check import check_drive

from tests.helpers import PASSWORD, message


def blob_files(drive: Drive) -> set[str]:
    return {p.name for p in drive.layout.blobs.glob("??/*") if p.is_file()}


def test_remove_takes_deliveries_keyring_and_unshared_blobs(drive: Drive) -> None:
    anna, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password=PASSWORD)
    ben, _ = drive.create_mailbox("ben@example.org", quota=1 << 30, password=PASSWORD)
    drive.deliver("x@example.net", [anna.address], message(1, 5000))
    drive.deliver("x@example.net", [anna.address], message(2, 5000))
    shared = drive.deliver("x@example.net", [anna.address, ben.address], message(3, 5000))
    assert len(blob_files(drive)) == 3

    assert drive.remove_mailbox(anna.id) == 3

    assert drive.find_mailbox(anna.address) is None
    assert drive.recipient(anna.address) is None
    with pytest.raises(MailboxNotFound):
        drive.mailbox(anna.id)
    assert [m.id for m in drive.mailboxes()] == [ben.id]
    assert drive.local_domains() == {"example.org"}
    assert not drive.layout.keyring(anna.id).exists()
    # The blob Ben still reads stays; the two only Anna had are gone.
    assert len(blob_files(drive)) == 1
    secret = drive.unlock(ben.id, PASSWORD)
    (only,) = drive.list(ben.id)
    assert only.id == shared[1]
    assert drive.open_message(ben.id, only.id, secret).read() == message(3, 5000)
    assert drive.stats()["deliveries"] == 1
    assert check_drive(drive.layout.root, drive.keys).ok, check_drive(
        drive.layout.root, drive.keys
    ).render()


def test_remove_is_durable_and_the_address_can_be_reused(
    open_drive: Callable[..., Drive], data_dir: Path
) -> None:
    drive = open_drive()
    anna, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password=PASSWORD)
    drive.deliver("x@example.net", [anna.address], message(1, 5000))
    drive.remove_mailbox(anna.id)
    drive.close()
    again = open_drive()
    assert again.mailboxes() == []
    assert again.stats()["blobs"] == 0
    new, code = again.create_mailbox("anna@example.org", quota=1 << 20, password=PASSWORD)
    assert new.id != anna.id and code
    assert again.list(new.id) == []


def test_removing_an_unknown_mailbox_says_so(drive: Drive) -> None:
    with pytest.raises(MailboxNotFound):
        drive.remove_mailbox("0" * 32)


def test_a_delivery_in_flight_to_a_removed_mailbox_is_dropped_for_it_only(drive: Drive) -> None:
    anna, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password=PASSWORD)
    ben, _ = drive.create_mailbox("ben@example.org", quota=1 << 30, password=PASSWORD)
    both = drive.begin("x@example.net")
    both.add_recipient(anna.address)
    both.add_recipient(ben.address)
    both.write(message(1, 3000))
    only_anna = drive.begin("x@example.net")
    only_anna.add_recipient(anna.address)
    only_anna.write(message(2, 3000))
    drive.remove_mailbox(anna.id)
    assert len(both.commit()) == 1
    with pytest.raises(MailboxNotFound):
        only_anna.commit()
    assert [d.plain_size for d in drive.list(ben.id)] == [len(message(1, 3000))]
    assert drive.stats()["blobs"] == 1
    assert check_drive(drive.layout.root, drive.keys).ok, check_drive(
        drive.layout.root, drive.keys
    ).render()

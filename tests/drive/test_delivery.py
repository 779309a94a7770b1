"""Two-phase delivery and reading back, through the drive's public interface only."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from letterbox.crypto import CHUNK_SIZE
from letterbox.drive import Drive, MailboxNotFound, MessageTooLarge
from letterbox.drive.delivery import SPILL_AT

from tests.helpers import PASSWORD, message


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def test_delivery_reads_back_byte_identical_with_sealed_headers(drive: Drive) -> None:
    mailbox, code = drive.create_mailbox("Anna@Example.org", quota=10 << 20, password=PASSWORD)
    assert code and mailbox.address == "anna@example.org"
    body = message(1, 200_000, subject="Grüße aus Köln")
    [delivery_id] = drive.deliver("bob@example.net", ["ANNA@example.org"], body)
    [info] = drive.list(mailbox.id)
    assert info.id == delivery_id and info.plain_size == len(body) and not info.retrieved
    opened = drive.open_message(mailbox.id, delivery_id, drive.unlock(mailbox.id, PASSWORD))
    assert opened.read() == body
    assert all(len(c) <= CHUNK_SIZE for c in opened.chunks())
    assert opened.meta.headers["Subject"] == "Grüße aus Köln"
    assert opened.meta.mail_from == "bob@example.net"
    assert opened.meta.rcpt_to == "anna@example.org"
    assert drive.mailbox(mailbox.id).used == info.stored_size
    assert drive.mailbox(mailbox.id).messages == 1


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_sizes_around_chunk_boundaries(drive: Drive, size: int) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=10 << 20, password=PASSWORD)
    body = os.urandom(size)
    [delivery_id] = drive.deliver("", [mailbox.address], body)
    secret = drive.unlock(mailbox.id, PASSWORD)
    assert drive.open_message(mailbox.id, delivery_id, secret).read() == body


def test_several_recipients_share_one_blob(drive: Drive, data_dir: Path) -> None:
    a, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password="pa")
    b, _ = drive.create_mailbox("b@example.org", quota=1 << 20, password="pb")
    body = message(7, 5000)
    ids = drive.deliver("x@example.net", [a.address, b.address, "A@example.org"], body)
    assert len(ids) == 2  # the same mailbox named twice gets one delivery
    assert drive.stats()["blobs"] == 1 and drive.stats()["deliveries"] == 2
    for mb, pw, delivery_id in ((a, "pa", ids[0]), (b, "pb", ids[1])):
        opened = drive.open_message(mb.id, delivery_id, drive.unlock(mb.id, pw))
        assert opened.read() == body
        assert opened.meta.rcpt_to == mb.address
    # The blob stays until its last delivery is gone.
    blob_files = files_under(data_dir / "drive" / "letterbox" / "blobs")
    assert drive.delete(a.id, [ids[0]]) == 1
    assert files_under(data_dir / "drive" / "letterbox" / "blobs") == blob_files
    assert drive.delete(b.id, [ids[1]]) == 1
    assert files_under(data_dir / "drive" / "letterbox" / "blobs") == set()


def test_abort_and_refusals_leave_nothing(drive: Drive, data_dir: Path) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=100_000, password=PASSWORD)
    blobs = data_dir / "drive" / "letterbox" / "blobs"
    delivery = drive.begin("x@example.net")
    with pytest.raises(MailboxNotFound):
        delivery.add_recipient("nobody@example.org")
    with pytest.raises(MessageTooLarge):
        delivery.add_recipient(mailbox.address, size_hint=200_000)
    delivery.add_recipient(mailbox.address, size_hint=1000)
    delivery.write(b"the start of a small message")
    assert files_under(blobs) == set()  # small ones wait in memory for the committer
    delivery.write(b"m" * (SPILL_AT + 1))
    assert files_under(blobs)  # a large one spills to a temporary while streaming
    delivery.abort()
    delivery.abort()  # idempotent
    assert files_under(blobs) == set()
    # Larger than the quota, discovered only when the body is complete.
    big = drive.begin("x@example.net")
    big.add_recipient(mailbox.address)
    big.write(b"z" * 150_000)
    with pytest.raises(MessageTooLarge):
        big.commit()
    assert files_under(blobs) == set()
    assert drive.list(mailbox.id) == []
    assert drive.mailbox(mailbox.id).used == 0


def test_concurrent_async_commits_share_batches(open_drive) -> None:  # type: ignore[no-untyped-def]
    drive: Drive = open_drive(group_commit=True)
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)

    async def one(n: int) -> list[str]:
        delivery = drive.begin("x@example.net")
        delivery.add_recipient(mailbox.address)
        delivery.write(message(n, 2048))
        return await delivery.commit_async()

    async def many() -> list[list[str]]:
        return await asyncio.gather(*(one(n) for n in range(200)))

    results = asyncio.run(many())
    assert len({r[0] for r in results}) == 200
    stats = drive.stats()
    assert stats["deliveries"] == 200
    # 200 concurrent commits must not take 200 transactions.
    assert stats["commit_batches"] < 150
    secret = drive.unlock(mailbox.id, PASSWORD)
    for n, [delivery_id] in enumerate(results):
        assert drive.open_message(mailbox.id, delivery_id, secret).read() == message(n, 2048)


def test_without_group_commit_each_delivery_is_its_own_batch(open_drive) -> None:  # type: ignore[no-untyped-def]
    drive: Drive = open_drive(group_commit=False)
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
    futures = []
    for n in range(20):
        delivery = drive.begin("x@example.net")
        delivery.add_recipient(mailbox.address)
        delivery.write(message(n))
        futures.append(delivery.commit_future())
    assert all(len(f.result()) == 1 for f in futures)
    assert drive.stats()["commit_batches"] == 20


def test_mark_retrieved_and_atomic_batch_delete(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password=PASSWORD)
    ids = [drive.deliver("", [mailbox.address], message(n))[0] for n in range(5)]
    drive.mark_retrieved(mailbox.id, ids[:2])
    assert [d.retrieved for d in drive.list(mailbox.id)] == [True, True, False, False, False]
    assert drive.delete(mailbox.id, [ids[1], ids[3], "0" * 32]) == 2
    assert [d.id for d in drive.list(mailbox.id)] == [ids[0], ids[2], ids[4]]
    assert drive.mailbox(mailbox.id).messages == 3
    assert drive.mailbox(mailbox.id).used == sum(d.stored_size for d in drive.list(mailbox.id))


def test_mailboxes_survive_reopen_and_duplicates_are_refused(open_drive) -> None:  # type: ignore[no-untyped-def]
    from letterbox.drive import MailboxExists

    drive: Drive = open_drive()
    drive.create_mailbox("a@example.org", quota=1000, password="x")
    with pytest.raises(MailboxExists):
        drive.create_mailbox("A@EXAMPLE.ORG", quota=1000, password="y")
    with pytest.raises(ValueError):
        drive.create_mailbox("not an address", quota=1000, password="y")
    drive.close()
    again: Drive = open_drive()
    assert [m.address for m in again.mailboxes()] == ["a@example.org"]
    assert again.local_domains() == {"example.org"}
    assert again.find_mailbox("<A@Example.ORG>") is not None
    assert again.find_mailbox("garbage") is None


def test_a_cancelled_commit_is_still_stored_and_the_committer_survives(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password=PASSWORD)
    futures = []
    for n in range(10):
        delivery = drive.begin("x@example.net")
        delivery.add_recipient(mailbox.address)
        delivery.write(message(n))
        future = delivery.commit_future()
        future.cancel()
        futures.append(future)
        delivery.abort()  # too late to drop: the committer has it
    assert drive.deliver("x@example.net", [mailbox.address], message(99))
    # Cancelled or not, what reached the committer is stored whole, never half.
    assert len(drive.list(mailbox.id)) == 11
    secret = drive.unlock(mailbox.id, PASSWORD)
    assert all(drive.open_message(mailbox.id, d.id, secret).read() for d in drive.list(mailbox.id))


def test_a_closed_drive_says_unavailable(drive: Drive) -> None:
    from letterbox.drive import DriveUnavailable

    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password=PASSWORD)
    drive.close()
    with pytest.raises(DriveUnavailable):
        drive.find_mailbox(mailbox.address)
    with pytest.raises(DriveUnavailable):
        drive.begin("x@example.net")

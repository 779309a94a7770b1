"""Quota, eviction, notices, retention and the drive's free-space reserve."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.crypto import blob_stored_size
from letterbox.drive import Drive, MessageTooLarge, StorageFull
from letterbox.drive.notice import MAX_LISTED, NOTICE_ALLOWANCE
from letterbox.drive.space import EVICT_QUERY, FLOOR, SPARE_NAME

from tests.helpers import FAST_ARGON2, PASSWORD, message

MSG = 10_000
STORED = blob_stored_size(MSG)


def fill(drive: Drive, address: str, count: int, start: int = 0) -> list[str]:
    return [
        drive.deliver("x@example.net", [address], message(n, MSG))[0]
        for n in range(start, start + count)
    ]


def kinds(drive: Drive, mailbox_id: str) -> list[str]:
    secret = drive.unlock(mailbox_id, PASSWORD)
    return [drive.open_message(mailbox_id, d.id, secret).meta.kind for d in drive.list(mailbox_id)]


def test_oldest_first_eviction_with_exact_accounting(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=10 * STORED + 5000, password=PASSWORD)
    ids = fill(drive, mailbox.address, 10)
    assert drive.mailbox(mailbox.id).used == 10 * STORED
    new = fill(drive, mailbox.address, 1, start=10)
    listing = drive.list(mailbox.id)
    # Room for the new message and a notice (up to 4 KiB): the oldest had to go.
    evicted = {e.delivery_id for e in drive.evictions(mailbox.id)}
    assert evicted == {ids[0]}
    assert [d.id for d in listing][:9] == ids[1:]
    assert new[0] in {d.id for d in listing[9:]}
    info = drive.mailbox(mailbox.id)
    assert info.used == sum(d.stored_size for d in listing) <= info.quota
    assert info.messages == len(listing) == 11  # 9 old + new + notice
    fill(drive, mailbox.address, 3, start=11)
    assert [e.delivery_id for e in reversed(drive.evictions(mailbox.id))] == ids[:4]
    assert kinds(drive, mailbox.id).count("notice") == 1


def test_retrieved_messages_are_evicted_first(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=10 * STORED + 5000, password=PASSWORD)
    ids = fill(drive, mailbox.address, 10)
    drive.mark_retrieved(mailbox.id, [ids[5], ids[7]])
    fill(drive, mailbox.address, 2, start=10)
    assert [e.delivery_id for e in reversed(drive.evictions(mailbox.id))] == [ids[5], ids[7]]
    fill(drive, mailbox.address, 1, start=12)
    # Then the oldest unretrieved one.
    assert drive.evictions(mailbox.id)[0].delivery_id == ids[0]


def test_one_unread_notice_covers_all_evictions(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=6 * STORED + 5000, password=PASSWORD)
    fill(drive, mailbox.address, 6)
    fill(drive, mailbox.address, 5, start=6)
    secret = drive.unlock(mailbox.id, PASSWORD)
    notices = [
        d
        for d in drive.list(mailbox.id)
        if drive.open_message(mailbox.id, d.id, secret).meta.kind == "notice"
    ]
    assert len(notices) == 1
    text = drive.open_message(mailbox.id, notices[0].id, secret).read().decode()
    total = len(drive.evictions(mailbox.id))
    assert f"removed {total} older messages" in text
    assert "Auto-Submitted: auto-generated" in text
    assert text.count("received ") == total
    # Once read, the next eviction brings a fresh notice.
    drive.mark_retrieved(mailbox.id, [notices[0].id])
    fill(drive, mailbox.address, 1, start=20)
    after = [
        d
        for d in drive.list(mailbox.id)
        if drive.open_message(mailbox.id, d.id, secret).meta.kind == "notice"
    ]
    assert len(after) == 1  # the read one was evicted first (retrieved goes first)
    assert after[0].id != notices[0].id and not after[0].retrieved
    text = drive.open_message(mailbox.id, after[0].id, secret).read().decode()
    assert "removed 2 older messages" in text  # the read notice and one message


def _plain_for(stored: int) -> int:
    """A body size for message() whose blob stores in at most `stored` bytes."""
    size = stored
    while blob_stored_size(len(message(0, size))) > stored:
        size -= 16
    return size


def _unread_notices(drive: Drive, mailbox_id: str) -> list[str]:
    """The text of each unread notice in the mailbox."""
    secret = drive.unlock(mailbox_id, PASSWORD)
    texts = []
    for d in drive.list(mailbox_id):
        opened = drive.open_message(mailbox_id, d.id, secret)
        if opened.meta.kind == "notice" and not d.retrieved:
            texts.append(opened.read().decode())
    return texts


def test_a_notice_counts_every_eviction_since_the_last_one_read(drive: Drive) -> None:
    """Over many notices, some replaced unread, one removed unread because nothing
    else was left, and evictions that left no room for a notice at all, the unread
    notice tells the whole count (it used to restart at zero: told 3 of 59)."""
    quota = 6 * STORED + 5000
    mailbox, _ = drive.create_mailbox("a@example.org", quota=quota, password=PASSWORD)
    huge = _plain_for(quota - NOTICE_ALLOWANCE - 100)  # all must go but the notice fits
    no_room = _plain_for(quota - 100)  # all must go, and no room for a notice
    sent: list[str] = []

    def send(size: int) -> None:
        sent.extend(drive.deliver("x@example.net", [mailbox.address], message(len(sent), size)))

    for round_ in range(12):
        for _ in range(3):
            send(MSG)
        send(5 * MSG)
        if round_ % 3 == 1:
            send(huge)
        if round_ % 3 == 2:
            send(no_room)
            # The unread notice went last, as nothing else was left; no new one fits.
            assert _unread_notices(drive, mailbox.id) == []
            assert [d.id for d in drive.list(mailbox.id)] == sent[-1:]
            send(MSG)
    kept = {d.id for d in drive.list(mailbox.id)}
    removed = [i for i in sent if i not in kept]
    [text] = _unread_notices(drive, mailbox.id)
    assert len(removed) > 50
    assert f"Subject: Letterbox removed {len(removed)} older messages\r\n" in text
    log = [e.delivery_id for e in drive.evictions(mailbox.id, 1000)]
    assert sorted(log) == sorted(removed)  # no unread notice in the log: it is not mail
    assert f"removed {len(removed)} older messages because" in text
    assert f"... and {len(removed) - MAX_LISTED} more" in text
    # Read: the next notice counts from there.
    notice = next(d.id for d in drive.list(mailbox.id) if d.id not in sent)
    drive.mark_retrieved(mailbox.id, [notice])
    for _ in range(8):
        send(MSG)
    [text] = _unread_notices(drive, mailbox.id)
    fresh = len(drive.evictions(mailbox.id, 1000)) - len(log)
    assert 0 < fresh < 8  # the read notice first, then the oldest messages
    assert f"Subject: Letterbox removed {fresh} older message" in text


def test_an_index_of_schema_1_gets_the_running_count(drive: Drive, data_dir: Path) -> None:
    """Version 1 had no evictions.running: opening it counts each mailbox's log."""
    a, _ = drive.create_mailbox("a@example.org", quota=3 * STORED + 5000, password=PASSWORD)
    b, _ = drive.create_mailbox("b@example.org", quota=3 * STORED + 5000, password=PASSWORD)
    for n in range(6):
        fill(drive, a.address, 1, start=n)
        fill(drive, b.address, 1, start=n)
    drive.close()
    conn = sqlite3.connect(data_dir / "drive/letterbox/index.sqlite3")
    conn.executescript(  # the version 1 table, with one retention row
        """
        BEGIN;
        CREATE TABLE v1 (seq INTEGER PRIMARY KEY, mailbox_id TEXT NOT NULL,
            delivery_id TEXT NOT NULL, at INTEGER NOT NULL, received INTEGER NOT NULL,
            plain_size INTEGER NOT NULL, reason TEXT NOT NULL);
        INSERT INTO v1 SELECT seq, mailbox_id, delivery_id, at, received, plain_size,
            CASE seq WHEN 2 THEN 'retention' ELSE reason END FROM evictions;
        DROP TABLE evictions;
        ALTER TABLE v1 RENAME TO evictions;
        CREATE INDEX evictions_mailbox ON evictions (mailbox_id, seq);
        PRAGMA user_version = 1;
        COMMIT;
        """
    )
    conn.close()
    reopened = Drive.open(data_dir / "drive", drive.keys, limits=FAST_ARGON2)
    try:
        conn = sqlite3.connect(data_dir / "drive/letterbox/index.sqlite3")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        rows = conn.execute("SELECT mailbox_id, reason, running FROM evictions ORDER BY seq")
        counts: dict[str, int] = {}
        for mailbox_id, reason, running in rows.fetchall():
            counts[mailbox_id] = counts.get(mailbox_id, 0) + (reason != "retention")
            assert running == counts[mailbox_id]
        conn.close()
        assert set(counts) == {a.id, b.id} and sum(counts.values()) >= 4
    finally:
        reopened.close()


def test_refcounts_when_a_shared_message_is_evicted_from_one_mailbox(
    drive: Drive, data_dir: Path
) -> None:
    small, _ = drive.create_mailbox("s@example.org", quota=3 * STORED + 5000, password=PASSWORD)
    big, _ = drive.create_mailbox("b@example.org", quota=1 << 30, password=PASSWORD)
    shared = drive.deliver("x@example.net", [small.address, big.address], message(0, MSG))
    fill(drive, small.address, 3, start=1)  # evicts the shared one from `small` only
    assert shared[0] in {e.delivery_id for e in drive.evictions(small.id)}
    secret = drive.unlock(big.id, PASSWORD)
    assert drive.open_message(big.id, shared[1], secret).read() == message(0, MSG)
    stats = drive.stats()
    # 3 small + 1 shared + notice; the shared blob is counted once.
    assert stats["blobs"] == 5
    blob_files = [p for p in (data_dir / "drive/letterbox/blobs").rglob("*") if p.is_file()]
    assert len(blob_files) == 5


def test_message_larger_than_quota_is_refused_and_nothing_is_evicted(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=3 * STORED, password=PASSWORD)
    ids = fill(drive, mailbox.address, 2)
    with pytest.raises(MessageTooLarge):
        drive.deliver("x@example.net", [mailbox.address], message(9, 4 * MSG))
    assert [d.id for d in drive.list(mailbox.id)] == ids
    assert drive.evictions(mailbox.id) == []


def test_shrinking_quota_applies_at_next_delivery(drive: Drive) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password=PASSWORD)
    fill(drive, mailbox.address, 10)
    drive.set_quota(mailbox.id, 4 * STORED + 5000)
    fill(drive, mailbox.address, 1, start=10)
    info = drive.mailbox(mailbox.id)
    assert info.used <= info.quota
    assert len(drive.evictions(mailbox.id)) == 7


def test_eviction_query_walks_the_index_without_sorting(drive: Drive) -> None:
    conn = sqlite3.connect(drive.layout.index)
    plan = " | ".join(
        row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + EVICT_QUERY, ("m", "b", 64))
    )
    conn.close()
    assert "deliveries_evict" in plan
    assert "TEMP B-TREE" not in plan  # no sort: rows come out in eviction order


def test_keep_days_removes_old_deliveries(open_drive) -> None:  # type: ignore[no-untyped-def]
    drive: Drive = open_drive(keep_days=30)
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
    now = int(time.time())
    old = []
    for n, age_days in enumerate((40, 31, 29, 1)):
        d = drive.begin("x@example.net", received=now - age_days * 86400)
        d.add_recipient(mailbox.address)
        d.write(message(n))
        old.append(d.commit()[0])
    assert drive.expire() == 2
    assert [d.id for d in drive.list(mailbox.id)] == old[2:]
    assert {e.reason for e in drive.evictions(mailbox.id)} == {"retention"}
    assert drive.mailbox(mailbox.id).used == sum(d.stored_size for d in drive.list(mailbox.id))


# -- the drive's free-space reserve, on a real small filesystem --------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size`: a real full disk without filling the machine's."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_reserve_evicts_then_refuses_when_nothing_is_left(tmp_path: Path) -> None:
    keys = BoxKeys.load_or_create(tmp_path / "data")
    with small_filesystem(tmp_path / "usb", "6m") as root:
        settings = DriveSettings(reserve=Size(2 << 20))
        drive = Drive.open(root, keys, settings=settings, limits=FAST_ARGON2)
        try:
            a, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
            b, _ = drive.create_mailbox("b@example.org", quota=1 << 30, password=PASSWORD)
            size = 700_000
            first = drive.deliver("x@example.net", [a.address], message(0, size))
            kept = first
            # Keep delivering to `a`: once free space dips under the reserve, its
            # oldest messages make room, and a notice says so.
            for n in range(1, 12):
                kept = drive.deliver("x@example.net", [a.address], message(n, size))
            reasons = {e.reason for e in drive.evictions(a.id)}
            assert reasons == {"reserve"}
            assert first[0] in {e.delivery_id for e in drive.evictions(a.id)}
            assert kinds(drive, a.id).count("notice") == 1
            # Blobs leave the reserve free; the index's own pages may dip into it,
            # which is what the reserve is for.
            assert drive.stats()["free_bytes"] >= (2 << 20) - (64 << 10)
            secret = drive.unlock(a.id, PASSWORD)
            assert drive.open_message(a.id, kept[0], secret).read() == message(11, size)
            # `b` has nothing to give up: a temporary refusal, and nothing left behind.
            # The message fits on the disk (its blob is written) but not within the
            # reserve, so the refusal is the reserve's, not the disk running out.
            before = drive.stats()
            evicted = drive.evictions(a.id, 1000)
            big = int(before["free_bytes"]) - (2 << 20) + 100_000
            assert blob_stored_size(big) < int(before["free_bytes"]) - (64 << 10)
            with pytest.raises(StorageFull, match=f"{2 << 20} bytes must stay free"):
                drive.deliver("x@example.net", [b.address], message(99, big))
            assert drive.list(b.id) == []
            assert drive.stats()["blobs"] == before["blobs"]
            assert drive.evictions(a.id, 1000) == evicted  # `a` gave nothing for `b`
        finally:
            drive.close()


def test_reserve_zero_on_a_full_disk_still_lets_mail_be_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`drive.reserve = 0` keeps FLOOR free for deletions, and a disk filled to the
    last byte anyway (here by a file beside the drive) still takes a DELE: a full
    index used to refuse every deletion, so nothing could ever be freed."""
    keys = BoxKeys.load_or_create(tmp_path / "data")
    with small_filesystem(tmp_path / "usb", "12m") as root:
        drive = Drive.open(root, keys, settings=DriveSettings(reserve=Size(0)), limits=FAST_ARGON2)
        try:
            spare = root / "letterbox" / SPARE_NAME
            assert spare.stat().st_size == FLOOR
            a, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
            b, _ = drive.create_mailbox("b@example.org", quota=1 << 30, password=PASSWORD)
            for n in range(200):  # 10 MB into what is left of 12 MB
                drive.deliver("x@example.net", [a.address], message(n, 50_000))
            # Reserve 0 still keeps the floor: `a`'s oldest made room.
            assert {e.reason for e in drive.evictions(a.id)} == {"reserve"}
            free = int(drive.stats()["free_bytes"])
            assert free >= FLOOR - (64 << 10)
            # `b` has nothing to give up: what fits on the disk but not above the
            # floor is refused, by the reserve check.
            with pytest.raises(StorageFull, match=f"{FLOOR} bytes must stay free"):
                drive.deliver("x@example.net", [b.address], message(0, free - FLOOR + 100_000))
            # Empty the WAL (white box: as a checkpoint would), so that the deletion's
            # commit needs new room in it; then fill the disk to the last byte.
            drive._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with pytest.raises(OSError), open(root / "filler", "wb") as fh:
                while True:
                    fh.write(bytes(4096))
                    fh.flush()
            assert drive.stats()["free_bytes"] == 0
            listed = [d.id for d in drive.list(a.id)]
            assert drive.delete(a.id, listed[:3]) == 3
            assert not spare.exists()  # it made the room
            assert [d.id for d in drive.list(a.id)] == listed[3:]
            # Once there is room again, the spare comes back and mail flows.
            (root / "filler").unlink()
            assert drive.delete(a.id, listed[3:4]) == 1
            assert spare.stat().st_size == FLOOR
            assert drive.deliver("x@example.net", [b.address], message(1))
            # Removing a whole mailbox is a deletion too.
            drive._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with pytest.raises(OSError), open(root / "filler", "wb") as fh:
                while True:
                    fh.write(bytes(4096))
                    fh.flush()
            assert drive.remove_mailbox(a.id) == len(listed) - 4
            assert [m.address for m in drive.mailboxes()] == [b.address]
            assert caplog.text.count("used its spare room") == 2
            assert spare.stat().st_size == FLOOR  # its blobs freed enough to make it again
        finally:
            drive.close()


def test_a_reserve_larger_than_the_drive_is_a_warning_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = BoxKeys.load_or_create(tmp_path / "data")
    with small_filesystem(tmp_path / "usb", "4m") as root:
        with caplog.at_level("WARNING", logger="letterbox.drive"):
            drive = Drive.open(
                root, keys, settings=DriveSettings(reserve=Size(64 << 20)), limits=FAST_ARGON2
            )
        try:
            warning = drive.reserve_warning()
            assert warning.startswith(f"drive.reserve ({64 << 20} bytes) is larger than the whole")
            assert warning in caplog.text
        finally:
            drive.close()
    with caplog.at_level("WARNING", logger="letterbox.drive"):
        caplog.clear()
        with small_filesystem(tmp_path / "usb2", "4m") as root:
            Drive.open(root, keys, settings=DriveSettings(reserve=Size(1 << 20))).close()
    assert "drive.reserve" not in caplog.text


def test_disk_full_while_streaming_is_a_temporary_refusal(tmp_path: Path) -> None:
    keys = BoxKeys.load_or_create(tmp_path / "data")
    with small_filesystem(tmp_path / "usb", "4m") as root:
        drive = Drive.open(root, keys, settings=DriveSettings(reserve=Size(0)), limits=FAST_ARGON2)
        try:
            a, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
            delivery = drive.begin("x@example.net")
            delivery.add_recipient(a.address)
            with pytest.raises(StorageFull):
                for _ in range(100):
                    delivery.write(b"q" * 65536)
                delivery.commit()
            delivery.abort()
            assert list((root / "letterbox/blobs/tmp").iterdir()) == []
            assert drive.list(a.id) == []
            # And the drive still works once there is room.
            assert drive.deliver("x@example.net", [a.address], message(1))
        finally:
            drive.close()


def test_a_refused_delivery_undoes_its_evictions_completely(drive: Drive, data_dir: Path) -> None:
    """Evicting for one recipient, then refusing for another, must leave no trace:
    the evicted rows come back with their blobs, and no notice blob is left over."""
    from letterbox.drive.check import check_drive

    roomy, _ = drive.create_mailbox("a@example.org", quota=3 * STORED + 5000, password=PASSWORD)
    tiny, _ = drive.create_mailbox("b@example.org", quota=STORED // 2, password=PASSWORD)
    kept = fill(drive, roomy.address, 2)
    files = {p for p in (data_dir / "drive/letterbox/blobs").rglob("*") if p.is_file()}
    with pytest.raises(MessageTooLarge):
        drive.deliver("x@example.net", [roomy.address, tiny.address], message(9, 2 * MSG))
    secret = drive.unlock(roomy.id, PASSWORD)
    assert [d.id for d in drive.list(roomy.id)] == kept
    for n, delivery_id in enumerate(kept):
        assert drive.open_message(roomy.id, delivery_id, secret).read() == message(n, MSG)
    assert drive.evictions(roomy.id) == []
    assert {p for p in (data_dir / "drive/letterbox/blobs").rglob("*") if p.is_file()} == files
    report = check_drive(data_dir / "drive", drive.keys)
    assert report.ok and not [w for w in report.warnings if "orphan" in w], report.render()


def test_files_on_the_drive_are_private_to_the_box(drive: Drive, data_dir: Path) -> None:
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 20, password=PASSWORD)
    fill(drive, mailbox.address, 1)
    base = data_dir / "drive/letterbox"
    for path in [base / "index.sqlite3", *base.glob("blobs/*/*"), *base.glob("keys/*")]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path


def _bulk_fill(drive: Drive, mailbox_id: str, count: int, stored: int) -> None:
    """Index `count` deliveries directly (their blob files are not needed to evict them)."""
    conn = sqlite3.connect(drive.layout.index)
    base = count << 40  # distinct ids for each call on the same drive
    rows = [(f"{base + i:032x}", f"{base + i + (1 << 100):032x}") for i in range(count)]
    with conn:
        conn.executemany(
            "INSERT INTO blobs (id, stored_size, cipher_hash, refs) VALUES (?, ?, zeroblob(32), 1)",
            [(b, stored) for b, _ in rows],
        )
        conn.executemany(
            "INSERT INTO deliveries (id, mailbox_id, blob_id, plain_size, stored_size, received, "
            "meta) VALUES (?, ?, ?, ?, ?, ?, zeroblob(300))",
            [
                (d, mailbox_id, b, stored, stored, 1_700_000_000 + i)
                for i, (b, d) in enumerate(rows)
            ],
        )
        conn.execute(
            "UPDATE mailboxes SET used = ?, messages = ? WHERE id = ?",
            (count * stored, count, mailbox_id),
        )
    conn.close()


def _steps_to_deliver_evicting(open_drive, count: int) -> int:  # type: ignore[no-untyped-def]
    """SQLite virtual-machine steps for one delivery that evicts 10 of `count` messages."""
    drive: Drive = open_drive()
    mailbox, _ = drive.create_mailbox(f"m{count}@example.org", quota=1 << 40, password=PASSWORD)
    _bulk_fill(drive, mailbox.id, count, 1000)
    drive.set_quota(mailbox.id, count * 1000)
    body = message(0, 10 * 1000 - 200)
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    drive._conn.set_progress_handler(tick, 10)  # white box: count the index's work
    drive.deliver("x@example.net", [mailbox.address], body)
    drive._conn.set_progress_handler(None, 10)
    assert 10 <= len(drive.evictions(mailbox.id)) <= 16
    drive.close()
    return steps


def test_eviction_work_does_not_grow_with_the_number_of_deliveries(open_drive) -> None:  # type: ignore[no-untyped-def]
    """O(evicted · log n): the same eviction costs about the same with 20x the mail."""
    small = _steps_to_deliver_evicting(open_drive, 1_000)
    large = _steps_to_deliver_evicting(open_drive, 20_000)
    assert large < 1.5 * small, (small, large)

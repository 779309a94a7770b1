"""Crash safety: SIGKILL at random moments never loses or corrupts an acknowledged delivery."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive
from letterbox.drive.check import check_drive

from tests.drive.crash_child import body
from tests.helpers import FAST_ARGON2, PASSWORD, message

REPO = Path(__file__).resolve().parents[2]


def open_drive(data_dir: Path) -> Drive:
    return Drive.open(
        data_dir / "drive",
        BoxKeys.load_or_create(data_dir),
        settings=DriveSettings(reserve=Size(0)),
        limits=FAST_ARGON2,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path, sync: str) -> None:
    data_dir = tmp_path / "data"
    with open_drive(data_dir) as drive:
        mailbox, _ = drive.create_mailbox("crash@example.org", quota=1 << 40, password=PASSWORD)
    promised: dict[str, tuple[int, int]] = {}
    deleted: set[str] = set()
    deleting: set[str] = set()  # a kill may land after the delete but before "deleted"
    rng = random.Random(1234)
    recoveries = 0
    for round_no in range(15):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.drive.crash_child",
                str(data_dir),
                mailbox.address,
                str(round_no * 10_000_000),
                sync,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
        for line in rest.splitlines():
            parts = line.split()
            if parts[:1] == ["stored"] and len(parts) == 4:
                promised[parts[1]] = (int(parts[2]), int(parts[3]))
            elif parts[:1] == ["deleted"] and len(parts) == 2:
                deleted.add(parts[1])
            elif parts[:1] == ["deleting"] and len(parts) == 2:
                deleting.add(parts[1])
        # Reopening recovers; then the drive checks clean and every promise holds.
        with open_drive(data_dir) as drive:
            assert drive.recovery.crashed
            recoveries += bool(drive.recovery)
            listed = {d.id for d in drive.list(mailbox.id)}
            assert deleted.isdisjoint(listed), "a deletion that returned was undone"
            secret = drive.unlock(mailbox.id, PASSWORD)
            for delivery_id, (seed, size) in promised.items():
                if delivery_id in deleted or (
                    delivery_id in deleting and delivery_id not in listed
                ):
                    continue
                assert delivery_id in listed, f"acknowledged delivery {delivery_id} lost"
                got = drive.open_message(mailbox.id, delivery_id, secret).read()
                assert got == body(seed, size)
            info = drive.mailbox(mailbox.id)
            assert info.messages == len(listed)
        report = check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir))
        assert report.ok, report.render()
        assert not report.warnings, report.render()
    assert len(promised) > 50  # the children really did work between kills
    assert recoveries > 0  # and some kills really left something to clean up


def test_open_after_unclean_stop_removes_temporaries_and_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    drive = open_drive(data_dir)
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
    kept = drive.deliver("x@example.net", [mailbox.address], message(1))
    # A crash mid-stream leaves a temporary; a crash between rename and index commit
    # leaves an orphan blob; a crash between keyring and index row an orphan keyring.
    pending = drive.begin("x@example.net")
    pending.add_recipient(mailbox.address)
    pending.write(b"never committed" * 10_000)  # large enough to stream to a temporary
    lay = drive.layout
    orphan = lay.blob("ab" + "0" * 30)
    orphan.write_bytes(b"LBXB\x01\x00\x00\x00" + b"\x00" * 100)
    lay.keyring("cd" + "1" * 30).write_bytes(b"{}")
    drive._committer.close()  # simulate the process dying: no clean close
    drive._conn.close()
    os.close(drive._lock_fd or -1)  # and the kernel dropping its flock
    assert lay.open_marker.exists()

    with open_drive(data_dir) as again:
        report = again.recovery
        assert report.crashed and report.temporaries == 1
        assert report.orphan_blobs == 1 and report.orphan_keyrings == 1
        assert not orphan.exists()
        secret = again.unlock(mailbox.id, PASSWORD)
        assert again.open_message(mailbox.id, kept[0], secret).read() == message(1)
    assert check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir)).ok
    with open_drive(data_dir) as clean:
        assert not clean.recovery.crashed and not clean.recovery


def test_an_abandoned_drive_is_reconciled_when_it_is_opened_again(tmp_path: Path) -> None:
    """The USB manager abandons a failing drive instead of closing it: a clean close
    would mark it clean and the next open would trust orphan blobs left by the failure."""
    data_dir = tmp_path / "data"
    drive = open_drive(data_dir)
    mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
    kept = drive.deliver("x@example.net", [mailbox.address], message(1))
    orphan = drive.layout.blob("ef" + "2" * 30)
    orphan.write_bytes(b"LBXB\x01\x00\x00\x00" + b"\x00" * 100)  # a failed commit's blob
    drive.abandon()
    assert drive.layout.open_marker.exists()
    drive.abandon()  # twice is harmless, like close()

    with open_drive(data_dir) as again:
        assert again.recovery.crashed and again.recovery.orphan_blobs == 1
        assert not orphan.exists()
        secret = again.unlock(mailbox.id, PASSWORD)
        assert again.open_message(mailbox.id, kept[0], secret).read() == message(1)


def test_recovery_drops_index_rows_whose_blob_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A blob lost after a crash (a drive that did not keep what it fsynced) cannot be
    read: recovery removes its deliveries from every mailbox that had it, corrects the
    totals so quota and `drive check` agree, says how many rows went, and keeps the rest."""
    data_dir = tmp_path / "data"
    with open_drive(data_dir) as drive:
        anna, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password=PASSWORD)
        ben, _ = drive.create_mailbox("ben@example.org", quota=1 << 30, password=PASSWORD)
        both = drive.deliver("x@example.net", [anna.address, ben.address], message(1, 5000))
        only_anna = drive.deliver("x@example.net", [anna.address], message(2, 300))
        only_ben = drive.deliver("x@example.net", [ben.address], message(3, 70_000))
        shared = {d.blob_id for d in drive.list_sealed(anna.id) if d.id == both[0]}.pop()
        lay = drive.layout
    lay.blob(shared).unlink()
    lay.open_marker.write_bytes(b"")  # as if the box had crashed

    with caplog.at_level("ERROR", logger="letterbox.drive.store"):
        again = open_drive(data_dir)
    with again:
        report = again.recovery
        assert report.crashed and report.rows_without_blob == 2
        assert report.orphan_blobs == 0 and report.temporaries == 0
        assert f"blob {shared} is missing: removed 2 delivery rows" in caplog.text
        assert [d.id for d in again.list(anna.id)] == only_anna
        assert [d.id for d in again.list(ben.id)] == only_ben
        boxes = {m.address: m for m in again.mailboxes()}
        for mailbox, kept in ((anna, only_anna), (ben, only_ben)):
            listed = again.list(mailbox.id)
            assert boxes[mailbox.address].messages == 1
            assert boxes[mailbox.address].used == sum(d.stored_size for d in listed)
            secret = again.unlock(mailbox.id, PASSWORD)
            n = 2 if mailbox is anna else 3
            assert again.open_message(mailbox.id, kept[0], secret).read() == message(
                n, 300 if n == 2 else 70_000
            )
        assert again.stats()["blobs"] == 2
    check = check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir))
    assert check.ok, check.render()

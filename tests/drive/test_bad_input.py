"""Damage and misuse: each a clear error, and nothing else on the drive is harmed."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.crypto import WrongPassword, WrongRecoveryCode
from letterbox.drive import Drive, DriveFormatError, MessageDamaged
from letterbox.drive.check import check_drive

from tests.helpers import FAST_ARGON2, PASSWORD, message
from tests.helpers import letterbox_cli as cli


def populated(data_dir: Path) -> tuple[str, list[str]]:
    with Drive.open(
        data_dir / "drive", BoxKeys.load_or_create(data_dir), limits=FAST_ARGON2
    ) as drive:
        mailbox, _ = drive.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
        ids = [
            drive.deliver("x@example.net", [mailbox.address], message(n, 100_000))[0]
            for n in range(3)
        ]
    return mailbox.id, ids


def reopen(data_dir: Path, keys: BoxKeys | None = None) -> Drive:
    return Drive.open(
        data_dir / "drive", keys or BoxKeys.load_or_create(data_dir), limits=FAST_ARGON2
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "index.sqlite3" not in p.name
    }


def test_corrupt_index_is_refused_and_blobs_are_untouched(data_dir: Path) -> None:
    populated(data_dir)
    index = data_dir / "drive/letterbox/index.sqlite3"
    index.write_bytes(b"this is not a database" * 100)
    before = snapshot(data_dir / "drive")
    with pytest.raises(DriveFormatError, match=r"index .* is damaged"):
        reopen(data_dir)
    assert snapshot(data_dir / "drive") == before
    report = check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir))
    assert not report.ok and "unreadable" in report.render()
    result = cli(data_dir, "drive", "check")
    assert result.returncode == 1 and "DAMAGED" in result.stdout


def test_missing_index_is_not_silently_recreated(data_dir: Path) -> None:
    populated(data_dir)
    (data_dir / "drive/letterbox/index.sqlite3").unlink()
    before = snapshot(data_dir / "drive")
    with pytest.raises(DriveFormatError, match="missing"):
        reopen(data_dir)
    assert snapshot(data_dir / "drive") == before


def test_truncated_blob_is_detected_on_read_and_by_check(data_dir: Path) -> None:
    mailbox_id, ids = populated(data_dir)
    with reopen(data_dir) as drive:
        blob_id, _ = drive.sealed_meta(mailbox_id, ids[1])
        path = drive.blob_path(blob_id)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 1000)
    with reopen(data_dir) as drive:
        secret = drive.unlock(mailbox_id, PASSWORD)
        with pytest.raises(MessageDamaged):
            drive.open_message(mailbox_id, ids[1], secret).read()
        # The others are unaffected.
        assert drive.open_message(mailbox_id, ids[0], secret).read() == message(0, 100_000)
        assert drive.open_message(mailbox_id, ids[2], secret).read() == message(2, 100_000)
    report = check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir))
    assert not report.ok and "truncated" in report.render()


def test_altered_or_swapped_blobs_and_metadata_are_refused(data_dir: Path) -> None:
    mailbox_id, ids = populated(data_dir)
    with reopen(data_dir) as drive:
        blob0, _ = drive.sealed_meta(mailbox_id, ids[0])
        blob1, _ = drive.sealed_meta(mailbox_id, ids[1])
        p0, p1 = drive.blob_path(blob0), drive.blob_path(blob1)
    # Swap two blob files.
    d0, d1 = p0.read_bytes(), p1.read_bytes()
    p0.write_bytes(d1)
    p1.write_bytes(d0)
    # Swap two sealed metadata records in the index.
    conn = sqlite3.connect(data_dir / "drive/letterbox/index.sqlite3")
    m1, m2 = (
        conn.execute("SELECT meta FROM deliveries WHERE id = ?", (i,)).fetchone()[0]
        for i in ids[1:]
    )
    conn.execute("UPDATE deliveries SET meta = ? WHERE id = ?", (m2, ids[1]))
    conn.execute("UPDATE deliveries SET meta = ? WHERE id = ?", (m1, ids[2]))
    conn.commit()
    conn.close()
    with reopen(data_dir) as drive:
        secret = drive.unlock(mailbox_id, PASSWORD)
        with pytest.raises(MessageDamaged, match=r"swapped|another"):
            drive.open_message(mailbox_id, ids[0], secret).read()
        for delivery_id in ids[1:]:
            with pytest.raises(MessageDamaged, match=r"swapped|another"):
                drive.open_message(mailbox_id, delivery_id, secret)


def test_foreign_files_are_reported_and_left_alone(data_dir: Path) -> None:
    mailbox_id, _ = populated(data_dir)
    lay = data_dir / "drive/letterbox"
    foreign = [lay / "holiday-photos.txt", lay / "blobs/ab/README", lay / "blobs/zz"]
    for f in foreign:
        f.write_text("not ours")
    (lay / "OPEN").write_bytes(b"")  # pretend a crash, so recovery scans everything
    with reopen(data_dir) as drive:
        assert len(drive.list(mailbox_id)) == 3
    assert all(f.read_text() == "not ours" for f in foreign)
    report = check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir))
    assert report.ok
    text = report.render()
    assert all(f"foreign file letterbox/{f.relative_to(lay)}" in text for f in foreign)


def test_newer_format_version_is_refused(data_dir: Path) -> None:
    populated(data_dir)
    ident = data_dir / "drive/letterbox/DRIVE"
    doc = json.loads(ident.read_text())
    doc["version"] = 2
    ident.write_text(json.dumps(doc))
    with pytest.raises(DriveFormatError, match="version 2 is newer"):
        reopen(data_dir)
    result = cli(data_dir, "mailbox", "list")
    assert result.returncode == 1 and "upgrade Letterbox" in result.stderr


def test_a_directory_that_is_not_a_drive_is_not_initialised_over(data_dir: Path) -> None:
    base = data_dir / "drive/letterbox"
    base.mkdir(parents=True)
    (base / "something").write_text("precious")
    with pytest.raises(DriveFormatError, match="refusing"):
        reopen(data_dir)
    assert (base / "something").read_text() == "precious"


def test_another_box_cannot_use_the_drive(data_dir: Path, tmp_path: Path) -> None:
    populated(data_dir)
    with pytest.raises(DriveFormatError, match="another box"):
        reopen(data_dir, BoxKeys.load_or_create(tmp_path / "other-box"))


def test_wrong_password_and_recovery_code(data_dir: Path) -> None:
    mailbox_id, _ = populated(data_dir)
    with reopen(data_dir) as drive:
        with pytest.raises(WrongPassword):
            drive.unlock(mailbox_id, "not the password")
        with pytest.raises(WrongRecoveryCode):
            drive.recover_key(mailbox_id, "0000-0000-0000-0000-0000-0000-0000-0000")
        with pytest.raises(WrongRecoveryCode, match="32 letters"):
            drive.recover_key(mailbox_id, "too short")
    result = cli(
        data_dir,
        "mailbox",
        "passwd",
        "a@example.org",
        "--password-stdin",
        stdin="wrong\nnew password\n",
    )
    assert result.returncode == 1 and "wrong password" in result.stderr
    with reopen(data_dir) as drive:  # nothing changed
        drive.unlock(mailbox_id, PASSWORD)

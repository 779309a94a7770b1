"""`letterbox fetch` end to end: SMTP in, the drive API out, a Maildir on the person's side.

The crash matrix kills fetch (SIGKILL, from inside, at every checkpoint of every
message) and runs it again: every message must then be in the Maildir exactly once,
byte for byte as sent, and gone from the box. Tampered blobs and forged or swapped
metadata must be refused loudly, written nowhere and never acknowledged.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from letterbox import crypto
from letterbox.drive import Drive
from letterbox.e2e import fetch, verify
from letterbox.e2e.api_client import DriveClient
from nacl.signing import SigningKey

from tests.e2e.conftest import PASSPHRASE, E2EBox
from tests.integration.harness import free_port
from tests.smtp.conftest import strip_received
from tests.web.conftest import ApiBox

SIZES = (300, 70_000, 200_000)  # one chunk; two; four (64 KiB chunks)
STEPS = ("downloading", "downloaded", "written", "renamed", "synced", "acknowledged")
CASES = [("listed", 1)] + [(step, n) for step in STEPS for n in (1, 2, 3)]
SIGKILLED = -9


def body(tag: str, n: int, size: int) -> bytes:
    head = (
        f"From: sender@example.net\r\nTo: someone@example.org\r\n"
        f"Subject: {tag} {n}\r\nMessage-ID: <{tag}.{n}@example.net>\r\n\r\n"
    ).encode()
    line = f"{tag} line of message {n} ".encode().ljust(76, b".") + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def maildir_files(maildir: Path) -> list[Path]:
    return sorted(
        p for d in ("new", "cur") if (maildir / d).is_dir() for p in (maildir / d).iterdir()
    )


def contents(maildir: Path) -> list[bytes]:
    return sorted(strip_received(p.read_bytes()) for p in maildir_files(maildir))


def assert_ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)


# -- the happy path -------------------------------------------------------------------------


def test_fetch_moves_mail_into_a_new_maildir_and_the_box_forgets_it(
    e2e_box: E2EBox, tmp_path: Path
) -> None:
    address = "flags@example.org"
    bodies = [body("plain", n, size) for n, size in enumerate(SIZES)]
    e2e_box.send(address, bodies)
    listed = e2e_box.remote(address)
    assert len(listed) == 3
    maildir = tmp_path / "Mail" / "inbox"  # parents are made, too
    done = e2e_box.fetch(address, maildir)
    assert_ok(done)
    assert "3 new message(s)" in done.stdout
    assert contents(maildir) == sorted(bodies)
    files = maildir_files(maildir)
    assert all(p.parent.name == "new" for p in files)
    for p, entry in zip(files, sorted(listed, key=lambda e: e.id), strict=True):
        assert re.fullmatch(rf"\d+\.lbx-{entry.id}\.[^/:]+", p.name)
        assert p.stat().st_mode & 0o777 == 0o600
    assert e2e_box.remote(address) == []
    assert os.listdir(maildir / "tmp") == []
    again = e2e_box.fetch(address, maildir)
    assert_ok(again)
    assert "0 new message(s)" in again.stdout
    assert len(maildir_files(maildir)) == 3


# -- interrupted at every step ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("step", "nth"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_fetch_killed_at_any_step_loses_nothing_and_duplicates_nothing(
    e2e_box: E2EBox, tmp_path: Path, step: str, nth: int
) -> None:
    address = "crash@example.org"
    assert e2e_box.remote(address) == [], "an earlier case left mail behind"
    bodies = [body(f"{step}-{nth}", n, size) for n, size in enumerate(SIZES)]
    e2e_box.send(address, bodies)
    maildir = tmp_path / "Maildir"

    crashed = e2e_box.fetch(address, maildir, crash=f"{step}:{nth}")
    assert crashed.returncode == SIGKILLED, (crashed.stdout, crashed.stderr)

    # What the kill left: every message either still on the box or durably here.
    done_before = nth - 1  # messages completed (fsync'd and acknowledged) before the kill
    if step == "listed":
        done_before = 0
    written = done_before + (step in ("renamed", "synced", "acknowledged"))
    acknowledged = done_before + (step == "acknowledged")
    assert len(maildir_files(maildir)) == written
    assert len(e2e_box.remote(address)) == 3 - acknowledged
    if step in ("downloading", "downloaded", "written"):
        assert os.listdir(maildir / "tmp"), "the kill should have left a temporary behind"

    rerun = e2e_box.fetch(address, maildir)
    assert_ok(rerun)
    assert f"{3 - written} new message(s)" in rerun.stdout
    if written > acknowledged:
        assert "1 already there, acknowledged" in rerun.stdout
    assert contents(maildir) == sorted(bodies)  # each exactly once, byte for byte
    assert len(maildir_files(maildir)) == 3
    assert os.listdir(maildir / "tmp") == []
    assert e2e_box.remote(address) == []


def test_a_message_the_mail_client_moved_to_cur_is_not_fetched_twice(
    e2e_box: E2EBox, tmp_path: Path
) -> None:
    address = "flags@example.org"
    bodies = [body("moved", n, 1000) for n in range(2)]
    e2e_box.send(address, bodies)
    maildir = tmp_path / "Maildir"
    crashed = e2e_box.fetch(address, maildir, crash="synced:1")  # durable, not acknowledged
    assert crashed.returncode == SIGKILLED
    (first,) = maildir_files(maildir)
    first.rename(maildir / "cur" / f"{first.name}:2,S")  # read, as a mail client marks it
    rerun = e2e_box.fetch(address, maildir)
    assert_ok(rerun)
    assert "1 new message(s)" in rerun.stdout and "1 already there" in rerun.stdout
    assert contents(maildir) == sorted(bodies)
    assert (maildir / "cur" / f"{first.name}:2,S").exists()
    assert e2e_box.remote(address) == []


# -- refusing what does not verify --------------------------------------------------------------


def test_a_tampered_or_truncated_blob_is_refused_loudly_and_not_acknowledged(
    e2e_box: E2EBox, tmp_path: Path
) -> None:
    address = "tamper@example.org"
    bodies = [body("tamper", n, size) for n, size in enumerate(SIZES)]
    e2e_box.send(address, bodies)
    listed = e2e_box.remote(address)
    flipped, truncated = listed[1], listed[2]
    blob = e2e_box.drive_dir / "blobs" / flipped.blob_id[:2] / flipped.blob_id
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    blob = e2e_box.drive_dir / "blobs" / truncated.blob_id[:2] / truncated.blob_id
    blob.write_bytes(blob.read_bytes()[:-100])

    maildir = tmp_path / "Maildir"
    for _ in range(2):  # refused again on every run, never acknowledged in between
        done = e2e_box.fetch(address, maildir)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert f"REFUSED message {flipped.id}" in done.stderr
        assert f"REFUSED message {truncated.id}" in done.stderr
        assert "hash does not match" in done.stderr
        assert "tampered or truncated" in done.stderr
        assert "2 message(s) REFUSED" in done.stderr
        assert contents(maildir) == [bodies[0]]
        assert [e.id for e in e2e_box.remote(address)] == [flipped.id, truncated.id]
        assert os.listdir(maildir / "tmp") == []


def _reseal(meta: crypto.DeliveryMeta, signer: SigningKey, key_file: Path) -> bytes:
    key, _, _ = verify.unlock_key_file(key_file, PASSPHRASE)
    return crypto.seal_meta(meta, signer, bytes(key.secret.public_key))


def test_forged_or_swapped_metadata_is_refused_loudly_and_not_acknowledged(
    e2e_box: E2EBox, tmp_path: Path
) -> None:
    address = "forged@example.org"
    bodies = [body("forged", n, 2000) for n in range(4)]
    e2e_box.send(address, bodies)
    key, _, box_key = verify.unlock_key_file(e2e_box.keys[address], PASSPHRASE)
    listed = e2e_box.remote(address)
    metas = [crypto.open_meta(e.meta, key.secret, [box_key]) for e in listed]
    # 1: sealed to the right key, every field right, but signed by another key.
    forged = _reseal(metas[1], SigningKey.generate(), e2e_box.keys[address])
    # 2: message 0's genuine record put on message 2's row.
    swapped = listed[0].meta
    index = sqlite3.connect(e2e_box.drive_dir / "index.sqlite3", timeout=30)
    with index:
        index.execute("UPDATE deliveries SET meta = ? WHERE id = ?", (forged, listed[1].id))
        index.execute("UPDATE deliveries SET meta = ? WHERE id = ?", (swapped, listed[2].id))
        # 3: the box's listing names another hash than the signed record.
        index.execute(
            "UPDATE blobs SET cipher_hash = ? WHERE id = ?", (b"\x05" * 32, listed[3].blob_id)
        )
    index.close()

    maildir = tmp_path / "Maildir"
    done = e2e_box.fetch(address, maildir)
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr
    assert f"REFUSED message {listed[1].id}: metadata signature does not verify" in err
    assert f"REFUSED message {listed[2].id}: its signed metadata belongs to another" in err
    assert f"REFUSED message {listed[3].id}: the box's listing disagrees" in err
    assert "3 message(s) REFUSED" in err
    assert contents(maildir) == [bodies[0]]
    assert [e.id for e in e2e_box.remote(address)] == [e.id for e in listed[1:]]


# -- refusing to run -------------------------------------------------------------------------


def test_a_second_fetch_into_the_same_maildir_waits_its_turn(
    e2e_box: E2EBox, tmp_path: Path
) -> None:
    address = "lock@example.org"
    e2e_box.send(address, [body("lock", 0, 500)])
    maildir = tmp_path / "Maildir"
    for d in ("tmp", "new", "cur"):
        (maildir / d).mkdir(parents=True)
    fd = os.open(maildir / ".letterbox-fetch.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = e2e_box.fetch(address, maildir)
        assert done.returncode == 1 and "another `letterbox fetch`" in done.stderr
        assert len(e2e_box.remote(address)) == 1
    finally:
        os.close(fd)
    assert_ok(e2e_box.fetch(address, maildir))
    assert e2e_box.remote(address) == []


def test_wrong_passphrase_and_unreachable_box_say_so(e2e_box: E2EBox, tmp_path: Path) -> None:
    address = "lock@example.org"
    done = e2e_box.fetch(address, tmp_path / "M", passphrase="not it")
    assert done.returncode == 1 and "wrong passphrase" in done.stderr
    done = e2e_box.fetch(address, tmp_path / "M", url=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 75 and "cannot reach the box" in done.stderr
    assert "nothing was lost" in done.stderr


# -- in process, against the drive API on a drive the test holds ----------------------------


def test_a_message_removed_by_the_box_mid_fetch_is_skipped_not_fatal(
    drive: Drive, tmp_path: Path
) -> None:
    """Eviction may remove a listed message before fetch downloads it: a 404, noted."""
    box = ApiBox(drive)
    try:
        person = box.person("evict@example.org")
        ids = [box.deliver(person.address, n, 1000) for n in range(3)]

        def checkpoint(step: str, delivery_id: str) -> None:
            if step == "listed":
                drive.delete(person.mailbox_id, [ids[1]])

        async def go() -> fetch.Report:
            async with DriveClient(box.url, person.key, person.address) as client:
                return await fetch.fetch_mailbox(
                    client,
                    person.key,
                    drive.keys.verify_key,
                    fetch.Maildir(tmp_path / "M"),
                    checkpoint=checkpoint,
                    say=said.append,
                )

        said: list[str] = []
        report = asyncio.run(go())
        assert report.fetched == [ids[0], ids[2]] and report.gone == [ids[1]]
        assert not report.refused
        assert any("removed from the box" in line for line in said)
        assert len(maildir_files(tmp_path / "M")) == 2
        assert os.listdir(tmp_path / "M" / "tmp") == []
        assert drive.list_sealed(person.mailbox_id) == []
    finally:
        box.close()

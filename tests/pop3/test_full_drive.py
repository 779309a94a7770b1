"""POP3 on a drive filled to the last byte: DELE and QUIT still free space.

A real tmpfs of a few MB is the drive, so "full" is the kernel's ENOSPC, not a
flag; the drive keeps a 1 MiB floor and a spare file for exactly this
(letterbox.drive.space).
"""

from __future__ import annotations

import poplib
import subprocess
from pathlib import Path

import pytest
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive

from tests.pop3.conftest import ALICE, CHEAP, PASSWORD, Pop3Box, mail


def test_dele_and_quit_free_a_full_drive(tmp_path: Path) -> None:
    root = tmp_path / "box"
    mount = root / "drive"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    box: Pop3Box | None = None
    try:
        box = Pop3Box(root)
        assert box.drive is not None
        # drive.reserve = 0: use the whole drive for mail.
        keys = box.drive.keys
        box.drive.close()
        box.drive = Drive.open(mount, keys, settings=DriveSettings(reserve=Size(0)), limits=CHEAP)
        ids = box.deliver(*(mail(n, b"x" * 200_000) for n in range(10)))
        # Whatever fills it (a spooling message, the index, other files): full.
        box.drive._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a commit must grow it
        with pytest.raises(OSError), open(mount / "filler", "wb") as fh:
            while True:
                fh.write(bytes(4096))
                fh.flush()
        assert box.drive.stats()["free_bytes"] == 0

        p = poplib.POP3("127.0.0.1", box.port, timeout=20)
        p.user(ALICE)
        p.pass_(PASSWORD)
        assert p.stat()[0] == 10
        p.dele(1)
        p.dele(2)
        assert p.quit().startswith(b"+OK")
        assert box.stored() == ids[2:]
    finally:
        if box is not None:
            box.close()
        subprocess.run(["umount", "-l", str(mount)], check=False)

"""One Drive at a time: the drive's LOCK keeps a second opener from running recovery
over a live drive (ISSUE-10 §1: the CLI next to a running box deleted acknowledged mail)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive, DriveInUse, DriveUnavailable
from letterbox.drive.check import check_drive

from tests.helpers import FAST_ARGON2, PASSWORD, message

REPO = Path(__file__).resolve().parents[2]


def open_drive(data_dir: Path, *, create: bool = True) -> Drive:
    return Drive.open(
        data_dir / "drive",
        BoxKeys.load_or_create(data_dir),
        settings=DriveSettings(reserve=Size(0)),
        limits=FAST_ARGON2,
        create=create,
    )


def live_leftovers(drive: Drive) -> tuple[Path, Path]:
    """What a live box has on its drive that recovery would take for crash leftovers:
    a temporary being streamed, and a blob staged under its final name whose index
    row is not committed yet."""
    temporary = drive.layout.blob_tmp("ab" + "0" * 30)
    temporary.write_bytes(b"streaming")
    staged = drive.layout.blob("cd" + "1" * 30)
    staged.write_bytes(b"LBXB\x01\x00\x00\x00" + b"\x00" * 100)
    return temporary, staged


def test_a_second_open_in_the_same_process_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with open_drive(data_dir) as first:
        mailbox, _ = first.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
        temporary, staged = live_leftovers(first)
        with pytest.raises(DriveInUse, match="in use by another Letterbox process"):
            open_drive(data_dir)
        assert isinstance(DriveInUse("x"), DriveUnavailable)  # temporary, like offline
        # The refused opener ran no recovery and left the holder's OPEN marker alone.
        assert first.layout.open_marker.exists()
        assert temporary.exists() and staged.exists()
        kept = first.deliver("x@example.net", [mailbox.address], message(1))
        temporary.unlink()
        staged.unlink()
    # Closing lets go of the lock: the next open works and the drive was clean.
    with open_drive(data_dir) as again:
        assert not again.recovery.crashed
        secret = again.unlock(mailbox.id, PASSWORD)
        assert again.open_message(mailbox.id, kept[0], secret).read() == message(1)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from letterbox.boxkeys import BoxKeys
    from letterbox.drive import Drive, DriveInUse
    from tests.helpers import FAST_ARGON2
    data = Path(sys.argv[1])
    try:
        Drive.open(data / "drive", BoxKeys.load_or_create(data), limits=FAST_ARGON2).close()
    except DriveInUse as exc:
        print("in use:", exc)
        sys.exit(3)
    print("opened")
    """
)


def open_in_child(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_another_process_cannot_open_a_drive_that_is_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = open_drive(data_dir)
    try:
        mailbox, _ = first.create_mailbox("a@example.org", quota=1 << 30, password=PASSWORD)
        temporary, staged = live_leftovers(first)
        child = open_in_child(data_dir)
        assert child.returncode == 3, (child.stdout, child.stderr)
        assert "in use by another Letterbox process" in child.stdout
        assert first.layout.open_marker.exists()
        assert temporary.exists() and staged.exists()
        kept = first.deliver("x@example.net", [mailbox.address], message(2))
        temporary.unlink()
        staged.unlink()
    finally:
        first.close()
    assert not first.layout.open_marker.exists()
    child = open_in_child(data_dir)
    assert child.returncode == 0 and "opened" in child.stdout, child.stderr
    with open_drive(data_dir, create=False) as again:
        secret = again.unlock(mailbox.id, PASSWORD)
        assert again.open_message(mailbox.id, kept[0], secret).read() == message(2)
    assert check_drive(data_dir / "drive", BoxKeys.load_or_create(data_dir)).ok


def test_a_crashed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The kernel drops a flock with its holder: a SIGKILLed box's drive opens (and is
    recovered) at the next start."""
    data_dir = tmp_path / "data"
    with open_drive(data_dir):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from letterbox.boxkeys import BoxKeys\n"
            "from letterbox.drive import Drive\n"
            "from tests.helpers import FAST_ARGON2\n"
            "d = Path(sys.argv[1])\n"
            "drive = Drive.open(d / 'drive', BoxKeys.load_or_create(d), limits=FAST_ARGON2)\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n",
            str(data_dir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(DriveInUse):
            open_drive(data_dir)
    finally:
        holder.kill()
        holder.wait()
    with open_drive(data_dir) as again:
        assert again.recovery.crashed  # the holder never closed: its OPEN was a crash

"""Grow the root partition and its ext4 filesystem to fill the SD card.

The image is a few GB so it flashes quickly; the card is usually far bigger. As Raspberry
Pi OS does, the last partition is extended in the MBR with sfdisk, the kernel is told the
new size with partx (BLKPG, no reboot needed), and resize2fs grows the mounted ext4 online.
systemd-repart cannot do this: it only handles GPT, and older Pi firmware boots MBR only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SECTOR = 512


def _run(*cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True).stdout


def root_partition() -> tuple[str, str, int]:
    """(partition device, whole-disk device, partition number) of the mounted root."""
    source = _run("findmnt", "-n", "-o", "SOURCE", "/").strip()
    part = Path(source).resolve().name  # e.g. vda2, mmcblk0p2
    sysfs = Path("/sys/class/block") / part
    number = int((sysfs / "partition").read_text())
    disk = sysfs.resolve().parent.name
    return f"/dev/{part}", f"/dev/{disk}", number


def free_after(disk: str, part: str) -> int:
    """Bytes between the end of the partition and the end of the disk."""
    disk_sectors = int(Path(f"/sys/class/block/{Path(disk).name}/size").read_text())
    sysfs = Path(f"/sys/class/block/{Path(part).name}")
    end = int((sysfs / "start").read_text()) + int((sysfs / "size").read_text())
    return (disk_sectors - end) * SECTOR


def grow_root(min_gain: int = 16 << 20, where: tuple[str, str, int] | None = None) -> str | None:
    """Grow root if the card has more than `min_gain` bytes unused after it; says what it
    did. `where` is (partition, disk, number), found from the mounted root by default.

    resize2fs runs even when the partition needs no growing: a power cut after sfdisk
    leaves a grown partition holding a small filesystem, and the next first boot finds
    no free space after it. resize2fs on a filesystem that fills its partition does
    nothing, so this is safe to repeat."""
    part, disk, number = where or root_partition()
    gain = free_after(disk, part)
    grown = gain >= min_gain
    if grown:
        # ", +" keeps the start and takes all the free space (sfdisk(8), "-N").
        _run("sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(number), disk, stdin=", +\n")
        _run("partx", "-u", "-n", str(number), disk)
    # resize2fs(8) says "... is now N blocks long" on stdout when it changed anything and
    # "Nothing to do!" on stderr when not.
    resized = "is now" in _run("resize2fs", part)
    if grown:
        return f"grew the root filesystem by {gain >> 20} MiB to fill the card"
    if resized:
        return "grew the root filesystem to fill its partition (an earlier start was cut off)"
    return None

"""Assemble a disk image from two directory trees without mounting anything.

The FAT boot partition is made with mkfs.vfat and filled with mtools; the ext4 root with
`mkfs.ext4 -d`, which copies a directory into a new filesystem; both are written into
one file at fixed offsets under an MBR made by sfdisk. No loop device, no mount, so it
works in containers and CI, and the same layout is what genimage and repart produce.

MBR, not GPT: the Raspberry Pi boot ROM of the Pi 3 and Zero 2 W reads MBR only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

MIB = 1 << 20
BOOT_START = 4 * MIB  # 4 MiB: erase-block aligned on SD cards
BOOT_LABEL = "BOOT"
ROOT_LABEL = "root"
SECTOR = 512


class PartitionError(RuntimeError):
    pass


def _run(cmd: list[str], stdin: str | None = None) -> str:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as exc:
        raise PartitionError(f"{cmd[0]} failed: {exc.stderr.strip() or exc.returncode}") from None


def _du(tree: Path) -> int:
    return int(_run(["du", "-s", "--block-size=1", str(tree)]).split()[0])


def make_vfat(tree: Path, out: Path, size: int) -> None:
    out.unlink(missing_ok=True)
    with open(out, "wb") as fh:
        fh.truncate(size)
    _run(["mkfs.vfat", "-F", "32", "-n", BOOT_LABEL, str(out)])
    entries = sorted(str(p) for p in tree.iterdir())
    if entries:
        # -s: recursive, -p: keep attributes, -m: keep modification times.
        _run(["mcopy", "-s", "-p", "-m", "-i", str(out), *entries, "::"])


def make_ext4(tree: Path, out: Path, size: int) -> None:
    out.unlink(missing_ok=True)
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            ROOT_LABEL,
            "-d",
            str(tree),
            "-E",
            "root_owner=0:0",
            str(out),
            f"{size // 1024}k",
        ]
    )


def assemble(
    boot_tree: Path, root_tree: Path, out: Path, image_size: int, boot_size: int, work: Path
) -> None:
    """Write `out`: partition 1 FAT32 (type c, bootable) from boot_tree, partition 2 ext4
    (type 83) from root_tree filling the rest of image_size."""
    if image_size % MIB or boot_size % MIB:
        raise PartitionError("image and boot sizes must be whole MiB")
    root_size = image_size - BOOT_START - boot_size
    needed = _du(root_tree)
    # ext4 metadata (inodes, journal) and room for the first boot's writes.
    if needed * 1.2 + 128 * MIB > root_size:
        raise PartitionError(
            f"the root tree needs {needed // MIB} MiB (+20% and 128 MiB headroom) but the root "
            f"partition is {root_size // MIB} MiB: raise image.size in the board config"
        )
    if _du(boot_tree) > boot_size * 0.9:
        raise PartitionError("the boot files do not fit: raise image.boot_size")
    vfat, ext4 = work / "boot.vfat", work / "root.ext4"
    make_vfat(boot_tree, vfat, boot_size)
    make_ext4(root_tree, ext4, root_size)
    out.unlink(missing_ok=True)
    with open(out, "wb") as fh:
        fh.truncate(image_size)
    boot_sectors, root_start = boot_size // SECTOR, (BOOT_START + boot_size) // SECTOR
    table = (
        "label: dos\n"
        f"start={BOOT_START // SECTOR}, size={boot_sectors}, type=c, bootable\n"
        f"start={root_start}, size={root_size // SECTOR}, type=83\n"
    )
    _run(["sfdisk", "-q", str(out)], stdin=table)
    for part, offset in ((vfat, BOOT_START), (ext4, BOOT_START + boot_size)):
        _run(
            [
                "dd",
                f"if={part}",
                f"of={out}",
                "bs=1M",
                f"seek={offset // MIB}",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )
    vfat.unlink()
    ext4.unlink()


def layout(image: Path) -> list[dict[str, object]]:
    """The partition table as sfdisk reports it (start and size in 512-byte sectors)."""
    table = json.loads(_run(["sfdisk", "--json", str(image)]))["partitiontable"]
    if table.get("label") != "dos":
        raise PartitionError(f"{image}: expected an MBR (dos) partition table")
    return [
        {
            "start": p["start"],
            "size": p["size"],
            "type": p["type"],
            "bootable": bool(p.get("bootable", False)),
        }
        for p in table["partitions"]
    ]


def boot_offset(image: Path) -> int:
    """Byte offset of the boot partition, for mtools' `-i image@@offset`."""
    return int(layout(image)[0]["start"]) * SECTOR  # type: ignore[call-overload]


def read_boot_file(image: Path, name: str) -> bytes:
    """A file from the boot partition, read with mtools (no mount)."""
    spec = f"{image}@@{boot_offset(image)}"
    try:
        return subprocess.run(
            ["mtype", "-i", spec, f"::{name}"], capture_output=True, check=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise PartitionError(f"{name} is not on the boot partition of {image}") from exc


def extract_boot_file(image: Path, name: str, dest: Path) -> None:
    _run(["mcopy", "-o", "-n", "-i", f"{image}@@{boot_offset(image)}", f"::{name}", str(dest)])

"""The disk layout: MBR with a bootable FAT32 partition at 4 MiB and an ext4 root after
it, made from directory trees without mounting anything; read back with sfdisk, mtools
and debugfs, as a maker's card reader or the Pi's boot ROM would see it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from image import partitions

MIB = 1 << 20


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    boot, root = tmp_path / "boot", tmp_path / "root"
    (boot / "overlays").mkdir(parents=True)
    (boot / "cmdline.txt").write_text("root=LABEL=root rootwait\n")
    (boot / "overlays/README").write_text("nested\n")
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("letterbox\n")
    (root / "boot/firmware").mkdir(parents=True)
    return boot, root


def test_layout_of_an_assembled_image(tmp_path: Path) -> None:
    boot, root = _trees(tmp_path)
    image = tmp_path / "disk.img"
    partitions.assemble(boot, root, image, 1024 * MIB, 64 * MIB, tmp_path)
    assert image.stat().st_size == 1024 * MIB
    layout = partitions.layout(image)
    assert layout == [
        {"start": 8192, "size": 64 * 2048, "type": "c", "bootable": True},
        {
            "start": 8192 + 64 * 2048,
            "size": (1024 - 4 - 64) * 2048,
            "type": "83",
            "bootable": False,
        },
    ]
    # The boot partition is FAT with the label the fstab mounts, holding the tree.
    assert partitions.read_boot_file(image, "cmdline.txt") == b"root=LABEL=root rootwait\n"
    assert partitions.read_boot_file(image, "overlays/README") == b"nested\n"
    offset = partitions.boot_offset(image)
    label = subprocess.run(
        ["mlabel", "-s", "-i", f"{image}@@{offset}", "::"], capture_output=True, text=True
    ).stdout
    assert "BOOT" in label
    # The root partition is ext4 labelled root, read straight from the image file.
    root_part = tmp_path / "root.part"
    subprocess.run(
        ["dd", f"if={image}", f"of={root_part}", "bs=1M", f"skip={4 + 64}", "status=none"],
        check=True,
    )
    stats = subprocess.run(
        ["debugfs", "-R", "stats", str(root_part)], capture_output=True, text=True
    ).stdout
    assert "Filesystem volume name:   root" in stats
    cat = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", str(root_part)], capture_output=True, text=True
    ).stdout
    assert cat == "letterbox\n"


def test_a_root_tree_too_big_is_refused_with_the_fix(tmp_path: Path) -> None:
    boot, root = _trees(tmp_path)
    with open(root / "big", "wb") as fh:
        fh.write(b"\1" * (40 * MIB))
    with pytest.raises(partitions.PartitionError, match=r"raise image\.size"):
        partitions.assemble(boot, root, tmp_path / "disk.img", 160 * MIB, 64 * MIB, tmp_path)
    assert not (tmp_path / "disk.img").exists()

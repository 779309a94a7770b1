"""Build checks that need no root: an image whose boot partition cannot boot is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from image import boards, build


def _files(d: Path, names: dict[str, str]) -> Path:
    d.mkdir()
    for name, text in names.items():
        (d / name).write_text(text)
    return d


def test_qemu_boot_partition_needs_kernel_initrd_and_cmdline(tmp_path: Path) -> None:
    board = boards.load("qemu-x86_64")
    good = {"vmlinuz": "k", "initrd.img": "i", "cmdline.txt": "root=LABEL=root rootwait\n"}
    build.check_boot_files(board, _files(tmp_path / "ok", good))
    with pytest.raises(build.BuildError, match=r"lacks initrd\.img"):
        build.check_boot_files(
            board,
            _files(tmp_path / "no-initrd", {"vmlinuz": "k"} | {"cmdline.txt": "root=LABEL=root"}),
        )


def test_pi_boot_partition_needs_firmware_files_and_our_root(tmp_path: Path) -> None:
    board = boards.load("rpi4")
    good = {
        "config.txt": "arm_64bit=1\n",
        "cmdline.txt": "console=ttyS1,115200 root=LABEL=root rw\n",
        "vmlinuz-6.1.0-56-arm64": "k",
        "initrd.img-6.1.0-56-arm64": "i",
        "bcm2711-rpi-4-b.dtb": "d",
    }
    build.check_boot_files(board, _files(tmp_path / "ok", good))
    with pytest.raises(build.BuildError, match=r"lacks \*\.dtb"):
        build.check_boot_files(
            board, _files(tmp_path / "no-dtb", {k: v for k, v in good.items() if "dtb" not in k})
        )
    wrong_root = good | {"cmdline.txt": "root=/dev/mmcblk0p2 rw\n"}
    with pytest.raises(build.BuildError, match="does not boot the root partition"):
        build.check_boot_files(board, _files(tmp_path / "wrong-root", wrong_root))


def test_inputs_hash_covers_the_board_config() -> None:
    assert build.inputs_hash(boards.load("rpi4")) != build.inputs_hash(boards.load("zero2w"))

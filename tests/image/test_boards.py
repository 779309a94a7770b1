"""Board configs: every shipped board passes the schema; each kind of mistake is
rejected with a message that names the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from letterbox import config

from image import boards

REQUIRED = {"rpi4", "rpi5", "zero2w", "qemu-x86_64", "qemu-aarch64"}


def _raw(name: str = "rpi4") -> dict:
    return tomllib.loads((boards.CONFIG_DIR / f"{name}.toml").read_text())


def test_every_required_board_is_shipped_and_valid() -> None:
    assert set(boards.names()) >= REQUIRED
    for name in boards.names():
        board = boards.load(name)
        assert board.name == name
        assert board.architecture in boards.ARCHITECTURES


def test_pis_use_debian_kernel_and_raspi_firmware() -> None:
    for name in ("rpi4", "rpi5", "zero2w"):
        b = boards.load(name)
        assert b.architecture == "arm64"
        assert "linux-image-arm64" in b.kernel
        assert "raspi-firmware" in b.firmware
        assert b.boot_method == "raspi-firmware"


def test_tuning_follows_ram() -> None:
    small, big = boards.load("zero2w"), boards.load("rpi5")
    assert small.memory_max < big.memory_max
    assert small.argon2_memlimit <= big.argon2_memlimit


def test_appliance_config_is_accepted_by_the_daemon() -> None:
    for name in boards.names():
        board = boards.load(name)
        conf = config.from_mapping(boards.appliance_config(board))
        assert conf.drive.mode == "usb"
        assert conf.drive.path == "/media/letterbox"
        assert conf.crypto.argon2_memlimit == board.argon2_memlimit
        assert conf.mailbox.default_quota == board.default_quota


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("board", "architecture", "armhf", "board.architecture"),
        ("board", "suite", "buster", "board.suite"),
        ("board", "ram", "lots", "board.ram"),
        ("boot", "method", "uefi", "boot.method"),
        ("boot", "console", "serial0", "boot.console"),
        ("boot", "initrd_modules", "ext4", "boot.initrd_modules"),
        ("boot", "initrd_modules", ["ext4; rm"], "boot.initrd_modules"),
        ("packages", "kernel", ["Linux Image"], "packages.kernel"),
        ("packages", "firmware", ["firmware-brcm80211"], "packages.firmware"),
        ("packages", "kernel_suite", "sid", "packages.kernel_suite"),
        ("image", "size", "1G", "image.size"),
        ("image", "boot_size", "8M", "image.boot_size"),
        ("tuning", "argon2_opslimit", 0, "tuning.argon2_opslimit"),
        ("tuning", "argon2_opslimit", True, "tuning.argon2_opslimit"),
        ("tuning", "argon2_memlimit", "1M", "tuning.argon2_memlimit"),
        ("tuning", "argon2_memlimit", "256M", "tuning.argon2_memlimit"),
        ("tuning", "memory_max", "900M", "tuning.memory_max"),
        ("tuning", "memory_high", "600M", "tuning.memory_high"),
    ],
)
def test_bad_value_names_the_key(section: str, key: str, value: object, message: str) -> None:
    data = _raw()
    data[section][key] = value
    with pytest.raises(boards.BoardError, match=message.replace(".", r"\.")):
        boards.from_mapping("rpi4", data)


def test_unknown_and_missing_keys_are_named() -> None:
    data = _raw()
    data["tuning"]["argon2_memlimt"] = "64M"
    with pytest.raises(boards.BoardError, match=r"unknown key tuning\.argon2_memlimt"):
        boards.from_mapping("rpi4", data)
    data = _raw()
    del data["boot"]["console"]
    with pytest.raises(boards.BoardError, match=r"missing key boot\.console"):
        boards.from_mapping("rpi4", data)
    data = _raw()
    data["extras"] = {}
    with pytest.raises(boards.BoardError, match=r"unknown section \[extras\]"):
        boards.from_mapping("rpi4", data)
    data = _raw()
    del data["tuning"]
    with pytest.raises(boards.BoardError, match=r"missing section \[tuning\]"):
        boards.from_mapping("rpi4", data)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "myboard.toml"
    bad.write_text("[board\n")
    with pytest.raises(boards.BoardError, match=r"myboard\.toml: not valid TOML"):
        boards.load_file(bad)
    text = (boards.CONFIG_DIR / "rpi4.toml").read_text().replace('"arm64"', '"mips"')
    bad.write_text(text)
    with pytest.raises(boards.BoardError, match=r"myboard\.toml: board\.architecture"):
        boards.load("myboard", tmp_path)
    with pytest.raises(boards.BoardError, match=r"no board named 'rpi9'.*rpi4"):
        boards.load("rpi9")

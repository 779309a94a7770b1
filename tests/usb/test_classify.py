"""The classifier on recorded udev property sets (tests/usb/fixtures/, README inside each).

Each fixture holds the properties udev reports for one block device, its size, and
what the box must make of it: a candidate with these fields, or nothing at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from letterbox.usb.classify import classify

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))


def load(name: str) -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / f"{name}.json").read_text())


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path: Path) -> None:
    fx = json.loads(path.read_text())
    got = classify(fx["properties"], size=fx["size"])
    if fx["expect"] is None:
        assert got is None
    else:
        assert got is not None
        for key, value in fx["expect"].items():
            assert getattr(got, key) == value, key
        assert got.size == fx["size"]
        assert got.devnode in got.describe()
    if "expect_with_loop" in fx:
        loop = classify(fx["properties"], size=fx["size"], allow_loop=True)
        assert loop is not None
        for key, value in fx["expect_with_loop"].items():
            assert getattr(loop, key) == value, key


def test_fixtures_cover_the_cases() -> None:
    kinds = set()
    refused = 0
    for path in FIXTURES:
        fx = json.loads(path.read_text())
        if fx["expect"] is None:
            refused += 1
        else:
            kinds.add(fx["expect"]["kind"])
    assert kinds == {"letterbox", "empty", "foreign"}
    assert refused >= 5


def test_a_readable_drive_id_makes_any_ext4_a_letterbox_drive() -> None:
    fx = load("sata_disk_partition")  # not USB: still never offered
    assert classify(fx["properties"], size=fx["size"], drive_id="abc") is None
    props = dict(load("wd_elements_part1_ext4_letterbox")["properties"], ID_FS_LABEL="BACKUP")
    assert classify(props, size=1 << 30).kind == "foreign"  # type: ignore[union-attr]
    c = classify(props, size=1 << 30, drive_id="0f" * 16)
    assert c is not None and c.kind == "letterbox" and c.drive_id == "0f" * 16


def test_stable_id_prefers_serial_then_filesystem_uuid() -> None:
    props = dict(load("sandisk_cruzer_blade_part1_vfat")["properties"])
    del props["ID_SERIAL"]
    assert classify(props, size=1 << 30).id == "uuid-1A2B-3C4D"  # type: ignore[union-attr]
    del props["ID_FS_UUID"]
    assert classify(props, size=1 << 30).id == "/dev/sda1"  # type: ignore[union-attr]


def test_loop_devices_only_when_allowed() -> None:
    props = {"DEVNAME": "/dev/loop0", "DEVTYPE": "disk", "MAJOR": "7", "ID_BUS": "usb"}
    assert classify(props, size=1 << 26) is None
    c = classify(props, size=1 << 26, allow_loop=True)
    assert c is not None and c.bus == "usb" and c.kind == "empty"
    assert classify(props, size=0, allow_loop=True) is None  # detached

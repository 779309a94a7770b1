"""`[drive] mode` and `allow_loop`: validated like every other setting, naming the key."""

from __future__ import annotations

import pytest
from letterbox.config import ConfigError, from_mapping


def test_defaults_keep_the_directory_drive() -> None:
    cfg = from_mapping({})
    assert cfg.drive.mode == "directory" and cfg.drive.allow_loop is False


def test_usb_mode_needs_an_absolute_mount_point() -> None:
    cfg = from_mapping({"drive": {"mode": "usb", "path": "/media/letterbox"}})
    assert cfg.drive.mode == "usb"
    for path in ("", "media/letterbox"):
        with pytest.raises(ConfigError, match=r"'drive\.path'.*absolute mount point"):
            from_mapping({"drive": {"mode": "usb", "path": path}})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mode", "USB-stick", r"'drive\.mode': expected directory or usb"),
        ("mode", 1, r"'drive\.mode': expected a string"),
        ("allow_loop", "yes", r"'drive\.allow_loop': expected true or false"),
    ],
)
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"drive": {key: value}})

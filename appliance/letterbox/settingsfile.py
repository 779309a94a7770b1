"""What the setup page changes at runtime, kept in `DATA/box/settings.toml`.

The config file (`/etc/letterbox/letterbox.toml`) is the maker's; a household changes
a few things from the setup page (local domains, the message size limit, retention,
the public host name for the MX record). Those are written here, on the SD card next
to the box keys, and `config.load(path, overrides=read(data_dir))` lays them over
the config file at every start, so a change survives a restart and a maker's file is
never rewritten by the box.

Only the keys in `KEYS` may appear; each value is checked by the same coercion as
the config file (a bad file names the key and refuses to start, like a bad config).
The file is written atomically (temporary name, fsync, rename, directory fsync).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from letterbox import config
from letterbox.fsutil import write_atomic
from letterbox.tomlwrite import value as _toml_value

SETTINGS_FILE = "box/settings.toml"

# (section, key) pairs the setup page may change.
KEYS: frozenset[tuple[str, str]] = frozenset(
    {
        ("smtp", "local_domains"),
        ("smtp", "max_message_size"),
        ("smtp", "postmaster"),
        ("drive", "keep_days"),
        ("box", "public_hostname"),
    }
)

Overrides = dict[str, dict[str, Any]]


def read(data_dir: Path) -> Overrides:
    """The saved overrides (empty when none were saved). Raises config.ConfigError."""
    path = data_dir / SETTINGS_FILE
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise config.ConfigError(f"settings file {path} is damaged: {exc}") from None
    except OSError as exc:
        raise config.ConfigError(f"settings file {path} cannot be read: {exc}") from None
    _check(data, path)
    return data


def _check(data: dict[str, Any], where: object) -> None:
    for section, body in data.items():
        if not isinstance(body, dict):
            raise config.ConfigError(f"settings file {where}: '{section}' must be a table")
        for key in body:
            if (section, key) not in KEYS:
                raise config.ConfigError(
                    f"settings file {where}: '{section}.{key}' cannot be set from the setup page"
                )
    config.from_mapping(data)  # every value coerces, or ConfigError naming the key


def render(data: Overrides) -> str:
    lines = ["# Written by the Letterbox setup page; overrides letterbox.toml.", ""]
    for section in sorted(data):
        lines.append(f"[{section}]")
        for key in sorted(data[section]):
            lines.append(f"{key} = {_toml_value(data[section][key])}")
        lines.append("")
    return "\n".join(lines)


def update(data_dir: Path, changes: Overrides) -> Overrides:
    """Merge `changes` into the saved overrides and write them atomically.

    Validates first: on a bad value nothing is written (config.ConfigError).
    Returns the whole saved set.
    """
    current = read(data_dir)
    merged: Overrides = {s: dict(b) for s, b in current.items()}
    for section, body in changes.items():
        merged.setdefault(section, {}).update(body)
    _check(merged, "update")
    (data_dir / "box").mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(data_dir / SETTINGS_FILE, render(merged).encode(), mode=0o600)
    return merged

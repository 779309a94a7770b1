"""Write the small TOML documents Letterbox keeps: the appliance config the image build
and first boot write, the setup page's DATA/box/settings.toml, and what first boot leaves
on the boot partition. Tables of strings, whole numbers, booleans and lists of those.

The standard library reads TOML (tomllib) but does not write it, and these documents are
too simple to justify another dependency in the image. There is one writer so that
every file Letterbox writes is read back by tomllib the same way (tests/test_tomlwrite.py
round-trips the awkward strings).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

# TOML 1.0 §Keys: a bare key is ASCII letters, digits, '_' and '-'; anything else is quoted.
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def string(text: str, key: str = "value") -> str:
    """A TOML basic string.

    A JSON string is a TOML basic string (TOML 1.0 §String: the same escapes, control
    characters escaped), with two differences handled here: TOML's \\u escapes must be
    Unicode scalar values, so non-ASCII is written as UTF-8 rather than as JSON's
    surrogate pairs (ensure_ascii=False); and TOML also forbids a raw DEL (U+007F),
    which JSON leaves alone.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key}: {text!r} is not valid Unicode text") from None
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def value(item: object, key: str = "value") -> str:
    """One TOML value; `key` only names the setting in an error."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(int(item))  # int(): config.Size is an int whose str() is "2G"
    if isinstance(item, str):
        return string(item, key)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v, f"{key}[{i}]") for i, v in enumerate(item)) + "]"
    raise TypeError(f"{key}: cannot write {type(item).__name__} as TOML")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else string(name, name)


def dumps(doc: Mapping[str, object], header: str = "") -> str:
    """Top-level values first, then one [table] per mapping, keys in the given order;
    `header` becomes comment lines at the top."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    for name, item in doc.items():
        if name not in tables:
            lines.append(f"{_key(name)} = {value(item, name)}")
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{_key(name)}]")
        for key, item in table.items():
            if isinstance(item, Mapping):
                raise TypeError(f"{name}.{key}: nested tables are not supported")
            lines.append(f"{_key(key)} = {value(item, f'{name}.{key}')}")
    return "\n".join(lines) + "\n"

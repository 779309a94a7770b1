"""Write the small TOML documents Letterbox keeps (tables of strings, numbers, booleans and
lists of strings). The standard library reads TOML but does not write it, and these
documents are too simple to justify another dependency in the image."""

from __future__ import annotations

import json
from collections.abc import Mapping

Scalar = str | int | bool
Value = Scalar | list[str]


def _value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (TOML 1.0 §String: same escapes),
        # except that TOML forbids raw control characters, which json.dumps escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(key, v) for v in value) + "]"
    raise TypeError(f"{key}: cannot write {type(value).__name__} as TOML")


def dumps(doc: Mapping[str, object], header: str = "") -> str:
    """Top-level scalars first, then one [table] per mapping, keys in the given order."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    for key, value in doc.items():
        if key not in tables:
            lines.append(f"{key} = {_value(key, value)}")
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, Mapping):
                raise TypeError(f"{name}.{key}: nested tables are not supported")
            lines.append(f"{key} = {_value(f'{name}.{key}', value)}")
    return "\n".join(lines) + "\n"

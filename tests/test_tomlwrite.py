"""The one TOML writer: what it writes, tomllib reads back as the same values."""

from __future__ import annotations

import tomllib

import pytest
from letterbox import settingsfile, tomlwrite
from letterbox.config import Size

AWKWARD = [
    "plain",
    'quote " and backslash \\',
    "tab\tnewline\nreturn\r",
    "\x00\x01\x1f",
    "del \x7f",  # TOML forbids a raw U+007F; JSON leaves it raw
    "Café Ünïcödé",
    "emoji 😀 outside the BMP",  # JSON's ASCII form is a surrogate pair, not valid TOML
    "\u2028\u2029",
    "",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_strings_round_trip(text: str) -> None:
    doc = {"top": text, "table": {"key": text, "list": [text, text]}}
    assert tomllib.loads(tomlwrite.dumps(doc)) == doc


def test_settings_file_uses_the_same_writer(tmp_path) -> None:
    """settingsfile used to write non-BMP characters as surrogate escapes tomllib refuses."""
    text = settingsfile.render({"box": {"public_hostname": "😀 \x7f"}})
    assert tomllib.loads(text) == {"box": {"public_hostname": "😀 \x7f"}}


def test_values_keys_and_header() -> None:
    doc = {
        "n": 7,
        "size": Size.parse("2G"),
        "yes": True,
        "no": False,
        "names": ("a", "b"),
        "odd key": 1,
        "t": {"x": 1},
    }
    text = tomlwrite.dumps(doc, "first line\n\nthird")
    assert text.startswith("# first line\n#\n# third\n")
    assert tomllib.loads(text) == {**doc, "size": 2 << 30, "names": ["a", "b"]}


def test_what_it_cannot_write_is_an_error_naming_the_key() -> None:
    with pytest.raises(TypeError, match=r"t\.when"):
        tomlwrite.dumps({"t": {"when": 1.5}})
    with pytest.raises(TypeError, match="nested"):
        tomlwrite.dumps({"t": {"u": {"v": 1}}})
    with pytest.raises(ValueError, match=r"names\[1\]"):
        tomlwrite.dumps({"names": ["ok", "\udcff"]})

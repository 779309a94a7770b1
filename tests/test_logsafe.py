"""letterbox.logsafe: client text in a log line stays one printable line."""

from __future__ import annotations

import pytest
from letterbox.logsafe import escape


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("plain text, Grüße, 日本", "plain text, Grüße, 日本"),
        ("a\r\nb", "a\\r\\nb"),
        ("nul\x00 esc\x1b[2J tab\t del\x7f", "nul\\x00 esc\\x1b[2J tab\\t del\\x7f"),
        ("c1 \x85 \x9b", "c1 \\x85 \\x9b"),
        ("ls\u2028 ps\u2029 rlo\u202e bom\ufeff", "ls\\u2028 ps\\u2029 rlo\\u202e bom\\ufeff"),
        ("back\\slash\\n", "back\\\\slash\\\\n"),
        (b"bytes \xff\xfe ok \xc3\xa9", "bytes \\xff\\xfe ok é"),
        (None, ""),
        ("\U000e0001tag", "\\U000e0001tag"),
    ],
)
def test_escape(text: str | bytes | None, logged: str) -> None:
    assert escape(text) == logged
    assert escape(text).isprintable()


def test_escape_can_be_read_back() -> None:
    """Backslashes are doubled, so no client text escapes to the same as another."""
    for text in ("a\nb", "a\\nb", "\\\n", "x\x00\\x00"):
        assert escape(text).encode().decode("unicode_escape") == text


def test_a_limit_keeps_long_input_short() -> None:
    assert escape("x" * 10_000, limit=8) == "xxxxxxxx...(9992 more)"
    assert escape("short", limit=8) == "short"

"""Client-supplied text made safe to put into a log line.

A log line is one line: a reader (a person, `journalctl`, a script counting
refusals) trusts that each line was written by the box. Text a client chose (a
request path after percent-decoding, a MAIL FROM address under SMTPUTF8, a HELO
name) can carry CR and LF, which would let it forge whole lines of its own, NUL,
which truncates lines in some tools, ESC, which drives a terminal, or invisible and
line-breaking characters (U+0085, U+2028, bidi overrides) that make a line read
differently from what it says.

`escape` writes every such character as a Python-style escape (`\\r`, `\\n`,
`\\x00`, `\\x1b`, `\\u2028`) and doubles the backslash, so the logged text is
unambiguous and the original can be read back. Printable text, including
non-ASCII letters, is left as it is. Bytes that are not UTF-8 (passed in as
`bytes`, or as the surrogates of `surrogateescape`) appear as `\\xNN`.

Use it for every piece of client input that goes into a log message; the rest of
a message (our own words, numbers, ids) needs nothing.
"""

from __future__ import annotations

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}


def _char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    if c.isprintable():
        return c
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(text: str | bytes | None, limit: int | None = None) -> str:
    """`text` with control and other non-printable characters escaped (see above).

    `limit`: at most this many characters of the input are shown, then `...` and
    how many more there were (a 10 MB line must not become a 40 MB log line)."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    more = 0
    if limit is not None and len(text) > limit:
        more = len(text) - limit
        text = text[:limit]
    if not (text.isprintable() and "\\" not in text):
        text = "".join(map(_char, text))
    return f"{text}...({more} more)" if more else text


__all__ = ["escape"]

"""Parsing of MAIL and RCPT arguments: paths (RFC 5321 §4.1.2) and ESMTP parameters.

Written here rather than taken from aiosmtpd, whose parser (the email package's
header grammar) rejects the null reverse-path "<>" that bounces must use
(RFC 5321 §4.5.5), accepts header-only syntax such as comments, and gives no way
to tell a non-ASCII address apart before SMTPUTF8 is checked.

Accepted leniently, as deployed MTAs do: a space after "FROM:"/"TO:", a path
without angle brackets, and an ignored source route ("@a,@b:", RFC 5321 §C).
UTF-8 in local parts and domains (RFC 6531 §3.3) is allowed here; whether the
transaction declared SMTPUTF8 is the caller's check (`is_ascii`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2

# atext (RFC 5322 §3.2.3) plus any non-ASCII character (RFC 6531 §3.3, UTF8-non-ascii).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# qtextSMTP / quoted-pairSMTP (RFC 5321 §4.1.2) plus non-ASCII (RFC 6531).
_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*)"')
_LET_DIG = r"[A-Za-z0-9\u0080-\U0010ffff]"  # plus U-labels (RFC 6531 §3.3)
_LABEL = rf"{_LET_DIG}(?:[A-Za-z0-9\-\u0080-\U0010ffff]*{_LET_DIG})?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")  # address-literal, content checked loosely
_ROUTE = re.compile(r"@[^,:<>\s]+(?:,@[^,:<>\s]+)*:")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")


class PathError(ValueError):
    """The argument is not a path we can use."""


@dataclass(frozen=True)
class Path:
    address: str  # "" for the null reverse-path <>
    params: dict[str, str | None]  # upper-cased keyword -> value (None: no "=")


def is_ascii(text: str) -> bool:
    return text.isascii()


def parse_path(arg: str, keyword: str, *, null_ok: bool) -> Path:
    """Parse "FROM:<a@b> SIZE=10" (keyword "FROM") or "TO:<x@y>" into a Path.

    A bare "<postmaster>" (no domain) is returned as "postmaster" because
    RFC 5321 §4.5.1 requires accepting it; every other address needs a domain.
    """
    head = keyword + ":"
    if arg[: len(head)].upper() != head:
        raise PathError(f"expected {head}")
    rest = arg[len(head) :].lstrip(" ")
    if rest.startswith("<"):
        close = _closing_bracket(rest)
        inner, rest = rest[1:close], rest[close + 1 :]
    else:
        inner, _, rest = rest.partition(" ")
        if not inner:
            raise PathError("missing address")
    if rest and not rest.startswith(" "):
        raise PathError("junk after the address")
    params = parse_params(rest.split())
    route = _ROUTE.match(inner)
    if route:
        inner = inner[route.end() :]
    if inner == "":
        if not null_ok or route:
            raise PathError("empty address")
        return Path("", params)
    return Path(parse_mailbox(inner), params)


def _closing_bracket(text: str) -> int:
    """Index of the ">" closing the path, skipping any inside a quoted local part."""
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    raise PathError("missing '>'")


def parse_mailbox(text: str) -> str:
    """Validate Local-part "@" Domain; return it with an unneeded quoting removed.

    "john"@example.org and john@example.org are the same mailbox (RFC 5321
    §4.1.2 says quoting should not change meaning), so the quotes go when the
    content is a valid dot-string, and lookups see one spelling.
    """
    if text.lower() == "postmaster":
        return "postmaster"
    if text.startswith('"'):
        m = _QUOTED.match(text)
        if not m or m.end() >= len(text) or text[m.end()] != "@":
            raise PathError("bad quoted local part")
        content = re.sub(r"\\(.)", r"\1", m.group(1))
        local = content if _DOT_STRING.fullmatch(content) else m.group(0)
        domain = text[m.end() + 1 :]
    else:
        local, at, domain = text.rpartition("@")
        if not at or not _DOT_STRING.fullmatch(local):
            raise PathError("bad local part")
    if not (_DOMAIN.fullmatch(domain) or _LITERAL.fullmatch(domain)):
        raise PathError("bad domain")
    if len(local.encode()) > MAX_LOCAL * 4 or len(domain.encode()) > MAX_DOMAIN:
        # Local parts longer than 64 octets exist in the wild (RFC 5321 §4.5.3.1
        # asks for tolerance); four times that is a guard, not a standard.
        raise PathError("address too long")
    return f"{local}@{domain}"


def parse_params(words: list[str]) -> dict[str, str | None]:
    """esmtp-param *(SP esmtp-param) (RFC 5321 §4.1.2); keywords are case-insensitive."""
    params: dict[str, str | None] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            raise PathError(f"bad parameter {word!r}")
        key = key.upper()
        if key in params:
            raise PathError(f"parameter {key} given twice")
        params[key] = value if eq else None
    return params


def domain_of(address: str) -> str:
    """The domain part, lower-cased and without a trailing dot, for policy lookups."""
    return address.rpartition("@")[2].lower().rstrip(".")

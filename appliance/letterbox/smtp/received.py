"""The trace fields prepended to every stored message (RFC 5321 §4.4).

Return-Path (the reverse-path, added at final delivery, which the box is) over
Received: they are the only change the gateway makes to a message. Everything the client
chose (its HELO name) is reduced to harmless characters first, because it ends
up in a header that mail clients parse. The "for" clause names the recipient
only when there is exactly one: the message is stored once for all of its local
recipients, and each of them would otherwise see who else got it.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from datetime import datetime

_UNSAFE = re.compile(r"[^\x21-\x27\x2a-\x5b\x5d-\x7e]")  # printable ASCII minus ( ) \ and space


@dataclass(frozen=True)
class TlsInfo:
    version: str  # e.g. "TLSv1.3"
    cipher: str  # e.g. "TLS_AES_256_GCM_SHA384"
    bits: int


def ip_literal(peer: object) -> str:
    """An address-literal (RFC 5321 §4.1.3) for a socket peer name."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer or "unknown")
    host = str(host)
    return f"[IPv6:{host}]" if ":" in host else f"[{host}]"


def clean(text: str, limit: int = 255) -> str:
    """A client-chosen name made safe for a header comment or token."""
    return _UNSAFE.sub("?", text[:limit]) or "unknown"


def protocol(extended: bool, tls: bool, utf8: bool) -> str:
    """The "with" keyword: RFC 3848 (ESMTP, ESMTPS) and RFC 6531 §3.7.3 (UTF8SMTP…)."""
    if utf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    if extended:
        return "ESMTPS" if tls else "ESMTP"
    return "SMTP"


def return_path_header(reverse_path: str, *, utf8: bool = False) -> bytes:
    """`Return-Path: <reverse-path>` (RFC 5321 §4.4; the null reverse-path is `<>`).

    The address passed MAIL's syntax check (syntax.py), so it holds no CR, LF or
    angle bracket; non-ASCII only in an SMTPUTF8 transaction (RFC 6532 §3.2)."""
    charset = "utf-8" if utf8 else "ascii"
    return f"Return-Path: <{reverse_path}>\r\n".encode(charset, "replace")


def received_header(
    *,
    helo: str,
    peer: object,
    host: str,
    trace: str,
    extended: bool,
    tls: TlsInfo | None,
    utf8: bool,
    recipients: list[str],
    now: datetime | None = None,
) -> bytes:
    """The header, folded over several lines, CRLF-terminated, ready to write first."""
    lines = [f"Received: from {clean(helo)} ({ip_literal(peer)})"]
    if tls is not None:
        lines.append(
            f"\t(using {clean(tls.version)} with cipher {clean(tls.cipher)} "
            f"({tls.bits}/{tls.bits} bits))"
        )
    lines.append(
        f"\tby {clean(host)} (Letterbox) with {protocol(extended, tls is not None, utf8)}"
        f" id {trace}"
    )
    date = email.utils.format_datetime(now) if now is not None else _date_now()
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines.append(f"\t; {date}")
    charset = "utf-8" if utf8 else "ascii"
    return ("\r\n".join(lines) + "\r\n").encode(charset, "replace")


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The RFC 5322 date of this second; formatted once a second, not once a message."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.format_datetime(datetime.now().astimezone()))
    return _date_cache[1]

"""The short message the box leaves in a mailbox when it had to remove mail to make room.

The box cannot read what it removed (subjects are sealed to the owner's key), so
the notice names each message by when it arrived and how large it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

MAX_LISTED = 20
# Upper bound of a notice's stored size, reserved when eviction starts so that the
# notice itself never pushes the mailbox over its quota.
NOTICE_ALLOWANCE = 4096


@dataclass(frozen=True)
class Evicted:
    delivery_id: str
    received: int
    plain_size: int


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def eviction_notice(
    address: str, hostname: str, evicted: list[Evicted], count: int, reason: str, quota: int
) -> bytes:
    """The notice text; `evicted` lists the first few of `count` removed messages."""
    now = time.time()
    why = (
        f"your mailbox reached its quota of {_size(quota)}"
        if reason == "quota"
        else "the drive is almost full"
    )
    lines = [
        f"To make room for new mail, Letterbox removed {count} older message"
        f"{'s' if count != 1 else ''} because {why}.",
        "Messages you had already downloaded were removed first, then the oldest.",
        "",
    ]
    for ev in evicted[:MAX_LISTED]:
        when = datetime.fromtimestamp(ev.received, UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"  received {when}, {_size(ev.plain_size)}")
    if count > MAX_LISTED:
        lines.append(f"  ... and {count - MAX_LISTED} more")
    lines += ["", "The setup page (Storage) shows the full eviction log.", ""]
    headers = [
        f"From: Letterbox <postmaster@{hostname}>",
        f"To: <{address}>",
        f"Subject: Letterbox removed {count} older message{'s' if count != 1 else ''}",
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}",
        f"Message-ID: {make_msgid('notice', hostname)}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(lines)).encode()

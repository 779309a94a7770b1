"""Picks the few headers that sealed metadata carries out of a message as it streams by.

Only the header section is looked at, and at most HEADER_LIMIT bytes of it, so a
message with an endless header block costs bounded memory; what cannot be parsed
is simply left out of the metadata (the message itself is stored untouched).
"""

from __future__ import annotations

import email.parser
import email.policy

HEADER_LIMIT = 64 * 1024
KEPT = ("From", "To", "Subject", "Date", "Message-ID")


class HeaderSniffer:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._done = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            return
        start = max(0, len(self._buf) - 3)
        self._buf += data[: HEADER_LIMIT - len(self._buf)]
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = self._buf.find(sep, start)
            if end >= 0:
                del self._buf[end + len(sep) :]
                self._done = True
                return
        if len(self._buf) >= HEADER_LIMIT:
            self._done = True

    def headers(self) -> dict[str, str]:
        try:
            msg = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
                bytes(self._buf)
            )
        except Exception:  # a garbage header block still gets stored, just unindexed
            return {}
        found: dict[str, str] = {}
        for name in KEPT:
            try:
                value = msg.get(name)
            except Exception:
                value = None
            if value is not None:
                found[name] = str(value)[:1000]
        return found

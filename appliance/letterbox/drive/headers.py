"""Picks the few headers that sealed metadata carries out of a message as it streams by.

Only the header section is looked at, and at most HEADER_LIMIT bytes of it, so a
message with an endless header block costs bounded memory; what cannot be parsed
is simply left out of the metadata (the message itself is stored untouched).
This runs once per delivery on the SMTP event loop, so it unfolds and picks the
five fields by hand (RFC 5322 §2.2.3) and decodes RFC 2047 encoded words only
where they occur, instead of building a full email.message object.
"""

from __future__ import annotations

import email.header

HEADER_LIMIT = 64 * 1024
KEPT = {
    "from": "From",
    "to": "To",
    "subject": "Subject",
    "date": "Date",
    "message-id": "Message-ID",
}
MAX_VALUE = 1000


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if "=?" in text:
        try:
            return str(email.header.make_header(email.header.decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            return text
    return text


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
        """The kept fields, first occurrence of each, unfolded and decoded."""
        found: dict[str, str] = {}
        fields: list[list[bytes]] = []
        for line in bytes(self._buf).splitlines():
            if not line:
                break
            if line[:1] in (b" ", b"\t"):
                if fields:
                    fields[-1].append(line)
                continue
            fields.append([line])
        for parts in fields:
            name, sep, value = parts[0].partition(b":")
            if not sep:
                continue
            key = KEPT.get(name.strip().decode("ascii", errors="replace").lower())
            if key is None or key in found:
                continue
            found[key] = _decode(b" ".join([value.strip(), *(p.strip() for p in parts[1:])]))[
                :MAX_VALUE
            ]
        return found

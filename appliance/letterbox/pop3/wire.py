"""A message as a POP3 multi-line response: a pure byte-stream transformer.

No sockets here, so every edge case is a unit test. The session feeds the
message's chunks as the maildrop decrypts them (any chunking, down to single
bytes) and writes what comes out; memory stays at one chunk whatever the size.

What it does, and why:

* **Byte-stuffing** (RFC 1939 §3): a line that starts with "." gets one more,
  so no line of the message can end the response early.
* **Lines end with CRLF on the wire** (RFC 1939 §3). A message that came in over
  SMTP has nothing else (the gateway refuses a bare CR or LF, smtp/data.py), so
  its bytes go out unchanged and LIST/STAT/RETR's size, the stored plaintext
  size, is exactly what the client receives before stuffing. A stored message
  with a bare LF (only code that writes to the drive directly can make one) still
  leaves as valid POP3: each bare LF is sent as CRLF, and a last line without a
  line end gets one, because otherwise the client could not find the end of the
  response. Such a message is then longer on the wire than its listed size, by
  one octet per bare LF (two for a missing final line end); `octets` counts what
  was really sent so the session can log the difference. A bare CR is not a line
  end and passes unchanged.
* **TOP** (RFC 1939 §7): the header, the blank line after it, then at most n lines
  of the body; the whole message if the body is shorter (or there is no blank
  line). The reader stops asking for chunks once the cut is reached.
"""

from __future__ import annotations

TERMINATOR = b".\r\n"


class Encoder:
    """Message bytes in, response body out: CRLF line ends, stuffed, optionally cut for TOP."""

    def __init__(self, body_lines: int | None = None) -> None:
        self.octets = 0  # message octets sent, before stuffing (CRLF line ends)
        self.done = False  # TOP has everything it needs: stop reading
        self._line_start = True
        self._held_cr = False  # a CR ending the previous chunk, which may start a CRLF
        self._body_lines = body_lines
        self._in_header = body_lines is not None

    def feed(self, data: bytes) -> bytes:
        if self.done or not data:
            return b""
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
            if not data:
                return b""
        lf = data.count(b"\n")
        if lf and lf != data.count(b"\r\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._body_lines is not None:
            data = self._cut(data)
        return self._stuff(data)

    def finish(self) -> bytes:
        """The end of the response: a line end if the message lacked one, then "."."""
        tail = b""
        if self._held_cr and not self.done:
            tail = self._stuff(b"\r")
        self._held_cr = False
        if not self._line_start:
            tail += b"\r\n"
            self.octets += 2
            self._line_start = True
        return tail + TERMINATOR

    def _stuff(self, data: bytes) -> bytes:
        if not data:
            return b""
        self.octets += len(data)
        out = data.replace(b"\n.", b"\n..") if b"\n." in data else data
        if self._line_start and data[:1] == b".":
            out = b"." + out
        self._line_start = data[-1:] == b"\n"
        return out

    def _cut(self, data: bytes) -> bytes:
        """TOP: pass the header, its blank line, then `body_lines` lines; then done.

        `data` has CRLF line ends only and never ends in a lone CR (feed holds it),
        so a CRLF is never split between two calls.
        """
        pos = 0
        n = len(data)
        line_start = self._line_start
        if self._in_header:
            while pos < n:
                if line_start and data.startswith(b"\r\n", pos):
                    pos += 2
                    self._in_header = False
                    break
                i = data.find(b"\n", pos)
                if i < 0:
                    return data
                pos = i + 1
                line_start = True
            if self._in_header:
                return data
        assert self._body_lines is not None
        left = self._body_lines
        if left == 0:
            self.done = True
            return data[:pos]
        if data.count(b"\n", pos) < left:
            self._body_lines = left - data.count(b"\n", pos)
            return data
        end = pos - 1
        for _ in range(left):
            end = data.find(b"\n", end + 1)
        self.done = True
        self._body_lines = 0
        return data[: end + 1]

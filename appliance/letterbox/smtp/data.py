"""The DATA phase as a pure byte-stream transformer: wire bytes in, message bytes out.

No sockets and no aiosmtpd here, so every edge case is a unit test. The server
feeds whatever arrived (any chunking, down to single bytes); the reader hands
back the message content ready to store and, once the end-of-data mark has been
seen, the bytes that came after it (pipelined commands, RFC 2920).

What it enforces, and why:

* **End of data is CRLF "." CRLF and nothing else** (RFC 5321 §4.1.1.4). The
  CRLF before the dot belongs to the message; a message that is just "." CRLF
  is empty. "<LF>.<LF>", "<LF>.<CR><LF>", "<CR>.<CR>" and the other shapes of
  the SMTP-smuggling attacks (CVE-2023-51764, -51765, -51766) never end the data.
* **Dot-unstuffing** (RFC 5321 §4.5.2): a line that starts with "." loses that
  first dot.
* **Bare CR and bare LF refuse the message** (550 5.6.0). RFC 5321 §2.3.8 says
  CR and LF occur only together as a line ending, and that a receiver must not
  treat a lone one as a line ending. The choices were: treat them as data (what
  aiosmtpd 1.4.6 and Postfix's "no" do), normalize them to CRLF (Postfix's
  "normalize"), or refuse (sendmail 8.18 with its defaults, KumoMTA's "Deny",
  qmail, and what the smuggling researchers recommend). We refuse, because:
  storing them untouched would hand a smuggling-shaped "\\n.\\r\\n" to every
  later reader of the message (POP3 clients, forwarders) that might split lines
  differently; normalizing would change the bytes and break the promise that a
  stored message is byte-identical to what was sent (and its DKIM signature);
  and conforming MTAs never send them, so refusing costs real mail nothing. The
  reader keeps consuming to the real CRLF.CRLF, so whatever followed a fake end
  mark is swallowed as part of the refused message, never run as commands; the
  server then answers 550 5.6.0 and closes the connection (a client whose line
  ends differ from ours is not trusted to be in step; Postfix's "yes" and
  sendmail also disconnect). 8-bit bytes (RFC 6152) and NUL are data like any
  other.
* **Size** (RFC 1870): once the content passes `max_size` the reader stops
  producing output (the server aborts the delivery at once, so the partial blob
  is removed) and keeps consuming to the end mark, then the server answers
  552 5.3.4 (RFC 5321 §4.2.5: reply after the end of data).
* **Line length**: RFC 5321 §4.5.3.1.6 sets 1000 octets with CRLF as the
  length every receiver must accept, not as a ceiling to enforce, and real mail
  (HTML generators, unwrapped base64) exceeds it. Streaming makes a long line
  cost no memory, so the limit is a configurable guard for later readers, off
  when 0; a line is counted as it arrived, CRLF and any stuffing dot included.

The first error wins; after it nothing more is produced, only the end is sought.
"""

from __future__ import annotations

import enum

END = b"\r\n.\r\n"
# Suffixes of a chunk that may be the start of the end mark, longest first. A
# chunk's last bytes matching one are held back until the next chunk decides.
_END_PREFIXES = (END[:4], END[:3], END[:2], END[:1])


class DataError(enum.Enum):
    TOO_BIG = "too big"
    BARE_NEWLINE = "bare CR or LF"
    LINE_TOO_LONG = "line too long"


class DataReader:
    """Turns the wire form of DATA into message bytes, one chunk at a time."""

    def __init__(self, max_size: int, max_line: int = 0) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.size = 0  # message bytes produced (after unstuffing)
        self.received = 0  # wire bytes consumed, end mark included
        self.error: DataError | None = None
        self.done = False
        # The DATA command's own CRLF: the first line starts a line, so a leading
        # "." CRLF ends an empty message and a leading ".." is unstuffed. These
        # two bytes are never output (`_skip`).
        self._carry = b"\r\n"
        self._skip = 2
        self._run = 0  # bytes since the last CRLF, for the line-length limit

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        """Consume `chunk`; return (message bytes to store, bytes after the end mark).

        The second item is non-empty only on the call that completes the data
        (`done` then turns true); it belongs to the command stream.
        """
        if self.done:
            raise ValueError("DATA is complete; the rest belongs to the command stream")
        buf = self._carry + chunk if self._carry else chunk
        # Both the end mark and dot-stuffing start with CRLF "."; most chunks of
        # real mail have neither, and then one search settles both (a quarter of
        # the work on large messages; bench/RESULTS.md).
        dotted = buf.find(END[:3])
        end = buf.find(END, dotted) if dotted >= 0 else -1
        if end >= 0:
            self.done = True
            rest = buf[end + len(END) :]
            self.received += len(chunk) - len(rest)
            seg = buf[: end + 2]  # the CRLF before the dot is message content
            self._carry = b""
        else:
            rest = b""
            self.received += len(chunk)
            cut = len(buf)
            for prefix in _END_PREFIXES:
                if buf.endswith(prefix):
                    cut -= len(prefix)
                    break
            seg = buf[:cut]
            self._carry = buf[cut:]
        if self.error is not None or not seg:
            return b"", rest
        return self._content(seg, dotted >= 0), rest

    def _content(self, seg: bytes, dotted: bool) -> bytes:
        # `seg` never ends inside a CRLF or a CRLF "." (those are carried), so
        # every CR, LF and line-start dot in it can be judged on its own.
        crlf = seg.count(b"\r\n")
        if seg.count(b"\n") != crlf or seg.count(b"\r") != crlf:
            self.error = DataError.BARE_NEWLINE
            return b""
        if self.max_line and self._line_too_long(seg):
            self.error = DataError.LINE_TOO_LONG
            return b""
        if dotted and b"\r\n." in seg:
            seg = seg.replace(b"\r\n.", b"\r\n")
        if self._skip:
            seg = seg[self._skip :]
            self._skip = 0
        if self.size + len(seg) > self.max_size:
            self.error = DataError.TOO_BIG
            return b""
        self.size += len(seg)
        return seg

    def _line_too_long(self, seg: bytes) -> bool:
        limit = self.max_line - 2  # the limit counts the CRLF
        last = seg.rfind(b"\r\n")
        if last < 0:
            self._run += len(seg)
            return self._run > limit
        if self._run + len(seg) > limit:  # only then can a line in here be too long
            lines = seg.split(b"\r\n")
            if self._run + len(lines[0]) > limit or max(map(len, lines[1:-1]), default=0) > limit:
                return True
        self._run = len(seg) - last - 2
        return self._run > limit

"""Every SMTP reply the gateway sends, in one table: code, enhanced status code, text.

One table so that wording, codes and their RFC reasons are reviewed in one place
and a test can check them all. Enhanced status codes follow RFC 3463 (and RFC
2034, which also says the greeting and the HELO/EHLO replies carry none, and
RFC 3463 has no class for 3xx, so 354 carries none either). Texts are ASCII
(RFC 5321 §4.2) and never repeat an address or anything else the client sent,
so a reply cannot carry a CR/LF or a secret back onto the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "" only where RFC 2034/3463 allow none
    text: str

    def line(self, **fields: object) -> bytes:
        """The wire form, one line with CRLF; `fields` fill {placeholders} in the text."""
        text = self.text.format(**fields) if fields else self.text
        prefix = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        return (prefix + text).encode("ascii", "replace") + b"\r\n"

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def closes(self) -> bool:
        """421 means the server closes the connection after sending it (RFC 5321 §3.8)."""
        return self.code == 421


def multiline(code: int, lines: list[str]) -> bytes:
    """A multi-line reply (RFC 5321 §4.2.1): "250-" on every line but the last."""
    out = []
    for i, text in enumerate(lines):
        sep = " " if i == len(lines) - 1 else "-"
        out.append(f"{code}{sep}{text}".encode("ascii", "replace") + b"\r\n")
    return b"".join(out)


# -- greeting, session --------------------------------------------------------------------
GREETING = Reply(220, "", "{host} ESMTP Letterbox")
HELO = Reply(250, "", "{host}")
CLOSING = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "Ok")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS HELP")
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")

# -- transaction ------------------------------------------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
STORED = Reply(250, "2.0.0", "Ok: stored as {trace}")

# -- syntax and sequence (RFC 5321 §4.2.2, RFC 3463 X.5.x) ----------------------------------
UNRECOGNIZED = Reply(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Command line too long")
BAD_LINE_ENDING = Reply(500, "5.5.2", "Command lines must end with CRLF (RFC 5321 section 2.3.8)")
BAD_ENCODING = Reply(500, "5.5.2", "Command line is not valid UTF-8 text")
SYNTAX = Reply(501, "5.5.4", "Syntax: {usage}")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
VRFY_DISABLED = Reply(502, "5.5.1", "VRFY and EXPN are disabled")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already given; send RSET to start over")
NEED_MAIL = Reply(503, "5.5.1", "Send MAIL first")
NEED_RCPT = Reply(503, "5.5.1", "Send RCPT first")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS is already active")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Parameter not recognized or not implemented")
BAD_BODY = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
BAD_SIZE = Reply(501, "5.5.4", "SIZE must be a number of bytes")

# -- addresses (RFC 3463 X.1.x; RFC 6531 §3.7.4 for X.6.7) --------------------------------
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
UTF8_UNDECLARED = Reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter (RFC 6531)")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied: this box takes mail for its own domains")
UNKNOWN_USER = Reply(550, "5.1.1", "No such mailbox here")
# RFC 5321 §4.5.1 makes postmaster mandatory, so it is never 550; with no mailbox on
# the box yet there is nowhere to keep it: 450 (§4.2.2 "mailbox unavailable") and
# X.2.1 (RFC 3463: the mailbox exists but does not accept messages for now).
POSTMASTER_UNAVAILABLE = Reply(450, "4.2.1", "No mailbox here yet takes postmaster mail; try later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the rest in another message")

# -- size and storage --------------------------------------------------------------------
SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds the fixed maximum of {limit} bytes")
OVER_QUOTA = Reply(552, "5.2.2", "Message is larger than the mailbox can ever hold")
STORAGE_FULL = Reply(452, "4.3.1", "Insufficient storage; try again later")
DRIVE_UNAVAILABLE = Reply(451, "4.3.0", "Mail storage unavailable; try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")

# -- message content (RFC 5321 §2.3.8, §4.1.1.4, §4.5.3.1.6) --------------------------------
BARE_NEWLINE = Reply(
    550, "5.6.0", "Message refused: bare CR or LF in data; lines end with CRLF (RFC 5321 2.3.8)"
)
DATA_LINE_TOO_LONG = Reply(550, "5.6.0", "Message refused: a line is longer than {limit} bytes")

# -- closing the connection (421, RFC 5321 §3.8) ----------------------------------------------
EARLY_DATA = Reply(421, "4.5.0", "Improper pipelining: data sent before the 354 reply; closing")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors; closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address; try later")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded; closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")
INTERNAL_ERROR = Reply(421, "4.3.0", "Internal error; closing connection, try again later")

ALL: dict[str, Reply] = {
    name: value for name, value in globals().items() if isinstance(value, Reply)
}

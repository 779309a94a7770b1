"""Every POP3 reply the box sends, in one table: status, response code, text.

One table, as for SMTP, so wording and codes are reviewed in one place and a test
checks them all. Response codes are RFC 2449 §8's extended response codes in
brackets: [IN-USE] (§8.1.2), and RFC 3206's [AUTH] (the credentials are at fault),
[SYS/TEMP] (try again later) and [SYS/PERM] (ask the administrator). Texts are
ASCII, never repeat what the client sent (so a reply cannot carry a CR/LF or a
secret back onto the wire), and keep a reply line under RFC 2449 §4's 512 octets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    ok: bool
    code: str  # a response code without its brackets, or ""
    text: str

    def line(self, **fields: object) -> bytes:
        """The wire form, one line with CRLF; `fields` fill {placeholders} in the text."""
        text = self.text.format(**fields) if fields else self.text
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code:
            parts.append(f"[{self.code}]")
        if text:
            parts.append(text)
        return " ".join(parts).encode("ascii", "replace") + b"\r\n"


def multiline(first: bytes, lines: list[str]) -> bytes:
    """A multi-line response (RFC 1939 §3): the +OK line, the lines, then "."."""
    body = "".join(f"{line}\r\n" for line in lines).encode("ascii", "replace")
    return first + body + b".\r\n"


def ok(text: str = "") -> Reply:
    return Reply(True, "", text)


def err(text: str, code: str = "") -> Reply:
    return Reply(False, code, text)


# -- greeting, capabilities, leaving -------------------------------------------------------
GREETING = ok("{host} Letterbox POP3 ready")
CAPA = ok("Capability list follows")
BYE = ok("Letterbox signing off")
BYE_UPDATED = ok("Letterbox signing off ({deleted} deleted)")
UPDATE_FAILED = err("The drive could not delete the messages; nothing was deleted", "SYS/TEMP")
SHUTTING_DOWN = err("Letterbox is shutting down; try again shortly", "SYS/TEMP")
TOO_MANY_CONNECTIONS = err("Too many connections from your address", "SYS/TEMP")
INTERNAL_ERROR = err("Internal error; try again later", "SYS/TEMP")

# -- logging in (AUTHORIZATION) --------------------------------------------------------------
USER_OK = ok("Send PASS")  # the same for every name: USER says nothing about who exists
LOGGED_IN = ok("Logged in: {count} messages ({octets} octets)")
NEED_USER = err("Send USER first")
LOGIN_REFUSED = err("Wrong user name or password", "AUTH")  # unknown user and bad password alike
LOGIN_THROTTLED = err(
    "Too many failed logins from your address; try again in a few minutes", "SYS/TEMP"
)
END_TO_END = err(
    "This mailbox is end-to-end encrypted, so the box cannot open it: read it with "
    "'letterbox fetch' or through 'letterbox bridge' on your own computer",
    "AUTH",
)
IN_USE = err("This mailbox is open in another session; try again when it ends", "IN-USE")
DRIVE_OFFLINE = err("The mail drive is not available; try again later", "SYS/TEMP")
PLAINTEXT_REFUSED = err(
    "Plaintext login is not allowed on this connection: use STLS first, or POP3S", "AUTH"
)
ALREADY_LOGGED_IN = err("Already logged in")
NEED_LOGIN = err("Log in first")
SASL_MECHANISMS = ok("SASL mechanisms follow")
SASL_CONTINUE = b"+ \r\n"  # RFC 5034 §4: an empty challenge
SASL_CANCELLED = err("Authentication cancelled")
SASL_MALFORMED = err("Malformed PLAIN response (RFC 4616)")
SASL_UNSUPPORTED = err("Unsupported SASL mechanism; PLAIN is offered")
APOP_UNSUPPORTED = err("APOP is not offered; use USER and PASS or AUTH PLAIN over TLS")

# -- TLS (RFC 2595) -----------------------------------------------------------------------------
TLS_READY = ok("Begin TLS negotiation")
TLS_ACTIVE = err("TLS is already active")
TLS_UNAVAILABLE = err("STLS is not available here")

# -- the maildrop (TRANSACTION) ---------------------------------------------------------------
STAT = ok("{count} {octets}")  # exactly "+OK nn mm" (RFC 1939 §5)
SCAN_ONE = ok("{n} {size}")
SCAN_ALL = ok("{count} messages ({octets} octets)")
UIDL_ONE = ok("{n} {uid}")
UIDL_ALL = ok("Unique-id listing follows")
RETR = ok("{size} octets")
TOP = ok("Top of message follows")
DELETED = ok("Message {n} deleted")
NOOP = ok()
RSET = ok("{count} messages ({octets} octets)")
NO_SUCH_MESSAGE = err("No such message")
MESSAGE_DELETED = err("Message {n} is deleted")
MESSAGE_GONE = err("Message {n} is no longer on the box (removed to make room)")
MESSAGE_UNREADABLE = err("Message {n} failed verification and cannot be read", "SYS/PERM")

# -- syntax and sequence -------------------------------------------------------------------------
UNKNOWN_COMMAND = err("Unknown command")
WRONG_STATE = err("Not allowed now")
SYNTAX = err("Syntax: {usage}")
LINE_TOO_LONG = err("Line too long")
BAD_ENCODING = err("Commands are UTF-8 text without control characters")
TOO_MANY_ERRORS = err("Too many bad commands; closing")

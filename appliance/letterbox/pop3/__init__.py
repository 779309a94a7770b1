"""POP3 (RFC 1939, CAPA RFC 2449, STLS RFC 2595, response codes RFC 3206).

* maildrop.py: the interfaces the protocol reads through (Maildrop, Authenticator);
* session.py: the line state machine, one per connection;
* wire.py: a message as a multi-line response (CRLF, byte-stuffing, TOP);
* replies.py: every reply;
* listener.py: ports 110 (STLS) and 995 (implicit TLS), caps, graceful stop;
* drivemaildrop.py: the maildrop on the box's drive (login unwraps the key).

`letterbox bridge` reuses Pop3Listener/Pop3Session with a maildrop of its own.
"""

from letterbox.pop3.drivemaildrop import DriveAuthenticator, DriveMaildrop
from letterbox.pop3.listener import Pop3Listener
from letterbox.pop3.maildrop import (
    Authenticator,
    EndToEndOnly,
    Entry,
    LoginRefused,
    LoginThrottled,
    MailboxInUse,
    Maildrop,
    MaildropUnavailable,
    MessageGone,
    MessageUnreadable,
)
from letterbox.pop3.session import Pop3Session, SessionOptions

__all__ = [
    "Authenticator",
    "DriveAuthenticator",
    "DriveMaildrop",
    "EndToEndOnly",
    "Entry",
    "LoginRefused",
    "LoginThrottled",
    "MailboxInUse",
    "Maildrop",
    "MaildropUnavailable",
    "MessageGone",
    "MessageUnreadable",
    "Pop3Listener",
    "Pop3Session",
    "SessionOptions",
]

"""What a POP3 session reads from, apart from where the mail really is.

The POP3 state machine (RFC 1939) talks only to these two interfaces. On the box,
`letterbox run` logs in against the drive (the password unwraps the mailbox key
for that session); in `letterbox bridge` on a person's computer, the same state
machine serves a maildrop backed by the drive API and the person's own key. So
the protocol never reaches into storage, and the bridge needs no second POP3.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class LoginRefused(Exception):
    """Wrong user or password; the reply is the same for both (RFC 3206 [AUTH])."""


class MailboxInUse(Exception):
    """Another session holds this maildrop (RFC 2449 [IN-USE])."""


class MaildropUnavailable(Exception):
    """The drive is offline or failing: try later (RFC 3206 [SYS/TEMP])."""


class EndToEndOnly(Exception):
    """The mailbox is end-to-end: the box cannot open it; the message says how to read it
    (RFC 3206 [AUTH] with this text). A failed login: raised only after the failure
    delay, and counted like a wrong password."""


class LoginThrottled(Exception):
    """Too many failed logins from this client lately: refused without checking the
    password, so guessing stays slow (RFC 3206 [SYS/TEMP]: a temporary refusal)."""


class MessageGone(Exception):
    """The message was listed at login but is no longer there (removed to make room)."""


class MessageUnreadable(Exception):
    """The message (or its metadata) failed verification: damaged, never sent as if whole
    (RFC 3206 [SYS/PERM]). Raised before the first chunk or in the middle of a read."""


@dataclass(frozen=True)
class Entry:
    """One message as POP3 lists it.

    `uid` is stable across sessions (UIDL, RFC 1939 §7: 1–70 printable ASCII);
    `size` is the exact number of octets RETR sends, before byte-stuffing.
    """

    uid: str
    size: int


class Maildrop(Protocol):
    """A logged-in mailbox for the length of one POP3 session."""

    async def entries(self) -> list[Entry]:
        """The messages at login, in arrival order; the session numbers them 1..n."""
        ...

    def read(self, uid: str) -> AsyncIterator[bytes]:
        """The message's bytes in chunks (bounded memory), verified as they come.
        Raises MaildropUnavailable, MessageGone or MessageUnreadable (the session
        reports them as -ERR before the first byte, or drops the connection after it).
        The session closes the iterator (aclose) when it stops early."""
        ...

    async def mark_retrieved(self, uids: Sequence[str]) -> None:
        """Note that these were downloaded (eviction prefers them)."""
        ...

    async def delete(self, uids: Sequence[str]) -> None:
        """Delete these, all or none, durably before returning (the UPDATE state, RFC 1939 §6)."""
        ...

    async def close(self) -> None:
        """End the session: forget the key, release the maildrop lock."""
        ...


class Authenticator(Protocol):
    """Turns USER/PASS (or SASL PLAIN) into a maildrop, or refuses."""

    async def login(self, user: str, password: str, client: str) -> Maildrop:
        """Raises LoginRefused, LoginThrottled, MailboxInUse, MaildropUnavailable or
        EndToEndOnly. `client` is the peer address, for rate limiting."""
        ...

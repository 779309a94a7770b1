"""The POP3 maildrop on the box's own drive: log in by unwrapping the mailbox key.

`DriveAuthenticator.login` turns a password into a `DriveMaildrop` that holds the
mailbox's unwrapped secret key for that one session (docs/design.md, "Keys": mail at
rest stays encrypted; `close()` drops the key). Everything slow runs off the
event loop: Argon2id in the default executor, at most `UNLOCK_CONCURRENCY` at a
time (each takes `crypto.argon2_memlimit` of RAM, 64 MiB by default, and a Zero 2 W
has 512 MB), and every drive call (SQLite, blob reads, the durable delete).

Failed logins, and why they look the way they do:

* **One answer for an unknown user and a wrong password**: the same exception,
  after the same work (an unknown user's password is checked against a decoy
  keyring made with the same Argon2id limits) and no earlier than
  `failure_delay` seconds after the attempt started, so neither the reply nor
  its timing tells which names exist.
* **Per client address** (letterbox.ratelimit, shared with the setup page): at
  most `max_failures` failures in `window` seconds; beyond that every attempt is
  refused (LoginThrottled, [SYS/TEMP]) without looking at the password, after the
  same delay, until old failures age out. IPv6 clients count per /64, the block
  one household or one attacker usually holds. The table is bounded (oldest
  addresses forgotten first).
* **[IN-USE]** (RFC 2449 §8.1.2): one session per mailbox. Checked only after the
  password was right, so it says nothing to someone without it.
* **End-to-end mailboxes** have no key on the box, so no password can be right:
  every attempt is a failed login like any other (counted by the limiter, the
  decoy's Argon2id run, answered no earlier than `failure_delay`), and only then
  EndToEndOnly, whose reply says to use `letterbox fetch` or `letterbox bridge`.
  Answering at once let anyone probe addresses for end-to-end mailboxes at full
  speed; a person whose mail client is set up wrongly still gets the hint.

The drive is looked up through a callable on every use, like the SMTP gateway's,
so a drive that goes away (None) makes logins and reads MaildropUnavailable
([SYS/TEMP]) and comes back by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TypeVar

from nacl.public import PrivateKey

from letterbox import crypto
from letterbox.drive import Drive, DriveError, DriveUnavailable, MailboxNotFound, MessageDamaged
from letterbox.pop3.maildrop import (
    EndToEndOnly,
    Entry,
    LoginRefused,
    LoginThrottled,
    MailboxInUse,
    MaildropUnavailable,
    MessageGone,
    MessageUnreadable,
)
from letterbox.ratelimit import FailureLimiter

log = logging.getLogger("letterbox.pop3")

UNLOCK_CONCURRENCY = 2  # Argon2id unwraps at once: memory, and the cores of a small board
FAILURE_DELAY = 2.0  # seconds before a failed login is answered

T = TypeVar("T")


class DriveAuthenticator:
    """Logs POP3 sessions in against the drive (maildrop.Authenticator)."""

    def __init__(
        self,
        drive: Callable[[], Drive | None],
        *,
        failure_delay: float = FAILURE_DELAY,
        limiter: FailureLimiter | None = None,
        argon2_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self._drive = drive
        self.failure_delay = failure_delay
        self.limiter = limiter or FailureLimiter()
        self.in_use: set[str] = set()  # mailbox ids with a session
        # The box passes the one budget it shares with the setup page; alone (tests,
        # the bridge), a budget of its own.
        self._unlocks = argon2_slots or asyncio.Semaphore(UNLOCK_CONCURRENCY)
        self._decoy: crypto.Keyring | None = None

    async def login(self, user: str, password: str, client: str) -> DriveMaildrop:
        loop = asyncio.get_running_loop()
        started = loop.time()
        drive = self._drive()
        if drive is None:
            raise MaildropUnavailable
        try:
            mailbox = drive.find_mailbox(user)
        except DriveError:
            raise MaildropUnavailable from None
        end_to_end = mailbox is not None and mailbox.end_to_end
        # Counted as a failure before the check runs: concurrent sessions from one
        # address must not all pass the limit while their Argon2id runs are queued.
        if self.limiter.begin(client):
            await self._pad(started)
            raise LoginThrottled
        try:
            async with self._unlocks:
                if mailbox is None or end_to_end:
                    await self._check_decoy(drive, password)
                    secret = None
                else:
                    secret = await loop.run_in_executor(None, drive.unlock, mailbox.id, password)
        except crypto.WrongPassword:
            secret = None
        except (DriveError, crypto.CryptoFailure, OSError) as exc:
            self.limiter.cancel(client)  # the box failed, not the client
            log.error("cannot read a mailbox keyring (%s)", exc.__class__.__name__)
            raise MaildropUnavailable from None
        if secret is None or mailbox is None or end_to_end:
            await self._pad(started)
            raise EndToEndOnly if end_to_end else LoginRefused
        self.limiter.cancel(client)
        if mailbox.id in self.in_use:
            raise MailboxInUse
        self.in_use.add(mailbox.id)
        return DriveMaildrop(self, mailbox.id, secret)

    async def _check_decoy(self, drive: Drive, password: str) -> None:
        """An unknown user costs what a known one does: one Argon2id that fails."""
        loop = asyncio.get_running_loop()
        if self._decoy is None:
            limits = drive.limits
            self._decoy = await loop.run_in_executor(
                None,
                lambda: crypto.Keyring.create(crypto.new_id(), secrets.token_urlsafe(24), limits)[
                    0
                ],
            )
        await loop.run_in_executor(None, self._decoy.unlock, password)
        # Returns only in the unreachable case that the random password was guessed.

    async def _pad(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        wait = started + self.failure_delay - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    def drive(self) -> Drive:
        drive = self._drive()
        if drive is None:
            raise MaildropUnavailable
        return drive

    def release(self, mailbox_id: str) -> None:
        self.in_use.discard(mailbox_id)


class DriveMaildrop:
    """One logged-in mailbox on the drive for one session (maildrop.Maildrop)."""

    def __init__(self, auth: DriveAuthenticator, mailbox_id: str, secret: PrivateKey) -> None:
        self._auth = auth
        self.mailbox_id = mailbox_id
        self._secret: PrivateKey | None = secret

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """A blocking drive call in the executor; drive failures become MaildropUnavailable."""
        if self._secret is None:
            raise MaildropUnavailable
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except DriveUnavailable:
            raise MaildropUnavailable from None
        except (MessageGone, MessageUnreadable, MaildropUnavailable):
            raise
        except MailboxNotFound:
            raise MessageGone from None
        except MessageDamaged as exc:
            log.error("a message failed verification: %s", exc)
            raise MessageUnreadable from None
        except Exception as exc:  # a closed or failing index: the drive is not usable now
            log.error("drive call failed: %s", exc.__class__.__name__)
            raise MaildropUnavailable from None

    async def entries(self) -> list[Entry]:
        drive = self._auth.drive()
        deliveries = await self._call(drive.list, self.mailbox_id)
        # Delivery ids are 32 hex digits, random and permanent: RFC 1939's unique-ids.
        return [Entry(d.id, d.plain_size) for d in deliveries]

    async def read(self, uid: str) -> AsyncIterator[bytes]:
        """Decrypt in the executor one chunk ahead of the one being sent."""
        drive = self._auth.drive()
        secret = self._secret
        if secret is None:
            raise MaildropUnavailable
        message = await self._call(drive.open_message, self.mailbox_id, uid, secret)
        chunks = message.chunks()
        pending: asyncio.Future[bytes | None] | None = None
        try:
            pending = asyncio.ensure_future(self._call(_next_chunk, chunks))
            while True:
                chunk = await pending
                pending = None
                if chunk is None:
                    return
                pending = asyncio.ensure_future(self._call(_next_chunk, chunks))
                yield chunk
        finally:
            if pending is not None:  # let the worker finish before closing its generator
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            with contextlib.suppress(ValueError):  # still running only if we were cancelled
                chunks.close()

    async def mark_retrieved(self, uids: Sequence[str]) -> None:
        drive = self._auth.drive()
        await self._call(drive.mark_retrieved, self.mailbox_id, list(uids))

    async def delete(self, uids: Sequence[str]) -> None:
        drive = self._auth.drive()
        await self._call(drive.delete, self.mailbox_id, list(uids))

    async def close(self) -> None:
        if self._secret is not None:
            self._secret = None  # the only reference this session held to the key
            self._auth.release(self.mailbox_id)


READ_AHEAD = 256 * 1024  # plaintext decrypted per trip to the executor


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    """Several decrypted chunks joined: each executor round trip costs more than
    decrypting 64 KiB, so a large RETR makes a quarter as many (bench/RESULTS.md)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= READ_AHEAD:
            break
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts)

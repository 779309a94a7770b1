"""Sessions, attempt limits and Argon2id for the setup page.

Sessions live in memory (a restart logs the admin out, which on a home box is a
feature, not a loss). A session is made for a visitor's first page, before any
login, so that the claim and login forms carry a CSRF token too; logging in
replaces it with a fresh one (no session fixation). Static files and the mail-client
configuration need no session and get none (security.py). The cookie holds a
random 256-bit token; the server keeps only its SHA-256, so a memory dump does not
hand out live cookies. Anonymous and admin sessions are kept in two tables, each
bounded on its own: a flood of cookie-less visitors evicts only anonymous
sessions, never a logged-in admin.

Secrets typed into the page (admin password, setup code, a mailbox's recovery
code) are limited per client address by one `letterbox.ratelimit.FailureLimiter`:
`MAX_FAILURES` within `WINDOW` seconds, then refused unchecked until the oldest
failure is that old (IPv6 clients per /64). Each attempt is counted *before* its
check is awaited (`FailureLimiter.begin`) and forgiven on success, so concurrent
requests cannot all slip past the limit while the first checks are running.

Argon2id costs `crypto.argon2_memlimit` of RAM (64 MiB by default) per run, and a
Zero 2 W has 512 MB shared with POP3's unlocks (at most 2 at once): every Argon2id
the page runs (login, claim, recovery, new mailbox, password change) waits for one
of `ARGON2_CONCURRENCY` slots (`argon2_slots`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from letterbox import claim, crypto
from letterbox.crypto import Argon2Limits
from letterbox.ratelimit import FailureLimiter

COOKIE = "letterbox_session"
IDLE_TIMEOUT = 30 * 60.0  # seconds without a request before a login ends
ANON_TIMEOUT = 60 * 60.0  # a not-logged-in visitor's session (CSRF token for login forms)
# Each table drops its least recently used session first: a flood of visitors cannot
# grow memory, and cannot push out an admin (whose sessions need the password).
MAX_ANONYMOUS = 256
MAX_ADMIN = 16
MAX_FAILURES = 5  # wrong secrets per client within WINDOW
WINDOW = 300.0
ARGON2_CONCURRENCY = 1  # Argon2id runs of the page at once (memory: see above)


@dataclass
class Session:
    csrf: str
    admin: bool
    last_seen: float


class Sessions:
    """token -> Session, keyed by SHA-256(token); anonymous and admin sessions in
    separate tables, each bounded, least recently used evicted first."""

    def __init__(self, max_anonymous: int = MAX_ANONYMOUS, max_admin: int = MAX_ADMIN) -> None:
        self._anonymous: OrderedDict[bytes, Session] = OrderedDict()
        self._admin: OrderedDict[bytes, Session] = OrderedDict()
        self._max = {False: max_anonymous, True: max_admin}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def _table(self, admin: bool) -> OrderedDict[bytes, Session]:
        return self._admin if admin else self._anonymous

    def __len__(self) -> int:
        return len(self._anonymous) + len(self._admin)

    def new(self, *, admin: bool) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), admin, time.monotonic())
        table = self._table(admin)
        table[self._key(token)] = session
        while len(table) > self._max[admin]:
            table.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        key = self._key(token)
        for table in (self._admin, self._anonymous):
            session = table.get(key)
            if session is None:
                continue
            ttl = IDLE_TIMEOUT if session.admin else ANON_TIMEOUT
            now = time.monotonic()
            if now - session.last_seen > ttl:
                del table[key]
                return None
            session.last_seen = now
            table.move_to_end(key)
            return session
        return None

    def drop(self, token: str | None) -> None:
        if token:
            key = self._key(token)
            self._admin.pop(key, None)
            self._anonymous.pop(key, None)

    def drop_all_admin(self) -> None:
        """After the admin password changes hands (claim), older logins end."""
        self._admin.clear()


def wait_message(wait: int) -> str:
    """What a client whose attempts are used up reads (with 429 and Retry-After)."""
    minutes = max(1, round(wait / 60))
    return (
        f"Too many wrong attempts from this device. Try again in about {minutes} "
        f"minute{'s' if minutes != 1 else ''}."
    )


def make_limiter() -> FailureLimiter:
    return FailureLimiter(MAX_FAILURES, WINDOW)


def make_argon2_slots() -> asyncio.Semaphore:
    return asyncio.Semaphore(ARGON2_CONCURRENCY)


async def hash_admin_password(password: str, limits: Argon2Limits, slots: asyncio.Semaphore) -> str:
    """Argon2id off the event loop (it takes a second on a small board), in a slot."""
    async with slots:
        return await asyncio.to_thread(crypto.hash_password, password, limits)


async def check_admin_password(data_dir: Path, password: str, slots: asyncio.Semaphore) -> bool:
    async with slots:
        return await asyncio.to_thread(claim.check_admin_password, data_dir, password)

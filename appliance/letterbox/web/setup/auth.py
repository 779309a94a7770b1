"""Sessions and login limits for the setup page.

Sessions live in memory (a restart logs the admin out, which on a home box is a
feature, not a loss). A session is made for every visitor on the first page, before
any login, so that the claim and login forms carry a CSRF token too; logging in
replaces it with a fresh one (no session fixation). The cookie holds a random
256-bit token; the server keeps only its SHA-256, so a memory dump does not hand
out live cookies.

Login attempts (admin password and setup code alike) are limited per client
address: `MAX_FAILURES` within `WINDOW` seconds, then refused unchecked until the
oldest failure is that old. IPv6 clients are counted per /64, since one household
device can take any address in its prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from letterbox import claim, crypto
from letterbox.crypto import Argon2Limits

COOKIE = "letterbox_session"
IDLE_TIMEOUT = 30 * 60.0  # seconds without a request before a login ends
ANON_TIMEOUT = 60 * 60.0  # a not-logged-in visitor's session (CSRF token for login forms)
MAX_SESSIONS = 256  # the oldest goes first: a flood of visitors cannot grow memory
MAX_FAILURES = 5
WINDOW = 300.0


@dataclass
class Session:
    csrf: str
    admin: bool
    last_seen: float


class Sessions:
    """token -> Session, keyed by SHA-256(token), bounded, oldest evicted first."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._by_hash: OrderedDict[bytes, Session] = OrderedDict()
        self._max = max_sessions

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def new(self, *, admin: bool) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), admin, time.monotonic())
        self._by_hash[self._key(token)] = session
        while len(self._by_hash) > self._max:
            self._by_hash.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        key = self._key(token)
        session = self._by_hash.get(key)
        if session is None:
            return None
        ttl = IDLE_TIMEOUT if session.admin else ANON_TIMEOUT
        now = time.monotonic()
        if now - session.last_seen > ttl:
            del self._by_hash[key]
            return None
        session.last_seen = now
        self._by_hash.move_to_end(key)
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_hash.pop(self._key(token), None)

    def drop_all_admin(self) -> None:
        """After the admin password changes hands (claim), older logins end."""
        for key in [k for k, s in self._by_hash.items() if s.admin]:
            del self._by_hash[key]


def client_key(address: str | None) -> str:
    """What the limiter counts: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginLimiter:
    """Failed attempts per client within a sliding window."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = time.monotonic()
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, address: str | None) -> int:
        """0 when this client may try now, else seconds until it may."""
        times = self._recent(client_key(address))
        if len(times) < self.max_failures:
            return 0
        return max(1, int(self.window - (time.monotonic() - times[0])) + 1)

    def failed(self, address: str | None) -> None:
        key = client_key(address)
        self._recent(key)
        self._failures.setdefault(key, deque()).append(time.monotonic())
        if len(self._failures) > 10_000:  # a scan from many addresses: forget the oldest
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, address: str | None) -> None:
        self._failures.pop(client_key(address), None)


async def hash_admin_password(password: str, limits: Argon2Limits) -> str:
    """Argon2id off the event loop (it takes a second on a small board)."""
    return await asyncio.to_thread(crypto.hash_password, password, limits)


async def check_admin_password(data_dir: Path, password: str) -> bool:
    return await asyncio.to_thread(claim.check_admin_password, data_dir, password)

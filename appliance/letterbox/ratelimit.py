"""Limits per client address: failed attempts at every door that takes a secret
(`FailureLimiter`), and plain request rates at a door anyone may knock on
(`RequestRate`: the drive API's /challenge). Both count by `client_key`.

POP3 logins (pop3/drivemaildrop.py, e2e/bridge.py) and the setup page's login,
setup-code claim and recovery-code reset (web/setup/) all count failures the same
way: at most `max_failures` within a sliding `window` of seconds per client, then
refused without checking the secret until the oldest counted failure is that old.

* **Per client, IPv6 per /64**: one household device (or one attacker) can take any
  address in its prefix, so counting single IPv6 addresses would count nothing.
  IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
* **Bounded memory**: at most `max_tracked` clients, the least recently failing
  forgotten first, and at most `max_failures` times kept per client; a scan from
  many addresses cannot grow the table.
* **Count first, check later** (`begin`): a check that awaits (Argon2id in a thread)
  must be counted *before* the await, or N concurrent attempts all pass the
  `blocked` test before any of them is recorded. `begin` tests and records in one
  step (no await between), and `succeeded` forgives the client afterwards.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

# Defaults, POP3's (config [pop3] max_failed_logins, failed_login_window); the setup
# page passes its own, stricter ones (web/setup/auth.py).
MAX_FAILURES = 10  # failures per client key within WINDOW
WINDOW = 900.0  # seconds (15 minutes)
MAX_TRACKED = 4096  # client keys remembered


def client_key(client: str | None) -> str:
    """The bucket of a client address: the IPv4 address, or the IPv6 /64.

    A zone suffix (`fe80::1%eth0`) is dropped; something that is not an address
    (a Unix socket path) is its own bucket."""
    raw = client or "?"
    try:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return raw
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureLimiter:
    """Failures per client key in a sliding window; bounded memory.

    `max_failures = 0` or `window = 0` switch the limit off (nothing is ever kept)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_tracked = max(1, max_tracked)
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        """The key's failures still inside the window (older ones dropped), or None."""
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, client: str | None) -> int:
        """0 when this client may try now, else whole seconds until it may."""
        times = self._recent(client_key(client))
        if times is None or len(times) < self.max_failures:
            return 0
        return max(1, int(times[0] + self.window - self.clock()) + 1)

    def blocked(self, client: str | None) -> bool:
        return self.retry_after(client) > 0

    def failed(self, client: str | None) -> None:
        key = client_key(client)
        times = self._recent(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def begin(self, client: str | None) -> int:
        """Start an attempt: 0 and the attempt counted as a failure (until
        `succeeded` says otherwise), or the seconds to wait, nothing counted.

        Synchronous on purpose: called on the event loop, the test and the record
        happen with no other task in between."""
        wait = self.retry_after(client)
        if not wait:
            self.failed(client)
        return wait

    def cancel(self, client: str | None) -> None:
        """Take back one attempt counted by `begin` that was no failure (a right
        password, or a check that could not run), keeping the client's other
        failures: where several accounts share a limiter (POP3), succeeding at one
        must not wipe out the guesses made at another."""
        key = client_key(client)
        times = self._recent(key)
        if times:
            times.pop()
            if not times:
                del self._failures[key]

    def succeeded(self, client: str | None) -> None:
        """The client proved it holds the secret: its failures are forgotten."""
        self._failures.pop(client_key(client), None)


class RequestRate:
    """At most `limit` requests per client key in each fixed `window` of seconds,
    for a door anyone may knock on (the drive API's /challenge): unlike
    `FailureLimiter`, which keeps each failure's time, this keeps one count per
    client, so a high limit costs no memory. A client may get up to twice `limit`
    across a window boundary; that is the price of O(1), and still bounds a flood.

    At most `max_tracked` clients are remembered, the least recently seen dropped
    first (a dropped client starts a fresh window: the limit holds per client that
    keeps asking, which is the one that matters)."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_tracked = max(1, max_tracked)
        self.clock = clock
        self._counts: OrderedDict[str, list[float]] = OrderedDict()  # key -> [start, n]

    def take(self, client: str | None) -> int:
        """Count one request: 0 if allowed, else whole seconds until the client's
        window ends (the refused request is not counted)."""
        key = client_key(client)
        now = self.clock()
        entry = self._counts.get(key)
        if entry is None or now >= entry[0] + self.window:
            entry = self._counts[key] = [now, 0]
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_tracked:
            self._counts.popitem(last=False)
        if entry[1] >= self.limit:
            return max(1, math.ceil(entry[0] + self.window - now))
        entry[1] += 1
        return 0

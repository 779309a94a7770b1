"""letterbox.ratelimit: the one failure limiter behind POP3 and the setup page."""

from __future__ import annotations

import pytest
from letterbox.ratelimit import FailureLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_and_bounded_memory() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=2, window=10, max_tracked=3, clock=clock)
    lim.failed("192.0.2.1")
    clock.now += 6
    lim.failed("192.0.2.1")
    assert lim.blocked("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 5  # the first failure ages out in 4 s (+1)
    clock.now += 5  # the first failure is older than the window now
    assert not lim.blocked("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 0
    for i in range(10):
        lim.failed(f"198.51.100.{i}")
    assert len(lim._failures) == 3


def test_an_ipv6_client_counts_per_64() -> None:
    lim = FailureLimiter(max_failures=2, window=60)
    lim.failed("2001:db8:1:2::10")
    lim.failed("2001:db8:1:2::99")
    assert lim.retry_after("2001:db8:1:2:aaaa::1") > 0
    assert lim.retry_after("2001:db8:1:3::1") == 0
    assert lim.retry_after("192.0.2.1") == 0


def test_begin_counts_before_the_check_and_success_forgives() -> None:
    """Attempts started one after another without any result yet (concurrent
    requests whose checks are still running) are each counted at once."""
    clock = Clock()
    lim = FailureLimiter(max_failures=3, window=60, clock=clock)
    assert [lim.begin("192.0.2.1") for _ in range(5)] == [0, 0, 0, 61, 61]
    assert lim.begin("192.0.2.2") == 0  # another client is not affected
    lim.succeeded("192.0.2.1")
    assert lim.begin("192.0.2.1") == 0


def test_a_refused_attempt_is_not_counted() -> None:
    """Refusals do not extend the wait: the client is free one window after its
    last real attempt, however often it knocked meanwhile."""
    clock = Clock()
    lim = FailureLimiter(max_failures=1, window=60, clock=clock)
    assert lim.begin("192.0.2.1") == 0
    clock.now += 30
    assert lim.begin("192.0.2.1") == 31
    clock.now += 30
    assert lim.begin("192.0.2.1") == 0


@pytest.mark.parametrize(("max_failures", "window"), [(0, 60), (3, 0)])
def test_zero_switches_the_limit_off(max_failures: int, window: float) -> None:
    """letterbox.toml accepts 0 for [pop3] max_failed_logins and failed_login_window."""
    lim = FailureLimiter(max_failures=max_failures, window=window)
    assert all(lim.begin("192.0.2.1") == 0 for _ in range(10))
    assert not lim.blocked("192.0.2.1")


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/sock", "/run/sock"),
        (None, "?"),
        ("", "?"),
    ],
)
def test_client_key(client: str | None, key: str) -> None:
    assert client_key(client) == key


def test_cancel_takes_back_one_attempt_and_keeps_the_others() -> None:
    """POP3 shares one limiter between accounts: a right password at one mailbox
    takes back only its own attempt, never the guesses made at another."""
    lim = FailureLimiter(max_failures=3, window=60, clock=Clock())
    assert lim.begin("192.0.2.1") == 0  # a wrong guess at bob's mailbox
    assert lim.begin("192.0.2.1") == 0  # alice logs in...
    lim.cancel("192.0.2.1")  # ...with her right password
    assert lim.begin("192.0.2.1") == 0  # the second guess at bob's
    assert lim.begin("192.0.2.1") == 0  # the third: the limit is reached
    assert lim.begin("192.0.2.1") > 0
    lim.cancel("198.51.100.7")  # nothing recorded: harmless

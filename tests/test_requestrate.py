"""letterbox.ratelimit.RequestRate: requests per client key per fixed window, O(1) each."""

from __future__ import annotations

from letterbox.ratelimit import RequestRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_limit_per_window_per_client_key() -> None:
    clock = Clock()
    rate = RequestRate(3, 60, clock=clock)
    assert [rate.take("192.0.2.1") for _ in range(3)] == [0, 0, 0]
    clock.now += 20
    assert rate.take("192.0.2.1") == 40  # the window started 20 s ago
    assert rate.take("::ffff:192.0.2.1") == 40  # the same client, IPv4-mapped
    assert rate.take("192.0.2.2") == 0  # another client has its own count
    clock.now += 40
    assert rate.take("192.0.2.1") == 0  # a new window


def test_an_ipv6_slash_64_is_one_client() -> None:
    rate = RequestRate(2, 60, clock=Clock())
    assert rate.take("2001:db8:1:2::1") == 0
    assert rate.take("2001:db8:1:2:ffff::9") == 0
    assert rate.take("2001:db8:1:2:abcd::3") > 0
    assert rate.take("2001:db8:1:3::1") == 0


def test_memory_is_bounded() -> None:
    rate = RequestRate(1, 60, max_tracked=4, clock=Clock())
    for n in range(100):
        rate.take(f"198.51.100.{n}")
    assert len(rate._counts) == 4

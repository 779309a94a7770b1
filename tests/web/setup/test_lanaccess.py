"""Who may use the setup page: the fixed LAN ranges, the box's own on-link prefixes,
and nothing that `ipaddress.is_private` merely calls private."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import ifaddr
import pytest
from letterbox.web.setup.lanaccess import LocalNetworks, adapter_networks, on_lan

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "remote",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.200.1.1",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.178.20",
        "169.254.3.4",
        "::1",
        "fd12:3456:789a::1",
        "fc00::1",
        "fe80::1",
        "fe80::1%eth0",
        "::ffff:10.0.0.7",
        "::ffff:192.168.1.9",
        "::ffff:127.0.0.1",
    ],
)
def test_the_fixed_lan_ranges_are_allowed(remote: str) -> None:
    assert on_lan(remote) is True


@pytest.mark.parametrize(
    "remote",
    [
        "2001::1",  # Teredo (RFC 4380): is_private, and a tunnel to anywhere
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # a real-looking Teredo address
        "2001:db8::1",  # documentation: is_private
        "2002:c000:204::1",  # 6to4
        "64:ff9b::808:808",  # NAT64
        "100.64.0.1",  # carrier-grade NAT (RFC 6598): the provider's network
        "::ffff:100.64.0.1",
        "198.18.0.1",  # benchmarking: is_private
        "192.0.0.8",  # IETF protocol assignments: is_private
        "192.0.2.1",  # documentation: is_private
        "172.32.0.1",  # just outside 172.16/12
        "8.8.8.8",
        "::ffff:8.8.8.8",
        "2a00:1450:4001::1",
        "::",
        "0.0.0.0",
        "",
        "not an address",
        None,
    ],
)
def test_private_looking_and_public_addresses_are_refused(remote: str | None) -> None:
    assert on_lan(remote) is False


def adapter(name: str, *ips: tuple[str, int]) -> ifaddr.Adapter:
    """An ifaddr.Adapter as ifaddr.get_adapters() returns it (IPv6 as a tuple)."""
    return ifaddr.Adapter(
        name,
        name,
        [ifaddr.IP((ip, 0, 0) if ":" in ip else ip, prefix, name) for ip, prefix in ips],
    )


HOME = [
    adapter("lo", ("127.0.0.1", 8), ("::1", 128)),
    adapter(
        "eth0",
        ("203.0.113.10", 24),  # a LAN on public IPv4 space
        ("2a01:db8:aa:bb::10", 64),  # the router's global prefix
        ("fe80::1", 64),
    ),
    adapter("tun0", ("2a01:db8:ffff::1", 16)),  # too broad to be a LAN: ignored
]


def test_the_boxs_own_on_link_prefixes_are_allowed() -> None:
    local = LocalNetworks(lambda: HOME)
    assert on_lan("2a01:db8:aa:bb:1234:5678:9abc:def0", local) is True
    assert on_lan("203.0.113.77", local) is True
    assert on_lan("::ffff:203.0.113.77", local) is True
    assert on_lan("2a01:db8:aa:bc::1", local) is False  # the next /64
    assert on_lan("203.0.114.1", local) is False
    assert on_lan("2a01:db8:1::1", local) is False  # under the ignored /16
    assert on_lan("2001::1", local) is False


def test_adapter_networks() -> None:
    """127.0.0.0/8 is broader than MIN_PREFIX (it is in the fixed list anyway)."""
    assert [str(n) for n in adapter_networks(HOME)] == [
        "203.0.113.0/24",
        "::1/128",
        "2a01:db8:aa:bb::/64",
        "fe80::/64",
    ]


def test_interface_addresses_are_cached_for_a_few_seconds() -> None:
    now = [100.0]
    reads = [0]
    current = [HOME]

    def read() -> list[ifaddr.Adapter]:
        reads[0] += 1
        return current[0]

    local = LocalNetworks(read, ttl=5, clock=lambda: now[0])
    assert on_lan("2a01:db8:aa:bb::99", local)
    current[0] = [adapter("eth0", ("2a01:db8:cc:dd::10", 64))]  # a new prefix from the router
    now[0] += 4
    assert on_lan("2a01:db8:aa:bb::99", local)  # still the cached list
    assert reads[0] == 1
    now[0] += 1
    assert not on_lan("2a01:db8:aa:bb::99", local)
    assert on_lan("2a01:db8:cc:dd::99", local)
    assert reads[0] == 2


def test_an_unreadable_interface_list_keeps_the_last_one() -> None:
    now = [0.0]
    fail = [False]

    def read() -> list[ifaddr.Adapter]:
        if fail[0]:
            raise OSError("getifaddrs failed")
        return HOME

    local = LocalNetworks(read, ttl=1, clock=lambda: now[0])
    assert on_lan("203.0.113.5", local)
    fail[0], now[0] = True, 10.0
    assert on_lan("203.0.113.5", local)
    assert on_lan("192.168.1.1", local)


def test_this_machines_own_addresses_are_on_lan() -> None:
    """The real ifaddr reading: every address of this machine's interfaces is allowed."""
    local = LocalNetworks()
    addresses = [
        ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
        for a in ifaddr.get_adapters()
        for ip in a.ips
    ]
    assert addresses
    assert all(on_lan(address, local) for address in addresses), addresses


def test_a_global_ipv6_prefix_on_an_interface_in_a_network_namespace() -> None:
    """Real interfaces: a namespace whose only LAN has a global IPv6 /64 (and public
    IPv4 /24) lets its neighbours in and nobody else."""
    if shutil.which("ip") is None:
        pytest.fail("this test needs iproute2 (ip)")
    ns = f"lbx{os.getpid()}s{uuid.uuid4().hex[:6]}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)

    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cannot make a network namespace (needs root): {exc.stderr!r}")
    try:
        ip("-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
        ip("-n", ns, "addr", "add", "2a01:db8:5:6::1/64", "dev", "lan0", "nodad")
        ip("-n", ns, "addr", "add", "203.0.113.1/24", "dev", "lan0")
        ip("-n", ns, "link", "set", "lan0", "up")
        code = (
            "from letterbox.web.setup.lanaccess import LocalNetworks, on_lan\n"
            "local = LocalNetworks()\n"
            "print([on_lan(a, local) for a in ('2a01:db8:5:6::99', '203.0.113.200',"
            " '2a01:db8:5:7::1', '203.0.114.1', '2001::1')])\n"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[True, True, False, False, False]"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

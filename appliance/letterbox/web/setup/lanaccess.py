"""Who counts as "on the home network" for the setup page.

An explicit allow list, not `ipaddress`'s `is_private`: that is also True for
ranges that are no one's LAN (Teredo 2001::/32, documentation 2001:db8::/32,
benchmarking 198.18.0.0/15, ...), and says nothing about the LAN's own global IPv6
prefix, which most home routers hand out and a phone then prefers. So:

* the fixed ranges below: loopback (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3), RFC 1918
  private IPv4, IPv4 link-local (RFC 3927), IPv6 unique local (RFC 4193) and
  link-local (RFC 4291 §2.5.6). Carrier-grade NAT space (100.64.0.0/10, RFC 6598)
  is deliberately absent: it is the provider's network, shared with strangers;
* plus every prefix the box itself is on (its interfaces' address and prefix
  length, read with ifaddr), IPv4 and IPv6: a client in the same on-link prefix
  is on the same network segment, whatever kind of address it has;
* an IPv4-mapped IPv6 address (::ffff:a.b.c.d, RFC 4291 §2.5.5.2, what a
  dual-stack socket reports) counts as the IPv4 address it carries.

Interface addresses change (DHCP, router advertisements), so they are re-read
when the cached list is older than `CACHE_SECONDS`; one getifaddrs() call.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

import ifaddr

log = logging.getLogger("letterbox.web.setup")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FIXED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
CACHE_SECONDS = 5.0
# An interface prefix broader than this is not a LAN segment but a misconfiguration
# (or a tunnel claiming the world); it is ignored rather than opening the page to it.
MIN_PREFIX = {4: 16, 6: 48}


def parse(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address with any zone (`%eth0`) dropped and IPv4-mapped unwrapped."""
    try:
        ip = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def adapter_networks(adapters: Iterable[ifaddr.Adapter]) -> list[Network]:
    """The on-link prefixes of these interfaces (each address with its prefix length)."""
    out: set[Network] = set()
    for adapter in adapters:
        for ip in adapter.ips:
            text = ip.ip[0] if isinstance(ip.ip, tuple) else str(ip.ip)
            try:
                net = ipaddress.ip_network(f"{text.split('%', 1)[0]}/{ip.network_prefix}", False)
            except ValueError:
                continue
            if net.prefixlen < MIN_PREFIX[net.version]:
                log.debug("setup page: ignoring the broad interface prefix %s", net)
                continue
            out.add(net)
    return sorted(out, key=lambda n: (n.version, n))


class LocalNetworks:
    """The box's own on-link prefixes, re-read every `ttl` seconds."""

    def __init__(
        self,
        read: Callable[[], Iterable[ifaddr.Adapter]] = ifaddr.get_adapters,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._networks: list[Network] = []
        self._read_at: float | None = None

    def networks(self) -> list[Network]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._ttl:
            try:
                self._networks = adapter_networks(self._read())
            except OSError as exc:  # keep the last list: the fixed ranges still work
                log.warning("setup page: cannot read the interface addresses (%s)", exc)
            self._read_at = now
        return self._networks


def on_lan(remote: str | None, local: LocalNetworks | None = None) -> bool:
    """Whether `remote` may use the setup page (see the module docstring)."""
    ip = parse(remote)
    if ip is None:
        return False
    if any(ip in net for net in FIXED if net.version == ip.version):
        return True
    if local is None:
        return False
    return any(ip in net for net in local.networks() if net.version == ip.version)

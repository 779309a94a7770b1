"""Announcing the box on the LAN: `letterbox.local` and its services over mDNS.

Households find the box as `http://letterbox.local` and mail clients find its
ports by DNS-SD (RFC 6762 multicast DNS, RFC 6763 service discovery). This runs
python-zeroconf's async API on the appliance's own event loop: no second process
and no avahi-daemon to configure on the image.

- **Host name.** NAME.local (`[mdns] name`, default "letterbox") with the box's LAN
  addresses: loopback never (nobody on the LAN can use it), IPv6 link-local neither
  (useless without a scope id in an A/AAAA answer).
- **Services.** One per listener that is really bound to a LAN-reachable address,
  with the port it got: `_http._tcp` (TXT `path=/`, RFC 6763 §6 and the DNS-SD
  TXT key registry), `_smtp._tcp`, `_submission._tcp`, `_pop3._tcp`, `_pop3s._tcp`.
- **Conflicts** (RFC 6762 §8 probing, §9 resolution by renaming). Before claiming a
  name the box asks whether anyone answers for NAME.local; zeroconf's probe of each
  service instance raises NonUniqueNameException when its name is taken. Either way
  the box moves on to NAME-2, NAME-3, ... (`allow_name_change` would rename the
  service instances only, leaving the host name clashing, so the renaming is done
  here for host and instances together). The name in use is `Announcer.name`,
  shown by `letterbox status`.
- **Address changes.** The interfaces are polled with ifaddr every POLL seconds;
  on a change the sockets follow (`async_update_interfaces`) and every service is
  re-announced with the new addresses (RFC 6762 §8.4). Polling because it needs
  no netlink code or privileges, costs one getifaddrs() call, and a few seconds'
  delay after a DHCP change is harmless for a box that stays put.
- **Goodbye.** `stop()` sends goodbye packets (TTL 0, RFC 6762 §10.1) so browsers
  drop the box at once rather than when the records expire.

docs/findings.md, "zeroconf": `lo` has no MULTICAST flag and the default interface choice would
send mDNS out of the machine's uplink, so the tests run this only inside network
namespaces they create (tests/lan/).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import ifaddr
from zeroconf import AddressResolver, IPVersion, NonUniqueNameException, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

log = logging.getLogger("letterbox.mdns")

POLL = 5.0  # seconds between interface scans
HOST_CHECK_MS = 1000  # how long to wait for an answer for NAME.local before claiming it
MAX_SUFFIX = 50  # NAME-2 … NAME-50, then give up (something is badly wrong on that LAN)

# A DNS label (RFC 1035 §2.3.1, digits allowed first per RFC 1123 §2.1), short enough
# to take a "-NN" suffix within 63 octets.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?$")

# Listener name → DNS-SD service type (RFC 6763 §7; IANA service names).
SERVICE_TYPES = {
    "web": "_http._tcp.local.",
    "smtp": "_smtp._tcp.local.",
    "submission": "_submission._tcp.local.",
    "pop3": "_pop3._tcp.local.",
    "pop3s": "_pop3s._tcp.local.",
}
TXT = {"web": {"path": "/"}}


class MdnsError(ValueError):
    """A setting the announcer cannot use."""


def check_name(name: str) -> str:
    """The configured host name as a lower-case DNS label, or MdnsError saying why not."""
    label = name.strip().lower().removesuffix(".local")
    if not _LABEL.match(label):
        raise MdnsError(
            f"mdns.name {name!r} is not a usable host name: letters, digits and '-', "
            "at most 60 characters, not starting or ending with '-'"
        )
    return label


@dataclass(frozen=True)
class Service:
    listener: str  # "smtp", "web", ... (a key of SERVICE_TYPES)
    port: int


def lan_addresses(interfaces: Iterable[str] = ()) -> list[str]:
    """The addresses to announce, IPv4 first, in a stable order.

    `interfaces` limits them to those interface names; empty means all. Loopback and
    IPv6 link-local are never announced (see the module docstring).
    """
    wanted = set(interfaces)
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for adapter in ifaddr.get_adapters():
        if wanted and adapter.nice_name not in wanted:
            continue
        for ip in adapter.ips:
            if ip.is_IPv4:
                a4 = ipaddress.IPv4Address(str(ip.ip))
                if not a4.is_loopback and not a4.is_unspecified:
                    v4.add(a4)
            else:
                text = ip.ip[0] if isinstance(ip.ip, tuple) else str(ip.ip)
                a6 = ipaddress.IPv6Address(text.split("%")[0])
                if not (a6.is_loopback or a6.is_link_local or a6.is_unspecified):
                    v6.add(a6)
    return [str(a) for a in sorted(v4)] + [str(a) for a in sorted(v6)]


class Announcer:
    """Owns one AsyncZeroconf on the running loop and the box's records in it."""

    def __init__(
        self,
        name: str,
        services: list[Service],
        *,
        interfaces: Iterable[str] = (),
        poll: float = POLL,
    ) -> None:
        self.base = check_name(name)
        self.services = [s for s in services if s.listener in SERVICE_TYPES]
        self.interfaces = list(interfaces)
        self.poll = poll
        self.name: str | None = None  # e.g. "letterbox-2.local." once claimed
        self.addresses: list[str] = []
        self._zc: AsyncZeroconf | None = None
        self._infos: list[ServiceInfo] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def service_names(self) -> list[str]:
        return [info.name for info in self._infos]

    # -- starting and stopping ------------------------------------------------------

    async def start(self) -> None:
        """Claim a name and announce, or (no LAN address yet) wait for one; either way
        the interface watch keeps going until `stop()`."""
        self.addresses = await asyncio.to_thread(lan_addresses, self.interfaces)
        if self.addresses:
            await self._announce()
        else:
            log.warning("mDNS: no LAN address yet; announcing once one appears")
        self._watch = asyncio.create_task(self._watch_addresses(), name="mdns-watch")

    async def stop(self) -> None:
        """Goodbye packets for every record, then close the sockets."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        zc, self._zc = self._zc, None
        if zc is not None:
            try:
                await zc.async_unregister_all_services()  # the goodbyes (TTL 0)
            finally:
                await zc.async_close()
            log.info("mDNS: said goodbye as %s", self.name)
        self._infos = []

    # -- the name -----------------------------------------------------------------------

    def _v4(self) -> list[str]:
        return [a for a in self.addresses if ":" not in a]

    async def _announce(self) -> None:
        v4 = self._v4()
        if not v4:
            log.warning("mDNS: only IPv6 addresses; waiting for an IPv4 one to send from")
            return
        # IPv4 multicast on the LAN's own addresses: never loopback (no MULTICAST
        # there) and never an interface the settings left out.
        self._zc = AsyncZeroconf(interfaces=v4, ip_version=IPVersion.V4Only)
        for n in range(1, MAX_SUFFIX + 1):
            label = self.base if n == 1 else f"{self.base}-{n}"
            host = f"{label}.local."
            if await self._host_taken(host):
                log.info("mDNS: %s is taken on this network; trying the next name", host)
                continue
            infos = [self._info(label, s) for s in self.services]
            if await self._register(infos):
                self.name = host
                self._infos = infos
                log.info(
                    "mDNS: announcing %s (%s) with %s",
                    host.rstrip("."),
                    ", ".join(self.addresses),
                    ", ".join(f"{s.listener} {s.port}" for s in self.services) or "no services",
                )
                return
            log.info("mDNS: a service named %s exists already; trying the next name", label)
        log.error("mDNS: every name from %s to %s-%d is taken", self.base, self.base, MAX_SUFFIX)

    async def _host_taken(self, host: str) -> bool:
        """Whether another responder answers for `host` (our own records come later)."""
        assert self._zc is not None
        resolver = AddressResolver(host)
        return bool(await resolver.async_request(self._zc.zeroconf, HOST_CHECK_MS))

    async def _register(self, infos: list[ServiceInfo]) -> bool:
        """Probe and register every service under one name; all or none."""
        assert self._zc is not None
        results = await asyncio.gather(
            *(self._zc.async_register_service(i, allow_name_change=False) for i in infos),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            await asyncio.gather(*results)  # type: ignore[arg-type]  # announcements sent
            return True
        for info, result in zip(infos, results, strict=True):
            if not isinstance(result, BaseException):
                await result
                await (await self._zc.async_unregister_service(info))
        for exc in failed:
            if not isinstance(exc, NonUniqueNameException):
                raise exc
        return False

    def _info(self, label: str, service: Service) -> ServiceInfo:
        kind = SERVICE_TYPES[service.listener]
        return ServiceInfo(
            kind,
            f"{label}.{kind}",
            port=service.port,
            properties=TXT.get(service.listener, {}),
            server=f"{label}.local.",
            addresses=[socket.inet_pton(_family(a), a) for a in self.addresses],
        )

    # -- following address changes -------------------------------------------------------

    async def _watch_addresses(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                now = await asyncio.to_thread(lan_addresses, self.interfaces)
                if now != self.addresses:
                    await self._addresses_changed(now)
            except Exception:  # keep watching: the LAN matters more than one bad scan
                log.exception("mDNS: could not follow an address change")

    async def _addresses_changed(self, now: list[str]) -> None:
        log.info("mDNS: addresses changed from %s to %s", self.addresses or "none", now or "none")
        self.addresses = now
        if not now:
            return  # nothing to send from; the records expire on their own
        if self._zc is None or self.name is None:
            if self._zc is not None:
                await self._zc.async_close()
                self._zc = None
            await self._announce()
            return
        await self._zc.async_update_interfaces(self._v4())
        label = self.name.removesuffix(".local.")
        self._infos = [self._info(label, s) for s in self.services]
        for info in self._infos:
            await (await self._zc.async_update_service(info))


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET

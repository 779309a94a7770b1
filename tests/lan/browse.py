"""A DNS-SD browser in its own process, for the mDNS tests: `python -m tests.lan.browse ADDRESS`.

Runs (inside the test's network namespace) until killed, bound to ADDRESS, and prints
one JSON line per event: services added, updated (resolved again) or removed, with
host, addresses, port and TXT as another machine on the LAN would see them.
"""

from __future__ import annotations

import json
import queue
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

TYPES = [
    "_http._tcp.local.",
    "_smtp._tcp.local.",
    "_submission._tcp.local.",
    "_pop3._tcp.local.",
    "_pop3s._tcp.local.",
]


def main() -> None:
    zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    events: queue.Queue[tuple[str, str, str]] = queue.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        events.put((state_change.name.lower(), service_type, name))

    ServiceBrowser(zc, TYPES, handlers=[on_change])
    print(json.dumps({"event": "started"}), flush=True)
    while True:
        kind, service_type, name = events.get()
        out: dict[str, object] = {"event": kind, "type": service_type, "name": name}
        if kind != "removed":
            info = zc.get_service_info(service_type, name, timeout=3000)
            if info is not None:
                out.update(
                    server=info.server,
                    addresses=sorted(info.parsed_addresses()),
                    port=info.port,
                    txt={k.decode(): (v or b"").decode() for k, v in info.properties.items()},
                )
        out["at"] = time.monotonic()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

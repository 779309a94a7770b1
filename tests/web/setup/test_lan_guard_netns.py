"""The setup page's LAN rule against real sockets from a non-LAN address.

Two network namespaces joined by a veth pair: the box (`letterbox run --dev`,
listening on all addresses) on 198.51.100.1/24 (IPv4) or 2001:db8:b::1/64
(IPv6), and a client namespace routed to it that has an address outside every
LAN range (203.0.113.7, 2001:db8:c::7) and one inside the box's own on-link
prefix (.9, ::9). The client's requests come from real sockets bound to each
address, so the guard reads the peer address the kernel reports, not a mocked
request. Both namespaces (and with them the veth pair) are deleted afterwards.

The refused request carries `%0d%0a` and `%00` in its path: its access-log line
must stay one line, escaped (letterbox.logsafe).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PORT = 8080  # inside the box's own namespace: nothing else there
_counter = itertools.count(1)


@dataclass
class Net:
    box: str  # namespace names
    client: str
    box_addr: str
    outside: str  # the client's address outside every LAN range
    neighbour: str  # the client's address inside the box's on-link prefix


FAMILIES = {
    # box address/prefix, client outside, client neighbour, the outside prefix
    "ipv4": ("198.51.100.1/24", "203.0.113.7", "198.51.100.9", "203.0.113.0/24", "24"),
    "ipv6": ("2001:db8:b::1/64", "2001:db8:c::7", "2001:db8:b::9", "2001:db8:c::/64", "64"),
}


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture(params=sorted(FAMILIES))
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make network namespaces (ip netns)")
    box_net, outside, neighbour, outside_net, plen = FAMILIES[request.param]
    box_addr = box_net.split("/")[0]
    n = next(_counter)
    tag = f"{os.getpid() % 100000}w{n}"
    box, client = f"lbx{tag}b", f"lbx{tag}c"
    dev_b, dev_c = f"v{tag}b", f"v{tag}c"
    nodad = ["nodad"] if request.param == "ipv6" else []
    made: list[str] = []
    try:
        for ns in (box, client):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", dev_b, "type", "veth", "peer", "name", dev_c)
        ip("link", "set", dev_b, "netns", box)
        ip("link", "set", dev_c, "netns", client)
        ip("-n", box, "addr", "add", box_net, "dev", dev_b, *nodad)
        ip("-n", client, "addr", "add", f"{outside}/{plen}", "dev", dev_c, *nodad)
        ip("-n", client, "addr", "add", f"{neighbour}/{plen}", "dev", dev_c, *nodad)
        for ns, dev in ((box, dev_b), (client, dev_c)):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", box, "route", "add", outside_net, "dev", dev_b)  # routed, not on-link
        yield Net(box, client, box_addr, outside, neighbour)
    finally:
        for ns in made:  # deleting a namespace takes its end of the veth pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


class Box:
    """`letterbox run --dev` inside the box's namespace, listening on every address."""

    def __init__(self, ns: str, tmp: Path, listen: str, *, allow_remote: bool = False) -> None:
        config = tmp / "letterbox.toml"
        config.write_text(
            "[crypto]\nargon2_opslimit = 1\nargon2_memlimit = 8192\n"
            f'[web]\nlisten_address = "{listen}"\nport = {PORT}\n'
            f"allow_remote = {'true' if allow_remote else 'false'}\n"
        )
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, sys.executable, "-m", "letterbox.cli"),
                *("--data", str(tmp / "data"), "--config", str(config), "run", "--dev"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 60
        while b"Stop with Ctrl-C." not in out:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"letterbox run did not start: {out!r}")
            out += line

    def stop(self) -> bytes:
        """Stop the box; its whole log (stderr), as bytes: NULs would show there."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# Runs in the client namespace: one raw HTTP request per (source address, path),
# from a socket bound to that address; prints the status lines and bodies as JSON.
CLIENT = r"""
import json, socket, sys
server, port, requests = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out = []
for source, path in requests:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.bind((source, 0))
        s.connect((server, port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: letterbox.local\r\n".encode())
        s.sendall(b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    out.append([head.split(b"\r\n")[0].decode(), head.decode(), body.decode()])
print(json.dumps(out))
"""


def get(net: Net, *requests: tuple[str, str]) -> list[list[str]]:
    """(source address, path) requests from the client namespace: [status line,
    head, body] each."""
    done = subprocess.run(
        [
            *("ip", "netns", "exec", net.client, sys.executable, "-c", CLIENT),
            *(net.box_addr, str(PORT), json.dumps(requests)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def listen_all(net: Net) -> str:
    return "::" if ":" in net.box_addr else "0.0.0.0"


def test_a_real_client_outside_the_lan_gets_403_and_a_neighbour_gets_in(
    net: Net, tmp_path: Path
) -> None:
    box = Box(net.box, tmp_path, listen_all(net))
    try:
        forged = "/status%0d%0a2026-12-04 12:00:00 INFO letterbox: forged%00".replace(" ", "%20")
        outside, neighbour = get(net, (net.outside, forged), (net.neighbour, "/status"))
    finally:
        log = box.stop() if box.proc.poll() is None else b""
        box.kill()
    assert outside[0] == "HTTP/1.1 403 Forbidden", outside
    assert "only devices on the home network" in outside[2]
    # A neighbour on the box's own on-link prefix is let through, to the claim gate.
    assert neighbour[0] == "HTTP/1.1 303 See Other", neighbour
    assert "Location: /claim" in neighbour[1]
    # The refused request's access-log line: one line, CR, LF and NUL escaped.
    assert b"\x00" not in log
    text = log.decode()
    refused = [line for line in text.splitlines() if " 403 " in line]
    assert len(refused) == 1, text
    assert (
        '"GET /status\\r\\n2026-12-04 12:00:00 INFO letterbox: forged\\x00 HTTP/1.1" 403'
        in refused[0]
    )
    assert not any(
        line.startswith("2026-12-04 12:00:00 INFO letterbox: forged") for line in text.splitlines()
    )
    assert net.outside not in text  # addresses are logged only in debug mode


def test_allow_remote_lets_the_outside_client_in(net: Net, tmp_path: Path) -> None:
    """`web.allow_remote = true` (a household that forwards the port has decided so)."""
    box = Box(net.box, tmp_path, listen_all(net), allow_remote=True)
    try:
        (outside,) = get(net, (net.outside, "/status"))
    finally:
        box.stop()
        box.kill()
    assert outside[0] == "HTTP/1.1 303 See Other", outside
    assert "Location: /claim" in outside[1]  # let through, to the claim gate

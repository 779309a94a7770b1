"""mDNS, for real, but never on this machine's own interfaces (docs/findings.md, "zeroconf").

Each test makes two network namespaces joined by a veth pair (a two-machine LAN:
10.213.N.1 and 10.213.N.2), runs the box with `ip netns exec` in one and a
python-zeroconf browser as another process in the other, and deletes both
namespaces afterwards, whatever happened.

avahi-browse is not used: running avahi-daemon here would mean installing and
starting a system daemon (its package starts it on the host's interfaces), which
these tests must not do.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from letterbox import control
from letterbox.lan.mdns import MdnsError, check_name, lan_addresses

ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count(1)


@dataclass
class Lan:
    a: str  # namespace names
    b: str
    addr_a: str
    addr_b: str
    dev_a: str
    prefix: str  # "10.213.N"


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.fail("the mDNS tests need root to make network namespaces (ip netns)")
    n = next(_counter)
    tag = f"{os.getpid() % 100000}x{n}"
    a, b = f"lbx{tag}a", f"lbx{tag}b"
    prefix = f"10.213.{(os.getpid() + n) % 250 + 1}"
    made: list[str] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b")
        for ns, side, host in ((a, "a", 1), (b, "b", 2)):
            ip("link", "set", f"v{tag}{side}", "netns", ns)
            ip("-n", ns, "addr", "add", f"{prefix}.{host}/24", "dev", f"v{tag}{side}")
            ip("-n", ns, "link", "set", f"v{tag}{side}", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield Lan(a, b, f"{prefix}.1", f"{prefix}.2", f"v{tag}a", prefix)
    finally:
        for ns in made:  # deleting a namespace takes its end of the veth pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


class Proc:
    """A process inside a namespace whose stdout lines we collect as they come."""

    def __init__(self, ns: str, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "appliance")])}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def wait_line(self, predicate: Any, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; stderr: {''.join(self.err)[-3000:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if predicate(line):
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


class Browser(Proc):
    def __init__(self, ns: str, address: str) -> None:
        super().__init__(ns, [sys.executable, "-m", "tests.lan.browse", address])
        self.wait_line(lambda line: '"started"' in line)
        self.seen: list[dict[str, Any]] = []

    def wait_event(self, timeout: float = 20, **match: Any) -> dict[str, Any]:
        def fits(line: str) -> bool:
            event = json.loads(line)
            self.seen.append(event)
            return all(event.get(k) == v for k, v in match.items())

        return json.loads(self.wait_line(fits, timeout))

    def resolved(self, name: str, timeout: float = 20) -> dict[str, Any]:
        """The newest resolution of `name` (from events seen so far, or the next one)."""
        for event in reversed(self.seen):
            if event["name"] == name and "port" in event:
                return event
        return self.wait_event(timeout, name=name, event="added")


def start_box(ns: str, tmp: Path, label: str) -> tuple[Proc, Path]:
    data = tmp / label
    config = tmp / f"{label}.toml"
    config.write_text(
        "[crypto]\nargon2_opslimit = 1\nargon2_memlimit = 8192\n"
        '[smtp]\nlisten_address = "0.0.0.0"\nport = 2525\nshutdown_grace = 2\n'
        '[pop3]\nlisten_address = "0.0.0.0"\nport = 1110\ntls_port = 1995\n'
        '[web]\nlisten_address = "0.0.0.0"\nport = 8080\n'
        "[mdns]\nannounce_in_dev = true\n"
    )
    argv = [sys.executable, "-m", "letterbox.cli", "--data", str(data), "--config", str(config)]
    box = Proc(ns, [*argv, "run", "--dev"])
    box.wait_line(lambda line: "Stop with Ctrl-C." in line, timeout=30)
    return box, data


def test_names_must_be_dns_labels() -> None:
    assert check_name("Letterbox") == "letterbox"
    assert check_name("mail-box2.local") == "mail-box2"
    for bad in ("", "-box", "box-", "two words", "box.example", "é", "x" * 61):
        with pytest.raises(MdnsError):
            check_name(bad)


def test_loopback_is_never_announced() -> None:
    # Reads this machine's interface list only; nothing is sent anywhere.
    assert not any(a.startswith("127.") or a == "::1" for a in lan_addresses())
    assert lan_addresses(["lo"]) == []


@pytest.mark.slow
def test_services_resolve_from_another_machine_and_a_second_box_is_renamed(
    lan: Lan, tmp_path: Path
) -> None:
    browser = Browser(lan.b, lan.addr_b)
    box_a = box_b = None
    try:
        box_a, data_a = start_box(lan.a, tmp_path, "a")
        ports = {"_http._tcp": 8080, "_smtp._tcp": 2525, "_pop3._tcp": 1110, "_pop3s._tcp": 1995}
        for kind, port in ports.items():
            name = f"letterbox.{kind}.local."
            info = browser.resolved(name)
            assert info["server"] == "letterbox.local."
            assert info["addresses"] == [lan.addr_a]
            assert info["port"] == port
            assert info["txt"] == ({"path": "/"} if kind == "_http._tcp" else {})
        snap = control.call(data_a, "status")
        assert snap["mdns"]["name"] == "letterbox.local."
        assert sorted(snap["mdns"]["services"]) == sorted(f"letterbox.{k}.local." for k in ports)

        # A second box with the same name on the same LAN takes the next one.
        box_b, data_b = start_box(lan.b, tmp_path, "b")
        assert "LAN name letterbox-2.local (mDNS)" in "".join(box_b.out)  # the banner
        assert control.call(data_b, "status")["mdns"]["name"] == "letterbox-2.local."
        info = browser.resolved("letterbox-2._smtp._tcp.local.")
        assert (info["server"], info["addresses"], info["port"]) == (
            "letterbox-2.local.",
            [lan.addr_b],
            2525,
        )
        # The first box kept its name and address.
        assert browser.resolved("letterbox._smtp._tcp.local.")["addresses"] == [lan.addr_a]

        # A new address on the first box is announced (interfaces are polled every 5 s).
        extra = f"{lan.prefix}.11"
        ip("-n", lan.a, "addr", "add", f"{extra}/24", "dev", lan.dev_a)
        changed = time.monotonic()
        while True:
            event = browser.wait_event(timeout=20, name="letterbox._http._tcp.local.")
            if sorted(event.get("addresses", [])) == sorted([lan.addr_a, extra]):
                break
        assert time.monotonic() - changed < 15

        # Goodbye: stopping the first box removes its services from the browser at
        # once, not when their records would have expired (75 minutes for SRV).
        assert box_a.stop() == 0
        stopped = time.monotonic()
        browser.wait_event(timeout=10, name="letterbox._http._tcp.local.", event="removed")
        assert time.monotonic() - stopped < 5
        assert box_b.stop() == 0
    finally:
        for proc in (box_a, box_b, browser):
            if proc is not None:
                proc.stop()

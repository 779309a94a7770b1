"""`letterbox bridge` end to end: a real box, a real bridge process, Python's poplib.

The bridge is the box's own POP3 state machine over a maildrop that reads the drive
API and decrypts on the person's side; the mail client sees ordinary POP3 on
127.0.0.1 and logs in with the mailbox address and the key file's passphrase.
"""

from __future__ import annotations

import poplib
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from letterbox import crypto
from letterbox.e2e import verify
from nacl.signing import SigningKey

from tests.e2e.conftest import PASSPHRASE, ROOT, E2EBox
from tests.integration.harness import free_port
from tests.smtp.conftest import strip_received


class BridgeProc:
    """One `letterbox bridge --port 0` process."""

    def __init__(self, key: Path, url: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "letterbox.cli",
                "bridge",
                "--key",
                str(key),
                "--server",
                url,
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.out = ""
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while "Stop with Ctrl-C." not in self.out:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"letterbox bridge exited: {self.stderr()}")
            self.out += line
            assert time.monotonic() < deadline, self.out
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.out)
        assert m, self.out
        self.port = int(m.group(1))

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def stderr(self) -> str:
        return "".join(self._err)

    def pop(self, user: str, password: str = PASSPHRASE) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.port, timeout=60)
        client.user(user)
        client.pass_(password)
        return client

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


@pytest.fixture
def bridge_for(e2e_box: E2EBox) -> Iterator[object]:
    started: list[BridgeProc] = []

    def start(address: str, url: str | None = None) -> BridgeProc:
        b = BridgeProc(e2e_box.keys[address], url or e2e_box.url)
        started.append(b)
        return b

    yield start
    for b in started:
        if b.proc.poll() is None:
            assert b.stop() == 0, b.stderr()
        assert "Traceback" not in b.stderr(), b.stderr()


def _login_when_free(bridge: BridgeProc, address: str) -> poplib.POP3:
    """The bridge notices a dropped connection at once, but asynchronously."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return bridge.pop(address)
        except poplib.error_proto as exc:
            if b"[IN-USE]" not in exc.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def message(tag: str, n: int, size: int) -> bytes:
    head = (
        f"From: sender@example.net\r\nTo: someone@example.org\r\nSubject: {tag} {n}\r\n\r\n"
    ).encode()
    # Lines starting with "." must come back un-stuffed, byte for byte.
    line = f".{tag} line {n} ".encode().ljust(70, b"-") + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def retr(client: poplib.POP3, n: int) -> bytes:
    _, lines, _ = client.retr(n)
    return b"\r\n".join(lines) + b"\r\n"


def test_bridge_serves_pop3_byte_identical_and_dele_quit_acknowledges(
    e2e_box: E2EBox, bridge_for: object
) -> None:
    address = "bridge@example.org"
    sent = [message("bridge", n, size) for n, size in enumerate((200, 70_000, 300_000))]
    e2e_box.send(address, sent)
    listed = e2e_box.remote(address)
    bridge = bridge_for(address)  # type: ignore[operator]
    assert f"user      {address}" in bridge.out

    pop = bridge.pop(address)
    count, octets = pop.stat()
    assert count == 3
    _, sizes, _ = pop.list()
    sizes = [int(line.split()[1]) for line in sizes]
    _, uidls, _ = pop.uidl()
    assert [line.split()[1].decode() for line in uidls] == [e.id for e in listed]
    got = [retr(pop, n) for n in (1, 2, 3)]
    assert [strip_received(m) for m in got] == sent
    assert [len(m) for m in got] == sizes and sum(sizes) == octets
    _, top, _ = pop.top(2, 0)
    assert b"Subject: bridge 1" in top and not any(b"line 1" in x for x in top)
    pop.dele(1)
    pop.dele(3)
    pop.quit()  # UPDATE: acknowledged on the box, all or nothing
    assert [e.id for e in e2e_box.remote(address)] == [listed[1].id]

    # DELE without QUIT deletes nothing.
    pop = bridge.pop(address)
    assert pop.stat()[0] == 1
    assert strip_received(retr(pop, 1)) == sent[1]
    pop.dele(1)
    pop.close()  # the connection ends without QUIT
    assert [e.id for e in e2e_box.remote(address)] == [listed[1].id]
    pop = _login_when_free(bridge, address)
    pop.dele(1)
    pop.quit()
    assert e2e_box.remote(address) == []


def test_bridge_logins_wrong_passphrase_wrong_user_and_in_use(
    e2e_box: E2EBox, bridge_for: object
) -> None:
    address = "bridge2@example.org"
    bridge = bridge_for(address)  # type: ignore[operator]
    for user, password in ((address, "not the passphrase"), ("other@example.org", PASSPHRASE)):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            bridge.pop(user, password)
    first = bridge.pop(address.upper())  # addresses are matched as normalised
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        bridge.pop(address)
    first.quit()
    bridge.pop(address).quit()  # free again after QUIT


def test_bridge_refuses_a_tampered_blob_and_hides_forged_metadata(
    e2e_box: E2EBox, bridge_for: object
) -> None:
    address = "bridge3@example.org"
    sent = [message("refuse", n, 5000) for n in range(3)]
    e2e_box.send(address, sent)
    listed = e2e_box.remote(address)
    tampered, forged = listed[1], listed[2]
    blob = e2e_box.drive_dir / "blobs" / tampered.blob_id[:2] / tampered.blob_id
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x80
    blob.write_bytes(bytes(data))
    key, _, box_key = verify.unlock_key_file(e2e_box.keys[address], PASSPHRASE)
    meta = crypto.open_meta(forged.meta, key.secret, [box_key])
    resealed = crypto.seal_meta(meta, SigningKey.generate(), bytes(key.secret.public_key))
    with sqlite3.connect(e2e_box.drive_dir / "index.sqlite3", timeout=30) as index:
        index.execute("UPDATE deliveries SET meta = ? WHERE id = ?", (resealed, forged.id))
    index.close()

    bridge = bridge_for(address)  # type: ignore[operator]
    pop = bridge.pop(address)
    _, uidls, _ = pop.uidl()
    assert [line.split()[1].decode() for line in uidls] == [listed[0].id, tampered.id]
    assert strip_received(retr(pop, 1)) == sent[0]
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\]"):
        pop.retr(2)
    pop.dele(1)
    pop.quit()
    err = bridge.stderr()
    assert f"REFUSED message {forged.id}: metadata signature does not verify" in err
    assert f"REFUSED message {tampered.id}: the ciphertext hash does not match" in err
    # Only the good message was acknowledged; the refused ones wait on the box.
    assert [e.id for e in e2e_box.remote(address)] == [tampered.id, forged.id]


def test_bridge_without_its_box_says_try_later(e2e_box: E2EBox, bridge_for: object) -> None:
    bridge = bridge_for("bridge2@example.org", f"http://127.0.0.1:{free_port()}")  # type: ignore[operator]
    # stderr is pumped by a thread: the warning may land just after the announcement.
    deadline = time.monotonic() + 10
    while "serving anyway" not in bridge.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "cannot reach the box" in bridge.stderr() or "serving anyway" in bridge.stderr()
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        bridge.pop("bridge2@example.org")

"""SIGKILL of the whole box while it takes mail: nothing acknowledged is ever lost.

`letterbox run --dev` runs as a real process and takes SMTP load from several
clients at once, with bodies of every size the drive treats differently (small
ones staged in memory, those over 128 KiB spilled to a file on the drive). At a
moment drawn from a seeded generator it is killed with SIGKILL (no shutdown, no
flush, no cleanup) and started again, for a fixed number of rounds. At the end
every message the box answered 250 for must be served by POP3 byte-identical,
nothing it stored may be a message nobody sent (half-written, or mixed up), and
`letterbox drive check` must find the drive clean.

The killing moments are seeded, so a failing run names its seed; where in its
work the box was at each one is still down to the scheduler, which is the point.
"""

from __future__ import annotations

import itertools
import poplib
import random
import smtplib
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import letterbox_cli, message
from tests.integration.harness import SAMPLE, Run, write_config
from tests.smtp.conftest import strip_received

SEED = 5321
ROUNDS = 12
CLIENTS = 4
# Sizes on both sides of the drive's 128 KiB spill threshold.
SIZES = (300, 2_000, 20_000, 100_000, 140_000, 400_000)


class Load:
    """CLIENTS threads sending mail until told to stop; they remember what got a 250."""

    def __init__(self, port: int, rng: random.Random, numbers: itertools.count[int]) -> None:
        self.port = port
        self.rng = random.Random(rng.random())
        self.numbers = numbers
        self.lock = threading.Lock()
        self.sent: dict[int, bytes] = {}  # every message a client began to send
        self.acked: dict[int, bytes] = {}  # those the box answered 250 for
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _next(self) -> tuple[int, bytes]:
        with self.lock:
            n = next(self.numbers)
            size = self.rng.choice(SIZES)
        body = message(n, size)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"  # what smtplib sends (and the box stores) ends with CRLF
        with self.lock:
            self.sent[n] = body
        return n, body

    def _client(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                        for _ in range(5):
                            n, body = self._next()
                            client.sendmail("me@example.org", [SAMPLE], body)
                            with self.lock:
                                self.acked[n] = body
                except (smtplib.SMTPException, OSError):
                    # Killed under us (or refused while starting): not acknowledged.
                    time.sleep(0.02)
        except BaseException as exc:  # judged in the test's thread
            self.errors.append(exc)


def pop3_messages(run: Run, password: str) -> list[bytes]:
    p = poplib.POP3("127.0.0.1", run.pop3_port, timeout=60)
    try:
        p.user(SAMPLE)
        p.pass_(password)
        count, _ = p.stat()
        return [b"".join(line + b"\r\n" for line in p.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        p.quit()


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path):
    rng = random.Random(SEED)
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    numbers = itertools.count(1)
    sent: dict[int, bytes] = {}
    acked: dict[int, bytes] = {}
    password = ""
    logs: list[str] = []
    for round_ in range(ROUNDS):
        run = Run(data, config)
        password = password or run.password()
        pause = rng.uniform(0.3, 2.5)
        with Load(run.port, rng, numbers) as load:
            time.sleep(pause)
            run.proc.kill()  # SIGKILL: no shutdown of any kind
            run.proc.wait(30)
        assert not load.errors, load.errors
        sent.update(load.sent)
        acked.update(load.acked)
        logs.append(run.stderr())
        print(f"round {round_}: killed after {pause:.2f} s, {len(load.acked)} acknowledged")

    run = Run(data, config)
    try:
        served = pop3_messages(run, password)
        assert run.stop() == 0
    finally:
        run.kill()
    logs.append(run.stderr())

    big = sum(1 for m in acked.values() if len(m) > 128 * 1024)
    print(
        f"{len(acked)} acknowledged ({big} over 128 KiB) of {len(sent)} begun; {len(served)} served"
    )
    assert len(acked) >= ROUNDS * 2 and big > 0, "the load never got going"
    stored = [strip_received(m) for m in served]
    by_content = set(stored)
    missing = [n for n, body in acked.items() if body not in by_content]
    assert not missing, f"acknowledged but not served: {missing[:20]} (seed {SEED})"
    begun = set(sent.values())
    strangers = [m[:200] for m in stored if m not in begun]
    assert not strangers, f"served messages nobody sent whole: {strangers[:3]}"
    assert len(stored) == len(by_content), "a message was stored twice"
    for log in logs:
        assert "Traceback" not in log, log

    check = letterbox_cli(data, "drive", "check", config=config)
    assert check.returncode == 0, check.stdout + check.stderr

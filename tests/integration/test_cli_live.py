"""The drive verbs of the CLI next to a running box (ISSUE-10 §1).

While `letterbox run` takes mail, `mailbox list`, `drive stats`, `mailbox passwd`,
`mailbox recovery-reset` and `drive check` used to open the drive themselves, take
the box's OPEN marker for a crash and run recovery over its live temporaries and
staged blobs: acknowledged mail was deleted, and on close they removed the box's
OPEN marker. Now they ask the box over its control socket, and the drive's LOCK
keeps any other opener out.
"""

from __future__ import annotations

import poplib
import random
import re
import smtplib
import threading
import time
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.crypto import Argon2Limits
from letterbox.drive import Drive, MessageDamaged

from tests.helpers import letterbox_cli as cli
from tests.integration.harness import SAMPLE, Run, write_config

CODE = re.compile(r"\b([0-9A-Z]{4}(?:-[0-9A-Z]{4}){7})\b")


def pop3_login(run: Run, password: str) -> int:
    """Log in over plaintext POP3 on loopback (--dev) and return the message count."""
    pop = poplib.POP3("127.0.0.1", run.pop3_port, timeout=30)
    try:
        pop.user(SAMPLE)
        pop.pass_(password)
        return pop.stat()[0]
    finally:
        pop.quit()


@pytest.mark.slow
def test_the_drive_verbs_go_through_the_running_box(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    run = Run(data, config)
    marker = data / "drive" / "letterbox" / "OPEN"
    try:
        password = run.password()
        with smtplib.SMTP("127.0.0.1", run.port, timeout=30) as smtp:
            smtp.sendmail("me@example.org", [SAMPLE], b"Subject: hi\r\n\r\nHello.\r\n")

        listing = cli(data, "mailbox", "list", config=config)
        assert listing.returncode == 0, listing.stderr
        assert re.search(
            rf"{re.escape(SAMPLE)}\s+\S+\s+\S+\s+1\s+unlocked at login", listing.stdout
        )
        stats = cli(data, "drive", "stats", config=config)
        assert stats.returncode == 0, stats.stderr
        assert "mailboxes:   1" in stats.stdout and "1 deliveries in 1 blobs" in stats.stdout
        check = cli(data, "drive", "check", config=config)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "checked while the box is running" in check.stdout
        assert "Result: OK" in check.stdout

        wrong = cli(
            data, "mailbox", "passwd", SAMPLE, "--password-stdin", stdin="nope\nx\n", config=config
        )
        assert wrong.returncode == 1 and "wrong password" in wrong.stderr, wrong.stderr
        assert "Traceback" not in wrong.stderr
        changed = cli(
            data,
            "mailbox",
            "passwd",
            SAMPLE,
            "--password-stdin",
            stdin=f"{password}\nsecond password\n",
            config=config,
        )
        assert changed.returncode == 0, changed.stderr
        assert pop3_login(run, "second password") == 1  # the box's own drive changed
        with pytest.raises(poplib.error_proto):
            pop3_login(run, password)

        reset = cli(
            data,
            "mailbox",
            "recovery-reset",
            SAMPLE,
            "--password-stdin",
            stdin="second password\n",
            config=config,
        )
        assert reset.returncode == 0, reset.stderr
        code = CODE.search(reset.stdout)
        assert code, reset.stdout
        recovered = cli(
            data,
            "mailbox",
            "passwd",
            SAMPLE,
            "--recovery-code-stdin",
            "--password-stdin",
            stdin=f"{code.group(1)}\nthird password\n",
            config=config,
        )
        assert recovered.returncode == 0, recovered.stderr
        assert pop3_login(run, "third password") == 1
        # None of that took the box's OPEN marker away: a crash now is still seen.
        assert marker.exists()
    finally:
        assert run.stop() == 0
    assert not marker.exists()
    offline = cli(data, "drive", "check", config=config)
    assert offline.returncode == 0 and "Result: OK" in offline.stdout, offline.stdout


LOAD_SECONDS = 35.0
SENDERS = 4
CLI_LOOPS = 2


def body(ident: str, rng: random.Random) -> bytes:
    """A message whose first line names it; half of them over 128 KiB, so they
    stream through blobs/tmp and are staged as files before the index commit."""
    size = rng.choice([300, 4000, rng.randrange(131_073, 400_000), rng.randrange(140_000, 260_000)])
    line = (rng.randbytes(38).hex() + "\r\n").encode()  # 78 bytes
    head = f"X-Test-Id: {ident}\r\nSubject: load {ident}\r\n\r\n".encode()
    return head + line * (size // len(line))


def without_trace(stored: bytes) -> bytes:
    """The message as sent: the box prepends trace fields (Received:, RFC 5321 §4.4)
    before the first line the client sent."""
    start = stored.index(b"X-Test-Id: ")
    assert start == 0 or stored[start - 2 : start] == b"\r\n"
    return stored[start:]


def read_all(data: Path, password: str) -> tuple[list[bytes], list[str]]:
    """Every message in the sample mailbox, and the errors of those that cannot be read
    (an index row whose blob a second opener's recovery deleted)."""
    with Drive.open(
        data / "drive", BoxKeys.load_or_create(data), limits=Argon2Limits(1, 8192), create=False
    ) as drive:
        mailbox = drive.find_mailbox(SAMPLE)
        assert mailbox is not None
        secret = drive.unlock(mailbox.id, password)
        stored, unreadable = [], []
        for d in drive.list(mailbox.id):
            try:
                stored.append(drive.open_message(mailbox.id, d.id, secret).read())
            except MessageDamaged as exc:
                unreadable.append(str(exc))
        return stored, unreadable


@pytest.mark.slow
def test_cli_verbs_in_a_loop_while_the_box_takes_large_mail(tmp_path: Path) -> None:
    """Senders deliver bodies over 128 KiB while two loops run every drive verb of the
    CLI as subprocesses against the same --data: every acknowledged message is stored
    byte-identical, no `drive check` is ever DAMAGED, every verb succeeds, and the
    box's OPEN marker stays where it is."""
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    run = Run(data, config)
    marker = data / "drive" / "letterbox" / "OPEN"
    password = run.password()
    stop = threading.Event()
    acked: dict[str, bytes] = {}
    attempted: set[str] = set()
    refused: list[str] = []
    verbs: list[tuple[tuple[str, ...], int, str]] = []
    checks = {"ok": 0, "damaged": 0}
    problems: list[str] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        rng = random.Random(n)
        seq = 0
        smtp: smtplib.SMTP | None = None
        while not stop.is_set():
            seq += 1
            ident = f"s{n}-{seq}"
            msg = body(ident, rng)
            with lock:
                attempted.add(ident)
            try:
                if smtp is None:
                    smtp = smtplib.SMTP("127.0.0.1", run.port, timeout=60)
                smtp.sendmail("load@example.org", [SAMPLE], msg)
            except (smtplib.SMTPException, OSError) as exc:
                with lock:
                    refused.append(f"{ident}: {exc!r}")
                if smtp is not None:
                    try:
                        smtp.close()
                    finally:
                        smtp = None
                continue
            with lock:
                acked[ident] = msg
        if smtp is not None:
            smtp.quit()

    def cli_loop(n: int) -> None:
        rounds = [
            ("mailbox", "list"),
            ("drive", "stats"),
            ("drive", "check"),
            ("mailbox", "passwd", SAMPLE, "--password-stdin"),
            ("mailbox", "recovery-reset", SAMPLE, "--password-stdin"),
        ]
        i = n
        while not stop.is_set():
            args = rounds[i % len(rounds)]
            i += 1
            done = cli(data, *args, stdin=f"{password}\n{password}\n", config=config)
            with lock:
                verbs.append((args, done.returncode, done.stderr))
                if args == ("drive", "check"):
                    if "DAMAGE" in done.stdout:
                        checks["damaged"] += 1
                        problems.append(done.stdout)
                    elif done.returncode == 0 and "Result: OK" in done.stdout:
                        checks["ok"] += 1
                if not marker.exists():
                    problems.append(f"OPEN marker gone after {args}")

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    threads += [threading.Thread(target=cli_loop, args=(n,)) for n in range(CLI_LOOPS)]
    try:
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS)
        stop.set()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        marker_kept = marker.exists()
        final = cli(data, "drive", "check", config=config)
    finally:
        stop.set()
        code = run.stop()
    assert code == 0, run.stderr()

    stored, unreadable = read_all(data, password)
    by_id: dict[str, bytes] = {}
    for message in stored:
        sent = without_trace(message)
        ident = sent.split(b"\r\n", 1)[0].removeprefix(b"X-Test-Id: ").decode()
        assert ident not in by_id, f"{ident} stored twice"
        by_id[ident] = sent
    lost = sorted(set(acked) - set(by_id))
    failed = [(args, rc, err) for args, rc, err in verbs if rc != 0]
    print(
        f"{len(acked)} acknowledged ({sum(len(m) > 128 * 1024 for m in acked.values())} over "
        f"128 KiB), {len(refused)} refused, {len(lost)} lost, {len(unreadable)} unreadable; "
        f"{len(verbs)} CLI verbs, {len(failed)} failed; checks {checks}; OPEN kept: {marker_kept}"
    )
    assert unreadable == [], f"{len(unreadable)} stored messages lost their blob: {unreadable[:3]}"
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:5]}"
    assert checks["damaged"] == 0 and checks["ok"] >= 2, (checks, problems[:2])
    assert final.returncode == 0 and "Result: OK" in final.stdout, final.stdout
    assert refused == [], refused[:5]
    assert failed == [], failed[:5]
    assert problems == [] and marker_kept, problems[:3]
    large = [m for m in acked.values() if len(m) > 128 * 1024]
    assert len(acked) >= 20 and len(large) >= 5, (len(acked), len(large))
    assert set(by_id) <= attempted
    for ident, msg in acked.items():
        assert by_id[ident] == msg, f"{ident} differs"
    offline = cli(data, "drive", "check", config=config)
    assert offline.returncode == 0, offline.stdout
    assert "Result: OK" in offline.stdout and "WARNING" not in offline.stdout, offline.stdout

"""`letterbox run --dev` read over POP3 by real clients: poplib, curl, mpop and fetchmail.

Mail goes in with smtplib and must come out byte-identical: what POP3 serves is
the stored message, which is the Return-Path and Received the gateway added and then
exactly what the client sent. mpop and fetchmail store with LF line ends and add
a Received header of their own; the comparisons account for exactly that.
"""

from __future__ import annotations

import hashlib
import os
import poplib
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import unverified_tls
from tests.integration.harness import SAMPLE, Run, read_mailbox, write_config
from tests.smtp.conftest import strip_received

MESSAGES = [
    b"From: me@example.org\r\nTo: postmaster@letterbox.test\r\nSubject: one\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nafter a lone dot\r\n.\r\n",
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nÄ Ö Ü ß 日本\r\n".encode(),
    b"Subject: long lines\r\n\r\n" + b"L" * 1900 + b"\r\n\r\n\r\n",
]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "data", write_config(tmp_path / "letterbox.toml"))
    yield r
    r.kill()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def send(run: Run, *messages: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", run.port) as client:
        for m in messages:
            client.sendmail("me@example.org", [SAMPLE], m)


def pop(run: Run, password: str | None = None, *, tls: str = "stls") -> poplib.POP3:
    if tls == "implicit":
        p: poplib.POP3 = poplib.POP3_SSL(
            "127.0.0.1", run.pop3s_port, context=unverified_tls(), timeout=30
        )
    else:
        p = poplib.POP3("127.0.0.1", run.pop3_port, timeout=30)
        if tls == "stls":
            p.stls(unverified_tls())
    p.user(SAMPLE)
    p.pass_(password or run.password())
    return p


def retr_all(p: poplib.POP3) -> list[bytes]:
    count, _ = p.stat()
    return [b"".join(line + b"\r\n" for line in p.retr(i)[1]) for i in range(1, count + 1)]


def curl(
    run: Run, path: str = "/", *args: str, password: str | None = None, scheme: str = "pop3"
) -> subprocess.CompletedProcess[bytes]:
    assert shutil.which("curl"), "curl is installed by `make test` (scripts/apt-ensure)"
    port = run.pop3s_port if scheme == "pop3s" else run.pop3_port
    return subprocess.run(
        [
            "curl",
            "-s",
            "-S",
            "-k",
            "--max-time",
            "60",
            "-u",
            f"{SAMPLE}:{password or run.password()}",
            *args,
            f"{scheme}://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        timeout=90,
    )


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def drop_first_received(message: bytes) -> bytes:
    """Without the Received header a client prepended (the first Received, folded).

    fetchmail keeps the message's Return-Path (RFC 5321 §4.4) on top and puts its
    own Received under it, so that line stays and the Received after it goes."""
    lines = message.split(b"\n")
    top = 1 if lines[0].startswith(b"Return-Path: <") else 0
    assert lines[top].startswith(b"Received: "), message[:160]
    i = top + 1
    while lines[i][:1] in (b"\t", b" "):
        i += 1
    return b"\n".join(lines[:top] + lines[i:])


def test_the_banner_says_how_to_read_mail(run: Run):
    assert f"POP3  127.0.0.1:{run.pop3_port} with STLS, POP3S {run.pop3s_port}" in run.out
    assert f"curl -s pop3://127.0.0.1:{run.pop3_port}/1 -u '{SAMPLE}:{run.password()}'" in run.out


def test_what_smtp_stored_pop3_serves_byte_identical(run: Run, tmp_path: Path):
    send(run, *MESSAGES)
    p = pop(run)
    stored = retr_all(p)
    assert [strip_received(m) for m in stored] == MESSAGES
    assert p.list()[1] == [f"{i} {len(m)}".encode() for i, m in enumerate(stored, 1)]
    uids = p.uidl()[1]
    p.quit()

    p = pop(run, tls="implicit")  # port 995's stand-in
    assert retr_all(p) == stored
    assert p.uidl()[1] == uids  # stable across sessions
    p.quit()

    p = pop(run, tls="none")  # --dev allows a plaintext login on loopback
    assert retr_all(p) == stored
    p.quit()

    for scheme, extra in (("pop3", ()), ("pop3", ("--ssl-reqd",)), ("pop3s", ())):
        for i, m in enumerate(stored, 1):
            got = curl(run, f"/{i}", *extra, scheme=scheme)
            assert got.returncode == 0, got.stderr
            assert got.stdout == m, (scheme, extra, i)
    listing = curl(run, "/")
    assert listing.stdout == b"".join(f"{i} {len(m)}\r\n".encode() for i, m in enumerate(stored, 1))

    assert run.stop() == 0
    assert read_mailbox(run.data, run.password()) == stored  # reading deleted nothing
    assert "letterbox.test" not in run.stderr()  # logs name no addresses by default


def test_capa_expire_follows_the_retention_setting(tmp_path: Path):
    r = Run(
        tmp_path / "data", write_config(tmp_path / "letterbox.toml", "[drive]\nkeep_days = 30\n")
    )
    try:
        p = poplib.POP3("127.0.0.1", r.pop3_port)
        assert p.capa()["EXPIRE"] == ["30"]
        p.quit()
    finally:
        assert r.stop() == 0


def mpoprc(run: Run, path: Path, maildir: Path, *, keep: bool, starttls: bool = True) -> Path:
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    path.write_text(
        "account default\n"
        f"host 127.0.0.1\nport {run.pop3_port if starttls else run.pop3s_port}\n"
        f"user {SAMPLE}\npassword {run.password()}\nauth user\n"
        f"tls on\ntls_starttls {'on' if starttls else 'off'}\ntls_certcheck off\n"
        f"delivery maildir {maildir}\nuidls_file {path}.uidls\n"
        f"keep {'on' if keep else 'off'}\nreceived_header off\n"
    )
    path.chmod(0o600)
    return path


def mpop(rc: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("mpop"), "mpop is installed by `make test` (scripts/apt-ensure)"
    return subprocess.run(
        ["mpop", "-C", str(rc), "-q"], capture_output=True, text=True, timeout=120
    )


def maildir_messages(maildir: Path) -> list[bytes]:
    files = sorted((maildir / "new").iterdir(), key=lambda f: f.name)
    return [f.read_bytes() for f in files]


def test_mpop_retrieves_and_deletes(run: Run, tmp_path: Path):
    send(run, *MESSAGES)
    p = pop(run)
    stored = retr_all(p)
    p.quit()

    keep = mpop(mpoprc(run, tmp_path / "keep.rc", tmp_path / "kept", keep=True))
    assert keep.returncode == 0, keep.stderr
    assert sorted(maildir_messages(tmp_path / "kept")) == sorted(lf(m) for m in stored)
    assert pop(run).stat()[0] == len(stored)

    # keep off: mpop deletes what it fetched, at its QUIT; this time over POP3S
    fetched = mpop(
        mpoprc(run, tmp_path / "fetch.rc", tmp_path / "fetched", keep=False, starttls=False)
    )
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(maildir_messages(tmp_path / "fetched")) == sorted(lf(m) for m in stored)
    assert pop(run).stat() == (0, 0)


def test_fetchmail_retrieves_over_stls(run: Run, tmp_path: Path):
    assert shutil.which("fetchmail"), "fetchmail is installed by `make test` (apt-ensure)"
    send(run, *MESSAGES)
    p = pop(run)
    stored = retr_all(p)
    p.quit()
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {run.pop3_port} protocol pop3 uidl\n"
        f'  user "{SAMPLE}" there with password "{run.password()}" is "me" here\n'
        f"  keep no sslcertck\n"  # STLS is used when offered; the certificate is self-signed
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    got = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "-v", "-i", str(tmp_path / "fetchids")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert "STLS" in got.stdout + got.stderr
    fetched = [drop_first_received(f.read_bytes()) for f in out.iterdir()]
    assert sorted(fetched) == sorted(lf(m) for m in stored)


def test_deletions_happen_at_quit_only(run: Run):
    send(run, *MESSAGES[:3])
    # a dropped connection deletes nothing
    sock = socket.create_connection(("127.0.0.1", run.pop3_port), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f"USER {SAMPLE}\r\nPASS {run.password()}\r\nDELE 1\r\nDELE 2\r\n".encode())
    for _ in range(4):
        assert f.readline().startswith(b"+OK")
    f.close()
    sock.close()
    time.sleep(0.3)
    p = pop(run)
    assert p.stat()[0] == 3
    p.dele(1)
    p.rset()
    p.dele(2)
    p.quit()
    deleted = curl(run, "/1", "-X", "DELE", "-I")  # curl's way to delete
    assert deleted.returncode == 0, deleted.stderr
    assert run.stop() == 0
    assert [strip_received(m) for m in read_mailbox(run.data, run.password())] == [MESSAGES[2]]


def test_wrong_passwords_and_the_rate_limit(tmp_path: Path):
    config = write_config(
        tmp_path / "letterbox.toml", pop3="failed_login_delay = 1\nmax_failed_logins = 3\n"
    )
    r = Run(tmp_path / "data", config)
    try:
        for user in (SAMPLE, "nobody@letterbox.test"):
            started = time.monotonic()
            with pytest.raises(poplib.error_proto) as exc:
                p = poplib.POP3("127.0.0.1", r.pop3_port)
                p.user(user)
                p.pass_("wrong password")
            assert exc.value.args[0] == b"-ERR [AUTH] Wrong user name or password"
            assert time.monotonic() - started >= 1
        assert curl(r, "/", password="wrong").returncode == 67  # curl: login denied
        # three failures from 127.0.0.1 within the window: now even the right one is refused
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many failed logins"):
            pop(r)
        assert curl(r, "/").returncode != 0
    finally:
        assert r.stop() == 0


def test_one_session_per_mailbox_and_concurrent_readers(run: Run):
    send(run, *MESSAGES)
    first = pop(run)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        pop(run, tls="implicit")
    first.quit()
    results: list[list[bytes]] = []
    refusals: list[bytes] = []
    errors: list[BaseException] = []

    def reader() -> None:
        # Outcomes are collected and judged in the test's own thread: an assert
        # here would only end this thread.
        try:
            p = pop(run)
            results.append(retr_all(p))
            p.quit()
        except poplib.error_proto as exc:
            refusals.append(exc.args[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) + len(refusals) == 4
    assert results  # at least one got in; the others were told [IN-USE]
    assert all(b"[IN-USE]" in r for r in refusals), refusals
    assert all([strip_received(m) for m in res] == MESSAGES for res in results)


def test_an_end_to_end_mailbox_is_refused_with_directions(run: Run, tmp_path: Path):
    assert run.stop() == 0
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "letterbox.cli",
            "--data",
            str(run.data),
            "--config",
            str(run.config),
            "mailbox",
            "add",
            "carol@letterbox.test",
            "--end-to-end",
            "--key-file",
            str(tmp_path / "carol.key"),
            "--password-stdin",
        ],
        input="key file passphrase\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    again = Run(run.data, run.config)
    try:
        p = poplib.POP3("127.0.0.1", again.pop3_port)
        p.user("carol@letterbox.test")
        with pytest.raises(poplib.error_proto) as exc:
            p.pass_("anything")
        text = exc.value.args[0]
        assert text.startswith(b"-ERR [AUTH] This mailbox is end-to-end encrypted")
        assert b"letterbox fetch" in text and b"letterbox bridge" in text
    finally:
        assert again.stop() == 0


def test_without_a_drive_logins_get_sys_temp(tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = write_config(tmp_path / "letterbox.toml", f'[drive]\npath = "{blocker}/drive"\n')
    r = Run(tmp_path / "data", config)
    try:
        p = poplib.POP3("127.0.0.1", r.pop3_port)
        p.user(SAMPLE)
        with pytest.raises(poplib.error_proto) as exc:
            p.pass_("whatever")
        assert exc.value.args[0] == (
            b"-ERR [SYS/TEMP] The mail drive is not available; try again later"
        )
    finally:
        assert r.stop() == 0


def test_sigterm_ends_a_waiting_session_without_deleting(run: Run):
    send(run, MESSAGES[0])
    p = pop(run)
    p.dele(1)
    run.proc.send_signal(signal.SIGTERM)
    # The box says why it closes (a client reads it as the answer to its next command).
    assert p.file.readline() == (
        b"-ERR [SYS/TEMP] Letterbox is shutting down; try again shortly\r\n"
    )
    assert p.file.readline() == b""
    assert run.proc.wait(30) == 0
    assert len(read_mailbox(run.data, run.password())) == 1


@pytest.mark.slow
def test_a_25_mb_retr_streams_fast_in_flat_memory(run: Run):
    line = b"0123456789abcdef" * 62 + b"\r\n"  # 994-byte lines
    big = b"Subject: big\r\n\r\n" + line * (25 * 1024 * 1024 // len(line))
    send(run, big)
    p = pop(run, tls="none")  # warm up the paths used
    stored_size = int(p.list(1).split()[2])
    p.quit()
    digest = hashlib.sha256()
    with run.rss_growth() as rss:
        sock = socket.create_connection(("127.0.0.1", run.pop3_port), timeout=30)
        f = sock.makefile("rb", buffering=1 << 20)
        f.readline()
        sock.sendall(f"USER {SAMPLE}\r\nPASS {run.password()}\r\n".encode())
        f.readline()
        f.readline()
        started = time.monotonic()
        sock.sendall(b"RETR 1\r\n")
        assert f.readline() == f"+OK {stored_size} octets\r\n".encode()
        received = 0
        while True:
            chunk = f.readline()
            if chunk == b".\r\n":
                break
            received += len(chunk)
            digest.update(chunk[1:] if chunk.startswith(b".") else chunk)
        elapsed = time.monotonic() - started
        sock.sendall(b"QUIT\r\n")
        f.close()
        sock.close()
    growth = rss.growth
    print(
        f"RETR of {stored_size} octets in {elapsed:.2f} s "
        f"({stored_size / elapsed / 1e6:.0f} MB/s); RSS idle {rss.idle} KiB, peak {rss.peak} KiB, "
        f"growth {growth} KiB"
    )
    assert received == stored_size
    assert growth <= 8 * 1024, f"server RSS grew by {growth} KiB during a 25 MB RETR"
    assert run.stop() == 0
    [stored] = read_mailbox(run.data, run.password())
    assert hashlib.sha256(stored).digest() == digest.digest()
    assert strip_received(stored) == big

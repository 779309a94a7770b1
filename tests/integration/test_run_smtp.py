"""`letterbox run --dev` as a real process, with real clients: smtplib and Debian's swaks.

The process and its config come from harness.py (free ports for every listener);
the mail is read back from the drive after the process has stopped, with the
sample mailbox's password that the first run printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import assert_refused, unverified_tls
from tests.integration.harness import SAMPLE, Run, read_mailbox, write_config
from tests.smtp.conftest import strip_received

MSG = b"From: me@example.org\r\nTo: postmaster@letterbox.test\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "data", write_config(tmp_path / "letterbox.toml"))
    yield r
    r.kill()


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("swaks"), "swaks is installed by `make test` (scripts/apt-ensure swaks)"
    return subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{port}",
            "--from",
            "me@example.org",
            "--helo",
            "client.example",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_first_run_makes_a_sample_mailbox_and_says_how_to_use_it(run: Run):
    assert SAMPLE in run.out
    assert f"swaks --server 127.0.0.1:{run.port} --to {SAMPLE}" in run.out
    assert "smtplib" in run.out and "mailbox list" in run.out
    assert run.stop() == 0
    again = Run(run.data, run.config)
    try:
        assert "password" not in again.out  # made once only
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_smtplib_and_swaks_deliver_into_the_drive(run: Run, tmp_path: Path):
    with smtplib.SMTP("127.0.0.1", run.port) as client:
        client.sendmail("me@example.org", [SAMPLE], MSG)
        client.starttls(context=unverified_tls())
        client.ehlo()
        client.sendmail("me@example.org", [SAMPLE], MSG)

    body = tmp_path / "body.eml"
    eight_bit = "From: me@example.org\r\nSubject: Grüße\r\n\r\nÄ Ö Ü ß 日本\r\n.dot\r\n".encode()
    body.write_bytes(eight_bit)
    plain = swaks(run.port, "--to", SAMPLE, "--data", f"@{body}")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "250 2.0.0 Ok: stored as" in plain.stdout
    tls = swaks(run.port, "--to", SAMPLE, "--tls", "--data", f"@{body}")
    assert tls.returncode == 0, tls.stdout + tls.stderr
    assert "TLS started" in tls.stdout
    piped = swaks(run.port, "--to", SAMPLE, "--pipeline", "--data", f"@{body}")
    assert piped.returncode == 0, piped.stdout + piped.stderr
    utf8 = swaks(
        run.port,
        "--to",
        SAMPLE,
        "--from",
        "jürgen@example.org",
        "--data",
        f"@{body}",
        "--protocol",
        "ESMTP",
    )
    assert "553 5.6.7" in utf8.stdout  # swaks sends no SMTPUTF8 parameter

    unknown = swaks(run.port, "--to", "nobody@letterbox.test")
    assert "550 5.1.1" in unknown.stdout and unknown.returncode != 0
    relay = swaks(run.port, "--to", "someone@example.com")
    assert "554 5.7.1" in relay.stdout and relay.returncode != 0

    assert run.stop() == 0
    stored = read_mailbox(run.data, run.password())
    # swaks ends DATA with CRLF "." CRLF after the file, so the CRLF it adds is
    # part of the message it sent.
    sent_by_swaks = eight_bit + b"\r\n"
    assert [strip_received(m) for m in stored] == [MSG, MSG, *[sent_by_swaks] * 3]
    assert b"with ESMTPS" in stored[1] and b"(using TLSv1." in stored[3]
    assert "drive closed cleanly" in run.stderr()
    # Logs name no addresses by default.
    assert "example.org" not in run.stderr() and "letterbox.test" not in run.stderr()


def test_sigterm_lets_a_message_in_flight_finish(run: Run):
    sock = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    f = sock.makefile("rb")

    def reply() -> bytes:
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        return line

    assert reply().startswith(b"220")
    for cmd in (b"EHLO c", b"MAIL FROM:<me@example.org>", f"RCPT TO:<{SAMPLE}>".encode(), b"DATA"):
        sock.sendall(cmd + b"\r\n")
        assert reply()[:1] in (b"2", b"3")
    sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert_refused(run.port)  # no longer accepting, while the message in flight goes on
    sock.sendall(b"second half\r\n.\r\n")
    assert reply().startswith(b"250 2.0.0")
    assert reply().startswith(b"421 4.3.2")
    sock.close()
    assert run.proc.wait(30) == 0
    [stored] = read_mailbox(run.data, run.password())
    assert strip_received(stored) == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"


def test_sigterm_drops_an_unfinished_message_after_the_grace_period(run: Run):
    sock = socket.create_connection(("127.0.0.1", run.port), timeout=20)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"HELO c\r\nMAIL FROM:<me@example.org>\r\n")
    f.readline()
    f.readline()
    sock.sendall(f"RCPT TO:<{SAMPLE}>\r\n".encode())
    f.readline()
    sock.sendall(b"DATA\r\n")
    assert f.readline().startswith(b"354")
    sock.sendall(b"Subject: never finished\r\n\r\n")
    started = time.monotonic()
    assert run.stop(timeout=30) == 0
    assert 4 < time.monotonic() - started < 20  # shutdown_grace = 5
    assert f.readline().startswith(b"421 4.3.2")
    sock.close()
    assert read_mailbox(run.data, run.password()) == []
    blobs = run.data / "drive" / "letterbox" / "blobs"
    assert [p for p in blobs.rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_a_25_mb_message_streams_in_bounded_memory(run: Run):
    with smtplib.SMTP("127.0.0.1", run.port) as client:
        client.sendmail("me@example.org", [SAMPLE], MSG)  # warm up the paths used
    line = b"0123456789abcdef" * 62 + b"\r\n"  # 994-byte lines
    big = b"Subject: big\r\n\r\n" + line * (25 * 1024 * 1024 // len(line))
    with run.rss_growth() as rss, smtplib.SMTP("127.0.0.1", run.port) as client:
        client.sendmail("me@example.org", [SAMPLE], big)
    growth = rss.growth
    print(f"RSS idle {rss.idle} KiB, peak {rss.peak} KiB, growth {growth} KiB")
    assert growth <= 8 * 1024, f"server RSS grew by {growth} KiB during a 25 MB DATA"
    assert run.stop() == 0
    stored = read_mailbox(run.data, run.password())
    assert strip_received(stored[1]) == big


@pytest.mark.slow
def test_a_ten_megabyte_line_streams_through_in_bounded_memory(tmp_path: Path):
    # Measured on a box of its own, by sampling its RSS: the test process's own
    # peak (VmHWM) was set long before by the Argon2id tests and says nothing.
    config = write_config(tmp_path / "letterbox.toml", smtp="max_line_length = 0\n")
    r = Run(tmp_path / "data", config)  # max_line_length 0: no limit, the line is stored
    try:
        with smtplib.SMTP("127.0.0.1", r.port) as client:
            client.sendmail("me@example.org", [SAMPLE], MSG)  # warm up the paths used
        message = b"Subject: one long line\r\n\r\n" + b"L" * (10 * 1024 * 1024) + b"\r\n"
        with r.rss_growth() as rss, smtplib.SMTP("127.0.0.1", r.port) as client:
            client.sendmail("me@example.org", [SAMPLE], message)
        print(f"RSS idle {rss.idle} KiB, peak {rss.peak} KiB, growth {rss.growth} KiB")
        # A server that held the line (or the message) would grow by 10 MiB or more.
        assert rss.growth <= 8 * 1024, f"server RSS grew by {rss.growth} KiB for a 10 MB line"
        assert r.stop() == 0
    finally:
        r.kill()
    stored = read_mailbox(r.data, r.password())
    assert strip_received(stored[1]) == message


def test_the_port_in_use_is_a_clear_error(run: Run, tmp_path: Path):
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "letterbox.cli",
            "--data",
            str(tmp_path / "other"),
            "--config",
            str(run.config),
            "run",
            "--dev",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 1
    assert "cannot start" in other.stderr and "address already in use" in other.stderr.lower()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # swaks honours no proxies, but be explicit that nothing leaves the machine.
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    # swaks (Perl) warns about an unset locale; set one for these tests only.
    if "LC_ALL" not in os.environ:
        monkeypatch.setenv("LC_ALL", "C.UTF-8")


def test_without_a_drive_the_box_runs_and_answers_451(tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "letterbox.toml"
    write_config(config, f'[drive]\npath = "{blocker}/drive"\n')
    r = Run(tmp_path / "data", config)
    try:
        assert "the drive is unavailable" in r.out
        with smtplib.SMTP("127.0.0.1", r.port) as client:
            client.ehlo()
            client.mail("me@example.org")
            code, text = client.rcpt(SAMPLE)
            assert (code, text[:5]) == (451, b"4.3.0")
    finally:
        assert r.stop() == 0
    assert "drive unavailable" in r.stderr()

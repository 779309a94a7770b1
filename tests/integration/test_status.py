"""`letterbox status` and `mailbox add` against a real running box (over its control socket)."""

from __future__ import annotations

import json
import os
import smtplib
import stat
import subprocess
from pathlib import Path

import pytest
from letterbox import __version__, claim, control
from letterbox.status import PROVISIONING_REPORT, status_line

from tests.helpers import letterbox_cli as cli
from tests.integration.harness import SAMPLE, Run, write_config


def test_status_says_plainly_when_no_box_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sock = data / "run" / "control.sock"
    done = cli(data, "status")
    assert done.returncode == 3
    assert done.stdout == f"Letterbox is not running (no control socket at {sock})\n"
    done = cli(data, "status", "--json")
    assert done.returncode == 3
    assert json.loads(done.stdout)["running"] is False


@pytest.mark.slow
def test_status_of_a_running_box(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    run = Run(data, config)
    try:
        code = claim.setup_code(data)
        assert code is not None and f"Setup code: {code}" in run.out  # in the banner

        done = cli(data, "status", "--json")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout)
        assert snap["running"] is True
        assert snap["version"] == __version__
        assert snap["pid"] == run.proc.pid
        assert snap["drive"]["state"] == "online"
        assert (snap["mailboxes"], snap["messages"], snap["last_received"]) == (1, 0, None)
        ports = {item["name"]: item["port"] for item in snap["listeners"]}
        assert ports == {
            "smtp": run.port,
            "pop3": run.pop3_port,
            "pop3s": run.pop3s_port,
            "web": run.web_port,
        }
        assert snap["mdns"] == {"enabled": False, "name": None, "services": []}  # --dev
        assert (snap["claimed"], snap["setup_code"]) == (False, code)
        cert = (data / "box" / "tls" / "cert.pem").read_bytes()
        fingerprint = (
            subprocess.run(
                ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                input=cert,
                capture_output=True,
                check=True,
                timeout=30,
            )
            .stdout.decode()
            .strip()
            .partition("=")[2]
        )
        assert snap["tls"] == {"sha256": fingerprint}
        assert f"  TLS   certificate SHA-256 {fingerprint}\n" in run.out  # the banner
        mode = os.stat(data / "run" / "control.sock").st_mode
        assert stat.S_IMODE(mode) == 0o600

        with smtplib.SMTP("127.0.0.1", run.port, timeout=10) as smtp:
            smtp.sendmail("me@example.org", [SAMPLE], b"Subject: hi\r\n\r\nHello.\r\n")
        done = cli(data, "status")
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert text.startswith(f"Letterbox {__version__} is running (development mode): pid ")
        assert "1 mailboxes, 1 messages" in text and "last received never" not in text
        assert f"smtp       127.0.0.1 port {run.port} (STARTTLS)" in text
        assert f"pop3s      127.0.0.1 port {run.pop3s_port} (implicit TLS)" in text
        assert f"setup code {code}" in text
        assert "online at" in text
        assert f"  TLS        certificate SHA-256 {fingerprint}\n" in text
    finally:
        assert run.stop() == 0
    assert not (data / "run" / "control.sock").exists()
    assert cli(data, "status").returncode == 3


@pytest.mark.slow
def test_status_shows_what_first_boot_did_with_the_provisioning_file(tmp_path: Path) -> None:
    """provisioning/firstboot.py writes the report; a refused file must be visible at
    the console, in `letterbox status` and in systemd's STATUS line."""
    data = tmp_path / "data"
    (data / "box").mkdir(parents=True)
    report = data / PROVISIONING_REPORT
    report.write_text(
        json.dumps({"ok": False, "error": "wifi.country: 'XX' is not a country code"})
    )
    run = Run(data, write_config(tmp_path / "letterbox.toml"))
    try:
        done = cli(data, "status")
        assert done.returncode == 0, done.stderr
        assert "letterbox.toml refused, nothing of it applied: wifi.country: 'XX'" in done.stdout
        snap = json.loads(cli(data, "status", "--json").stdout)
        assert "boot partition was refused" in status_line(snap)

        report.write_text(json.dumps({"ok": True, "applied": ["hostname", "ssh"], "at": "T"}))
        done = cli(data, "status")
        assert "first boot applied hostname, ssh (T)" in done.stdout
        assert "refused" not in done.stdout
    finally:
        assert run.stop() == 0


@pytest.mark.slow
def test_mailbox_add_goes_through_the_running_box(tmp_path: Path) -> None:
    """A mailbox added while the box runs takes mail at once (no restart): the
    daemon's own Drive made it, so its recipient map knows the address."""
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    run = Run(data, config)
    try:
        done = cli(
            data,
            "mailbox",
            "add",
            "Anna@Example.org",
            "--password-stdin",
            stdin="secret\n",
            config=config,
        )
        assert done.returncode == 0, done.stderr
        assert "Created mailbox anna@example.org" in done.stdout
        assert "Recovery code" in done.stdout
        key_file = tmp_path / "ben.key"
        done = cli(
            data,
            "mailbox",
            "add",
            "ben@example.org",
            "--end-to-end",
            "--key-file",
            str(key_file),
            "--password-stdin",
            stdin="passphrase\n",
            config=config,
        )
        assert done.returncode == 0, done.stderr
        assert key_file.exists()
        again = cli(data, "mailbox", "add", "anna@example.org", "--password-stdin", stdin="x\n")
        assert again.returncode == 1
        assert "exists already" in again.stderr

        with smtplib.SMTP("127.0.0.1", run.port, timeout=10) as smtp:
            refused = smtp.sendmail(
                "me@example.org",
                ["anna@example.org", "ben@example.org"],
                b"Subject: x\r\n\r\nx\r\n",
            )
        assert refused == {}
        snap = control.call(data, "status")
        assert (snap["mailboxes"], snap["messages"]) == (3, 2)
    finally:
        assert run.stop() == 0


@pytest.mark.slow
def test_a_killed_box_leaves_a_socket_that_status_sees_through(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "letterbox.toml")
    run = Run(data, config)
    run.kill()  # SIGKILL: no cleanup, the socket file stays
    sock = data / "run" / "control.sock"
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert cli(data, "status").returncode == 3
    # The next box replaces the stale file and answers on it.
    run = Run(data, write_config(tmp_path / "second.toml"))
    try:
        assert control.call(data, "status")["pid"] == run.proc.pid
    finally:
        assert run.stop() == 0

"""`letterbox run` in usb mode, end to end: adopt through the CLI, unplug → 451, replug → 250.

A real daemon process, real smtplib/poplib clients, the real CLI talking to the
daemon's control socket, and a loop device standing in for the USB stick.
"""

from __future__ import annotations

import json
import os
import poplib
import smtplib
import subprocess
from pathlib import Path

import pytest
from letterbox.drive import Drive

from tests.helpers import FAST_ARGON2
from tests.helpers import letterbox_cli as cli
from tests.integration.harness import Run, write_config
from tests.usb.conftest import ADDRESS, PASSWORD, Loops, synth, wait_until


def send(port: int, body: str) -> tuple[int, bytes]:
    """(code, text) of the first refusal, or (250, b"") when the message was taken."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        try:
            s.sendmail("bob@example.org", [ADDRESS], f"Subject: {body}\r\n\r\n{body}\r\n")
        except smtplib.SMTPRecipientsRefused as exc:
            return exc.recipients[ADDRESS]
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


def test_unplug_answers_451_and_replug_resumes_delivery(loops: Loops, tmp_path: Path) -> None:
    from letterbox.boxkeys import BoxKeys

    data = tmp_path / "data"
    mnt = tmp_path / "media" / "letterbox"
    img, drive_id = loops.letterbox_image("stick.img", BoxKeys.load_or_create(data))
    dev = loops.attach(img)
    config = write_config(
        tmp_path / "letterbox.toml",
        f'[drive]\nmode = "usb"\npath = "{mnt}"\nallow_loop = true\nreserve = 0\n',
    )
    run = Run(data, config)
    try:
        assert "the drive is unavailable" in run.out  # a new box: nothing adopted yet
        got = cli(data, "drive", "candidates", "--json", config=config)
        assert got.returncode == 0, got.stderr
        listed = json.loads(got.stdout)
        assert listed["state"]["state"] == "absent"
        (ours,) = [c for c in listed["candidates"] if c["devnode"] == dev]
        assert ours["kind"] == "letterbox" and ours["drive_id"] == drive_id

        refused = cli(data, "drive", "format", ours["id"], "--confirm", "yes", config=config)
        assert refused.returncode == 1 and f"confirm with its device name {dev}" in refused.stderr
        adopted = cli(data, "drive", "adopt", ours["id"], config=config)
        assert adopted.returncode == 0, adopted.stderr
        assert f"Drive {drive_id} on {dev} is online" in adopted.stdout

        assert send(run.port, "one") == (250, b"")

        synth(dev, "remove")  # pulled out
        wait_until(lambda: send(run.port, "probe")[0] == 451)
        code, text = send(run.port, "two")
        assert code == 451 and text.startswith(b"4.3.0"), text
        pop = poplib.POP3("127.0.0.1", run.pop3_port, timeout=10)
        pop.user(ADDRESS)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            pop.pass_(PASSWORD)
        pop.close()
        wait_until(lambda: not os.path.ismount(mnt))
        loops.detach(dev)

        loops.attach(img)  # plugged in again
        wait_until(lambda: send(run.port, "three") == (250, b""), timeout=20)
        state = json.loads(cli(data, "drive", "candidates", "--json", config=config).stdout)[
            "state"
        ]
        assert state["state"] == "online" and state["drive_id"] == drive_id
        assert run.stop() == 0
    finally:
        run.kill()
    assert "drive offline: the drive" in run.stderr()

    # Read back from the stick itself: everything acknowledged is there, once each.
    dev = loops.attach(img)
    check = tmp_path / "check"
    check.mkdir()
    subprocess.run(["mount", dev, str(check)], check=True)
    with Drive.open(check, BoxKeys.load_or_create(data), limits=FAST_ARGON2, create=False) as d:
        box = d.find_mailbox(ADDRESS)
        assert box is not None
        secret = d.unlock(box.id, PASSWORD)
        bodies = sorted(d.open_message(box.id, m.id, secret).read() for m in d.list(box.id))
    subjects = [b.split(b"Subject: ")[1].split(b"\r\n")[0] for b in bodies]
    assert sorted(subjects) == [b"one", b"three"]

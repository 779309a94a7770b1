"""The `letterbox` command as a person runs it: a real subprocess, a real data directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHEAP = '[crypto]\nargon2_opslimit = 1\nargon2_memlimit = "8K"\n'


@pytest.fixture
def lbx(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "letterbox.toml"
    config.write_text(CHEAP)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "letterbox.cli",
                "--data",
                str(tmp_path / "data"),
                "--config",
                str(config),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_every_subcommand_has_help(lbx) -> None:  # type: ignore[no-untyped-def]
    for args in (
        ["--help"],
        ["run", "--help"],
        ["mailbox", "--help"],
        ["mailbox", "add", "--help"],
        ["mailbox", "list", "--help"],
        ["mailbox", "passwd", "--help"],
        ["mailbox", "recovery-reset", "--help"],
        ["drive", "--help"],
        ["drive", "check", "--help"],
        ["drive", "stats", "--help"],
    ):
        result = lbx(*args)
        assert result.returncode == 0, args
        assert "usage: letterbox" in result.stdout


def test_mailbox_lifecycle(lbx) -> None:  # type: ignore[no-untyped-def]
    added = lbx(
        "mailbox",
        "add",
        "Anna@Example.org",
        "--quota",
        "500M",
        "--password-stdin",
        stdin="first password\n",
    )
    assert added.returncode == 0, added.stderr
    code = re.search(r"\b([0-9A-Z]{4}(?:-[0-9A-Z]{4}){7})\b", added.stdout)
    assert code, added.stdout
    assert "example.org is now accepted" in added.stdout

    dup = lbx("mailbox", "add", "anna@example.org", "--password-stdin", stdin="x\n")
    assert dup.returncode == 1 and "exists already" in dup.stderr
    bad = lbx("mailbox", "add", "no-at-sign", "--password-stdin", stdin="x\n")
    assert bad.returncode == 1 and "not a mail address" in bad.stderr
    empty = lbx("mailbox", "add", "b@example.org", "--password-stdin", stdin="\n")
    assert empty.returncode == 1 and "empty" in empty.stderr
    quota = lbx("mailbox", "add", "b@example.org", "--quota", "lots", "--password-stdin")
    assert quota.returncode == 2 and "size" in quota.stderr

    listing = lbx("mailbox", "list")
    assert listing.returncode == 0
    assert re.search(r"anna@example\.org\s+500\.0M\s+0B\s+0\s+unlocked at login", listing.stdout)

    # Forgotten password: the recovery code sets a new one.
    reset = lbx(
        "mailbox",
        "passwd",
        "anna@example.org",
        "--recovery-code-stdin",
        "--password-stdin",
        stdin=f"{code.group(1).lower()}\nsecond password\n",
    )
    assert reset.returncode == 0, reset.stderr
    old = lbx(
        "mailbox",
        "recovery-reset",
        "anna@example.org",
        "--password-stdin",
        stdin="first password\n",
    )
    assert old.returncode == 1 and "wrong password" in old.stderr
    new = lbx(
        "mailbox",
        "recovery-reset",
        "anna@example.org",
        "--password-stdin",
        stdin="second password\n",
    )
    assert new.returncode == 0
    new_code = re.search(r"\b([0-9A-Z]{4}(?:-[0-9A-Z]{4}){7})\b", new.stdout)
    assert new_code and new_code.group(1) != code.group(1)
    stale = lbx(
        "mailbox",
        "passwd",
        "anna@example.org",
        "--recovery-code-stdin",
        "--password-stdin",
        stdin=f"{code.group(1)}\nthird\n",
    )
    assert stale.returncode == 1 and "wrong recovery code" in stale.stderr

    unknown = lbx("mailbox", "passwd", "zed@example.org", "--password-stdin", stdin="x\n")
    assert unknown.returncode == 1 and "no mailbox for zed@example.org" in unknown.stderr


def test_drive_stats_and_check(lbx) -> None:  # type: ignore[no-untyped-def]
    assert lbx("mailbox", "add", "a@example.org", "--password-stdin", stdin="pw\n").returncode == 0
    stats = lbx("drive", "stats")
    assert stats.returncode == 0
    assert "mailboxes:   1" in stats.stdout and "a@example.org: 0B of 2.0G" in stats.stdout
    check = lbx("drive", "check")
    assert check.returncode == 0 and "Result: OK" in check.stdout


def test_config_errors_name_the_key(lbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text('[drive]\nreserv = "1G"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "letterbox.cli",
            "--config",
            str(bad),
            "--data",
            str(tmp_path / "d"),
            "mailbox",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "drive.reserv" in result.stderr


def test_end_to_end_mailbox_writes_a_key_file_and_keeps_no_secret(lbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from letterbox.crypto import PersonalKey, WrongPassword

    key_file = tmp_path / "person.key"
    made = lbx(
        "mailbox",
        "add",
        "e2e@example.org",
        "--end-to-end",
        "--key-file",
        str(key_file),
        "--password-stdin",
        stdin="key passphrase\n",
    )
    assert made.returncode == 0, made.stderr
    assert key_file.stat().st_mode & 0o077 == 0
    person, address, _ = PersonalKey.from_file(key_file.read_bytes(), "key passphrase")
    assert address == "e2e@example.org"
    with pytest.raises(WrongPassword):
        PersonalKey.from_file(key_file.read_bytes(), "wrong")
    # The box's drive holds no copy of the secret key in any form it could open.
    drive_files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert not any(bytes(person.signing) in p.read_bytes() for p in drive_files)
    assert re.search(r"e2e@example\.org .* end-to-end", lbx("mailbox", "list").stdout)
    again = lbx(
        "mailbox",
        "add",
        "x@example.org",
        "--end-to-end",
        "--key-file",
        str(key_file),
        "--password-stdin",
        stdin="p\n",
    )
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    missing = lbx(
        "mailbox", "add", "y@example.org", "--end-to-end", "--password-stdin", stdin="p\n"
    )
    assert missing.returncode == 1 and "--key-file" in missing.stderr


def test_usb_mode_commands_refuse_a_drive_that_is_not_mounted_here(tmp_path: Path, lbx) -> None:  # type: ignore[no-untyped-def]
    """At the appliance's console the USB drive is mounted only inside the running
    box's namespace: a drive command must say so, not make an empty drive on the SD card."""
    mount_point = tmp_path / "media"
    mount_point.mkdir()
    (tmp_path / "letterbox.toml").write_text(
        CHEAP + f'[drive]\nmode = "usb"\npath = "{mount_point}"\n'
    )
    for args in (("mailbox", "list"), ("drive", "stats"), ("drive", "check")):
        done = lbx(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"the USB drive is not mounted at {mount_point}" in done.stderr
    assert list(mount_point.iterdir()) == []


def test_only_mailbox_add_or_create_makes_a_drive(lbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A wrong --data, or a config without drive.path, must not quietly become an
    empty drive that says "No mailboxes yet" (ISSUE-10 §6)."""
    drive = tmp_path / "data" / "drive"
    for args, offers in (
        (("mailbox", "list"), True),
        (("drive", "stats"), True),
        (("mailbox", "passwd", "a@example.org", "--password-stdin"), False),
        (("mailbox", "recovery-reset", "a@example.org", "--password-stdin"), False),
    ):
        done = lbx(*args, stdin="pw\nnew\n")
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"there is no Letterbox drive at {drive}" in done.stderr, args
        assert ("--create" in done.stderr) == offers, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert not (drive / "letterbox").exists(), args
    made = lbx("mailbox", "list", "--create")
    assert made.returncode == 0 and "No mailboxes yet" in made.stdout, made.stderr
    assert (drive / "letterbox" / "DRIVE").exists()
    stats = lbx("drive", "stats")
    assert stats.returncode == 0 and "mailboxes:   0" in stats.stdout, stats.stderr


def test_a_drive_another_process_has_open_is_left_alone(lbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With the drive open elsewhere and no box answering on --data's control socket,
    every drive verb says so (exit 1, no traceback) and touches nothing: not the
    holder's OPEN marker, not its temporaries (ISSUE-10 §1)."""
    from letterbox.boxkeys import BoxKeys
    from letterbox.drive import Drive

    from tests.helpers import FAST_ARGON2, message

    assert lbx("mailbox", "add", "a@example.org", "--password-stdin", stdin="pw\n").returncode == 0
    data = tmp_path / "data"
    with Drive.open(data / "drive", BoxKeys.load_or_create(data), limits=FAST_ARGON2) as holder:
        temporary = holder.layout.blob_tmp("ab" + "0" * 30)
        temporary.write_bytes(b"a delivery on its way")
        for args in (
            ("mailbox", "list"),
            ("drive", "stats"),
            ("drive", "check"),
            ("mailbox", "passwd", "a@example.org", "--password-stdin"),
            ("mailbox", "recovery-reset", "a@example.org", "--password-stdin"),
        ):
            done = lbx(*args, stdin="pw\nnew\n")
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert "in use by another Letterbox process" in done.stderr, (args, done.stderr)
            assert "no box answers on" in done.stderr, args
            assert "Traceback" not in done.stderr
            assert holder.layout.open_marker.exists(), args
            assert temporary.exists(), args
        mailbox = holder.find_mailbox("a@example.org")
        assert mailbox is not None
        holder.deliver("x@example.net", [mailbox.address], message(1))
        assert holder.unlock(mailbox.id, "pw")  # the password was not changed
        temporary.unlink()
    listing = lbx("mailbox", "list")
    assert listing.returncode == 0 and re.search(
        r"a@example\.org\s+\S+\s+\S+\s+1\s", listing.stdout
    )

"""First boot against a directory tree laid out like the SD card (boot partition at
boot/firmware, root around it): a good letterbox.toml is applied in full, a bad one
changes nothing and is reported, and a second boot does nothing."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import tomllib
from pathlib import Path

import pytest
from letterbox import claim, config, crypto, tomlwrite

from image import boards
from provisioning import firstboot, settings

REPO = Path(__file__).resolve().parents[2]
FAST = crypto.Argon2Limits(opslimit=1, memlimit=8 << 20)


def ssh_key(comment: str = "maker@laptop") -> str:
    """A well-formed ssh-ed25519 public key line (RFC 4253 §6.6 / RFC 8709 blob)."""

    def string(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    blob = string(b"ssh-ed25519") + string(os.urandom(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


@pytest.fixture
def card(tmp_path: Path) -> firstboot.Box:
    """A freshly flashed card: sample letterbox.toml, build-time config, tzdata."""
    box = firstboot.Box(tmp_path / "root")
    box.boot.mkdir(parents=True)
    (box.boot / "letterbox.toml").write_bytes((REPO / "provisioning/letterbox.toml").read_bytes())
    box.config.parent.mkdir(parents=True)
    conf = boards.appliance_config(boards.load("qemu-x86_64"))
    box.config.write_text(tomlwrite.dumps(conf))
    for zone in ("Europe/Berlin", "UTC"):
        path = box.root / "usr/share/zoneinfo" / zone
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"TZif2")
    return box


def snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


def report(box: firstboot.Box) -> dict:
    return json.loads((box.data / firstboot.REPORT_FILE).read_text())


def test_sample_file_gives_a_setup_code(card: firstboot.Box, capsys) -> None:
    assert firstboot.main(["--root", str(card.root)]) == 0
    code = claim.setup_code(card.data)
    assert code and code in (card.boot / firstboot.SETUP_CODE_FILE).read_text()
    assert f"setup code: {code}" in capsys.readouterr().out
    assert not claim.is_claimed(card.data)
    assert (card.data / "box/tls/cert.pem").exists()
    assert (card.root / "etc/hostname").read_text() == "letterbox\n"
    conf = config.load(card.config)
    assert conf.box.hostname == "letterbox.local"
    assert conf.drive.mode == "usb"
    rep = report(card)
    assert rep["ok"] is True and rep["error"] is None
    assert "box-keys" in rep["applied"]
    # SSH stays off: no keys, no host keys, not enabled.
    assert not (card.root / "etc/ssh").exists()
    assert firstboot.is_provisioned(card)


def test_good_file_is_applied_in_full(card: firstboot.Box) -> None:
    admin = crypto.hash_password("correct horse", FAST)
    key = ssh_key()
    (card.boot / "letterbox.toml").write_text(
        tomlwrite.dumps(
            {
                "hostname": "PostBox",
                "timezone": "Europe/Berlin",
                "local_domains": ["example.org", "mail.example.net"],
                "admin_password_hash": admin,
                "ssh_authorized_keys": [key],
                "wifi": {"country": "de", "ssid": "IEEE", "passphrase": "password"},
            }
        )
    )
    result = firstboot.provision(card)
    assert result.ok, result.error
    etc = card.root / "etc"
    assert (etc / "hostname").read_text() == "postbox\n"
    assert "postbox" in (etc / "hosts").read_text()
    assert os.readlink(etc / "localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert (etc / "timezone").read_text() == "Europe/Berlin\n"
    conf = config.load(card.config)
    assert conf.box.hostname == "postbox.local"
    assert conf.smtp.local_domains == ["example.org", "mail.example.net"]
    assert conf.crypto.argon2_memlimit == boards.load("qemu-x86_64").argon2_memlimit
    # Claimed from first boot: the hash is the admin password, and there is no code.
    assert claim.check_admin_password(card.data, "correct horse")
    assert claim.setup_code(card.data) is None
    assert not (card.boot / firstboot.SETUP_CODE_FILE).exists()
    # Wi-Fi: only the derived PSK is kept (IEEE 802.11i H.4 test vector: "password", "IEEE").
    wpa = (etc / "wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "country=DE" in wpa
    assert f"ssid={b'IEEE'.hex()}" in wpa
    assert "psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e" in wpa
    assert "password" not in wpa
    assert (etc / "wpa_supplicant/wpa_supplicant-wlan0.conf").stat().st_mode & 0o077 == 0
    wants = etc / "systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "wpa_supplicant@wlan0.service").endswith("wpa_supplicant@.service")
    # SSH: the key, this box's own host keys, the service enabled.
    assert (card.root / "root/.ssh/authorized_keys").read_text() == key + "\n"
    assert (etc / "ssh/ssh_host_ed25519_key").exists()
    assert (wants / "ssh.service").is_symlink()
    # The boot partition keeps the settings but loses the secrets.
    left = (card.boot / "letterbox.toml").read_text()
    assert "Applied at first boot" in left
    assert admin not in left and 'password"' not in left
    assert tomllib.loads(left)["wifi"] == {"country": "de", "ssid": "IEEE"}
    assert set(report(card)["applied"]) >= {"hostname", "timezone", "wifi", "ssh", "config"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('hostname = "-bad-"', "hostname"),
        ('hostname = "a_b"', "hostname"),
        ("hostname = 7", "hostname"),
        ('timezone = "Mars/Olympus"', "timezone"),
        ('timezone = "../../etc/passwd"', "timezone"),
        ('local_domains = "example.org"', "local_domains"),
        ('local_domains = ["ok.org", "not ok"]', r"local_domains\[1\]"),
        ('admin_password_hash = "hunter2"', "admin_password_hash"),
        ('ssh_authorized_keys = ["ssh-ed25519 notbase64!"]', r"ssh_authorized_keys\[0\]"),
        ('ssh_authorized_keys = ["ssh-dss AAAA"]', r"ssh_authorized_keys\[0\]"),
        ('[wifi]\ncountry = "Germany"\nssid = "x"\npassphrase = "12345678"', "wifi.country"),
        ('[wifi]\ncountry = "DE"\nssid = "x"\npassphrase = "short"', "wifi.passphrase"),
        ('[wifi]\ncountry = "DE"\nssid = "x"', "wifi.passphrase"),
        ('[wifi]\ncountry = "DE"\nssid = ""\npassphrase = "12345678"', "wifi.ssid"),
        ('wifi = "home"', "wifi"),
        ('hostnme = "box"', "unknown key hostnme"),
        ('hostname = "box', "not valid TOML"),
    ],
)
def test_bad_file_changes_nothing_and_names_the_key(
    card: firstboot.Box, text: str, key: str, capsys
) -> None:
    # A good line before the bad one must not be applied either.
    good = 'hostname = "fine"' if text.startswith("timezone") else 'timezone = "UTC"'
    (card.boot / "letterbox.toml").write_text(f"{good}\n{text}\n")
    before = snapshot(card.root)
    assert firstboot.main(["--root", str(card.root)]) == 1
    after = snapshot(card.root)
    report_path = str((card.data / firstboot.REPORT_FILE).relative_to(card.root))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {report_path, "var", "var/lib", "var/lib/letterbox", "var/lib/letterbox/box"}
    rep = report(card)
    assert rep["ok"] is False
    assert re.search(key, rep["error"]), rep["error"]
    out = capsys.readouterr().out
    assert "ERROR" in out and "nothing was changed" in out
    assert not firstboot.is_provisioned(card)


def test_fixed_file_is_applied_on_the_next_boot(card: firstboot.Box) -> None:
    (card.boot / "letterbox.toml").write_text('hostname = "bad_name"\n')
    assert not firstboot.provision(card).ok
    (card.boot / "letterbox.toml").write_text('hostname = "good-name"\n')
    result = firstboot.provision(card)
    assert result.ok and report(card)["ok"] is True
    assert (card.root / "etc/hostname").read_text() == "good-name\n"


def test_second_boot_does_nothing(card: firstboot.Box, capsys) -> None:
    assert firstboot.main(["--root", str(card.root)]) == 0
    code = claim.setup_code(card.data)
    # The maker edits the card again after first boot: nothing is read or changed.
    (card.boot / "letterbox.toml").write_text('hostname = "other"\nbroken = \n')
    before = snapshot(card.root)
    capsys.readouterr()
    assert firstboot.main(["--root", str(card.root)]) == 0
    assert "already provisioned" in capsys.readouterr().out
    assert snapshot(card.root) == before
    assert claim.setup_code(card.data) == code


def test_unit_runs_once_before_the_daemon() -> None:
    unit = (REPO / "provisioning/letterbox-firstboot.service").read_text()
    marker = f"/var/lib/letterbox/{firstboot.MARKER_FILE}"
    assert f"ConditionPathExists=!{marker}" in unit
    assert "Before=letterbox.service" in unit
    assert "StandardOutput=journal+console" in unit


def test_sample_file_is_all_comments_and_documents_every_key() -> None:
    text = (REPO / "provisioning/letterbox.toml").read_text()
    assert settings.parse(text) == settings.Provisioning()
    uncommented = "\n".join(
        line[2:] if (line.startswith("# ") and "=" in line) or line.startswith("# [") else ""
        for line in text.splitlines()
    )
    assert set(tomllib.loads(uncommented)) == set(settings._TOP_KEYS)


def test_wpa_psk_matches_the_standard() -> None:
    # IEEE 802.11i-2004 Annex H.4.1, second test vector.
    assert firstboot.wpa_psk("ThisIsASSID", "ThisIsAPassword") == (
        "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
    )
    assert firstboot.wpa_psk("x", "A" * 64) == "a" * 64

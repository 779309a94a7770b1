"""First boot against a directory tree laid out like the SD card (boot partition at
boot/firmware, root around it): a good letterbox.toml is applied in full, a bad one
changes nothing and is reported, a second boot does nothing, a power cut at any step
finishes on the next boot, and the secrets are erased from a real FAT filesystem."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from letterbox import claim, config, crypto, tomlwrite
from letterbox.lan import mdns

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
        ('hostname = "mail.example.org"', "hostname"),  # one label: it is NAME.local
        (f'hostname = "{"a" * 61}"', "hostname"),  # no room for mDNS's "-2" on a conflict
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


# -- one name: mDNS, box.hostname, the system host name, SETUP-CODE.txt ---------------


@pytest.mark.parametrize("given", ["Kitchen", "kitchen.local", "kitchen.local."])
def test_the_hostname_is_the_name_announced_over_mdns(
    card: firstboot.Box, given: str, capsys
) -> None:
    (card.boot / "letterbox.toml").write_text(f'hostname = "{given}"\n')
    assert firstboot.main(["--root", str(card.root)]) == 0
    conf = config.load(card.config)
    # The daemon announces mdns.name as NAME.local (lan/mdns.py), unchanged by its check.
    assert conf.mdns.name == "kitchen"
    assert mdns.check_name(conf.mdns.name) == "kitchen"
    assert conf.box.hostname == "kitchen.local"
    # The console banner prints the kernel's host name + ".local": the same name.
    assert (card.root / "etc/hostname").read_text() == "kitchen\n"
    banner = (REPO / "image/overlay/usr/lib/letterbox/ready-banner").read_text()
    assert "$(cat /proc/sys/kernel/hostname).local" in banner
    assert "http://kitchen.local/" in (card.boot / firstboot.SETUP_CODE_FILE).read_text()
    assert "setup page: http://kitchen.local/" in capsys.readouterr().out


def test_without_a_hostname_the_box_is_letterbox_local(card: firstboot.Box) -> None:
    # The image's config might name another mDNS name; first boot makes them agree.
    doc = tomllib.loads(card.config.read_text())
    doc["mdns"] = {"name": "stale"}
    card.config.write_text(tomlwrite.dumps(doc))
    assert firstboot.provision(card).ok
    conf = config.load(card.config)
    assert (conf.mdns.name, conf.box.hostname) == ("letterbox", "letterbox.local")
    assert "http://letterbox.local/" in (card.boot / firstboot.SETUP_CODE_FILE).read_text()


# -- the secrets leave the card -------------------------------------------------------

PASSPHRASE = "Zq7-first-boot-passphrase-Zq7"


def secret_file(admin: str) -> str:
    return tomlwrite.dumps(
        {
            "hostname": "kitchen",
            "admin_password_hash": admin,
            "wifi": {"country": "GB", "ssid": "Home", "passphrase": PASSPHRASE},
        }
    )


def test_overwrite_in_place_zeroes_the_same_inode(tmp_path: Path) -> None:
    path = tmp_path / "letterbox.toml"
    secret = (PASSPHRASE * 5000).encode()  # several chunks and a partial one
    path.write_bytes(secret)
    before = path.stat()
    with open(path, "rb") as held:  # a descriptor on the old inode sees the zeros
        firstboot.overwrite_in_place(path)
        after = path.stat()
        assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)
        assert after.st_size == len(secret)
        assert held.read() == bytes(len(secret))


def test_scrub_erases_the_old_file_before_replacing_it(
    card: firstboot.Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the redacted file replaces the maker's, the maker's inode holds only zeros."""
    original = secret_file(crypto.hash_password("pw", FAST)).encode()
    path = card.boot / "letterbox.toml"
    path.write_bytes(original)
    ino = path.stat().st_ino
    seen: list[tuple[int, bytes]] = []
    real = firstboot.write_atomic

    def spy(target: Path, data: bytes, mode: int = 0o644) -> None:
        if target == path:
            seen.append((target.stat().st_ino, target.read_bytes()))
        real(target, data, mode)

    monkeypatch.setattr(firstboot, "write_atomic", spy)
    assert firstboot.provision(card).ok
    assert seen == [(ino, bytes(len(original)))]
    assert PASSPHRASE not in path.read_text()


@pytest.fixture
def disk_boot(card: firstboot.Box, tmp_path: Path) -> Iterator[Path]:
    """The card's boot partition as a real filesystem on a loop device, the maker's file
    already on it (put there by mkfs, so it is on the image and not in a cache).

    ext4, because this machine's kernel has no vfat driver. What is tested holds for
    both: neither copies on write, so writing through a file lands on its own blocks,
    and replacing a file frees its blocks without erasing them."""
    image, src = tmp_path / "boot.img", tmp_path / "boot-src"
    src.mkdir()
    (src / "letterbox.toml").write_text(secret_file(crypto.hash_password("correct horse", FAST)))
    mkfs = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-d", str(src), str(image), "16M"]
    subprocess.run(mkfs, check=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(card.boot)], check=True)
        try:
            yield image
        finally:
            subprocess.run(["umount", str(card.boot)], check=False, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_no_secret_is_left_anywhere_on_the_boot_partition(
    card: firstboot.Box, disk_boot: Path, tmp_path: Path
) -> None:
    admin = tomllib.loads((tmp_path / "boot-src/letterbox.toml").read_text())["admin_password_hash"]
    raw = disk_boot.read_bytes()
    assert PASSPHRASE.encode() in raw and admin.encode() in raw  # the test can see them
    assert firstboot.main(["--root", str(card.root)]) == 0
    left = (card.boot / "letterbox.toml").read_text()
    assert "Applied at first boot" in left and tomllib.loads(left)["hostname"] == "kitchen"
    subprocess.run(["umount", str(card.boot)], check=True)
    # Every byte of the filesystem, freed blocks included (what an undelete tool reads).
    raw = disk_boot.read_bytes()
    assert b"Applied at first boot" in raw
    assert PASSPHRASE.encode() not in raw
    assert admin.encode() not in raw


# -- a power cut at any step ----------------------------------------------------------


class PowerCut(BaseException):
    """Stands for the power going off: nothing after it runs, nothing catches it."""


CRASH_POINTS = [
    "after the config",
    "after the report",
    "after the record",
    "after zeroing the boot file",
    "after the redacted boot file",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_power_cut_at_any_step_finishes_on_the_next_boot(
    card: firstboot.Box, point: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    admin = crypto.hash_password("correct horse", FAST)
    boot_file = card.boot / "letterbox.toml"
    boot_file.write_text(secret_file(admin))
    after_write = {
        "after the config": card.config,
        "after the report": card.data / firstboot.REPORT_FILE,
        "after the record": card.data / firstboot.APPLIED_FILE,
        "after the redacted boot file": boot_file,
    }
    real_write, real_zero = firstboot.write_atomic, firstboot.overwrite_in_place

    def write(target: Path, data: bytes, mode: int = 0o644) -> None:
        real_write(target, data, mode)
        if target == after_write.get(point):
            raise PowerCut(point)

    def zero(target: Path) -> None:
        real_zero(target)
        raise PowerCut(point)

    monkeypatch.setattr(firstboot, "write_atomic", write)
    if point == "after zeroing the boot file":
        monkeypatch.setattr(firstboot, "overwrite_in_place", zero)
    with pytest.raises(PowerCut):
        firstboot.main(["--root", str(card.root)])
    assert not firstboot.is_provisioned(card)  # so the unit runs again on the next boot
    monkeypatch.undo()
    capsys.readouterr()

    assert firstboot.main(["--root", str(card.root)]) == 0
    out = capsys.readouterr().out
    assert "applied:" in out and "wifi" in out and "setup page: http://kitchen.local/" in out
    assert firstboot.is_provisioned(card)
    rep = report(card)
    assert rep["ok"] is True and rep["error"] is None
    assert {"hostname", "wifi", "config", "box-keys", "admin-password"} <= set(rep["applied"])
    assert claim.check_admin_password(card.data, "correct horse")
    wpa = (card.root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert f"psk={firstboot.wpa_psk('Home', PASSPHRASE)}" in wpa
    left = boot_file.read_text()
    assert PASSPHRASE not in left and admin not in left
    assert tomllib.loads(left) == {"hostname": "kitchen", "wifi": {"country": "GB", "ssid": "Home"}}
    assert config.load(card.config).mdns.name == "kitchen"
    # And the boot after that does nothing.
    assert firstboot.main(["--root", str(card.root)]) == 0
    assert "already provisioned" in capsys.readouterr().out

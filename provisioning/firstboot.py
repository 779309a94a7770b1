"""First boot: apply the boot partition's letterbox.toml, make the box's keys and setup
code, grow the root filesystem to the card, and never run again.

Order matters. The whole file is checked first (settings.parse) and the new appliance
config is checked by letterbox.config itself, so a bad file changes nothing and is
reported on the console and in DATA/box/provisioning.json, which `letterbox status`
shows. Then, so that a power cut at any point leaves a box that finishes on the next
boot (the unit runs until the `provisioned` marker exists):

1. Apply: system files, the appliance config, box keys, TLS, the admin hash or the setup
   code. Each file is written atomically and each step only makes what is missing or
   rewrites the same content, so a cut here means the next boot applies the (untouched)
   boot file again with the same outcome.
2. Record success: the report (ok, what was applied), then DATA/box/letterbox.toml.applied,
   the boot file as it is to be left (secrets removed). From here on the boot file is
   never read again: a cut during the scrub would leave it without the Wi-Fi passphrase,
   and re-reading that would refuse the file and report that nothing was applied.
3. Scrub the boot partition from that record (_scrub_boot) and only then write the
   marker. A boot that finds the record but no marker did steps 1–2 already and does
   step 3 again, which is safe to repeat.

Runs as root from letterbox-firstboot.service, before letterbox.service. `root` is a
prefix ("/" on the box) so the same code runs in tests against a directory tree.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from letterbox import claim, config, tls, tomlwrite
from letterbox.boxkeys import BoxKeys
from letterbox.fsutil import write_atomic
from letterbox.status import PROVISIONING_REPORT

from provisioning import growroot, settings
from provisioning.settings import Provisioning, ProvisioningError

BOOT_DIR = "boot/firmware"
DATA_DIR = "var/lib/letterbox"
CONFIG_FILE = "etc/letterbox/letterbox.toml"
REPORT_FILE = PROVISIONING_REPORT  # under DATA_DIR; `letterbox status` shows it
APPLIED_FILE = "box/letterbox.toml.applied"  # under DATA_DIR; the boot file, secrets removed
MARKER_FILE = "box/provisioned"  # under DATA_DIR; the unit's ConditionPathExists=!
SETUP_CODE_FILE = "SETUP-CODE.txt"  # on the boot partition
CONSOLE_PREFIX = "letterbox-firstboot:"
DEFAULT_HOSTNAME = "letterbox"


@dataclass
class Box:
    """Where things live, relative to `root`."""

    root: Path

    @property
    def boot(self) -> Path:
        return self.root / BOOT_DIR

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def live(self) -> bool:
        """True on the box itself: services can be started and the disk grown."""
        return self.root == Path("/")


@dataclass
class Result:
    ok: bool
    error: str | None = None
    applied: list[str] = field(default_factory=list)
    setup_code: str | None = None
    host: str | None = None  # NAME.local: the setup page's address


def say(message: str) -> None:
    """The unit sends stdout to the console as well as the journal."""
    print(f"{CONSOLE_PREFIX} {message}", flush=True)


def is_provisioned(box: Box) -> bool:
    return (box.data / MARKER_FILE).exists()


def _new_config(box: Box, plan: Provisioning) -> tuple[dict[str, dict[str, object]], str]:
    """The appliance config with the maker's choices merged in, and the box's name (one
    label); checked by letterbox.config so the daemon is sure to accept what we write.

    One name everywhere: the daemon announces `mdns.name` as NAME.local (lan/mdns.py),
    `box.hostname` is what it calls itself in SMTP greetings and its TLS certificate, and
    the system host name (which the console banner prints as NAME.local) is NAME too."""
    try:
        doc = tomllib.loads(box.config.read_text()) if box.config.exists() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"the image's {CONFIG_FILE} is damaged: {exc}") from None
    name = plan.hostname or DEFAULT_HOSTNAME
    doc.setdefault("box", {})["hostname"] = f"{name}.local"
    doc.setdefault("mdns", {})["name"] = name
    if plan.local_domains:
        doc.setdefault("smtp", {})["local_domains"] = list(plan.local_domains)
    try:
        config.from_mapping(doc)
    except config.ConfigError as exc:
        raise ProvisioningError(f"the resulting {CONFIG_FILE} would be rejected: {exc}") from None
    return doc, name


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The 256-bit PSK (IEEE 802.11i Annex H.4: PBKDF2-SHA1 over the SSID, 4096 rounds),
    so the passphrase itself is stored nowhere on the box; a 64-hex passphrase is the PSK."""
    if len(passphrase) == 64:
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def _enable(box: Box, unit: str, template: str | None = None) -> None:
    """`systemctl enable` by hand (works on a directory tree), then start it on the box."""
    wants = box.root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        link.symlink_to(f"/lib/systemd/system/{template or unit}")
    if box.live:
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "start", "--no-block", unit], check=False)


def _apply_system(box: Box, plan: Provisioning, name: str, applied: list[str]) -> None:
    etc = box.root / "etc"
    write_atomic(etc / "hostname", f"{name}\n".encode(), mode=0o644)
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    write_atomic(etc / "hosts", hosts.encode(), mode=0o644)
    if box.live:
        socket.sethostname(name)
    applied.append("hostname")
    if plan.timezone:
        localtime = etc / "localtime"
        tmp = etc / "localtime.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f"/usr/share/zoneinfo/{plan.timezone}")
        os.replace(tmp, localtime)
        write_atomic(etc / "timezone", f"{plan.timezone}\n".encode(), mode=0o644)
        applied.append("timezone")
    if plan.wifi:
        w = plan.wifi
        conf = (
            "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\n"
            f"country={w.country}\n\n"
            "network={\n"
            f"\tssid={w.ssid.encode().hex()}\n"
            f"\tpsk={wpa_psk(w.ssid, w.passphrase)}\n"
            "\tkey_mgmt=WPA-PSK\n"
            "}\n"
        )
        path = etc / "wpa_supplicant/wpa_supplicant-wlan0.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, conf.encode(), mode=0o600)
        _enable(box, "wpa_supplicant@wlan0.service", "wpa_supplicant@.service")
        applied.append("wifi")
    if plan.ssh_authorized_keys:
        ssh = box.root / "root/.ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = "".join(f"{k}\n" for k in plan.ssh_authorized_keys)
        write_atomic(ssh / "authorized_keys", keys.encode(), mode=0o600)
        # Host keys are made here, never at build time: every box must have its own.
        (etc / "ssh").mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-A", "-f", str(box.root)], check=True, capture_output=True)
        _enable(box, "ssh.service")
        applied.append("ssh")


def _write_report(box: Box, result: Result) -> None:
    doc = {
        "ok": result.ok,
        "error": result.error,
        "applied": result.applied,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path = box.data / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o644)


def overwrite_in_place(path: Path) -> None:
    """Write zeros over a file's whole length through its own inode and flush them to
    the device, so the blocks that held it no longer do.

    On the FAT boot partition, replacing a file (temporary file, rename) frees the old
    clusters without erasing them: the Wi-Fi passphrase and admin hash would stay on
    the card for any undelete tool or `strings` of a card image. FAT has no copy on
    write, so writing through the existing file lands on those very clusters. The
    fsync matters: dirty pages of a file that is then replaced may be dropped unwritten.
    (An SD card's flash controller may still keep old copies in remapped pages; that
    needs the card's own erase, which no filesystem write can force.)"""
    with open(path, "r+b") as fh:
        left = os.fstat(fh.fileno()).st_size
        zeros = bytes(min(left, 1 << 16))
        while left:
            left -= fh.write(zeros[:left])
        fh.flush()
        os.fsync(fh.fileno())


def _boot_text(plan: Provisioning) -> bytes:
    """What stays on the boot partition: the maker's settings without the secrets."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Applied at first boot ({stamp}). The Wi-Fi passphrase and admin password hash\n"
        "were removed. Editing this file changes nothing now: use the setup page."
    )
    return tomlwrite.dumps(settings.redacted(plan.raw), header).encode()


def _scrub_boot(box: Box, text: bytes) -> None:
    """Replace the maker's file on the card with `text`, erasing the old contents first.
    Safe to repeat after a power cut at any point: a half-zeroed file is zeroed again."""
    path = box.boot / settings.FILE_NAME
    if not path.exists():
        return
    overwrite_in_place(path)
    write_atomic(path, text, mode=0o644)
    if box.live:
        # Tell the card the freed clusters are unused, so its controller may erase them
        # (FITRIM on vfat since Linux 4.19); best effort, a card without discard is fine.
        subprocess.run(["fstrim", str(box.boot)], check=False, capture_output=True)


def _finish(box: Box, result: Result) -> Result:
    """Step 3: scrub the boot partition from the record of step 2, then the marker."""
    _scrub_boot(box, (box.data / APPLIED_FILE).read_bytes())
    write_atomic(box.data / MARKER_FILE, b"", mode=0o644)
    return result


def _resumed(box: Box) -> Result:
    """The result of a first boot that applied everything but was cut off before the
    marker: what its report says, and the setup code if the box is still unclaimed."""
    try:
        applied = json.loads((box.data / REPORT_FILE).read_bytes())["applied"]
    except (OSError, ValueError, KeyError, TypeError):
        applied = []
    try:
        host: str | None = config.load(box.config).box.hostname
    except config.ConfigError:
        host = None
    code = claim.setup_code(box.data)
    return Result(ok=True, applied=list(applied), setup_code=code, host=host)


def provision(box: Box) -> Result:
    """Everything first boot does; returns what happened (also written as the report)."""
    if is_provisioned(box):
        return Result(ok=True, applied=[])
    if (box.data / APPLIED_FILE).exists():
        say("an earlier start applied letterbox.toml but was cut off; finishing")
        return _finish(box, _resumed(box))
    try:
        plan = settings.read(box.boot, box.root / "usr/share/zoneinfo")
        doc, name = _new_config(box, plan)
    except ProvisioningError as exc:
        result = Result(ok=False, error=f"{settings.FILE_NAME} was not applied: {exc}")
        _write_report(box, result)
        return result

    # Step 1: apply.
    applied: list[str] = []
    if box.live:
        grown = growroot.grow_root()
        if grown:
            applied.append("grow-root")
            say(grown)
    _apply_system(box, plan, name, applied)
    box.config.parent.mkdir(parents=True, exist_ok=True)
    header = "Letterbox settings. Written by the image build and first boot; see README."
    write_atomic(box.config, tomlwrite.dumps(doc, header).encode(), mode=0o644)
    applied.append("config")

    host = f"{name}.local"
    box.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    BoxKeys.load_or_create(box.data)
    tls.ensure_self_signed(box.data, host)
    applied.append("box-keys")
    code = None
    if plan.admin_password_hash:
        claim.claim(box.data, plan.admin_password_hash)
        applied.append("admin-password")
    else:
        code = claim.setup_code(box.data)
    if code:
        note = (
            f"Letterbox setup code: {code}\n\n"
            f"Open http://{host}/ and type this code to claim the box.\n"
            "It stops working once the box is claimed.\n"
        )
        write_atomic(box.boot / SETUP_CODE_FILE, note.encode(), mode=0o644)

    # Step 2: record success, then what the boot file is to become.
    result = Result(ok=True, applied=applied, setup_code=code, host=host)
    _write_report(box, result)
    write_atomic(box.data / APPLIED_FILE, _boot_text(plan), mode=0o600)
    # Step 3.
    return _finish(box, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="the box's root (tests)")
    args = parser.parse_args(argv)
    box = Box(args.root)
    if is_provisioned(box):
        say("already provisioned; nothing to do")
        return 0
    result = provision(box)
    if not result.ok:
        say(f"ERROR: {result.error}")
        say("Fix letterbox.toml on the boot partition and restart; nothing was changed.")
        return 1
    say(f"applied: {', '.join(result.applied)}")
    if result.host:
        say(f"setup page: http://{result.host}/")
    if result.setup_code:
        say(f"setup code: {result.setup_code} (also in {SETUP_CODE_FILE} on the boot partition)")
    else:
        say("the box is claimed with the admin password hash from letterbox.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""First boot: apply the boot partition's letterbox.toml, make the box's keys and setup
code, grow the root filesystem to the card, and never run again.

Order matters. The whole file is checked first (settings.parse) and the new appliance
config is checked by letterbox.config itself, so a bad file changes nothing and is
reported on the console and in DATA/box/provisioning.json, which `letterbox status`
shows. Only then is anything written, each file atomically; the `provisioned` marker is
written last, so a power cut during first boot means it runs again, which is safe
because every step is idempotent.

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


def say(message: str) -> None:
    """The unit sends stdout to the console as well as the journal."""
    print(f"{CONSOLE_PREFIX} {message}", flush=True)


def is_provisioned(box: Box) -> bool:
    return (box.data / MARKER_FILE).exists()


def _new_config(box: Box, plan: Provisioning) -> tuple[dict[str, dict[str, object]], str]:
    """The appliance config with the maker's choices merged in, and the box's name;
    checked by letterbox.config so the daemon is sure to accept what we write."""
    try:
        doc = tomllib.loads(box.config.read_text()) if box.config.exists() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"the image's {CONFIG_FILE} is damaged: {exc}") from None
    hostname = plan.hostname or DEFAULT_HOSTNAME
    # A bare name is announced over mDNS as NAME.local; a dotted name is used as given.
    fqdn = hostname if "." in hostname else f"{hostname}.local"
    doc.setdefault("box", {})["hostname"] = fqdn
    if plan.local_domains:
        doc.setdefault("smtp", {})["local_domains"] = list(plan.local_domains)
    try:
        config.from_mapping(doc)
    except config.ConfigError as exc:
        raise ProvisioningError(f"the resulting {CONFIG_FILE} would be rejected: {exc}") from None
    return doc, fqdn


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


def _apply_system(box: Box, plan: Provisioning, short: str, applied: list[str]) -> None:
    etc = box.root / "etc"
    write_atomic(etc / "hostname", f"{short}\n".encode(), mode=0o644)
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{short}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    write_atomic(etc / "hosts", hosts.encode(), mode=0o644)
    if box.live:
        socket.sethostname(short)
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


def _scrub_boot(box: Box, plan: Provisioning) -> None:
    """Leave the maker's file on the card without its secrets, saying it was applied."""
    path = box.boot / settings.FILE_NAME
    if not path.exists():
        return
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Applied at first boot ({stamp}). The Wi-Fi passphrase and admin password hash\n"
        "were removed. Editing this file changes nothing now: use the setup page."
    )
    write_atomic(path, tomlwrite.dumps(settings.redacted(plan.raw), header).encode(), mode=0o644)


def provision(box: Box) -> Result:
    """Everything first boot does; returns what happened (also written as the report)."""
    if is_provisioned(box):
        return Result(ok=True, applied=[])
    try:
        plan = settings.read(box.boot, box.root / "usr/share/zoneinfo")
        doc, fqdn = _new_config(box, plan)
    except ProvisioningError as exc:
        result = Result(ok=False, error=f"{settings.FILE_NAME} was not applied: {exc}")
        _write_report(box, result)
        return result

    applied: list[str] = []
    if box.live:
        grown = growroot.grow_root()
        if grown:
            applied.append("grow-root")
            say(grown)
    _apply_system(box, plan, fqdn.split(".", 1)[0], applied)
    box.config.parent.mkdir(parents=True, exist_ok=True)
    header = "Letterbox settings. Written by the image build and first boot; see README."
    write_atomic(box.config, tomlwrite.dumps(doc, header).encode(), mode=0o644)
    applied.append("config")

    box.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    BoxKeys.load_or_create(box.data)
    tls.ensure_self_signed(box.data, fqdn)
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
            f"Open http://{fqdn}/ and type this code to claim the box.\n"
            "It stops working once the box is claimed.\n"
        )
        write_atomic(box.boot / SETUP_CODE_FILE, note.encode(), mode=0o644)
    _scrub_boot(box, plan)
    result = Result(ok=True, applied=applied, setup_code=code)
    _write_report(box, result)
    write_atomic(box.data / MARKER_FILE, b"", mode=0o644)
    return result


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
    if result.setup_code:
        say(f"setup code: {result.setup_code} (also in {SETUP_CODE_FILE} on the boot partition)")
    else:
        say("the box is claimed with the admin password hash from letterbox.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The maker's letterbox.toml on the boot partition: read and checked in full before
anything is applied, so a typo leaves the box exactly as flashed instead of half set up.

Every error names the key, because the person reading it is looking at a text file on
an SD card in another computer.
"""

from __future__ import annotations

import base64
import re
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from letterbox import crypto
from letterbox.lan import mdns

FILE_NAME = "letterbox.toml"

# RFC 1123 §2.1: a host name label is letters, digits and hyphens, 1–63 characters, not
# starting or ending with a hyphen; RFC 1035 §2.3.4 caps the whole name at 253.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# The key types OpenSSH accepts in authorized_keys (sshd(8) "AUTHORIZED_KEYS FILE FORMAT").
SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

_TOP_KEYS = (
    "hostname",
    "timezone",
    "local_domains",
    "admin_password_hash",
    "ssh_authorized_keys",
    "wifi",
)
_WIFI_KEYS = ("country", "ssid", "passphrase")
# Values that must not stay on the boot partition (readable by anyone who holds the card).
SECRET_KEYS = ("admin_password_hash", "wifi.passphrase")


class ProvisioningError(ValueError):
    """A letterbox.toml that cannot be applied; the message names the key."""


@dataclass(frozen=True)
class Wifi:
    country: str
    ssid: str
    passphrase: str


@dataclass(frozen=True)
class Provisioning:
    """What the maker asked for; None/empty means "keep the image's default"."""

    hostname: str | None = None  # one label: the box is NAME.local
    timezone: str | None = None
    local_domains: tuple[str, ...] = ()
    admin_password_hash: str | None = None
    ssh_authorized_keys: tuple[str, ...] = ()
    wifi: Wifi | None = None
    raw: dict[str, object] = field(default_factory=dict, compare=False)


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ProvisioningError(f"{key}: expected a quoted string, got {value!r}")
    return value


def _string_list(key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProvisioningError(f'{key}: expected a list of strings, e.g. ["a", "b"]')
    return value


def check_hostname(key: str, value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name or len(name) > 253 or not all(_LABEL.match(p) for p in name.split(".")):
        raise ProvisioningError(
            f"{key}: {value!r} is not a host name (letters, digits and hyphens, "
            "no hyphen at either end, dots between labels)"
        )
    return name


def check_box_name(value: str) -> str:
    """The box's own name: one label, announced over mDNS as NAME.local (RFC 6762 §3) and
    used as the system host name, so the console, SETUP-CODE.txt and the LAN all agree.
    The mDNS announcer's own rule decides (at most 60 characters, leaving room for the
    "-2" it appends on a name conflict); "kitchen.local" means "kitchen". A dotted name
    such as mail.example.org is refused: the name other mail servers use is the public
    host name on the setup page, not this one."""
    try:
        return mdns.check_name(value.strip().rstrip("."))
    except mdns.MdnsError:
        raise ProvisioningError(
            f"hostname: {value!r} is not a name for the box: one word of letters, digits "
            "and hyphens, at most 60 characters, no hyphen at either end, e.g. kitchen "
            "(the box answers at kitchen.local)"
        ) from None


def check_timezone(value: str, zoneinfo: Path) -> str:
    """An IANA zone name that exists in the image's tzdata (e.g. Europe/Berlin)."""
    if not _TIMEZONE.match(value) or ".." in value:
        raise ProvisioningError(f"timezone: {value!r} is not a time zone name like Europe/Berlin")
    if not (zoneinfo / value).is_file():
        raise ProvisioningError(
            f"timezone: {value!r} is not a known time zone "
            "(e.g. Europe/Berlin, America/New_York, UTC)"
        )
    return value


def check_ssh_key(index: int, line: str) -> str:
    """One authorized_keys line: a known type and a base64 blob whose first field repeats
    the type (RFC 4253 §6.6: the key blob starts with the algorithm name as a string)."""
    key = f"ssh_authorized_keys[{index}]"
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ProvisioningError(
            f"{key}: expected a public key line like 'ssh-ed25519 AAAA... you@laptop' "
            "(the contents of ~/.ssh/id_ed25519.pub)"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4 : 4 + length].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        raise ProvisioningError(f"{key}: the key data is damaged (not base64)") from None
    if named != parts[0]:
        raise ProvisioningError(
            f"{key}: the key data says {named!r} but the line says {parts[0]!r}"
        )
    if "\n" in line or "\r" in line:
        raise ProvisioningError(f"{key}: one key per list entry")
    return " ".join(parts)


def check_wifi(body: object) -> Wifi:
    if not isinstance(body, dict):
        raise ProvisioningError("wifi: must be a table ([wifi])")
    for k in body:
        if k not in _WIFI_KEYS:
            raise ProvisioningError(f"unknown key wifi.{k} (known: {', '.join(_WIFI_KEYS)})")
    for k in _WIFI_KEYS:
        if k not in body:
            raise ProvisioningError(f"wifi.{k}: missing (Wi-Fi needs country, ssid and passphrase)")
    country = _string("wifi.country", body["country"]).upper()
    if not _COUNTRY.match(country):
        raise ProvisioningError(
            f"wifi.country: {body['country']!r} is not a two-letter country code such as GB or DE"
        )
    ssid = _string("wifi.ssid", body["ssid"])
    if not 1 <= len(ssid.encode()) <= 32:
        raise ProvisioningError("wifi.ssid: a network name is 1 to 32 bytes (IEEE 802.11)")
    passphrase = _string("wifi.passphrase", body["passphrase"])
    # IEEE 802.11i Annex H.4: a WPA2 passphrase is 8–63 printable ASCII characters
    # (a 64-digit hex string is the raw PSK instead).
    hex_psk = len(passphrase) == 64 and all(c in "0123456789abcdefABCDEF" for c in passphrase)
    if not hex_psk and not (
        8 <= len(passphrase) <= 63 and all(32 <= ord(c) <= 126 for c in passphrase)
    ):
        raise ProvisioningError(
            "wifi.passphrase: a WPA2 passphrase is 8 to 63 printable ASCII characters"
        )
    return Wifi(country=country, ssid=ssid, passphrase=passphrase)


def parse(text: str, zoneinfo: Path = Path("/usr/share/zoneinfo")) -> Provisioning:
    """Check a whole letterbox.toml; raises ProvisioningError naming the first bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisioningError(f"not valid TOML: {exc}") from None
    for k in data:
        if k not in _TOP_KEYS:
            raise ProvisioningError(f"unknown key {k} (known: {', '.join(_TOP_KEYS)})")
    out: dict[str, object] = {"raw": data}
    if "hostname" in data:
        out["hostname"] = check_box_name(_string("hostname", data["hostname"]))
    if "timezone" in data:
        out["timezone"] = check_timezone(_string("timezone", data["timezone"]), zoneinfo)
    if "local_domains" in data:
        domains = _string_list("local_domains", data["local_domains"])
        out["local_domains"] = tuple(
            check_hostname(f"local_domains[{i}]", d) for i, d in enumerate(domains)
        )
    if "admin_password_hash" in data:
        value = _string("admin_password_hash", data["admin_password_hash"]).strip()
        if not crypto.is_password_hash(value):
            raise ProvisioningError(
                "admin_password_hash: expected an Argon2id hash starting with $argon2id$v=19$ "
                "(make one with `.venv/bin/python -m image.hash_password` in the Letterbox "
                "sources), or remove the line to claim the box with the setup code"
            )
        out["admin_password_hash"] = value
    if "ssh_authorized_keys" in data:
        keys = _string_list("ssh_authorized_keys", data["ssh_authorized_keys"])
        out["ssh_authorized_keys"] = tuple(check_ssh_key(i, k) for i, k in enumerate(keys))
    if "wifi" in data:
        out["wifi"] = check_wifi(data["wifi"])
    return Provisioning(**out)  # type: ignore[arg-type]


def read(boot_dir: Path, zoneinfo: Path = Path("/usr/share/zoneinfo")) -> Provisioning:
    """The boot partition's letterbox.toml; no file means every default."""
    path = boot_dir / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Provisioning()
    try:
        text = raw.decode("utf-8-sig")  # editors on Windows may add a BOM
    except UnicodeDecodeError:
        raise ProvisioningError(f"{FILE_NAME} is not UTF-8 text") from None
    return parse(text, zoneinfo)


def redacted(raw: dict[str, object]) -> dict[str, object]:
    """The file's contents with the secrets taken out, to leave on the boot partition."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    out.pop("admin_password_hash", None)
    wifi = out.get("wifi")
    if isinstance(wifi, dict):
        wifi.pop("passphrase", None)
    return out

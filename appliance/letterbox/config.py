"""Settings: embedded defaults that serve on a laptop, overridable by one TOML file.

Every setting has a default, so `letterbox run --dev` needs no file at all. A file
may override any of them; an unknown key or a bad value is an error that names the
key, because a typo silently ignored on an appliance is a support call later.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, get_type_hints


class ConfigError(ValueError):
    """A configuration file that cannot be used as written."""


class Size(int):
    """A byte count written as `2G`, `64M`, `512K` or a plain number in a config file."""

    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "K": 1 << 10,
        "M": 1 << 20,
        "G": 1 << 30,
        "T": 1 << 40,
    }
    _PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)

    @classmethod
    def parse(cls, value: object) -> Size:
        if isinstance(value, bool):
            raise ValueError("expected a size such as 2G, 64M or 1048576")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a size cannot be negative")
            return cls(value)
        if isinstance(value, str):
            m = cls._PATTERN.match(value)
            if m:
                return cls(int(Fraction(m.group(1)) * cls._UNITS[m.group(2).upper()]))
        raise ValueError(f"expected a size such as 2G, 64M or 1048576, got {value!r}")

    def human(self) -> str:
        for unit in ("T", "G", "M", "K"):
            scale = self._UNITS[unit]
            if self >= scale and self % scale == 0:
                return f"{self // scale}{unit}"
        return str(int(self))


@dataclass(frozen=True)
class BoxSettings:
    # The name the box gives itself in SMTP greetings and Received headers.
    hostname: str = "letterbox.local"
    # The household's public host name, which its MX record points at (set on the
    # setup page's mail settings). Empty: not known yet.
    public_hostname: str = ""


@dataclass(frozen=True)
class DriveSettings:
    # Where the drive is mounted. Empty: a directory `drive/` under --data (development).
    path: str = ""
    # Free space kept on the drive's filesystem for the index and the system.
    reserve: Size = Size(64 << 20)
    # Deliveries older than this many days are removed. 0 keeps mail until quota eviction.
    keep_days: int = 0
    # Concurrent commits share one index transaction and fsync (see drive/committer.py).
    group_commit: bool = True
    # How blobs are made durable: "syncfs" (one per commit batch; for a drive that is a
    # filesystem of its own), "fsync" (per file), or "auto" (syncfs on a mount point).
    sync: str = "auto"
    # "directory": the drive is `path` (or DATA/drive), always there (development).
    # "usb": USB block devices are watched; the adopted drive is mounted at `path`
    # (the appliance: /media/letterbox), offline while unplugged (letterbox/usb/).
    mode: str = "directory"
    # Offer loop devices as drives too (tests and demos; never on the appliance).
    allow_loop: bool = False


@dataclass(frozen=True)
class MailboxSettings:
    default_quota: Size = Size(2 << 30)


@dataclass(frozen=True)
class CryptoSettings:
    # Argon2id limits for wrapping mailbox keys under a password. The defaults are
    # libsodium's INTERACTIVE level, which a 512 MB board can afford (docs/findings.md, "PyNaCl").
    argon2_opslimit: int = 2
    argon2_memlimit: Size = Size(64 << 20)


@dataclass(frozen=True)
class SmtpSettings:
    # Domains the box accepts mail for, besides those of its mailboxes.
    local_domains: list[str] = field(default_factory=list)
    max_message_size: Size = Size(50 << 20)
    max_recipients: int = 100
    # The mailbox (its address) that gets postmaster@ and abuse@ of every local domain
    # and bare <postmaster> (RFC 5321 §4.5.1, RFC 2142) unless a mailbox of that name
    # exists. Empty, or a mailbox that no longer exists: the first mailbox.
    postmaster: str = ""
    # Idle timeout in seconds; DATA progress counts as activity.
    timeout: int = 300
    max_connections_per_address: int = 20
    max_bad_commands: int = 10
    # The longest line accepted in a message, CRLF included; 0 for no limit.
    # RFC 5321's 1000 is what every server must accept, not a ceiling: real mail
    # has longer lines, and streaming makes them cost no memory.
    max_line_length: Size = Size(1 << 20)
    # Where to listen. Empty: all interfaces, or 127.0.0.1 with --dev.
    listen_address: str = ""
    # 0: the standard port 25, or 2525 with --dev.
    port: int = 0
    # PEM certificate chain and key for STARTTLS. Empty: a self-signed pair made
    # on first run under DATA/box/tls/.
    tls_cert: str = ""
    tls_key: str = ""
    # Seconds a session in the middle of a message gets to finish when the box stops.
    shutdown_grace: int = 20


@dataclass(frozen=True)
class Pop3Settings:
    # Where to listen. Empty: all interfaces, or 127.0.0.1 with --dev.
    listen_address: str = ""
    # 0: the standard ports 110 (STLS) and 995 (implicit TLS), or 1110 and 1995 with --dev.
    port: int = 0
    tls_port: int = 0
    # USER/PASS before STLS on the plain port (RFC 2595 §2.1 says refuse by default).
    # --dev allows it on loopback regardless.
    allow_plaintext_login: bool = False
    # Idle seconds before a session is closed (RFC 1939 §3: at least 10 minutes).
    timeout: int = 600
    max_connections_per_address: int = 20
    max_bad_commands: int = 10
    # Failed logins are answered after this many seconds (unknown user and wrong
    # password alike); after max_failed_logins failures from one address (IPv6:
    # one /64) within failed_login_window seconds, its logins are refused unchecked
    # until the oldest failures are that old.
    failed_login_delay: int = 2
    max_failed_logins: int = 10
    failed_login_window: int = 900
    # Seconds a command in progress (a RETR) gets to finish when the box stops.
    shutdown_grace: int = 10


@dataclass(frozen=True)
class WebSettings:
    # Where to listen. Empty: all interfaces, or 127.0.0.1 with --dev.
    listen_address: str = ""
    # 0: the standard port 80, or 8080 with --dev.
    port: int = 0
    # The setup page answers only the LAN (loopback, private, link-local addresses)
    # unless this is true.
    allow_remote: bool = False


@dataclass(frozen=True)
class MdnsSettings:
    # Announce the box on the LAN over mDNS: NAME.local and its services.
    enabled: bool = True
    # The host name without ".local"; on a conflict the box takes NAME-2, NAME-3, ...
    name: str = "letterbox"
    # Interface names to announce on (e.g. ["eth0", "wlan0"]). Empty: every interface
    # but loopback.
    interfaces: list[str] = field(default_factory=list)
    # --dev announces nothing unless this is true: a developer's laptop must not offer
    # a mail server to its LAN.
    announce_in_dev: bool = False


@dataclass(frozen=True)
class LogSettings:
    # Debug adds addresses and subjects to logs; off by default for privacy.
    debug: bool = False


@dataclass(frozen=True)
class Config:
    box: BoxSettings = field(default_factory=BoxSettings)
    drive: DriveSettings = field(default_factory=DriveSettings)
    mailbox: MailboxSettings = field(default_factory=MailboxSettings)
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    pop3: Pop3Settings = field(default_factory=Pop3Settings)
    web: WebSettings = field(default_factory=WebSettings)
    log: LogSettings = field(default_factory=LogSettings)
    mdns: MdnsSettings = field(default_factory=MdnsSettings)

    def drive_path(self, data_dir: Path) -> Path:
        return Path(self.drive.path) if self.drive.path else data_dir / "drive"


def _coerce(key: str, kind: Any, value: object) -> object:
    try:
        if kind is Size:
            return Size.parse(value)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected a whole number, got {value!r}")
            if value < 0:
                raise ValueError("cannot be negative")
            return value
        if kind is str:
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
        if kind == list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected a list of strings, got {value!r}")
            return list(value)
    except ValueError as exc:
        raise ConfigError(f"setting '{key}': {exc}") from None
    raise AssertionError(f"no coercion for {kind!r}")


def from_mapping(data: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, naming the first unknown key or bad value."""
    sections: dict[str, Any] = {}  # each a settings dataclass, checked as it is built
    hints = get_type_hints(Config)
    for name, body in data.items():
        if name not in hints:
            raise ConfigError(f"unknown section '{name}' (known: {', '.join(hints)})")
        if not isinstance(body, dict):
            raise ConfigError(f"'{name}' must be a table ([{name}])")
        cls = hints[name]
        field_types = get_type_hints(cls)
        values = {}
        for key, value in body.items():
            if key not in field_types:
                known = ", ".join(f.name for f in dataclasses.fields(cls))
                raise ConfigError(f"unknown setting '{name}.{key}' (known: {known})")
            values[key] = _coerce(f"{name}.{key}", field_types[key], value)
        sections[name] = cls(**values)
    drive = sections.get("drive")
    if isinstance(drive, DriveSettings) and drive.sync not in ("auto", "syncfs", "fsync"):
        raise ConfigError(
            f"setting 'drive.sync': expected auto, syncfs or fsync, got {drive.sync!r}"
        )
    if isinstance(drive, DriveSettings) and drive.mode not in ("directory", "usb"):
        raise ConfigError(f"setting 'drive.mode': expected directory or usb, got {drive.mode!r}")
    if isinstance(drive, DriveSettings) and drive.mode == "usb" and not drive.path.startswith("/"):
        raise ConfigError(
            "setting 'drive.path': with drive.mode = \"usb\" it must be the absolute mount "
            "point, e.g. /media/letterbox"
        )
    return Config(**sections)


def load(path: Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML file, or return the embedded defaults when there is none.

    `overrides` (section -> {key: value}, e.g. what the setup page saved in
    DATA/box/settings.toml) win over the file, key by key.
    """
    if path is None:
        return from_mapping(_merge({}, overrides))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    return from_mapping(_merge(data, overrides))


def _merge(data: dict[str, Any], overrides: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    merged = {name: dict(body) if isinstance(body, dict) else body for name, body in data.items()}
    for name, body in (overrides or {}).items():
        section = merged.setdefault(name, {})
        if isinstance(section, dict):
            section.update(body)
    return merged

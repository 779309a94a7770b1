"""Board configs: one TOML per board under board-configs/, checked before anything is built.

A board config is read by a maker who edits it and by a build that takes twenty minutes
to fail on a typo, so every unknown key, missing key and bad value is rejected up front
with a message naming the key (`board-configs/rpi4.toml: boot.method: ...`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from letterbox.config import Size

CONFIG_DIR = Path(__file__).resolve().parent.parent / "board-configs"

ARCHITECTURES = ("amd64", "arm64")
SUITES = ("bookworm",)
BOOT_METHODS = ("direct-kernel", "raspi-firmware")
# The Python wheels installed in the image are built for 64-bit only (docs/findings.md, "PyNaCl":
# PyNaCl has no armv7l wheels), and QEMU needs to know which system to emulate.
QEMU_SYSTEMS = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}

_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
_CONSOLE = re.compile(r"^tty[A-Za-z]+[0-9]+(,[0-9]+)?$")


class BoardError(ValueError):
    """A board config that cannot be built as written; the message names the key."""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    architecture: str
    suite: str
    ram: Size
    kernel: tuple[str, ...]
    kernel_suite: str
    firmware: tuple[str, ...]
    boot_method: str
    console: str
    initrd_modules: tuple[str, ...]
    image_size: Size
    boot_size: Size
    argon2_opslimit: int
    argon2_memlimit: Size
    default_quota: Size
    memory_high: Size
    memory_max: Size

    @property
    def console_device(self) -> str:
        """`ttyS1,115200` → `ttyS1`: the device name without the baud rate."""
        return self.console.split(",", 1)[0]

    @property
    def root_size(self) -> Size:
        """The ext4 root: the image less the 4 MiB before the boot partition."""
        return Size(self.image_size - self.boot_size - (4 << 20))


# section → key → (kind, required). Kinds: str, size, int, strlist.
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "board": {
        "description": ("str", True),
        "architecture": ("str", True),
        "suite": ("str", True),
        "ram": ("size", True),
    },
    "packages": {
        "kernel": ("strlist", True),
        "kernel_suite": ("str", False),
        "firmware": ("strlist", True),
    },
    "boot": {
        "method": ("str", True),
        "console": ("str", True),
        "initrd_modules": ("strlist", True),
    },
    "image": {"size": ("size", True), "boot_size": ("size", True)},
    "tuning": {
        "argon2_opslimit": ("int", True),
        "argon2_memlimit": ("size", True),
        "default_quota": ("size", True),
        "memory_high": ("size", True),
        "memory_max": ("size", True),
    },
}


def _value(key: str, kind: str, raw: object) -> object:
    if kind == "str":
        if not isinstance(raw, str) or not raw.strip():
            raise BoardError(f"{key}: expected a non-empty string, got {raw!r}")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise BoardError(f"{key}: expected a positive whole number, got {raw!r}")
        return raw
    if kind == "size":
        try:
            size = Size.parse(raw)
        except ValueError as exc:
            raise BoardError(f"{key}: {exc}") from None
        if size == 0:
            raise BoardError(f"{key}: must be more than zero")
        return size
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise BoardError(f"{key}: expected a list of strings, got {raw!r}")
    return tuple(raw)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BoardError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")


def from_mapping(name: str, data: dict[str, object]) -> Board:
    """Check a parsed board config against the schema and the rules between its keys."""
    values: dict[str, object] = {}
    for section in data:
        if section not in _SCHEMA:
            raise BoardError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
    for section, keys in _SCHEMA.items():
        body = data.get(section)
        if body is None:
            raise BoardError(f"missing section [{section}]")
        if not isinstance(body, dict):
            raise BoardError(f"{section}: must be a table ([{section}])")
        for key in body:
            if key not in keys:
                raise BoardError(
                    f"unknown key {section}.{key} (known in [{section}]: {', '.join(keys)})"
                )
        for key, (kind, required) in keys.items():
            if key not in body:
                if required:
                    raise BoardError(f"missing key {section}.{key}")
                continue
            values[f"{section}.{key}"] = _value(f"{section}.{key}", kind, body[key])

    board = Board(
        name=name,
        description=str(values["board.description"]),
        architecture=str(values["board.architecture"]),
        suite=str(values["board.suite"]),
        ram=values["board.ram"],  # type: ignore[arg-type]
        kernel=values["packages.kernel"],  # type: ignore[arg-type]
        kernel_suite=str(values.get("packages.kernel_suite", values["board.suite"])),
        firmware=values["packages.firmware"],  # type: ignore[arg-type]
        boot_method=str(values["boot.method"]),
        console=str(values["boot.console"]),
        initrd_modules=values["boot.initrd_modules"],  # type: ignore[arg-type]
        image_size=values["image.size"],  # type: ignore[arg-type]
        boot_size=values["image.boot_size"],  # type: ignore[arg-type]
        argon2_opslimit=values["tuning.argon2_opslimit"],  # type: ignore[arg-type]
        argon2_memlimit=values["tuning.argon2_memlimit"],  # type: ignore[arg-type]
        default_quota=values["tuning.default_quota"],  # type: ignore[arg-type]
        memory_high=values["tuning.memory_high"],  # type: ignore[arg-type]
        memory_max=values["tuning.memory_max"],  # type: ignore[arg-type]
    )
    _check_rules(board)
    return board


def _check_rules(b: Board) -> None:
    _choice("board.architecture", b.architecture, ARCHITECTURES)
    _choice("board.suite", b.suite, SUITES)
    _choice("packages.kernel_suite", b.kernel_suite, (b.suite, f"{b.suite}-backports"))
    _choice("boot.method", b.boot_method, BOOT_METHODS)
    if not b.kernel:
        raise BoardError("packages.kernel: name at least one kernel package")
    for key, names in (("packages.kernel", b.kernel), ("packages.firmware", b.firmware)):
        for pkg in names:
            if not _PACKAGE.match(pkg):
                raise BoardError(f"{key}: {pkg!r} is not a Debian package name")
    if b.boot_method == "raspi-firmware" and "raspi-firmware" not in b.firmware:
        raise BoardError("packages.firmware: boot.method raspi-firmware needs raspi-firmware")
    if b.boot_method == "raspi-firmware" and b.architecture != "arm64":
        raise BoardError("board.architecture: raspi-firmware boards are arm64")
    if not _CONSOLE.match(b.console):
        raise BoardError(
            f"boot.console: expected a device like ttyS0 or ttyS1,115200, got {b.console!r}"
        )
    for module in b.initrd_modules:
        if not _MODULE.match(module):
            raise BoardError(f"boot.initrd_modules: {module!r} is not a kernel module name")
    if b.ram < (256 << 20):
        raise BoardError("board.ram: Letterbox needs at least 256M")
    if b.boot_size < (64 << 20):
        raise BoardError("image.boot_size: at least 64M (kernel, initrd, firmware)")
    if b.root_size < (1 << 30):
        raise BoardError(
            f"image.size: {b.image_size.human()} leaves {Size(max(b.root_size, 0)).human()} "
            "for the root filesystem; it needs at least 1G"
        )
    if b.argon2_memlimit < (8 << 20):
        raise BoardError("tuning.argon2_memlimit: below 8M is too weak to protect a password")
    if b.argon2_opslimit > 10:
        raise BoardError("tuning.argon2_opslimit: above 10 a login takes many seconds on a Pi")
    if b.memory_high > b.memory_max:
        raise BoardError("tuning.memory_high: must not exceed tuning.memory_max")
    if b.memory_max > b.ram // 2:
        raise BoardError(
            f"tuning.memory_max: {b.memory_max.human()} is more than half of board.ram "
            f"({b.ram.human()}); the kernel, page cache and SSH need the rest"
        )
    # Two Argon2id hashes at once (a POP3 login during a setup-page login) must fit in
    # the cap with room for the daemon itself (about 60 MB resident).
    if 2 * b.argon2_memlimit + (64 << 20) > b.memory_high:
        raise BoardError(
            f"tuning.argon2_memlimit: two hashes of {b.argon2_memlimit.human()} and the daemon "
            f"do not fit under tuning.memory_high ({b.memory_high.human()})"
        )


def load_file(path: Path) -> Board:
    """Read and check one board config; errors start with the file's path."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return from_mapping(path.stem, data)
    except FileNotFoundError:
        raise BoardError(f"{path}: no such board config") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"{path}: not valid TOML: {exc}") from None
    except BoardError as exc:
        raise BoardError(f"{path}: {exc}") from None


def names(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.toml"))


def load(name: str, config_dir: Path = CONFIG_DIR) -> Board:
    """A board by name (`rpi4`), listing the known boards when there is no such name."""
    path = config_dir / f"{name}.toml"
    if not path.exists():
        raise BoardError(f"no board named {name!r} (known: {', '.join(names(config_dir))})")
    return load_file(path)


def appliance_config(board: Board) -> dict[str, dict[str, object]]:
    """The build-time /etc/letterbox/letterbox.toml: the board's tuning and the USB drive."""
    return {
        "drive": {"mode": "usb", "path": "/media/letterbox"},
        "mailbox": {"default_quota": board.default_quota.human()},
        "crypto": {
            "argon2_opslimit": board.argon2_opslimit,
            "argon2_memlimit": board.argon2_memlimit.human(),
        },
    }

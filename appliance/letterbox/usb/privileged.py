"""The privileged steps of drive management, and nothing else: mount, unmount, mkfs.ext4.

Everything that needs root to touch a block device lives here, so it can be read
in one sitting (docs/design.md, "Rules the design keeps": privileged actions apart). Each step runs
a fixed argv with `subprocess` (never a shell), after checking that the device is
a block device under /dev and the mount point an absolute path, so nothing a
person typed on the setup page reaches a command line unchecked.

Mount options (mount(8), ext4(5)): `nodev,nosuid,noexec` because the drive is a
removable medium anyone could have written; `noatime` so reading mail does not
write to flash; for ext4 `errors=remount-ro`, so a failing drive stops taking
writes (the box then goes offline and answers 451) instead of corrupting itself.

Two read-only probes serve udev-less machines and Letterbox drives that are not
mounted: `probe` (blkid in udev format: the same ID_FS_* properties udev's blkid
builtin adds) and `read_drive_id` (debugfs reads letterbox/DRIVE off an ext4
filesystem without mounting it).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from pathlib import Path

log = logging.getLogger("letterbox.usb")

MOUNT_OPTIONS = "nodev,nosuid,noexec,noatime"
EXT4_OPTIONS = MOUNT_OPTIONS + ",errors=remount-ro"
LABEL = "LETTERBOX"  # the filesystem label `format` gives a drive
TIMEOUT = 300.0  # seconds; mkfs of a large, slow stick can take a while


class PrivilegedError(Exception):
    """A privileged step failed; the message (with the tool's own words) is for a person."""


def _check_device(devnode: str) -> None:
    if not devnode.startswith("/dev/") or ".." in devnode:
        raise PrivilegedError(f"{devnode!r} is not a device under /dev")
    try:
        mode = os.stat(devnode).st_mode
    except OSError as exc:
        raise PrivilegedError(f"{devnode}: {exc.strerror or exc}") from None
    if not stat.S_ISBLK(mode):
        raise PrivilegedError(f"{devnode} is not a block device")


def _check_mountpoint(path: Path) -> None:
    if not path.is_absolute() or ".." in path.parts:
        raise PrivilegedError(f"mount point {path} must be an absolute path")


def _run(argv: list[str], *, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise PrivilegedError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise PrivilegedError(f"{argv[0]} did not finish within {TIMEOUT:.0f} s") from None
    if proc.returncode not in ok:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise PrivilegedError(
            f"{argv[0]} failed ({proc.returncode}): {said[-1] if said else 'no message'}"
        )
    return proc


def mount(devnode: str, mountpoint: Path, fs_type: str = "ext4") -> None:
    """Mount `devnode` at `mountpoint` (made if missing) with the safe options."""
    _check_device(devnode)
    _check_mountpoint(mountpoint)
    if fs_type != "ext4":
        raise PrivilegedError(f"only ext4 drives are mounted, not {fs_type or 'unknown'}")
    mountpoint.mkdir(mode=0o755, parents=True, exist_ok=True)
    _run(["mount", "-t", "ext4", "-o", EXT4_OPTIONS, devnode, str(mountpoint)])
    log.info("mounted %s at %s (%s)", devnode, mountpoint, EXT4_OPTIONS)


def unmount(mountpoint: Path, *, lazy: bool = False) -> None:
    """Unmount. `lazy` detaches at once even when the device is gone or files are
    still open (umount(8) -l): what a drive pulled out of its socket needs."""
    _check_mountpoint(mountpoint)
    _run(["umount", "-l", str(mountpoint)] if lazy else ["umount", str(mountpoint)])
    log.info("unmounted %s%s", mountpoint, " (lazy)" if lazy else "")


def mkfs_ext4(devnode: str, label: str = LABEL) -> None:
    """Make a fresh ext4 filesystem on `devnode`, erasing what was there.

    Callers check first that the device is not mounted and that a person
    confirmed it by name (manager.DriveManager.format). `-m 0`: no blocks reserved
    for root, the drive keeps its own reserve (drive.reserve). Old signatures
    (a partition table, another filesystem) are wiped first so no tool later
    mistakes the drive for what it was.
    """
    _check_device(devnode)
    if not label.isalnum() or len(label) > 16:
        raise PrivilegedError(f"bad filesystem label {label!r}")
    _run(["wipefs", "-a", "-q", devnode])
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", label, devnode])
    log.info("made an ext4 filesystem labelled %s on %s", label, devnode)


def probe(devnode: str) -> dict[str, str]:
    """The ID_FS_* / ID_PART_TABLE_* properties udev's blkid builtin would add.

    Used where no udevd runs (kernel events carry none) and right after mkfs.
    Returns {} for a device with no recognisable content (blkid exits 2).
    """
    _check_device(devnode)
    proc = _run(["blkid", "-p", "-o", "udev", devnode], ok=(0, 2))
    props: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("ID_"):
            props[key] = value
    return props


def read_drive_id(devnode: str) -> str:
    """The drive_id in letterbox/DRIVE of an unmounted ext4 filesystem, or "".

    debugfs(8) reads the filesystem without mounting (or replaying its journal): a
    drive whose DRIVE is still only in the journal reads as "" here, which callers
    treat as "not known yet", never as "not a Letterbox drive".
    """
    _check_device(devnode)
    try:
        proc = _run(["debugfs", "-R", "cat /letterbox/DRIVE", devnode])
    except PrivilegedError:
        return ""
    try:
        doc = json.loads(proc.stdout)
        return str(doc["drive_id"]) if doc.get("format") == "letterbox-drive" else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _mount_table() -> list[tuple[str, str, str]]:
    """(major:minor, mount point, options) for every mount in this namespace."""
    rows = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            # mountinfo (proc(5)): id parent major:minor root mountpoint options ...
            mountpoint = fields[4].replace("\\040", " ")
            rows.append((fields[2], mountpoint, fields[5]))
    return rows


def mounts_of(devnode: str) -> list[str]:
    """Where this device, or a partition on it, is mounted or used as swap."""
    try:
        st = os.stat(devnode)
    except OSError:
        return []
    numbers = {f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"}
    name = Path(devnode).name
    sysdir = Path("/sys/class/block") / name
    for child in sysdir.glob(f"{name}*"):  # partitions of a whole disk
        dev = child / "dev"
        if dev.exists():
            numbers.add(dev.read_text().strip())
    for holder in (sysdir / "holders").glob("*"):  # device-mapper, md on top of it
        dev = holder / "dev"
        if dev.exists():
            numbers.add(dev.read_text().strip())
    used = [mp for num, mp, _ in _mount_table() if num in numbers]
    try:
        with open("/proc/swaps") as fh:
            next(fh, None)
            for line in fh:
                path = line.split()[0]
                if Path(path).name == name or Path(path).name.startswith(name):
                    used.append("swap")
    except OSError:
        pass
    return used


def is_mount_read_only(mountpoint: Path) -> bool:
    """Whether the filesystem at `mountpoint` is read-only now (errors=remount-ro fired)."""
    try:
        return bool(os.statvfs(mountpoint).f_flag & os.ST_RDONLY)
    except OSError:
        return True

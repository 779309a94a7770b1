"""Where things are on a drive, and the DRIVE identity file that marks one as ours.

Layout (docs/format.md has the details):

    letterbox/DRIVE            identity and format version (JSON)
    letterbox/index.sqlite3    the index
    letterbox/blobs/xx/<id>    one encrypted blob per message, xx = first two hex digits
    letterbox/blobs/tmp/       blobs being written (removed at open)
    letterbox/keys/<id>.json   wrapped keyrings of the mailboxes
    letterbox/queue/           outbound queue (later)
    letterbox/OPEN             present while open: its presence at open means a crash
    letterbox/LOCK             flock()ed by the one process that has the drive open
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from letterbox.crypto import new_id
from letterbox.drive.errors import DriveFormatError, DriveInUse
from letterbox.fsutil import fsync_dir, write_atomic

FORMAT_NAME = "letterbox-drive"
FORMAT_VERSION = 1
BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
TMP_NAME = re.compile(r"^[0-9a-f]{32}\.tmp$")


class Layout:
    """Paths on one drive. Computed once: blob paths are made per message on the hot path."""

    def __init__(self, root: Path) -> None:
        self.root = root  # the mount point (or directory) of the drive
        self.base = root / "letterbox"
        self.identity = self.base / "DRIVE"
        self.index = self.base / "index.sqlite3"
        self.blobs = self.base / "blobs"
        self.tmp = self.blobs / "tmp"
        self.keys = self.base / "keys"
        self.queue = self.base / "queue"
        self.open_marker = self.base / "OPEN"
        self.lock = self.base / "LOCK"
        self._blobs = str(self.blobs)

    def blob(self, blob_id: str) -> Path:
        return Path(f"{self._blobs}/{blob_id[:2]}/{blob_id}")

    def blob_tmp(self, blob_id: str) -> Path:
        return Path(f"{self._blobs}/tmp/{blob_id}.tmp")

    def keyring(self, mailbox_id: str) -> Path:
        return self.keys / f"{mailbox_id}.json"


def take_lock(layout: Layout) -> int:
    """Hold the drive's LOCK (flock, exclusive, not waiting) and return its descriptor.

    Whoever holds it is the only one who may write the drive, read OPEN as a sign of
    a crash, or run recovery: without it, a second process (the CLI next to a running
    box) would take the box's live temporaries and staged blobs for crash leftovers
    and delete acknowledged mail. flock belongs to the open file description, so a
    second open in the same process is refused too, and the kernel lets go when the
    holder dies: a crash never leaves a stale lock. The descriptor is close-on-exec.
    Close it (`release_lock`) to let go.
    """
    try:
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES):
            raise
        fd = os.open(layout.lock, os.O_RDONLY | os.O_CLOEXEC)  # a read-only drive
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DriveInUse(
            f"the drive at {layout.root} is in use by another Letterbox process "
            f"(it holds {layout.lock}); stop it, or let the running box do this"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_lock(fd: int) -> None:
    """Let go of the LOCK that `take_lock` returned (closing its descriptor does it)."""
    os.close(fd)


@dataclass(frozen=True)
class Identity:
    drive_id: str
    version: int
    created: int


def read_identity(layout: Layout) -> Identity:
    """Parse DRIVE, refusing anything that is not a drive this version can read."""
    try:
        doc = json.loads(layout.identity.read_bytes())
        name, version = doc["format"], int(doc["version"])
        drive_id, created = str(doc["drive_id"]), int(doc["created"])
    except FileNotFoundError:
        raise DriveFormatError(
            f"{layout.root} is not a Letterbox drive (no letterbox/DRIVE)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DriveFormatError(f"{layout.identity} is damaged ({exc})") from None
    if name != FORMAT_NAME:
        raise DriveFormatError(f"{layout.identity} names format {name!r}, not {FORMAT_NAME!r}")
    if version > FORMAT_VERSION:
        raise DriveFormatError(
            f"drive format version {version} is newer than this Letterbox reads "
            f"({FORMAT_VERSION}); upgrade Letterbox to use this drive"
        )
    if version < 1:
        raise DriveFormatError(f"drive format version {version} is not valid")
    return Identity(drive_id, version, created)


def create_layout(layout: Layout) -> Identity:
    """Make an empty drive in an empty (or absent) directory; refuse anything else."""
    if layout.base.exists() and any(layout.base.iterdir()):
        raise DriveFormatError(
            f"{layout.base} exists but has no DRIVE file: refusing to initialise over it"
        )
    for d in (layout.base, layout.blobs, layout.tmp, layout.keys, layout.queue):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for i in range(256):
        (layout.blobs / f"{i:02x}").mkdir(exist_ok=True, mode=0o700)
    fsync_dir(layout.blobs)
    ident = Identity(new_id(), FORMAT_VERSION, int(time.time()))
    doc = {
        "format": FORMAT_NAME,
        "version": ident.version,
        "drive_id": ident.drive_id,
        "created": ident.created,
    }
    write_atomic(layout.identity, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)
    fsync_dir(layout.root)
    return ident

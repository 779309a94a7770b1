"""Opening the box's state the same way everywhere: box keys from DATA, then the drive.

Used by the daemon (app.py); the CLI's `Context.open_drive` does the same and can
call `open_drive` here.
"""

from __future__ import annotations

from pathlib import Path

from letterbox import config
from letterbox.boxkeys import BoxKeys
from letterbox.crypto import Argon2Limits
from letterbox.drive import Drive


def argon2_limits(cfg: config.Config) -> Argon2Limits:
    return Argon2Limits(cfg.crypto.argon2_opslimit, int(cfg.crypto.argon2_memlimit))


def open_drive(cfg: config.Config, data_dir: Path, *, create: bool = True) -> Drive:
    """Open (or initialise) the drive at `cfg.drive_path(data_dir)`; raises DriveError."""
    return Drive.open(
        cfg.drive_path(data_dir),
        BoxKeys.load_or_create(data_dir),
        settings=cfg.drive,
        limits=argon2_limits(cfg),
        hostname=cfg.box.hostname,
        create=create,
    )

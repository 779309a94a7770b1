"""What the setup page needs from the running box, and the state it keeps itself.

The page sees the box through `Box` (the `Appliance` satisfies it), so views never
reach into listeners or the drive's internals, and tests can hand in a box made of
real parts without starting every listener.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jinja2
from aiohttp import web

from letterbox import config
from letterbox.drive import Drive
from letterbox.usb.model import Candidate, DriveActionError, DriveControl, DriveState
from letterbox.web.setup.auth import LoginLimiter, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


class Box(Protocol):
    """The running appliance as the setup page uses it (`letterbox.app.Appliance`)."""

    cfg: config.Config
    data_dir: Path
    dev: bool
    started_at: float | None  # time.time() once every listener is up

    @property
    def drive(self) -> Drive | None: ...

    def ports(self) -> dict[str, int]:
        """The ports actually bound: smtp, pop3, pop3s, web (0 when not listening)."""
        ...

    async def apply_settings(self, new_cfg: config.Config) -> None:
        """Make changed settings (domains, size limit, retention) take effect now."""
        ...


class DirectoryControl:
    """`DriveControl` for a box without a drive manager: the drive is a directory
    (development, `drive.mode = "directory"`), online while open, no candidates."""

    def __init__(self, box: Box) -> None:
        self._box = box

    def drive(self) -> Drive | None:
        return self._box.drive

    def state(self) -> DriveState:
        drive = self._box.drive
        path = str(self._box.cfg.drive_path(self._box.data_dir))
        if drive is None:
            return DriveState("absent", path=path, reason="the drive directory could not be opened")
        return DriveState("online", drive_id=drive.identity.drive_id, path=path)

    def candidates(self) -> list[Candidate]:
        return []

    async def adopt(self, candidate_id: str) -> DriveState:
        raise DriveActionError("this box keeps its mail in a directory; there is nothing to adopt")

    async def format(self, candidate_id: str, confirm: str) -> DriveState:
        raise DriveActionError("this box keeps its mail in a directory; there is nothing to format")


def drive_control(box: Box) -> DriveControl:
    """The box's drive manager (`box.drives`), or the directory stand-in."""
    control = getattr(box, "drives", None)
    return control if control is not None else DirectoryControl(box)


@dataclass
class SetupState:
    """Per-process state of the setup page: sessions, login limits, templates."""

    box: Box
    env: jinja2.Environment
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    # One-time views (a new mailbox's recovery code): token -> (expires, data).
    once: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def drives(self) -> DriveControl:
        return drive_control(self.box)

    def drive(self) -> Drive | None:
        return self.drives.drive()


SETUP_STATE: web.AppKey[SetupState] = web.AppKey("letterbox_setup", SetupState)
# Per request, set by the guard (security.py): the visitor's session and its cookie
# token, and a new token to send when the visitor had no session yet.
SESSION: web.RequestKey[Session] = web.RequestKey("letterbox_session", Session)
SESSION_TOKEN: web.RequestKey[str] = web.RequestKey("letterbox_session_token", str)
NEW_TOKEN: web.RequestKey[str] = web.RequestKey("letterbox_new_session_token", str)


def state_of(request: web.Request) -> SetupState:
    return request.app[SETUP_STATE]


def make_env() -> jinja2.Environment:
    """Autoescaping on for every template: a mailbox address is user input."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["human"] = human_size
    env.filters["when"] = when
    return env


def human_size(n: int) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def when(ts: int | float | None) -> str:
    if not ts:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))

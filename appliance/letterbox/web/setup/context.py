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
from letterbox.ratelimit import FailureLimiter
from letterbox.status import human_size
from letterbox.usb.model import Candidate, DriveActionError, DriveControl, DriveState
from letterbox.web.setup.auth import Session, Sessions, make_argon2_slots, make_limiter
from letterbox.web.setup.lanaccess import LocalNetworks

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


class Box(Protocol):
    """The running appliance as the setup page uses it (`letterbox.app.Appliance`).

    Optional, read with getattr: `drives` (the drive manager, see `drive_control`)
    and `mdns` (the mDNS announcer, see `lan_name`)."""

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


def lan_name(box: Box) -> str:
    """The name devices should use for the box: the one mDNS actually announces
    (`letterbox-2.local` when another box had `letterbox.local` first), else the
    configured `box.hostname` (mDNS off, not announced yet, or no LAN address)."""
    announced = getattr(getattr(box, "mdns", None), "name", None)
    if isinstance(announced, str) and announced.strip("."):
        return announced.rstrip(".")
    return box.cfg.box.hostname


@dataclass
class SetupState:
    """Per-process state of the setup page: sessions, attempt limits, templates."""

    box: Box
    env: jinja2.Environment
    sessions: Sessions = field(default_factory=Sessions)
    limiter: FailureLimiter = field(default_factory=make_limiter)
    # Every Argon2id the page runs holds one of these (auth.ARGON2_CONCURRENCY).
    argon2_slots: asyncio.Semaphore = field(default_factory=make_argon2_slots)
    # The box's own on-link prefixes, for the LAN-only check (lanaccess.py).
    local_networks: LocalNetworks = field(default_factory=LocalNetworks)
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


def when(ts: int | float | None) -> str:
    if not ts:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))

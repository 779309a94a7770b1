"""The control commands the appliance itself serves: `status` and `mailbox.add`.

`mailbox.add` exists because the Drive keeps its address → mailbox map in memory
(drive/store.py, `_addresses`, filled at open and by `create_mailbox`): a mailbox
that another process wrote into the index would be refused at RCPT with 550 until
the daemon restarted. Through the daemon, the one Drive that serves SMTP makes it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from letterbox import status
from letterbox.config import Size
from letterbox.control import ControlError, ControlServer
from letterbox.drive import DriveError

if TYPE_CHECKING:
    from letterbox.app import Appliance


def register(server: ControlServer, app: Appliance) -> None:
    async def status_command(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(status.snapshot, app)

    async def mailbox_add(params: dict[str, Any]) -> Any:
        return await add_mailbox(app, params)

    server.register("status", status_command)
    server.register("mailbox.add", mailbox_add)


def _text(params: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(f"mailbox.add needs '{key}' (a non-empty string)")
    return value


async def add_mailbox(app: Appliance, params: dict[str, Any]) -> dict[str, Any]:
    """params: address, quota (bytes or "2G"; default from config), and either
    password (unlocked at login) or identity_key (hex Ed25519 public key: end-to-end).
    Returns the mailbox, its recovery code (password mode) and the box's verify key
    (which an end-to-end key file records)."""
    address = _text(params, "address")
    password = _text(params, "password", required=False)
    identity_hex = _text(params, "identity_key", required=False)
    if (password is None) == (identity_hex is None):
        raise ControlError("mailbox.add needs either 'password' or 'identity_key'")
    identity: bytes | None = None
    if identity_hex is not None:
        try:
            identity = bytes.fromhex(identity_hex)
        except ValueError:
            raise ControlError("identity_key must be hex") from None
        if len(identity) != 32:
            raise ControlError("identity_key must be 32 bytes (an Ed25519 public key)")
    raw_quota = params.get("quota")
    try:
        quota = app.cfg.mailbox.default_quota if raw_quota is None else Size.parse(raw_quota)
    except ValueError as exc:
        raise ControlError(f"quota: {exc}") from None
    drive = app.drives.drive()
    if drive is None:
        raise ControlError("the drive is offline; mailboxes can be added once it is back")
    try:
        # Argon2id wraps the key: seconds on a small board, so off the loop.
        mailbox, code = await asyncio.to_thread(
            drive.create_mailbox,
            address or "",
            quota=quota,
            password=password,
            identity_key=identity,
        )
    except (ValueError, DriveError) as exc:
        raise ControlError(str(exc)) from None
    return {
        "address": mailbox.address,
        "domain": mailbox.domain,
        "quota": mailbox.quota,
        "end_to_end": mailbox.end_to_end,
        "recovery_code": code,
        "box_verify_key": bytes(drive.keys.verify_key).hex(),
    }

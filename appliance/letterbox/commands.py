"""The control commands the appliance itself serves: `status`, and every CLI verb
that reads or changes the drive (`mailbox.add`, `mailbox.list`, `mailbox.passwd`,
`mailbox.recovery_reset`, `drive.stats`, `drive.check`).

They exist because only one process may have a drive open (its LOCK, see
docs/format.md §10): a second opener would take the box's live temporaries and
staged blobs for a crash's leftovers and delete acknowledged mail. And the Drive
keeps its address → mailbox map in memory (drive/store.py, `_addresses`), so a
mailbox another process wrote would be refused at RCPT until a restart. So while a
box runs, the CLI asks it, and the one Drive that serves SMTP does the work.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from letterbox import status
from letterbox.config import Size
from letterbox.control import ControlError, ControlServer
from letterbox.crypto import CryptoFailure
from letterbox.drive import Drive, DriveError, MailboxInfo

if TYPE_CHECKING:
    from letterbox.app import Appliance


def register(server: ControlServer, app: Appliance) -> None:
    async def status_command(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(status.snapshot, app)

    async def mailbox_add(params: dict[str, Any]) -> Any:
        return await add_mailbox(app, params)

    async def mailbox_list(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(lambda: [_mailbox_json(m) for m in _drive(app).mailboxes()])

    async def mailbox_passwd(params: dict[str, Any]) -> Any:
        return await change_password(app, params)

    async def mailbox_recovery_reset(params: dict[str, Any]) -> Any:
        return await reset_recovery_code(app, params)

    async def drive_stats(params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(drive_stats_of, _drive(app))

    async def drive_check(params: dict[str, Any]) -> Any:
        return await check(app)

    server.register("status", status_command)
    server.register("mailbox.add", mailbox_add)
    server.register("mailbox.list", mailbox_list)
    server.register("mailbox.passwd", mailbox_passwd)
    server.register("mailbox.recovery_reset", mailbox_recovery_reset)
    server.register("drive.stats", drive_stats)
    server.register("drive.check", drive_check)


def _drive(app: Appliance) -> Drive:
    drive = app.drives.drive()
    if drive is None:
        raise ControlError("the drive is offline; try again once it is back")
    return drive


def _mailbox_json(m: MailboxInfo) -> dict[str, Any]:
    return {
        "address": m.address,
        "quota": m.quota,
        "used": m.used,
        "messages": m.messages,
        "end_to_end": m.end_to_end,
    }


def drive_stats_of(drive: Drive) -> dict[str, Any]:
    """What `letterbox drive stats` shows: the drive's figures and each mailbox's."""
    return {"stats": drive.stats(), "mailboxes": [_mailbox_json(m) for m in drive.mailboxes()]}


def _unlock(drive: Drive, params: dict[str, Any], command: str) -> tuple[MailboxInfo, Any]:
    """The mailbox named by params' address and its secret key, unlocked with params'
    password or recovery_code (Argon2id: call off the loop)."""
    address = params.get("address")
    if not isinstance(address, str) or not address:
        raise ControlError(f"{command} needs 'address' (a non-empty string)")
    try:
        mailbox = drive.find_mailbox(address)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    if mailbox is None:
        raise ControlError(f"no mailbox for {address}")
    password, code = params.get("password"), params.get("recovery_code")
    try:
        if isinstance(code, str):
            return mailbox, drive.recover_key(mailbox.id, code)
        if isinstance(password, str):
            return mailbox, drive.unlock(mailbox.id, password)
    except (CryptoFailure, DriveError) as exc:
        raise ControlError(str(exc)) from None
    raise ControlError(f"{command} needs 'password' or 'recovery_code' (a string)")


async def change_password(app: Appliance, params: dict[str, Any]) -> dict[str, Any]:
    """params: address, password or recovery_code, and new_password. Without
    new_password it only proves the credential, so the CLI can say "wrong password"
    before asking for a new one, as it does on a drive it opened itself."""
    drive = _drive(app)
    new = params.get("new_password")
    if new is not None and (not isinstance(new, str) or not new):
        raise ControlError("mailbox.passwd: 'new_password' must be a non-empty string")

    def work() -> dict[str, Any]:
        mailbox, secret = _unlock(drive, params, "mailbox.passwd")
        if new is not None:
            try:
                drive.change_password(mailbox.id, secret, new)
            except DriveError as exc:
                raise ControlError(str(exc)) from None
        return {"address": mailbox.address, "changed": new is not None}

    async with app.argon2_slots:
        return await asyncio.to_thread(work)


async def reset_recovery_code(app: Appliance, params: dict[str, Any]) -> dict[str, Any]:
    """params: address, password. Returns the new recovery code."""
    drive = _drive(app)
    if not isinstance(params.get("password"), str):
        raise ControlError("mailbox.recovery_reset needs 'password' (a string)")

    def work() -> dict[str, Any]:
        mailbox, secret = _unlock(drive, {**params, "recovery_code": None}, "recovery_reset")
        try:
            code = drive.reset_recovery_code(mailbox.id, secret)
        except DriveError as exc:
            raise ControlError(str(exc)) from None
        return {"address": mailbox.address, "recovery_code": code}

    async with app.argon2_slots:
        return await asyncio.to_thread(work)


async def check(app: Appliance) -> dict[str, Any]:
    """`drive check` on the drive this box has open, while it keeps taking mail: one
    snapshot of the index (drive/check.py, live=True)."""
    from letterbox.drive.check import check_drive

    drive = _drive(app)
    report = await asyncio.to_thread(check_drive, drive.layout.root, drive.keys, live=True)
    return {"ok": report.ok, "report": report.render(), "damage": report.damage}


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

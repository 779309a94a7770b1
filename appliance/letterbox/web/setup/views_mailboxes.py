"""Mailboxes: add a person, show the recovery code once, reset a password with it,
change a quota, remove a mailbox after a confirmation that names it.

Every drive call runs in a thread (`asyncio.to_thread`): creating a mailbox and
resetting a password run Argon2id, and everything else touches SQLite on the drive.
The recovery code is shown on a one-time page reached by a 303 (so a reload does
not create a second mailbox); the code itself never enters a URL or a log.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from aiohttp import web

from letterbox import crypto
from letterbox.config import Size
from letterbox.drive import Drive, DriveError, MailboxExists, MailboxInfo, MailboxNotFound
from letterbox.web.setup.auth import wait_message
from letterbox.web.setup.context import state_of
from letterbox.web.setup.forms import Form, FormError, is_mailbox_id, read_form
from letterbox.web.setup.pages import redirect, render

routes = web.RouteTableDef()

ONCE_TTL = 15 * 60.0  # seconds the recovery-code page stays reachable, once
MIN_QUOTA = 1 << 20
# A practical subset of RFC 5321 §4.1.2 Mailbox: dot-atom local part, a domain
# of LDH labels. Quoted local parts and address literals are not offered here.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
SAVED = {
    "quota": "The quota was changed.",
    "password": "The password was changed. The recovery code stays the same.",
}


def parse_address(form: Form) -> str:
    address = form.text("address", "Address", max_len=254)
    if not _ADDRESS.match(address):
        raise FormError("Address: write a mail address such as anna@example.org")
    return address.lower()


def parse_quota(form: Form, default: int) -> int:
    raw = form.text("quota", "Quota", max_len=20, required=False)
    if not raw:
        return default
    try:
        quota = Size.parse(raw)
    except ValueError:
        raise FormError("Quota: write a size such as 500M or 2G") from None
    if quota < MIN_QUOTA:
        raise FormError("Quota: at least 1M")
    return int(quota)


def parse_public_key(form: Form) -> bytes:
    raw = form.text("public_key", "Public key", max_len=200)
    try:
        key = bytes.fromhex(raw.replace(" ", ""))
        crypto.x25519_from_identity(key)
        if len(key) != 32:
            raise ValueError
    except ValueError:
        raise FormError(
            "Public key: expected the 64 hexadecimal digits of the person's Letterbox key"
        ) from None
    return key


def _drive_or_none(request: web.Request) -> Drive | None:
    return state_of(request).drive()


async def _mailboxes(drive: Drive | None) -> list[MailboxInfo]:
    if drive is None:
        return []
    return await asyncio.to_thread(drive.mailboxes)


def _offline(request: web.Request, template: str = "offline.html") -> web.Response:
    return render(request, template, status=503)


@routes.get("/mailboxes")
async def mailboxes_page(request: web.Request) -> web.StreamResponse:
    return await _list(request)


async def _list(
    request: web.Request, *, status: int = 200, error: str = "", form: dict[str, str] | None = None
) -> web.Response:
    drive = _drive_or_none(request)
    if drive is None:
        return _offline(request)
    cfg = state_of(request).box.cfg
    return render(
        request,
        "mailboxes.html",
        status=status,
        mailboxes=await _mailboxes(drive),
        error=error,
        form=form or {"address": "", "quota": "", "mode": "login"},
        default_quota=cfg.mailbox.default_quota.human(),
    )


@routes.post("/mailboxes")
async def add_mailbox(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    drive = st.drive()
    if drive is None:
        return _offline(request)
    form = await read_form(request)
    kept = {"address": form.echo("address"), "quota": form.echo("quota"), "mode": "login"}
    try:
        address = parse_address(form)
        quota = parse_quota(form, int(st.box.cfg.mailbox.default_quota))
        mode = form.text("mode", "Reading mode", max_len=20, required=False) or "login"
        if mode not in ("login", "end-to-end"):
            raise FormError("Reading mode: choose 'unlocked at login' or 'end-to-end'")
        kept["mode"] = mode
        if mode == "login":
            password = form.new_password()
            async with st.argon2_slots:  # the password and the recovery code: Argon2id
                created = await asyncio.to_thread(
                    drive.create_mailbox, address, quota=quota, password=password
                )
        else:
            key = parse_public_key(form)
            async with st.argon2_slots:  # the recovery code: Argon2id
                created = await asyncio.to_thread(
                    drive.create_mailbox, address, quota=quota, identity_key=key
                )
    except FormError as exc:
        return await _list(request, status=400, error=str(exc), form=kept)
    except MailboxExists:
        return await _list(
            request, status=409, error=f"A mailbox for {address} exists already.", form=kept
        )
    except (ValueError, DriveError) as exc:
        return await _list(request, status=400, error=f"Could not add it: {exc}", form=kept)
    mailbox, code = created
    token = secrets.token_urlsafe(16)
    now = time.monotonic()
    for old in [t for t, (exp, _) in st.once.items() if exp < now]:
        del st.once[old]
    st.once[token] = (
        now + ONCE_TTL,
        {"address": mailbox.address, "code": code, "end_to_end": mailbox.end_to_end},
    )
    return redirect(f"/mailboxes/created/{token}")


@routes.get("/mailboxes/created/{token}")
async def created_page(request: web.Request) -> web.StreamResponse:
    """The recovery code, once: a second visit (or a reload) finds it gone."""
    entry = state_of(request).once.pop(request.match_info["token"], None)
    if entry is None or entry[0] < time.monotonic():
        return render(request, "created_gone.html", status=410)
    return render(request, "created.html", **entry[1])


async def _mailbox(request: web.Request) -> tuple[Drive, MailboxInfo]:
    mailbox_id = request.match_info["id"]
    drive = _drive_or_none(request)
    if drive is None:
        raise web.HTTPServiceUnavailable(text="The drive is offline.")
    if not is_mailbox_id(mailbox_id):
        raise web.HTTPNotFound()
    try:
        return drive, await asyncio.to_thread(drive.mailbox, mailbox_id)
    except MailboxNotFound:
        raise web.HTTPNotFound() from None


async def _detail(
    request: web.Request, *, status: int = 200, error: str = "", **values: Any
) -> web.Response:
    drive, mailbox = await _mailbox(request)
    evictions = await asyncio.to_thread(drive.evictions, mailbox.id, 20)
    saved = SAVED.get(request.query.get("saved", ""), "")
    return render(
        request,
        "mailbox.html",
        status=status,
        mailbox=mailbox,
        evictions=evictions,
        error=error,
        saved=saved,
        **values,
    )


async def _too_many(request: web.Request, wait: int) -> web.Response:
    response = await _detail(request, status=429, error=wait_message(wait))
    response.headers["Retry-After"] = str(wait)
    return response


@routes.get("/mailboxes/{id}")
async def mailbox_page(request: web.Request) -> web.StreamResponse:
    return await _detail(request)


@routes.post("/mailboxes/{id}/quota")
async def change_quota(request: web.Request) -> web.StreamResponse:
    drive, mailbox = await _mailbox(request)
    form = await read_form(request)
    try:
        if not form.text("quota", "Quota", max_len=20, required=True):
            raise FormError("Quota: please fill this in")
        quota = parse_quota(form, mailbox.quota)
    except FormError as exc:
        return await _detail(request, status=400, error=str(exc))
    await asyncio.to_thread(drive.set_quota, mailbox.id, quota)
    return redirect(f"/mailboxes/{mailbox.id}?saved=quota")


@routes.post("/mailboxes/{id}/password")
async def reset_password(request: web.Request) -> web.StreamResponse:
    """A forgotten password: the recovery code unwraps the key, the new password
    wraps it again. Rate-limited like logins: a recovery code is a password too."""
    st = state_of(request)
    drive, mailbox = await _mailbox(request)
    if mailbox.end_to_end:
        return await _detail(
            request,
            status=400,
            error="An end-to-end mailbox has no password on the box: its key is on the "
            "person's own computer.",
        )
    form = await read_form(request)
    try:
        code = form.text("recovery_code", "Recovery code", max_len=200)
        password = form.new_password()
    except FormError as exc:
        return await _detail(request, status=400, error=str(exc))
    wait = st.limiter.begin(request.remote)  # counted now, forgiven if right
    if wait:
        return await _too_many(request, wait)
    try:
        async with st.argon2_slots:
            secret = await asyncio.to_thread(drive.recover_key, mailbox.id, code)
    except crypto.CryptoFailure:  # WrongRecoveryCode, or a code that is not one at all
        return await _detail(request, status=403, error="That recovery code does not fit.")
    st.limiter.succeeded(request.remote)
    async with st.argon2_slots:
        await asyncio.to_thread(drive.change_password, mailbox.id, secret, password)
    return redirect(f"/mailboxes/{mailbox.id}?saved=password")


@routes.post("/mailboxes/{id}/remove")
async def remove_mailbox(request: web.Request) -> web.StreamResponse:
    drive, mailbox = await _mailbox(request)
    form = await read_form(request)
    try:
        typed = form.text("confirm", "Confirmation", max_len=254)
    except FormError as exc:
        return await _detail(request, status=400, error=str(exc))
    if typed.lower() != mailbox.address:
        return await _detail(
            request,
            status=400,
            error=f"To remove it, type the address {mailbox.address} exactly.",
        )
    await asyncio.to_thread(drive.remove_mailbox, mailbox.id)
    return redirect("/mailboxes?removed=1")

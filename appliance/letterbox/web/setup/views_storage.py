"""Storage: the drive's state, candidates to adopt or format, usage and evictions.

Adopt and format go through the drive manager (`DriveControl`), which owns the
privileged steps; this page only asks and reports. Formatting erases a drive, so
the person must type the device name (e.g. /dev/sda1) shown next to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from letterbox.drive import EvictionRecord, MailboxInfo
from letterbox.usb.model import DriveActionError
from letterbox.web.setup.context import state_of
from letterbox.web.setup.forms import FormError, read_form
from letterbox.web.setup.pages import redirect, render

routes = web.RouteTableDef()

EVICTIONS_SHOWN = 50
DONE = {"adopt": "The drive was adopted.", "format": "The drive was formatted and is in use."}


@dataclass(frozen=True)
class Eviction:
    address: str
    record: EvictionRecord


async def _page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    st = state_of(request)
    control = st.drives
    drive_state = await asyncio.to_thread(control.state)
    candidates = await asyncio.to_thread(control.candidates)
    drive = control.drive()
    mailboxes: list[MailboxInfo] = []
    evictions: list[Eviction] = []
    free = 0
    reserve_warning = ""
    if drive is not None:
        mailboxes = await asyncio.to_thread(drive.mailboxes)
        stats = await asyncio.to_thread(drive.stats)
        free = int(stats["free_bytes"])
        reserve_warning = await asyncio.to_thread(drive.reserve_warning)
        for m in mailboxes:
            records = await asyncio.to_thread(drive.evictions, m.id, EVICTIONS_SHOWN)
            evictions += [Eviction(m.address, r) for r in records]
        evictions.sort(key=lambda e: e.record.at, reverse=True)
    return render(
        request,
        "storage.html",
        status=status,
        state=drive_state,
        candidates=candidates,
        mailboxes=mailboxes,
        evictions=evictions[:EVICTIONS_SHOWN],
        free=free,
        reserve_warning=reserve_warning,
        error=error,
        done=DONE.get(request.query.get("done", ""), ""),
    )


@routes.get("/storage")
async def storage_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/storage/adopt")
async def adopt(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    try:
        candidate = form.text("candidate", "Drive", max_len=200)
        await state_of(request).drives.adopt(candidate)
    except (FormError, DriveActionError) as exc:
        return await _page(request, status=400, error=str(exc))
    return redirect("/storage?done=adopt")


@routes.post("/storage/format")
async def format_drive(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    control = state_of(request).drives
    try:
        candidate = form.text("candidate", "Drive", max_len=200)
        confirm = form.text("confirm", "Confirmation", max_len=200)
        known = {c.id: c for c in await asyncio.to_thread(control.candidates)}
        chosen = known.get(candidate)
        if chosen is None:
            raise FormError("That drive is no longer plugged in; look at the list again.")
        if confirm != chosen.devnode:
            raise FormError(
                f"Nothing was erased: to format it, type its device name {chosen.devnode} exactly."
            )
        await control.format(candidate, confirm=confirm)
    except (FormError, DriveActionError) as exc:
        return await _page(request, status=400, error=str(exc))
    return redirect("/storage?done=format")

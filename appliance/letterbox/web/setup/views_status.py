"""Status: uptime, version, drive state, when mail last arrived, counts."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from letterbox.status import mail_figures
from letterbox.web.setup.context import state_of
from letterbox.web.setup.pages import redirect, render

routes = web.RouteTableDef()


def uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes = s // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    return redirect("/status")


@routes.get("/status")
async def status_page(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    box = st.box
    drive_state = await asyncio.to_thread(st.drives.state)
    drive = st.drive()
    stats = await asyncio.to_thread(drive.stats) if drive is not None else None
    figures = await asyncio.to_thread(mail_figures, drive)
    return render(
        request,
        "status.html",
        uptime=uptime(time.time() - (box.started_at or time.time())),
        state=drive_state,
        stats=stats,
        last=figures["last_received"],
        ports=box.ports(),
    )

"""The setup page: claim the box, add the household, manage storage, set up devices.

`setup(app, box)` mounts the pages into the web server's application, next to the
drive API (DESIGN.md, "Setup page"). Server-rendered Jinja2 pages that work without
JavaScript, one small stylesheet, no inline script or style (the CSP forbids them).
See security.py for the gatekeeping every request passes through.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from letterbox.web.setup import (
    views_access,
    views_devices,
    views_mailboxes,
    views_settings,
    views_status,
    views_storage,
)
from letterbox.web.setup.context import SETUP_STATE, STATIC, Box, SetupState, make_env
from letterbox.web.setup.security import guard


def setup(
    app: web.Application, box: Box, *, argon2_slots: asyncio.Semaphore | None = None
) -> SetupState:
    """Mount the setup page into `app`; returns its state (sessions, limiter).

    `argon2_slots`: the box's one Argon2id budget, shared with POP3 logins (each run
    holds 64 MiB; see bench/RESULTS.md, "Footprint"); alone, a budget of its own."""
    st = SetupState(box=box, env=make_env())
    if argon2_slots is not None:
        st.argon2_slots = argon2_slots
    app[SETUP_STATE] = st
    app.middlewares.append(guard)
    for module in (
        views_access,
        views_status,
        views_mailboxes,
        views_storage,
        views_settings,
        views_devices,
    ):
        app.router.add_routes(module.routes)
    app.router.add_static("/static/", STATIC, append_version=False)
    return st


__all__ = ["Box", "SetupState", "setup"]

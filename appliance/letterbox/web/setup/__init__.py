"""The setup page: claim the box, add the household, manage storage, set up devices.

`setup(app, box)` mounts the pages into the web server's application, next to the
drive API (docs/design.md, "Setup page and the web port"). Server-rendered Jinja2
pages that work without JavaScript, one small stylesheet, no inline script or style
(the CSP forbids them). See security.py for the gatekeeping every request passes through.

security.py         the middleware every request passes: LAN only, session, claim gate, CSRF
lanaccess.py        who counts as on the home network
auth.py             sessions, attempt limits, the page's Argon2id slots
csrf.py             the per-session CSRF token
forms.py            reading form fields, each with a limit and a clear message
context.py          what the page sees of the box (Box) and the state it keeps
pages.py            rendering a page: template, CSRF token, navigation
views_access.py     claim, login, logout
views_status.py     Status
views_mailboxes.py  Mailboxes: add, recovery code once, password reset, quota, removal
views_storage.py    Storage: the drive, candidates to adopt or format, usage, evictions
views_settings.py   Mail settings and the DNS records to publish
views_devices.py    Devices: client settings, autoconfig, Apple profile, QR code
autoconfig.py       Thunderbird's config-v1.1.xml (pure)
mobileconfig.py     the Apple .mobileconfig (pure)
qr.py               QR codes as SVG
templates/, static/ the Jinja2 templates and the one stylesheet
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

"""Rendering a page: the template, the session's CSRF token and the navigation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from letterbox import __version__
from letterbox.web.setup.context import SESSION, lan_name, state_of

NAV = [
    ("/status", "Status"),
    ("/mailboxes", "Mailboxes"),
    ("/storage", "Storage"),
    ("/settings", "Mail settings"),
    ("/devices", "Devices"),
]


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    st = state_of(request)
    session = request.get(SESSION)
    body = st.env.get_template(template).render(
        csrf=session.csrf if session is not None else "",
        admin=bool(session is not None and session.admin),
        nav=NAV,
        path=request.path,
        version=__version__,
        hostname=lan_name(st.box),
        **values,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str) -> web.Response:
    """303 See Other (RFC 9110 §15.4.4): after a POST, a reload does not repeat it."""
    return web.Response(status=303, headers={"Location": location})

"""The setup page's gatekeeper: one middleware in front of every page.

In order, for every request outside the drive API (which has its own rules):

1. LAN only: a client outside the home network (lanaccess.py: loopback, private,
   link-local and the box's own on-link prefixes) gets 403, unless
   `web.allow_remote` is set (a household that forwards port 80 has decided so).
2. Session: the cookie's session, or a new anonymous one (so the claim and login
   forms carry a CSRF token). Cookies are HttpOnly and SameSite=Strict. Static
   files and the mail-client configuration (`_sessionless`: fetched by mail apps
   and by every page load, never posted to) get no new session: they need none,
   and each would cost a slot in the bounded anonymous table.
3. Claim gate: until the box is claimed, everything but /claim and /static/ is a
   303 to /claim. Once claimed, everything but the public paths (login, static
   files, the mail-client autoconfiguration) needs the admin's login.
4. POST: a body over `MAX_FORM_BYTES` is 413, a missing or wrong CSRF token 403.
5. Headers on every answer: a Content-Security-Policy without inline script or
   style, frame denial, no-sniff, no referrer, no caching of pages.
6. Errors: a page a person can read; never a stack trace. Unexpected exceptions
   are logged by type (with the traceback only in debug mode: a traceback names
   no secret, but the exception text may carry form input).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from letterbox import claim
from letterbox.web.setup import csrf
from letterbox.web.setup.auth import COOKIE
from letterbox.web.setup.context import NEW_TOKEN, SESSION, SESSION_TOKEN, state_of
from letterbox.web.setup.forms import MAX_FORM_BYTES, UnreadableForm, read_post
from letterbox.web.setup.lanaccess import on_lan
from letterbox.web.setup.pages import render

log = logging.getLogger("letterbox.web.setup")

API_PREFIX = "/api/"
STATIC_PREFIX = "/static/"
# Reachable without logging in once the box is claimed: mail clients fetch these.
PUBLIC_EXACT = frozenset(
    {"/login", "/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"}
)
PUBLIC_PREFIXES = (STATIC_PREFIX, "/mail/profile/")
# Public paths that never make a session: nothing there is a form.
SESSIONLESS_EXACT = PUBLIC_EXACT - {"/login"}

HEADERS = {
    # No inline script or style anywhere; forms post only here; never framed.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_public(path: str) -> bool:
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)


def _sessionless(path: str) -> bool:
    return path in SESSIONLESS_EXACT or path.startswith(PUBLIC_PREFIXES)


def set_session_cookie(response: web.StreamResponse, token: str) -> None:
    # No Secure flag: the page is plain HTTP on the LAN (letterbox.local has no
    # certificate a browser would trust). Strict: never sent on cross-site requests.
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")


def error_page(request: web.Request, status: int, title: str, text: str) -> web.Response:
    try:
        return render(request, "error.html", status=status, title=title, text=text)
    except Exception:  # a broken template must not turn into a trace either
        return web.Response(text=f"{title}\n\n{text}\n", status=status, content_type="text/plain")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(API_PREFIX):
        return await handler(request)
    response = await _guarded(request, handler)
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(STATIC_PREFIX):
        response.headers.setdefault("Cache-Control", "no-store")
    new_token = request.get(NEW_TOKEN)
    if new_token:
        set_session_cookie(response, new_token)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = state_of(request)
    box = st.box
    if not box.cfg.web.allow_remote and not on_lan(request.remote, st.local_networks):
        return web.Response(
            text="The setup page answers only devices on the home network.\n",
            status=403,
            content_type="text/plain",
        )
    path = request.path
    token = request.cookies.get(COOKIE)
    session = st.sessions.get(token)
    if session is None and not _sessionless(path):
        token, session = st.sessions.new(admin=False)
        request[NEW_TOKEN] = token
    if session is not None and token is not None:
        request[SESSION] = session
        request[SESSION_TOKEN] = token
    admin = session is not None and session.admin
    try:
        if not claim.is_claimed(box.data_dir):
            if path != "/claim" and not path.startswith(STATIC_PREFIX):
                raise web.HTTPSeeOther("/claim")
        elif not admin and not _is_public(path) and path != "/claim":
            raise web.HTTPSeeOther("/login")
        if request.method == "POST":
            length = request.content_length
            if request.body_exists and (length is None or length > MAX_FORM_BYTES):
                return error_page(
                    request,
                    413,
                    "Too much data",
                    "That form sent more than this page accepts. Go back and shorten it.",
                )
            try:
                form = await read_post(request)
            except UnreadableForm:  # undecodable bytes, a broken multipart body
                return error_page(
                    request, 400, "Unreadable form", "The form's data could not be read."
                )
            if session is None or not csrf.valid(session.csrf, form.get(csrf.FIELD)):
                return error_page(
                    request,
                    403,
                    "The form has expired",
                    "This form is stale or came from another site. Reload the page and "
                    "send it again.",
                )
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: answered here, so it gets the headers too
            return web.Response(status=exc.status, headers={"Location": exc.headers["Location"]})
        return error_page(request, exc.status, _TITLES.get(exc.status, "Error"), _text(exc))
    except Exception as exc:
        log.error(
            "setup page: %s %s failed: %s",
            request.method,
            request.match_info.route.resource.canonical
            if request.match_info.route.resource is not None
            else "?",
            type(exc).__name__,
            exc_info=box.cfg.log.debug,
        )
        return error_page(
            request,
            500,
            "Something went wrong",
            "The box could not do that. Nothing was changed that you were not told about; "
            "try again, and if it keeps happening, look at the box's log.",
        )


_TITLES = {
    403: "Not allowed",
    404: "No such page",
    405: "Not allowed here",
    413: "Too much data",
    429: "Too many attempts",
}


def _text(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "There is no page at this address."
    if exc.status == 405:
        return "This page cannot be used that way."
    return exc.text or exc.reason

"""Claiming the box, logging in and out.

Claim: the setup code (shown by `letterbox status`, printed at start, written to
the boot partition) proves the person holds the box; they then choose the admin
password, stored as an Argon2id hash (letterbox.claim). Wrong codes and wrong
passwords count against the same per-client limit; each attempt is counted before
it is checked and forgiven when it was right (auth.py says why).
"""

from __future__ import annotations

from aiohttp import web

from letterbox import claim, state
from letterbox.web.setup import auth
from letterbox.web.setup.context import NEW_TOKEN, SESSION, SESSION_TOKEN, state_of
from letterbox.web.setup.forms import FormError, read_form
from letterbox.web.setup.pages import redirect, render
from letterbox.web.setup.security import set_session_cookie

routes = web.RouteTableDef()


def too_many(request: web.Request, template: str, wait: int, **values: object) -> web.Response:
    """429 (RFC 6585 §4) with Retry-After: the client's attempts are used up."""
    response = render(request, template, status=429, error=auth.wait_message(wait), **values)
    response.headers["Retry-After"] = str(wait)
    return response


def _log_in(request: web.Request) -> web.Response:
    """A fresh admin session (never the anonymous one's token: no fixation)."""
    st = state_of(request)
    st.sessions.drop(request.get(SESSION_TOKEN))
    token, _ = st.sessions.new(admin=True)
    response = redirect("/status")
    set_session_cookie(response, token)
    request.pop(NEW_TOKEN, None)
    return response


@routes.get("/claim")
async def claim_page(request: web.Request) -> web.StreamResponse:
    if claim.is_claimed(state_of(request).box.data_dir):
        return redirect("/login")
    return render(request, "claim.html", error="")


@routes.post("/claim")
async def claim_post(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    data_dir = st.box.data_dir
    if claim.is_claimed(data_dir):
        return redirect("/login")
    form = await read_form(request)
    try:
        code = form.text("setup_code", "Setup code", max_len=40)
        password = form.new_password()
    except FormError as exc:
        return render(request, "claim.html", status=400, error=str(exc))
    wait = st.limiter.begin(request.remote)  # counted now, forgiven if right
    if wait:
        return too_many(request, "claim.html", wait)
    if not claim.check_setup_code(data_dir, code):
        return render(
            request,
            "claim.html",
            status=403,
            error="That is not this box's setup code. It is printed when the box starts "
            "and shown by `letterbox status`.",
        )
    st.limiter.succeeded(request.remote)
    async with st.lock:  # two people claiming at once: the first one wins
        if claim.is_claimed(data_dir):
            return redirect("/login")
        hashed = await auth.hash_admin_password(
            password, state.argon2_limits(st.box.cfg), st.argon2_slots
        )
        claim.claim(data_dir, hashed)
    st.sessions.drop_all_admin()
    return _log_in(request)


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    if request[SESSION].admin:
        return redirect("/status")
    return render(request, "login.html", error="")


@routes.post("/login")
async def login_post(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    form = await read_form(request)
    try:
        password = form.text("password", "Password", max_len=1024)
    except FormError as exc:
        return render(request, "login.html", status=400, error=str(exc))
    wait = st.limiter.begin(request.remote)  # counted now, forgiven if right
    if wait:
        return too_many(request, "login.html", wait)
    if not await auth.check_admin_password(st.box.data_dir, password, st.argon2_slots):
        return render(request, "login.html", status=403, error="Wrong password.")
    st.limiter.succeeded(request.remote)
    return _log_in(request)


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    state_of(request).sessions.drop(request.get(SESSION_TOKEN))
    response = redirect("/login")
    response.del_cookie(auth.COOKIE, path="/")
    return response

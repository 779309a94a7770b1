"""Claiming, logging in, the gates every page sits behind, and the security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from letterbox import claim
from letterbox.web.setup import auth, security

from tests.web.setup.conftest import ADMIN_PASSWORD, Page, SetupBox

PAGES = ["/", "/status", "/mailboxes", "/storage", "/settings", "/devices", "/login"]
POSTS = ["/mailboxes", "/storage/adopt", "/storage/format", "/settings", "/login", "/logout"]


def test_until_claimed_every_page_leads_to_claim(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        for path in [*PAGES, "/mail/config-v1.1.xml", "/nonexistent"]:
            status, _, resp = await page.get(path)
            assert (status, resp.headers.get("Location")) == (303, "/claim"), path
        status, text, _ = await page.get("/claim")
        assert status == 200 and 'name="setup_code"' in text
        status, _, resp = await page.get("/static/letterbox.css")
        assert status == 200 and "text/css" in resp.headers["Content-Type"]

    run_page(scenario)


def test_claim_with_the_setup_code_logs_in_and_retires_the_code(
    run_page: Any, setup_box: SetupBox
) -> None:
    async def scenario(page: Page) -> None:
        code = claim.setup_code(setup_box.data_dir)
        assert code is not None
        await page.get("/claim")
        status, _, resp = await page.post(
            "/claim",
            {
                "setup_code": code.lower().replace("-", " "),  # typed loosely: still fine
                "password": ADMIN_PASSWORD,
                "password2": ADMIN_PASSWORD,
            },
        )
        assert status == 303 and resp.headers["Location"] == "/status"
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert claim.is_claimed(setup_box.data_dir)
        assert claim.setup_code(setup_box.data_dir) is None
        stored = claim.admin_hash(setup_box.data_dir)
        assert stored is not None and stored.startswith("$argon2id$")
        status, text, _ = await page.get("/status")
        assert status == 200 and "Running for" in text
        # Claimed: /claim now leads to login, and the code is worthless.
        status, _, resp = await page.get("/claim")
        assert (status, resp.headers["Location"]) == (303, "/login")

    run_page(scenario)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"setup_code": "WRONG-CODE-0000"}, "not this box"),
        ({"password2": "something else"}, "differ"),
        ({"password": "short", "password2": "short"}, "at least 8"),
        ({"setup_code": ""}, "Setup code: please fill this in"),
        ({"setup_code": "X" * 41}, "too long"),
        ({"password": "x" * 1025, "password2": "x" * 1025}, "too long"),
    ],
)
def test_a_bad_claim_says_why_and_claims_nothing(
    run_page: Any, setup_box: SetupBox, fields: dict[str, str], message: str
) -> None:
    async def scenario(page: Page) -> None:
        code = claim.setup_code(setup_box.data_dir)
        form = {"setup_code": code, "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD}
        form.update(fields)
        await page.get("/claim")
        status, text, _ = await page.post("/claim", form)
        assert status in (400, 403)
        assert message in text
        assert not claim.is_claimed(setup_box.data_dir)
        assert "Traceback" not in text

    run_page(scenario)


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    run_page: Any, setup_box: SetupBox
) -> None:
    async def scenario(page: Page) -> None:
        code = claim.setup_code(setup_box.data_dir) or ""
        form = {"setup_code": code, "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD}
        await page.get("/claim")
        good = page.csrf
        status, text, _ = await page.post("/claim", form, csrf="")
        assert status == 403 and "expired" in text
        status, _, _ = await page.post("/claim", form, csrf=good[:-2] + "xx")
        assert status == 403
        assert not claim.is_claimed(setup_box.data_dir)
        # Another visitor's token does not fit this session.
        _, other = page.state.sessions.new(admin=False)
        status, _, _ = await page.post("/claim", form, csrf=other.csrf)
        assert status == 403
        assert not claim.is_claimed(setup_box.data_dir)
        status, _, _ = await page.post("/claim", form, csrf=good)
        assert status == 303

    run_page(scenario)


def test_every_post_needs_the_token_once_logged_in(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        for path in [*POSTS, "/mailboxes/" + "0" * 32 + "/remove"]:
            status, text, _ = await page.post(path, {"address": "x@example.org"}, csrf="")
            assert status == 403, path
            assert "expired" in text
        status, _, _ = await page.get("/status")
        assert status == 200  # still logged in: refusals change nothing

    run_page(scenario, claimed=True)


def test_unauthenticated_requests_go_to_login(run_page: Any, setup_box: SetupBox) -> None:
    claim.claim(setup_box.data_dir, auth_hash())

    async def scenario(page: Page) -> None:
        for path in [*PAGES[:-1], "/mailboxes/" + "0" * 32, "/devices/" + "0" * 32 + "/qr.svg"]:
            status, _, resp = await page.get(path)
            assert (status, resp.headers.get("Location")) == (303, "/login"), path
        await page.get("/login")
        status, _, resp = await page.post("/mailboxes", {"address": "eve@example.org"})
        assert (status, resp.headers.get("Location")) == (303, "/login")
        assert setup_box.drive is not None and setup_box.drive.mailboxes() == []

    run_page(scenario)


def auth_hash() -> str:
    from tests.web.setup.conftest import hash_for

    return hash_for(ADMIN_PASSWORD)


def test_login_logout_and_a_fresh_session_on_login(run_page: Any, setup_box: SetupBox) -> None:
    claim.claim(setup_box.data_dir, auth_hash())

    async def scenario(page: Page) -> None:
        await page.get("/login")
        anonymous = page.client.session.cookie_jar.filter_cookies(page.client.make_url("/"))
        before = anonymous[auth.COOKIE].value
        status, text, _ = await page.post("/login", {"password": "wrong password"})
        assert status == 403 and "Wrong password" in text
        status, _, resp = await page.post("/login", {"password": ADMIN_PASSWORD})
        assert (status, resp.headers["Location"]) == (303, "/status")
        after = page.client.session.cookie_jar.filter_cookies(page.client.make_url("/"))
        assert after[auth.COOKIE].value != before  # no session fixation
        assert page.state.sessions.get(before) is None
        status, _, _ = await page.get("/status")
        assert status == 200
        status, _, resp = await page.post("/logout", {})
        assert (status, resp.headers["Location"]) == (303, "/login")
        status, _, resp = await page.get("/status")
        assert (status, resp.headers["Location"]) == (303, "/login")

    run_page(scenario)


def test_login_attempts_are_rate_limited(run_page: Any, setup_box: SetupBox) -> None:
    claim.claim(setup_box.data_dir, auth_hash())

    async def scenario(page: Page) -> None:
        await page.get("/login")
        for _ in range(auth.MAX_FAILURES):
            status, _, _ = await page.post("/login", {"password": "guess"})
            assert status == 403
        # Now even the right password is not checked.
        status, text, resp = await page.post("/login", {"password": ADMIN_PASSWORD})
        assert status == 429 and "Too many wrong attempts" in text
        assert 0 < int(resp.headers["Retry-After"]) <= auth.WINDOW + 1
        status, _, resp = await page.get("/status")
        assert (status, resp.headers["Location"]) == (303, "/login")

    run_page(scenario)


def test_setup_code_guesses_are_rate_limited_too(run_page: Any, setup_box: SetupBox) -> None:
    async def scenario(page: Page) -> None:
        code = claim.setup_code(setup_box.data_dir)
        await page.get("/claim")
        form = {"password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD}
        for n in range(auth.MAX_FAILURES):
            status, _, _ = await page.post("/claim", {**form, "setup_code": f"AAAA-AAAA-{n:04d}"})
            assert status == 403
        status, _, _ = await page.post("/claim", {**form, "setup_code": code or ""})
        assert status == 429
        assert not claim.is_claimed(setup_box.data_dir)

    run_page(scenario)


def test_security_headers_on_pages_redirects_and_errors(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        for path in ["/status", "/nonexistent", "/"]:
            _, text, resp = await page.get(path)
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        status, text, _ = await page.get("/nonexistent")
        assert status == 404 and "No such page" in text

    run_page(scenario, claimed=True)


def test_no_page_has_inline_script_or_style(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        for path in ["/status", "/mailboxes", "/storage", "/settings", "/devices"]:
            _, text, _ = await page.get(path)
            assert "<script" not in text and "<style" not in text and "style=" not in text

    run_page(scenario, claimed=True)


def test_oversized_and_malformed_bodies(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        status, text, _ = await page.post("/settings", {"local_domains": "a" * 20_000})
        assert status == 413 and "Too much data" in text
        resp = await page.client.post(
            "/mailboxes",
            data=b"\xff\xfe not a form",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        )
        assert resp.status in (400, 403)
        assert "Traceback" not in await resp.text()

    run_page(scenario, claimed=True)


def test_an_unexpected_error_shows_a_page_without_a_trace(
    run_page: Any, setup_box: SetupBox, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Exception):
        pass

    async def scenario(page: Page) -> None:
        drive = setup_box.drive
        assert drive is not None

        def boom() -> Any:
            raise Broken("secret-looking detail")

        drive.mailboxes = boom  # type: ignore[method-assign]
        status, text, _ = await page.get("/mailboxes")
        assert status == 500 and "Something went wrong" in text
        assert "Traceback" not in text and "secret-looking" not in text

    run_page(scenario, claimed=True)
    assert "Broken" in caplog.text and "secret-looking" not in caplog.text


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("192.168.1.20", True),
        ("10.0.0.5", True),
        ("172.16.4.4", True),
        ("169.254.10.10", True),
        ("fe80::1%eth0", True),
        ("fd00::5", True),
        ("::ffff:192.168.1.9", True),
        ("8.8.8.8", False),
        ("2001:4860::1", False),
        ("::ffff:8.8.8.8", False),
        ("", False),
    ],
)
def test_lan_addresses(remote: str, allowed: bool) -> None:
    assert security.on_lan(remote) is allowed


def test_sessions_are_bounded_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = auth.Sessions(max_anonymous=3, max_admin=2)
    tokens = [sessions.new(admin=False)[0] for _ in range(4)]
    assert sessions.get(tokens[0]) is None and sessions.get(tokens[3]) is not None
    admins = [sessions.new(admin=True)[0] for _ in range(3)]
    assert sessions.get(admins[0]) is None and sessions.get(admins[2]) is not None
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    token, _ = sessions.new(admin=True)
    now[0] += auth.IDLE_TIMEOUT + 1
    assert sessions.get(token) is None
    assert sessions.get("x" * 500) is None


def test_data_dir_is_where_claim_files_go(setup_box: SetupBox) -> None:
    assert isinstance(setup_box.data_dir, Path)

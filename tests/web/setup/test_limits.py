"""Limits that hold under concurrency: wrong secrets counted before they are checked,
Argon2id one at a time, and anonymous visitors that cannot push the admin out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from letterbox import claim
from letterbox.drive import Drive

from tests.web.setup.conftest import ADMIN_PASSWORD, Page, SetupBox, hash_for

CONCURRENT = 12


class Spy:
    """Runs real checks (`spy(fn, *args)`): counts the calls and the most running at
    once, and makes each take a while, as Argon2id does on a small board."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.seconds)
            return fn(*args)
        finally:
            with self._lock:
                self.running -= 1


def test_concurrent_logins_are_counted_before_they_are_checked(
    run_page: Any, setup_box: SetupBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from letterbox.web.setup import auth

    claim.claim(setup_box.data_dir, hash_for(ADMIN_PASSWORD))
    spy, real = Spy(), claim.check_admin_password
    monkeypatch.setattr(claim, "check_admin_password", lambda *a: spy(real, *a))

    async def scenario(page: Page) -> None:
        await page.get("/login")
        answers = await asyncio.gather(
            *(page.post("/login", {"password": f"guess {n}"}) for n in range(CONCURRENT))
        )
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [403] * auth.MAX_FAILURES + [429] * (CONCURRENT - auth.MAX_FAILURES)
        assert all(
            "Too many wrong attempts" in text and resp.headers["Retry-After"]
            for status, text, resp in answers
            if status == 429
        )
        # Now even the right password is not checked.
        status, _, _ = await page.post("/login", {"password": ADMIN_PASSWORD})
        assert status == 429

    run_page(scenario)
    assert spy.calls == auth.MAX_FAILURES
    assert spy.most <= auth.ARGON2_CONCURRENCY


def test_a_right_login_forgives_the_counted_attempt(run_page: Any, setup_box: SetupBox) -> None:
    from letterbox.web.setup import auth

    claim.claim(setup_box.data_dir, hash_for(ADMIN_PASSWORD))

    async def scenario(page: Page) -> None:
        await page.get("/login")
        for _ in range(auth.MAX_FAILURES - 1):
            status, _, _ = await page.post("/login", {"password": "guess"})
            assert status == 403
        status, _, _ = await page.post("/login", {"password": ADMIN_PASSWORD})
        assert status == 303
        assert page.state.limiter.retry_after("127.0.0.1") == 0
        assert page.state.limiter.begin("127.0.0.1") == 0  # a clean slate, not one left

    run_page(scenario)


def test_concurrent_recovery_codes_are_counted_before_they_are_checked(
    run_page: Any, setup_box: SetupBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from letterbox.web.setup import auth

    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("ben@example.org", quota=1 << 30, password="old password")
    spy, real = Spy(), Drive.recover_key
    monkeypatch.setattr(Drive, "recover_key", lambda *a: spy(real, *a))

    async def scenario(page: Page) -> None:
        await page.get(f"/mailboxes/{mailbox.id}")
        new = {"password": "new password", "password2": "new password"}
        answers = await asyncio.gather(
            *(
                page.post(f"/mailboxes/{mailbox.id}/password", {"recovery_code": f"W{n}", **new})
                for n in range(CONCURRENT)
            )
        )
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [403] * auth.MAX_FAILURES + [429] * (CONCURRENT - auth.MAX_FAILURES)
        assert all(resp.headers["Retry-After"] for status, _, resp in answers if status == 429)

    run_page(scenario, claimed=True)
    assert spy.calls == auth.MAX_FAILURES
    assert spy.most <= auth.ARGON2_CONCURRENCY
    drive.unlock(mailbox.id, "old password")  # unchanged


def test_argon2id_runs_one_at_a_time_across_pages(
    run_page: Any, setup_box: SetupBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logins and new mailboxes (password and recovery code: Argon2id) share the
    page's slots: counted by one gauge around both."""
    from letterbox.web.setup import auth

    gauge = Spy()
    real_check, real_create = claim.check_admin_password, Drive.create_mailbox
    monkeypatch.setattr(claim, "check_admin_password", lambda *a: gauge(real_check, *a))
    monkeypatch.setattr(
        Drive, "create_mailbox", lambda *a, **kw: gauge(lambda: real_create(*a, **kw))
    )

    async def scenario(page: Page) -> None:
        await page.get("/mailboxes")
        form = {"password": "a password", "password2": "a password", "mode": "login"}
        jobs = [page.post("/mailboxes", {**form, "address": f"p{n}@example.org"}) for n in range(3)]
        jobs += [page.post("/login", {"password": ADMIN_PASSWORD}) for _ in range(3)]
        for status, _, _ in await asyncio.gather(*jobs):
            assert status == 303

    run_page(scenario, claimed=True)
    assert gauge.calls == 6 and gauge.most <= auth.ARGON2_CONCURRENCY
    drive = setup_box.drive
    assert drive is not None and len(drive.mailboxes()) == 3


def test_a_flood_of_anonymous_visitors_does_not_log_the_admin_out(run_page: Any) -> None:
    from letterbox.web.setup import auth

    visitors = 300  # more than auth.MAX_ANONYMOUS

    async def scenario(page: Page) -> None:
        url = page.client.make_url("/login")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as stranger:
            for _ in range(visitors):
                async with stranger.get(url, allow_redirects=False) as resp:
                    assert resp.status == 200 and "Set-Cookie" in resp.headers
        status, _, _ = await page.get("/status")
        assert status == 200  # still logged in
        assert visitors > auth.MAX_ANONYMOUS
        assert len(page.state.sessions) <= auth.MAX_ANONYMOUS + auth.MAX_ADMIN

    run_page(scenario, claimed=True)


@pytest.mark.parametrize("claimed", [False, True])
def test_static_files_and_mail_client_config_make_no_session(run_page: Any, claimed: bool) -> None:
    paths = [
        "/static/letterbox.css",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        "/mail/config-v1.1.xml",
        "/mail/profile/" + "0" * 32 + ".mobileconfig",
    ]

    async def scenario(page: Page) -> None:
        # A session is made only together with its cookie (security.py), so no
        # Set-Cookie means no session; the table is counted too.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as stranger:
            for path in paths * 3:
                async with stranger.get(page.client.make_url(path), allow_redirects=False) as r:
                    assert r.status in (200, 303, 404), (path, r.status)
                    assert "Set-Cookie" not in r.headers, path
            # Nothing there takes a form: a POST without a session is refused.
            url = page.client.make_url("/mail/config-v1.1.xml")
            async with stranger.post(url, data={"csrf": "x"}, allow_redirects=False) as r:
                assert r.status in (303, 403)
                assert "Set-Cookie" not in r.headers
        assert len(page.state.sessions) == (1 if claimed else 0)  # the admin's, if any

    run_page(scenario, claimed=claimed)

"""The setup page through aiohttp's test client, in front of a real drive.

`SetupBox` is the part of the appliance the page talks to (letterbox.web.setup.Box),
made of real parts: a real drive in a temporary directory, the real config, the
real claim files. It is the real `letterbox.app.Appliance`, not started: settings
saved on the page go through the appliance's own `apply_settings`, to whichever
listeners a test starts. The listeners are not started here (test_live.py and
tests/browser/ run the whole `letterbox run`); `ports()` reports fixed numbers so
the Devices page and the autoconfig have something to show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from letterbox import claim, config, crypto
from letterbox.app import Appliance
from letterbox.drive import Drive
from letterbox.web.setup import SetupState, setup
from letterbox.web.setup.context import DirectoryControl

from tests.helpers import FAST_ARGON2

ADMIN_PASSWORD = "admin password 1"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PORTS = {"smtp": 2525, "pop3": 1110, "pop3s": 1995, "web": 8080}


class SetupBox(Appliance):
    """The appliance with the test's drive (opened with cheap Argon2id) in place of
    the one its drive manager would open: a directory drive, online while open."""

    def __init__(self, cfg: config.Config, data_dir: Path, drive: Drive | None) -> None:
        super().__init__(cfg, data_dir, dev=True)
        self.started_at = 1_000_000.0
        self._drive = drive
        self.drives = DirectoryControl(self)  # type: ignore[assignment]
        self.applied: list[config.Config] = []

    @property
    def drive(self) -> Drive | None:
        return self._drive

    def ports(self) -> dict[str, int]:
        return dict(PORTS)

    async def apply_settings(self, new_cfg: config.Config) -> None:
        self.applied.append(new_cfg)
        await super().apply_settings(new_cfg)


class Page:
    """A browser-like client: keeps the cookie, finds the CSRF token in each page."""

    def __init__(self, client: TestClient, box: SetupBox, state: SetupState) -> None:
        self.client = client
        self.box = box
        self.state = state
        self.csrf = ""

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        resp = await self.client.get(path, allow_redirects=False, **kw)
        text = await resp.text()
        m = CSRF.search(text)
        if m:
            self.csrf = m.group(1)
        return resp.status, text, resp

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: str | None = None, **kw: Any
    ) -> tuple[int, str, Any]:
        if csrf is None:
            if not self.csrf:
                await self.get("/claim" if not claim.is_claimed(self.box.data_dir) else "/login")
            csrf = self.csrf
        body = dict(data or {})
        if csrf != "":
            body.setdefault("csrf", csrf)
        resp = await self.client.post(path, data=body, allow_redirects=False, **kw)
        text = await resp.text()
        m = CSRF.search(text)
        if m:
            self.csrf = m.group(1)
        return resp.status, text, resp

    async def claim_and_login(self) -> None:
        code = claim.setup_code(self.box.data_dir)
        assert code is not None
        await self.get("/claim")
        status, _, resp = await self.post(
            "/claim",
            {"setup_code": code, "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD},
        )
        assert status == 303, status
        assert resp.headers["Location"] == "/status"
        await self.get("/status")


Scenario = Callable[[Page], Awaitable[None]]


@pytest.fixture
def setup_box(open_drive: Callable[..., Drive], data_dir: Path) -> SetupBox:
    cfg = dataclasses.replace(
        config.Config(),
        crypto=config.CryptoSettings(
            argon2_opslimit=FAST_ARGON2.opslimit, argon2_memlimit=config.Size(FAST_ARGON2.memlimit)
        ),
    )
    return SetupBox(cfg, data_dir, open_drive())


@pytest.fixture
def run_page(setup_box: SetupBox) -> Iterator[Callable[..., None]]:
    """Run an async scenario against a fresh app on aiohttp's test server."""

    def _run(scenario: Scenario, *, box: SetupBox | None = None, claimed: bool = False) -> None:
        the_box = box or setup_box

        async def main() -> None:
            app = web.Application()
            state = setup(app, the_box)
            async with TestClient(TestServer(app)) as client:
                page = Page(client, the_box, state)
                if claimed:
                    await page.claim_and_login()
                await scenario(page)

        asyncio.run(main())

    yield _run


def hash_for(password: str) -> str:
    return crypto.hash_password(password, FAST_ARGON2)

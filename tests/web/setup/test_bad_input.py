"""Forms the setup page cannot read: a clear 400 page, never a 500 or an ERROR line.

No login is needed to reach POST /login (or /claim before the box is claimed), so
these are what anyone on the LAN can send.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from letterbox import claim

from tests.web.setup.conftest import Page, SetupBox, hash_for

BOUNDARY = "----letterboxtest"


def _multipart(fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def _bodies(csrf: str) -> list[tuple[str, bytes, str]]:
    form = f"csrf={csrf}&password=admin+password+1".encode()
    whole = _multipart({"csrf": csrf, "password": "admin password 1"})
    return [
        ("urlencoded, charset=bogus", form, "application/x-www-form-urlencoded; charset=bogus"),
        (
            "multipart, charset=bogus",
            whole,
            f"multipart/form-data; boundary={BOUNDARY}; charset=bogus",
        ),
        (
            "multipart cut short",
            whole[: len(whole) // 2],
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
        (
            "multipart, no end",
            whole[: -len(f"--{BOUNDARY}--\r\n")],
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
        ("multipart, no boundary", whole, "multipart/form-data"),
        (
            "multipart cut in a part's headers",
            whole[: whole.index(b"Content-Disposition") + 12],
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
    ]


@pytest.mark.parametrize("path", ["/login", "/claim", "/mailboxes"])
def test_an_unreadable_form_is_400_and_logs_no_error(
    run_page: Any, setup_box: SetupBox, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Before the login (/login, and /claim on a new box) and after it (/mailboxes)."""
    if path == "/login":
        claim.claim(setup_box.data_dir, hash_for("admin password 1"))
    caplog.set_level(logging.INFO)

    async def scenario(page: Page) -> None:
        await page.get(path)
        assert page.csrf
        for name, body, content_type in _bodies(page.csrf):
            resp = await page.client.post(
                path, data=body, headers={"Content-Type": content_type}, allow_redirects=False
            )
            text = await resp.text()
            assert resp.status == 400, (name, resp.status, text[:300])
            assert "could not be read" in text, name
        # The page still works for a readable form.
        status, _, _ = await page.get(path)
        assert status == 200

    run_page(scenario, claimed=path == "/mailboxes")
    if path == "/mailboxes":
        assert setup_box.drive is not None and setup_box.drive.mailboxes() == []
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]

"""Sizes for people: one helper (status.human_size), IEC units, on every page and in
`letterbox status` alike, so 1 GiB of quota never reads as "1.1 GB" in one place and
"1.0 GB" in another."""

from __future__ import annotations

from typing import Any

import pytest
from letterbox import status
from letterbox.web.setup import context

from tests.web.setup.conftest import Page, SetupBox


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "?"),
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        (1 << 30, "1.0 GiB"),
        (10**9, "953.7 MiB"),  # a "1 GB" drive: not 1.0 of anything binary
        (3 << 40, "3.0 TiB"),
    ],
)
def test_human_size_uses_iec_units(n: int | None, text: str) -> None:
    assert status.human_size(n) == text


def test_the_page_formats_with_the_same_helper() -> None:
    assert context.make_env().filters["human"] is status.human_size


def test_pages_show_quotas_in_gib(run_page: Any, setup_box: SetupBox) -> None:
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=2 << 30, password="a password")

    async def scenario(page: Page) -> None:
        for path in ("/mailboxes", f"/mailboxes/{mailbox.id}", "/storage"):
            status_code, text, _ = await page.get(path)
            assert status_code == 200, path
            assert "of 2.0 GiB" in text, path
            assert " GB" not in text and " MB" not in text and " KB" not in text, path

    run_page(scenario, claimed=True)

"""Mail settings: saved, applied to the running box, shown as DNS records."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from letterbox import config, settingsfile
from letterbox.web.setup.views_settings import dns_records

from tests.web.setup.conftest import Page, SetupBox

GOOD = {
    "local_domains": "example.org\nfamily.example, Example.ORG.",
    "max_message_size": "25M",
    "keep_days": "90",
    "public_hostname": "mail.example.org",
}


def test_save_persists_applies_and_shows_the_records(run_page: Any, setup_box: SetupBox) -> None:
    async def scenario(page: Page) -> None:
        await page.get("/settings")
        status, _, resp = await page.post("/settings", GOOD)
        assert (status, resp.headers["Location"]) == (303, "/settings?saved=1")
        cfg = setup_box.cfg
        assert cfg.smtp.local_domains == ["example.org", "family.example"]
        assert cfg.smtp.max_message_size == 25 << 20
        assert cfg.drive.keep_days == 90 and cfg.box.public_hostname == "mail.example.org"
        assert setup_box.drive is not None and setup_box.drive.settings.keep_days == 90
        saved = config.load(None, overrides=settingsfile.read(setup_box.data_dir))
        assert saved.smtp.local_domains == cfg.smtp.local_domains
        assert saved.smtp.max_message_size == cfg.smtp.max_message_size
        status, text, _ = await page.get("/settings?saved=1")
        assert "Saved." in text
        assert '<code class="copy">v=spf1' not in text  # SPF is the sending provider's
        assert "_dmarc.family.example." in text
        assert "v=DMARC1; p=none; rua=mailto:postmaster@example.org" in text
        assert "10 mail.example.org." in text
        assert 'class="copy"' in text

    run_page(scenario, claimed=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"local_domains": "not a domain!"}, "is not a domain name"),
        ({"local_domains": " ".join(f"d{n}.example" for n in range(60))}, "at most 50"),
        ({"max_message_size": "huge"}, "size such as"),
        ({"max_message_size": "1K"}, "between 64K and 2G"),
        ({"max_message_size": "5G"}, "between 64K and 2G"),
        ({"max_message_size": ""}, "please fill this in"),
        ({"keep_days": "-3"}, "number of days"),
        ({"keep_days": "forever"}, "number of days"),
        ({"public_hostname": "bad host"}, "is not a host name"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(
    run_page: Any, setup_box: SetupBox, fields: dict[str, str], message: str
) -> None:
    before = setup_box.cfg

    async def scenario(page: Page) -> None:
        await page.get("/settings")
        status, text, _ = await page.post("/settings", {**GOOD, **fields})
        assert status == 400 and message in text
        assert setup_box.cfg is before and setup_box.applied == []
        assert settingsfile.read(setup_box.data_dir) == {}

    run_page(scenario, claimed=True)


def test_records_without_a_public_host_name_say_what_is_missing() -> None:
    mx, dmarc = dns_records("example.org", "")
    assert (mx.name, mx.type) == ("example.org.", "MX") and "public host name" in mx.value
    assert dmarc.name == "_dmarc.example.org."


def selected_postmaster(text: str) -> str:
    """The value of the selected option of the postmaster choice, as a browser submits it."""
    select = text[text.index('<select id="postmaster"') : text.index("</select>")]
    [value] = re.findall(r'<option value="([^"]*)" selected>', select)
    return value


def test_the_postmaster_mailbox_is_chosen_saved_and_applied(
    run_page: Any, setup_box: SetupBox
) -> None:
    drive = setup_box.drive
    assert drive is not None
    for address in ("ben@example.org", "anna@example.org"):
        drive.create_mailbox(address, quota=1 << 30, password="a password")

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/settings")
        assert selected_postmaster(text) == ""  # default: the first as listed
        assert "the first mailbox (anna@example.org)" in text
        assert '<span id="postmaster-now">anna@example.org</span>' in text
        status, _, _ = await page.post("/settings", {**GOOD, "postmaster": "Ben@Example.org"})
        assert status == 303
        assert setup_box.cfg.smtp.postmaster == "ben@example.org"
        saved = config.load(None, overrides=settingsfile.read(setup_box.data_dir))
        assert saved.smtp.postmaster == "ben@example.org"
        _, text, _ = await page.get("/settings")
        assert selected_postmaster(text) == "ben@example.org"
        assert '<span id="postmaster-now">ben@example.org</span>' in text
        before = setup_box.cfg
        status, text, _ = await page.post("/settings", {**GOOD, "postmaster": "eve@example.org"})
        assert status == 400 and "choose one of the mailboxes" in text
        assert setup_box.cfg is before

    run_page(scenario, claimed=True)


def test_with_the_drive_offline_saving_keeps_the_postmaster_choice(
    run_page: Any, setup_box: SetupBox
) -> None:
    smtp = dataclasses.replace(setup_box.cfg.smtp, postmaster="ben@example.org")
    box = SetupBox(dataclasses.replace(setup_box.cfg, smtp=smtp), setup_box.data_dir, None)

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/settings")
        assert selected_postmaster(text) == "ben@example.org"
        assert "The drive is offline" in text
        status, _, _ = await page.post("/settings", {**GOOD, "postmaster": "ben@example.org"})
        assert status == 303 and box.cfg.smtp.postmaster == "ben@example.org"

    run_page(scenario, box=box, claimed=True)


def test_the_page_says_why_there_is_no_spf_record(run_page: Any, setup_box: SetupBox) -> None:
    """The box only receives: `v=spf1 mx -all` would make the household's own mail,
    sent through its provider, fail SPF everywhere (and p=quarantine bin it)."""

    async def scenario(page: Page) -> None:
        await page.post("/settings", GOOD)
        _, text, _ = await page.get("/settings")
        assert "p=quarantine" not in text and "p=reject" not in text
        assert "it does not send it" in text and "publish what it tells you" in text

    run_page(scenario, claimed=True)

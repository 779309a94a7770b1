"""Mailboxes on the setup page: add, the recovery code once, reset, quota, remove."""

from __future__ import annotations

import re
from typing import Any

import pytest
from letterbox import crypto
from letterbox.drive import Drive

from tests.web.setup.conftest import Page, SetupBox

PASSWORD = "anna's password"


def the_drive(box: SetupBox) -> Drive:
    assert box.drive is not None
    return box.drive


async def add(page: Page, **fields: str) -> tuple[int, str, Any]:
    form = {
        "address": "anna@example.org",
        "password": PASSWORD,
        "password2": PASSWORD,
        "quota": "",
        "mode": "login",
    }
    form.update(fields)
    await page.get("/mailboxes")
    return await page.post("/mailboxes", form)


def test_add_shows_the_recovery_code_once_and_it_works(run_page: Any, setup_box: SetupBox) -> None:
    drive = the_drive(setup_box)

    async def scenario(page: Page) -> None:
        status, _, resp = await add(page, quota="500M")
        assert status == 303
        created = resp.headers["Location"]
        status, text, _ = await page.get(created)
        assert status == 200
        code = re.search(r'id="recovery-code">([^<]+)<', text)
        assert code is not None
        mailbox = drive.find_mailbox("anna@example.org")
        assert mailbox is not None and mailbox.quota == 500 << 20 and not mailbox.end_to_end
        drive.recover_key(mailbox.id, code.group(1))  # the code shown is the real one
        drive.unlock(mailbox.id, PASSWORD)
        status, text, _ = await page.get(created)
        assert status == 410 and code.group(1) not in text
        status, text, _ = await page.get("/mailboxes")
        assert "anna@example.org" in text and "<meter" in text

    run_page(scenario, claimed=True)


def test_empty_quota_means_the_default(run_page: Any, setup_box: SetupBox) -> None:
    async def scenario(page: Page) -> None:
        status, _, _ = await add(page, quota="")
        assert status == 303
        mailbox = the_drive(setup_box).find_mailbox("anna@example.org")
        assert mailbox is not None and mailbox.quota == setup_box.cfg.mailbox.default_quota

    run_page(scenario, claimed=True)


def test_end_to_end_mailbox_takes_the_public_key(run_page: Any, setup_box: SetupBox) -> None:
    person = crypto.PersonalKey.generate()

    async def scenario(page: Page) -> None:
        status, _, resp = await add(
            page, mode="end-to-end", password="", password2="", public_key=person.identity_key.hex()
        )
        assert status == 303
        _, text, _ = await page.get(resp.headers["Location"])
        assert "end-to-end" in text and "recovery-code" not in text
        mailbox = the_drive(setup_box).find_mailbox("anna@example.org")
        assert mailbox is not None and mailbox.end_to_end
        assert mailbox.auth_key == person.identity_key

    run_page(scenario, claimed=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": "not an address"}, "write a mail address"),
        ({"address": "anna@localhost"}, "write a mail address"),
        ({"address": "<script>@example.org"}, "write a mail address"),
        ({"address": "a" * 300 + "@example.org"}, "too long"),
        ({"address": ""}, "please fill this in"),
        ({"password2": "other password"}, "differ"),
        ({"password": "short", "password2": "short"}, "at least 8"),
        ({"quota": "lots"}, "size such as"),
        ({"quota": "10K"}, "at least 1M"),
        ({"quota": "1" * 30}, "too long"),
        ({"mode": "telepathy"}, "Reading mode"),
        ({"mode": "end-to-end", "public_key": "abcd"}, "64 hexadecimal"),
        ({"mode": "end-to-end", "public_key": "00" * 32}, "64 hexadecimal"),
        ({"mode": "end-to-end", "public_key": "zz" * 32}, "64 hexadecimal"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_nothing_is_made(
    run_page: Any, setup_box: SetupBox, fields: dict[str, str], message: str
) -> None:
    async def scenario(page: Page) -> None:
        status, text, _ = await add(page, **fields)
        assert status == 400
        assert message in text
        assert "<script>@" not in text  # echoed input is escaped
        assert the_drive(setup_box).mailboxes() == []

    run_page(scenario, claimed=True)


def test_a_second_mailbox_for_one_address_is_refused(run_page: Any, setup_box: SetupBox) -> None:
    async def scenario(page: Page) -> None:
        assert (await add(page))[0] == 303
        status, text, _ = await add(page, address="ANNA@example.org")
        assert status == 409 and "exists already" in text
        assert len(the_drive(setup_box).mailboxes()) == 1

    run_page(scenario, claimed=True)


def test_change_quota(run_page: Any, setup_box: SetupBox) -> None:
    drive = the_drive(setup_box)

    async def scenario(page: Page) -> None:
        await add(page)
        mailbox = drive.find_mailbox("anna@example.org")
        assert mailbox is not None
        await page.get(f"/mailboxes/{mailbox.id}")
        status, _, resp = await page.post(f"/mailboxes/{mailbox.id}/quota", {"quota": "3G"})
        assert (status, resp.headers["Location"]) == (303, f"/mailboxes/{mailbox.id}?saved=quota")
        assert drive.mailbox(mailbox.id).quota == 3 << 30
        status, text, _ = await page.post(f"/mailboxes/{mailbox.id}/quota", {"quota": "-1"})
        assert status == 400 and "size such as" in text
        status, _, _ = await page.post(f"/mailboxes/{mailbox.id}/quota", {"quota": ""})
        assert status == 400
        assert drive.mailbox(mailbox.id).quota == 3 << 30

    run_page(scenario, claimed=True)


def test_reset_password_with_the_recovery_code(run_page: Any, setup_box: SetupBox) -> None:
    drive = the_drive(setup_box)
    mailbox, code = drive.create_mailbox("ben@example.org", quota=1 << 30, password="old password")
    assert code is not None

    async def scenario(page: Page) -> None:
        path = f"/mailboxes/{mailbox.id}/password"
        await page.get(f"/mailboxes/{mailbox.id}")
        new = {"password": "new password", "password2": "new password"}
        status, text, _ = await page.post(path, {"recovery_code": "WRONG", **new})
        assert status == 403 and "does not fit" in text
        drive.unlock(mailbox.id, "old password")  # unchanged
        status, _, _ = await page.post(path, {"recovery_code": code, **new})
        assert status == 303
        drive.unlock(mailbox.id, "new password")
        with pytest.raises(crypto.WrongPassword):
            drive.unlock(mailbox.id, "old password")

    run_page(scenario, claimed=True)


def test_remove_needs_the_address_typed(run_page: Any, setup_box: SetupBox) -> None:
    drive = the_drive(setup_box)
    mailbox, _ = drive.create_mailbox("ben@example.org", quota=1 << 30, password="a password")
    drive.deliver("x@example.net", [mailbox.address], b"Subject: hi\r\n\r\nhello\r\n")

    async def scenario(page: Page) -> None:
        path = f"/mailboxes/{mailbox.id}/remove"
        _, text, _ = await page.get(f"/mailboxes/{mailbox.id}")
        assert "Type <strong>ben@example.org</strong>" in text
        status, text, _ = await page.post(path, {"confirm": "ben"})
        assert status == 400 and "type the address ben@example.org exactly" in text
        assert drive.find_mailbox(mailbox.address) is not None
        status, _, _ = await page.post(path, {"confirm": "ben@example.org"})
        assert status == 303
        assert drive.find_mailbox(mailbox.address) is None
        assert drive.stats()["deliveries"] == 0
        status, _, _ = await page.get(f"/mailboxes/{mailbox.id}")
        assert status == 404

    run_page(scenario, claimed=True)


def test_unknown_or_malformed_mailbox_ids_are_404(run_page: Any) -> None:
    async def scenario(page: Page) -> None:
        for path in ["/mailboxes/" + "a" * 32, "/mailboxes/../etc", "/mailboxes/XYZ"]:
            status, text, _ = await page.get(path)
            assert status == 404, path
            assert "No such page" in text
        status, _, _ = await page.post("/mailboxes/" + "a" * 32 + "/quota", {"quota": "1G"})
        assert status == 404

    run_page(scenario, claimed=True)


def test_drive_offline_pages_say_so(run_page: Any, setup_box: SetupBox) -> None:
    box = SetupBox(setup_box.cfg, setup_box.data_dir, None)

    async def scenario(page: Page) -> None:
        status, text, _ = await page.get("/mailboxes")
        assert status == 503 and "The drive is offline" in text
        status, text, _ = await add(page)
        assert status == 503
        for path in ["/status", "/storage", "/settings", "/devices"]:
            status, text, _ = await page.get(path)
            assert status == 200, path

    run_page(scenario, box=box, claimed=True)

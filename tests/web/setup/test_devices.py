"""Devices: the Thunderbird autoconfig, the Apple profile and the QR code."""

from __future__ import annotations

import dataclasses
import plistlib
import subprocess
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from letterbox import crypto, tls
from letterbox.lan.mdns import Announcer
from letterbox.web.setup import autoconfig, context, qr, views_devices

from tests.web.setup.conftest import PORTS, Page, SetupBox

AUTOCONFIG_PATHS = ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"]


def check_client_config(body: bytes, domains: set[str]) -> None:
    """The structure of Mozilla's clientConfig v1.1 as Thunderbird reads it."""
    root = ET.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    (provider,) = root.findall("emailProvider")
    assert provider.get("id") in domains
    assert {d.text for d in provider.findall("domain")} == domains
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    incoming = provider.findall("incomingServer")
    assert [(s.get("type"), s.findtext("port"), s.findtext("socketType")) for s in incoming] == [
        ("pop3", str(PORTS["pop3s"]), "SSL"),
        ("pop3", str(PORTS["pop3"]), "STARTTLS"),
    ]
    for server in incoming:
        assert server.findtext("hostname") == "letterbox.local"
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"
        assert server.findtext("pop3/leaveMessagesOnServer") == "true"
    (outgoing,) = provider.findall("outgoingServer")
    assert outgoing.get("type") == "smtp"
    assert outgoing.findtext("port") == str(PORTS["smtp"])
    assert outgoing.findtext("socketType") in ("plain", "SSL", "STARTTLS")
    # Every child element is one the format defines (nothing Thunderbird would trip on).
    allowed = {"hostname", "port", "socketType", "username", "authentication", "pop3"}
    for server in [*incoming, outgoing]:
        assert {child.tag for child in server} <= allowed


def test_autoconfig_is_public_once_claimed_and_lists_the_domains(
    run_page: Any, setup_box: SetupBox
) -> None:
    drive = setup_box.drive
    assert drive is not None
    drive.create_mailbox("anna@example.org", quota=1 << 30, password="a password")
    drive.create_mailbox("ben@family.example", quota=1 << 30, password="a password")

    async def scenario(page: Page) -> None:
        await page.claim_and_login()
        await page.post("/logout", {})
        for path in AUTOCONFIG_PATHS:
            resp = await page.client.get(path, params={"emailaddress": "anna@example.org"})
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/xml")
            check_client_config(await resp.read(), {"example.org", "family.example"})

    run_page(scenario)


def test_autoconfig_without_pop3_offers_no_pop3() -> None:
    root = ET.fromstring(
        autoconfig.client_config("box.example", ["a.example"], pop3=0, pop3s=995, smtp=25)
    )
    assert [s.findtext("port") for s in root.iter("incomingServer")] == ["995"]


def test_apple_profile_is_a_well_formed_plist_and_public(
    run_page: Any, setup_box: SetupBox
) -> None:
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password="a password")

    async def scenario(page: Page) -> None:
        await page.claim_and_login()
        _, text, _ = await page.get("/devices")
        link = f"/mail/profile/{mailbox.id}.mobileconfig"
        assert link in text and f"/devices/{mailbox.id}/qr.svg" in text
        assert "letterbox.local" in text and str(PORTS["pop3s"]) in text
        await page.post("/logout", {})
        resp = await page.client.get(link)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-apple-aspen-config"
        assert "attachment" in resp.headers["Content-Disposition"]
        body = await resp.read()
        doc = plistlib.loads(body)
        assert doc["PayloadType"] == "Configuration" and doc["PayloadVersion"] == 1
        (account,) = doc["PayloadContent"]
        assert account["PayloadType"] == "com.apple.mail.managed"
        assert account["EmailAccountType"] == "EmailTypePOP"
        assert account["EmailAddress"] == "anna@example.org"
        assert account["IncomingMailServerHostName"] == "letterbox.local"
        assert account["IncomingMailServerPortNumber"] == PORTS["pop3s"]
        assert account["IncomingMailServerUseSSL"] is True
        assert account["OutgoingMailServerPortNumber"] == PORTS["smtp"]
        assert "IncomingPassword" not in account  # the phone asks for it
        for payload in (doc, account):
            assert len(payload["PayloadUUID"]) == 36
        again = await (await page.client.get(link)).read()
        assert plistlib.loads(again)["PayloadUUID"] == doc["PayloadUUID"]  # replaces, not adds

    run_page(scenario)


def test_qr_code_is_an_svg_for_the_logged_in_admin(run_page: Any, setup_box: SetupBox) -> None:
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password="a password")

    async def scenario(page: Page) -> None:
        status, _, resp = await page.get(f"/devices/{mailbox.id}/qr.svg")
        assert status == 200 and resp.headers["Content-Type"] == "image/svg+xml"
        root = ET.fromstring(await resp.read())
        assert root.tag.endswith("svg")
        status, _, _ = await page.get("/devices/" + "0" * 32 + "/qr.svg")
        assert status == 404

    run_page(scenario, claimed=True)


def test_end_to_end_mailboxes_get_no_pop3_profile(run_page: Any, setup_box: SetupBox) -> None:
    drive = setup_box.drive
    assert drive is not None
    person = crypto.PersonalKey.generate()
    mailbox, _ = drive.create_mailbox(
        "carl@example.org", quota=1 << 30, identity_key=person.identity_key
    )

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert "letterbox fetch" in text
        status, _, _ = await page.get(f"/mail/profile/{mailbox.id}.mobileconfig")
        assert status == 404

    run_page(scenario, claimed=True)


def test_devices_use_the_name_mdns_actually_announces(run_page: Any, setup_box: SetupBox) -> None:
    """Another box had letterbox.local first, so this one announces letterbox-2.local
    (lan/mdns.py sets `Announcer.name` so once it won the name): phones must be
    sent there, not to the configured name that answers for the other box."""
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=1 << 30, password="a password")
    announcer = Announcer("letterbox", [])
    announcer.name = "letterbox-2.local."
    setup_box.mdns = announcer
    expected_base = f"http://letterbox-2.local:{PORTS['web']}"

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert '<code class="copy">letterbox-2.local</code>' in text
        assert f"{expected_base}/.well-known/autoconfig/mail/config-v1.1.xml" in text
        assert "letterbox.local" not in text
        body = await (await page.client.get(AUTOCONFIG_PATHS[0])).read()
        hosts = {e.text for e in ET.fromstring(body).iter("hostname")}
        assert hosts == {"letterbox-2.local"}
        link = f"/mail/profile/{mailbox.id}.mobileconfig"
        (account,) = plistlib.loads(await (await page.client.get(link)).read())["PayloadContent"]
        assert account["IncomingMailServerHostName"] == "letterbox-2.local"
        assert account["OutgoingMailServerHostName"] == "letterbox-2.local"
        svg = await (await page.client.get(f"/devices/{mailbox.id}/qr.svg")).read()
        assert svg == qr.svg(expected_base + link)

    run_page(scenario, claimed=True)
    assert views_devices.base_url(setup_box) == expected_base


def test_without_an_announced_name_the_configured_host_name_is_used(
    run_page: Any, setup_box: SetupBox
) -> None:
    """mDNS off (no announcer) or not announced yet (no LAN address: name None)."""
    setup_box.cfg = dataclasses.replace(
        setup_box.cfg, box=dataclasses.replace(setup_box.cfg.box, hostname="mail.home.arpa")
    )
    for mdns in (None, Announcer("letterbox", [])):
        setup_box.mdns = mdns
        assert context.lan_name(setup_box) == "mail.home.arpa"

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert '<code class="copy">mail.home.arpa</code>' in text
        body = await (await page.client.get(AUTOCONFIG_PATHS[1])).read()
        assert {e.text for e in ET.fromstring(body).iter("hostname")} == {"mail.home.arpa"}

    run_page(scenario, claimed=True)


def openssl_fingerprint(pem: bytes) -> str:
    """What a person sees with `openssl x509 -fingerprint -sha256` (a real process)."""
    done = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pem,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode().strip().partition("=")[2]


def test_devices_show_the_certificate_fingerprint_and_offer_the_certificate(
    run_page: Any, setup_box: SetupBox
) -> None:
    cert, _ = tls.ensure_self_signed(setup_box.data_dir, "letterbox.local")
    expected = openssl_fingerprint(cert.read_bytes())
    assert len(expected) == 95  # 32 upper-case hex pairs and 31 colons

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert f'<code class="copy" id="fingerprint">{expected}</code>' in text
        status, body, resp = await page.get("/devices/certificate.pem")
        assert status == 200
        assert resp.headers["Content-Type"] == "application/pem-certificate-chain"
        assert "attachment" in resp.headers["Content-Disposition"]
        assert openssl_fingerprint(body.encode()) == expected
        assert "PRIVATE KEY" not in body

    run_page(scenario, claimed=True)


def test_a_configured_file_with_key_and_chain_hands_on_only_the_leaf(
    run_page: Any, setup_box: SetupBox, tmp_path: Path
) -> None:
    """`smtp.tls_cert` may be one file with the certificate, its chain and the key
    (the listeners load it so): the download is the first certificate alone."""
    leaf, key = tls.ensure_self_signed(tmp_path / "a", "mail.example.org")
    other, _ = tls.ensure_self_signed(tmp_path / "b", "ca.example.org")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(key.read_bytes() + leaf.read_bytes() + other.read_bytes())
    smtp = dataclasses.replace(setup_box.cfg.smtp, tls_cert=str(combined), tls_key=str(combined))
    setup_box.cfg = dataclasses.replace(setup_box.cfg, smtp=smtp)
    expected = openssl_fingerprint(leaf.read_bytes())

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert expected in text
        _, body, _ = await page.get("/devices/certificate.pem")
        assert body.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in body
        assert openssl_fingerprint(body.encode()) == expected

    run_page(scenario, claimed=True)


def test_without_a_certificate_the_page_says_so_and_the_download_is_404(
    run_page: Any, setup_box: SetupBox
) -> None:
    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/devices")
        assert "not available (see the log)" in text and 'id="fingerprint"' not in text
        status, _, _ = await page.get("/devices/certificate.pem")
        assert status == 404

    run_page(scenario, claimed=True)

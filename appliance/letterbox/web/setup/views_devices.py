"""Devices: how to set up a mail client for each mailbox.

The page lists the server name (the name mDNS actually announces, else the
configured host name: context.lan_name) and the ports actually bound,
offers the Thunderbird autoconfiguration (public: Thunderbird fetches it before
anyone logs in) and an Apple profile per mailbox, and a QR code of the profile's
address for a phone's camera. The profile path names the mailbox by its random id,
so neither the address nor anything secret appears in a URL or the access log.

It also shows the TLS certificate's SHA-256 fingerprint (letterbox.tls) and offers
the certificate itself, so a person can compare or pin what a mail client shows
for the box's self-signed certificate; only the certificate, never the key.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from letterbox import tls
from letterbox.drive import MailboxInfo, MailboxNotFound
from letterbox.web.setup import autoconfig, mobileconfig, qr
from letterbox.web.setup.context import Box, lan_name, state_of
from letterbox.web.setup.forms import MAILBOX_ID_PATTERN, is_mailbox_id
from letterbox.web.setup.pages import render

routes = web.RouteTableDef()


def base_url(box: Box) -> str:
    port = box.ports().get("web", 0)
    host = lan_name(box)
    return f"http://{host}" if port in (0, 80) else f"http://{host}:{port}"


def profile_path(mailbox_id: str) -> str:
    return f"/mail/profile/{mailbox_id}.mobileconfig"


@routes.get("/devices")
async def devices_page(request: web.Request) -> web.StreamResponse:
    box = state_of(request).box
    drive = state_of(request).drive()
    mailboxes = await asyncio.to_thread(drive.mailboxes) if drive is not None else []
    fingerprint = await asyncio.to_thread(tls.box_fingerprint, box.data_dir, box.cfg.smtp.tls_cert)
    return render(
        request,
        "devices.html",
        mailboxes=mailboxes,
        ports=box.ports(),
        base=base_url(box),
        offline=drive is None,
        fingerprint=fingerprint,
    )


@routes.get("/devices/certificate.pem")
async def certificate(request: web.Request) -> web.StreamResponse:
    """The served certificate alone, re-encoded from its DER bytes (a configured file
    that also holds the key or a chain hands on only the first certificate). The type
    is the one registered for PEM certificates (RFC 8555 §9.1; a chain of one)."""
    box = state_of(request).box
    path = tls.certificate_path(box.data_dir, box.cfg.smtp.tls_cert)
    try:
        der = await asyncio.to_thread(tls.leaf_certificate, path)
    except (OSError, ValueError):
        raise web.HTTPNotFound() from None
    return web.Response(
        body=tls.certificate_pem(der).encode("ascii"),
        content_type="application/pem-certificate-chain",
        headers={"Content-Disposition": 'attachment; filename="letterbox-certificate.pem"'},
    )


async def _mailbox(request: web.Request, mailbox_id: str) -> MailboxInfo:
    drive = state_of(request).drive()
    if drive is None or not is_mailbox_id(mailbox_id):
        raise web.HTTPNotFound()
    try:
        mailbox = await asyncio.to_thread(drive.mailbox, mailbox_id)
    except MailboxNotFound:
        raise web.HTTPNotFound() from None
    if mailbox.end_to_end:  # read with `letterbox fetch`, not a POP3 client
        raise web.HTTPNotFound()
    return mailbox


@routes.get("/devices/{id}/qr.svg")
async def qr_code(request: web.Request) -> web.StreamResponse:
    mailbox = await _mailbox(request, request.match_info["id"])
    url = base_url(state_of(request).box) + profile_path(mailbox.id)
    body = await asyncio.to_thread(qr.svg, url)
    return web.Response(body=body, content_type="image/svg+xml")


@routes.get(f"/mail/profile/{{id:{MAILBOX_ID_PATTERN}}}.mobileconfig")
async def apple_profile(request: web.Request) -> web.StreamResponse:
    box = state_of(request).box
    mailbox = await _mailbox(request, request.match_info["id"])
    ports = box.ports()
    body = mobileconfig.profile(
        hostname=lan_name(box),
        mailbox_id=mailbox.id,
        address=mailbox.address,
        pop3s=ports.get("pop3s", 995),
        smtp=ports.get("smtp", 25),
    )
    return web.Response(
        body=body,
        content_type="application/x-apple-aspen-config",
        headers={"Content-Disposition": 'attachment; filename="letterbox.mobileconfig"'},
    )


async def thunderbird(request: web.Request) -> web.StreamResponse:
    box = state_of(request).box
    drive = state_of(request).drive()
    domains = set(box.cfg.smtp.local_domains)
    if drive is not None:
        domains |= await asyncio.to_thread(drive.local_domains)
    ports = box.ports()
    body = autoconfig.client_config(
        lan_name(box),
        domains,
        pop3=ports.get("pop3", 0),
        pop3s=ports.get("pop3s", 0),
        smtp=ports.get("smtp", 0),
    )
    return web.Response(body=body, content_type="application/xml", charset="utf-8")


routes.get("/.well-known/autoconfig/mail/config-v1.1.xml")(thunderbird)
routes.get("/mail/config-v1.1.xml")(thunderbird)

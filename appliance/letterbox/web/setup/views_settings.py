"""Mail settings: local domains, message size limit, retention, the mailbox that
gets postmaster@ and abuse@ mail, and the DNS records the household should publish.

A change is saved to DATA/box/settings.toml (letterbox.settingsfile) and applied
to the running box at once (`Box.apply_settings`): the next SMTP session sees the
new size limit and domains, the drive the new retention.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass

from aiohttp import web

from letterbox import config, settingsfile
from letterbox.config import Size
from letterbox.smtp.postmaster import chosen_mailbox
from letterbox.web.setup.context import state_of
from letterbox.web.setup.forms import Form, FormError, read_form
from letterbox.web.setup.pages import redirect, render

routes = web.RouteTableDef()

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
MAX_DOMAINS = 50
MIN_SIZE, MAX_SIZE = 64 << 10, 2 << 30
MAX_KEEP_DAYS = 36500


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str


def dns_records(domain: str, public_hostname: str) -> list[Record]:
    """What to publish for `domain` while the box only receives mail.

    MX (RFC 5321 §5.1) points at the household's public host name. DMARC (RFC 7489)
    with p=none asks for aggregate reports to postmaster@ of the domain, which the
    box always accepts (smtp/postmaster.py), and tells receivers to change nothing.
    No SPF record and no stricter DMARC policy: the household's outgoing mail
    leaves through its provider, not this box, so `v=spf1 mx -all` or p=quarantine
    would make receivers distrust or bin it. SPF, DKIM and a stricter policy belong
    to whoever sends the mail (and join here once the box sends itself).
    """
    target = f"{public_hostname}." if public_hostname else "(your public host name)."
    return [
        Record(f"{domain}.", "MX", f"10 {target}"),
        Record(f"_dmarc.{domain}.", "TXT", f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"),
    ]


def parse_domains(form: Form) -> list[str]:
    raw = form.text("local_domains", "Local domains", max_len=4000, required=False)
    domains: list[str] = []
    for part in re.split(r"[\s,]+", raw.lower()):
        part = part.rstrip(".")
        if not part:
            continue
        if not _HOSTNAME.match(part) or len(part) > 253:
            raise FormError(f"Local domains: {part[:80]!r} is not a domain name")
        if part not in domains:
            domains.append(part)
    if len(domains) > MAX_DOMAINS:
        raise FormError(f"Local domains: at most {MAX_DOMAINS}")
    return domains


def parse_size(form: Form) -> Size:
    raw = form.text("max_message_size", "Message size limit", max_len=20)
    try:
        size = Size.parse(raw)
    except ValueError:
        raise FormError("Message size limit: write a size such as 25M") from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise FormError("Message size limit: between 64K and 2G")
    return size


def parse_keep_days(form: Form) -> int:
    raw = form.text("keep_days", "Retention", max_len=10, required=False) or "0"
    if not raw.isdigit() or int(raw) > MAX_KEEP_DAYS:
        raise FormError("Retention: a number of days (0 keeps mail until the quota is full)")
    return int(raw)


def parse_public_hostname(form: Form) -> str:
    raw = form.text("public_hostname", "Public host name", max_len=253, required=False)
    name = raw.lower().rstrip(".")
    if name and not _HOSTNAME.match(name):
        raise FormError(f"Public host name: {raw[:80]!r} is not a host name")
    return name


def parse_postmaster(form: Form, mailboxes: list[str], current: str) -> str:
    """The mailbox for postmaster@ and abuse@: "" (the first one) or an existing one.
    The current choice is kept even when it cannot be checked (the drive is offline)."""
    raw = form.text("postmaster", "Postmaster mail", max_len=320, required=False)
    choice = raw.strip().lower()
    if choice and choice != current and choice not in mailboxes:
        raise FormError("Postmaster mail: choose one of the mailboxes")
    return choice


async def _addresses(request: web.Request) -> list[str] | None:
    """The mailbox addresses in the Mailboxes page's order; None while the drive is offline."""
    drive = state_of(request).drive()
    if drive is None:
        return None
    return [m.address for m in await asyncio.to_thread(drive.mailboxes)]


async def _page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    box = state_of(request).box
    cfg = box.cfg
    drive = state_of(request).drive()
    mailbox_domains = await asyncio.to_thread(drive.local_domains) if drive is not None else set()
    domains = sorted(set(cfg.smtp.local_domains) | mailbox_domains)
    addresses = await _addresses(request)
    chosen = cfg.smtp.postmaster
    # Offline: the choice stays selectable, so saving other settings keeps it.
    choices = addresses if addresses is not None else [chosen] if chosen else []
    return render(
        request,
        "settings.html",
        status=status,
        error=error,
        saved=request.query.get("saved") == "1",
        local_domains="\n".join(cfg.smtp.local_domains),
        max_message_size=cfg.smtp.max_message_size.human(),
        keep_days=cfg.drive.keep_days,
        public_hostname=cfg.box.public_hostname,
        mailboxes=choices,
        postmaster=chosen,
        postmaster_offline=addresses is None,
        postmaster_goes_to=chosen_mailbox(addresses or [], chosen),
        records={d: dns_records(d, cfg.box.public_hostname) for d in domains},
    )


@routes.get("/settings")
async def settings_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/settings")
async def save_settings(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    box = st.box
    form = await read_form(request)
    try:
        domains = parse_domains(form)
        size = parse_size(form)
        keep_days = parse_keep_days(form)
        public = parse_public_hostname(form)
        chosen = parse_postmaster(form, await _addresses(request) or [], box.cfg.smtp.postmaster)
    except FormError as exc:
        return await _page(request, status=400, error=str(exc))
    changes: settingsfile.Overrides = {
        "smtp": {"local_domains": domains, "max_message_size": int(size), "postmaster": chosen},
        "drive": {"keep_days": keep_days},
        "box": {"public_hostname": public},
    }
    cfg = box.cfg
    new_cfg = dataclasses.replace(
        cfg,
        smtp=dataclasses.replace(
            cfg.smtp, local_domains=domains, max_message_size=size, postmaster=chosen
        ),
        drive=dataclasses.replace(cfg.drive, keep_days=keep_days),
        box=dataclasses.replace(cfg.box, public_hostname=public),
    )
    async with st.lock:
        try:
            await asyncio.to_thread(settingsfile.update, box.data_dir, changes)
        except config.ConfigError as exc:
            return await _page(request, status=500, error=f"Could not save: {exc}")
        await box.apply_settings(new_cfg)
    return redirect("/settings?saved=1")

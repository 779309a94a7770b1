"""Mail settings: local domains, message size limit, retention, and the DNS records
the household should publish.

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
    """What to publish for `domain` (RFC 5321 §5.1 MX, RFC 7208 SPF, RFC 7489 DMARC).

    MX points at the household's public host name; SPF says only the MX hosts send
    for the domain; DMARC asks receivers to quarantine what fails and report to
    postmaster. DKIM joins once the box sends mail itself.
    """
    target = f"{public_hostname}." if public_hostname else "(your public host name)."
    return [
        Record(f"{domain}.", "MX", f"10 {target}"),
        Record(f"{domain}.", "TXT", "v=spf1 mx -all"),
        Record(
            f"_dmarc.{domain}.", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
        ),
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


async def _page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    box = state_of(request).box
    cfg = box.cfg
    drive = state_of(request).drive()
    mailbox_domains = await asyncio.to_thread(drive.local_domains) if drive is not None else set()
    domains = sorted(set(cfg.smtp.local_domains) | mailbox_domains)
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
    except FormError as exc:
        return await _page(request, status=400, error=str(exc))
    changes: settingsfile.Overrides = {
        "smtp": {"local_domains": domains, "max_message_size": int(size)},
        "drive": {"keep_days": keep_days},
        "box": {"public_hostname": public},
    }
    cfg = box.cfg
    new_cfg = dataclasses.replace(
        cfg,
        smtp=dataclasses.replace(cfg.smtp, local_domains=domains, max_message_size=size),
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

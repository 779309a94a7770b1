"""What the running box is doing, in one snapshot: for `letterbox status`, systemd's
STATUS line, and the setup page's status view.

The snapshot is plain JSON-ready data taken from the live `Appliance` (its bound
listeners, the drive as the drive manager sees it, the mDNS name it actually won),
because only the running process knows those; the CLI asks for it over the control
socket (`status` command) and formats it with `format_status`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from letterbox import __version__, claim, tls

if TYPE_CHECKING:
    from letterbox.app import Appliance
    from letterbox.drive import Drive

log = logging.getLogger("letterbox.status")

# Written by first-boot provisioning (provisioning/firstboot.py) on the image:
# {"ok": bool, "error": str | null, "applied": [...], "at": ISO 8601}.
PROVISIONING_REPORT = "box/provisioning.json"


def provisioning_report(data_dir: Path) -> dict[str, Any] | None:
    """What first boot did with the boot partition's letterbox.toml; None off the image."""
    try:
        doc = json.loads((data_dir / PROVISIONING_REPORT).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": f"the first-boot report is unreadable ({exc})"}
    if not isinstance(doc, dict):
        return {"ok": False, "error": "the first-boot report is damaged"}
    return doc


def listeners(app: Appliance) -> list[dict[str, Any]]:
    """Every listener that is actually bound, with the port it got."""
    out: list[dict[str, Any]] = []

    def add(name: str, host: str | None, port: int | None, tls: str) -> None:
        if port:
            out.append({"name": name, "address": host or "*", "port": int(port), "tls": tls})

    if app.smtp is not None:
        add("smtp", app.smtp.host, app.smtp.port, "STARTTLS")
    submission = getattr(app, "submission", None)
    if submission is not None:
        add("submission", submission.host, submission.port, "STARTTLS")
    if app.pop3 is not None:
        add("pop3", app.pop3.host, app.pop3.port, "STLS")
        add("pop3s", app.pop3.host, app.pop3.tls_port, "implicit TLS")
    if app.web is not None:
        add("web", app.web.host, app.web.port, "none")
    return out


def drive_state(app: Appliance) -> dict[str, Any]:
    return dict(app.drives.state().to_json())


def mail_figures(drive: Drive | None, *, light: bool = False) -> dict[str, Any]:
    """Mailboxes, messages and bytes from the per-mailbox counters (no table scans)."""
    if drive is None:
        return {"mailboxes": None, "messages": None, "bytes_used": None, "last_received": None}
    try:
        boxes = drive.mailboxes()
    except Exception as exc:  # a drive going away under us: report, do not fail
        log.debug("mailbox figures unavailable: %s", exc)
        return {"mailboxes": None, "messages": None, "bytes_used": None, "last_received": None}
    return {
        "mailboxes": len(boxes),
        "messages": sum(m.messages for m in boxes),
        "bytes_used": sum(m.used for m in boxes),
        "last_received": None if light else drive.last_received(),
    }


def snapshot(app: Appliance, *, light: bool = False) -> dict[str, Any]:
    """The whole picture (blocking: a few small queries; call it off the event loop).

    `light` leaves out the last-received time, which systemd's STATUS line (rebuilt
    every few seconds, in a thread) does not show."""
    mdns = getattr(app, "mdns", None)
    started = getattr(app, "started_at", None)
    try:
        code = claim.setup_code(app.data_dir)
    except OSError as exc:
        log.warning("setup code unavailable: %s", exc)
        code = None
    snap: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "started": started,
        "uptime": None if started is None else max(0, int(time.time() - started)),
        "dev": app.dev,
        "data_dir": str(app.data_dir),
        "listeners": listeners(app),
        "drive": drive_state(app),
        "mdns": {
            "enabled": mdns is not None,
            "name": mdns.name if mdns is not None else None,
            "services": mdns.service_names if mdns is not None else [],
        },
        "claimed": code is None,
        "setup_code": code,
        "provisioning": provisioning_report(app.data_dir),
        # What a person compares when a mail client asks to trust the certificate
        # (not read for the periodic status line, which does not show it).
        "tls": {
            "sha256": None if light else tls.box_fingerprint(app.data_dir, app.cfg.smtp.tls_cert)
        },
    }
    snap.update(mail_figures(app.drives.drive(), light=light))
    return snap


# -- for people -------------------------------------------------------------------------


def human_size(n: int | None) -> str:
    """Bytes for people, in IEC binary units (KiB, MiB, GiB, TiB: IEC 80000-13), the
    units quotas are set in (`1G` in letterbox.toml is 2**30 bytes); the one helper for
    `letterbox status` and the setup page alike."""
    if n is None:
        return "?"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _when(stamp: int | None) -> str:
    if stamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(stamp))


def drive_line(snap: dict[str, Any]) -> str:
    d = snap["drive"]
    if d["state"] == "online":
        where = d.get("device") or d.get("path") or ""
        free = f", {human_size(d['free'])} free" if d.get("total") else ""
        return f"online at {where}{free}"
    reason = f": {d['reason']}" if d.get("reason") else ""
    return f"{d['state']}{reason}"


def status_line(snap: dict[str, Any]) -> str:
    """One line for systemd's STATUS= (shown by `systemctl status`)."""
    d = snap["drive"]
    if d["state"] == "online":
        text = (
            f"Receiving mail; drive online; {snap['mailboxes']} mailboxes, "
            f"{snap['messages']} messages, {human_size(snap['bytes_used'])} used"
        )
        if d.get("total"):
            text += f", {human_size(d['free'])} free"
    elif d["state"] == "absent":
        text = "No drive yet: choose one on the setup page; mail is answered 451 until then"
    else:
        reason = f" ({d['reason']})" if d.get("reason") else ""
        text = f"Drive offline{reason}; mail is answered 451 (senders retry)"
    if not snap["claimed"]:
        text += "; unclaimed, setup code on the console"
    report = snap.get("provisioning")
    if report is not None and not report.get("ok"):
        text += "; letterbox.toml on the boot partition was refused (letterbox status)"
    return text


def format_status(snap: dict[str, Any]) -> str:
    """`letterbox status` for a person."""
    mode = " (development mode)" if snap.get("dev") else ""
    lines = [
        f"Letterbox {snap['version']} is running{mode}: pid {snap['pid']}, "
        f"up {_duration(snap['uptime'])}",
        f"  drive      {drive_line(snap)}",
    ]
    if snap["mailboxes"] is not None:
        lines.append(
            f"  mail       {snap['mailboxes']} mailboxes, {snap['messages']} messages, "
            f"{human_size(snap['bytes_used'])} used; last received {_when(snap['last_received'])}"
        )
    lines.append("  listening")
    if not snap["listeners"]:
        lines.append("    nothing (see the log)")
    for item in snap["listeners"]:
        tls = "" if item["tls"] == "none" else f" ({item['tls']})"
        lines.append(f"    {item['name']:<11}{item['address']} port {item['port']}{tls}")
    mdns = snap["mdns"]
    if mdns["enabled"] and mdns["name"]:
        lines.append(f"  LAN name   {mdns['name'].rstrip('.')} (mDNS)")
    else:
        lines.append("  LAN name   not announced (mDNS off)")
    fp = (snap.get("tls") or {}).get("sha256")
    lines.append(f"  TLS        certificate SHA-256 {fp or 'unavailable (see the log)'}")
    report = snap.get("provisioning")
    if report is not None and not report.get("ok"):
        lines.append(
            f"  first boot letterbox.toml refused, nothing of it applied: {report.get('error')}"
        )
        lines.append("             fix the file on the boot partition and restart the box")
    elif report is not None:
        applied = ", ".join(report.get("applied") or []) or "nothing to change"
        lines.append(f"  first boot applied {applied} ({report.get('at', '?')})")
    if snap["claimed"]:
        lines.append("  setup      claimed")
    else:
        lines.append(f"  setup      not claimed yet; setup code {snap['setup_code']}")
    return "\n".join(lines)

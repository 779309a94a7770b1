"""`letterbox run`: the appliance as one asyncio process (docs/design.md, "One process").

Start order: config (done by the CLI) → drive → SMTP listeners → POP3 listeners
(110/995, sharing SMTP's certificate) → web; later issues add mDNS and systemd
notification as further steps of `Appliance.start` and `Appliance.stop`. Stop
order is the reverse: listeners stop accepting and drain (a message in flight may
finish within `smtp.shutdown_grace`, a RETR within `pop3.shutdown_grace`, a POP3
QUIT's deletions always), then the drive closes, so every 250 sent was for a
committed message and nothing half written stays behind.

A drive that cannot be opened does not stop the box: SMTP then answers
451 4.3.0 and senders retry, which is what an unplugged USB drive will look like.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
import sys
import time
from pathlib import Path

from letterbox import config, tls
from letterbox.claim import setup_code
from letterbox.commands import register as register_commands
from letterbox.control import ControlServer
from letterbox.drive import Drive
from letterbox.drive.committer import SWITCH_INTERVAL
from letterbox.lan.mdns import Announcer, MdnsError, Service
from letterbox.notify import Notifier
from letterbox.pop3 import DriveAuthenticator, Pop3Listener, SessionOptions
from letterbox.ratelimit import FailureLimiter
from letterbox.smtp import Gateway, SmtpListener
from letterbox.status import listeners, snapshot, status_line
from letterbox.usb import commands as drive_commands
from letterbox.usb.manager import DriveManager
from letterbox.web import driveapi
from letterbox.web.server import WebServer, listen_address
from letterbox.web.setup import setup as mount_setup_page

log = logging.getLogger("letterbox")

SMTP_PORT = 25
DEV_SMTP_PORT = 2525  # docs/design.md, "Ports": the `make run` ports
POP3_PORT, POP3S_PORT = 110, 995
DEV_POP3_PORT, DEV_POP3S_PORT = 1110, 1995
# Argon2id runs at once in the whole process, POP3 logins and the setup page together:
# each holds crypto.argon2_memlimit (64 MiB) for its run. With two budgets of their
# own, 4 POP3 + 4 page logins peaked at 244 MiB RSS, over a Zero 2 W's cap; sharing
# two slots bounds the peak near 180 MiB (bench/RESULTS.md, "Footprint").
ARGON2_AT_ONCE = 2
SAMPLE_MAILBOX = "postmaster@letterbox.test"  # .test is reserved (RFC 2606): never real mail


class Appliance:
    """The running box: a drive (or none) and the listeners in front of it."""

    def __init__(self, cfg: config.Config, data_dir: Path, *, dev: bool) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.dev = dev
        # The drive (a directory, or the adopted USB drive) and whether it is online;
        # every listener asks `self.drives.drive()` per use, so offline means None.
        self.drives = DriveManager(cfg, data_dir)
        self.smtp: SmtpListener | None = None
        self.pop3: Pop3Listener | None = None
        self.tls_context: ssl.SSLContext | None = None  # SMTP's, shared with POP3
        self.web: WebServer | None = None
        self.sample: tuple[str, str, str | None] | None = None  # address, password, code
        # The CLI's way in (DATA/run/control.sock); other parts register commands on it.
        self.control = ControlServer(data_dir)
        self.notifier = Notifier()  # systemd; a no-op outside a notify unit
        self.mdns: Announcer | None = None
        self.started_at: float | None = None
        self.argon2_slots = asyncio.Semaphore(ARGON2_AT_ONCE)

    # -- starting -----------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.drives.start()
        if self.dev and self.drive is not None and not self.drive.mailboxes():
            self._create_sample_mailbox()
        await self._start_smtp()
        await self._start_pop3()
        await self._start_web()
        # Every listener is bound: now the CLI's socket, the LAN name, and READY=1.
        register_commands(self.control, self)
        drive_commands.register(self.control, self.drives)
        await self.control.start()
        await self._start_mdns()
        self.started_at = time.time()
        self.notifier.ready(
            await asyncio.to_thread(lambda: status_line(snapshot(self, light=True)))
        )
        self.notifier.start(lambda: status_line(snapshot(self, light=True)))

    async def _start_mdns(self) -> None:
        """Announce the bound listeners on the LAN (not with --dev unless asked: a
        laptop must not offer a mail server to its network). A failure here costs the
        LAN name, never the mail service."""
        m = self.cfg.mdns
        if not m.enabled or (self.dev and not m.announce_in_dev):
            return
        services = [
            Service(item["name"], item["port"])
            for item in listeners(self)
            if item["address"] not in ("127.0.0.1", "::1", "localhost")
        ]
        try:
            announcer = Announcer(m.name, services, interfaces=m.interfaces)
            await announcer.start()
        except (MdnsError, OSError) as exc:
            log.error("mDNS: not announcing the box (%s)", exc)
            return
        self.mdns = announcer

    @property
    def drive(self) -> Drive | None:
        """The drive if it is online, else None (SMTP 451, POP3 [SYS/TEMP])."""
        return self.drives.drive()

    def _create_sample_mailbox(self) -> None:
        assert self.drive is not None
        password = secrets.token_urlsafe(12)
        mailbox, code = self.drive.create_mailbox(
            SAMPLE_MAILBOX, quota=self.cfg.mailbox.default_quota, password=password
        )
        self.sample = (mailbox.address, password, code)
        log.info("created the sample mailbox for development")

    async def _start_smtp(self) -> None:
        s = self.cfg.smtp
        host = s.listen_address or ("127.0.0.1" if self.dev else "")
        port = s.port or (DEV_SMTP_PORT if self.dev else SMTP_PORT)
        tls_context = tls.box_context(self.data_dir, self.cfg.box.hostname, s.tls_cert, s.tls_key)
        self.tls_context = tls_context
        gateway = Gateway(
            s,
            self.drives.drive,
            debug=self.cfg.log.debug,
            on_unavailable=self.drives.report_io_error,
        )
        self.smtp = SmtpListener(
            gateway,
            s,
            hostname=self.cfg.box.hostname,
            host=host,
            port=port,
            tls_context=tls_context,
            debug=self.cfg.log.debug,
        )
        bound = await self.smtp.start()
        for addr, p in bound:
            log.info("SMTP listening on %s port %d (STARTTLS offered)", addr, p)

    async def _start_pop3(self) -> None:
        """POP3 with STLS and POP3S, on SMTP's certificate. Logging in before TLS is
        refused unless `pop3.allow_plaintext_login`; --dev allows it on loopback."""
        p = self.cfg.pop3
        host = p.listen_address or ("127.0.0.1" if self.dev else "")
        auth = DriveAuthenticator(
            self.drives.drive,
            failure_delay=float(p.failed_login_delay),
            limiter=FailureLimiter(p.max_failed_logins, float(p.failed_login_window)),
            argon2_slots=self.argon2_slots,
        )
        keep = self.cfg.drive.keep_days
        options = SessionOptions(
            authenticator=auth,
            hostname=self.cfg.box.hostname,
            tls_context=self.tls_context,
            expire=_expire(keep),
            timeout=float(p.timeout),
            max_bad_commands=p.max_bad_commands,
            debug=self.cfg.log.debug,
        )
        self.pop3 = Pop3Listener(
            options,
            host=host,
            port=p.port or (DEV_POP3_PORT if self.dev else POP3_PORT),
            tls_port=p.tls_port or (DEV_POP3S_PORT if self.dev else POP3S_PORT),
            plaintext="always"
            if p.allow_plaintext_login
            else ("loopback" if self.dev else "never"),
            max_connections_per_address=p.max_connections_per_address,
        )
        for addr, port, implicit in await self.pop3.start():
            log.info(
                "POP3 listening on %s port %d (%s)",
                addr,
                port,
                "implicit TLS" if implicit else "STLS offered",
            )

    async def _start_web(self) -> None:
        """The web port (the setup page and the drive API). Failing to get the port
        does not stop the box: receiving mail matters more, and the log says why."""
        host, port = listen_address(self.cfg.web, dev=self.dev)
        server = WebServer(host=host, port=port, debug=self.cfg.log.debug)
        driveapi.setup(server.app, self.drives.drive, debug=self.cfg.log.debug)
        mount_setup_page(server.app, self, argon2_slots=self.argon2_slots)
        try:
            bound = await server.start()
        except OSError as exc:
            log.error(
                "web: cannot listen on port %d (%s); running without the setup page and drive API",
                port,
                exc.strerror or exc,
            )
            return
        self.web = server
        for addr, p in bound:
            log.info("web (setup page, drive API) listening on %s port %d", addr, p)

    # -- stopping -----------------------------------------------------------------------

    async def stop(self) -> None:
        # systemd first (a slow stop is a drain, not a hang), then the LAN and the CLI.
        self.notifier.stopping()
        if self.mdns is not None:
            mdns, self.mdns = self.mdns, None
            await mdns.stop()
        await self.control.close()
        pop3_stopped = (
            asyncio.ensure_future(self.pop3.stop(float(self.cfg.pop3.shutdown_grace)))
            if self.pop3 is not None
            else None
        )
        if self.web is not None:
            await self.web.stop()
        if self.smtp is not None:
            await self.smtp.stop(float(self.cfg.smtp.shutdown_grace))
        if pop3_stopped is not None:
            await pop3_stopped
        await self.drives.stop()  # from now on: 451 for anyone left

    def ports(self) -> dict[str, int]:
        """The ports actually bound (0: not listening), for the setup page's Devices."""
        return {
            "smtp": self.smtp.port if self.smtp else 0,
            "pop3": (self.pop3.port or 0) if self.pop3 else 0,
            "pop3s": (self.pop3.tls_port or 0) if self.pop3 else 0,
            "web": self.web.port if self.web else 0,
        }

    async def apply_settings(self, new_cfg: config.Config) -> None:
        """Settings changed on the setup page take effect without a restart: the next
        SMTP session sees the size limit and local domains, the drive the retention."""
        self.cfg = new_cfg
        if self.smtp is not None:
            self.smtp.reconfigure(new_cfg.smtp)
        keep = new_cfg.drive.keep_days
        if self.pop3 is not None:
            self.pop3.options.expire = _expire(keep)
        self.drives.cfg = new_cfg  # a drive opened later gets the new retention too
        drive = self.drive
        if drive is not None:
            await asyncio.to_thread(drive.set_retention, keep)

    def hurry(self) -> None:
        """A second signal: end the grace period now."""
        if self.smtp is not None:
            self.smtp.hurry()
        if self.pop3 is not None:
            self.pop3.hurry()

    # -- for a person at a terminal --------------------------------------------------------

    def banner(self) -> str:
        smtp = self.smtp
        host = (smtp.host or "0.0.0.0") if smtp else "?"
        port = smtp.port if smtp else 0
        where = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        exe = sys.argv[0] if Path(sys.argv[0]).name == "letterbox" else "letterbox"
        data = f"--data {self.data_dir}"
        lines = [
            f"Letterbox is running{' (development mode)' if self.dev else ''}.",
            f"  SMTP  {host}:{port}, STARTTLS offered",
            (
                f"  POP3  {self.pop3.host or '0.0.0.0'}:{self.pop3.port} with STLS, "
                f"POP3S {self.pop3.tls_port}"
            )
            if self.pop3
            else "  POP3  not listening",
            (
                f"  web   http://{self.web.host or where}:{self.web.port}/ setup page "
                "(and the drive API for end-to-end mailboxes)"
            )
            if self.web
            else "  web   not listening (see the log)",
            f"  data  {self.data_dir}  (drive: {self.cfg.drive_path(self.data_dir)})",
            "  TLS   certificate SHA-256 "
            + (tls.box_fingerprint(self.data_dir, self.cfg.smtp.tls_cert) or "unavailable"),
        ]
        if self.drive is None:
            lines.append("  the drive is unavailable: mail is answered 451 (try later)")
        to = self.sample[0] if self.sample else "ADDRESS"
        if self.sample:
            address, password, code = self.sample
            lines += [
                "",
                "First run: made a sample mailbox.",
                f"  address        {address}",
                f"  password       {password}",
                f"  recovery code  {code}",
            ]
        if self.dev:
            lines += [
                "",
                "Send it a first mail:",
                f"  swaks --server {where}:{port} --to {to}",
                "or",
                f"  python3 -c \"import smtplib; smtplib.SMTP('{where}', {port}).sendmail("
                f"'me@example.org', ['{to}'], "
                "b'Subject: Hello\\r\\n\\r\\nMy first letter.\\r\\n')\"",
                "Read it with any POP3 client (user: the address), e.g.",
                f"  curl -s pop3://{where}:{self.pop3.port if self.pop3 else 0}/1 "
                f"-u '{to}:{self.sample[1] if self.sample else 'PASSWORD'}'",
                f"  {exe} {data} mailbox list    (messages and sizes)",
            ]
        if self.mdns is not None and self.mdns.name:
            lines.append(f"  LAN name {self.mdns.name.rstrip('.')} (mDNS)")
        code = setup_code(self.data_dir)
        if code is not None:
            page = f"http://{where}:{self.web.port}/" if self.web else "the setup page"
            lines += ["", f"Setup code: {code}  (claim the box at {page})"]
        lines += ["", "Stop with Ctrl-C."]
        return "\n".join(lines)


def _expire(keep_days: int) -> str:
    """RFC 2449 §6.7 EXPIRE: days mail stays after retrieval, or NEVER (no retention)."""
    return str(keep_days) if keep_days else "NEVER"


def setup_logging(cfg: config.Config) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosmtpd names peers and addresses at INFO; only in debug mode do we want that.
    logging.getLogger("mail.log").setLevel(logging.INFO if cfg.log.debug else logging.WARNING)


async def _main(app: Appliance) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.info("%s again: not waiting for sessions any longer", signame)
            app.hurry()
            return
        log.info("%s: stopping", signame)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await app.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await app.stop()
        return 1
    print(app.banner(), flush=True)
    await stop.wait()
    await app.stop()
    await app.notifier.close()
    log.info("stopped")
    return 0


def run_appliance(cfg: config.Config, data_dir: Path, *, dev: bool) -> int:
    """Run until SIGINT/SIGTERM; the exit status for the CLI."""
    setup_logging(cfg)
    # The event loop and the drive's committer thread hand the GIL back and forth on
    # every message; at the default 5 ms interval each handoff can stall a commit or
    # a reply that long. 0.2 ms took 20 sessions of 2 KB mail from ~870 to ~1,020
    # messages/s here (bench/RESULTS.md).
    sys.setswitchinterval(SWITCH_INTERVAL)
    return asyncio.run(_main(Appliance(cfg, data_dir, dev=dev)))

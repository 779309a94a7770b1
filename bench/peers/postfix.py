"""A private Postfix instance on a loopback port, delivering to Maildir or over LMTP.

It touches nothing system-wide: its own config directory (`postfix -c DIR`), queue, data and
mail directories, all under one state directory, and the master runs in the foreground
(`postfix start-fg`) as a child of the benchmark so that it and every worker can be measured
and ended. The settings are Postfix's defaults except where a benchmark must not be throttled
by protections meant for the Internet (rate limits, connection counts, size limits) and where a
private instance needs it (no chroot, no DNS, no local delivery).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peers.measure import (
    Tracker,
    count_files,
    read_banner,
    start_process,
    stop_process,
    wait_until,
)

POSTFIX = "/usr/sbin/postfix"
SMTP_SOURCE = "/usr/sbin/smtp-source"

# master.cf: the services a virtual-mailbox-only instance needs, none chrooted.
# Fields: service type private unpriv chroot wakeup maxproc command.
_MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
virtual   unix - n n - - virtual
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass
class PostfixConfig:
    """What differs between the Postfix peers: the port and where mail goes."""

    port: int
    domain: str
    mailbox: str  # local part of the one virtual mailbox
    lmtp_socket: Path | None = None  # deliver over LMTP to this socket instead of Maildir
    message_size_limit: int = 64 << 20
    process_limit: int = 100


class PostfixPeer:
    """One private Postfix instance under `root`; `start()`, `stored()`, `stop()`."""

    def __init__(self, root: Path, cfg: PostfixConfig, tracker: Tracker) -> None:
        self.root = root
        self.cfg = cfg
        self.tracker = tracker
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.data = root / "data"
        self.mail = root / "mail"
        self.log = root / "maillog"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- setup ---------------------------------------------------------------------------

    @property
    def maildir(self) -> Path:
        return self.mail / self.cfg.domain / self.cfg.mailbox

    def _main_cf(self) -> str:
        """main.cf: defaults, minus throttles and anything that would leave this directory."""
        cfg = self.cfg
        nobody = pwd.getpwnam("nobody")
        transport = ""
        if cfg.lmtp_socket:
            transport = f"virtual_transport = lmtp:unix:{cfg.lmtp_socket}\n"
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": f"peer.{cfg.domain}",
            "mydomain": cfg.domain,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "relayhost": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup": "no",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "message_size_limit": cfg.message_size_limit,
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
            "default_process_limit": cfg.process_limit,
            "virtual_mailbox_domains": cfg.domain,
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": f"texthash:{self.etc / 'vmailbox'}",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "biff": "no",
            "append_dot_mydomain": "no",
            "maillog_file": self.log,
            "maillog_file_prefixes": self.root,
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items()) + transport

    def configure(self) -> None:
        """Write the config directory and create the directories Postfix checks for."""
        nobody = pwd.getpwnam("nobody")
        for d in (self.etc, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        # Postfix workers run as `postfix` and deliver as `nobody`: they must traverse
        # the state directory (mkdtemp makes it 0700) and write the mail directory.
        self.root.chmod(0o755)
        os.chown(self.data, pwd.getpwnam("postfix").pw_uid, -1)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        (self.etc / "main.cf").write_text(self._main_cf())
        listen = f"127.0.0.1:{self.cfg.port}"
        (self.etc / "master.cf").write_text(_MASTER_CF.format(listen=listen))
        address = f"{self.cfg.mailbox}@{self.cfg.domain}"
        (self.etc / "vmailbox").write_text(f"{address} {self.cfg.domain}/{self.cfg.mailbox}/\n")
        self._postfix("check")

    def _postfix(self, *args: str) -> None:
        """Run a `postfix -c ETC` subcommand; its errors go to our maillog, so show it."""
        result = subprocess.run(
            [POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True, timeout=60
        )
        if result.returncode:
            raise RuntimeError(
                f"postfix {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.log_tail()}"
            )

    # -- running -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the master in the foreground and wait for the smtpd greeting."""
        self.proc = start_process(
            [POSTFIX, "-c", str(self.etc), "start-fg"], self.tracker, self.root / "master.out"
        )
        wait_until(
            self._greets,
            timeout=timeout,
            what=f"Postfix on port {self.cfg.port}",
            alive=lambda: self.proc is not None and self.proc.poll() is None,
        )

    def _greets(self) -> bool:
        try:
            return read_banner(self.cfg.port).startswith("220")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stored(self) -> int:
        """Messages delivered to the Maildir (new/ and cur/); LMTP mode counts nothing here."""
        return count_files([self.maildir / "new", self.maildir / "cur"])

    def stop(self) -> None:
        """`postfix stop`, then make sure the whole process group is gone."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                subprocess.run(
                    [POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=20
                )
        stop_process(self.proc)
        self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        """The end of the instance's maillog, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no maillog)"
        return "\n".join(text.splitlines()[-lines:])


def available() -> str | None:
    """None if Postfix and smtp-source are installed, else what is missing."""
    missing = [p for p in (POSTFIX, SMTP_SOURCE) if not shutil.which(p)]
    return f"missing {', '.join(missing)} (Debian package postfix)" if missing else None

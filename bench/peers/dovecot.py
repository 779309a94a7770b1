"""A private Dovecot instance: LMTP on a unix socket (for Postfix), optionally POP3 on loopback.

Like the Postfix peer it touches nothing system-wide: one config file (`dovecot -c FILE`),
base, state and mail directories under one state directory, the master in the foreground
(`-F`) as a child of the benchmark. Mail is Maildir under a static userdb home, encrypted
with the `mail_crypt` plugin using per-user EC keys (P-256, save version 2), which is the
closest Dovecot comes to Letterbox's "encrypted the moment it arrives": the delivery only
needs the user's public key. Stored files then start with `CRYPTED`.

Dovecot needs a passdb even for LMTP (a static one here) and uids at or above
`first_valid_uid`: mail is owned by `nobody`.
"""

from __future__ import annotations

import contextlib
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peers.measure import (
    Tracker,
    count_files,
    port_accepts,
    start_process,
    stop_process,
    wait_until,
)

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
CRYPTED_MAGIC = b"CRYPTED"


@dataclass
class DovecotConfig:
    """What differs between uses: the one user, its password, and which listeners."""

    user: str  # full address; the userdb home is home/DOMAIN/LOCALPART
    password: str = "bench"
    mail_crypt: bool = True
    pop3_port: int | None = None  # also serve POP3 (plaintext, loopback) on this port
    process_limit: int = 100


class DovecotPeer:
    """One private Dovecot instance under `root`; `start()`, `stored()`, `stop()`."""

    def __init__(self, root: Path, cfg: DovecotConfig, tracker: Tracker) -> None:
        self.root = root
        self.cfg = cfg
        self.tracker = tracker
        self.conf = root / "dovecot.conf"
        self.base = root / "run"
        self.state = root / "state"
        self.homes = root / "home"
        self.log = root / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def lmtp_socket(self) -> Path:
        """The LMTP socket Postfix delivers to (`lmtp:unix:PATH`)."""
        return self.base / "lmtp"

    @property
    def maildir(self) -> Path:
        local, domain = self.cfg.user.split("@", 1)
        return self.homes / domain / local / "Maildir"

    # -- setup ---------------------------------------------------------------------------

    def _config_text(self) -> str:
        """dovecot.conf: static passdb/userdb, Maildir, mail_crypt, LMTP (+ POP3)."""
        cfg = self.cfg
        nobody = pwd.getpwnam("nobody")
        protocols = "lmtp pop3" if cfg.pop3_port else "lmtp"
        pop3 = ""
        if cfg.pop3_port:
            pop3 = (
                "service pop3-login {\n"
                f"  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {cfg.pop3_port}\n"
                "  }\n  inet_listener pop3s {\n    port = 0\n  }\n}\n"
                "pop3_uidl_format = %08Xu%08Xv\n"
            )
        crypt = ""
        if cfg.mail_crypt:
            crypt = (
                "mail_plugins = $mail_plugins mail_crypt\n"
                "mail_attribute_dict = file:%h/Maildir/dovecot-attributes\n"
                "plugin {\n"
                "  mail_crypt_curve = prime256v1\n"
                "  mail_crypt_save_version = 2\n"
                "}\n"
            )
        return f"""\
instance_name = letterbox-bench-{self.root.name}
base_dir = {self.base}
state_dir = {self.state}
protocols = {protocols}
listen = 127.0.0.1
log_path = {self.log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_process_limit = {cfg.process_limit}
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = static
  args = password={cfg.password}
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={self.homes}/%d/%n
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
{crypt}{pop3}"""

    def configure(self) -> None:
        """Write dovecot.conf and the directories it names."""
        nobody = pwd.getpwnam("nobody")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # Postfix's lmtp client (user postfix) reaches the socket
        for d in (self.state, self.homes):
            d.mkdir(exist_ok=True)
        shutil.chown(self.homes, nobody.pw_uid, nobody.pw_gid)
        self.conf.write_text(self._config_text())

    # -- running -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0, *, make_keys: bool = True) -> None:
        """Start Dovecot in the foreground, wait for its sockets, then make the user's keys.

        `make_keys=False` when restarting an instance whose user already has keys.
        """
        self.proc = start_process(
            [DOVECOT, "-F", "-c", str(self.conf)], self.tracker, self.root / "master.out"
        )
        wait_until(self._ready, timeout=timeout, what="Dovecot's LMTP socket", alive=self.alive)
        if self.cfg.mail_crypt and make_keys:
            self.make_keys(self.cfg.user)

    def make_keys(self, user: str) -> None:
        """mail_crypt: generate `user`'s key pair (any user of the static userdb can get mail)."""
        self.doveadm("mailbox", "cryptokey", "generate", "-u", user, "-U")

    def maildir_of(self, user: str) -> Path:
        """The Maildir of any user of the static userdb (home/DOMAIN/LOCALPART/Maildir)."""
        local, domain = user.split("@", 1)
        return self.homes / domain / local / "Maildir"

    def _ready(self) -> bool:
        if not self.lmtp_socket.exists():
            return False
        return self.cfg.pop3_port is None or port_accepts(self.cfg.pop3_port)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def doveadm(self, *args: str) -> str:
        """Run a doveadm command against this instance; its output, or an error with the log."""
        result = subprocess.run(
            [DOVEADM, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60
        )
        if result.returncode:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.log_tail()}"
            )
        return result.stdout

    def stored(self) -> int:
        """Messages in the user's Maildir (new/ and cur/)."""
        return count_files([self.maildir / "new", self.maildir / "cur"])

    def stored_files(self) -> list[Path]:
        return [p for d in ("new", "cur") for p in sorted((self.maildir / d).glob("[!.]*"))]

    def unencrypted(self) -> list[Path]:
        """Stored files that do not start with mail_crypt's CRYPTED magic (should be none)."""
        bad = []
        for path in self.stored_files():
            with open(path, "rb") as fh:
                if fh.read(len(CRYPTED_MAGIC)) != CRYPTED_MAGIC:
                    bad.append(path)
        return bad

    def stop(self) -> None:
        """`doveadm stop` would also work; SIGTERM to the master's group is enough."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def available() -> str | None:
    """None if Dovecot with LMTP is installed, else what is missing."""
    if not shutil.which(DOVECOT) or not shutil.which(DOVEADM):
        return "missing dovecot (Debian packages dovecot-core dovecot-lmtpd)"
    lmtp = Path("/usr/lib/dovecot/lmtp")
    return None if lmtp.exists() else "missing Dovecot LMTP (Debian package dovecot-lmtpd)"

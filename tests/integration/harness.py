"""Running `letterbox run --dev` as a real process, for the integration tests.

Every listener's port comes from the config file (`write_config` picks free ones for
SMTP, POP3, POP3S and the web server), so parallel runs and a developer's own
`make run` never collide; the mail is read back from the drive after the process
has stopped, with the sample mailbox's password that the first run printed.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from letterbox.boxkeys import BoxKeys
from letterbox.crypto import Argon2Limits
from letterbox.drive import Drive

SAMPLE = "postmaster@letterbox.test"


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody is bound to, never the same one twice in this process.

    The kernel may hand the same ephemeral port to two binds in a row once the
    first socket is closed, so a config that asks for four ports could get one
    port twice; remembering what we gave out rules that out.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def write_config(path: Path, extra: str = "", *, smtp: str = "", pop3: str = "") -> Path:
    """A config with cheap Argon2id and a free port for every listener.

    `smtp` and `pop3` are more lines for those sections; `extra` more sections.
    """
    path.write_text(
        "[crypto]\nargon2_opslimit = 1\nargon2_memlimit = 8192\n"
        f"[smtp]\nport = {free_port()}\nshutdown_grace = 5\n{smtp}"
        f"[pop3]\nport = {free_port()}\ntls_port = {free_port()}\n{pop3}"
        f"[web]\nport = {free_port()}\n"
        f"{extra}"
    )
    return path


@dataclass
class RssGrowth:
    idle: int
    peak: int = 0

    @property
    def growth(self) -> int:
        return self.peak - self.idle


class Run:
    """One `letterbox run --dev` process."""

    def __init__(self, data: Path, config: Path) -> None:
        self.data = data
        self.config = config
        settings = tomllib.loads(config.read_text())
        self.port = int(settings["smtp"]["port"])
        self.pop3_port = int(settings.get("pop3", {}).get("port", 0))
        self.pop3s_port = int(settings.get("pop3", {}).get("tls_port", 0))
        self.web_port = int(settings.get("web", {}).get("port", 0))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "letterbox.cli",
                "--data",
                str(data),
                "--config",
                str(config),
                "run",
                "--dev",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = ""
        self._err_lines: list[str] = []
        threading.Thread(target=self._pump_err, daemon=True).start()
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while "Stop with Ctrl-C." not in self.out:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"letterbox run exited: {self.stderr()}")
            self.out += line
            assert time.monotonic() < deadline, self.out

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err_lines.append(line)

    def stderr(self) -> str:
        return "".join(self._err_lines)

    def password(self) -> str:
        m = re.search(r"password\s+(\S+)", self.out)
        assert m, self.out
        return m.group(1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError

    @contextlib.contextmanager
    def rss_growth(self) -> Iterator[RssGrowth]:
        """The box's RSS sampled every 5 ms while the block runs (after a settling
        pause), for the bounded-memory tests: growth = peak - idle, in KiB."""
        time.sleep(0.3)
        seen = RssGrowth(idle=self.rss_kib())
        seen.peak = seen.idle
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                seen.peak = max(seen.peak, self.rss_kib())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            yield seen
        finally:
            done.set()
            sampler.join()


def read_mailbox(data: Path, password: str, address: str = SAMPLE) -> list[bytes]:
    with Drive.open(
        data / "drive", BoxKeys.load_or_create(data), limits=Argon2Limits(1, 8192), create=False
    ) as drive:
        mailbox = drive.find_mailbox(address)
        assert mailbox is not None
        secret = drive.unlock(mailbox.id, password)
        return [drive.open_message(mailbox.id, d.id, secret).read() for d in drive.list(mailbox.id)]

"""Letterbox itself, run the way a developer runs it (`letterbox run --dev`), for benchmarks.

Same shape as the peers (`configure`, `start`, `stop`) so that a benchmark treats all servers
alike, except counting: Letterbox answers 250 only after the message is durably stored, so the
client finishing is the end of the load; `count` checks the mailbox afterwards.

Its state is a `--data` directory and a config file under the benchmark's state directory; the
mailbox is created with the CLI, exactly as a person would.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peers.measure import (
    Tracker,
    free_port,
    port_accepts,
    read_banner,
    start_process,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
LETTERBOX = REPO / ".venv" / "bin" / "letterbox"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DEV_SMTP_PORT = 2525


class LetterboxUnavailable(RuntimeError):
    """Letterbox cannot be benchmarked here yet (not installed, no SMTP server, port taken)."""


@dataclass
class LetterboxConfig:
    address: str
    password: str = "bench"
    quota: str = "50G"
    max_message_size: str = "64M"
    max_connections_per_address: int = 100
    # None: a free loopback port if this Letterbox has `smtp.port`, else the --dev 2525.
    # Its other listeners (POP3, web) get free loopback ports too where the config allows.
    port: int | None = None


class LetterboxServer:
    """One `letterbox run --dev` process with its own data directory under `root`."""

    def __init__(self, root: Path, cfg: LetterboxConfig, tracker: Tracker) -> None:
        self.root = root
        self.cfg = cfg
        self.tracker = tracker
        self.settings = _config_fields()
        self.port_setting = "port" in self.settings.get("smtp", ())
        self.port = cfg.port or (free_port() if self.port_setting else DEV_SMTP_PORT)
        self.data = root / "data"
        self.config_file = root / "letterbox.toml"
        self.log = root / "letterbox.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # The other listeners' ports as configured: {"pop3": {"port": N, "tls_port": M}, ...}
        self.ports: dict[str, dict[str, int]] = {}

    def _cli(self, *args: str) -> list[str]:
        return [str(LETTERBOX), "--data", str(self.data), "--config", str(self.config_file), *args]

    def configure(self) -> None:
        """Config file (cheap Argon2id for setup, limits fit for the loads) and the mailbox."""
        cfg = self.cfg
        self.root.mkdir(parents=True, exist_ok=True)
        # Argon2id only wraps the mailbox key at `mailbox add`; cheap limits make setup
        # fast and do not touch the SMTP path being measured.
        sections: dict[str, list[str]] = {
            "crypto": ["argon2_opslimit = 1", 'argon2_memlimit = "8M"'],
            "smtp": [
                f'max_message_size = "{cfg.max_message_size}"',
                f"max_connections_per_address = {cfg.max_connections_per_address}",
            ],
        }
        if self.port_setting:
            sections["smtp"].append(f"port = {self.port}")
        # Every listener on loopback, the others (POP3, web) on free ports too: a developer's
        # `make run` on the --dev ports must neither break nor be mistaken for the benchmark.
        for section, fields in self.settings.items():
            if section != "smtp" and "port" in fields:
                chosen = {name: free_port() for name in ("port", "tls_port") if name in fields}
                self.ports[section] = chosen
                ports = [f"{name} = {port}" for name, port in chosen.items()]
                sections.setdefault(section, []).extend(ports)
            if "listen_address" in fields and ("port" in fields):
                sections.setdefault(section, []).append('listen_address = "127.0.0.1"')
        lines = [f"[{name}]\n" + "\n".join(body) + "\n" for name, body in sections.items()]
        self.config_file.write_text("\n".join(lines))
        result = subprocess.run(
            self._cli("mailbox", "add", cfg.address, "--password-stdin", "--quota", cfg.quota),
            input=cfg.password + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            raise LetterboxUnavailable(
                f"`letterbox mailbox add` failed: {(result.stderr or result.stdout).strip()}"
            )

    def add_mailbox(self, address: str, password: str) -> None:
        """One more mailbox (after `configure`, before `start`), with the CLI like the first."""
        result = subprocess.run(
            self._cli("mailbox", "add", address, "--password-stdin", "--quota", self.cfg.quota),
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            raise LetterboxUnavailable(
                f"`letterbox mailbox add` failed: {(result.stderr or result.stdout).strip()}"
            )

    def start(self, timeout: float = 60.0) -> None:
        """Start `letterbox run --dev` and wait for its SMTP greeting."""
        if port_accepts(self.port):
            raise LetterboxUnavailable(
                f"something already listens on 127.0.0.1:{self.port} (a `make run`?); "
                "stop it first, the benchmark must not measure another server"
            )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = start_process(self._cli("run", "--dev"), self.tracker, self.log, env=env)
        try:
            wait_until(
                self._greets,
                timeout=timeout,
                alive=self.alive,
                what=f"Letterbox SMTP on port {self.port}",
            )
        except (RuntimeError, TimeoutError) as exc:
            raise LetterboxUnavailable(
                f"`letterbox run --dev` did not serve SMTP on port "
                f"{self.port}: {exc}\n{self.log_tail()}"
            ) from None

    def _greets(self) -> bool:
        try:
            return read_banner(self.port).startswith("220")
        except OSError:
            return False

    @property
    def pop3_port(self) -> int | None:
        """The plaintext POP3 port (after `configure`), or None if this Letterbox has none."""
        return self.ports.get("pop3", {}).get("port")

    @property
    def pid(self) -> int | None:
        """The Letterbox process itself (the tracker's wrapper execs into it)."""
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (Letterbox finishes sessions and closes the drive cleanly), then kill."""
        if self.proc is not None:
            stop_process(self.proc, grace=grace)
            self.proc = None

    def count(self) -> int:
        """Messages in the mailbox per `letterbox mailbox list` (run only after `stop`).

        Opening the drive runs recovery, which must not race a running server, hence
        after stop.
        """
        result = subprocess.run(
            self._cli("mailbox", "list"), capture_output=True, text=True, timeout=120
        )
        if result.returncode:
            raise RuntimeError(f"`letterbox mailbox list` failed: {result.stderr.strip()}")
        lines = result.stdout.splitlines()
        header = lines[0].split() if lines else []
        if "MESSAGES" not in header:
            raise RuntimeError(f"unexpected `mailbox list` output: {result.stdout!r}")
        column = header.index("MESSAGES")
        for line in lines[1:]:
            fields = line.split()
            if fields and fields[0].lower() == self.cfg.address.lower():
                return int(fields[column])
        raise RuntimeError(f"{self.cfg.address} missing from `mailbox list`")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _config_fields() -> dict[str, list[str]]:
    """The settings this Letterbox knows, per config section (to find its listener ports)."""
    code = (
        "import dataclasses, json, typing, letterbox.config as c\n"
        "hints = typing.get_type_hints(c.Config)\n"
        "print(json.dumps({f.name: [g.name for g in dataclasses.fields(hints[f.name])]"
        " for f in dataclasses.fields(c.Config)}))"
    )
    probe = subprocess.run(
        [str(VENV_PYTHON), "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    if probe.returncode:
        return {}
    return dict(json.loads(probe.stdout))


def available() -> str | None:
    """None if this checkout has a Letterbox with an SMTP server, else why not."""
    if not LETTERBOX.exists():
        return f"{LETTERBOX} is missing (run `make` targets, which create the venv)"
    probe = subprocess.run(
        [str(VENV_PYTHON), "-c", "import letterbox.app, letterbox.smtp"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"Letterbox has no SMTP gateway yet (import letterbox.app, letterbox.smtp: {last})"
    return None

"""A real `letterbox run --dev` with end-to-end mailboxes, and the person's side of it.

The mailboxes are made with the real CLI (`mailbox add --end-to-end --key-file`),
mail arrives over SMTP (smtplib), and the person's tools run as real processes
(`letterbox fetch`) or in-process clients against the box's web port.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from letterbox.e2e import api_client, verify

from tests.helpers import letterbox_cli
from tests.integration.harness import Run, write_config

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "a passphrase for the key file"
ADDRESSES = (
    "crash@example.org",
    "tamper@example.org",
    "forged@example.org",
    "flags@example.org",
    "lock@example.org",
    "bridge@example.org",
    "bridge2@example.org",
    "bridge3@example.org",
)


@dataclass
class E2EBox:
    run: Run
    keys: dict[str, Path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.run.web_port}"

    @property
    def drive_dir(self) -> Path:
        return self.run.data / "drive" / "letterbox"

    def send(self, address: str, bodies: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", self.run.port, timeout=30) as smtp:
            for body in bodies:
                smtp.sendmail("sender@example.net", [address], body)

    def remote(self, address: str) -> list[api_client.Listed]:
        """What the box lists for `address` now, read with its key."""
        key, addr, _ = verify.unlock_key_file(self.keys[address], PASSPHRASE)

        async def listing() -> list[api_client.Listed]:
            async with api_client.DriveClient(self.url, key, addr) as client:
                return await client.list()

        return asyncio.run(listing())

    def fetch(
        self,
        address: str,
        maildir: Path,
        *,
        crash: str | None = None,
        passphrase: str = PASSPHRASE,
        url: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`letterbox fetch` as a process; with `crash="STEP:N"`, it SIGKILLs itself there."""
        env = dict(os.environ)
        if crash:
            env["LBX_CRASH_AT"] = crash
            cmd = [
                sys.executable,
                "-m",
                "tests.e2e.fetch_child",
                str(self.keys[address]),
                url or self.url,
                str(maildir),
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "letterbox.cli",
                "fetch",
                "--key",
                str(self.keys[address]),
                "--server",
                url or self.url,
                "--to",
                str(maildir),
                "--passphrase-stdin",
            ]
        return subprocess.run(
            cmd,
            input=passphrase + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )


def make_e2e_mailbox(data: Path, config: Path, address: str, key_file: Path) -> None:
    done = letterbox_cli(
        data,
        *("mailbox", "add", address, "--end-to-end", "--key-file", str(key_file)),
        "--password-stdin",
        stdin=PASSPHRASE + "\n",
        config=config,
    )
    assert done.returncode == 0, done.stderr
    assert "end-to-end" in done.stdout


@pytest.fixture(scope="module")
def e2e_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EBox]:
    tmp = tmp_path_factory.mktemp("e2e")
    config = write_config(tmp / "letterbox.toml")
    data = tmp / "data"
    keys = {}
    for address in ADDRESSES:
        keys[address] = tmp / f"{address.split('@')[0]}.key"
        make_e2e_mailbox(data, config, address, keys[address])
    run = Run(data, config)
    try:
        assert "drive API" in run.out, run.out
        yield E2EBox(run, keys)
    finally:
        if run.proc.poll() is None:
            assert run.stop() == 0, run.stderr()
        assert "Traceback" not in run.stderr(), run.stderr()

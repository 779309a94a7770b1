"""`letterbox fetch`: move an end-to-end mailbox's mail from the box into a local Maildir.

Per message, in this order (the checkpoint names in brackets):

1. verify the signed metadata against the listing (verify.check_listing);
2. download the ciphertext to `tmp/<name>.cipher` [downloading, downloaded] and
   check its size and hash against the signed ones;
3. decrypt into `tmp/<name>`, check the plaintext size, flush and fsync [written];
4. rename it into `new/<name>` [renamed] and fsync `new/` [synced];
5. only then acknowledge (signed, by hash), which deletes it on the box [acknowledged].

`<name>` is a Maildir name holding the delivery id: `<received>.lbx-<id>.<host>`.

Why an interruption at any point loses nothing and duplicates nothing:

* Before the fsync of `new/` finishes, the box still has the message (nothing was
  acknowledged), so the next run fetches it again. What the interrupted run left is
  either in `tmp/` (removed at the next start: only `*.lbx-<id>.*` names, which are
  ours, under a lock so a concurrent fetch is never cleaned away) or, if the rename
  reached the disk, a complete file in `new/` (its data was fsync'd before the rename).
* After that fsync the file is durable under a name holding the delivery id. A run
  that finds that id in `new/` or `cur/` (a mail client may have moved it there and
  added flags) does not write it again; it only acknowledges it. So a crash between
  the fsync and the acknowledgement, or a lost answer to the acknowledgement, costs
  one repeated acknowledgement, never a second copy.
* An acknowledgement names the ciphertext hash the person verified, so the box
  deletes exactly what was stored; a repeated one changes nothing.
* A message that fails verification is written nowhere and never acknowledged: it
  stays on the box, and fetch says so loudly and exits 1.

(One gap remains by design: if the person deletes a fetched message from the Maildir
before the interrupted run's acknowledgement is repeated, the next run fetches it
again. Deleting mail is never risked to avoid that.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nacl.signing import VerifyKey

from letterbox import crypto
from letterbox.e2e import verify
from letterbox.e2e.api_client import AckRefused, ApiError, DriveClient, ServerUnavailable
from letterbox.fsutil import fsync_dir

EX_TEMPFAIL = 75  # sysexits.h: the box is unreachable or its drive offline; try later

_OURS = re.compile(r"\.lbx-([0-9a-f]{32})\.")
LOCK_NAME = ".letterbox-fetch.lock"

Checkpoint = Callable[[str, str], None]  # (step, delivery id); tests crash the process here


class FetchError(Exception):
    """Fetch cannot go on (a second fetch on the Maildir, an unusable Maildir)."""


@dataclass
class Report:
    fetched: list[str] = field(default_factory=list)
    acknowledged_only: list[str] = field(default_factory=list)  # already in the Maildir
    gone: list[str] = field(default_factory=list)  # listed, then removed by the box (evicted)
    refused: list[verify.Refused] = field(default_factory=list)


class Maildir:
    """A Maildir (tmp/, new/, cur/), created if missing, with fetch's own bookkeeping."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp, self.new, self.cur = root / "tmp", root / "new", root / "cur"
        self.host = (
            (socket.gethostname() or "localhost").replace("/", r"\057").replace(":", r"\072")
        )

    def create(self) -> None:
        made = False
        for d in (self.root, self.tmp, self.new, self.cur):
            try:
                d.mkdir(mode=0o700, parents=d is self.root)
                made = True
            except FileExistsError:
                if not d.is_dir():
                    raise FetchError(f"{d} exists and is not a directory") from None
        if made:
            for d in (self.root, self.tmp, self.new, self.cur):
                fsync_dir(d)
            fsync_dir(self.root.parent)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One fetch per Maildir at a time (flock; released by the kernel on any exit)."""
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise FetchError(
                        f"another `letterbox fetch` is writing to {self.root}"
                    ) from None
                raise
            yield
        finally:
            os.close(fd)

    def clean_tmp(self) -> int:
        """Remove what an interrupted fetch left in tmp/ (only our own names)."""
        removed = 0
        for entry in os.scandir(self.tmp):
            if _OURS.search(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def delivered(self) -> set[str]:
        """Delivery ids already in new/ or cur/ (flags after ':2,' do not matter)."""
        found: set[str] = set()
        for d in (self.new, self.cur):
            for entry in os.scandir(d):
                m = _OURS.search(entry.name)
                if m:
                    found.add(m.group(1))
        return found

    def name(self, meta: crypto.DeliveryMeta) -> str:
        return f"{meta.received}.lbx-{meta.delivery_id}.{self.host}"


def _write_plain(meta: crypto.DeliveryMeta, cipher: Path, plain: Path) -> None:
    """Decrypt into `plain` (created new, 0600), verified, and fsync it. In a thread."""
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(cipher, "rb") as src, os.fdopen(fd, "wb", closefd=False) as out:
            for chunk in verify.decrypt(meta, src):
                out.write(chunk)
            out.flush()
        os.fsync(fd)
    finally:
        os.close(fd)


async def fetch_mailbox(
    client: DriveClient,
    key: crypto.PersonalKey,
    box_key: VerifyKey,
    maildir: Maildir,
    *,
    checkpoint: Checkpoint | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    """Fetch every listed message once into `maildir`; see the module docstring."""
    cp: Checkpoint = checkpoint or (lambda step, delivery_id: None)
    report = Report()
    maildir.create()
    with maildir.locked():
        if removed := maildir.clean_tmp():
            say(f"removed {removed} leftover temporary file(s) of an interrupted fetch")
        present = maildir.delivered()
        listing = await client.list()
        cp("listed", "")
        for entry in listing:
            try:
                meta = verify.check_listing(entry, key, box_key)
                if entry.id in present:
                    report.acknowledged_only.append(entry.id)
                elif await _fetch_one(client, meta, maildir, cp):
                    report.fetched.append(entry.id)
                    present.add(entry.id)
                else:
                    report.gone.append(entry.id)
                    say(
                        f"message {entry.id} was removed from the box before it could be "
                        "fetched (evicted: the box's notice in this mailbox says why)"
                    )
                    continue
            except verify.Refused as refused:
                report.refused.append(refused)
                say(f"REFUSED {refused}; it stays on the box and is not acknowledged")
                continue
            try:
                await client.acknowledge([(meta.delivery_id, meta.cipher_hash)])
            except AckRefused as exc:
                # Stored here, but the box keeps it: the next run acknowledges again.
                report.refused.append(verify.Refused(entry.id, f"acknowledgement refused: {exc}"))
                say(f"REFUSED acknowledgement of message {entry.id}: {exc}")
                continue
            cp("acknowledged", entry.id)
    return report


async def _fetch_one(
    client: DriveClient, meta: crypto.DeliveryMeta, maildir: Maildir, cp: Checkpoint
) -> bool:
    """Steps 2 to 4 for one message; False if the box no longer has it (404)."""
    name = maildir.name(meta)
    cipher = maildir.tmp / f"{name}.cipher"
    plain = maildir.tmp / name
    try:
        first = True

        def progress(_: int) -> None:
            nonlocal first
            if first:
                first = False
                cp("downloading", meta.delivery_id)

        with open(cipher, "xb") as spool:
            try:
                size, digest = await client.download(meta.delivery_id, spool, progress=progress)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                cipher.unlink()
                return False
        cp("downloaded", meta.delivery_id)
        verify.check_ciphertext(meta, size, digest)
        await asyncio.to_thread(_write_plain, meta, cipher, plain)
        cp("written", meta.delivery_id)
    except BaseException:
        for leftover in (cipher, plain):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    cipher.unlink()
    os.rename(plain, maildir.new / name)
    cp("renamed", meta.delivery_id)
    fsync_dir(maildir.new)
    cp("synced", meta.delivery_id)
    return True


async def _run(
    key_file: Path,
    server: str,
    target: Path,
    passphrase: str,
    checkpoint: Checkpoint | None,
    err: TextIO,
) -> int:
    def say(line: str) -> None:
        print(f"letterbox fetch: {line}", file=err, flush=True)

    try:
        key, address, box_key = await asyncio.to_thread(
            verify.unlock_key_file, key_file, passphrase
        )
    except verify.KeyFileError as exc:
        say(str(exc))
        return 1
    maildir = Maildir(target)
    try:
        async with DriveClient(server, key, address) as client:
            report = await fetch_mailbox(
                client, key, box_key, maildir, checkpoint=checkpoint, say=say
            )
    except ServerUnavailable as exc:
        say(f"{exc}; nothing was lost, run fetch again later")
        return EX_TEMPFAIL
    except (ApiError, FetchError, OSError) as exc:
        say(f"{exc}; what was fetched so far is safe, run fetch again")
        return 1
    print(
        f"{len(report.fetched)} new message(s) in {target}"
        + (
            f"; {len(report.acknowledged_only)} already there, acknowledged"
            if report.acknowledged_only
            else ""
        )
    )
    if report.refused:
        say(
            f"{len(report.refused)} message(s) REFUSED (forged, swapped or damaged); they stay "
            "on the box, unacknowledged. See above."
        )
        return 1
    return 0


def run(
    key_file: Path,
    server: str,
    target: Path,
    *,
    passphrase_stdin: bool = False,
    checkpoint: Checkpoint | None = None,
) -> int:
    """The `letterbox fetch` command; its exit status (0, 1, or 75: try later)."""
    passphrase = verify.read_passphrase(passphrase_stdin)
    return asyncio.run(_run(key_file, server, target, passphrase, checkpoint, sys.stderr))

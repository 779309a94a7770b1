"""One message on its way in (two-phase delivery) and one on its way out (a Message).

A Delivery streams the body through the encryptor into a temporary blob while it
arrives, then hands it to the drive's committer; a Message verifies and decrypts
a stored one chunk by chunk. Neither ever holds a whole message in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from letterbox import crypto
from letterbox.drive.errors import (
    DriveError,
    DriveUnavailable,
    MailboxNotFound,
    MessageDamaged,
    MessageTooLarge,
    StorageFull,
)
from letterbox.drive.headers import HeaderSniffer
from letterbox.drive.layout import Layout
from letterbox.drive.records import MailboxInfo

if TYPE_CHECKING:
    from letterbox.drive.store import Drive

WRITE_BUFFER = 256 * 1024
# Blobs up to this size stay in memory until the committer writes them (see SpillBuffer).
SPILL_AT = 128 * 1024


class SpillBuffer:
    """A blob on its way in: in memory while small, in a temporary file once large.

    Most mail is small. Keeping it in memory takes file creation off the event loop
    (the committer writes it straight to its final name, with no rename), while a
    large message still never holds more than SPILL_AT bytes in memory.
    """

    def __init__(self, layout: Layout, blob_id: str) -> None:
        self._layout = layout
        self._blob_id = blob_id
        self.memory: bytearray | None = bytearray()
        self.file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self.memory is None:
            assert self.file is not None
            self.file.write(data)
            return
        self.memory += data
        if len(self.memory) > SPILL_AT:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.file = open(fd, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115
            self.file.write(self.memory)
            self.memory = None

    @property
    def tmp(self) -> Path:
        return self._layout.blob_tmp(self._blob_id)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def discard(self) -> None:
        self.memory = None
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


@dataclass
class CommitRequest:
    """A finished blob and its sealed index rows, ready for the committer."""

    blob_id: str
    buffer: SpillBuffer
    summary: crypto.BlobSummary
    received: int
    rows: list[tuple[MailboxInfo, str, bytes]]  # (mailbox, delivery id, sealed meta)


class Message:
    """An opened delivery: verified metadata, and its plaintext as a stream of chunks."""

    def __init__(self, meta: crypto.DeliveryMeta, path: Path) -> None:
        self.meta = meta
        self._path = path

    def chunks(self) -> Generator[bytes, None, None]:
        try:
            fh = open(self._path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise MessageDamaged(f"blob {self.meta.blob_id} is missing") from None
        except OSError as exc:
            raise DriveUnavailable(f"cannot read blob {self.meta.blob_id}: {exc}") from None
        with fh:
            try:
                # No whole-file hash here: with the key from the signed record, chunk
                # authentication already rejects a swapped, cut or altered blob.
                yield from crypto.read_blob(
                    fh,
                    self.meta.blob_key,
                    self.meta.blob_id,
                    expected_header=self.meta.blob_header,
                )
            except crypto.BlobError as exc:
                raise MessageDamaged(str(exc)) from None
            except OSError as exc:
                raise DriveUnavailable(f"cannot read blob {self.meta.blob_id}: {exc}") from None

    def read(self) -> bytes:
        """The whole message; for tests and small messages only."""
        return b"".join(self.chunks())


class Delivery:
    """One incoming message on its way to one or more mailboxes (two-phase)."""

    def __init__(self, drive: Drive, mail_from: str, received: int) -> None:
        self._drive = drive
        self.mail_from = mail_from
        self.received = received
        self.recipients: list[MailboxInfo] = []
        self._rcpt_addresses: list[str] = []
        self.blob_id = crypto.new_id()
        self._key = crypto.new_blob_key()
        self._sniffer = HeaderSniffer()
        self._state = "open"
        self._buffer = SpillBuffer(drive.layout, self.blob_id)
        self._writer = crypto.BlobWriter(self._buffer, self._key, self.blob_id)  # type: ignore[arg-type]

    @property
    def size(self) -> int:
        """Plaintext bytes written so far."""
        return self._writer._plain

    def add_recipient(self, address: str, size_hint: int | None = None) -> MailboxInfo:
        """Accept one recipient, or say why not: unknown, or can never fit its quota."""
        mailbox = self._drive.recipient(address)
        if mailbox is None:
            raise MailboxNotFound(f"no mailbox for {address}")
        if size_hint is not None and crypto.blob_stored_size(size_hint) > mailbox.quota:
            raise MessageTooLarge(
                f"a message of {size_hint} bytes exceeds the mailbox quota of {mailbox.quota}"
            )
        if all(m.id != mailbox.id for m in self.recipients):
            self.recipients.append(mailbox)
            self._rcpt_addresses.append(mailbox.address)
        return mailbox

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise ValueError(f"delivery is {self._state}")
        try:
            self._sniffer.feed(data)
            self._writer.write(data)
        except OSError as exc:
            self.abort()
            raise io_error(exc) from None

    def _prepare(self) -> CommitRequest:
        if self._state != "open":
            raise ValueError(f"delivery is {self._state}")
        if not self.recipients:
            raise ValueError("a delivery needs at least one recipient")
        try:
            summary = self._writer.finish()
            self._buffer.flush()
        except OSError as exc:
            self.abort()
            raise io_error(exc) from None
        headers = self._sniffer.headers()
        rows = []
        for mailbox, address in zip(self.recipients, self._rcpt_addresses, strict=True):
            delivery_id = crypto.new_id()
            meta = crypto.DeliveryMeta(
                delivery_id=delivery_id,
                blob_id=self.blob_id,
                blob_key=self._key,
                blob_header=summary.header,
                plain_size=summary.plain_size,
                stored_size=summary.stored_size,
                cipher_hash=summary.cipher_hash,
                received=self.received,
                mail_from=self.mail_from,
                rcpt_to=address,
                headers=headers,
            )
            sealed = crypto.seal_meta(meta, self._drive.keys.signing, mailbox.public_key)
            rows.append((mailbox, delivery_id, sealed))
        self._state = "committing"
        return CommitRequest(self.blob_id, self._buffer, summary, self.received, rows)

    def commit_future(self) -> Future[list[str]]:
        """Hand the delivery to the committer; the future resolves once it is durable."""
        try:
            request = self._prepare()
        except BaseException:
            self.abort()
            raise
        return self._drive.submit_commit(request)

    def commit(self) -> list[str]:
        """Durably store the message; returns one delivery id per recipient."""
        return self.commit_future().result()

    async def commit_async(self) -> list[str]:
        """Await durability. Shielded: a cancelled session does not un-store a message
        the committer already has (the sender may retry; nothing is lost)."""
        return await asyncio.shield(asyncio.wrap_future(self.commit_future()))

    def abort(self) -> None:
        """Drop the message; nothing of it stays on the drive. Safe to call twice.

        Once handed to the committer the delivery is no longer ours to drop: the
        committer either stores it or removes it.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffer.discard()


def io_error(exc: OSError) -> DriveError:
    """A full disk is StorageFull (try later, 452); any other I/O error is the drive failing."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the drive is full")
    return DriveUnavailable(f"drive I/O error: {exc.strerror or exc}")

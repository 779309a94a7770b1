"""The drive: mailboxes, two-phase delivery, reading, quota and eviction, crash recovery.

Protocols see only this interface (docs/design.md, "The drive"):

* delivery, after maddy: ``begin()`` → ``add_recipient()`` → ``write()`` … →
  ``commit()`` or ``abort()``. The body streams through the encryptor into a
  temporary blob; ``commit()`` returns only when blob and index are on stable
  storage, sharing fsyncs with concurrent commits (committer.py).
* reading: ``list()`` → ``open_message()`` (streaming decryption with the key a
  login unwrapped) → ``delete()`` of a batch, atomically.

Durability order for a commit batch (pipelined, see committer.py): blobs go under
their final names in ``blobs/xx/`` (large ones via ``blobs/tmp``), a sync makes
them durable (one syncfs when the drive is a filesystem of its own, else fsync of
each blob, its directory and the index's WAL), then the index transaction
commits, and the next sync makes that durable before anyone is told. A crash at
any point leaves at worst a temporary or an orphan blob, which ``_recover()``
removes at the next open, so index and blobs always agree.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from nacl.public import PrivateKey

from letterbox import crypto
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings
from letterbox.drive import index, layout
from letterbox.drive.committer import GroupCommitter
from letterbox.drive.delivery import CommitRequest, Delivery, Message, io_error
from letterbox.drive.errors import (
    DriveError,
    DriveFormatError,
    DriveUnavailable,
    MailboxExists,
    MailboxNotFound,
    MessageDamaged,
)
from letterbox.drive.records import (
    DeliveryInfo,
    EvictionRecord,
    MailboxInfo,
    RecoveryReport,
    SealedDelivery,
    normalize_address,
)
from letterbox.drive.space import Batch, Space
from letterbox.fsutil import fsync_dir, syncfs, write_atomic

log = logging.getLogger(__name__)


class _DiskFull(Exception):
    """An index write failed for want of space (SQLITE_FULL): `delete` retries once."""


class Drive:
    """An open drive. Thread-safe: protocols call it from the event loop and executors."""

    def __init__(
        self,
        lay: layout.Layout,
        conn: sqlite3.Connection,
        ident: layout.Identity,
        keys: BoxKeys,
        settings: DriveSettings,
        limits: crypto.Argon2Limits,
        hostname: str,
    ) -> None:
        self.layout = lay
        self.identity = ident
        self.keys = keys
        self.settings = settings
        self.limits = limits
        self.hostname = hostname
        # Writes go through one connection under a lock (the committer holds it for a
        # batch's transaction); reads use their own connection, so a lookup from the
        # event loop never waits behind a commit's fsync (WAL: readers see the last
        # committed state).
        self._conn = conn
        self._lock = threading.RLock()
        self._reader = index.connect_reader(lay.index)
        self._read_lock = threading.Lock()
        # Copy on write, read without a lock: address -> mailbox id, and mailbox id ->
        # its identity and quota (usage figures in these snapshots are not kept current).
        self._addresses: dict[str, str] = {}
        self._known: dict[str, MailboxInfo] = {}
        self._last_expire = 0.0
        self._sync_fd = os.open(lay.base, os.O_RDONLY | os.O_DIRECTORY)
        sync = settings.sync
        self._syncfs = sync == "syncfs" or (sync == "auto" and os.path.ismount(lay.root))
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="letterbox-sync")
        self.recovery = RecoveryReport()
        self._unsynced_files: list[int] = []  # fsync mode: staged blobs not yet synced
        self._unsynced_dirs: set[str] = set()
        self._unlink_after_sync: list[str] = []
        self._wal = f"{lay.index}-wal"
        self._committer: GroupCommitter[CommitRequest, list[str], DriveError] = GroupCommitter(
            self._stage, self._sync, self._index, batching=settings.group_commit
        )
        self._space = Space(conn, lay, keys, settings, hostname)
        self._closed = False
        self._lock_fd: int | None = None  # the drive's LOCK, held while open (open())

    # -- opening and closing -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        keys: BoxKeys,
        *,
        settings: DriveSettings | None = None,
        limits: crypto.Argon2Limits | None = None,
        hostname: str = "letterbox.local",
        create: bool = True,
    ) -> Drive:
        """Open (or, if `create` and empty, initialise) the drive at `root`, then recover.

        The drive's LOCK is taken first and held until close: if another Drive has
        it open (another process, or this one), DriveInUse, and nothing on the
        drive is touched (its OPEN marker, temporaries and staged blobs are the
        holder's, not a crash's).
        """
        lay = layout.Layout(Path(root))
        lock_fd: int | None = None
        try:
            if lay.identity.exists():
                lock_fd = layout.take_lock(lay)
                ident = layout.read_identity(lay)
                conn = index.connect(lay.index, create=False)
            elif create:
                ident = layout.create_layout(lay)
                lock_fd = layout.take_lock(lay)
                conn = index.connect(lay.index, create=True)
            else:
                ident = layout.read_identity(lay)  # raises "not a Letterbox drive"
                raise AssertionError("unreachable")
        except BaseException as exc:
            if lock_fd is not None:
                layout.release_lock(lock_fd)
            if isinstance(exc, OSError):
                raise DriveUnavailable(f"cannot open the drive at {root}: {exc}") from None
            raise
        try:
            drive = cls(
                lay,
                conn,
                ident,
                keys,
                settings or DriveSettings(),
                limits or crypto.Argon2Limits(),
                hostname,
            )
        except BaseException:
            conn.close()
            layout.release_lock(lock_fd)
            raise
        drive._lock_fd = lock_fd
        try:
            drive._load_addresses()
            drive.recovery = drive._recover()
            lay.open_marker.write_bytes(b"")
            fsync_dir(lay.base)
            drive.expire()
            drive._space.keep_spare()
        except BaseException:
            drive._shutdown(clean=False)
            raise
        if drive.recovery:
            log.warning("drive recovery after an unclean stop: %s", drive.recovery)
        if warning := drive.reserve_warning():
            log.warning("%s", warning)
        return drive

    def close(self) -> None:
        """Finish pending commits, checkpoint the index and mark the drive clean."""
        self._shutdown(clean=True)

    def abandon(self) -> None:
        """Let go of a drive that failed or vanished: pending commits finish or fail
        as they may, but the drive is not marked clean, so the next open runs the
        crash recovery (temporaries, orphan blobs) instead of trusting it."""
        self._shutdown(clean=False)

    def _shutdown(self, *, clean: bool) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close_files(clean=clean)
        finally:
            # Last: until here another opener would take our OPEN marker for a crash.
            lock_fd, self._lock_fd = self._lock_fd, None
            if lock_fd is not None:
                layout.release_lock(lock_fd)

    def _close_files(self, *, clean: bool) -> None:
        self._committer.close()
        os.close(self._sync_fd)
        self._pool.shutdown()
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                if clean:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        with self._read_lock:
            self._reader.close()
        if clean:
            with contextlib.suppress(FileNotFoundError):
                self.layout.open_marker.unlink()
                fsync_dir(self.layout.base)

    def __enter__(self) -> Drive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_addresses(self) -> None:
        rows = self._conn.execute(
            "SELECT id, address_sealed, public_key, quota, end_to_end, auth_key FROM mailboxes"
        ).fetchall()
        known = {}
        for mailbox_id, sealed, public_key, quota, e2e, auth_key in rows:
            try:
                address = crypto.unseal(self.keys.sealing, sealed).decode()
            except crypto.MetaError:
                raise DriveFormatError(
                    "this drive's mailboxes were sealed by another box's key: "
                    "restore that box's keys (box/keys.json) to use the drive here"
                ) from None
            known[mailbox_id] = MailboxInfo(
                mailbox_id, address, public_key, quota, 0, 0, bool(e2e), auth_key
            )
        self._known = known
        self._addresses = {info.address: i for i, info in known.items()}

    def _recover(self) -> RecoveryReport:
        """Remove what a crash can leave behind, so index and blobs agree again.

        Only from open(), under the drive's LOCK: what it deletes would be a live
        box's deliveries on their way if anyone else had the drive open."""
        report = RecoveryReport(crashed=self.layout.open_marker.exists())
        for entry in os.scandir(self.layout.tmp):
            if layout.TMP_NAME.match(entry.name):
                os.unlink(entry.path)
                report.temporaries += 1
        # Leftovers of write_atomic (keyrings, DRIVE): `.<name>.tmp`.
        for folder in (self.layout.keys, self.layout.base):
            for entry in os.scandir(folder):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
                    report.temporaries += 1
        if not report.crashed:
            return report
        # After a crash, reconcile one blob directory at a time: bounded memory even
        # with a million blobs, and only paid after an unclean stop.
        for i in range(256):
            prefix = f"{i:02x}"
            bdir = self.layout.blobs / prefix
            files = {e.name for e in os.scandir(bdir) if layout.BLOB_NAME.match(e.name)}
            with self._lock:
                ids = {
                    r[0]
                    for r in self._conn.execute(
                        "SELECT id FROM blobs WHERE id >= ? AND id < ?",
                        (prefix, prefix + "g"),
                    )
                }
            for orphan in files - ids:
                os.unlink(bdir / orphan)
                report.orphan_blobs += 1
            missing = ids - files
            if missing:
                report.rows_without_blob += self._drop_missing_blobs(missing)
        known = {r[0] for r in self._conn.execute("SELECT id FROM mailboxes")}
        for entry in os.scandir(self.layout.keys):
            stem = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and layout.BLOB_NAME.match(stem) and stem not in known:
                os.unlink(entry.path)
                report.orphan_keyrings += 1
        return report

    def _drop_missing_blobs(self, blob_ids: Iterable[str]) -> int:
        """Index rows whose blob is gone cannot be read: report and remove them."""
        dropped = 0
        with self._lock, self._transaction():
            for blob_id in blob_ids:
                rows = self._conn.execute(
                    "SELECT mailbox_id, stored_size FROM deliveries WHERE blob_id = ?", (blob_id,)
                ).fetchall()
                for mailbox_id, stored in rows:
                    self._conn.execute(
                        "UPDATE mailboxes SET used = used - ?, messages = messages - 1 "
                        "WHERE id = ?",
                        (stored, mailbox_id),
                    )
                self._conn.execute("DELETE FROM deliveries WHERE blob_id = ?", (blob_id,))
                self._conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
                log.error("blob %s is missing: removed %d delivery rows", blob_id, len(rows))
                dropped += len(rows)
        return dropped

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write outside the commit pipeline, durable when the block is left."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._sync_index()

    def _check_open(self) -> None:
        if self._closed:
            raise DriveUnavailable("the drive is closed")

    # -- mailboxes ---------------------------------------------------------------------

    def create_mailbox(
        self,
        address: str,
        *,
        quota: int,
        password: str | None = None,
        identity_key: bytes | None = None,
    ) -> tuple[MailboxInfo, str | None]:
        """Create a mailbox. With a password: returns the one-time recovery code.

        With an `identity_key` (the owner's Ed25519 public key, crypto.PersonalKey)
        instead, the mailbox is end-to-end: the box keeps only public keys, seals
        deliveries to the key's X25519 twin and never sees a secret key.
        """
        self._check_open()
        addr = normalize_address(address)
        if (password is None) == (identity_key is None):
            raise ValueError("give either a password or an identity key")
        with self._lock:
            if addr in self._addresses:
                raise MailboxExists(f"a mailbox for {addr} exists already")
        mailbox_id = crypto.new_id()
        code: str | None = None
        if password is not None:
            ring, _secret, code = crypto.Keyring.create(mailbox_id, password, self.limits)
        else:
            public_key = crypto.x25519_from_identity(identity_key or b"")
            ring = crypto.Keyring.public_only(mailbox_id, public_key)
        sealed_addr = crypto.seal_to(self.keys.sealing.public_key, addr.encode())
        with self._lock:
            if addr in self._addresses:
                raise MailboxExists(f"a mailbox for {addr} exists already")
            # Keyring first: a crash before the row leaves an orphan keyring, which
            # recovery removes; never a row without its keyring.
            write_atomic(self.layout.keyring(mailbox_id), ring.to_json(), mode=0o600)
            with self._transaction():
                self._conn.execute(
                    "INSERT INTO mailboxes (id, address_sealed, public_key, quota, end_to_end, "
                    "auth_key, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        mailbox_id,
                        sealed_addr,
                        ring.public_key,
                        quota,
                        int(ring.end_to_end),
                        identity_key,
                        int(time.time()),
                    ),
                )
            info = MailboxInfo(
                mailbox_id, addr, ring.public_key, quota, 0, 0, ring.end_to_end, identity_key
            )
            self._known = {**self._known, mailbox_id: info}
            self._addresses = {**self._addresses, addr: mailbox_id}
        return self.mailbox(mailbox_id), code

    def mailbox(self, mailbox_id: str) -> MailboxInfo:
        self._check_open()
        with self._read_lock:
            row = self._reader.execute(
                "SELECT public_key, quota, used, messages, end_to_end, auth_key FROM mailboxes "
                "WHERE id = ?",
                (mailbox_id,),
            ).fetchone()
        known = self._known.get(mailbox_id)
        if row is None or known is None:
            raise MailboxNotFound(f"no mailbox with id {mailbox_id}")
        address = known.address
        return MailboxInfo(
            mailbox_id, address, row[0], row[1], row[2], row[3], bool(row[4]), row[5]
        )

    def find_mailbox(self, address: str) -> MailboxInfo | None:
        try:
            addr = normalize_address(address)
        except ValueError:
            return None
        mailbox_id = self._addresses.get(addr)
        return None if mailbox_id is None else self.mailbox(mailbox_id)

    def recipient(self, address: str) -> MailboxInfo | None:
        """The mailbox for an address, from memory: identity, keys and quota, without
        usage figures. For the delivery path, where a query per RCPT would cost."""
        self._check_open()
        try:
            mailbox_id = self._addresses.get(normalize_address(address))
        except ValueError:
            return None
        return None if mailbox_id is None else self._known.get(mailbox_id)

    def mailboxes(self) -> list[MailboxInfo]:
        return [self.mailbox(i) for _, i in sorted(self._addresses.items())]

    def local_domains(self) -> set[str]:
        return {a.rpartition("@")[2] for a in self._addresses}

    def keyring(self, mailbox_id: str) -> crypto.Keyring:
        try:
            return crypto.Keyring.from_json(self.layout.keyring(mailbox_id).read_bytes())
        except FileNotFoundError:
            raise MessageDamaged(f"the keyring of mailbox {mailbox_id} is missing") from None

    def unlock(self, mailbox_id: str, password: str) -> PrivateKey:
        """Unwrap a mailbox key (Argon2id: seconds on a small board; call off the loop)."""
        return self.keyring(mailbox_id).unlock(password)

    def recover_key(self, mailbox_id: str, code: str) -> PrivateKey:
        return self.keyring(mailbox_id).recover(code)

    def change_password(self, mailbox_id: str, secret: PrivateKey, new_password: str) -> None:
        """Rewrap the key under a new password; the mail itself is not touched."""
        ring = self.keyring(mailbox_id).with_password(secret, new_password, self.limits)
        write_atomic(self.layout.keyring(mailbox_id), ring.to_json(), mode=0o600)

    def reset_recovery_code(self, mailbox_id: str, secret: PrivateKey) -> str:
        ring, code = self.keyring(mailbox_id).with_new_recovery_code(secret)
        write_atomic(self.layout.keyring(mailbox_id), ring.to_json(), mode=0o600)
        return code

    def set_quota(self, mailbox_id: str, quota: int) -> None:
        with self._lock:
            with self._transaction():
                self._conn.execute(
                    "UPDATE mailboxes SET quota = ? WHERE id = ?", (quota, mailbox_id)
                )
            info = self._known.get(mailbox_id)
            if info is not None:
                self._known = {**self._known, mailbox_id: dataclasses.replace(info, quota=quota)}

    def remove_mailbox(self, mailbox_id: str) -> int:
        """Remove a mailbox and all its mail; returns how many deliveries went with it.

        The address stops resolving first (new mail is refused at RCPT from then on),
        then one index transaction removes the deliveries, the blobs whose last
        delivery they were, the eviction log, the notice and the row; it is durable
        before the keyring and the blob files are unlinked. A crash in between leaves
        only an orphan keyring or orphan blobs, which recovery removes at the next open.
        A delivery already in the commit pipeline for this mailbox is dropped for it
        (see `_insert`).
        """
        self._check_open()
        with self._lock:
            info = self._known.get(mailbox_id)
            if info is None:
                raise MailboxNotFound(f"no mailbox with id {mailbox_id}")
            self._addresses = {a: i for a, i in self._addresses.items() if i != mailbox_id}
            self._known = {i: m for i, m in self._known.items() if i != mailbox_id}
            for attempt in range(2):  # a full disk: once more with the spare's room
                batch = Batch()
                try:
                    with self._transaction():
                        rows = self._conn.execute(
                            "SELECT seq, blob_id, stored_size FROM deliveries WHERE mailbox_id = ?",
                            (mailbox_id,),
                        ).fetchall()
                        for seq, blob_id, stored in rows:
                            self._space.remove_delivery(seq, mailbox_id, blob_id, stored, batch)
                        for table in ("evictions", "notices"):
                            self._conn.execute(
                                f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,)
                            )
                        self._conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
                    break
                except sqlite3.Error as exc:
                    full = exc.sqlite_errorcode == sqlite3.SQLITE_FULL
                    if not attempt and full and self._space.release_spare():
                        continue
                    # Nothing was removed: the mailbox answers again.
                    self._known = {**self._known, mailbox_id: info}
                    self._addresses = {**self._addresses, info.address: mailbox_id}
                    raise DriveUnavailable(f"the index could not commit: {exc}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.layout.keyring(mailbox_id))
            fsync_dir(self.layout.keys)
        self._unlink(batch.unlink)
        self._space.keep_spare()
        return len(rows)

    # -- delivery ----------------------------------------------------------------------

    def begin(self, mail_from: str, *, received: int | None = None) -> Delivery:
        self._check_open()
        return Delivery(self, mail_from, int(time.time()) if received is None else received)

    def submit_commit(self, request: CommitRequest) -> Future[list[str]]:
        """Queue a finished delivery for the next group commit (called by Delivery)."""
        return self._committer.submit(request)

    def deliver(self, mail_from: str, recipients: Iterable[str], body: bytes) -> list[str]:
        """Begin, add, write, commit in one call: for the CLI, notices and tests."""
        delivery = self.begin(mail_from)
        try:
            for rcpt in recipients:
                delivery.add_recipient(rcpt)
            delivery.write(body)
        except BaseException:
            delivery.abort()
            raise
        return delivery.commit()

    # -- the commit pipeline (run by the committer thread, see committer.py) ---------------

    def _stage(self, requests: Sequence[CommitRequest]) -> list[DriveError | None]:
        """Put each finished blob under its final name; durable only after `_sync`."""
        errors: list[DriveError | None] = []
        for req in requests:
            try:
                self._place(req)
                errors.append(None)
            except OSError as exc:
                req.buffer.discard()
                with contextlib.suppress(OSError):
                    os.unlink(self.layout.blob(req.blob_id))
                errors.append(io_error(exc))
        return errors

    def _place(self, req: CommitRequest) -> None:
        final = self.layout.blob(req.blob_id)
        buf = req.buffer
        if buf.memory is not None:  # small: straight to its final name, no rename
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(buf.memory)
                while view:
                    view = view[os.write(fd, view) :]
            except BaseException:
                os.close(fd)
                raise
            buf.memory = None
        else:
            assert buf.file is not None
            fd = os.dup(buf.file.fileno())
            buf.file.close()
            try:
                os.rename(buf.tmp, final)
            except BaseException:
                os.close(fd)
                raise
        if self._syncfs:
            os.close(fd)
        else:
            self._unsynced_files.append(fd)
            self._unsynced_dirs.add(str(final.parent))

    def _sync(self) -> None:
        """Make everything staged and indexed so far durable, then unlink what the index
        no longer names (never before: a crash must not leave a row without its blob).

        On a drive that is a filesystem of its own (the appliance's USB drive) one
        syncfs(2) does it all. On a directory in a shared filesystem (development)
        syncfs would flush other programs' writes too, so the new blobs, their
        directories and the index's WAL are fsync'd, in parallel.
        """
        if self._syncfs:
            syncfs(self._sync_fd)
        else:
            files, self._unsynced_files = self._unsynced_files, []
            dirs, self._unsynced_dirs = self._unsynced_dirs, set()
            jobs = [self._pool.submit(os.fsync, fd) for fd in files]
            jobs += [self._pool.submit(fsync_dir, Path(d)) for d in dirs]
            jobs.append(self._pool.submit(self._fsync_wal))
            failures = [job.exception() for job in jobs]  # all done before any fd closes
            for fd in files:
                os.close(fd)
            for failure in failures:
                if failure is not None:
                    raise failure
        unlink, self._unlink_after_sync = self._unlink_after_sync, []
        self._unlink(unlink)

    def _fsync_wal(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and gone: SQLite synced the database
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_index(self) -> None:
        """Durability for a write outside the commit pipeline (delete, mailbox changes)."""
        if self._syncfs:
            syncfs(self._sync_fd)
        else:
            self._fsync_wal()

    def _index(
        self,
        requests: Sequence[CommitRequest],
        errors: list[DriveError | BaseException | None],
    ) -> list[list[str] | BaseException]:
        """One index transaction for the batch, each delivery under its own savepoint."""
        results: list[list[str] | BaseException | None] = list(errors)
        batch = Batch()
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._maybe_expire(batch)
                for i, req in enumerate(requests):
                    if results[i] is not None:
                        continue
                    mark = batch.mark()
                    self._conn.execute("SAVEPOINT delivery")
                    try:
                        results[i] = self._insert(req, batch)
                        self._conn.execute("RELEASE delivery")
                    except DriveError as exc:
                        self._conn.execute("ROLLBACK TO delivery")
                        self._conn.execute("RELEASE delivery")
                        self._unlink(batch.rolled_back_to(mark))
                        results[i] = exc
                self._conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                err = DriveUnavailable(f"the index could not commit: {exc}")
                results = [r if isinstance(r, BaseException) else err for r in results]
                self._unlink(batch.rolled_back_to((0, 0, 0)))
        # Blobs the index never took are nobody's: remove them now. Blobs of evicted
        # deliveries wait until this transaction is durable.
        self._unlink(
            req.blob_id
            for req, res in zip(requests, results, strict=True)
            if isinstance(res, BaseException)
        )
        self._unlink_after_sync += batch.unlink
        return results  # type: ignore[return-value]

    def _insert(self, req: CommitRequest, batch: Batch) -> list[str]:
        """Index one delivery inside the batch transaction, evicting to make room."""
        size = req.summary.stored_size
        self._conn.execute(
            "INSERT INTO blobs (id, stored_size, cipher_hash, refs) VALUES (?, ?, ?, ?)",
            (req.blob_id, size, req.summary.cipher_hash, len(req.rows)),
        )
        ids = []
        for mailbox, delivery_id, sealed in req.rows:
            if mailbox.id not in self._known:
                # Removed while this message was on its way (remove_mailbox): its copy
                # is dropped, the blob's reference count corrected.
                self._conn.execute("UPDATE blobs SET refs = refs - 1 WHERE id = ?", (req.blob_id,))
                continue
            self._space.make_room(mailbox, size, batch, reason="quota")
            self._conn.execute(
                "INSERT INTO deliveries (id, mailbox_id, blob_id, plain_size, stored_size, "
                "received, meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    mailbox.id,
                    req.blob_id,
                    req.summary.plain_size,
                    size,
                    req.received,
                    sealed,
                ),
            )
            self._conn.execute(
                "UPDATE mailboxes SET used = used + ?, messages = messages + 1 WHERE id = ?",
                (size, mailbox.id),
            )
            ids.append(delivery_id)
        if not ids:
            raise MailboxNotFound("the recipient's mailbox was removed")
        self._space.check_reserve(req, batch)
        return ids

    # -- retention ---------------------------------------------------------------------

    def _maybe_expire(self, batch: Batch) -> None:
        """Retention rides along with deliveries, at most hourly: no timer needed."""
        if self.settings.keep_days and time.monotonic() - self._last_expire > 3600:
            self._last_expire = time.monotonic()
            self._space.expire(batch)

    def expire(self) -> int:
        """Apply `keep_days` now; returns how many deliveries were removed."""
        if not self.settings.keep_days:
            return 0
        batch = Batch()
        with self._lock, self._transaction():
            self._last_expire = time.monotonic()
            removed = self._space.expire(batch)
        self._unlink(batch.unlink)
        return removed

    def set_retention(self, keep_days: int) -> None:
        """Change `keep_days` on the open drive (the setup page); applied with the next
        delivery, or by `expire()` at once."""
        settings = dataclasses.replace(self.settings, keep_days=keep_days)
        with self._lock:
            self.settings = settings
            self._space.settings = settings
            self._last_expire = 0.0

    def _unlink(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.blob(blob_id))

    # -- reading -----------------------------------------------------------------------

    def list(self, mailbox_id: str) -> list[DeliveryInfo]:
        """A mailbox's deliveries in arrival order."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, plain_size, stored_size, received, retrieved FROM deliveries "
                "WHERE mailbox_id = ? ORDER BY seq",
                (mailbox_id,),
            ).fetchall()
        return [DeliveryInfo(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def sealed_meta(self, mailbox_id: str, delivery_id: str) -> tuple[str, bytes]:
        """(blob id, sealed metadata) of one delivery, for end-to-end readers."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT blob_id, meta FROM deliveries WHERE id = ? AND mailbox_id = ?",
                (delivery_id, mailbox_id),
            ).fetchone()
        if row is None:
            raise MailboxNotFound(f"no delivery {delivery_id} in this mailbox")
        return row[0], row[1]

    def open_message(self, mailbox_id: str, delivery_id: str, secret: PrivateKey) -> Message:
        """Open a delivery with the mailbox's unwrapped key; verifies before any byte."""
        blob_id, sealed = self.sealed_meta(mailbox_id, delivery_id)
        try:
            meta = crypto.open_meta(sealed, secret, [self.keys.verify_key])
        except crypto.MetaError as exc:
            raise MessageDamaged(f"delivery {delivery_id}: {exc}") from None
        if meta.delivery_id != delivery_id or meta.blob_id != blob_id:
            raise MessageDamaged(
                f"delivery {delivery_id}: its metadata belongs to another delivery (swapped)"
            )
        return Message(meta, self.layout.blob(blob_id))

    def blob_path(self, blob_id: str) -> Path:
        return self.layout.blob(blob_id)

    # -- end-to-end reading (the drive API serves these; the box cannot decrypt them) ---

    def list_sealed(self, mailbox_id: str) -> builtins.list[SealedDelivery]:
        """A mailbox's deliveries with their sealed metadata, in arrival order."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT d.id, d.blob_id, d.plain_size, d.stored_size, d.received, b.cipher_hash, "
                "d.meta FROM deliveries d JOIN blobs b ON b.id = d.blob_id "
                "WHERE d.mailbox_id = ? ORDER BY d.seq",
                (mailbox_id,),
            ).fetchall()
        return [SealedDelivery(*r) for r in rows]

    def open_ciphertext(self, mailbox_id: str, delivery_id: str) -> BinaryIO:
        """The stored blob of one of the mailbox's deliveries, as bytes to stream."""
        blob_id, _ = self.sealed_meta(mailbox_id, delivery_id)
        try:
            return open(self.layout.blob(blob_id), "rb")
        except FileNotFoundError:
            raise MessageDamaged(f"blob {blob_id} is missing") from None
        except OSError as exc:
            raise DriveUnavailable(f"cannot read blob {blob_id}: {exc}") from None

    def acknowledge(self, mailbox_id: str, delivery_id: str, cipher_hash: bytes) -> bool:
        """Delete a delivery its owner has safely stored elsewhere, proven by the hash.

        True if it was deleted (or was already gone); False if the hash does not
        match, in which case nothing is deleted and it is offered again.
        """
        with self._read_lock:
            row = self._reader.execute(
                "SELECT b.cipher_hash FROM deliveries d JOIN blobs b ON b.id = d.blob_id "
                "WHERE d.id = ? AND d.mailbox_id = ?",
                (delivery_id, mailbox_id),
            ).fetchone()
        if row is None:
            return True
        if row[0] != cipher_hash:
            return False
        self.delete(mailbox_id, [delivery_id])
        return True

    def mark_retrieved(self, mailbox_id: str, delivery_ids: Iterable[str]) -> None:
        ids = list(delivery_ids)
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE deliveries SET retrieved = 1 WHERE id = ? AND mailbox_id = ?",
                [(i, mailbox_id) for i in ids],
            )

    def delete(self, mailbox_id: str, delivery_ids: Iterable[str]) -> int:
        """Delete a batch atomically: all of it is durable when this returns, or none.

        On a full disk the index cannot commit even a deletion; then the spare file
        (space.py) makes room and the deletion is tried once more, so a full drive can
        always be emptied by its owner.
        """
        ids = list(delivery_ids)
        try:
            deleted = self._delete(mailbox_id, ids)
        except _DiskFull:
            if not self._space.release_spare():
                raise DriveUnavailable("the index could not commit: the drive is full") from None
            deleted = self._delete(mailbox_id, ids)
        self._space.keep_spare()
        return deleted

    def _delete(self, mailbox_id: str, delivery_ids: Sequence[str]) -> int:
        self._check_open()
        batch = Batch()
        deleted = 0
        with self._lock:
            try:
                with self._transaction():
                    for delivery_id in delivery_ids:
                        row = self._conn.execute(
                            "SELECT seq, blob_id, stored_size FROM deliveries "
                            "WHERE id = ? AND mailbox_id = ?",
                            (delivery_id, mailbox_id),
                        ).fetchone()
                        if row is None:
                            continue
                        self._space.remove_delivery(row[0], mailbox_id, row[1], row[2], batch)
                        deleted += 1
            except sqlite3.Error as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise _DiskFull from None
                raise DriveUnavailable(f"the index could not commit: {exc}") from None
        self._unlink(batch.unlink)
        return deleted

    def evictions(self, mailbox_id: str, limit: int = 100) -> builtins.list[EvictionRecord]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT delivery_id, at, received, plain_size, reason FROM evictions "
                "WHERE mailbox_id = ? ORDER BY seq DESC LIMIT ?",
                (mailbox_id, limit),
            ).fetchall()
        return [EvictionRecord(*r) for r in rows]

    # -- figures -----------------------------------------------------------------------

    def last_received(self) -> int | None:
        """When the newest message still on the drive arrived (an indexed MAX, so it
        costs the same on a full drive); None when the drive holds no mail."""
        with self._read_lock:
            row = self._reader.execute("SELECT MAX(received) FROM deliveries").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def reserve_warning(self) -> str:
        """Why `drive.reserve` cannot be kept on this drive at all, or ''."""
        try:
            return self._space.reserve_warning()
        except OSError:
            return ""

    def stats(self) -> dict[str, int | str]:
        with self._read_lock:
            mailboxes = self._reader.execute("SELECT COUNT(*) FROM mailboxes").fetchone()[0]
            deliveries = self._reader.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
            blobs, stored = self._reader.execute(
                "SELECT COUNT(*), COALESCE(SUM(stored_size), 0) FROM blobs"
            ).fetchone()
            evictions = self._reader.execute("SELECT COUNT(*) FROM evictions").fetchone()[0]
        return {
            "drive_id": self.identity.drive_id,
            "format_version": self.identity.version,
            "mailboxes": mailboxes,
            "deliveries": deliveries,
            "blobs": blobs,
            "stored_bytes": stored,
            "evictions": evictions,
            "free_bytes": self._space.free_bytes(),
            "reserve_bytes": self._space.reserve(),
            "commit_batches": self._committer.batches,
            "commit_items": self._committer.items,
        }

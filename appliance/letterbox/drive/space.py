"""Space on the drive: quotas, the free-space reserve, eviction, notices, retention.

Everything here runs inside an index transaction opened by the drive, and only
records what to unlink; the drive unlinks blobs after the transaction commits,
so a crash can leave an orphan blob (removed at the next open) but never a row
without its blob.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field

from letterbox import crypto
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings
from letterbox.drive.delivery import CommitRequest
from letterbox.drive.errors import MessageTooLarge, StorageFull
from letterbox.drive.headers import HeaderSniffer
from letterbox.drive.layout import Layout
from letterbox.drive.notice import MAX_LISTED, NOTICE_ALLOWANCE, Evicted, eviction_notice
from letterbox.drive.records import MailboxInfo
from letterbox.fsutil import fsync_dir

log = logging.getLogger(__name__)

EVICT_PAGE = 64
# Served by the deliveries_evict index in its own order: no sort, no scan
# (tests/drive/test_space.py checks the query plan). The unread notice is left out:
# it goes only when nothing else can (`_evict`), since the next notice replaces it.
EVICT_QUERY = (
    "SELECT seq, id, blob_id, stored_size, plain_size, received FROM deliveries "
    "WHERE mailbox_id = ? AND blob_id != ? AND (retrieved OR NOT notice) "
    "ORDER BY retrieved DESC, seq LIMIT ?"
)
UNREAD_NOTICE = (
    "SELECT seq, id, blob_id, stored_size FROM deliveries "
    "WHERE mailbox_id = ? AND blob_id != ? AND notice AND NOT retrieved"
)
DAY = 86400
# Bytes that deliveries never take, whatever `drive.reserve` says, and the size of
# the spare file that only deletions may use (see Space.check_reserve, keep_spare).
FLOOR = 1 << 20
SPARE_NAME = "SPARE"


@dataclass
class Batch:
    """Bookkeeping of one index transaction and the files that go with it.

    `unlink`: blobs whose last delivery the transaction removes, deleted once it
    has committed. `created`: blobs written inside it (notices), deleted if it
    rolls back. A savepoint rollback must undo both lists to its mark, or a
    refused delivery would delete blobs whose rows the rollback brought back.
    """

    unlink: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    freed: int = 0  # bytes that unlinking will free, for the reserve check
    free: int | None = None  # the filesystem's free bytes, read once per batch

    def mark(self) -> tuple[int, int, int]:
        return len(self.unlink), len(self.created), self.freed

    def rolled_back_to(self, mark: tuple[int, int, int]) -> list[str]:
        """Forget what happened since `mark`; returns the blobs created since, to delete."""
        del self.unlink[mark[0] :]
        gone = self.created[mark[1] :]
        del self.created[mark[1] :]
        self.freed = mark[2]
        return gone


class Space:
    """Quota and reserve bookkeeping over the drive's index connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        layout: Layout,
        keys: BoxKeys,
        settings: DriveSettings,
        hostname: str,
    ) -> None:
        self._conn = conn
        self.layout = layout
        self.keys = keys
        self.settings = settings
        self.hostname = hostname

    def make_room(self, mailbox: MailboxInfo, incoming: int, batch: Batch, reason: str) -> None:
        quota, used = self._conn.execute(
            "SELECT quota, used FROM mailboxes WHERE id = ?", (mailbox.id,)
        ).fetchone()
        if incoming > quota:
            raise MessageTooLarge(
                f"a message of {incoming} stored bytes exceeds the mailbox quota of {quota}"
            )
        if used + incoming <= quota:
            return
        # Room for the notice as well, when it fits at all.
        allowance = NOTICE_ALLOWANCE if incoming + NOTICE_ALLOWANCE <= quota else 0
        first = self._evict(mailbox.id, used + incoming + allowance - quota, reason, batch)
        if first is not None:
            if allowance:
                self._notify(mailbox, first, reason, quota, batch)
            else:  # no room for a notice: the next one reports these too
                self._unseen_since(mailbox.id, first)

    def _evict(
        self,
        mailbox_id: str,
        need: int,
        reason: str,
        batch: Batch,
        *,
        keep_blob: str = "",
        count_freed: bool = False,
    ) -> int | None:
        """Remove the mailbox's oldest deliveries, retrieved ones first, until `need` is met.

        `need` counts the mailbox's stored bytes, or with `count_freed` the bytes
        actually freed on the drive (a shared blob frees nothing until its last
        delivery goes). Walks the (mailbox, retrieved DESC, seq) index a page at a
        time, reading only rows it removes: O(evicted · log n). Returns the eviction
        log's first new seq, or None if nothing was evicted.

        Each logged row carries the mailbox's running count of evictions, which is
        what notices count with. The unread notice is kept to the last: removed
        only when nothing else is left, without a log row (it is not the person's
        mail), and marked gone in `notices` so that the next notice still counts
        every eviction since the last one the person saw.
        """
        first: int | None = None
        now = int(time.time())
        running = self._running(mailbox_id)
        while need > 0:
            page = self._conn.execute(EVICT_QUERY, (mailbox_id, keep_blob, EVICT_PAGE)).fetchall()
            if not page:
                break
            for seq, delivery_id, blob_id, stored, plain, received in page:
                freed_before = batch.freed
                self.remove_delivery(seq, mailbox_id, blob_id, stored, batch)
                running += 1
                cur = self._conn.execute(
                    "INSERT INTO evictions (mailbox_id, delivery_id, at, received, plain_size, "
                    "reason, running) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (mailbox_id, delivery_id, now, received, plain, reason, running),
                )
                first = cur.lastrowid if first is None else first
                need -= (batch.freed - freed_before) if count_freed else stored
                if need <= 0:
                    break
        if need > 0:
            for seq, delivery_id, blob_id, stored in self._conn.execute(
                UNREAD_NOTICE, (mailbox_id, keep_blob)
            ).fetchall():
                freed_before = batch.freed
                self.remove_delivery(seq, mailbox_id, blob_id, stored, batch)
                self._conn.execute(
                    "UPDATE notices SET delivery_id = '' WHERE mailbox_id = ? AND delivery_id = ?",
                    (mailbox_id, delivery_id),
                )
                need -= (batch.freed - freed_before) if count_freed else stored
        if first is not None:
            log.info("evicted deliveries to make room (%s)", reason)
        return first

    def remove_delivery(
        self, seq: int, mailbox_id: str, blob_id: str, stored: int, batch: Batch
    ) -> None:
        self._conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
        self._conn.execute(
            "UPDATE mailboxes SET used = used - ?, messages = messages - 1 WHERE id = ?",
            (stored, mailbox_id),
        )
        refs = self._conn.execute(
            "UPDATE blobs SET refs = refs - 1 WHERE id = ? RETURNING refs, stored_size",
            (blob_id,),
        ).fetchone()
        if refs is not None and refs[0] <= 0:
            self._conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            batch.unlink.append(blob_id)
            batch.freed += refs[1]

    def _running(self, mailbox_id: str, before_seq: int | None = None) -> int:
        """The mailbox's running eviction count at its newest log row, or at the newest
        before `before_seq`; 0 before its first. One step down evictions_mailbox."""
        if before_seq is None:
            row = self._conn.execute(
                "SELECT running FROM evictions WHERE mailbox_id = ? ORDER BY seq DESC LIMIT 1",
                (mailbox_id,),
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT running FROM evictions WHERE mailbox_id = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT 1",
                (mailbox_id, before_seq),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def _unseen_since(
        self, mailbox_id: str, first_seq: int
    ) -> tuple[int, tuple[int, str, int] | None]:
        """The first eviction the owner has not seen a notice for, and the unread
        notice that reports the earlier ones (its seq, blob and stored size), if any.

        A notice is seen once it is retrieved, or deleted by its owner. Until then
        (unread, or removed unread by `_evict`) its first eviction stays the start
        of the count. Otherwise `first_seq` starts a new count, recorded at once so
        that evictions no notice can report yet (the message left no room for one)
        are counted by the next notice.
        """
        prev = self._conn.execute(
            "SELECT delivery_id, since_seq FROM notices WHERE mailbox_id = ?", (mailbox_id,)
        ).fetchone()
        if prev is not None:
            notice_id, prev_since = prev
            if not notice_id:  # evictions not reported yet: no notice on the drive
                return prev_since, None
            row = self._conn.execute(
                "SELECT seq, blob_id, stored_size, retrieved FROM deliveries "
                "WHERE id = ? AND mailbox_id = ?",
                (notice_id, mailbox_id),
            ).fetchone()
            if row is not None and not row[3]:
                return prev_since, (row[0], row[1], row[2])
        self._conn.execute(
            "INSERT OR REPLACE INTO notices (mailbox_id, delivery_id, since_seq, evicted) "
            "VALUES (?, '', ?, 0)",
            (mailbox_id, first_seq),
        )
        return first_seq, None

    def _notify(
        self, mailbox: MailboxInfo, first_seq: int, reason: str, quota: int, batch: Batch
    ) -> None:
        """Tell the owner what was evicted, in a message encrypted like any other.

        The notice counts every eviction since the last notice the owner saw,
        from the log's running count (two index steps, however many there were).
        An unread notice from earlier is replaced by one covering its evictions
        too, so a mailbox that stays full collects one notice, not one per message.
        """
        since, unread = self._unseen_since(mailbox.id, first_seq)
        if unread is not None:
            self.remove_delivery(unread[0], mailbox.id, unread[1], unread[2], batch)
        total = self._running(mailbox.id) - self._running(mailbox.id, since)
        listed = [
            Evicted(*r)
            for r in self._conn.execute(
                "SELECT delivery_id, received, plain_size FROM evictions "
                "WHERE mailbox_id = ? AND seq >= ? AND reason != 'retention' ORDER BY seq LIMIT ?",
                (mailbox.id, since, MAX_LISTED),
            )
        ]
        body = eviction_notice(mailbox.address, self.hostname, listed, total, reason, quota)
        delivery_id = self._store_notice(mailbox, body, batch)
        self._conn.execute(
            "INSERT OR REPLACE INTO notices (mailbox_id, delivery_id, since_seq, evicted) "
            "VALUES (?, ?, ?, ?)",
            (mailbox.id, delivery_id, since, total),
        )

    def _store_notice(self, mailbox: MailboxInfo, body: bytes, batch: Batch) -> str:
        """Write a box-made message durably and index it in the open transaction."""
        blob_id = crypto.new_id()
        key = crypto.new_blob_key()
        tmp = self.layout.blob_tmp(blob_id)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            writer = crypto.BlobWriter(fh, key, blob_id)
            writer.write(body)
            summary = writer.finish()
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.layout.blob(blob_id))
        fsync_dir(self.layout.blob(blob_id).parent)
        batch.created.append(blob_id)
        delivery_id = crypto.new_id()
        received = int(time.time())
        sniffer = HeaderSniffer()
        sniffer.feed(body)
        meta = crypto.DeliveryMeta(
            delivery_id,
            blob_id,
            key,
            summary.header,
            summary.plain_size,
            summary.stored_size,
            summary.cipher_hash,
            received,
            "",
            mailbox.address,
            sniffer.headers(),
            kind="notice",
        )
        sealed = crypto.seal_meta(meta, self.keys.signing, mailbox.public_key)
        self._conn.execute(
            "INSERT INTO blobs (id, stored_size, cipher_hash, refs) VALUES (?, ?, ?, 1)",
            (blob_id, summary.stored_size, summary.cipher_hash),
        )
        self._conn.execute(
            "INSERT INTO deliveries (id, mailbox_id, blob_id, plain_size, stored_size, received, "
            "notice, meta) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
            (
                delivery_id,
                mailbox.id,
                blob_id,
                summary.plain_size,
                summary.stored_size,
                received,
                sealed,
            ),
        )
        self._conn.execute(
            "UPDATE mailboxes SET used = used + ?, messages = messages + 1 WHERE id = ?",
            (summary.stored_size, mailbox.id),
        )
        return delivery_id

    def free_bytes(self) -> int:
        st = os.statvfs(self.layout.base)
        return st.f_bavail * st.f_frsize

    def total_bytes(self) -> int:
        st = os.statvfs(self.layout.base)
        return st.f_blocks * st.f_frsize

    def reserve(self) -> int:
        """The free space deliveries leave: `drive.reserve`, but never under FLOOR.

        `drive.reserve = 0` reads as "use the whole drive for mail", and that is what
        a person gets, less one MiB: refusing 0 as a setting would surprise them, and
        taking the last byte would wedge the box, since even a POP3 DELE needs room
        in the index's WAL to commit (a 100 % full disk answered every DELE with
        "database or disk is full", so nothing could ever be freed). Deletions never
        check the reserve, so this floor is theirs, and the spare file (keep_spare)
        covers a disk that something else filled.
        """
        return max(int(self.settings.reserve), FLOOR)

    def reserve_warning(self) -> str:
        """A sentence for the log and the Storage page if the reserve cannot be kept
        even on an empty drive (every delivery would be refused), else ''."""
        reserve, total = int(self.settings.reserve), self.total_bytes()
        if reserve < total:
            return ""
        return (
            f"drive.reserve ({reserve} bytes) is larger than the whole drive ({total} "
            "bytes): every message will be refused as 'drive full' until it is lowered"
        )

    # -- the spare file: room for deletions on a full disk --------------------------------

    @property
    def spare(self) -> str:
        return str(self.layout.base / SPARE_NAME)

    def keep_spare(self) -> None:
        """Write the spare file (FLOOR bytes of zeros) if it is missing and fits.

        Deliveries keep FLOOR free, but a disk can still fill: a large message
        spooling, the index growing, other files beside a development drive. Then
        `release_spare` gives a deletion the room its index commit needs. Best
        effort: a drive with no room for it works as before, only without that help.
        """
        if os.path.exists(self.spare):
            return
        try:
            if self.free_bytes() < 2 * FLOOR:
                return
            tmp = str(self.layout.base / f".{SPARE_NAME}.tmp")  # recovery removes leftovers
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                chunk = bytes(64 << 10)
                for _ in range(FLOOR // len(chunk)):
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self.spare)
        except OSError as exc:
            log.warning("cannot keep the spare file for deletions on a full drive (%s)", exc)
            with contextlib.suppress(OSError):
                os.unlink(self.layout.base / f".{SPARE_NAME}.tmp")

    def release_spare(self) -> bool:
        """Unlink the spare file so that a deletion can commit; True if there was one."""
        try:
            os.unlink(self.spare)
        except FileNotFoundError:
            return False
        log.warning("the drive is full: used its spare room to let a deletion commit")
        return True

    def check_reserve(self, req: CommitRequest, batch: Batch) -> None:
        """Keep the drive's free-space reserve, evicting from the recipients if needed.

        The blob is already written, so free space already counts it; what this
        batch will unlink after commit counts as free. The message being delivered
        is never evicted to make room for itself.
        """
        reserve = self.reserve()
        if batch.free is None:  # one statvfs per batch: its blobs are all written by now
            batch.free = self.free_bytes()
        short = reserve - (batch.free + batch.freed)
        if short > 0:
            short += NOTICE_ALLOWANCE  # the notice written below needs room too
        for mailbox, _, _ in req.rows:
            if short <= 0:
                return
            before = batch.freed
            first = self._evict(
                mailbox.id, short, "reserve", batch, keep_blob=req.blob_id, count_freed=True
            )
            short -= batch.freed - before
            if first is not None:
                self._notify(mailbox, first, "reserve", mailbox.quota, batch)
        if short > 0:
            raise StorageFull(
                f"the drive is full: {reserve} bytes must stay free and eviction cannot free enough"
            )

    # -- retention ------------------------------------------------------------------

    def expire(self, batch: Batch) -> int:
        """Remove deliveries older than keep_days, oldest first, logged as 'retention'."""
        cutoff = int(time.time()) - self.settings.keep_days * DAY
        now = int(time.time())
        removed = 0
        while True:
            page = self._conn.execute(
                "SELECT seq, id, mailbox_id, blob_id, stored_size, plain_size, received "
                "FROM deliveries WHERE received < ? ORDER BY received LIMIT 500",
                (cutoff,),
            ).fetchall()
            if not page:
                return removed
            for seq, delivery_id, mailbox_id, blob_id, stored, plain, received in page:
                self.remove_delivery(seq, mailbox_id, blob_id, stored, batch)
                self._conn.execute(  # not reported by notices: the running count stays
                    "INSERT INTO evictions (mailbox_id, delivery_id, at, received, plain_size, "
                    "reason, running) VALUES (?, ?, ?, ?, ?, 'retention', ?)",
                    (mailbox_id, delivery_id, now, received, plain, self._running(mailbox_id)),
                )
                removed += 1

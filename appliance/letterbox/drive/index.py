"""The index: SQLite in WAL mode with synchronous=NORMAL, made durable by the drive itself.

NORMAL keeps the index consistent through any crash (SQLite syncs the WAL before
each checkpoint); durability of each commit comes from the drive, which syncs
after committing and before telling anyone (store.py, committer.py) so that one
sync can serve a batch's blobs and the previous batch's index at once.

Only ids, sizes, times, flags, hashes of ciphertext and sealed (encrypted) values
are stored here; see the README's list of what stays plaintext on the drive.
The eviction index is ordered (mailbox, retrieved first, arrival), so eviction
reads exactly the rows it removes: O(evicted · log n), never a scan.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from letterbox.drive.errors import DriveFormatError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE mailboxes (
    id             TEXT PRIMARY KEY,     -- random 128-bit hex
    address_sealed BLOB NOT NULL,        -- the address, sealed to the box key
    public_key     BLOB NOT NULL,        -- X25519, deliveries are sealed to it
    quota          INTEGER NOT NULL,     -- bytes of stored (encrypted) mail
    used           INTEGER NOT NULL DEFAULT 0,
    messages       INTEGER NOT NULL DEFAULT 0,
    end_to_end     INTEGER NOT NULL DEFAULT 0,
    auth_key       BLOB,                 -- end-to-end: the owner's Ed25519 identity key
    created        INTEGER NOT NULL
);
CREATE TABLE blobs (
    id          TEXT PRIMARY KEY,        -- random 128-bit hex, also the file name
    stored_size INTEGER NOT NULL,
    cipher_hash BLOB NOT NULL,           -- BLAKE2b-256 of the whole file
    refs        INTEGER NOT NULL         -- deliveries that use it
);
CREATE TABLE deliveries (
    seq         INTEGER PRIMARY KEY,     -- arrival order
    id          TEXT NOT NULL UNIQUE,    -- random 128-bit hex (POP3 UIDL)
    mailbox_id  TEXT NOT NULL REFERENCES mailboxes(id),
    blob_id     TEXT NOT NULL REFERENCES blobs(id),
    plain_size  INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    received    INTEGER NOT NULL,        -- Unix seconds
    retrieved   INTEGER NOT NULL DEFAULT 0,
    notice      INTEGER NOT NULL DEFAULT 0,  -- written by the box itself (eviction notice)
    meta        BLOB NOT NULL            -- sealed, signed metadata
);
CREATE INDEX deliveries_evict ON deliveries (mailbox_id, retrieved DESC, seq);
CREATE INDEX deliveries_list ON deliveries (mailbox_id, seq);
CREATE INDEX deliveries_received ON deliveries (received);
CREATE TABLE evictions (
    seq         INTEGER PRIMARY KEY,
    mailbox_id  TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    received    INTEGER NOT NULL,
    plain_size  INTEGER NOT NULL,
    reason      TEXT NOT NULL,           -- quota, reserve or retention
    running     INTEGER NOT NULL DEFAULT 0  -- the mailbox's quota and reserve evictions so far
);
CREATE INDEX evictions_mailbox ON evictions (mailbox_id, seq);
-- The evictions a mailbox's owner has not yet seen a notice for: the first of them,
-- and the unread notice that reports them ('' when there is none on the drive). A
-- newer notice replaces it, so a full mailbox gets one notice, not one per message.
CREATE TABLE notices (
    mailbox_id  TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    since_seq   INTEGER NOT NULL,
    evicted     INTEGER NOT NULL         -- evictions it reports
);
"""


# Version 2 added evictions.running, so that an eviction notice's count comes from
# the log itself and survives its notice being removed (it used to restart at zero).
# Counted in one pass per mailbox (a window over the evictions_mailbox order).
UPGRADE_FROM_1 = """
ALTER TABLE evictions ADD COLUMN running INTEGER NOT NULL DEFAULT 0;
UPDATE evictions SET running = w.running FROM (
    SELECT seq, SUM(reason != 'retention') OVER (PARTITION BY mailbox_id ORDER BY seq) AS running
    FROM evictions
) AS w WHERE w.seq = evictions.seq;
"""


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open the index with the durability settings the drive's promises rest on."""
    if not create and not path.exists():
        raise DriveFormatError(
            f"the index {path} is missing; refusing to start a new one over existing blobs "
            "(restore it, or move the blobs away and start an empty drive)"
        )
    if create and not path.exists():
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Foreign keys stay unenforced: checking them on every blob delete would scan
        # deliveries (no index on blob_id), making eviction O(n). The drive keeps the
        # references itself, and `drive check` verifies them.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if create and version == 0:
            conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            version = SCHEMA_VERSION
        if version == 1:
            conn.executescript(f"BEGIN; {UPGRADE_FROM_1} PRAGMA user_version=2; COMMIT;")
            version = 2
        # Touch every table so that a damaged file fails here, not in the middle of a delivery.
        for table in ("mailboxes", "blobs", "deliveries", "evictions", "notices"):
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DriveFormatError(
            f"the index {path} is damaged ({exc}); the blobs are untouched. "
            "Run 'letterbox drive check' for a report"
        ) from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise DriveFormatError(
            f"index schema version {version} is newer than this Letterbox reads "
            f"({SCHEMA_VERSION}); upgrade Letterbox"
        )
    if version != SCHEMA_VERSION:
        conn.close()
        raise DriveFormatError(f"index schema version {version} is not valid")
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A second, read-only connection: in WAL mode it reads while a commit is syncing."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return conn

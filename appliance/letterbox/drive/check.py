"""`letterbox drive check`: verify a drive without changing a byte of it.

Checks the identity file, the index's own integrity, that every index row has
its blob with the recorded size and ciphertext hash, that reference counts and
per-mailbox totals add up, that keyrings and sealed addresses open for this box,
and lists anything on the drive that is not ours. Leftovers a crash can cause
(temporaries, orphan blobs) are warnings: the next open removes them.

Two ways to run it, never beside a writer it does not know about:

* `check_unopened` for a drive nobody has open: it holds the drive's LOCK while it
  reads, so no box can start writing (or recovering) under it.
* `check_drive(..., live=True)` inside the running box, which holds the LOCK and
  keeps committing meanwhile. The index is read in one SQLite read transaction, so
  totals, reference counts and rows are one consistent snapshot (read at different
  moments, concurrent commits made them disagree: false damage). Files are read
  after the snapshot, so a blob or keyring that a later delete removed is judged
  against the index as it is now (deletes commit the index before unlinking,
  store.py): missing is damage only if the current index still names it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from letterbox import crypto
from letterbox.boxkeys import BoxKeys
from letterbox.drive import layout as layout_mod
from letterbox.drive.errors import DriveFormatError
from letterbox.drive.index import SCHEMA_VERSION

KNOWN_TOP = {
    "DRIVE",
    "index.sqlite3",
    "index.sqlite3-wal",
    "index.sqlite3-shm",
    "blobs",
    "keys",
    "queue",
    "OPEN",
    "SPARE",
    "LOCK",
}


@dataclass
class CheckReport:
    root: Path
    damage: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage

    def render(self) -> str:
        lines = [f"Checking the drive at {self.root}"]
        lines += [f"  {f}" for f in self.facts]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        lines += [f"  DAMAGE:  {d}" for d in self.damage]
        if self.ok:
            lines.append("Result: OK" + (" (with warnings)" if self.warnings else ""))
        else:
            lines.append(f"Result: DAMAGED ({len(self.damage)} problems)")
        return "\n".join(lines)


Still = Callable[[str, str], bool]  # ("blobs" | "mailboxes", id): in the index now?


def check_unopened(root: Path, keys: BoxKeys) -> CheckReport:
    """Check a drive that no process has open, holding its LOCK meanwhile.

    Raises DriveInUse when a process has it open: ask that process instead (the
    CLI goes through the running box's control socket)."""
    lay = layout_mod.Layout(Path(root))
    if not lay.identity.exists():
        return check_drive(root, keys)  # reports "not a Letterbox drive"
    fd = layout_mod.take_lock(lay)
    try:
        return check_drive(root, keys)
    finally:
        layout_mod.release_lock(fd)


def check_drive(root: Path, keys: BoxKeys, *, live: bool = False) -> CheckReport:
    """Check the drive at `root`; `live` when the calling process has it open and
    writing (see the module docstring)."""
    lay = layout_mod.Layout(Path(root))
    report = CheckReport(lay.root)
    try:
        ident = layout_mod.read_identity(lay)
    except DriveFormatError as exc:
        report.damage.append(str(exc))
        return report
    report.facts.append(f"drive {ident.drive_id}, format version {ident.version}")
    if live:
        report.facts.append("checked while the box is running (one snapshot of the index)")
    elif lay.open_marker.exists():
        report.warnings.append("the drive is open or was not closed cleanly")
    if not lay.index.exists():
        report.damage.append("the index (index.sqlite3) is missing")
        return report
    try:
        # Autocommit mode, and one explicit read transaction: every SELECT below sees
        # the same committed state (WAL snapshot), whatever the box commits meanwhile.
        conn = sqlite3.connect(f"file:{lay.index}?mode=ro", uri=True, isolation_level=None)
        conn.execute("BEGIN")
        result = conn.execute("PRAGMA integrity_check").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        report.damage.append(f"the index is unreadable: {exc}")
        return report
    if result != [("ok",)]:
        report.damage += [f"index integrity: {r[0]}" for r in result[:20]]
        return report
    if not 1 <= version <= SCHEMA_VERSION:  # 1: upgraded when a box next opens it
        report.damage.append(f"index schema version {version}, expected {SCHEMA_VERSION}")
        return report
    try:
        _check_index(conn, lay, keys, report, _still_indexed(lay) if live else None)
    except sqlite3.DatabaseError as exc:
        report.damage.append(f"the index is unreadable: {exc}")
    finally:
        conn.close()
    _check_foreign(lay, report)
    return report


def _still_indexed(lay: layout_mod.Layout) -> Still:
    """Whether the index as committed now (not the snapshot) has a row: asked only
    about the few files found missing (or unexpected) while the box writes."""

    def still(table: str, row_id: str) -> bool:
        now = sqlite3.connect(f"file:{lay.index}?mode=ro", uri=True)
        try:
            query = f"SELECT 1 FROM {table} WHERE id = ?"  # table: one of two literals
            return now.execute(query, (row_id,)).fetchone() is not None
        finally:
            now.close()

    return still


def _check_index(
    conn: sqlite3.Connection,
    lay: layout_mod.Layout,
    keys: BoxKeys,
    report: CheckReport,
    still: Still | None,
) -> None:
    """`still` only for a live drive (check_drive(live=True)); None when nobody
    writes, so the snapshot is the index as it is."""
    mailboxes = conn.execute(
        "SELECT id, address_sealed, public_key, used, messages FROM mailboxes"
    ).fetchall()
    for mailbox_id, sealed, pk, used, messages in mailboxes:
        try:
            crypto.unseal(keys.sealing, sealed)
        except crypto.MetaError:
            report.damage.append(f"mailbox {mailbox_id}: address not sealed to this box's key")
        try:
            ring = crypto.Keyring.from_json(lay.keyring(mailbox_id).read_bytes())
            if ring.public_key != pk or ring.mailbox_id != mailbox_id:
                report.damage.append(f"mailbox {mailbox_id}: keyring belongs to another mailbox")
        except FileNotFoundError:
            if still is None or still("mailboxes", mailbox_id):  # else removed meanwhile
                report.damage.append(f"mailbox {mailbox_id}: keyring file is missing")
        except crypto.KeyringError as exc:
            report.damage.append(f"mailbox {mailbox_id}: {exc}")
        sums = conn.execute(
            "SELECT COALESCE(SUM(stored_size), 0), COUNT(*) FROM deliveries WHERE mailbox_id = ?",
            (mailbox_id,),
        ).fetchone()
        if sums != (used, messages):
            report.damage.append(
                f"mailbox {mailbox_id}: totals say {messages} messages/{used} bytes, "
                f"deliveries add up to {sums[1]}/{sums[0]}"
            )
    known_mailboxes = {m[0] for m in mailboxes}

    refs: Counter[str] = Counter()
    delivery_sizes: dict[str, int] = {}
    deliveries = 0
    for mailbox_id, blob_id, stored in conn.execute(
        "SELECT mailbox_id, blob_id, stored_size FROM deliveries"
    ):
        deliveries += 1
        refs[blob_id] += 1
        delivery_sizes[blob_id] = stored
        if mailbox_id not in known_mailboxes:
            report.damage.append(f"a delivery names unknown mailbox {mailbox_id}")
    blobs = 0
    indexed: set[str] = set()
    for blob_id, stored, digest, count in conn.execute(
        "SELECT id, stored_size, cipher_hash, refs FROM blobs"
    ):
        blobs += 1
        indexed.add(blob_id)
        if count != refs.get(blob_id, 0):
            report.damage.append(
                f"blob {blob_id}: reference count {count}, but {refs.get(blob_id, 0)} deliveries"
            )
        if blob_id in delivery_sizes and delivery_sizes[blob_id] != stored:
            report.damage.append(f"blob {blob_id}: deliveries record another size")
        try:
            with open(lay.blob(blob_id), "rb") as fh:
                magic = fh.read(len(crypto.BLOB_PREFIX))
                fh.seek(0)
                size, actual = crypto.hash_file(fh)
        except FileNotFoundError:
            if still is None or still("blobs", blob_id):  # else deleted since the snapshot
                report.damage.append(f"blob {blob_id}: file is missing")
            continue
        if not magic.startswith(crypto.BLOB_MAGIC):
            report.damage.append(f"blob {blob_id}: not a Letterbox blob (bad magic)")
        elif size != stored:
            report.damage.append(
                f"blob {blob_id}: {size} bytes on disk, {stored} recorded (truncated or extended)"
            )
        elif actual != digest:
            report.damage.append(f"blob {blob_id}: ciphertext hash mismatch (altered)")
    for blob_id in refs.keys() - indexed:
        report.damage.append(f"deliveries name blob {blob_id}, which the index does not have")
    report.facts.append(f"{len(mailboxes)} mailboxes, {deliveries} deliveries, {blobs} blobs")

    for i in range(256):
        bdir = lay.blobs / f"{i:02x}"
        if not bdir.is_dir():
            report.damage.append(f"blob directory {bdir.name} is missing")
            continue
        for entry in os.scandir(bdir):
            if layout_mod.BLOB_NAME.match(entry.name):
                if entry.name not in indexed and not (still and still("blobs", entry.name)):
                    report.warnings.append(f"orphan blob {entry.name} (removed at the next open)")
            else:
                report.warnings.append(f"foreign file {Path(entry.path).relative_to(lay.root)}")
    if still is None:  # in a running box, temporaries are deliveries on their way
        for entry in os.scandir(lay.tmp):
            report.warnings.append(f"leftover temporary {entry.name} (removed at the next open)")
    for entry in os.scandir(lay.keys):
        stem = entry.name.removesuffix(".json")
        if stem not in known_mailboxes and not (still and still("mailboxes", stem)):
            report.warnings.append(f"keyring {entry.name} belongs to no mailbox")


def _check_foreign(lay: layout_mod.Layout, report: CheckReport) -> None:
    for entry in os.scandir(lay.base):
        if entry.name not in KNOWN_TOP:
            report.warnings.append(f"foreign file letterbox/{entry.name} (left alone)")
    for entry in os.scandir(lay.blobs):
        if entry.name != "tmp" and not (len(entry.name) == 2 and entry.is_dir()):
            report.warnings.append(f"foreign file letterbox/blobs/{entry.name} (left alone)")
    try:
        json.loads(lay.identity.read_bytes())
    except ValueError:  # pragma: no cover - read_identity already refused it
        report.damage.append("DRIVE is not valid JSON")

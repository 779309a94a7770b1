"""Drive benchmarks (issue 2): commit rate, store throughput and memory, eviction cost.

Every figure is printed beside the raw capability of the same disk measured in the
same run, as a ratio:

* commit rate of 2 KB deliveries with 1 and 20 concurrent writers, with and without
  group commit, beside write+fsync+rename+dir-fsync of 2 KB files;
* store throughput of 1 MB and 25 MB messages beside fsync'd sequential writes, and
  the peak RSS of a process storing them (each size in a fresh process);
* eviction on a drive with 1,000,000 deliveries: time per evicted message and per
  quota check, and the same on a drive of 10,000 to show it does not grow with n.

Run: `make bench BENCH=drive` (or `.venv/bin/python bench/bench_drive.py`).
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.crypto import Argon2Limits, new_id
from letterbox.drive import Drive
from letterbox.drive.committer import SWITCH_INTERVAL
from letterbox.drive.space import Batch
from letterbox.fsutil import fsync_dir

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FAST = Argon2Limits(1, 8192)


def workdir() -> Path:
    OUT.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=OUT, prefix="drive-"))


def open_drive(path: Path, *, group_commit: bool = True, sync: str = "fsync") -> Drive:
    return Drive.open(
        path / "drive",
        BoxKeys.load_or_create(path),
        limits=FAST,
        settings=DriveSettings(reserve=Size(0), group_commit=group_commit, sync=sync),
    )


def in_threads(threads: int, total: int, job: Callable[[int], None]) -> float:
    """Run `job(i)` for i in range(total) spread over `threads` threads; seconds taken."""
    per = total // threads

    def worker(t: int) -> None:
        for i in range(t * per, (t + 1) * per):
            job(i)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return time.perf_counter() - start


# -- commit rate ---------------------------------------------------------------------------


def raw_small_writes(threads: int, total: int) -> float:
    """Files per second for write + fsync + rename + directory fsync of 2 KB."""
    base = workdir()
    (base / "tmp").mkdir()
    for i in range(256):
        (base / f"{i:02x}").mkdir()
    payload = os.urandom(2048)

    def job(i: int) -> None:
        name = new_id()
        tmp = base / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, base / name[:2] / name)
        fsync_dir(base / name[:2])

    seconds = in_threads(threads, total, job)
    shutil.rmtree(base)
    return total / seconds


def drive_commits(threads: int, total: int, group_commit: bool, sync: str) -> tuple[float, float]:
    """Deliveries per second (commit returned = durable), and messages per batch."""
    base = workdir()
    drive = open_drive(base, group_commit=group_commit, sync=sync)
    mailbox, _ = drive.create_mailbox("bench@example.org", quota=1 << 40, password="pw")
    body = (b"Subject: bench\r\n\r\n" + b"x" * 2030)[:2048]

    def job(i: int) -> None:
        delivery = drive.begin("sender@example.net")
        delivery.add_recipient(mailbox.address)
        delivery.write(body)
        delivery.commit()

    seconds = in_threads(threads, total, job)
    stats = drive.stats()
    drive.close()
    shutil.rmtree(base)
    return total / seconds, int(stats["commit_items"]) / max(1, int(stats["commit_batches"]))


def bench_commit_rate() -> None:
    print("\n## Commit rate, 2 KB deliveries (durable on return)")
    print(
        f"{'writers':>7}  {'sync':>6}  {'group commit':>12}  {'deliveries/s':>12}  "
        f"{'msgs/batch':>10}  {'raw files/s':>11}  {'ratio':>6}"
    )
    for threads, total in ((1, 1000), (20, 4000)):
        raw = raw_small_writes(threads, total)
        for sync in ("fsync", "syncfs"):
            for group in (False, True):
                rate, per_batch = drive_commits(threads, total, group, sync)
                print(
                    f"{threads:>7}  {sync:>6}  {'on' if group else 'off':>12}  {rate:>12.0f}  "
                    f"{per_batch:>10.1f}  {raw:>11.0f}  {rate / raw:>6.2f}"
                )
    print(
        "ratio = Letterbox deliveries/s ÷ raw write+fsync+rename+dir-fsync files/s "
        "(same threads); higher is better. Each Letterbox delivery is durable twice over: "
        "its blob and its index row (a raw file is one write). sync=fsync is what a "
        "directory drive uses; syncfs what a drive on its own filesystem uses (here both sit "
        "on the shared root filesystem, where syncfs also flushes other programs' writes)"
    )


# -- store throughput and memory ----------------------------------------------------------


def child_store(size: int) -> None:
    """In a fresh process: store one message of `size` bytes; print rate and peak RSS."""
    base = workdir()
    drive = open_drive(base)
    mailbox, _ = drive.create_mailbox("bench@example.org", quota=1 << 40, password="pw")
    chunk = os.urandom(65536)
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    delivery = drive.begin("sender@example.net")
    delivery.add_recipient(mailbox.address)
    for _ in range(size // len(chunk)):
        delivery.write(chunk)
    delivery.commit()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drive.close()
    shutil.rmtree(base)
    print(f"{size / seconds / 1e6:.1f} {idle / 1024:.1f} {peak / 1024:.1f}")


def raw_sequential(size: int) -> float:
    base = workdir()
    chunk = os.urandom(65536)
    start = time.perf_counter()
    with open(base / "seq", "wb") as fh:
        for _ in range(size // len(chunk)):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    shutil.rmtree(base)
    return size / seconds / 1e6


def bench_store() -> None:
    print("\n## Store throughput and memory, one message at a time")
    print(
        f"{'size':>6}  {'MB/s':>7}  {'raw MB/s':>8}  {'ratio':>6}  {'RSS idle MB':>11}  "
        f"{'RSS peak MB':>11}  {'growth MB':>9}"
    )
    for label, size, repeats in (("1 MB", 1 << 20, 20), ("25 MB", 25 << 20, 3)):
        rates, peaks, idles, raws = [], [], [], []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--store", str(size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            rates.append(float(out[0]))
            idles.append(float(out[1]))
            peaks.append(float(out[2]))
            raws.append(raw_sequential(size))
        rate, raw = sorted(rates)[len(rates) // 2], sorted(raws)[len(raws) // 2]
        print(
            f"{label:>6}  {rate:>7.0f}  {raw:>8.0f}  {rate / raw:>6.2f}  {max(idles):>11.1f}  "
            f"{max(peaks):>11.1f}  {max(p - i for p, i in zip(peaks, idles, strict=True)):>9.1f}"
        )
    print(
        "median of repeats; ratio = Letterbox ÷ fsync'd sequential write (higher is better); "
        "RSS = ru_maxrss of a fresh process"
    )


# -- eviction -----------------------------------------------------------------------------


def bulk_fill(drive: Drive, mailbox_ids: list[str], total: int, stored: int) -> None:
    """Index `total` deliveries directly, round-robin over mailboxes (bench-only shortcut:
    the full delivery path would take minutes; eviction cost depends on the index)."""
    conn = sqlite3.connect(drive.layout.index)
    conn.execute("PRAGMA synchronous=OFF")
    now = int(time.time()) - 86400
    meta = os.urandom(400)  # about the size of a real sealed record
    batch = 50_000
    conn.execute("BEGIN")
    for start in range(0, total, batch):
        rows = []
        for i in range(start, min(total, start + batch)):
            blob = f"{i:032x}"
            rows.append((blob, mailbox_ids[i % len(mailbox_ids)], now + i))
        conn.executemany(
            "INSERT INTO blobs (id, stored_size, cipher_hash, refs) VALUES (?, ?, zeroblob(32), 1)",
            [(r[0], stored) for r in rows],
        )
        conn.executemany(
            "INSERT INTO deliveries (id, mailbox_id, blob_id, plain_size, stored_size, received, "
            "meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(new_id(), r[1], r[0], stored - 100, stored, r[2], meta) for r in rows],
        )
    per_box = total // len(mailbox_ids)
    conn.executemany(
        "UPDATE mailboxes SET used = ?, messages = ? WHERE id = ?",
        [(per_box * stored, per_box, m) for m in mailbox_ids],
    )
    conn.execute("COMMIT")
    conn.close()


def eviction_cost(total: int) -> tuple[float, float, float]:
    """(µs per evicted message, µs per quota check, ms per delivery that evicts 100)."""
    base = workdir()
    drive = open_drive(base)
    boxes = [
        drive.create_mailbox(f"m{i}@example.org", quota=1 << 40, password="pw")[0] for i in range(4)
    ]
    stored = 10_000
    bulk_fill(drive, [b.id for b in boxes], total, stored)
    drive.close()
    drive = open_drive(base)
    target = boxes[0]
    space = drive._space  # the bench times the eviction step itself, inside a transaction
    conn = drive._conn
    # One round first, not counted: the first pages read after opening a large index
    # come from disk, which measures the disk, not the eviction.
    conn.execute("BEGIN")
    space._evict(target.id, 100 * stored, "quota", Batch())
    conn.execute("COMMIT")
    evicted = 0
    rounds = 10  # 1,000 evictions: fewer than the smallest mailbox holds
    start = time.perf_counter()
    for _ in range(rounds):
        batch = Batch()
        conn.execute("BEGIN")
        space._evict(target.id, 100 * stored, "quota", batch)
        conn.execute("COMMIT")
        evicted += len(batch.unlink)
    per_evicted = (time.perf_counter() - start) / evicted * 1e6
    checks = 2000
    start = time.perf_counter()
    for _ in range(checks):
        space.make_room(drive.mailbox(target.id), stored, Batch(), "quota")
    per_check = (time.perf_counter() - start) / checks * 1e6
    # End to end: a full mailbox whose every delivery has to evict 100 messages.
    info = drive.mailbox(target.id)
    drive.set_quota(target.id, info.used)
    body = b"Subject: x\r\n\r\n" + b"y" * (100 * stored)
    start = time.perf_counter()
    for _ in range(10):
        drive.deliver("sender@example.net", [target.address], body)
    per_delivery = (time.perf_counter() - start) / 10 * 1e3
    drive.close()
    shutil.rmtree(base)
    return per_evicted, per_check, per_delivery


def bench_eviction() -> None:
    print("\n## Eviction (4 mailboxes, deliveries spread evenly)")
    print(
        f"{'deliveries':>10}  {'µs/evicted':>10}  {'µs/quota check':>14}  "
        f"{'ms/delivery evicting ~100':>25}"
    )
    for total in (10_000, 1_000_000):
        evict, check, delivery = eviction_cost(total)
        print(f"{total:>10}  {evict:>10.1f}  {check:>14.1f}  {delivery:>25.1f}")
    print("aim: ≤ 1 ms (1000 µs) per evicted message, flat in the number of deliveries")


def main() -> None:
    # The GIL switch interval `letterbox run` uses: writer threads and the committer
    # hand the GIL back and forth on every delivery, as the event loop does there.
    sys.setswitchinterval(SWITCH_INTERVAL)
    print(f"machine: {os.cpu_count()} cores, disk under {OUT}")
    bench_commit_rate()
    bench_store()
    bench_eviction()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--store":
        child_store(int(sys.argv[2]))
    else:
        main()

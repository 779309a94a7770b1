"""Child process for the crash test: commits deliveries until it is killed.

After each commit returns it prints `stored <delivery id> <seed> <size>`, and after
each delete `deleted <delivery id>` (announced by `deleting <id>` before it
starts, since a kill may land in between), flushing at once: every printed line is a
promise the drive made, which the parent checks after a SIGKILL.
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive

from tests.helpers import FAST_ARGON2

out_lock = threading.Lock()


def body(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def say(line: str) -> None:
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def writer(drive: Drive, address: str, mailbox_id: str, first_seed: int) -> None:
    rng = random.Random(first_seed)
    seed = first_seed
    while True:
        seed += 1
        size = rng.choice([0, 100, 2048, 65536, 65537, rng.randrange(300_000)])
        delivery = drive.begin("crash@example.net")
        delivery.add_recipient(address)
        data = body(seed, size)
        for pos in range(0, len(data), 8192):
            delivery.write(data[pos : pos + 8192])
        [delivery_id] = delivery.commit()
        say(f"stored {delivery_id} {seed} {size}")
        if rng.random() < 0.15:
            victims = [d.id for d in drive.list(mailbox_id)[:2]]
            for v in victims:
                say(f"deleting {v}")
            drive.delete(mailbox_id, victims)
            for v in victims:
                say(f"deleted {v}")


def main() -> None:
    data_dir, address, seed, sync = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    drive = Drive.open(
        data_dir / "drive",
        BoxKeys.load_or_create(data_dir),
        settings=DriveSettings(reserve=Size(0), sync=sync),
        limits=FAST_ARGON2,
    )
    mailbox = drive.find_mailbox(address)
    assert mailbox is not None
    say("ready")
    threads = [
        threading.Thread(
            target=writer, args=(drive, address, mailbox.id, seed + i * 1_000_000), daemon=True
        )
        for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()

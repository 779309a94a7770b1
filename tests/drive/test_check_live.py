"""`drive check` inside a box that keeps committing: one consistent snapshot, no false
damage (ISSUE-10 §1: totals and reference counts read at different moments disagreed
in about half of the runs under load)."""

from __future__ import annotations

import threading
from pathlib import Path

from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive
from letterbox.drive.check import check_drive

from tests.helpers import FAST_ARGON2, PASSWORD, message


def test_a_live_check_sees_one_snapshot_while_mail_comes_and_goes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keys = BoxKeys.load_or_create(data_dir)
    drive = Drive.open(
        data_dir / "drive", keys, settings=DriveSettings(reserve=Size(0)), limits=FAST_ARGON2
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    with drive:
        anna, _ = drive.create_mailbox("anna@example.org", quota=1 << 40, password=PASSWORD)
        ben, _ = drive.create_mailbox("ben@example.org", quota=1 << 40, password=PASSWORD)
        for n in range(20):
            drive.deliver("x@example.net", [anna.address, ben.address], message(n, 3000))

        def churn() -> None:
            """Deliver to both (shared blobs) and delete the oldest, as POP3 does."""
            n = 1000
            try:
                while not stop.is_set():
                    n += 1
                    drive.deliver("x@example.net", [anna.address, ben.address], message(n, 500))
                    for mailbox in (anna, ben):
                        oldest = drive.list(mailbox.id)[:2]
                        drive.delete(mailbox.id, [d.id for d in oldest])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=churn) for _ in range(2)]
        for w in workers:
            w.start()
        reports = []
        try:
            for _ in range(40):
                reports.append(check_drive(drive.layout.root, keys, live=True))
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert errors == []
        damaged = [r.render() for r in reports if not r.ok]
        assert damaged == [], damaged[0]
        assert all("checked while the box is running" in r.render() for r in reports)
    final = check_drive(data_dir / "drive", keys)
    assert final.ok and not final.warnings, final.render()

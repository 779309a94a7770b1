"""What an attacker holding the drive can read: nothing but ids, sizes, times and flags."""

from __future__ import annotations

from pathlib import Path

from letterbox.drive import Drive

from tests.helpers import PASSWORD

SECRETS = [
    "zebrafinch-household.example",  # the household's domain
    "marguerite.okonkwo",  # a person's address local part
    "quartermaster-vole@sender.example",  # a sender
    "Subject line about the pelican budget",
    "The vault combination is 31-41-59",
    "Grüße vom Überlinger Seeufer",  # non-ASCII
    "<unique-message-id-8675309@sender.example>",
]


def scan(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n!r}" for n in needles if n in data]
    return hits


def needles() -> list[bytes]:
    out = []
    for s in SECRETS:
        for variant in (s, s.lower(), s.upper()):
            out += [variant.encode(), variant.encode("utf-16-le")]
    return out


def test_no_plaintext_reaches_the_drive(open_drive, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    drive: Drive = open_drive()
    anna, _ = drive.create_mailbox(
        "marguerite.okonkwo@zebrafinch-household.example", quota=60_000, password=PASSWORD
    )
    ben, _ = drive.create_mailbox(
        "ben@zebrafinch-household.example", quota=1 << 30, password=PASSWORD
    )
    for n in range(12):
        msg = (
            "From: Quartermaster Vole <quartermaster-vole@sender.example>\r\n"
            "To: marguerite.okonkwo@zebrafinch-household.example\r\n"
            f"Subject: Subject line about the pelican budget {n}\r\n"
            "Message-ID: <unique-message-id-8675309@sender.example>\r\n\r\n"
            "The vault combination is 31-41-59\r\nGrüße vom Überlinger Seeufer\r\n"
            + "padding line\r\n"
            * 400
        ).encode()
        drive.deliver("quartermaster-vole@sender.example", [anna.address, ben.address], msg)
    # Evictions happened (and a notice naming the address was written, encrypted).
    assert drive.evictions(anna.id)
    root = data_dir / "drive"
    assert scan(root, needles()) == []  # while open, WAL included
    drive.close()
    assert scan(root, needles()) == []  # after a clean close and checkpoint

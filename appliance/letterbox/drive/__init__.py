"""The drive: everything that holds mail, on the household's USB drive (or a directory).

Protocol code imports from here only; see store.py for the interface and its
durability promises, docs/format.md for the bytes on disk, and docs/design.md,
"The drive" for how the parts fit.

store.py      Drive: the interface protocols use; mailboxes, delivery, reading, recovery
delivery.py   one message on its way in (Delivery, SpillBuffer) and on its way out (Message)
committer.py  the committer thread: pipelined group commit, one sync per batch
space.py      quotas, the free-space reserve, eviction, retention (inside index transactions)
notice.py     the eviction notice left in a mailbox
headers.py    the five headers sealed metadata carries, picked as the message streams (pure)
index.py      the SQLite index: schema and connections
layout.py     where things are on a drive; the DRIVE identity file
check.py      `letterbox drive check`: verify a drive without changing a byte
records.py    plain values handed to protocols and the CLI
errors.py     what the drive refuses, as exception types protocols map to reply codes
"""

from letterbox.drive.delivery import Delivery, Message
from letterbox.drive.errors import (
    DriveError,
    DriveFormatError,
    DriveInUse,
    DriveUnavailable,
    MailboxExists,
    MailboxNotFound,
    MessageDamaged,
    MessageTooLarge,
    StorageFull,
)
from letterbox.drive.records import (
    DeliveryInfo,
    EvictionRecord,
    MailboxInfo,
    RecoveryReport,
    SealedDelivery,
    normalize_address,
)
from letterbox.drive.store import Drive

__all__ = [
    "Delivery",
    "DeliveryInfo",
    "Drive",
    "DriveError",
    "DriveFormatError",
    "DriveInUse",
    "DriveUnavailable",
    "EvictionRecord",
    "MailboxExists",
    "MailboxInfo",
    "MailboxNotFound",
    "Message",
    "MessageDamaged",
    "MessageTooLarge",
    "RecoveryReport",
    "SealedDelivery",
    "StorageFull",
    "normalize_address",
]

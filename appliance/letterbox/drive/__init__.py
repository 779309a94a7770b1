"""The drive: everything that holds mail, on the household's USB drive (or a directory).

Protocol code imports from here only; see store.py for the interface and its
durability promises, and docs/format.md for the bytes on disk.
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

"""What the drive refuses, as exception types the protocols map to their reply codes.

The drive says *what* happened; SMTP and POP3 decide how to say it on the wire
(their reply tables map these classes), so no storage detail leaks into protocol
code and no protocol detail into storage.
"""

from __future__ import annotations


class DriveError(Exception):
    """Base of every drive refusal. The message is written for a person."""


class DriveUnavailable(DriveError):
    """The drive is offline or failing: a temporary condition (SMTP 451 4.3.0)."""


class DriveInUse(DriveUnavailable):
    """Another Drive (another process, or another open in this one) has the drive
    open: it holds the drive's LOCK, and only the holder may write or recover it."""


class DriveFormatError(DriveError):
    """Not a Letterbox drive, a newer format, a damaged index, or another box's drive."""


class MailboxNotFound(DriveError):
    """No mailbox has this address (SMTP 550 5.1.1)."""


class MailboxExists(DriveError):
    """A mailbox with this address exists already."""


class MessageTooLarge(DriveError):
    """Larger than a recipient's whole quota: it can never fit (SMTP 552 5.2.2)."""


class StorageFull(DriveError):
    """Cannot fit even after eviction, e.g. the drive's reserve (SMTP 452 4.3.1)."""


class MessageDamaged(DriveError):
    """A stored message or its metadata failed verification on reading."""

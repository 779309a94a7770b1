"""Plain values the drive hands to protocols and the CLI: no behaviour, no storage."""

from __future__ import annotations

from dataclasses import dataclass


def normalize_address(address: str) -> str:
    """The lookup form of an address: trimmed, angle brackets off, case folded.

    Real mail systems treat local parts case-insensitively in practice, and a
    household would be surprised if Anna@ and anna@ were different people.
    """
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, sep, domain = addr.rpartition("@")
    if not sep or not local or not domain or any(c.isspace() for c in addr):
        raise ValueError(f"not a mail address: {address!r}")
    return f"{local.lower()}@{domain.lower().rstrip('.')}"


@dataclass(frozen=True)
class MailboxInfo:
    id: str
    address: str
    public_key: bytes
    quota: int
    used: int
    messages: int
    end_to_end: bool
    auth_key: bytes | None = None  # end-to-end mailboxes: the owner's Ed25519 identity key

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class DeliveryInfo:
    id: str
    plain_size: int
    stored_size: int
    received: int
    retrieved: bool


@dataclass(frozen=True)
class EvictionRecord:
    delivery_id: str
    at: int
    received: int
    plain_size: int
    reason: str


@dataclass
class RecoveryReport:
    """What open() had to clean up; empty after a clean shutdown."""

    crashed: bool = False
    temporaries: int = 0
    orphan_blobs: int = 0
    orphan_keyrings: int = 0
    rows_without_blob: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.temporaries or self.orphan_blobs or self.orphan_keyrings or self.rows_without_blob
        )


@dataclass(frozen=True)
class SealedDelivery:
    """What an end-to-end reader gets per message: ids, sizes, time and sealed metadata."""

    id: str
    blob_id: str
    plain_size: int
    stored_size: int
    received: int
    cipher_hash: bytes
    meta: bytes

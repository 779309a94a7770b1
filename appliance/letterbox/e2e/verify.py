"""What the person's computer checks before it believes or acknowledges anything.

For each message the box lists (docs/format.md §5, "A reader must"):

1. open the sealed metadata with the person's key and verify the box's signature
   with the box key from the key file (not one the server names);
2. require its delivery and blob ids, hash and sizes to be the listing's;
3. download the ciphertext and require its size and BLAKE2b-256 to be the signed ones;
4. decrypt, every chunk authenticated (crypto.read_blob, with the signed header
   and hash), and require the plaintext size to be the signed one.

Any failure is a `Refused`: the message is not written, served or acknowledged, and
stays on the box for a person to look at.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

from nacl.signing import VerifyKey

from letterbox import crypto
from letterbox.e2e.api_client import Listed


class Refused(Exception):
    """A message that failed verification: forged, swapped, tampered or damaged."""

    def __init__(self, delivery_id: str, reason: str) -> None:
        super().__init__(f"message {delivery_id}: {reason}")
        self.delivery_id = delivery_id
        self.reason = reason


class KeyFileError(Exception):
    """The key file cannot be read or unlocked; the message says why."""


class WrongPassphrase(KeyFileError):
    """The key file is fine; the passphrase is not its."""


def check_listing(
    entry: Listed, key: crypto.PersonalKey, box_key: VerifyKey
) -> crypto.DeliveryMeta:
    """Steps 1 and 2: the signed record of a listed message, or Refused."""
    try:
        meta = crypto.open_meta(entry.meta, key.secret, [box_key])
    except crypto.MetaError as exc:
        raise Refused(entry.id, str(exc)) from None
    if meta.delivery_id != entry.id or meta.blob_id != entry.blob_id:
        raise Refused(entry.id, "its signed metadata belongs to another message (swapped)")
    if (meta.cipher_hash, meta.stored_size, meta.plain_size) != (
        entry.cipher_hash,
        entry.stored_size,
        entry.plain_size,
    ):
        raise Refused(entry.id, "the box's listing disagrees with the signed metadata")
    return meta


def check_ciphertext(meta: crypto.DeliveryMeta, size: int, digest: bytes) -> None:
    """Step 3, given what the download measured."""
    if size != meta.stored_size:
        raise Refused(
            meta.delivery_id,
            f"the ciphertext is {size} bytes, the signed size is "
            f"{meta.stored_size} (tampered or truncated)",
        )
    if digest != meta.cipher_hash:
        raise Refused(
            meta.delivery_id,
            "the ciphertext hash does not match the signed one (tampered or damaged blob)",
        )


def decrypt(meta: crypto.DeliveryMeta, ciphertext: BinaryIO) -> Generator[bytes, None, None]:
    """Step 4: the plaintext in chunks from a downloaded, hash-checked ciphertext file."""
    ciphertext.seek(0)
    total = 0
    try:
        for chunk in crypto.read_blob(
            ciphertext,
            meta.blob_key,
            meta.blob_id,
            expected_hash=meta.cipher_hash,
            expected_header=meta.blob_header,
        ):
            total += len(chunk)
            if total > meta.plain_size:
                raise Refused(meta.delivery_id, "longer than its signed size")
            yield chunk
    except crypto.BlobError as exc:
        raise Refused(meta.delivery_id, str(exc)) from None
    if total != meta.plain_size:
        raise Refused(
            meta.delivery_id, f"decrypted to {total} bytes, the signed size is {meta.plain_size}"
        )


# -- key files ---------------------------------------------------------------------------


def key_file_address(path: Path) -> str:
    """The mailbox address a key file is for, without unlocking it."""
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("kind") != "letterbox-personal-key":
            raise KeyFileError(f"{path} is not a Letterbox key file")
        return str(doc["address"])
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{path} is not a Letterbox key file") from None


def unlock_key_file(path: Path, passphrase: str) -> tuple[crypto.PersonalKey, str, VerifyKey]:
    """(key, address, box verify key); Argon2id makes this slow on purpose."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    try:
        return crypto.PersonalKey.from_file(raw, passphrase)
    except crypto.WrongPassword as exc:
        raise WrongPassphrase(f"{path}: {exc}") from None
    except crypto.CryptoFailure as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def read_passphrase(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("Passphrase of the key file: ")

"""All of Letterbox's cryptography, in one place; nothing else re-implements any of it.

Three things live here, each specified byte for byte in docs/format.md:

* **Blobs**: one message, encrypted with a fresh random key as a libsodium
  secretstream (XChaCha20-Poly1305) in 64 KiB chunks, the last one tagged FINAL, so a
  reader detects truncation, reordering, alteration and a blob swapped for another.
  Writer and reader stream: a message is never whole in memory.
* **Sealed delivery metadata**: canonical bytes naming the blob, its key and hash,
  the envelope and a few headers, signed by the box's Ed25519 key (the signature also
  binds the recipient's public key and the ciphertext hash) and sealed to the
  mailbox's X25519 public key, so only the mailbox owner can read it and nobody
  holding the drive can forge or swap it.
* **Keyrings**: a mailbox's X25519 secret key, stored only wrapped: under
  Argon2id(password) and under a recovery code a person can type.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash
import nacl.utils
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

# --------------------------------------------------------------------------------------
# Errors


class CryptoFailure(Exception):
    """Base of every refusal this module makes; the message says what is wrong."""


class BlobError(CryptoFailure):
    """A blob that is not, or no longer, exactly what its writer wrote."""


class MetaError(CryptoFailure):
    """Sealed metadata that cannot be opened, is forged, or belongs elsewhere."""


class WrongPassword(CryptoFailure):
    """The password does not unwrap this mailbox's key."""


class WrongRecoveryCode(CryptoFailure):
    """The recovery code does not unwrap this mailbox's key (or is malformed)."""


class KeyringError(CryptoFailure):
    """A keyring record that is malformed or of an unknown version."""


# --------------------------------------------------------------------------------------
# Identifiers and hashing

ID_BYTES = 16  # 128-bit random identifiers: blobs, deliveries, mailboxes.


def new_id() -> str:
    """A random 128-bit identifier as 32 lowercase hex characters."""
    return nacl.utils.random(ID_BYTES).hex()


def _id_bytes(ident: str) -> bytes:
    raw = bytes.fromhex(ident)
    if len(raw) != ID_BYTES:
        raise ValueError(f"not a 128-bit id: {ident!r}")
    return raw


def hasher() -> hashlib.blake2b:
    """The ciphertext hash: BLAKE2b-256 over every byte of a blob file."""
    return hashlib.blake2b(digest_size=32)


# --------------------------------------------------------------------------------------
# Blobs

BLOB_MAGIC = b"LBXB"
BLOB_VERSION = 1
BLOB_PREFIX = BLOB_MAGIC + bytes([BLOB_VERSION, 0, 0, 0])  # 8 bytes
CHUNK_SIZE = 64 * 1024
KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def new_blob_key() -> bytes:
    return sodium.crypto_secretstream_xchacha20poly1305_keygen()


def blob_stored_size(plain_size: int) -> int:
    """Bytes on disk for a message of `plain_size` bytes (prefix, header, chunk tags)."""
    chunks = max(1, -(-plain_size // CHUNK_SIZE))
    return len(BLOB_PREFIX) + HEADER_BYTES + plain_size + chunks * ABYTES


@dataclass(frozen=True)
class BlobSummary:
    """What a finished blob is: the facts that sealed metadata pins down."""

    header: bytes
    plain_size: int
    stored_size: int
    cipher_hash: bytes


class BlobWriter:
    """Encrypts a message into `out` as it arrives, holding at most one chunk.

    The associated data of every chunk is the prefix and the blob id, so a blob
    renamed to another id, or with its version byte changed, does not decrypt.
    """

    def __init__(self, out: BinaryIO, key: bytes, blob_id: str) -> None:
        self._out = out
        self._ad = BLOB_PREFIX + _id_bytes(blob_id)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._hash = hasher()
        self._buf = bytearray()
        self._plain = 0
        self._stored = 0
        self._finished = False
        self._emit(BLOB_PREFIX + self.header)

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self._stored += len(data)

    def _push(self, chunk: bytes | bytearray | memoryview, tag: int) -> None:
        self._emit(
            sodium.crypto_secretstream_xchacha20poly1305_push(
                self._state, bytes(chunk), self._ad, tag
            )
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise ValueError("blob already finished")
        self._plain += len(data)
        # A chunk is pushed only once more data follows it, so the FINAL chunk that
        # finish() writes is never empty unless the whole message is. Large writes
        # are encrypted straight from the caller's buffer, without staging copies.
        view = memoryview(data).cast("B")
        if len(self._buf) + len(view) <= CHUNK_SIZE:
            self._buf += view
            return
        if self._buf:
            take = CHUNK_SIZE - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            self._push(self._buf, _TAG_MESSAGE)
            self._buf = bytearray()
        while len(view) > CHUNK_SIZE:
            self._push(view[:CHUNK_SIZE], _TAG_MESSAGE)
            view = view[CHUNK_SIZE:]
        self._buf += view

    def finish(self) -> BlobSummary:
        if self._finished:
            raise ValueError("blob already finished")
        self._push(self._buf, _TAG_FINAL)
        self._buf = bytearray()
        self._finished = True
        return BlobSummary(self.header, self._plain, self._stored, self._hash.digest())


def read_blob(
    inp: BinaryIO,
    key: bytes,
    blob_id: str,
    *,
    expected_hash: bytes | None = None,
    expected_header: bytes | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext of a blob chunk by chunk, raising BlobError on any damage.

    Every chunk is authenticated before it is yielded; the FINAL tag must come last
    and be followed by nothing, so a truncated blob never passes as a short message.
    """
    prefix = inp.read(len(BLOB_PREFIX))
    if len(prefix) < len(BLOB_PREFIX) or prefix[:4] != BLOB_MAGIC:
        raise BlobError(f"blob {blob_id}: not a Letterbox blob (bad magic)")
    if prefix[4] != BLOB_VERSION:
        raise BlobError(
            f"blob {blob_id}: format version {prefix[4]} is not supported "
            f"(this Letterbox reads version {BLOB_VERSION})"
        )
    header = inp.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        raise BlobError(f"blob {blob_id}: truncated inside its header")
    if expected_header is not None and header != expected_header:
        raise BlobError(f"blob {blob_id}: header differs from the sealed metadata (swapped blob)")
    # The whole-file hash is only worth its cost when the caller must prove which
    # bytes it had (end-to-end acknowledgements, `drive check`): with the key, the
    # chunk authentication below already rejects any other or altered blob.
    digest = hasher() if expected_hash is not None else None
    if digest is not None:
        digest.update(prefix)
        digest.update(header)
    ad = prefix + _id_bytes(blob_id)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    except nacl.exceptions.CryptoError as exc:
        raise BlobError(f"blob {blob_id}: bad header ({exc})") from None
    while True:
        chunk = inp.read(CHUNK_SIZE + ABYTES)
        if not chunk:
            raise BlobError(f"blob {blob_id}: truncated (no final chunk)")
        if digest is not None:
            digest.update(chunk)
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, ad)
        except (nacl.exceptions.CryptoError, ValueError):
            raise BlobError(
                f"blob {blob_id}: chunk failed authentication "
                "(altered, reordered, truncated, or another message's blob)"
            ) from None
        if tag == _TAG_FINAL:
            if inp.read(1):
                raise BlobError(f"blob {blob_id}: data after the final chunk")
            if digest is not None and digest.digest() != expected_hash:
                raise BlobError(f"blob {blob_id}: ciphertext hash mismatch")
            if plain:
                yield plain
            return
        if tag != _TAG_MESSAGE or len(chunk) != CHUNK_SIZE + ABYTES:
            raise BlobError(f"blob {blob_id}: unexpected chunk tag or size")
        yield plain


def hash_file(inp: BinaryIO) -> tuple[int, bytes]:
    """Size and ciphertext hash of a stored blob, without any key (for `drive check`)."""
    digest = hasher()
    size = 0
    while chunk := inp.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.digest()


# --------------------------------------------------------------------------------------
# Sealed delivery metadata

META_VERSION = 1
_META_DOMAIN = b"letterbox-meta-v1\x00"
_SIG_BYTES = 64


@dataclass(frozen=True)
class DeliveryMeta:
    """Everything about one delivery that only the mailbox owner may read."""

    delivery_id: str
    blob_id: str
    blob_key: bytes
    blob_header: bytes
    plain_size: int
    stored_size: int
    cipher_hash: bytes
    received: int  # Unix time, seconds
    mail_from: str
    rcpt_to: str
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "mail"  # "mail", or "notice" for messages the box itself writes

    def canonical(self) -> bytes:
        """Deterministic bytes: sorted-key compact JSON, binary fields in hex, UTF-8."""
        doc = {
            "v": META_VERSION,
            "delivery_id": self.delivery_id,
            "blob_id": self.blob_id,
            "blob_key": self.blob_key.hex(),
            "blob_header": self.blob_header.hex(),
            "plain_size": self.plain_size,
            "stored_size": self.stored_size,
            "cipher_hash": self.cipher_hash.hex(),
            "received": self.received,
            "mail_from": self.mail_from,
            "rcpt_to": self.rcpt_to,
            "headers": dict(sorted(self.headers.items())),
            "kind": self.kind,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_canonical(cls, raw: bytes) -> DeliveryMeta:
        try:
            doc = json.loads(raw.decode())
            if doc.get("v") != META_VERSION:
                raise MetaError(f"metadata version {doc.get('v')!r} is not supported")
            return cls(
                delivery_id=doc["delivery_id"],
                blob_id=doc["blob_id"],
                blob_key=bytes.fromhex(doc["blob_key"]),
                blob_header=bytes.fromhex(doc["blob_header"]),
                plain_size=int(doc["plain_size"]),
                stored_size=int(doc["stored_size"]),
                cipher_hash=bytes.fromhex(doc["cipher_hash"]),
                received=int(doc["received"]),
                mail_from=doc["mail_from"],
                rcpt_to=doc["rcpt_to"],
                headers=dict(doc["headers"]),
                kind=doc["kind"],
            )
        except MetaError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MetaError(f"metadata is malformed ({exc})") from None


def _meta_signed_bytes(recipient_pk: bytes, cipher_hash: bytes, canonical: bytes) -> bytes:
    return _META_DOMAIN + recipient_pk + cipher_hash + canonical


def seal_meta(meta: DeliveryMeta, signer: SigningKey, recipient_pk: bytes) -> bytes:
    """Sign `meta` for `recipient_pk` with the box key, then seal it to that key."""
    canonical = meta.canonical()
    sig = signer.sign(_meta_signed_bytes(recipient_pk, meta.cipher_hash, canonical)).signature
    return SealedBox(PublicKey(recipient_pk)).encrypt(sig + canonical)


def open_meta(
    sealed: bytes, secret_key: PrivateKey, trusted_signers: Iterable[VerifyKey]
) -> DeliveryMeta:
    """Unseal and verify metadata; the caller still checks ids against the index row."""
    try:
        record = SealedBox(secret_key).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise MetaError("metadata does not open with this mailbox's key") from None
    if len(record) <= _SIG_BYTES:
        raise MetaError("metadata record is too short")
    sig, canonical = record[:_SIG_BYTES], record[_SIG_BYTES:]
    meta = DeliveryMeta.from_canonical(canonical)
    signed = _meta_signed_bytes(bytes(secret_key.public_key), meta.cipher_hash, canonical)
    for signer in trusted_signers:
        try:
            signer.verify(signed, sig)
            return meta
        except nacl.exceptions.BadSignatureError:
            continue
    raise MetaError("metadata signature does not verify (forged, altered or foreign record)")


# --------------------------------------------------------------------------------------
# Small sealed values (addresses on the drive, sealed to the box's X25519 key)


def seal_to(public_key: PublicKey, data: bytes) -> bytes:
    return SealedBox(public_key).encrypt(data)


def unseal(secret_key: PrivateKey, sealed: bytes) -> bytes:
    try:
        return SealedBox(secret_key).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise MetaError("sealed value does not open with this key") from None


# --------------------------------------------------------------------------------------
# Keyrings

KEYRING_VERSION = 1
_KEYRING_AD = b"letterbox-keyring-v1\x00"
_RECOVERY_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_RECOVERY_SYMBOLS = 32  # 160 bits
_RECOVERY_GROUP = 4
_RECOVERY_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class Argon2Limits:
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def new_recovery_code() -> str:
    """160 random bits as 8 groups of 4 Crockford base32 symbols."""
    symbols = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_SYMBOLS))
    return "-".join(
        symbols[i : i + _RECOVERY_GROUP] for i in range(0, _RECOVERY_SYMBOLS, _RECOVERY_GROUP)
    )


def _recovery_key(code: str) -> bytes:
    """The wrapping key for a recovery code; typing slips (case, O/0, I/L/1) are forgiven.

    The code already carries 160 random bits, so a fast keyed hash is enough; a
    password KDF would add nothing but delay.
    """
    cleaned = "".join(code.split()).replace("-", "").upper().translate(_RECOVERY_ALIASES)
    if len(cleaned) != _RECOVERY_SYMBOLS or any(c not in _RECOVERY_ALPHABET for c in cleaned):
        raise WrongRecoveryCode(
            "a recovery code is 32 letters and digits in groups of four, like ABCD-EFGH-..."
        )
    return hashlib.blake2b(
        cleaned.encode(), digest_size=KEY_BYTES, person=b"lbx-recovery-v1"
    ).digest()


def _wrap(key: bytes, slot: str, mailbox_id: str, pk: bytes, secret: bytes) -> dict[str, str]:
    nonce = nacl.utils.random(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    ad = _KEYRING_AD + slot.encode() + b"\x00" + mailbox_id.encode() + pk
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(secret, ad, nonce, key)
    return {"nonce": nonce.hex(), "ciphertext": ct.hex()}


def _unwrap(key: bytes, slot: str, mailbox_id: str, pk: bytes, record: dict[str, str]) -> bytes:
    ad = _KEYRING_AD + slot.encode() + b"\x00" + mailbox_id.encode() + pk
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        bytes.fromhex(record["ciphertext"]), ad, bytes.fromhex(record["nonce"]), key
    )


def _password_key(password: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        KEY_BYTES, password.encode(), salt, opslimit=opslimit, memlimit=memlimit
    )


@dataclass(frozen=True)
class Keyring:
    """A mailbox's key pair as stored: the public key, and the secret key only wrapped.

    An end-to-end mailbox has neither slot: the box keeps just the public key.
    """

    mailbox_id: str
    public_key: bytes
    password_slot: dict[str, object] | None
    recovery_slot: dict[str, str] | None

    @property
    def end_to_end(self) -> bool:
        return self.password_slot is None

    def to_json(self) -> bytes:
        doc = {
            "v": KEYRING_VERSION,
            "mailbox_id": self.mailbox_id,
            "public_key": self.public_key.hex(),
            "password": self.password_slot,
            "recovery": self.recovery_slot,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Keyring:
        try:
            doc = json.loads(raw)
            if doc.get("v") != KEYRING_VERSION:
                raise KeyringError(f"keyring version {doc.get('v')!r} is not supported")
            pk = bytes.fromhex(doc["public_key"])
            if len(pk) != 32:
                raise KeyringError("keyring public key has the wrong length")
            return cls(doc["mailbox_id"], pk, doc["password"], doc["recovery"])
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"keyring is malformed ({exc})") from None

    # -- making and unwrapping ---------------------------------------------------------

    @classmethod
    def create(
        cls, mailbox_id: str, password: str, limits: Argon2Limits
    ) -> tuple[Keyring, PrivateKey, str]:
        """A new key pair wrapped under `password` and a fresh recovery code."""
        secret = PrivateKey.generate()
        ring = cls(mailbox_id, bytes(secret.public_key), None, None)
        ring = ring.with_password(secret, password, limits)
        ring, code = ring.with_new_recovery_code(secret)
        return ring, secret, code

    @classmethod
    def public_only(cls, mailbox_id: str, public_key: bytes) -> Keyring:
        return cls(mailbox_id, public_key, None, None)

    def _check(self, secret: bytes) -> PrivateKey:
        key = PrivateKey(secret)
        if bytes(key.public_key) != self.public_key:
            raise KeyringError("unwrapped secret key does not match the public key")
        return key

    def unlock(self, password: str) -> PrivateKey:
        """Unwrap with the password. Argon2id is slow on purpose: call it off the loop."""
        slot = self.password_slot
        if slot is None:
            raise WrongPassword("this mailbox is end-to-end: the box holds no secret key")
        try:
            key = _password_key(
                password,
                bytes.fromhex(str(slot["salt"])),
                int(str(slot["opslimit"])),
                int(str(slot["memlimit"])),
            )
            return self._check(_unwrap(key, "password", self.mailbox_id, self.public_key, slot))  # type: ignore[arg-type]
        except nacl.exceptions.CryptoError:
            raise WrongPassword("wrong password") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringError(f"keyring password slot is malformed ({exc})") from None

    def recover(self, code: str) -> PrivateKey:
        if self.recovery_slot is None:
            raise WrongRecoveryCode("this mailbox has no recovery code on the box")
        key = _recovery_key(code)
        try:
            return self._check(
                _unwrap(key, "recovery", self.mailbox_id, self.public_key, self.recovery_slot)
            )
        except nacl.exceptions.CryptoError:
            raise WrongRecoveryCode("wrong recovery code") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringError(f"keyring recovery slot is malformed ({exc})") from None

    # -- rewrapping (mail is untouched: it is sealed to the public key, which stays) ---

    def with_password(self, secret: PrivateKey, password: str, limits: Argon2Limits) -> Keyring:
        if not password:
            raise ValueError("the password must not be empty")
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        key = _password_key(password, salt, limits.opslimit, limits.memlimit)
        slot: dict[str, object] = {
            "kdf": "argon2id13",
            "salt": salt.hex(),
            "opslimit": limits.opslimit,
            "memlimit": limits.memlimit,
            **_wrap(key, "password", self.mailbox_id, self.public_key, bytes(secret)),
        }
        return Keyring(self.mailbox_id, self.public_key, slot, self.recovery_slot)

    def with_new_recovery_code(self, secret: PrivateKey) -> tuple[Keyring, str]:
        code = new_recovery_code()
        key = _recovery_key(code)
        slot = _wrap(key, "recovery", self.mailbox_id, self.public_key, bytes(secret))
        return Keyring(self.mailbox_id, self.public_key, self.password_slot, slot), code


# --------------------------------------------------------------------------------------
# Personal keys of end-to-end mailboxes (they live on the person's computer, not the box)

PERSONAL_KEY_VERSION = 1
_PERSONAL_AD = b"letterbox-personal-key-v1\x00"
_API_AUTH_DOMAIN = b"letterbox-api-auth-v1\x00"
_API_ACK_DOMAIN = b"letterbox-api-ack-v1\x00"


def x25519_from_identity(identity_key: bytes) -> bytes:
    """The X25519 public key (deliveries are sealed to it) of an Ed25519 identity key."""
    try:
        return bytes(VerifyKey(identity_key).to_curve25519_public_key())
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise ValueError("not an Ed25519 identity key") from None


@dataclass(frozen=True)
class PersonalKey:
    """One Ed25519 key: it signs the drive API's challenges, and its X25519 twin
    (libsodium's ed25519→curve25519 conversion) opens the sealed metadata. The box
    keeps only the public halves."""

    signing: SigningKey

    @classmethod
    def generate(cls) -> PersonalKey:
        return cls(SigningKey.generate())

    @property
    def identity_key(self) -> bytes:
        return bytes(self.signing.verify_key)

    @property
    def secret(self) -> PrivateKey:
        return self.signing.to_curve25519_private_key()

    def sign_challenge(self, address: str, challenge: bytes) -> bytes:
        return self.signing.sign(_api_auth_bytes(address, challenge)).signature

    def sign_ack(self, address: str, delivery_id: str, cipher_hash: bytes) -> bytes:
        """Consent to delete one delivery, whose ciphertext (by hash) is safely kept."""
        return self.signing.sign(_api_ack_bytes(address, delivery_id, cipher_hash)).signature

    def to_file(
        self, passphrase: str, address: str, box_verify_key: bytes, limits: Argon2Limits
    ) -> bytes:
        """The key file for the person's computer, wrapped under a passphrase."""
        if not passphrase:
            raise ValueError("the passphrase must not be empty")
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        key = _password_key(passphrase, salt, limits.opslimit, limits.memlimit)
        nonce = nacl.utils.random(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
        ad = _PERSONAL_AD + address.encode() + b"\x00" + box_verify_key
        ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(self.signing), ad, nonce, key)
        doc = {
            "v": PERSONAL_KEY_VERSION,
            "kind": "letterbox-personal-key",
            "address": address,
            "box_verify_key": box_verify_key.hex(),
            "kdf": "argon2id13",
            "salt": salt.hex(),
            "opslimit": limits.opslimit,
            "memlimit": limits.memlimit,
            "nonce": nonce.hex(),
            "ciphertext": ct.hex(),
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_file(cls, raw: bytes, passphrase: str) -> tuple[PersonalKey, str, VerifyKey]:
        """(key, mailbox address, the box's verify key) from a key file."""
        try:
            doc = json.loads(raw)
            if doc.get("kind") != "letterbox-personal-key":
                raise KeyringError("not a Letterbox personal key file")
            if doc.get("v") != PERSONAL_KEY_VERSION:
                raise KeyringError(f"personal key file version {doc.get('v')!r} is not supported")
            address, box_key = str(doc["address"]), bytes.fromhex(doc["box_verify_key"])
            key = _password_key(
                passphrase, bytes.fromhex(doc["salt"]), int(doc["opslimit"]), int(doc["memlimit"])
            )
            ad = _PERSONAL_AD + address.encode() + b"\x00" + box_key
            nonce, ct = bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["ciphertext"])
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"personal key file is malformed ({exc})") from None
        try:
            seed = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, ad, nonce, key)
        except nacl.exceptions.CryptoError:
            raise WrongPassword("wrong passphrase for this key file") from None
        return cls(SigningKey(seed)), address, VerifyKey(box_key)


def _api_auth_bytes(address: str, challenge: bytes) -> bytes:
    return _API_AUTH_DOMAIN + address.encode() + b"\x00" + challenge


def verify_challenge(identity_key: bytes, address: str, challenge: bytes, signature: bytes) -> bool:
    """Whether `signature` is the mailbox owner's answer to the box's `challenge`."""
    try:
        VerifyKey(identity_key).verify(_api_auth_bytes(address, challenge), signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


def _api_ack_bytes(address: str, delivery_id: str, cipher_hash: bytes) -> bytes:
    if len(cipher_hash) != 32:
        raise ValueError("a ciphertext hash is 32 bytes")
    return _API_ACK_DOMAIN + address.encode() + b"\x00" + _id_bytes(delivery_id) + cipher_hash


def verify_ack(
    identity_key: bytes, address: str, delivery_id: str, cipher_hash: bytes, signature: bytes
) -> bool:
    """Whether the mailbox owner signed the deletion of this delivery with this hash.

    Replaying such a signature only repeats a deletion its owner asked for, so the
    drive API needs no nonce for it; a stolen session token alone deletes nothing.
    """
    try:
        VerifyKey(identity_key).verify(_api_ack_bytes(address, delivery_id, cipher_hash), signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


# -- the setup page's admin password ---------------------------------------------------


def hash_password(password: str, limits: Argon2Limits) -> str:
    """An Argon2id verifier string ($argon2id$v=19$...), the format libsodium and
    provisioning files share, so a maker can put a precomputed hash in letterbox.toml."""
    return nacl.pwhash.argon2id.str(
        password.encode(), opslimit=limits.opslimit, memlimit=limits.memlimit
    ).decode()


def is_password_hash(value: str) -> bool:
    """True for a string `verify_password` can check (not whether it is strong)."""
    return value.startswith("$argon2id$v=19$m=") and value.count("$") == 5


def verify_password(stored_hash: str, password: str) -> bool:
    """Constant-time check of a password against `hash_password`'s output."""
    try:
        return nacl.pwhash.verify(stored_hash.encode(), password.encode())
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False

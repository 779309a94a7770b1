"""letterbox.crypto: blobs, sealed delivery metadata and keyrings, by property and example.

Argon2id runs at its minimum here (tests.helpers.FAST_ARGON2); one test uses the
INTERACTIVE defaults to show that the real limits work.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import random
import re
import string
import tracemalloc
from dataclasses import replace
from pathlib import Path

import nacl.pwhash
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from letterbox import crypto
from letterbox.crypto import (
    ABYTES,
    BLOB_PREFIX,
    CHUNK_SIZE,
    HEADER_BYTES,
    Argon2Limits,
    BlobError,
    BlobWriter,
    DeliveryMeta,
    Keyring,
    KeyringError,
    MetaError,
    WrongPassword,
    WrongRecoveryCode,
    blob_stored_size,
    hash_file,
    new_blob_key,
    new_id,
    open_meta,
    read_blob,
    seal_meta,
)
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey

from tests.helpers import FAST_ARGON2, PASSWORD

C = CHUNK_SIZE
START = len(BLOB_PREFIX) + HEADER_BYTES  # offset of the first ciphertext chunk: 32
STORED_CHUNK = C + ABYTES  # bytes of a full ciphertext chunk on disk
SPECIAL_SIZES = [0, 1, 2, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, 3 * C - 1, 3 * C, 3 * C + 1]


# --------------------------------------------------------------------------------------
# Helpers


def plaintext(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def encrypt(
    data: bytes, pieces: list[bytes] | None = None
) -> tuple[bytes, bytes, str, crypto.BlobSummary]:
    """(blob bytes, key, blob id, summary) of `data`, written as `pieces` if given."""
    key, blob_id, out = new_blob_key(), new_id(), io.BytesIO()
    writer = BlobWriter(out, key, blob_id)
    for piece in pieces if pieces is not None else [data]:
        writer.write(piece)
    summary = writer.finish()
    return out.getvalue(), key, blob_id, summary


def drain(blob: bytes, key: bytes, blob_id: str, **expect: bytes) -> tuple[bytes, BlobError | None]:
    """Everything read_blob yields before it stops, and the BlobError it stopped with."""
    got = []
    try:
        for chunk in read_blob(io.BytesIO(blob), key, blob_id, **expect):
            assert 0 < len(chunk) <= C
            got.append(chunk)
    except BlobError as exc:
        return b"".join(got), exc
    return b"".join(got), None


def chunk_bounds(blob: bytes) -> list[tuple[int, int]]:
    """[start, end) of each ciphertext chunk of a well-formed blob."""
    return [(p, min(p + STORED_CHUNK, len(blob))) for p in range(START, len(blob), STORED_CHUNK)]


def chunk_index(offset: int) -> int:
    """The ciphertext chunk an offset falls in (the prefix and header count as chunk 0)."""
    return max(0, offset - START) // STORED_CHUNK


# A 2.5-chunk message encrypted once: the tampering properties all damage copies of it.
THREE = plaintext(2 * C + C // 2, seed=3)
THREE_BLOB, THREE_KEY, THREE_ID, THREE_SUMMARY = encrypt(THREE)
# A message of exactly two chunks: its FINAL chunk is a full one.
TWO = plaintext(2 * C, seed=2)
TWO_BLOB, TWO_KEY, TWO_ID, TWO_SUMMARY = encrypt(TWO)


# --------------------------------------------------------------------------------------
# Blobs: round trips


@st.composite
def message_and_pieces(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    size = draw(st.one_of(st.sampled_from(SPECIAL_SIZES), st.integers(0, 3 * C + 100)))
    data = plaintext(size, draw(st.integers(0, 2**32)))
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=12)))
    bounds = [0, *cuts, size]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=60, deadline=None)
@given(message_and_pieces())
@example((b"", [b""]))
@example((b"", []))
@example((b"x", [b"x"]))
@example((bytes(C), [bytes(C)]))
@example((bytes(C), [b"", bytes(C - 1), b"\0", b""]))
@example((bytes(2 * C), [bytes(C), bytes(C)]))
@example((bytes(C + 1), [bytes(C), b"\0"]))
def test_blob_round_trip_any_size_any_split(case: tuple[bytes, list[bytes]]) -> None:
    data, pieces = case
    assert b"".join(pieces) == data
    blob, key, blob_id, summary = encrypt(data, pieces)
    n = len(data)
    assert len(blob) == blob_stored_size(n) == summary.stored_size
    assert summary.plain_size == n
    assert hash_file(io.BytesIO(blob)) == (len(blob), summary.cipher_hash)
    assert summary.cipher_hash == hashlib.blake2b(blob, digest_size=32).digest()
    assert blob[:8] == b"LBXB\x01\x00\x00\x00" and blob[8:START] == summary.header
    chunks = list(
        read_blob(
            io.BytesIO(blob),
            key,
            blob_id,
            expected_hash=summary.cipher_hash,
            expected_header=summary.header,
        )
    )
    assert b"".join(chunks) == data
    # Full chunks while more than a chunk remains, then one last chunk of 1..C bytes.
    full = max(0, math.ceil(n / C) - 1)
    assert [len(c) for c in chunks] == [C] * full + ([n - full * C] if n else [])


@pytest.mark.parametrize("size", SPECIAL_SIZES)
def test_stored_size_formula_at_chunk_boundaries(size: int) -> None:
    blob, _, _, summary = encrypt(plaintext(size))
    chunks = max(1, math.ceil(size / C))
    assert len(blob) == summary.stored_size == 8 + 24 + size + 17 * chunks == blob_stored_size(size)
    assert len(chunk_bounds(blob)) == chunks


def test_worked_example_sizes_in_format_doc() -> None:
    """docs/format.md quotes these numbers."""
    assert blob_stored_size(0) == 49
    assert blob_stored_size(100) == 149
    assert blob_stored_size(65_536) == 65_585
    assert blob_stored_size(65_537) == 65_603


def test_writer_refuses_use_after_finish() -> None:
    writer = BlobWriter(io.BytesIO(), new_blob_key(), new_id())
    writer.write(b"abc")
    writer.finish()
    with pytest.raises(ValueError, match="finished"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="finished"):
        writer.finish()


def test_same_message_encrypts_differently_each_time() -> None:
    key, blob_id = new_blob_key(), new_id()
    outs = []
    for _ in range(2):
        out = io.BytesIO()
        w = BlobWriter(out, key, blob_id)
        w.write(b"hello")
        w.finish()
        outs.append(out.getvalue())
    assert outs[0] != outs[1]  # a fresh random header (nonce) per blob


# --------------------------------------------------------------------------------------
# Blobs: tampering


@settings(max_examples=80, deadline=None)
@given(st.integers(0, len(THREE_BLOB) - 1))
@example(0)
@example(START - 1)
@example(START)
@example(START + 1)
@example(START + STORED_CHUNK - 1)
@example(START + STORED_CHUNK)
@example(START + STORED_CHUNK + 1)
@example(START + 2 * STORED_CHUNK)
@example(len(THREE_BLOB) - 1)
def test_truncation_at_any_offset_is_detected(cut: int) -> None:
    got, err = drain(THREE_BLOB[:cut], THREE_KEY, THREE_ID)
    assert err is not None
    # Only chunks wholly before the cut come out, never a partial or the FINAL one.
    assert got == THREE[: chunk_index(cut) * C]


@pytest.mark.parametrize(
    ("blob", "key", "blob_id", "data"),
    [(THREE_BLOB, THREE_KEY, THREE_ID, THREE), (TWO_BLOB, TWO_KEY, TWO_ID, TWO)],
    ids=["2.5-chunks", "2-full-chunks"],
)
def test_truncation_at_chunk_boundary_drops_final(
    blob: bytes, key: bytes, blob_id: str, data: bytes
) -> None:
    last_start = chunk_bounds(blob)[-1][0]
    got, err = drain(blob[:last_start], key, blob_id)
    assert err is not None and "no final chunk" in str(err)
    assert got == data[: (len(chunk_bounds(blob)) - 1) * C]
    # Right after the header: nothing at all.
    got, err = drain(blob[:START], key, blob_id)
    assert err is not None and "no final chunk" in str(err) and got == b""


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(st.integers(0, START - 1), st.integers(0, len(THREE_BLOB) - 1)),
    st.integers(0, 7),
)
@example(4, 0)  # the version byte
@example(5, 0)  # the reserved zero bytes are authenticated too
@example(7, 7)
@example(8, 0)  # first byte of the secretstream header
@example(START - 1, 7)
@example(START, 0)
@example(START + STORED_CHUNK - 1, 3)  # last byte (MAC) of the first chunk
@example(START + STORED_CHUNK, 0)
@example(len(THREE_BLOB) - 1, 0)
def test_flipped_bit_anywhere_is_detected(offset: int, bit: int) -> None:
    damaged = bytearray(THREE_BLOB)
    damaged[offset] ^= 1 << bit
    got, err = drain(bytes(damaged), THREE_KEY, THREE_ID)
    assert err is not None
    assert got == THREE[: chunk_index(offset) * C]  # nothing of the damaged chunk or after


def test_flipped_bit_detected_by_hash_and_header_checks_before_any_output() -> None:
    # With the sealed facts at hand, a damaged header is refused before decrypting.
    damaged = bytearray(THREE_BLOB)
    damaged[10] ^= 1
    got, err = drain(bytes(damaged), THREE_KEY, THREE_ID, expected_header=THREE_SUMMARY.header)
    assert got == b"" and err is not None and "header differs" in str(err)


def _chunks(blob: bytes) -> list[bytes]:
    return [blob[a:b] for a, b in chunk_bounds(blob)]


def test_swapped_chunks_are_detected() -> None:
    c = _chunks(THREE_BLOB)
    got, err = drain(THREE_BLOB[:START] + c[1] + c[0] + c[2], THREE_KEY, THREE_ID)
    assert err is not None and got == b""
    got, err = drain(THREE_BLOB[:START] + c[0] + c[2] + c[1], THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[:C]


def test_duplicated_chunk_is_detected() -> None:
    c = _chunks(THREE_BLOB)
    got, err = drain(THREE_BLOB[:START] + c[0] + c[0] + c[1] + c[2], THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[:C]
    got, err = drain(THREE_BLOB[:START] + c[0] + c[1] + c[1] + c[2], THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[: 2 * C]


def test_dropped_middle_chunk_is_detected() -> None:
    c = _chunks(THREE_BLOB)
    got, err = drain(THREE_BLOB[:START] + c[0] + c[2], THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[:C]


@pytest.mark.parametrize("extra", [b"\0", b"x" * 17, b"FINAL-TRAILER" * 10_000])
def test_data_after_final_is_detected(extra: bytes) -> None:
    # A short final chunk: the reader takes up to a full chunk, so the extra bytes
    # become part of the final chunk and it fails to authenticate.
    small, key, blob_id, _ = encrypt(b"short message")
    got, err = drain(small + extra, key, blob_id)
    assert err is not None and got == b""  # the final chunk's plaintext is withheld
    got, err = drain(THREE_BLOB + extra, THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[: 2 * C]
    # A full final chunk authenticates, and then the trailing bytes are refused.
    got, err = drain(TWO_BLOB + extra, TWO_KEY, TWO_ID)
    assert err is not None and "data after the final chunk" in str(err)
    assert got == TWO[:C]


def test_a_whole_second_blob_appended_is_detected() -> None:
    got, err = drain(THREE_BLOB + THREE_BLOB, THREE_KEY, THREE_ID)
    assert err is not None and got == THREE[: 2 * C]
    got, err = drain(TWO_BLOB + TWO_BLOB, TWO_KEY, TWO_ID)
    assert err is not None and "data after the final chunk" in str(err) and got == TWO[:C]


def test_blob_read_under_another_id_is_detected() -> None:
    """A blob file renamed (or copied) to another id does not decrypt there."""
    got, err = drain(THREE_BLOB, THREE_KEY, new_id())
    assert err is not None and got == b""
    small, key, _, _ = encrypt(b"")
    got, err = drain(small, key, new_id())
    assert err is not None and got == b""


def test_another_messages_blob_is_detected() -> None:
    other, _, _, other_summary = encrypt(plaintext(1000, seed=9))
    # Under this message's key and id: the first chunk fails to authenticate.
    got, err = drain(other, THREE_KEY, THREE_ID)
    assert err is not None and got == b""
    # With the sealed header at hand it is refused before any decryption.
    got, err = drain(other, THREE_KEY, THREE_ID, expected_header=THREE_SUMMARY.header)
    assert err is not None and "swapped" in str(err) and got == b""
    # Even another message under the same id and key (a writer bug) is caught by the hash.
    again = io.BytesIO()
    w = BlobWriter(again, THREE_KEY, THREE_ID)
    w.write(b"not the message")
    w.finish()
    got, err = drain(again.getvalue(), THREE_KEY, THREE_ID, expected_hash=THREE_SUMMARY.cipher_hash)
    assert err is not None and "hash mismatch" in str(err) and got == b""
    assert other_summary.cipher_hash != THREE_SUMMARY.cipher_hash


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version_is_named(version: int) -> None:
    damaged = bytearray(THREE_BLOB)
    damaged[4] = version
    got, err = drain(bytes(damaged), THREE_KEY, THREE_ID)
    assert err is not None and got == b""
    assert f"format version {version} is not supported" in str(err)
    assert "reads version 1" in str(err)


@pytest.mark.parametrize("start", [b"LBXA", b"lbxb", b"\0\0\0\0", b"PK\x03\x04"])
def test_bad_magic_is_refused(start: bytes) -> None:
    got, err = drain(start + THREE_BLOB[4:], THREE_KEY, THREE_ID)
    assert err is not None and "bad magic" in str(err) and got == b""


@pytest.mark.parametrize("content", [b"", b"LBX", b"LBXB\x01\x00\x00"])
def test_file_shorter_than_the_prefix_is_refused(content: bytes) -> None:
    got, err = drain(content, THREE_KEY, THREE_ID)
    assert err is not None and "bad magic" in str(err) and got == b""


def test_truncated_header_is_named() -> None:
    got, err = drain(THREE_BLOB[: START - 1], THREE_KEY, THREE_ID)
    assert err is not None and "inside its header" in str(err) and got == b""


def test_wrong_expected_hash_withholds_the_final_chunk() -> None:
    wrong = bytes(32)
    got, err = drain(THREE_BLOB, THREE_KEY, THREE_ID, expected_hash=wrong)
    assert err is not None and "hash mismatch" in str(err)
    assert got == THREE[: 2 * C]  # earlier chunks were authentic; the end never comes out
    small, key, blob_id, summary = encrypt(b"one chunk only")
    got, err = drain(small, key, blob_id, expected_hash=summary.cipher_hash[::-1])
    assert err is not None and got == b""
    got, err = drain(small, key, blob_id, expected_hash=summary.cipher_hash)
    assert err is None and got == b"one chunk only"


def test_wrong_expected_header_is_refused_before_decrypting() -> None:
    got, err = drain(THREE_BLOB, THREE_KEY, THREE_ID, expected_header=bytes(HEADER_BYTES))
    assert err is not None and "header differs" in str(err) and got == b""


def forge(chunks: list[tuple[bytes, int]]) -> tuple[bytes, bytes, str]:
    """A blob made chunk by chunk with raw libsodium, as a non-conforming writer would."""
    import nacl.bindings as sodium

    key, blob_id = new_blob_key(), new_id()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    ad = BLOB_PREFIX + bytes.fromhex(blob_id)
    body = b"".join(
        sodium.crypto_secretstream_xchacha20poly1305_push(state, data, ad, tag)
        for data, tag in chunks
    )
    return BLOB_PREFIX + header + body, key, blob_id


MESSAGE, PUSH, REKEY, FINAL = 0, 1, 2, 3


def test_forged_blob_with_standard_chunking_reads() -> None:
    """The forging helper itself is sound: conforming chunks read back."""
    blob, key, blob_id = forge([(bytes(C), MESSAGE), (b"end", FINAL)])
    assert blob_stored_size(C + 3) == len(blob)
    got, err = drain(blob, key, blob_id)
    assert err is None and got == bytes(C) + b"end"


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        # A non-final chunk must be full: the reader takes 65,553 bytes at a time, so a
        # short one merges with the next and fails, or stands alone at the end.
        ([(b"short", MESSAGE), (b"end", FINAL)], "failed authentication"),
        ([(b"short", MESSAGE)], "unexpected chunk tag or size"),
        # Only the MESSAGE and FINAL tags are used.
        ([(bytes(C), PUSH), (b"end", FINAL)], "unexpected chunk tag or size"),
        ([(bytes(C), REKEY), (b"end", FINAL)], "unexpected chunk tag or size"),
        ([(b"end", PUSH)], "unexpected chunk tag or size"),
    ],
    ids=["short-message-chunk", "short-message-last", "push-tag", "rekey-tag", "push-as-last"],
)
def test_nonconforming_chunks_are_refused(chunks: list[tuple[bytes, int]], message: str) -> None:
    blob, key, blob_id = forge(chunks)
    got, err = drain(blob, key, blob_id)
    assert err is not None and got == b""
    assert message in str(err)


def test_stream_without_final_tag_is_refused() -> None:
    blob, key, blob_id = forge([(bytes(C), MESSAGE), (bytes(C), MESSAGE)])
    got, err = drain(blob, key, blob_id)
    assert err is not None and "no final chunk" in str(err) and got == bytes(2 * C)


def test_wrong_key_is_detected() -> None:
    got, err = drain(THREE_BLOB, new_blob_key(), THREE_ID)
    assert err is not None and got == b""


# --------------------------------------------------------------------------------------
# Blobs: the whole message is never in memory


class CountingSink(io.RawIOBase):
    """A write-only file that keeps nothing but a count and a hash."""

    def __init__(self) -> None:
        self.size = 0
        self.digest = crypto.hasher()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.size += len(b)
        self.digest.update(b)
        return len(b)


def test_writer_buffers_at_most_one_chunk_of_a_50_mb_stream() -> None:
    block = plaintext(C, seed=50)
    total = 50 * 1024 * 1024
    sink = CountingSink()
    writer = BlobWriter(sink, new_blob_key(), new_id())  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        for _ in range(total // C):
            writer.write(block)
            assert len(writer._buf) <= C
        summary = writer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.plain_size == total
    assert summary.stored_size == sink.size == blob_stored_size(total)
    assert summary.cipher_hash == sink.digest.digest()
    assert peak < 8 * C, f"writer peaked at {peak} bytes"


def test_writer_buffer_bound_holds_for_odd_piece_sizes() -> None:
    writer = BlobWriter(CountingSink(), new_blob_key(), new_id())  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(400):
        writer.write(bytes(rng.choice([0, 1, 17, C - 1, C, C + 1, 3 * C + 5])))
        assert len(writer._buf) <= C


def test_read_blob_streams_a_50_mb_blob_in_chunks(tmp_path: Path) -> None:
    block = plaintext(C, seed=51)
    pieces = 50 * 1024 * 1024 // C
    key, blob_id = new_blob_key(), new_id()
    path = tmp_path / "blob"
    with open(path, "wb") as fh:
        writer = BlobWriter(fh, key, blob_id)
        for _ in range(pieces):
            writer.write(block)
        summary = writer.finish()
    count = 0
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            for chunk in read_blob(
                fh,
                key,
                blob_id,
                expected_hash=summary.cipher_hash,
                expected_header=summary.header,
            ):
                assert chunk == block  # every chunk exactly one 64 KiB block
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == pieces
    assert peak < 8 * C, f"reader peaked at {peak} bytes"


# --------------------------------------------------------------------------------------
# Sealed delivery metadata

BOX = SigningKey.generate()
OTHER_BOX = SigningKey.generate()
ANNA = PrivateKey.generate()
BEN = PrivateKey.generate()


def meta(**changes: object) -> DeliveryMeta:
    base = DeliveryMeta(
        delivery_id=new_id(),
        blob_id=new_id(),
        blob_key=new_blob_key(),
        blob_header=bytes(range(24)),
        plain_size=100,
        stored_size=149,
        cipher_hash=bytes(range(32)),
        received=1_700_000_000,
        mail_from="bob@example.net",
        rcpt_to="anna@example.org",
        headers={"Subject": "Hello", "From": "Bob <bob@example.net>"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


header_names = st.sampled_from(["From", "To", "Subject", "Date", "Message-ID"])


@settings(max_examples=40, deadline=None)
@given(
    mail_from=st.text(max_size=60),
    rcpt_to=st.text(max_size=60),
    headers=st.dictionaries(st.one_of(header_names, st.text(max_size=20)), st.text(max_size=200)),
    plain_size=st.integers(0, 2**40),
    received=st.integers(0, 2**33),
    kind=st.sampled_from(["mail", "notice"]),
)
@example(
    mail_from="jörg@bücher.example",
    rcpt_to="анна@пример.рф",
    headers={"Subject": 'Grüße 👋 "quoted" \\ \n\t\u2028', "To": "李 <li@例子.中国>"},
    plain_size=0,
    received=0,
    kind="mail",
)
def test_meta_round_trip_with_unicode(
    mail_from: str,
    rcpt_to: str,
    headers: dict[str, str],
    plain_size: int,
    received: int,
    kind: str,
) -> None:
    m = meta(
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        headers=headers,
        plain_size=plain_size,
        received=received,
        kind=kind,
    )
    sealed = seal_meta(m, BOX, bytes(ANNA.public_key))
    assert open_meta(sealed, ANNA, [BOX.verify_key]) == m
    assert DeliveryMeta.from_canonical(m.canonical()) == m
    # Nothing readable in the sealed record.
    for text in (mail_from, rcpt_to, *headers.values()):
        if len(text) >= 4:
            assert text.encode() not in sealed


def test_canonical_is_deterministic_and_sorted() -> None:
    a = meta(headers={"Subject": "x", "Date": "y", "From": "z"})
    b = replace(a, headers={"From": "z", "Subject": "x", "Date": "y"})
    assert a == b and a.canonical() == b.canonical()
    raw = a.canonical()
    doc = json.loads(raw)
    assert list(doc) == sorted(doc)
    assert list(doc["headers"]) == sorted(doc["headers"])
    again = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert raw == again.encode()
    assert b" " not in raw  # compact separators (and no value here has a space)
    assert set(doc) == {
        "v",
        "delivery_id",
        "blob_id",
        "blob_key",
        "blob_header",
        "plain_size",
        "stored_size",
        "cipher_hash",
        "received",
        "mail_from",
        "rcpt_to",
        "headers",
        "kind",
    }
    assert doc["v"] == 1 and doc["blob_key"] == a.blob_key.hex()
    # Non-ASCII is written as UTF-8, not \\u escapes.
    assert "ü".encode() in meta(mail_from="jürgen@example.de").canonical()
    assert meta(plain_size=1).canonical() != meta(plain_size=2).canonical()


def test_meta_for_another_mailbox_does_not_open() -> None:
    sealed = seal_meta(meta(), BOX, bytes(ANNA.public_key))
    with pytest.raises(MetaError, match="does not open"):
        open_meta(sealed, BEN, [BOX.verify_key])


def test_meta_signed_by_an_untrusted_key_is_refused() -> None:
    forged = seal_meta(meta(), OTHER_BOX, bytes(ANNA.public_key))
    with pytest.raises(MetaError, match="signature does not verify"):
        open_meta(forged, ANNA, [BOX.verify_key])
    with pytest.raises(MetaError, match="signature does not verify"):
        open_meta(forged, ANNA, [])


def test_several_trusted_signers() -> None:
    third = SigningKey.generate()
    m = meta()
    for signer in (BOX, OTHER_BOX):
        sealed = seal_meta(m, signer, bytes(ANNA.public_key))
        trusted = [third.verify_key, BOX.verify_key, OTHER_BOX.verify_key]
        assert open_meta(sealed, ANNA, trusted) == m
        assert open_meta(sealed, ANNA, iter(trusted)) == m  # any iterable
    sealed = seal_meta(m, third, bytes(ANNA.public_key))
    with pytest.raises(MetaError):
        open_meta(sealed, ANNA, [BOX.verify_key, OTHER_BOX.verify_key])


def test_signature_binds_the_recipient_key() -> None:
    """A record signed for Anna and re-sealed to Ben does not verify for Ben."""
    m = meta()
    record = SealedBox(ANNA).decrypt(seal_meta(m, BOX, bytes(ANNA.public_key)))
    assert record[64:] == m.canonical()
    # Sanity: re-sealed to Anna herself it still opens, so the re-sealing is sound.
    assert open_meta(SealedBox(ANNA.public_key).encrypt(record), ANNA, [BOX.verify_key]) == m
    to_ben = SealedBox(BEN.public_key).encrypt(record)
    with pytest.raises(MetaError, match="signature does not verify"):
        open_meta(to_ben, BEN, [BOX.verify_key])


def test_signed_bytes_are_as_documented() -> None:
    m = meta()
    record = SealedBox(ANNA).decrypt(seal_meta(m, BOX, bytes(ANNA.public_key)))
    signed = b"letterbox-meta-v1\0" + bytes(ANNA.public_key) + m.cipher_hash + m.canonical()
    BOX.verify_key.verify(signed, record[:64])  # raises if the layout differs


def test_altered_record_is_refused() -> None:
    m = meta()
    record = SealedBox(ANNA).decrypt(seal_meta(m, BOX, bytes(ANNA.public_key)))
    altered = record.replace(b'"plain_size":100', b'"plain_size":101')
    assert altered != record
    with pytest.raises(MetaError, match="signature"):
        open_meta(SealedBox(ANNA.public_key).encrypt(altered), ANNA, [BOX.verify_key])


def _sealed_record(content: bytes) -> bytes:
    return SealedBox(ANNA.public_key).encrypt(bytes(64) + content)


@pytest.mark.parametrize(
    ("canonical", "message"),
    [
        (b"{not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'"a string"', "malformed"),
        (b"{}", "version None is not supported"),
        (b'{"v": 2}', "version 2 is not supported"),
        (b'{"v": "1"}', "version '1' is not supported"),
    ],
)
def test_malformed_metadata_is_refused_clearly(canonical: bytes, message: str) -> None:
    with pytest.raises(MetaError, match=re.escape(message)):
        DeliveryMeta.from_canonical(canonical)
    with pytest.raises(MetaError, match=re.escape(message)):
        open_meta(_sealed_record(canonical), ANNA, [BOX.verify_key])


@pytest.mark.parametrize(
    "field",
    [
        "delivery_id",
        "blob_id",
        "blob_key",
        "blob_header",
        "plain_size",
        "cipher_hash",
        "received",
        "mail_from",
        "rcpt_to",
        "headers",
        "kind",
    ],
)
def test_missing_metadata_field_is_named(field: str) -> None:
    doc = json.loads(meta().canonical())
    del doc[field]
    with pytest.raises(MetaError, match=f"malformed.*{field}"):
        DeliveryMeta.from_canonical(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [("blob_key", "zz"), ("cipher_hash", 5), ("plain_size", "many"), ("headers", 3)],
)
def test_bad_metadata_values_are_refused(field: str, value: object) -> None:
    doc = json.loads(meta().canonical())
    doc[field] = value
    with pytest.raises(MetaError, match="malformed"):
        DeliveryMeta.from_canonical(json.dumps(doc).encode())


def test_short_or_garbage_sealed_records_are_refused() -> None:
    with pytest.raises(MetaError, match="too short"):
        open_meta(SealedBox(ANNA.public_key).encrypt(bytes(64)), ANNA, [BOX.verify_key])
    with pytest.raises(MetaError, match="does not open"):
        open_meta(b"\0" * 200, ANNA, [BOX.verify_key])
    with pytest.raises(MetaError, match="does not open"):
        open_meta(b"", ANNA, [BOX.verify_key])


def test_sealed_values_round_trip_and_refuse_other_keys() -> None:
    sealed = crypto.seal_to(ANNA.public_key, b"anna@example.org")
    assert len(sealed) == len("anna@example.org") + 48
    assert crypto.unseal(ANNA, sealed) == b"anna@example.org"
    with pytest.raises(MetaError):
        crypto.unseal(BEN, sealed)


# --------------------------------------------------------------------------------------
# Keyrings

MAILBOX = "0123456789abcdef0123456789abcdef"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_RE = re.compile(rf"^[{CROCKFORD}]{{4}}(-[{CROCKFORD}]{{4}}){{7}}$")


@pytest.fixture(scope="module")
def ring() -> tuple[Keyring, PrivateKey, str]:
    return Keyring.create(MAILBOX, PASSWORD, FAST_ARGON2)


def test_create_then_unlock(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring, secret, code = ring
    assert keyring.public_key == bytes(secret.public_key)
    assert not keyring.end_to_end
    assert bytes(keyring.unlock(PASSWORD)) == bytes(secret)
    assert bytes(keyring.recover(code)) == bytes(secret)
    # The secret key is nowhere in the stored form.
    assert bytes(secret).hex().encode() not in keyring.to_json()
    assert bytes(secret) not in keyring.to_json()


@pytest.mark.parametrize("wrong", ["", "Correct horse battery staple", PASSWORD + " ", "x"])
def test_wrong_password(ring: tuple[Keyring, PrivateKey, str], wrong: str) -> None:
    with pytest.raises(WrongPassword, match="wrong password"):
        ring[0].unlock(wrong)


def test_recovery_code_format() -> None:
    codes = [crypto.new_recovery_code() for _ in range(300)]
    for code in codes:
        assert CODE_RE.match(code), code
    assert len(set(codes)) == len(codes)
    # The strength comes from what the codes are made of: every code has 32 symbols,
    # and 300 codes (9,600 draws) use all 32 letters of the alphabet, so each symbol
    # carries 5 bits and a code 160 (at least 128 is the aim).
    per_code = {len(code.replace("-", "")) for code in codes}
    symbols = "".join(codes).replace("-", "")
    assert per_code == {32}
    assert set(symbols) == set(CROCKFORD)
    assert 32 * math.log2(len(set(symbols))) == 160


def _code_with_zero_and_one(keyring: Keyring, secret: PrivateKey) -> tuple[Keyring, str]:
    while True:
        new_ring, code = keyring.with_new_recovery_code(secret)
        if "0" in code and "1" in code:
            return new_ring, code


def _slipped(code: str, rng: random.Random) -> str:
    out = []
    for ch in code:
        if ch == "0":
            ch = rng.choice("0Oo")
        elif ch == "1":
            ch = rng.choice("1IiLl")
        elif ch == "-":
            ch = rng.choice(["-", " ", "", "  ", "\t"])
        if rng.random() < 0.5:
            ch = ch.lower()
        out.append(ch)
    return rng.choice(["", " ", "\n"]) + "".join(out) + rng.choice(["", " ", "\r\n"])


def test_recover_forgives_typing_slips(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring, secret, _ = ring
    keyring, code = _code_with_zero_and_one(keyring, secret)
    slips = [
        code.lower(),
        code.replace("-", " "),
        code.replace("-", ""),
        " ".join(code),
        code.replace("0", "O"),
        code.replace("0", "o"),
        code.replace("1", "I"),
        code.replace("1", "L"),
        code.replace("1", "l"),
        code.replace("1", "i"),
    ]
    for slip in slips:
        assert slip != code
        assert bytes(keyring.recover(slip)) == bytes(secret), slip


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_recover_forgives_any_mix_of_slips(
    ring: tuple[Keyring, PrivateKey, str], seed: int
) -> None:
    keyring, secret, code = ring
    assert bytes(keyring.recover(_slipped(code, random.Random(seed)))) == bytes(secret)


def test_wrong_recovery_code(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring, _, code = ring
    other = crypto.new_recovery_code()
    with pytest.raises(WrongRecoveryCode, match="wrong recovery code"):
        keyring.recover(other)
    # One symbol off.
    off = ("1" if code[0] != "1" else "2") + code[1:]
    with pytest.raises(WrongRecoveryCode, match="wrong recovery code"):
        keyring.recover(off)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "ABCD",
        "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-678",  # 31 symbols
        "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-6789-A",  # 33 symbols
        "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-678U",  # U is not Crockford
        "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-678!",
        "ABCD_EFGH_JKMN_PQRS_TVWX_YZ01_2345_6789",
        "ÄBCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-6789",
    ],
)
def test_malformed_recovery_code_is_explained(
    ring: tuple[Keyring, PrivateKey, str], code: str
) -> None:
    with pytest.raises(WrongRecoveryCode, match="32 letters and digits in groups of four"):
        ring[0].recover(code)


def test_with_password_rewraps(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring, secret, code = ring
    sealed = seal_meta(meta(), BOX, keyring.public_key)  # mail that arrived before
    rewrapped = keyring.with_password(secret, "new password", FAST_ARGON2)
    rewrapped = Keyring.from_json(rewrapped.to_json())
    assert rewrapped.public_key == keyring.public_key
    assert rewrapped.password_slot != keyring.password_slot
    with pytest.raises(WrongPassword):
        rewrapped.unlock(PASSWORD)
    key = rewrapped.unlock("new password")
    assert open_meta(sealed, key, [BOX.verify_key]).rcpt_to == "anna@example.org"
    assert bytes(rewrapped.recover(code)) == bytes(secret)  # recovery slot untouched
    with pytest.raises(ValueError, match="empty"):
        keyring.with_password(secret, "", FAST_ARGON2)


def test_with_new_recovery_code(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring, secret, code = ring
    renewed, new_code = keyring.with_new_recovery_code(secret)
    renewed = Keyring.from_json(renewed.to_json())
    assert new_code != code and CODE_RE.match(new_code)
    with pytest.raises(WrongRecoveryCode, match="wrong recovery code"):
        renewed.recover(code)
    assert bytes(renewed.recover(new_code)) == bytes(secret)
    assert bytes(renewed.unlock(PASSWORD)) == bytes(secret)  # password slot untouched
    assert renewed.public_key == keyring.public_key


def test_slots_spliced_from_another_mailbox_fail(ring: tuple[Keyring, PrivateKey, str]) -> None:
    """Same password, same code-holder: a slot only opens in the keyring it was made for."""
    mine, _, my_code = ring
    theirs, _, _ = Keyring.create("fedcba9876543210fedcba9876543210", PASSWORD, FAST_ARGON2)
    doc = json.loads(theirs.to_json())
    doc["password"], doc["recovery"] = mine.password_slot, mine.recovery_slot
    spliced = Keyring.from_json(json.dumps(doc).encode())
    with pytest.raises(WrongPassword):
        spliced.unlock(PASSWORD)
    with pytest.raises(WrongRecoveryCode):
        spliced.recover(my_code)


def test_associated_data_binds_mailbox_id_and_public_key(
    ring: tuple[Keyring, PrivateKey, str],
) -> None:
    keyring, _, code = ring
    doc = json.loads(keyring.to_json())
    renamed = dict(doc, mailbox_id="ffffffffffffffffffffffffffffffff")
    ring2 = Keyring.from_json(json.dumps(renamed).encode())
    with pytest.raises(WrongPassword):
        ring2.unlock(PASSWORD)
    with pytest.raises(WrongRecoveryCode):
        ring2.recover(code)
    other_pk = dict(doc, public_key=bytes(PrivateKey.generate().public_key).hex())
    ring3 = Keyring.from_json(json.dumps(other_pk).encode())
    with pytest.raises(WrongPassword):
        ring3.unlock(PASSWORD)
    # The password slot and the recovery slot are not interchangeable either.
    swapped = dict(doc, recovery={k: doc["password"][k] for k in ("nonce", "ciphertext")})
    with pytest.raises(WrongRecoveryCode):
        Keyring.from_json(json.dumps(swapped).encode()).recover(code)


def test_slot_matches_documented_construction(ring: tuple[Keyring, PrivateKey, str]) -> None:
    """Unwrap by hand, as docs/format.md describes it, with raw libsodium calls."""
    import nacl.bindings as sodium

    keyring, secret, code = ring
    doc = json.loads(keyring.to_json())
    assert doc["v"] == 1 and doc["mailbox_id"] == MAILBOX
    slot = doc["password"]
    assert slot["kdf"] == "argon2id13"
    assert set(slot) == {"kdf", "salt", "opslimit", "memlimit", "nonce", "ciphertext"}
    assert len(bytes.fromhex(slot["salt"])) == 16 and len(bytes.fromhex(slot["nonce"])) == 24
    assert len(bytes.fromhex(slot["ciphertext"])) == 32 + 16
    key = nacl.pwhash.argon2id.kdf(
        32,
        PASSWORD.encode(),
        bytes.fromhex(slot["salt"]),
        opslimit=slot["opslimit"],
        memlimit=slot["memlimit"],
    )
    ad = b"letterbox-keyring-v1\0password\0" + MAILBOX.encode() + keyring.public_key
    plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        bytes.fromhex(slot["ciphertext"]), ad, bytes.fromhex(slot["nonce"]), key
    )
    assert plain == bytes(secret)
    rec = doc["recovery"]
    assert set(rec) == {"nonce", "ciphertext"}
    normal = code.replace("-", "")
    rkey = hashlib.blake2b(normal.encode(), digest_size=32, person=b"lbx-recovery-v1").digest()
    ad = b"letterbox-keyring-v1\0recovery\0" + MAILBOX.encode() + keyring.public_key
    plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        bytes.fromhex(rec["ciphertext"]), ad, bytes.fromhex(rec["nonce"]), rkey
    )
    assert plain == bytes(secret)


def test_recovery_key_with_raw_libsodium() -> None:
    """docs/format.md: the personalisation is "lbx-recovery-v1" padded with one zero byte."""
    import nacl.bindings as sodium

    normal = "7KQ2M9XD0B4R1TVWXYZ0123456789ABC"
    ours = hashlib.blake2b(normal.encode(), digest_size=32, person=b"lbx-recovery-v1").digest()
    theirs = sodium.crypto_generichash_blake2b_salt_personal(
        normal.encode(), digest_size=32, salt=bytes(16), person=b"lbx-recovery-v1\0"
    )
    assert ours == theirs
    assert crypto._recovery_key("7kq2-m9xd-oB4r-ItVw-xyzO-l234-5678-9abc") == ours


def test_keyring_json_round_trip(ring: tuple[Keyring, PrivateKey, str]) -> None:
    keyring = ring[0]
    again = Keyring.from_json(keyring.to_json())
    assert again == keyring
    assert again.to_json() == keyring.to_json()
    e2e = Keyring.public_only(MAILBOX, keyring.public_key)
    assert Keyring.from_json(e2e.to_json()) == e2e


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(v=2), "keyring version 2 is not supported"),
        (lambda d: d.pop("v"), "keyring version None is not supported"),
        (lambda d: d.pop("public_key"), "malformed"),
        (lambda d: d.pop("mailbox_id"), "malformed"),
        (lambda d: d.pop("password"), "malformed"),
        (lambda d: d.pop("recovery"), "malformed"),
        (lambda d: d.update(public_key="00" * 31), "wrong length"),
        (lambda d: d.update(public_key="not hex"), "malformed"),
        (lambda d: d.update(public_key=None), "malformed"),
    ],
)
def test_bad_keyring_records(
    ring: tuple[Keyring, PrivateKey, str], mutate: object, message: str
) -> None:
    doc = json.loads(ring[0].to_json())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(KeyringError, match=re.escape(message)):
        Keyring.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"keyring"', b"\xff\xfe\x00"])
def test_keyring_that_is_not_json_or_not_an_object(raw: bytes) -> None:
    with pytest.raises(KeyringError):
        Keyring.from_json(raw)


@pytest.mark.parametrize(
    ("slot", "mutate"),
    [
        ("password", lambda s: s.pop("salt")),
        ("password", lambda s: s.pop("ciphertext")),
        ("password", lambda s: s.update(salt="xyz")),
        ("password", lambda s: s.update(nonce=None)),
        ("recovery", lambda s: s.pop("nonce")),
        ("recovery", lambda s: s.update(ciphertext="not hex")),
    ],
)
def test_damaged_slot_is_a_keyring_error(
    ring: tuple[Keyring, PrivateKey, str], slot: str, mutate: object
) -> None:
    """A damaged slot is reported as a damaged keyring, never as a crash."""
    keyring, _, code = ring
    doc = json.loads(keyring.to_json())
    mutate(doc[slot])  # type: ignore[operator]
    damaged = Keyring.from_json(json.dumps(doc).encode())
    with pytest.raises(KeyringError, match=f"{slot} slot"):
        if slot == "password":
            damaged.unlock(PASSWORD)
        else:
            damaged.recover(code)


def test_end_to_end_keyring_holds_no_secret() -> None:
    pk = bytes(PrivateKey.generate().public_key)
    e2e = Keyring.public_only(MAILBOX, pk)
    assert e2e.end_to_end
    assert json.loads(e2e.to_json())["password"] is None
    with pytest.raises(WrongPassword, match="end-to-end"):
        e2e.unlock(PASSWORD)
    with pytest.raises(WrongRecoveryCode, match="no recovery code"):
        e2e.recover(crypto.new_recovery_code())
    loaded = Keyring.from_json(e2e.to_json())
    with pytest.raises(WrongPassword, match="end-to-end"):
        loaded.unlock(PASSWORD)


def test_interactive_defaults_work() -> None:
    limits = Argon2Limits()
    assert limits.opslimit == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert limits.memlimit == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE == 64 << 20
    keyring, secret, _ = Keyring.create(new_id(), PASSWORD, limits)
    slot = json.loads(keyring.to_json())["password"]
    assert (slot["opslimit"], slot["memlimit"]) == (limits.opslimit, limits.memlimit)
    # Unlocking uses the limits stored in the slot, not the caller's.
    assert bytes(Keyring.from_json(keyring.to_json()).unlock(PASSWORD)) == bytes(secret)


def test_unlock_uses_the_stored_limits(ring: tuple[Keyring, PrivateKey, str]) -> None:
    doc = json.loads(ring[0].to_json())
    doc["password"]["opslimit"] = 2  # a different cost derives a different key
    with pytest.raises(WrongPassword):
        Keyring.from_json(json.dumps(doc).encode()).unlock(PASSWORD)


# --------------------------------------------------------------------------------------
# Identifiers


def test_ids_are_128_bit_lowercase_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert set("".join(ids)) == set(string.hexdigits.lower())


@pytest.mark.parametrize("bad", ["", "abc", "0" * 30, "0" * 34, "zz" * 16])
def test_writer_refuses_a_malformed_blob_id(bad: str) -> None:
    with pytest.raises(ValueError):
        BlobWriter(io.BytesIO(), new_blob_key(), bad)


def test_blob_id_is_bound_as_raw_bytes() -> None:
    """The associated data is the prefix plus the id's 16 raw bytes, on every chunk."""
    import nacl.bindings as sodium

    blob, key, blob_id, _ = encrypt(plaintext(C + 10, seed=11))
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, blob[8:START], key)
    ad = blob[:8] + bytes.fromhex(blob_id)
    first, tag1 = sodium.crypto_secretstream_xchacha20poly1305_pull(
        state, blob[START : START + STORED_CHUNK], ad
    )
    last, tag2 = sodium.crypto_secretstream_xchacha20poly1305_pull(
        state, blob[START + STORED_CHUNK :], ad
    )
    assert (len(first), len(last)) == (C, 10)
    assert tag1 == sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE == 0
    assert tag2 == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL == 3

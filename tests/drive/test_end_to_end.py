"""End-to-end mailboxes at the drive: the box holds only public keys, and still delivers."""

from __future__ import annotations

import io

import pytest
from letterbox import crypto
from letterbox.drive import Drive

from tests.helpers import message


def test_end_to_end_mailbox_round_trip(drive: Drive) -> None:
    person = crypto.PersonalKey.generate()
    mailbox, code = drive.create_mailbox(
        "e2e@example.org", quota=1 << 20, identity_key=person.identity_key
    )
    assert code is None and mailbox.end_to_end and mailbox.auth_key == person.identity_key
    with pytest.raises(crypto.WrongPassword, match="end-to-end"):
        drive.unlock(mailbox.id, "any password")
    ids = [
        drive.deliver("x@example.net", [mailbox.address], message(n, 70_000))[0] for n in range(3)
    ]
    listed = drive.list_sealed(mailbox.id)
    assert [s.id for s in listed] == ids
    for n, sealed in enumerate(listed):
        # What a reader on the person's computer does: open, verify, decrypt, check.
        meta = crypto.open_meta(sealed.meta, person.secret, [drive.keys.verify_key])
        assert (meta.delivery_id, meta.blob_id) == (sealed.id, sealed.blob_id)
        with drive.open_ciphertext(mailbox.id, sealed.id) as fh:
            blob = fh.read()
        plain = b"".join(
            crypto.read_blob(
                io.BytesIO(blob), meta.blob_key, meta.blob_id, expected_hash=sealed.cipher_hash
            )
        )
        assert plain == message(n, 70_000)
    # Acknowledging needs the right hash; a wrong one deletes nothing.
    assert drive.acknowledge(mailbox.id, ids[0], b"\0" * 32) is False
    assert len(drive.list_sealed(mailbox.id)) == 3
    assert drive.acknowledge(mailbox.id, ids[0], listed[0].cipher_hash) is True
    assert drive.acknowledge(mailbox.id, ids[0], listed[0].cipher_hash) is True  # idempotent
    assert [s.id for s in drive.list_sealed(mailbox.id)] == ids[1:]


def test_an_identity_key_must_be_a_key(drive: Drive) -> None:
    with pytest.raises(ValueError, match="identity key"):
        drive.create_mailbox("e2e@example.org", quota=1000, identity_key=b"short")


def test_personal_key_file_round_trip_and_wrong_passphrase() -> None:
    person = crypto.PersonalKey.generate()
    limits = crypto.Argon2Limits(1, 8192)
    raw = person.to_file("a long passphrase", "e2e@example.org", b"\x07" * 32, limits)
    again, address, box_key = crypto.PersonalKey.from_file(raw, "a long passphrase")
    assert again.identity_key == person.identity_key and address == "e2e@example.org"
    assert bytes(box_key) == b"\x07" * 32
    with pytest.raises(crypto.WrongPassword):
        crypto.PersonalKey.from_file(raw, "wrong")
    with pytest.raises(crypto.KeyringError):
        crypto.PersonalKey.from_file(b'{"kind": "something else"}', "x")
    challenge = b"server nonce"
    sig = person.sign_challenge("e2e@example.org", challenge)
    assert crypto.verify_challenge(person.identity_key, "e2e@example.org", challenge, sig)
    assert not crypto.verify_challenge(person.identity_key, "other@example.org", challenge, sig)
    assert not crypto.verify_challenge(person.identity_key, "e2e@example.org", b"other", sig)

"""The drive API over real HTTP: logging in by signature, listing, streaming, acknowledging.

Every refusal the module docstring promises is exercised here with its status code:
no, forged, replayed, expired or unknown challenges and tokens (401), unsigned
deletions (403), other mailboxes' messages (404), wrong hashes (409), an offline
drive (503), and malformed requests (400).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import logging
import socket

import pytest
from letterbox import crypto
from letterbox.e2e import api_client

from tests.helpers import message
from tests.web.conftest import API, ApiBox, Person

ANNA = "anna@example.org"
BEN = "ben@example.org"


def _hash(box: ApiBox, delivery_id: str, mailbox_id: str) -> bytes:
    return next(s.cipher_hash for s in box.drive.list_sealed(mailbox_id) if s.id == delivery_id)


def _ids(box: ApiBox, person: Person) -> list[str]:
    return [s.id for s in box.drive.list_sealed(person.mailbox_id)]


# -- logging in -----------------------------------------------------------------------------


def test_login_list_and_read_what_only_the_person_can_open(box: ApiBox) -> None:
    anna = box.person(ANNA)
    ids = [box.deliver(ANNA, n, 1000 * n) for n in range(3)]
    token = box.login(anna)
    listed = box.listing(token)
    assert [m["id"] for m in listed] == ids
    for n, m in enumerate(listed):
        meta = crypto.open_meta(
            base64.b64decode(m["meta"]), anna.key.secret, [box.drive.keys.verify_key]
        )
        assert (meta.delivery_id, meta.blob_id) == (m["id"], m["blob_id"])
        assert meta.cipher_hash.hex() == m["cipher_hash"]
        assert (meta.plain_size, meta.stored_size) == (m["plain_size"], m["stored_size"])
        assert meta.plain_size == len(message(n, 1000 * n))


def test_a_challenge_is_fresh_random_and_short_lived(box: ApiBox) -> None:
    reply = box.request("POST", "/challenge")
    assert reply.status == 200
    doc = reply.json()
    assert len(bytes.fromhex(doc["challenge"])) == 32
    assert 0 < doc["expires_in"] <= 300
    assert box.challenge() != box.challenge()


def test_no_token_a_malformed_one_or_an_unknown_one_is_401(box: ApiBox) -> None:
    box.person(ANNA)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YW5uYTpwdw=="},
        {"Authorization": "Bearer not-hex"},
        {"Authorization": "Bearer " + "ab" * 32},
    ):
        reply = box.request("GET", "/messages", headers=headers)
        assert reply.status == 401, headers
        assert reply.headers["www-authenticate"].startswith("Letterbox")
        assert "error" in reply.json()


def test_a_signature_by_another_key_is_401(box: ApiBox) -> None:
    box.person(ANNA)
    mallory = crypto.PersonalKey.generate()
    challenge = box.challenge()
    reply = box.session(ANNA, challenge, mallory.sign_challenge(ANNA, challenge))
    assert reply.status == 401
    assert "signature" in reply.json()["error"]


def test_another_mailboxs_key_does_not_open_this_one(box: ApiBox) -> None:
    anna, ben = box.person(ANNA), box.person(BEN)
    box.deliver(ANNA, 1)
    # Ben's key answering for Anna's address, and Ben's answer presented as Anna's.
    challenge = box.challenge()
    assert box.session(ANNA, challenge, ben.key.sign_challenge(ANNA, challenge)).status == 401
    challenge = box.challenge()
    assert box.session(ANNA, challenge, ben.key.sign_challenge(BEN, challenge)).status == 401
    # Ben's own session sees only Ben's mailbox: Anna's message is not there for him.
    token = box.login(ben)
    assert box.listing(token) == []
    (anna_id,) = _ids(box, anna)
    assert box.request("GET", f"/messages/{anna_id}", token=token).status == 404
    cipher_hash = _hash(box, anna_id, anna.mailbox_id)
    reply = box.ack(token, [(anna_id, cipher_hash)], ben)
    assert reply.status == 200 and reply.json() == {"deleted": 0, "already_gone": 1}
    assert _ids(box, anna) == [anna_id]  # untouched


def test_a_signature_over_another_challenge_or_address_is_401(box: ApiBox) -> None:
    anna = box.person(ANNA)
    challenge, other = box.challenge(), box.challenge()
    assert box.session(ANNA, challenge, anna.key.sign_challenge(ANNA, other)).status == 401
    challenge = box.challenge()
    assert (
        box.session(
            ANNA, challenge, anna.key.sign_challenge("someone@example.org", challenge)
        ).status
        == 401
    )
    challenge = box.challenge()
    sig = bytearray(anna.key.sign_challenge(ANNA, challenge))
    sig[10] ^= 1
    assert box.session(ANNA, challenge, bytes(sig)).status == 401


def test_a_challenge_answers_once_even_when_the_first_answer_was_wrong(box: ApiBox) -> None:
    anna = box.person(ANNA)
    challenge = box.challenge()
    good = anna.key.sign_challenge(ANNA, challenge)
    assert box.session(ANNA, challenge, good).status == 200
    replay = box.session(ANNA, challenge, good)
    assert replay.status == 401 and "challenge" in replay.json()["error"]
    # A wrong answer uses the challenge up too, so it cannot be retried.
    challenge = box.challenge()
    assert box.session(ANNA, challenge, b"\0" * 64).status == 401
    assert box.session(ANNA, challenge, anna.key.sign_challenge(ANNA, challenge)).status == 401


def test_an_expired_or_never_issued_challenge_is_401(box: ApiBox) -> None:
    anna = box.person(ANNA)
    challenge = box.challenge()
    box.clock.now += box.api.challenge_ttl + 1
    reply = box.session(ANNA, challenge, anna.key.sign_challenge(ANNA, challenge))
    assert reply.status == 401 and "expired" in reply.json()["error"]
    made_up = bytes(range(32))
    assert box.session(ANNA, made_up, anna.key.sign_challenge(ANNA, made_up)).status == 401


def test_unknown_address_and_password_mailbox_look_like_a_wrong_key(box: ApiBox) -> None:
    """Whether an address exists, or is end-to-end, is not told to anyone without its key."""
    box.password_mailbox("carl@example.org")
    anna = box.person(ANNA)
    mallory = crypto.PersonalKey.generate()
    answers = []
    for address, key in (
        (ANNA, mallory),
        ("nobody@example.org", mallory),
        ("carl@example.org", mallory),
        ("not an address", anna.key),
    ):
        challenge = box.challenge()
        reply = box.session(address, challenge, key.sign_challenge(address, challenge))
        assert reply.status == 401, address
        answers.append(reply.body)
    assert len(set(answers)) == 1


def test_a_token_expires(box: ApiBox) -> None:
    """(A removed mailbox logging its tokens out: test_driveapi_limits.py.)"""
    anna = box.person(ANNA)
    token = box.login(anna)
    assert box.request("GET", "/messages", token=token).status == 200
    box.clock.now += box.api.token_ttl + 1
    reply = box.request("GET", "/messages", token=token)
    assert reply.status == 401 and "expired" in reply.json()["error"]


def test_the_address_is_matched_as_normalised(box: ApiBox) -> None:
    anna = box.person(ANNA)
    challenge = box.challenge()
    # The signature covers the normalised address (what the key file holds); the
    # request may spell it differently.
    reply = box.session("<Anna@Example.ORG>", challenge, anna.key.sign_challenge(ANNA, challenge))
    assert reply.status == 200 and reply.json()["address"] == ANNA


# -- streaming ------------------------------------------------------------------------------


def test_ciphertext_streams_exactly_the_blob_with_content_length(box: ApiBox) -> None:
    anna = box.person(ANNA)
    sizes = [0, 100, 65_536, 700_000]  # several 256 KiB stream chunks for the last
    ids = [box.deliver(ANNA, n, size) for n, size in enumerate(sizes)]
    token = box.login(anna)
    for delivery_id, entry in zip(ids, box.listing(token), strict=True):
        reply = box.request("GET", f"/messages/{delivery_id}", token=token)
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/octet-stream"
        assert int(reply.headers["content-length"]) == entry["stored_size"] == len(reply.body)
        assert box.drive.blob_path(entry["blob_id"]).read_bytes() == reply.body
        digest = crypto.hasher()
        digest.update(reply.body)
        assert digest.hexdigest() == entry["cipher_hash"]
        meta = crypto.open_meta(
            base64.b64decode(entry["meta"]), anna.key.secret, [box.drive.keys.verify_key]
        )
        plain = b"".join(
            crypto.read_blob(
                io.BytesIO(reply.body), meta.blob_key, meta.blob_id, expected_hash=meta.cipher_hash
            )
        )
        assert plain.endswith(message(ids.index(delivery_id), sizes[ids.index(delivery_id)]))


def test_unknown_and_malformed_message_ids_are_404(box: ApiBox) -> None:
    anna = box.person(ANNA)
    token = box.login(anna)
    for path in ("/messages/" + "0" * 32, "/messages/XYZ", "/messages/" + "A" * 32):
        assert box.request("GET", path, token=token).status == 404, path


def test_a_client_leaving_mid_download_does_not_hurt_the_server(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1, 3_000_000)
    token = box.login(anna)
    sock = socket.create_connection(("127.0.0.1", box.port), timeout=10)
    sock.sendall(
        f"GET {API}/messages/{delivery_id} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    reply = box.request("GET", f"/messages/{delivery_id}", token=token)
    assert reply.status == 200 and len(reply.body) == int(reply.headers["content-length"])


# -- acknowledging --------------------------------------------------------------------------


def test_ack_with_a_wrong_hash_is_409_and_deletes_nothing(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    token = box.login(anna)
    reply = box.ack(token, [(delivery_id, b"\x01" * 32)], anna)
    assert reply.status == 409 and "nothing was deleted" in reply.json()["error"]
    assert _ids(box, anna) == [delivery_id]
    assert [m["id"] for m in box.listing(token)] == [delivery_id]  # offered again


def test_ack_deletes_and_a_second_ack_is_harmless(box: ApiBox) -> None:
    anna = box.person(ANNA)
    first, second = box.deliver(ANNA, 1), box.deliver(ANNA, 2)
    token = box.login(anna)
    cipher_hash = _hash(box, first, anna.mailbox_id)
    reply = box.ack(token, [(first, cipher_hash)], anna)
    assert reply.status == 200 and reply.json() == {"deleted": 1, "already_gone": 0}
    assert _ids(box, anna) == [second]
    assert box.request("GET", f"/messages/{first}", token=token).status == 404
    again = box.ack(token, [(first, cipher_hash)], anna)
    assert again.status == 200 and again.json() == {"deleted": 0, "already_gone": 1}
    assert _ids(box, anna) == [second]
    assert box.drive.mailbox(anna.mailbox_id).messages == 1


def test_an_ack_not_signed_by_the_mailbox_key_is_403(box: ApiBox) -> None:
    """A stolen token lists and downloads ciphertext, but deletes nothing."""
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    token = box.login(anna)
    cipher_hash = _hash(box, delivery_id, anna.mailbox_id)
    thief = crypto.PersonalKey.generate()
    assert box.ack(token, [(delivery_id, cipher_hash)], anna, signer=thief).status == 403
    # A login signature is no deletion signature (separate signing domains).
    challenge = box.challenge()
    login_sig = anna.key.sign_challenge(ANNA, challenge)
    reply = box.request(
        "POST",
        "/ack",
        {
            "acks": [
                {"id": delivery_id, "cipher_hash": cipher_hash.hex(), "signature": login_sig.hex()}
            ]
        },
        token=token,
    )
    assert reply.status == 403
    # Signed for another message's id or another hash: not this deletion either.
    other = box.deliver(ANNA, 2)
    sig = anna.key.sign_ack(ANNA, other, cipher_hash)
    reply = box.request(
        "POST",
        "/ack",
        {"acks": [{"id": delivery_id, "cipher_hash": cipher_hash.hex(), "signature": sig.hex()}]},
        token=token,
    )
    assert reply.status == 403
    assert _ids(box, anna) == [delivery_id, other]


def test_a_batch_of_acks_is_all_or_nothing(box: ApiBox) -> None:
    anna = box.person(ANNA)
    ids = [box.deliver(ANNA, n) for n in range(4)]
    token = box.login(anna)
    hashes = {i: _hash(box, i, anna.mailbox_id) for i in ids}
    wrong = [(i, hashes[i]) for i in ids[:2]] + [(ids[2], b"\x07" * 32)]
    assert box.ack(token, wrong, anna).status == 409
    assert _ids(box, anna) == ids
    # One item signed by another key spoils the batch: 403, nothing deleted.
    good = box.ack(token, [(ids[0], hashes[ids[0]])], anna).json()
    assert good == {"deleted": 1, "already_gone": 0}
    thief = crypto.PersonalKey.generate()
    mixed = box.request(
        "POST",
        "/ack",
        {
            "acks": [
                {
                    "id": ids[1],
                    "cipher_hash": hashes[ids[1]].hex(),
                    "signature": anna.key.sign_ack(ANNA, ids[1], hashes[ids[1]]).hex(),
                },
                {
                    "id": ids[2],
                    "cipher_hash": hashes[ids[2]].hex(),
                    "signature": thief.sign_ack(ANNA, ids[2], hashes[ids[2]]).hex(),
                },
            ]
        },
        token=token,
    )
    assert mixed.status == 403
    assert _ids(box, anna) == ids[1:]
    reply = box.ack(token, [(i, hashes[i]) for i in ids], anna)
    assert reply.status == 200 and reply.json() == {"deleted": 3, "already_gone": 1}
    assert _ids(box, anna) == []
    assert box.drive.mailbox(anna.mailbox_id).used == 0


def test_malformed_requests_are_400(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    token = box.login(anna)
    assert box.request("POST", "/session", raw=b"{not json").status == 400
    assert box.request("POST", "/session", [1, 2]).status == 400
    assert box.request("POST", "/session", {"address": ANNA}).status == 400
    assert (
        box.request(
            "POST", "/session", {"address": ANNA, "challenge": "zz" * 32, "signature": "00" * 64}
        ).status
        == 400
    )
    for acks in (
        None,
        [],
        "x",
        [{"id": delivery_id}],
        [{"id": "short", "cipher_hash": "00" * 32, "signature": "00" * 64}],
        [{"id": delivery_id, "cipher_hash": "00" * 31, "signature": "00" * 64}],
        [{"id": delivery_id, "cipher_hash": "00" * 32, "signature": "00" * 63}],
        [{}] * 1001,
    ):
        reply = box.request("POST", "/ack", {"acks": acks}, token=token)
        assert reply.status == 400, acks
    assert _ids(box, anna) == [delivery_id]


# -- the drive going away -------------------------------------------------------------------


def test_an_offline_drive_is_503_with_retry_after(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    token = box.login(anna)
    cipher_hash = _hash(box, delivery_id, anna.mailbox_id)
    box.online = False
    assert box.request("POST", "/challenge").status == 200  # needs no drive
    challenge = box.challenge()
    replies = [
        box.session(ANNA, challenge, anna.key.sign_challenge(ANNA, challenge)),
        box.request("GET", "/messages", token=token),
        box.request("GET", f"/messages/{delivery_id}", token=token),
        box.ack(token, [(delivery_id, cipher_hash)], anna),
    ]
    for reply in replies:
        assert reply.status == 503, reply
        assert int(reply.headers["retry-after"]) > 0
    box.online = True
    assert [m["id"] for m in box.listing(token)] == [delivery_id]


def test_a_closed_drive_is_503_not_a_crash(box: ApiBox) -> None:
    anna = box.person(ANNA)
    box.deliver(ANNA, 1)
    token = box.login(anna)
    box.drive.close()
    for reply in (
        box.request("GET", "/messages", token=token),
        box.request("GET", "/messages/" + "0" * 32, token=token),
    ):
        assert reply.status == 503


# -- logs -----------------------------------------------------------------------------------


def test_logs_name_no_address_token_challenge_signature_or_content(
    box: ApiBox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    challenge = box.challenge()
    signature = anna.key.sign_challenge(ANNA, challenge)
    reply = box.session(ANNA, challenge, signature)
    token = reply.json()["token"]
    bad = box.challenge()
    box.session(ANNA, bad, b"\1" * 64)  # a refused login is logged, still without secrets
    entry = box.listing(token)[0]
    box.request("GET", f"/messages/{delivery_id}", token=token)
    cipher_hash = bytes.fromhex(entry["cipher_hash"])
    ack_sig = anna.key.sign_ack(ANNA, delivery_id, cipher_hash)
    box.request(
        "POST",
        "/ack",
        {
            "acks": [
                {"id": delivery_id, "cipher_hash": cipher_hash.hex(), "signature": ack_sig.hex()}
            ]
        },
        token=token,
    )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "session opened" in text and "acknowledged" in text
    for secret in (
        ANNA,
        "anna",
        token,
        challenge.hex(),
        bad.hex(),
        signature.hex(),
        ack_sig.hex(),
        "message 1",
        "sender1",
        entry["meta"][:40],
    ):
        assert secret not in text, secret


# -- the client library against the real server ---------------------------------------------


def test_client_logs_in_again_when_its_token_expires(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1, 300_000)

    async def scenario() -> tuple[int, int, int]:
        async with api_client.DriveClient(box.url, anna.key, ANNA) as client:
            first = await client.list()
            box.clock.now += box.api.token_ttl + 1
            out = io.BytesIO()
            size, digest = await client.download(delivery_id, out)
            assert digest == first[0].cipher_hash and size == len(out.getvalue())
            box.clock.now += box.api.token_ttl + 1
            deleted = await client.acknowledge([(delivery_id, first[0].cipher_hash)])
            return len(first), size, deleted

    stored = box.drive.mailbox(anna.mailbox_id).used
    count, size, deleted = asyncio.run(scenario())
    assert (count, deleted, size) == (1, 1, stored)
    assert _ids(box, anna) == []


def test_client_errors_say_what_happened(box: ApiBox) -> None:
    anna = box.person(ANNA)
    stranger = crypto.PersonalKey.generate()

    async def login(key: crypto.PersonalKey, url: str) -> None:
        async with api_client.DriveClient(url, key, ANNA) as client:
            await client.list()

    with pytest.raises(api_client.LoginRefused, match="refused the login"):
        asyncio.run(login(stranger, box.url))
    box.online = False
    with pytest.raises(api_client.ServerUnavailable, match="offline"):
        asyncio.run(login(anna.key, box.url))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(api_client.ServerUnavailable, match="cannot reach"):
        asyncio.run(login(anna.key, f"http://127.0.0.1:{closed}"))


def test_http_keepalive_serves_several_requests_on_one_connection(box: ApiBox) -> None:
    anna = box.person(ANNA)
    box.deliver(ANNA, 1)
    token = box.login(anna)
    conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=10)
    for _ in range(3):
        conn.request("GET", f"{API}/messages", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read()) > 0
    conn.close()

"""The drive API's bounds, over real HTTP: hostile bodies, challenge floods, full tables.

Every body a client can send is read and parsed within fixed bounds and refused
with a 4xx JSON error (never a 500, never a traceback in the log); /challenge,
open to anyone, is limited per client key so a flood from one client cannot push
out another's pending challenge; the session table drops its oldest token when
full; a token outlives nothing it was for (a removed mailbox logs it out).
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator

import pytest
from letterbox.drive import Drive
from letterbox.web import driveapi

from tests.web.conftest import ApiBox

ANNA = "anna@example.org"
BEN = "ben@example.org"


@pytest.fixture
def small_box(drive: Drive) -> Iterator[ApiBox]:
    """Small tables, so their limits are reached with a handful of requests."""
    b = ApiBox(
        drive,
        max_challenges=6,
        max_pending_per_client=3,
        challenge_rate=5,
        challenge_window=60,
        max_sessions=2,
    )
    yield b
    b.close()


def _no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


# -- hostile bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b'{"address": ' + b"9" * 5000 + b"}", {}, 400, "digits"),
        (b'{"address": -' + b"1" * 21 + b"}", {}, 400, "digits"),
        (b"[" * 200_000 + b"]" * 200_000, {}, 400, "nested too deeply"),
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, {}, 400, "nested too deeply"),
        (b'{"address": NaN}', {}, 400, "NaN"),
        (b'{"address": "anna"}', {"Content-Type": "application/json; charset=bogus"}, 400, "UTF-8"),
        (
            b'{"address": "anna"}',
            {"Content-Type": "application/json; charset=latin-1"},
            400,
            "UTF-8",
        ),
        (b'{"address": "\xff\xfe"}', {}, 400, "UTF-8"),
        (b'{"address": "' + b"x" * (driveapi.MAX_BODY + 10) + b'"}', {}, 413, "larger than"),
    ],
    ids=[
        "5000-digits",
        "21-digits",
        "deep-array",
        "deep-object",
        "nan",
        "bogus-charset",
        "latin-1",
        "not-utf8",
        "oversized",
    ],
)
def test_a_hostile_body_is_a_clear_json_4xx(
    box: ApiBox,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    caplog.set_level(logging.INFO)
    token = box.login(box.person(ANNA))
    for path, auth in (("/session", None), ("/ack", token)):
        h = {"Content-Type": "application/json", **headers}
        reply = box.request("POST", path, raw=body, headers=h, token=auth)
        assert reply.status == status, (path, reply)
        assert reply.headers["content-type"].startswith("application/json")
        assert says in reply.json()["error"], reply.json()
    _no_error_logged(caplog)
    # Within the bounds it is still JSON: a 20-digit number parses, and is then
    # refused for what it is (not an address).
    reply = box.request("POST", "/session", {"address": 10**19, "challenge": 1.5e300})
    assert reply.status == 400 and "'address'" in reply.json()["error"]


def test_an_oversized_chunked_body_is_413_too(box: ApiBox) -> None:
    """No Content-Length to refuse up front: the read itself stops at the bound."""

    def chunks() -> Iterator[bytes]:
        yield b'{"address": "'
        for _ in range(driveapi.MAX_BODY // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=30)
    try:
        conn.request(
            "POST",
            f"{driveapi.PREFIX}/session",
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert "larger than" in resp.read().decode()
    finally:
        conn.close()


# -- /challenge ---------------------------------------------------------------------------


def test_challenges_are_rate_limited_per_client_with_retry_after(small_box: ApiBox) -> None:
    box = small_box
    for _ in range(3):  # each answered (wrongly), so none stays pending
        challenge = bytes.fromhex(box.request("POST", "/challenge").json()["challenge"])
        assert box.session(ANNA, challenge, b"\0" * 64).status == 401
    assert box.request("POST", "/challenge").status == 200
    assert box.request("POST", "/challenge").status == 200  # the 5th in the window
    refused = box.request("POST", "/challenge")
    assert refused.status == 429
    assert "too many" in refused.json()["error"]
    assert 0 < int(refused.headers["retry-after"]) <= 61
    # Another client is not held back by this one's flood ...
    assert box.request("POST", "/challenge", source="127.0.0.2").status == 200
    # ... and the flooding client may ask again once its window has passed.
    box.clock.now += 61
    assert box.request("POST", "/challenge").status == 200


def test_a_flood_cannot_evict_another_clients_pending_challenge(small_box: ApiBox) -> None:
    """The issue's attack: 4,100 challenges in 1.3 s pushed a pending one out."""
    box = small_box
    anna = box.person(ANNA)
    reply = box.request("POST", "/challenge", source="127.0.0.2")
    assert reply.status == 200
    annas = bytes.fromhex(reply.json()["challenge"])
    # One flooding client: pending bound first (3), then 429 for every further ask.
    statuses = [box.request("POST", "/challenge", source="127.0.0.3").status for _ in range(8)]
    assert statuses == [200] * 3 + [429] * 5
    # Many flooding clients fill the shared table (6): then 503, never an eviction.
    for n in range(4, 8):
        box.request("POST", "/challenge", source=f"127.0.0.{n}")
    full = box.request("POST", "/challenge", source="127.0.0.20")
    assert full.status == 503 and int(full.headers["retry-after"]) > 0
    answered = box.session(ANNA, annas, anna.key.sign_challenge(ANNA, annas))
    assert answered.status == 200, answered
    # Once the flood's challenges expire, the table takes new ones again.
    box.clock.now += box.api.challenge_ttl + 1
    assert box.request("POST", "/challenge", source="127.0.0.20").status == 200


def test_a_client_with_too_many_unanswered_challenges_waits_for_them_to_expire(
    small_box: ApiBox,
) -> None:
    box = small_box
    for _ in range(3):
        assert box.request("POST", "/challenge").status == 200
    refused = box.request("POST", "/challenge")
    assert refused.status == 429 and "unanswered" in refused.json()["error"]
    assert 0 < int(refused.headers["retry-after"]) <= box.api.challenge_ttl + 1
    box.clock.now += box.api.challenge_ttl + 1  # they expire; the rate window too
    assert box.request("POST", "/challenge").status == 200


# -- sessions -----------------------------------------------------------------------------


def test_the_session_table_drops_its_oldest_token_when_full(small_box: ApiBox) -> None:
    box = small_box
    anna, ben = box.person(ANNA), box.person(BEN)
    first = box.login(anna)
    second = box.login(ben)
    assert box.request("GET", "/messages", token=first).status == 200
    third = box.login(anna)  # the table holds 2: the oldest token goes
    reply = box.request("GET", "/messages", token=first)
    assert reply.status == 401 and "unknown or expired" in reply.json()["error"]
    for token in (second, third):
        assert box.request("GET", "/messages", token=token).status == 200
    # Expired tokens are what goes first, before any live one.
    box.clock.now += box.api.token_ttl + 1
    fresh = [box.login(anna), box.login(ben)]
    for token in fresh:
        assert box.request("GET", "/messages", token=token).status == 200


def test_a_token_for_a_removed_mailbox_is_401_and_forgotten(box: ApiBox) -> None:
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    token = box.login(anna)
    cipher_hash = next(s.cipher_hash for s in box.drive.list_sealed(anna.mailbox_id))
    assert box.request("GET", "/messages", token=token).status == 200
    box.drive.remove_mailbox(anna.mailbox_id)
    first = box.request("GET", "/messages", token=token)
    assert first.status == 401 and "no longer exists" in first.json()["error"]
    # The refusal forgot the token: from now on it is unknown everywhere.
    for reply in (
        box.request("GET", "/messages", token=token),
        box.request("GET", f"/messages/{delivery_id}", token=token),
        box.ack(token, [(delivery_id, cipher_hash)], anna),
    ):
        assert reply.status == 401, reply
        assert reply.headers["www-authenticate"].startswith("Letterbox")
        assert "unknown or expired" in reply.json()["error"]
    # A new mailbox of the same address is another mailbox: the old token opens nothing.
    box.person(ANNA)
    box.deliver(ANNA, 2)
    assert box.request("GET", "/messages", token=token).status == 401


@pytest.mark.parametrize("route", ["download", "ack"])
def test_a_removed_mailbox_logs_out_at_every_route(box: ApiBox, route: str) -> None:
    """Not only the listing: a download or an acknowledgement checks the mailbox too."""
    anna = box.person(ANNA)
    delivery_id = box.deliver(ANNA, 1)
    cipher_hash = next(s.cipher_hash for s in box.drive.list_sealed(anna.mailbox_id))
    token = box.login(anna)
    box.drive.remove_mailbox(anna.mailbox_id)
    if route == "download":
        reply = box.request("GET", f"/messages/{delivery_id}", token=token)
    else:
        reply = box.ack(token, [(delivery_id, cipher_hash)], anna)
    assert reply.status == 401 and "no longer exists" in reply.json()["error"], reply

"""The drive API: how `letterbox fetch` and `letterbox bridge` read an end-to-end mailbox.

The box cannot read an end-to-end mailbox: it holds only the owner's public keys.
It hands out what the drive has, sealed metadata and ciphertext, to whoever proves
they hold the mailbox's key, and deletes a message once its owner signs that it is
safely kept elsewhere (docs/design.md, "Reading"). No password or secret key ever crosses
the network; what does cross it (tokens, ciphertext, sealed records) is worthless to
an eavesdropper, and a stolen token can list and download ciphertext but never
delete anything.

Routes (JSON bodies and answers; errors are `{"error": "sentence for a person"}`):

    POST /api/v1/drive/challenge
        -> 200 {"challenge": hex(32 random bytes), "expires_in": seconds}
    POST /api/v1/drive/session  {"address", "challenge", "signature"}
        -> 200 {"token": hex(32), "expires_in": seconds, "address": normalised address}
    GET  /api/v1/drive/messages                      (Authorization: Bearer TOKEN)
        -> 200 {"messages": [{"id", "blob_id", "plain_size", "stored_size", "received",
                              "cipher_hash": hex, "meta": base64}, ...]}  arrival order
    GET  /api/v1/drive/messages/{id}                 (Authorization: Bearer TOKEN)
        -> 200 application/octet-stream, the blob file exactly, with Content-Length
    POST /api/v1/drive/ack  {"acks": [{"id", "cipher_hash", "signature"}, ...]}  (Bearer)
        -> 200 {"deleted": n, "already_gone": m}; all of the batch or none of it

Authentication. A challenge is 32 random bytes, valid for `CHALLENGE_TTL` seconds and
for one answer only: it is consumed by the first /session request naming it, right
or wrong. The answer is `crypto.PersonalKey.sign_challenge(address, challenge)`, an
Ed25519 signature by the identity key the mailbox was created with over
"letterbox-api-auth-v1" 00 ‖ address ‖ 00 ‖ challenge. A good answer buys a random
bearer token for `TOKEN_TTL` seconds, bound to that mailbox; the box keeps only a
hash of it, in memory (a restart logs everyone out). Every acknowledgement carries,
per message, `crypto.PersonalKey.sign_ack(address, id, cipher_hash)`: the owner's
signature over "letterbox-api-ack-v1" 00 ‖ address ‖ 00 ‖ id (16 raw bytes) ‖ hash.
Replaying one only repeats a deletion its owner asked for, so it needs no nonce.

Status codes, chosen deliberately:

* 400: a malformed request (bad JSON, an id that is not 32 hex digits, a hash or a
  signature of the wrong length). Bodies are read and parsed within fixed bounds
  (`_json`): UTF-8 only (RFC 8259 §8.1; a `charset` other than UTF-8 is 400),
  integers of at most `MAX_INT_DIGITS` digits, no NaN or Infinity, nesting no
  deeper than Python's parser can go; anything else is a 400 saying what is wrong.
* 413: a body over `MAX_BODY` (the largest real one, 1,000 acknowledgements, is
  about 300 KB).
* 401 (with `WWW-Authenticate: Letterbox`): not authenticated. No token, an unknown or
  expired token, a token whose mailbox is gone; at /session a challenge that is unknown,
  used or expired, or an answer that does not verify. An unknown address, a mailbox that
  is not end-to-end and a signature by another key all get the same 401, so the API does
  not tell which addresses exist.
* 403: authenticated, but this deletion is not signed by the mailbox's key: nothing
  of the batch is deleted.
* 404: no such message in the token's mailbox (never delivered, already acknowledged,
  or another mailbox's); the ids of other mailboxes are indistinguishable from none.
* 409: an acknowledgement whose hash is not the stored ciphertext's; nothing of the
  batch is deleted and the message is offered again.
* 429 (with `Retry-After`): at /challenge, a client (`ratelimit.client_key`: one
  IPv4 address, or one IPv6 /64) asking for more than `CHALLENGE_RATE` challenges
  in `CHALLENGE_WINDOW` seconds, or holding `MAX_PENDING_PER_CLIENT` unanswered
  ones. /challenge is open to anyone (it comes before any proof), so these bounds
  are what keep one client's flood from pushing out another client's pending
  challenge: the shared table (`MAX_CHALLENGES`) never evicts a pending challenge;
  when it is full of them, /challenge answers 503 until the oldest expires.
* 500: the drive has a row whose blob is missing (damage: `letterbox drive check`).
* 503 (with `Retry-After`): the drive is offline or failing; come back later (or,
  at /challenge, the table of pending challenges is full).

Logs name mailboxes and messages by their random ids only (addresses in debug mode);
never a token, challenge, signature, address (outside debug) or anything sealed.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from aiohttp import web

from letterbox import crypto, logsafe
from letterbox.drive import Drive, DriveUnavailable, MailboxNotFound, MessageDamaged
from letterbox.ratelimit import RequestRate, client_key

log = logging.getLogger("letterbox.web.drive")

PREFIX = "/api/v1/drive"
CHALLENGE_TTL = 60.0  # seconds to answer a challenge
TOKEN_TTL = 600.0  # seconds a session token lasts (a client logs in again after)
MAX_CHALLENGES = 4096  # outstanding challenges, all clients together (never evicted)
# Per client key: a login needs one challenge; `letterbox fetch` logs in once per run,
# `letterbox bridge` once per mail-client session or TOKEN_TTL. The rate is generous
# (the flood the issue measured was 4,100 in 1.3 s); the pending bound is what keeps
# a flood from pushing out another client's challenge.
CHALLENGE_RATE = 300  # challenges per client within each CHALLENGE_WINDOW
CHALLENGE_WINDOW = 60.0  # seconds
MAX_PENDING_PER_CLIENT = 8  # issued, unanswered and unexpired, per client
MAX_SESSIONS = 1024  # live tokens; the oldest goes first when full
MAX_ACKS = 1000  # acknowledgements in one batch
MAX_BODY = 512 * 1024  # bytes of a JSON request body
MAX_INT_DIGITS = 20  # digits of a JSON integer (no field is a number; 2**64 has 20)
STREAM_CHUNK = 256 * 1024
RETRY_AFTER = 30  # seconds, for 503

_DECOY_KEY = crypto.PersonalKey.generate().identity_key  # verifies nothing anyone sent
_ID = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")

DriveGetter = Callable[[], Drive | None]


class Refusal(Exception):
    """A request refused with `status`; the text is for the person at the client."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def _unauthorized(text: str) -> Refusal:
    return Refusal(401, text, {"WWW-Authenticate": 'Letterbox realm="drive"'})


def _unavailable(text: str = "the drive is offline; try again later") -> Refusal:
    return Refusal(503, text, {"Retry-After": str(RETRY_AFTER)})


@dataclass(frozen=True)
class Pending:
    """An issued challenge: when it expires, and the client key it was issued to."""

    expires: float
    client: str


@dataclass(frozen=True)
class Session:
    mailbox_id: str
    address: str
    identity_key: bytes
    expires: float


Handler = Callable[["DriveApi", web.Request], Awaitable[web.StreamResponse]]


def _api(fn: Handler) -> Callable[[DriveApi, web.Request], Awaitable[web.StreamResponse]]:
    """Turn refusals and drive trouble into the documented status codes."""

    @functools.wraps(fn)
    async def wrapper(self: DriveApi, request: web.Request) -> web.StreamResponse:
        try:
            return await fn(self, request)
        except Refusal as r:
            return web.json_response({"error": r.text}, status=r.status, headers=r.headers)
        except MailboxNotFound:
            return web.json_response({"error": "no such message in this mailbox"}, status=404)
        except MessageDamaged as exc:
            log.error("drive API: %s", exc)
            return web.json_response(
                {"error": "this message is damaged on the drive (run `letterbox drive check`)"},
                status=500,
            )
        except (DriveUnavailable, sqlite3.Error, OSError) as exc:
            log.warning("drive API: drive unavailable (%s)", type(exc).__name__)
            busy = _unavailable()
            return web.json_response({"error": busy.text}, status=busy.status, headers=busy.headers)

    return wrapper


class DriveApi:
    """The routes under /api/v1/drive, with their challenges and sessions (in memory)."""

    def __init__(
        self,
        drive: DriveGetter,
        *,
        debug: bool = False,
        clock: Callable[[], float] = time.monotonic,
        challenge_ttl: float = CHALLENGE_TTL,
        token_ttl: float = TOKEN_TTL,
        max_challenges: int = MAX_CHALLENGES,
        max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
        challenge_rate: int = CHALLENGE_RATE,
        challenge_window: float = CHALLENGE_WINDOW,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._drive = drive
        self._debug = debug
        self._clock = clock
        self.challenge_ttl = challenge_ttl
        self.token_ttl = token_ttl
        self.max_challenges = max_challenges
        self.max_pending_per_client = max_pending_per_client
        self.max_sessions = max_sessions
        self._challenges: OrderedDict[bytes, Pending] = OrderedDict()  # challenge -> pending
        self._pending: Counter[str] = Counter()  # client key -> challenges in _challenges
        # Every challenge asked for counts, answered or not.
        self._challenge_rate = RequestRate(challenge_rate, challenge_window, clock=clock)
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()  # hash(token) -> session

    def register(self, app: web.Application) -> None:
        app.router.add_post(f"{PREFIX}/challenge", self.challenge)
        app.router.add_post(f"{PREFIX}/session", self.session)
        app.router.add_get(f"{PREFIX}/messages", self.messages)
        app.router.add_get(f"{PREFIX}/messages/{{id}}", self.ciphertext)
        app.router.add_post(f"{PREFIX}/ack", self.ack)

    # -- helpers -----------------------------------------------------------------------

    def _open_drive(self) -> Drive:
        drive = self._drive()
        if drive is None:
            raise _unavailable()
        return drive

    def _who(self, session: Session) -> str:
        return f"{session.mailbox_id} ({session.address})" if self._debug else session.mailbox_id

    def _prune_sessions(self, now: float) -> None:
        # Entries are in issue order with one lifetime, so the expired ones are in front.
        store = self._sessions
        while store and next(iter(store.values())).expires <= now:
            store.popitem(last=False)
        while len(store) >= self.max_sessions:
            store.popitem(last=False)

    def _prune_challenges(self, now: float) -> None:
        """Forget expired challenges (only those: a pending one is never evicted)."""
        store = self._challenges
        while store:
            value, pending = next(iter(store.items()))
            if pending.expires > now:
                break
            del store[value]
            self._release(pending)

    def _take_challenge(self, value: bytes) -> Pending | None:
        pending = self._challenges.pop(value, None)
        if pending is not None:
            self._release(pending)
        return pending

    def _release(self, pending: Pending) -> None:
        self._pending[pending.client] -= 1
        if self._pending[pending.client] <= 0:
            del self._pending[pending.client]

    def _refuse_challenge(self, request: web.Request, why: str, wait: float) -> Refusal:
        log.info(
            "drive API: challenge refused: %s%s",
            why,
            f" (client {logsafe.escape(request.remote)})" if self._debug else "",
        )
        return Refusal(
            429,
            f"too many login attempts from this device ({why}); try again later",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def _authenticate(self, request: web.Request) -> Session:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _HEX64.match(token):
            raise _unauthorized("log in first: POST /api/v1/drive/challenge, then /session")
        key = _token_key(bytes.fromhex(token))
        session = self._sessions.get(key)
        if session is None or session.expires <= self._clock():
            self._sessions.pop(key, None)
            raise _unauthorized("the session token is unknown or expired: log in again")
        try:
            self._open_drive().mailbox(session.mailbox_id)
        except MailboxNotFound:
            self._sessions.pop(key, None)
            raise _unauthorized("this mailbox no longer exists") from None
        return session

    # -- logging in --------------------------------------------------------------------

    @_api
    async def challenge(self, request: web.Request) -> web.StreamResponse:
        now = self._clock()
        self._prune_challenges(now)
        client = client_key(request.remote)
        if self._pending[client] >= self.max_pending_per_client:
            oldest = min(p.expires for p in self._challenges.values() if p.client == client)
            raise self._refuse_challenge(request, "too many unanswered challenges", oldest - now)
        wait = self._challenge_rate.take(client)
        if wait:
            raise self._refuse_challenge(request, "too many challenges", wait)
        if len(self._challenges) >= self.max_challenges:
            oldest = next(iter(self._challenges.values())).expires
            log.warning("drive API: %d challenges pending; refusing more", len(self._challenges))
            raise Refusal(
                503,
                "the box is answering too many logins at once; try again shortly",
                {"Retry-After": str(max(1, math.ceil(oldest - now)))},
            )
        value = secrets.token_bytes(32)
        self._challenges[value] = Pending(now + self.challenge_ttl, client)
        self._pending[client] += 1
        return web.json_response({"challenge": value.hex(), "expires_in": self.challenge_ttl})

    @_api
    async def session(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        address, challenge, signature = (body.get(k) for k in ("address", "challenge", "signature"))
        if not isinstance(address, str) or not address or len(address) > 512:
            raise Refusal(400, "'address' must be the mailbox's address")
        if not isinstance(challenge, str) or not _HEX64.match(challenge):
            raise Refusal(400, "'challenge' must be the 64 hex digits /challenge gave")
        if not isinstance(signature, str) or not _HEX128.match(signature):
            raise Refusal(400, "'signature' must be 128 hex digits (an Ed25519 signature)")
        pending = self._take_challenge(bytes.fromhex(challenge))  # single use, always
        if pending is None or pending.expires <= self._clock():
            log.info("drive API: login refused: challenge unknown, used or expired")
            raise _unauthorized("the challenge is unknown, used or expired: ask for a new one")
        mailbox = self._open_drive().find_mailbox(address)
        if mailbox is not None and mailbox.end_to_end and mailbox.auth_key is not None:
            key, signed_address = mailbox.auth_key, mailbox.address
        else:
            # Refusals cost one signature check whether or not the mailbox exists, so
            # their timing does not tell which addresses do.
            mailbox, key, signed_address = None, _DECOY_KEY, address
        verified = crypto.verify_challenge(
            key, signed_address, bytes.fromhex(challenge), bytes.fromhex(signature)
        )
        if mailbox is None or not verified:
            log.warning(
                "drive API: login refused: the answer to a challenge does not verify%s",
                f" (for {logsafe.escape(address)})" if self._debug else "",
            )
            raise _unauthorized(
                "the signature does not answer the challenge with this mailbox's key"
            )
        now = self._clock()
        self._prune_sessions(now)
        token = secrets.token_bytes(32)
        session = Session(mailbox.id, mailbox.address, key, now + self.token_ttl)
        self._sessions[_token_key(token)] = session
        log.info("drive API: session opened for mailbox %s", self._who(session))
        return web.json_response(
            {"token": token.hex(), "expires_in": self.token_ttl, "address": mailbox.address}
        )

    # -- reading -----------------------------------------------------------------------

    @_api
    async def messages(self, request: web.Request) -> web.StreamResponse:
        session = await self._authenticate(request)
        drive = self._open_drive()
        rows = await asyncio.to_thread(drive.list_sealed, session.mailbox_id)
        return web.json_response(
            {
                "messages": [
                    {
                        "id": r.id,
                        "blob_id": r.blob_id,
                        "plain_size": r.plain_size,
                        "stored_size": r.stored_size,
                        "received": r.received,
                        "cipher_hash": r.cipher_hash.hex(),
                        "meta": base64.b64encode(r.meta).decode(),
                    }
                    for r in rows
                ]
            }
        )

    @_api
    async def ciphertext(self, request: web.Request) -> web.StreamResponse:
        session = await self._authenticate(request)
        delivery_id = request.match_info["id"]
        if not _ID.match(delivery_id):
            raise Refusal(404, "no such message in this mailbox")
        drive = self._open_drive()
        try:
            fh = await asyncio.to_thread(drive.open_ciphertext, session.mailbox_id, delivery_id)
        except MailboxNotFound:
            raise Refusal(404, "no such message in this mailbox") from None
        try:
            return await self._stream(request, fh, delivery_id)
        finally:
            await asyncio.to_thread(fh.close)

    async def _stream(
        self, request: web.Request, fh: BinaryIO, delivery_id: str
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        size = (await asyncio.to_thread(os.fstat, fh.fileno())).st_size
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        # From here on the status line is sent: trouble can only cut the body short,
        # which the client sees as fewer bytes than Content-Length (and its hash fails).
        left = size
        try:
            while left > 0:
                chunk = await loop.run_in_executor(None, _read, fh, min(STREAM_CHUNK, left))
                if not chunk:
                    log.error("drive API: the blob of delivery %s ended early", delivery_id)
                    break
                await resp.write(chunk)
                left -= len(chunk)
        except ConnectionResetError:
            log.info("drive API: the client left during a download")
            return resp
        except OSError as exc:
            log.error("drive API: reading the blob of delivery %s failed (%s)", delivery_id, exc)
        if left:
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    # -- deleting ----------------------------------------------------------------------

    @_api
    async def ack(self, request: web.Request) -> web.StreamResponse:
        session = await self._authenticate(request)
        body = await _json(request)
        acks = body.get("acks")
        if not isinstance(acks, list) or not 1 <= len(acks) <= MAX_ACKS:
            raise Refusal(400, f"'acks' must be a list of 1 to {MAX_ACKS} acknowledgements")
        wanted: dict[str, bytes] = {}
        for item in acks:
            if not isinstance(item, dict):
                raise Refusal(400, "each acknowledgement is {id, cipher_hash, signature}")
            delivery_id, hash_hex, sig_hex = (
                item.get(k) for k in ("id", "cipher_hash", "signature")
            )
            if not isinstance(delivery_id, str) or not _ID.match(delivery_id):
                raise Refusal(400, "'id' must be a message id (32 hex digits)")
            if not isinstance(hash_hex, str) or not _HEX64.match(hash_hex):
                raise Refusal(400, "'cipher_hash' must be 64 hex digits")
            if not isinstance(sig_hex, str) or not _HEX128.match(sig_hex):
                raise Refusal(400, "'signature' must be 128 hex digits")
            cipher_hash = bytes.fromhex(hash_hex)
            if not crypto.verify_ack(
                session.identity_key,
                session.address,
                delivery_id,
                cipher_hash,
                bytes.fromhex(sig_hex),
            ):
                log.warning(
                    "drive API: mailbox %s: an acknowledgement is not signed by its key",
                    self._who(session),
                )
                raise Refusal(
                    403,
                    f"the acknowledgement of {delivery_id} is not signed by "
                    "this mailbox's key; nothing was deleted",
                )
            if wanted.setdefault(delivery_id, cipher_hash) != cipher_hash:
                raise Refusal(409, f"{delivery_id} is acknowledged with two different hashes")
        drive = self._open_drive()
        deleted, gone = await asyncio.to_thread(_acknowledge, drive, session.mailbox_id, wanted)
        log.info(
            "drive API: mailbox %s: %d messages acknowledged and deleted",
            self._who(session),
            deleted,
        )
        return web.json_response({"deleted": deleted, "already_gone": gone})


def _acknowledge(drive: Drive, mailbox_id: str, wanted: dict[str, bytes]) -> tuple[int, int]:
    """Delete the batch if every hash matches; otherwise nothing (409). Runs in a thread."""
    if len(wanted) == 1:  # what fetch sends: one indexed lookup, not a listing
        ((delivery_id, cipher_hash),) = wanted.items()
        try:
            drive.sealed_meta(mailbox_id, delivery_id)
        except MailboxNotFound:
            return 0, 1
        if not drive.acknowledge(mailbox_id, delivery_id, cipher_hash):
            raise Refusal(
                409,
                f"the hash does not match the stored ciphertext of {delivery_id}; "
                "nothing was deleted",
            )
        return 1, 0
    stored = {s.id: s.cipher_hash for s in drive.list_sealed(mailbox_id)}
    bad = [i for i, h in wanted.items() if i in stored and stored[i] != h]
    if bad:
        raise Refusal(
            409,
            f"the hash does not match the stored ciphertext of {', '.join(bad)}; "
            "nothing was deleted",
        )
    present = [i for i in wanted if i in stored]
    deleted = drive.delete(mailbox_id, present) if present else 0
    return deleted, len(wanted) - deleted


def _read(fh: BinaryIO, n: int) -> bytes:
    return fh.read(n)


def _token_key(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=32).digest()


def _bounded_int(digits: str) -> int:
    # Python refuses >4,300 digits only by a process-wide default (which an
    # environment variable can lift), and converting is quadratic: refuse early.
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number longer than {MAX_INT_DIGITS} digits")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


async def _json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read and parsed within the bounds in the docstring."""
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):  # RFC 8259 §8.1
        raise Refusal(400, "the request body must be JSON in UTF-8")
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise Refusal(413, f"the request body is larger than {MAX_BODY} bytes")
    data = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(data)):
        data += chunk
        if len(data) > MAX_BODY:  # a chunked body says no length up front
            raise Refusal(413, f"the request body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(data.decode("utf-8"), parse_int=_bounded_int, parse_constant=_no_constant)
    except UnicodeDecodeError:  # RFC 8259 §8.1: JSON between systems is UTF-8
        raise Refusal(400, "the request body must be JSON in UTF-8") from None
    except RecursionError:
        raise Refusal(400, "the request body's JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and the two refusals above
        raise Refusal(400, f"the request body must be JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Refusal(400, "the request body must be a JSON object")
    return body


DRIVE_API: web.AppKey[DriveApi] = web.AppKey("drive_api", DriveApi)


def setup(
    app: web.Application, drive: DriveGetter, *, debug: bool = False, **options: Any
) -> DriveApi:
    """Mount the drive API into `app` (the web server's, shared with the setup page)."""
    api = DriveApi(drive, debug=debug, **options)
    api.register(app)
    app[DRIVE_API] = api
    return api


__all__ = ["DRIVE_API", "PREFIX", "DriveApi", "Refusal", "setup"]

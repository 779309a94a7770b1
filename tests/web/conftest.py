"""A real web server on 127.0.0.1 in front of a real drive, for the drive API tests.

The server runs on its own event loop in a thread, so tests talk to it with plain
blocking HTTP (http.client) exactly as any client would, and look at the drive
directly. The API's clock is a `Clock` the tests move forward, so expiry is tested
without sleeping.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from letterbox import crypto
from letterbox.drive import Drive
from letterbox.web import driveapi
from letterbox.web.server import WebServer

from tests.helpers import PASSWORD, message

API = driveapi.PREFIX


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Person:
    address: str
    key: crypto.PersonalKey
    mailbox_id: str


class ApiBox:
    """A drive, the web server with the drive API, and helpers to speak HTTP to it."""

    def __init__(self, drive: Drive, **options: Any) -> None:
        self.drive = drive
        self.online = True
        self.clock = Clock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = WebServer(host="127.0.0.1", port=0, shutdown_grace=1)
        self.api = driveapi.setup(
            self.server.app,
            lambda: self.drive if self.online else None,
            clock=self.clock,
            **options,
        )
        self.call(self.server.start())
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- HTTP ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        source: str | None = None,
    ) -> Reply:
        """One request on a new connection; `source`: the client's loopback address
        (any of 127.0.0.0/8), so tests can be several clients."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(source, 0) if source else None
        )
        try:
            h = dict(headers or {})
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            if token is not None:
                h["Authorization"] = f"Bearer {token}"
            conn.request(method, API + path, body=data, headers=h)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def challenge(self) -> bytes:
        reply = self.request("POST", "/challenge")
        assert reply.status == 200, reply
        return bytes.fromhex(reply.json()["challenge"])

    def session(self, address: str, challenge: bytes, signature: bytes) -> Reply:
        return self.request(
            "POST",
            "/session",
            {
                "address": address,
                "challenge": challenge.hex(),
                "signature": signature.hex(),
            },
        )

    def login(self, person: Person) -> str:
        challenge = self.challenge()
        reply = self.session(
            person.address, challenge, person.key.sign_challenge(person.address, challenge)
        )
        assert reply.status == 200, reply
        return str(reply.json()["token"])

    def listing(self, token: str) -> list[dict[str, Any]]:
        reply = self.request("GET", "/messages", token=token)
        assert reply.status == 200, reply
        return list(reply.json()["messages"])

    def ack(
        self,
        token: str,
        items: list[tuple[str, bytes]],
        person: Person,
        signer: crypto.PersonalKey | None = None,
    ) -> Reply:
        signer = signer or person.key
        return self.request(
            "POST",
            "/ack",
            {
                "acks": [
                    {
                        "id": i,
                        "cipher_hash": h.hex(),
                        "signature": signer.sign_ack(person.address, i, h).hex(),
                    }
                    for i, h in items
                ]
            },
            token=token,
        )

    # -- the drive side ----------------------------------------------------------------

    def person(self, address: str) -> Person:
        key = crypto.PersonalKey.generate()
        mailbox, _ = self.drive.create_mailbox(
            address, quota=1 << 30, identity_key=key.identity_key
        )
        return Person(mailbox.address, key, mailbox.id)

    def password_mailbox(self, address: str) -> str:
        mailbox, _ = self.drive.create_mailbox(address, quota=1 << 30, password=PASSWORD)
        return mailbox.id

    def deliver(self, address: str, n: int, size: int = 0) -> str:
        return self.drive.deliver("sender@example.net", [address], message(n, size))[0]


@pytest.fixture
def box(drive: Drive) -> Iterator[ApiBox]:
    b = ApiBox(drive)
    yield b
    b.close()

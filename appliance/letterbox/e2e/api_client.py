"""A small client of the drive API (letterbox.web.driveapi), on the person's computer.

It logs in by signing the box's challenge with the person's key, lists the sealed
metadata, downloads ciphertext into a file, and acknowledges with signed hashes.
It trusts nothing it receives: callers verify every record and every byte
(letterbox.e2e.verify) before they use or acknowledge anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp

from letterbox import crypto
from letterbox.drive.records import SealedDelivery

API = "/api/v1/drive"
DOWNLOAD_CHUNK = 256 * 1024


class ApiError(Exception):
    """The drive API refused or failed; the message says what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnavailable(ApiError):
    """Cannot reach the box, or its drive is offline (503): try again later."""


class LoginRefused(ApiError):
    """The box does not accept this key for this mailbox (401)."""


class AckRefused(ApiError):
    """An acknowledgement was refused (403 not signed right, 409 hash mismatch)."""


# One message as the box lists it: the drive's own record, sent as JSON. On this side
# nothing in it is trusted until letterbox.e2e.verify has checked it.
Listed = SealedDelivery


def _listed(doc: Any) -> Listed:
    try:
        return Listed(
            id=str(doc["id"]),
            blob_id=str(doc["blob_id"]),
            plain_size=int(doc["plain_size"]),
            stored_size=int(doc["stored_size"]),
            received=int(doc["received"]),
            cipher_hash=bytes.fromhex(doc["cipher_hash"]),
            meta=base64.b64decode(doc["meta"], validate=True),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ApiError(f"the box sent a malformed listing ({exc})") from None


class DriveClient:
    """One mailbox's view of the drive API. Use as `async with DriveClient(...) as c:`."""

    def __init__(
        self,
        server: str,
        key: crypto.PersonalKey,
        address: str,
        *,
        connect_timeout: float = 15,
        read_timeout: float = 120,
    ) -> None:
        self.server = server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            self.server = "http://" + self.server
        self.key = key
        self.address = address
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._http: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    async def __aenter__(self) -> DriveClient:
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- plumbing ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.server}{API}{path}"

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("DriveClient used outside `async with`")
        return self._http

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            message = str((await resp.json(content_type=None))["error"])
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            message = resp.reason or "error"
        where = f"the box ({self.server})"
        if resp.status == 503:
            raise ServerUnavailable(f"{where}: {message}", resp.status)
        if resp.status == 401:
            raise LoginRefused(f"{where} refused the login: {message}", resp.status)
        if resp.status in (403, 409):
            raise AckRefused(f"{where}: {message}", resp.status)
        raise ApiError(f"{where} answered {resp.status}: {message}", resp.status)

    async def _call(self, method: str, path: str, *, json: Any = None, auth: bool = True) -> Any:
        """A JSON request; with `auth`, logs in (again) when the token is missing or stale."""
        for attempt in (1, 2):
            headers = {}
            if auth:
                headers["Authorization"] = f"Bearer {await self._ensure_token()}"
            try:
                async with self.http.request(
                    method, self._url(path), json=json, headers=headers
                ) as resp:
                    if auth and resp.status == 401 and attempt == 1:
                        self._token = None
                        continue
                    await self._raise_for(resp)
                    return await resp.json(content_type=None)
            except aiohttp.ClientError as exc:
                raise ServerUnavailable(f"cannot reach the box at {self.server} ({exc})") from None
            except (TimeoutError, ValueError):
                raise ServerUnavailable(f"no usable answer from the box at {self.server}") from None
        raise AssertionError("unreachable")

    async def _ensure_token(self) -> str:
        async with self._login_lock:
            if self._token is None:
                await self.login()
            assert self._token is not None
            return self._token

    # -- the API -----------------------------------------------------------------------

    async def ping(self) -> None:
        """Whether the box's drive API answers at all (asking for a challenge needs no key)."""
        await self._call("POST", "/challenge", auth=False)

    async def login(self) -> None:
        """Answer a fresh challenge with the key; nothing secret crosses the network."""
        doc = await self._call("POST", "/challenge", auth=False)
        try:
            challenge = bytes.fromhex(doc["challenge"])
        except (KeyError, TypeError, ValueError):
            raise ApiError("the box sent a malformed challenge") from None
        signature = self.key.sign_challenge(self.address, challenge)
        doc = await self._call(
            "POST",
            "/session",
            auth=False,
            json={
                "address": self.address,
                "challenge": challenge.hex(),
                "signature": signature.hex(),
            },
        )
        try:
            self._token = str(doc["token"])
        except (KeyError, TypeError):
            raise ApiError("the box sent a malformed session") from None

    async def list(self) -> list[Listed]:
        doc = await self._call("GET", "/messages")
        try:
            return [_listed(m) for m in doc["messages"]]
        except (KeyError, TypeError):
            raise ApiError("the box sent a malformed listing") from None

    async def download(
        self, delivery_id: str, out: BinaryIO, *, progress: Callable[[int], None] | None = None
    ) -> tuple[int, bytes]:
        """Write a message's ciphertext to `out`; (bytes written, their BLAKE2b-256).

        A connection cut short of Content-Length raises ServerUnavailable; the caller
        compares size and hash with the signed metadata.
        """
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self._ensure_token()}"}
            try:
                async with self.http.get(
                    self._url(f"/messages/{delivery_id}"), headers=headers
                ) as resp:
                    if resp.status == 401 and attempt == 1:
                        self._token = None
                        continue
                    await self._raise_for(resp)
                    digest = crypto.hasher()
                    size = 0
                    async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        await loop.run_in_executor(None, out.write, chunk)
                        size += len(chunk)
                        if progress is not None:
                            progress(size)
                    return size, digest.digest()
            except aiohttp.ClientError as exc:
                raise ServerUnavailable(
                    f"the download of {delivery_id} from {self.server} failed ({exc})"
                ) from None
            except TimeoutError:
                raise ServerUnavailable(
                    f"the download of {delivery_id} from {self.server} timed out"
                ) from None
        raise AssertionError("unreachable")

    async def acknowledge(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Delete these (id, cipher hash) pairs on the box, all or none; how many went.

        Only call it once the messages are safely stored: this is the deletion.
        """
        acks = [
            {
                "id": i,
                "cipher_hash": h.hex(),
                "signature": self.key.sign_ack(self.address, i, h).hex(),
            }
            for i, h in items
        ]
        doc = await self._call("POST", "/ack", json={"acks": acks})
        return int(doc.get("deleted", 0)) if isinstance(doc, dict) else 0

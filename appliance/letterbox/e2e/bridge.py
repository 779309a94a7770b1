"""`letterbox bridge`: an end-to-end mailbox as POP3 on 127.0.0.1, for a desktop mail client.

LEAP's local-server model: the mail client talks plain POP3 to a server on the
person's own computer, and that server holds the key, reads the box's drive API,
verifies and decrypts. The POP3 protocol itself is the box's (letterbox.pop3:
Pop3Listener, Pop3Session); this module only supplies its maildrop:

* **Login**: user name = the mailbox address in the key file; password = the key
  file's passphrase. Each login unlocks the key (Argon2id, off the event loop) for
  that session only and forgets it at the end of the session; the bridge itself
  holds no secret between sessions and needs no terminal to start. A wrong
  passphrase gets POP3's usual [AUTH] refusal, after a delay, and repeated failures
  are throttled like the box's own POP3 logins. (Chosen over a random local password
  printed at start: that would change at every start and have to be retyped into the
  mail client, while the passphrase already protects the key file on this computer.)
* **Listing**: at login the bridge logs in to the box with the key, lists the sealed
  records and verifies every one (verify.check_listing). A record that fails is
  left out of the POP3 listing, reported loudly on the bridge's stderr, and stays
  on the box untouched, so one forged or damaged message does not stop the client
  from reading the others.
* **RETR/TOP**: the ciphertext is downloaded into an anonymous temporary file (only
  ciphertext ever touches the disk), its size and hash are checked against the
  signed record before a single byte is sent, then it is decrypted chunk by chunk
  (every chunk authenticated) as the client reads. A tampered blob is -ERR
  [SYS/PERM], never a message.
* **DELE + QUIT**: the UPDATE state acknowledges the batch on the box, signed and by
  hash, all or nothing (the drive API's batch acknowledgement); only then +OK.
* Retrieved-marks are not sent to the box (the drive API has no route for them);
  the box's eviction then treats bridge-read mail as unread, which only makes it
  keep such mail longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from nacl.signing import VerifyKey

from letterbox import crypto
from letterbox.drive.records import normalize_address
from letterbox.e2e import verify
from letterbox.e2e.api_client import AckRefused, ApiError, DriveClient, ServerUnavailable
from letterbox.pop3 import (
    Entry,
    LoginRefused,
    LoginThrottled,
    MailboxInUse,
    MaildropUnavailable,
    MessageGone,
    MessageUnreadable,
    Pop3Listener,
    SessionOptions,
)
from letterbox.ratelimit import FailureLimiter

log = logging.getLogger("letterbox.bridge")

DEFAULT_PORT = 11110
FAILURE_DELAY = 1.0  # seconds before a refused login is answered
SHUTDOWN_GRACE = 10.0


class RemoteAuthenticator:
    """POP3 logins for the one mailbox of a key file (letterbox.pop3.Authenticator)."""

    def __init__(
        self,
        key_file: Path,
        server: str,
        *,
        failure_delay: float = FAILURE_DELAY,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.key_file = key_file
        self.server = server
        self.address = normalize_address(verify.key_file_address(key_file))
        self.failure_delay = failure_delay
        self.limiter = limiter or FailureLimiter()
        self.in_use = False

    async def login(self, user: str, password: str, client: str) -> RemoteMaildrop:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.limiter.blocked(client):
            await self._pad(started)
            raise LoginThrottled
        try:
            right_user = normalize_address(user) == self.address
        except ValueError:
            right_user = False
        key: crypto.PersonalKey | None = None
        if right_user:
            try:
                key, _, box_key = await asyncio.to_thread(
                    verify.unlock_key_file, self.key_file, password
                )
            except verify.WrongPassphrase:
                key = None
            except verify.KeyFileError as exc:
                log.error("%s", exc)
                raise MaildropUnavailable from None
        if key is None:
            self.limiter.failed(client)
            await self._pad(started)
            raise LoginRefused
        if self.in_use:
            raise MailboxInUse
        self.in_use = True
        api = DriveClient(self.server, key, self.address)
        await api.__aenter__()
        try:
            await api.login()
        except BaseException as exc:
            await api.close()
            self.in_use = False
            if isinstance(exc, ServerUnavailable):
                log.warning("%s", exc)
                raise MaildropUnavailable from None
            if isinstance(exc, ApiError):
                log.error("%s (is this the right box and key file?)", exc)
                raise MaildropUnavailable from None
            raise
        return RemoteMaildrop(self, api, key, box_key)

    async def _pad(self, started: float) -> None:
        wait = started + self.failure_delay - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)


class RemoteMaildrop:
    """One POP3 session's view of the mailbox, through the drive API (pop3.Maildrop)."""

    def __init__(
        self,
        auth: RemoteAuthenticator,
        api: DriveClient,
        key: crypto.PersonalKey,
        box_key: VerifyKey,
    ) -> None:
        self._auth = auth
        self._api: DriveClient | None = api
        self._key = key
        self._box_key = box_key
        self._metas: dict[str, crypto.DeliveryMeta] = {}
        self.refused: list[verify.Refused] = []

    def _client(self) -> DriveClient:
        if self._api is None:
            raise MaildropUnavailable
        return self._api

    async def entries(self) -> list[Entry]:
        try:
            listing = await self._client().list()
        except ApiError as exc:
            log.warning("%s", exc)
            raise MaildropUnavailable from None
        entries = []
        for listed in listing:
            try:
                meta = verify.check_listing(listed, self._key, self._box_key)
            except verify.Refused as refused:
                self.refused.append(refused)
                log.error(
                    "REFUSED %s; it is not offered to the mail client and stays on the box", refused
                )
                continue
            self._metas[listed.id] = meta
            entries.append(Entry(listed.id, meta.plain_size))
        return entries

    async def read(self, uid: str) -> AsyncIterator[bytes]:
        meta = self._metas.get(uid)
        if meta is None:
            raise MessageGone
        api = self._client()
        spool = await asyncio.to_thread(tempfile.TemporaryFile, "w+b", prefix="letterbox-bridge-")
        try:
            try:
                size, digest = await api.download(uid, spool)
                verify.check_ciphertext(meta, size, digest)
            except ServerUnavailable as exc:
                log.warning("%s", exc)
                raise MaildropUnavailable from None
            except ApiError as exc:
                if exc.status == 404:
                    raise MessageGone from None
                log.error("%s", exc)
                raise MaildropUnavailable from None
            except verify.Refused as refused:
                log.error("REFUSED %s; not sent to the mail client, left on the box", refused)
                raise MessageUnreadable from None
            chunks = verify.decrypt(meta, spool)
            try:
                while True:
                    try:
                        chunk = await asyncio.to_thread(next, chunks, None)
                    except verify.Refused as refused:
                        log.error("REFUSED %s while sending it", refused)
                        raise MessageUnreadable from None
                    if chunk is None:
                        return
                    yield chunk
            finally:
                # Still running in a worker only if this read was cancelled mid-chunk.
                with contextlib.suppress(ValueError):
                    chunks.close()
        finally:
            await asyncio.to_thread(spool.close)

    async def mark_retrieved(self, uids: Sequence[str]) -> None:
        return None  # the drive API has no retrieved-mark; see the module docstring

    async def delete(self, uids: Sequence[str]) -> None:
        items = [(uid, self._metas[uid].cipher_hash) for uid in uids if uid in self._metas]
        if not items:
            return
        try:
            await self._client().acknowledge(items)
        except AckRefused as exc:
            log.error("the box refused to delete: %s", exc)
            raise MaildropUnavailable from None
        except ApiError as exc:
            log.warning("%s", exc)
            raise MaildropUnavailable from None

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            self._metas.clear()
            await api.close()
            self._auth.in_use = False


class Bridge:
    """The POP3 listener on 127.0.0.1 with the remote maildrop behind it."""

    def __init__(
        self,
        key_file: Path,
        server: str,
        *,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        failure_delay: float = FAILURE_DELAY,
    ) -> None:
        self.auth = RemoteAuthenticator(key_file, server, failure_delay=failure_delay)
        options = SessionOptions(authenticator=self.auth, hostname="letterbox-bridge")
        # Plain POP3 logins are accepted from loopback only; the bridge listens on
        # nothing else, so the passphrase never leaves this computer.
        self.listener = Pop3Listener(
            options, host=host, port=port, tls_port=None, plaintext="loopback"
        )

    @property
    def address(self) -> str:
        return self.auth.address

    async def start(self) -> int:
        """Listen; the bound port (port 0 picks a free one). Raises OSError."""
        await self.listener.start()
        assert self.listener.port is not None
        return self.listener.port

    async def stop(self) -> None:
        await self.listener.stop(SHUTDOWN_GRACE)

    async def check_server(self) -> str | None:
        """Whether the box answers (a challenge needs no key); a warning, or None."""
        probe = DriveClient(self.auth.server, crypto.PersonalKey.generate(), self.address)
        async with probe:
            try:
                await probe.ping()
            except ApiError as exc:
                return str(exc)
        return None


async def _serve(bridge: Bridge, announce: Callable[[str], None]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await bridge.start()
    except OSError as exc:
        print(
            f"letterbox bridge: cannot listen on 127.0.0.1 port {bridge.listener.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    if (problem := await bridge.check_server()) is not None:
        log.warning("%s; serving anyway, logins fail until the box answers", problem)
    announce(
        "\n".join(
            [
                f"Letterbox bridge for {bridge.address} is listening on 127.0.0.1:{port} (POP3).",
                "Set up the mail client with:",
                "  server    127.0.0.1",
                f"  port      {port}, no encryption (the connection never leaves this computer)",
                f"  user      {bridge.address}",
                "  password  the passphrase of the key file",
                "Stop with Ctrl-C.",
            ]
        )
    )
    await stop.wait()
    await bridge.stop()
    return 0


def run(key_file: Path, server: str, *, port: int = DEFAULT_PORT) -> int:
    """The `letterbox bridge` command; runs until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        bridge = Bridge(key_file, server, port=port)
    except (verify.KeyFileError, ValueError) as exc:
        print(f"letterbox bridge: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_serve(bridge, lambda text: print(text, flush=True)))

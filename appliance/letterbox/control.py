"""The control socket: how the CLI (and other local tools) talk to the running daemon.

Some things only the running process knows (its listeners, the mDNS name it won,
the drive's live state) and some changes must go through it (the Drive keeps the
address → mailbox map in memory, so a mailbox made by another process would be
unknown to SMTP until a restart). So the daemon listens on a Unix socket,
`DATA/run/control.sock`, and speaks the simplest protocol that does the job: per
connection, one JSON request line in, one JSON reply line out.

    {"command": "status", "params": {}}         → {"ok": true, "result": {...}}
                                                 → {"ok": false, "error": "for a person"}

Other parts of the box add commands with `ControlServer.register(name, handler)`.

Who may talk to it: the file is 0600 inside a 0700 directory, so only the daemon's
own user (and root). A request is at most `MAX_REQUEST` bytes and must arrive within
`READ_TIMEOUT` seconds, so a stuck or hostile local client costs one idle task.

A socket file left by a crashed daemon is detected (nobody accepts on it) and
replaced; one that still answers means another daemon runs on this data directory,
which is refused rather than stolen.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("letterbox.control")

MAX_REQUEST = 64 * 1024  # a request is a command name and a few parameters
READ_TIMEOUT = 5.0  # seconds a client gets to send its request
DEFAULT_TIMEOUT = 30.0  # seconds the client waits for a reply (a drive format may take a while)
# sun_path holds 108 bytes on Linux; longer paths are reached through /proc/self/fd.
_SUN_PATH_MAX = 107

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """A command that cannot be done; the message is for a person and goes to the client."""


class NotRunning(ControlError):
    """No daemon listens on this data directory's control socket."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"Letterbox is not running (no control socket at {path})")
        self.path = path


class CannotListen(ControlError, OSError):
    """The daemon cannot take its control socket (an OSError, so `run` reports it as
    a failed start like a port already in use)."""


class AlreadyRunning(CannotListen):
    """Another daemon answers on this data directory's control socket."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / "run" / "control.sock"


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A name for `path` that fits in sun_path.

    A deep data directory (a test's tmp_path, a long home directory) can make the
    path longer than the 108 bytes AF_UNIX allows; the directory is then opened and
    the socket named through /proc/self/fd/N/, which the kernel resolves like any
    path but which is always short.
    """
    name = os.fsencode(path)
    if len(name) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the socket file `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, _reachable(path) as name:
        s.settimeout(1.0)
        try:
            s.connect(name)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        return True


def _reply(ok: bool, value: Any) -> bytes:
    body = {"ok": True, "result": value} if ok else {"ok": False, "error": str(value)}
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode() + b"\n"


def _json_default(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ControlServer:
    """The daemon's end: a registry of commands served on `DATA/run/control.sock`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_request: int = MAX_REQUEST,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.path = socket_path(data_dir)
        self.max_request = max_request
        self.read_timeout = read_timeout
        self._handlers: dict[str, Handler] = {}
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None

    def register(self, name: str, handler: Handler) -> None:
        """Add a command. The handler gets the request's `params` (a dict) and returns
        JSON-serialisable data (objects with `to_json()` are fine); it raises
        ControlError (or a subclass of it) with a message for the person at the CLI."""
        if name in self._handlers:
            raise ValueError(f"control command {name!r} is registered already")
        self._handlers[name] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        run_dir = self.path.parent
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        self._clear_stale()
        with _reachable(self.path) as name:
            self._server = await asyncio.start_unix_server(
                self._serve, path=name, limit=self.max_request + 1
            )
        # The 0700 directory already keeps others out; 0600 on the socket says so too.
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        log.info("control socket at %s", self.path)

    def _clear_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise CannotListen(f"{self.path} exists and is not a socket; remove it")
        if _answers(self.path):
            raise AlreadyRunning(
                f"another Letterbox is running on this data directory (it answers at {self.path})"
            )
        log.info("removing the control socket a stopped daemon left at %s", self.path)
        self.path.unlink(missing_ok=True)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Remove the file only if it is still ours (a successor may have replaced it).
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader)
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell anyone
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout)
        except TimeoutError:
            return _reply(False, "no request within the time limit")
        except asyncio.LimitOverrunError:
            return _reply(False, f"request larger than {self.max_request} bytes")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial  # a request without its newline, then end of stream
            if not line.strip():
                return _reply(False, "empty request")
        if len(line) > self.max_request:
            return _reply(False, f"request larger than {self.max_request} bytes")
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _reply(False, "the request is not JSON")
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return _reply(False, 'a request is {"command": NAME, "params": {...}}')
        command = request["command"]
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return _reply(False, "params must be an object")
        handler = self._handlers.get(command)
        if handler is None:
            return _reply(False, f"unknown command {command!r} (known: {', '.join(self.commands)})")
        try:
            result = await handler(params)
            return _reply(True, result)
        except ControlError as exc:
            return _reply(False, exc)
        except Exception as exc:
            log.exception("control command %s failed", command)
            return _reply(False, f"{command} failed inside the box: {exc}")


def call(
    data_dir: Path,
    command: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Run `command` in the daemon on `data_dir` and return its result.

    Blocking, for the CLI. Raises NotRunning when no daemon listens (no socket file,
    or a stale one), ControlError with the daemon's message when the command fails,
    and TimeoutError when the daemon does not answer within `timeout` seconds.
    """
    path = socket_path(data_dir)
    request = json.dumps({"command": command, "params": params or {}}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with _reachable(path) as name:
                s.connect(name)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(path) from None
        s.sendall(request)
        chunks: list[bytes] = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise ControlError("the box closed the control connection without an answer")
    try:
        reply = json.loads(raw)
    except ValueError:
        raise ControlError("the box sent an answer that is not JSON") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError("the box sent an answer without 'ok'")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error") or "the command failed"))
    return reply.get("result")

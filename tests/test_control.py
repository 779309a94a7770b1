"""The control socket, over real Unix sockets: requests, errors, limits, stale files."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from letterbox import control
from letterbox.control import AlreadyRunning, ControlError, ControlServer, NotRunning


async def _echo(params: dict[str, Any]) -> Any:
    return {"echo": params}


async def _refuse(params: dict[str, Any]) -> Any:
    raise ControlError("no such drive: sdz")


async def _bug(params: dict[str, Any]) -> Any:
    raise RuntimeError("boom")


def _serve(data_dir: Path, body: Any, **kwargs: Any) -> Any:
    """Run `body(server)` (a coroutine function) with a started server, then close it."""

    async def go() -> Any:
        server = ControlServer(data_dir, **kwargs)
        server.register("echo", _echo)
        server.register("refuse", _refuse)
        server.register("bug", _bug)
        await server.start()
        try:
            return await body(server)
        finally:
            await server.close()

    return asyncio.run(go())


def _raw(path: Path, payload: bytes, *, shut: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_not_running_without_a_socket(tmp_path: Path) -> None:
    with pytest.raises(NotRunning) as info:
        control.call(tmp_path / "data", "status")
    assert str(info.value) == (
        f"Letterbox is not running (no control socket at {tmp_path}/data/run/control.sock)"
    )


def test_a_command_and_its_result(tmp_path: Path) -> None:
    async def body(server: ControlServer) -> None:
        result = await asyncio.to_thread(control.call, tmp_path, "echo", {"a": [1, "é"]})
        assert result == {"echo": {"a": [1, "é"]}}
        mode = os.stat(server.path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700

    _serve(tmp_path, body)
    assert not control.socket_path(tmp_path).exists()  # removed on close
    with pytest.raises(NotRunning):
        control.call(tmp_path, "echo")


def test_errors_reach_the_client_as_messages(tmp_path: Path) -> None:
    async def body(server: ControlServer) -> None:
        with pytest.raises(ControlError, match=r"^no such drive: sdz$"):
            await asyncio.to_thread(control.call, tmp_path, "refuse")
        with pytest.raises(ControlError, match=r"bug failed inside the box: boom"):
            await asyncio.to_thread(control.call, tmp_path, "bug")
        with pytest.raises(ControlError, match=r"unknown command 'nope' \(known: bug, echo"):
            await asyncio.to_thread(control.call, tmp_path, "nope")
        # The server still serves after all that.
        assert await asyncio.to_thread(control.call, tmp_path, "echo") == {"echo": {}}

    _serve(tmp_path, body)


def test_bad_requests_get_clear_answers(tmp_path: Path) -> None:
    path = control.socket_path(tmp_path)

    async def body(server: ControlServer) -> None:
        async def ask(payload: bytes) -> bytes:
            return await asyncio.to_thread(_raw, path, payload)

        assert await ask(b"hello\n") == b'{"ok":false,"error":"the request is not JSON"}\n'
        assert b"a request is" in await ask(b"[1, 2]\n")
        assert b"params must be an object" in await ask(b'{"command":"echo","params":[1]}\n')
        assert b"empty request" in await ask(b"")
        # Without a newline, end of stream ends the request.
        assert await ask(b'{"command":"echo"}') == b'{"ok":true,"result":{"echo":{}}}\n'
        big = b'{"command":"echo","params":{"x":"' + b"a" * 2000 + b'"}}\n'
        assert await ask(big) == b'{"ok":false,"error":"request larger than 1024 bytes"}\n'
        assert await asyncio.to_thread(control.call, tmp_path, "echo") == {"echo": {}}

    _serve(tmp_path, body, max_request=1024)


def test_a_silent_client_is_timed_out(tmp_path: Path) -> None:
    path = control.socket_path(tmp_path)

    async def body(server: ControlServer) -> None:
        reply = await asyncio.to_thread(_raw, path, b'{"command"', shut=False)
        assert reply == b'{"ok":false,"error":"no request within the time limit"}\n'

    _serve(tmp_path, body, read_timeout=0.2)


def test_the_client_gives_up_after_its_timeout(tmp_path: Path) -> None:
    async def slow(params: dict[str, Any]) -> Any:
        await asyncio.sleep(2)
        return "late"

    async def body(server: ControlServer) -> None:
        server.register("slow", slow)
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(control.call, tmp_path, "slow", timeout=0.2)

    _serve(tmp_path, body)


def test_a_stale_socket_means_not_running_and_is_replaced(tmp_path: Path) -> None:
    path = control.socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    # What a killed daemon leaves: a socket file nobody accepts on.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with pytest.raises(NotRunning):
        control.call(tmp_path, "echo")

    async def body(server: ControlServer) -> None:
        assert await asyncio.to_thread(control.call, tmp_path, "echo") == {"echo": {}}

    _serve(tmp_path, body)


def test_a_second_daemon_is_refused_and_the_first_keeps_its_socket(tmp_path: Path) -> None:
    async def body(server: ControlServer) -> None:
        second = ControlServer(tmp_path)
        with pytest.raises(AlreadyRunning, match="another Letterbox is running"):
            await second.start()
        assert await asyncio.to_thread(control.call, tmp_path, "echo") == {"echo": {}}

    _serve(tmp_path, body)


def test_a_file_in_the_way_is_not_removed(tmp_path: Path) -> None:
    path = control.socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("precious")

    async def go() -> None:
        with pytest.raises(ControlError, match="is not a socket"):
            await ControlServer(tmp_path).start()

    asyncio.run(go())
    assert path.read_text() == "precious"


def test_a_data_directory_deeper_than_sun_path_allows(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(control.socket_path(deep))) > 108

    async def body(server: ControlServer) -> None:
        assert await asyncio.to_thread(control.call, deep, "echo", {"n": 1}) == {"echo": {"n": 1}}

    _serve(deep, body)
    assert not control.socket_path(deep).exists()


def test_registering_a_command_twice_is_a_bug(tmp_path: Path) -> None:
    server = ControlServer(tmp_path)
    server.register("x", _echo)
    with pytest.raises(ValueError, match="registered already"):
        server.register("x", _echo)

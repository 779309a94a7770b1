"""What the web server writes to its log and its headers for hostile requests.

A real server on 127.0.0.1 and raw sockets, so the requests are exactly the bytes
an attacker would send (http.client would refuse to send most of them).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from letterbox.web.server import WebServer


class Served:
    def __init__(self, *, debug: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = WebServer(host="127.0.0.1", port=0, debug=debug, shutdown_grace=1)

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        async def broken(request: web.Request) -> web.Response:
            raise RuntimeError("a bug in a handler")

        self.server.app.router.add_get("/hello", hello)
        self.server.app.router.add_get("/broken", broken)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def send(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.close()


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_the_access_log_escapes_what_the_client_put_in_the_path(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    served.send(
        b"GET /x%0d%0a2026-12-04%2012:00:00%20INFO%20letterbox:%20forged"
        b"%00%1b[31m%e2%80%a8%c2%85%22q"
        b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (line,) = _lines(caplog, "letterbox.web.access")
    assert line.startswith('"GET /x\\r\\n2026-12-04 12:00:00 INFO letterbox: forged')
    assert '\\x00\\x1b[31m\\u2028\\x85\\"q HTTP/1.1" 404 ' in line
    assert line.isprintable()


def test_a_malformed_request_is_one_line_without_traceback_or_address(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = served.send(b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400")
    mine = [r for r in caplog.records if r.name != "letterbox.web.access"]
    assert len(mine) == 1, [r.getMessage() for r in mine]
    (record,) = mine
    assert record.levelno == logging.INFO and record.exc_info is None
    message = record.getMessage()
    assert "malformed request" in message and "Host" in message
    assert "127.0.0.1" not in message  # addresses only in debug mode
    assert "\n" not in message


def test_no_http_at_all_is_refused_quietly(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS to the plain-HTTP port, or a scanner's junk: 400, nothing at INFO or above
    (aiohttp reports it through the logger's debug(), which must still work)."""
    caplog.set_level(logging.INFO)
    reply = served.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert [r.getMessage() for r in caplog.records if r.name != "letterbox.web.access"] == []
    assert reply.split(b"\r\n", 1)[0].startswith(b"HTTP/1.")


def test_a_bug_in_a_handler_still_logs_its_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the client's mistakes become one line; the box's own stay findable."""
    caplog.set_level(logging.INFO)
    reply = served.send(b"GET /broken HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "127.0.0.1" not in errors[0].getMessage()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /broken HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ],
    ids=["200", "404", "400-malformed", "500"],
)
def test_the_server_header_names_no_versions(served: Served, request_bytes: bytes) -> None:
    reply = served.send(request_bytes)
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    servers = [h for h in head if h.lower().startswith("server:")]
    assert servers == ["Server: Letterbox"], head
    assert "aiohttp" not in reply.decode("latin-1") and "Python/" not in reply.decode("latin-1")

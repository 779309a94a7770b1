"""The web server: one aiohttp application on the web port (docs/design.md, "One process").

Route groups mount themselves into `WebServer.app` before `start()`: the drive API
(`letterbox.web.driveapi.setup`, under /api/v1/drive/) now, the setup page later.

The access log names the request line, status, size and time; request paths carry
only random ids, tokens travel in headers, and the client's address is logged only
in debug mode, like the rest of Letterbox's logs. The path is the client's text,
percent-decoded: it goes through `letterbox.logsafe.escape`, so `%0d%0a` cannot
forge a log line and `%00` writes no NUL.

A malformed request (two Host headers, a broken request line) is the client's
fault, not the box's: aiohttp would log it at ERROR with a traceback; here it is
one INFO line (`ServerLog`). The `Server` header says `Letterbox`, not which
aiohttp and Python versions answer (no help to anyone matching exploits).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp import web, web_response
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from letterbox import logsafe
from letterbox.config import WebSettings

log = logging.getLogger("letterbox.web")

WEB_PORT = 80
DEV_WEB_PORT = 8080  # docs/design.md, "Ports": the `make run` port
# Seconds a request in flight (a download) gets when the box stops. Short: the drive
# API is idempotent, so an interrupted download is simply repeated by the client.
SHUTDOWN_GRACE = 5.0
SERVER_HEADER = "Letterbox"


class AccessLogger(AbstractAccessLogger):
    """Method, path, status, size, time; the client's address only in debug mode.

    The query string is left out: mail clients put the user's address there
    (Thunderbird's autoconfig asks `?emailaddress=...`), and addresses stay out of
    logs outside debug mode.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = logsafe.escape(request.path, limit=MAX_LOGGED_PATH).replace('"', '\\"')
        line = (
            f'"{logsafe.escape(request.method)} {path} HTTP/{request.version.major}.'
            f'{request.version.minor}" {response.status} {response.body_length} {time:.6f}s'
        )
        if self.log_format == "debug":
            line = f"{request.remote} {line}"
        self.logger.info(line)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


MAX_LOGGED_PATH = 512  # characters of a request path in the access log


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger (`RequestHandler.logger`): a malformed request is one
    INFO line naming what was wrong; a real error in a handler keeps its traceback.

    aiohttp reports both through `logger.exception("Error handling request from %s",
    remote)`; the client's address is dropped outside debug mode."""

    def __init__(self, logger: logging.Logger, *, debug: bool) -> None:
        super().__init__(logger, {})
        self._debug_mode = debug  # not `debug`: that is the adapter's debug() method

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        who = f" from {args[0]}" if self._debug_mode and args else ""
        if isinstance(exc, HttpProcessingError):
            self.logger.info(
                "web: refused a malformed request%s: %d %s",
                who,
                exc.code,
                logsafe.escape(exc.message or type(exc).__name__, limit=200),
            )
            return
        if not self._debug_mode and isinstance(msg, str) and msg.endswith(" from %s"):
            msg, args = msg[: -len(" from %s")], ()
        self.logger.error(msg, *args, exc_info=exc_info, **kw)


def listen_address(settings: WebSettings, *, dev: bool) -> tuple[str, int]:
    """(host, port) from [web]: empty host = all interfaces (127.0.0.1 with --dev);
    port 0 = 80 (8080 with --dev)."""
    host = settings.listen_address or ("127.0.0.1" if dev else "")
    return host, settings.port or (DEV_WEB_PORT if dev else WEB_PORT)


class WebServer:
    """The aiohttp application and its runner: start() listens, stop() drains and closes."""

    def __init__(
        self, *, host: str, port: int, debug: bool = False, shutdown_grace: float = SHUTDOWN_GRACE
    ) -> None:
        self.host = host
        self.port = port
        self.app = web.Application()
        self._debug = debug
        self._grace = shutdown_grace
        self._runner: web.AppRunner | None = None

    async def start(self) -> list[tuple[str, int]]:
        """Listen; returns the bound (address, port) pairs (port 0 picks a free one).
        Raises OSError when the port cannot be had."""
        # aiohttp writes its version into every answer's Server header unless one is
        # set; its own error answers (400 for a malformed request) pass no hook we
        # could set it in, so the default itself is replaced.
        web_response.SERVER_SOFTWARE = SERVER_HEADER
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=logging.getLogger("letterbox.web.access"),
            access_log_class=AccessLogger,
            access_log_format="debug" if self._debug else "",
            logger=ServerLog(log, debug=self._debug),
            shutdown_timeout=self._grace,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host or None, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound: list[tuple[str, int]] = []
        for addr in runner.addresses:
            if isinstance(addr, tuple):
                bound.append((str(addr[0]), int(addr[1])))
        if bound:
            self.port = bound[0][1]
        return bound

    async def stop(self) -> None:
        """Stop accepting, give requests in flight the grace period, then close them."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

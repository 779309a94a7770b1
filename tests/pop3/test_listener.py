"""The listeners: graceful stop, the plaintext-login policy, which ports listen."""

from __future__ import annotations

import asyncio
import poplib
import socket
import time
from collections.abc import Callable, Sequence

import pytest
from letterbox.pop3 import DriveMaildrop, Pop3Listener, SessionOptions
from letterbox.pop3.listener import _is_loopback

from tests.helpers import assert_refused, unverified_tls
from tests.pop3.conftest import ALICE, PASSWORD, Pop3Box, Wire, login, mail


def stop_soon(box: Pop3Box, grace: float):  # type: ignore[no-untyped-def]
    return asyncio.run_coroutine_threadsafe(box.listener.stop(grace), box.loop)


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def busy(box: Pop3Box, commands: int) -> bool:
    """A session is working on its `commands`-th command (not waiting for another)."""
    return any(not s._idle and s.stats.commands >= commands for s in box.listener.sessions)


def test_stop_closes_a_waiting_session_without_update(box: Pop3Box, wire: Wire):
    ids = box.deliver(mail(1))
    login(wire)
    assert wire.cmd(b"DELE 1").startswith(b"+OK")
    started = time.monotonic()
    stop_soon(box, 10).result(10)
    assert time.monotonic() - started < 5  # an idle session does not hold the stop
    assert wire.line() == b"-ERR [SYS/TEMP] Letterbox is shutting down; try again shortly\r\n"
    assert wire.closed()
    assert box.stored() == ids
    assert_refused(box.port)  # no longer accepting


def test_stop_lets_a_retr_in_progress_finish(box: Pop3Box):
    line = b"q" * 998 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * 4000  # 4 MB: far more than the socket buffers
    box.deliver(big)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", box.port))
    w = Wire(sock)
    w.line()
    login(w)
    w.send(b"RETR 1\r\n")
    wait_until(lambda: busy(box, 3))  # the server is now blocked on a full socket
    stopped = stop_soon(box, 10)
    assert w.line() == f"+OK {len(big)} octets\r\n".encode()
    assert b"".join(w.multiline()) == big
    assert w.line().startswith(b"-ERR [SYS/TEMP] Letterbox is shutting down")
    assert w.closed()
    stopped.result(10)


def test_after_the_grace_period_a_stalled_retr_is_dropped(box: Pop3Box):
    big = b"Subject: big\r\n\r\n" + (b"r" * 998 + b"\r\n") * 4000
    ids = box.deliver(big, mail(2))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", box.port))
    w = Wire(sock)
    w.line()
    login(w)
    w.send(b"DELE 2\r\nRETR 1\r\n")
    wait_until(lambda: busy(box, 4))
    started = time.monotonic()
    stop_soon(box, 0.5).result(10)
    assert 0.4 < time.monotonic() - started < 5
    assert w.closed()
    assert not w.buf.endswith(b"\r\n.\r\n")
    assert box.stored() == ids


class SlowDelete(DriveMaildrop):
    """A drive that takes its time making deletions durable."""

    async def delete(self, uids: Sequence[str]) -> None:
        await asyncio.sleep(1.0)
        await super().delete(uids)


def test_deletions_being_made_durable_finish_even_after_the_grace(box: Pop3Box, wire: Wire):
    ids = box.deliver(mail(1), mail(2))
    real_login = box.auth.login

    async def slow_login(user: str, password: str, client: str) -> DriveMaildrop:
        md = await real_login(user, password, client)
        md.__class__ = SlowDelete
        return md

    box.auth.login = slow_login  # type: ignore[method-assign]
    login(wire)
    wire.send(b"DELE 1\r\nQUIT\r\n")
    assert wire.line().startswith(b"+OK")
    wait_until(lambda: any(s.updating for s in box.listener.sessions))
    stop_soon(box, 0.1).result(10)
    assert wire.line() == b"+OK Letterbox signing off (1 deleted)\r\n"
    assert box.stored() == [ids[1]]


def test_plaintext_login_on_loopback_only(make_box: Callable[..., Pop3Box]):
    box = make_box(plaintext="loopback")
    p = poplib.POP3("127.0.0.1", box.port)
    assert "USER" in p.capa()
    p.user(ALICE)
    p.pass_(PASSWORD)
    p.quit()


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("192.168.1.20", 5000), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        (("2001:db8::1", 5000, 0, 0), False),
        ("", True),  # a Unix socket
        (None, False),
    ],
)
def test_is_loopback(peer: object, loopback: bool):
    assert _is_loopback(peer) == loopback


def test_only_an_implicit_tls_port(box: Pop3Box):
    async def start() -> Pop3Listener:
        listener = Pop3Listener(
            SessionOptions(box.auth, tls_context=box.tls_context),
            host="127.0.0.1",
            port=None,
            tls_port=0,
        )
        bound = await listener.start()
        assert [b[2] for b in bound] == [True]
        return listener

    listener: Pop3Listener = box.call(start())  # type: ignore[assignment]
    try:
        assert listener.port is None
        p = poplib.POP3_SSL("127.0.0.1", listener.tls_port, context=unverified_tls())
        p.user(ALICE)  # TLS: logging in is always allowed
        p.pass_(PASSWORD)
        p.quit()
    finally:
        box.call(listener.stop(1))


def test_pop3s_without_a_context_is_an_error(box: Pop3Box):
    listener = Pop3Listener(SessionOptions(box.auth), host="127.0.0.1", port=None, tls_port=0)
    with pytest.raises(ValueError, match="TLS context"):
        box.call(listener.start())

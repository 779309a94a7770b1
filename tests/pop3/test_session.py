"""The POP3 state machine over real sockets, against a real drive: poplib and raw bytes."""

from __future__ import annotations

import asyncio
import base64
import poplib
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest
from letterbox.crypto import Argon2Limits

from tests.helpers import unverified_tls
from tests.pop3.conftest import (
    ALICE,
    BOB,
    CAROL,
    PASSWORD,
    Pop3Box,
    Wire,
    login,
    mail,
)


def client(box: Pop3Box, user: str = ALICE, password: str = PASSWORD) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", box.port, timeout=20)
    p.user(user)
    p.pass_(password)
    return p


def retr(p: poplib.POP3, n: int) -> bytes:
    """The message as poplib reassembles it (unstuffed lines, CRLF line ends)."""
    _, lines, _ = p.retr(n)
    return b"".join(line + b"\r\n" for line in lines)


# -- reading ---------------------------------------------------------------------------------


def test_retr_is_byte_identical_and_sizes_are_exact(box: Pop3Box):
    messages = [
        mail(1),
        mail(2, b".leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"),
        mail(3, "8-bit: Grüße, 日本\r\n".encode() + bytes(range(1, 10)) + b"\r\n"),
        # a long line (poplib takes up to 2048), empty lines at the end
        mail(4, b"x" * 2000 + b"\r\n" + b"\r\n" * 3),
    ]
    ids = box.deliver(*messages)
    p = client(box)
    assert p.stat() == (4, sum(len(m) for m in messages))
    _, listing, _ = p.list()
    assert listing == [f"{i} {len(m)}".encode() for i, m in enumerate(messages, 1)]
    _, uids, _ = p.uidl()
    assert uids == [f"{i} {d}".encode() for i, d in enumerate(ids, 1)]
    for i, m in enumerate(messages, 1):
        assert retr(p, i) == m
        assert p.list(i) == f"+OK {i} {len(m)}".encode()
        assert p.uidl(i) == f"+OK {i} {ids[i - 1]}".encode()
    p.quit()
    assert box.stored() == ids  # reading deletes nothing


def test_the_octets_on_the_wire_match_the_listed_size(box: Pop3Box, wire: Wire):
    msg = mail(1, b".a\r\n..b\r\n")
    box.deliver(msg)
    login(wire)
    listed = int(wire.cmd(b"LIST 1").split()[2])
    assert wire.cmd(b"RETR 1") == f"+OK {listed} octets\r\n".encode()
    body = wire.multiline()
    unstuffed = b"".join(line[1:] if line.startswith(b".") else line for line in body)
    assert len(unstuffed) == listed == len(msg)


def test_a_message_with_bare_line_feeds_leaves_as_crlf(box: Pop3Box):
    box.deliver(b"Subject: lf\n\n.dot\nend")  # only direct drive writers can store this
    p = client(box)
    assert retr(p, 1) == b"Subject: lf\r\n\r\n.dot\r\nend\r\n"
    p.quit()


def test_top(box: Pop3Box):
    box.deliver(b"From: a\r\nSubject: s\r\n\r\nl1\r\n.l2\r\nl3\r\n")
    p = client(box)
    assert p.top(1, 0)[1] == [b"From: a", b"Subject: s", b""]
    assert p.top(1, 2)[1] == [b"From: a", b"Subject: s", b"", b"l1", b".l2"]
    assert p.top(1, 100)[1] == [b"From: a", b"Subject: s", b"", b"l1", b".l2", b"l3"]
    p.quit()
    assert not box.drive.list(box.mailboxes[ALICE])[0].retrieved  # type: ignore[union-attr]


def test_a_large_message_streams_whole(box: Pop3Box):
    line = b"0123456789abcdef" * 62 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * (6 * 1024 * 1024 // len(line)) + b".\r\n"
    box.deliver(big)
    p = client(box)
    assert p.list(1) == f"+OK 1 {len(big)}".encode()
    assert retr(p, 1) == big
    p.quit()


def test_uidl_is_stable_across_sessions_and_deletions(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2), mail(3))
    p = client(box)
    first = p.uidl()[1]
    p.dele(1)
    p.quit()
    p = client(box)
    assert p.uidl()[1] == [f"1 {ids[1]}".encode(), f"2 {ids[2]}".encode()]
    assert first[1:] == [f"2 {ids[1]}".encode(), f"3 {ids[2]}".encode()]
    p.quit()


def test_an_empty_maildrop(box: Pop3Box):
    p = client(box)
    assert p.stat() == (0, 0)
    assert p.list()[1] == [] and p.uidl()[1] == []
    with pytest.raises(poplib.error_proto, match="No such message"):
        p.retr(1)
    p.quit()


# -- deleting --------------------------------------------------------------------------------


def test_dele_takes_effect_at_quit(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2), mail(3))
    p = client(box)
    assert p.dele(2) == b"+OK Message 2 deleted"
    assert box.stored() == ids  # not yet
    assert p.stat() == (2, len(mail(1)) + len(mail(3)))
    assert [x.split()[0] for x in p.list()[1]] == [b"1", b"3"]
    with pytest.raises(poplib.error_proto, match="Message 2 is deleted"):
        p.retr(2)
    with pytest.raises(poplib.error_proto, match="Message 2 is deleted"):
        p.dele(2)
    with pytest.raises(poplib.error_proto, match="Message 2 is deleted"):
        p.list(2)
    assert p.quit() == b"+OK Letterbox signing off (1 deleted)"
    assert box.stored() == [ids[0], ids[2]]


def test_rset_undeletes(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2))
    p = client(box)
    p.dele(1)
    p.dele(2)
    assert p.stat() == (0, 0)
    assert p.rset() == f"+OK 2 messages ({len(mail(1)) + len(mail(2))} octets)".encode()
    assert p.stat()[0] == 2
    p.dele(1)
    p.quit()
    assert box.stored() == [ids[1]]


def test_a_dropped_connection_deletes_nothing(box: Pop3Box, wire: Wire):
    ids = box.deliver(mail(1), mail(2))
    login(wire)
    assert wire.cmd(b"DELE 1").startswith(b"+OK")
    assert wire.cmd(b"RETR 2").startswith(b"+OK")
    wire.multiline()
    wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wire.sock.close()  # RST
    box.wait_idle()
    assert box.stored() == ids
    drive = box.drive
    assert drive is not None
    assert not any(d.retrieved for d in drive.list(box.mailboxes[ALICE]))  # nothing marked
    assert client(box).stat()[0] == 2  # and the mailbox is free again


def test_a_half_closed_connection_after_quit_still_deletes(box: Pop3Box, wire: Wire):
    ids = box.deliver(mail(1), mail(2))
    wire.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nQUIT\r\n".encode())
    wire.sock.shutdown(socket.SHUT_WR)
    assert wire.closed()
    assert wire.buf == (
        b"+OK Send PASS\r\n"
        b"+OK Logged in: 2 messages (%d octets)\r\n"
        b"+OK Message 1 deleted\r\n"
        b"+OK Letterbox signing off (1 deleted)\r\n" % (len(mail(1)) + len(mail(2)))
    )
    box.wait_idle()
    assert box.stored() == [ids[1]]


def test_quit_marks_retrieved_messages(box: Pop3Box):
    box.deliver(mail(1), mail(2), mail(3))
    p = client(box)
    retr(p, 1)
    retr(p, 3)
    p.dele(3)
    p.top(2, 0)
    p.quit()
    drive = box.drive
    assert drive is not None
    assert [d.retrieved for d in drive.list(box.mailboxes[ALICE])] == [True, False]


def test_a_message_removed_during_the_session(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2))
    p = client(box)
    drive = box.drive
    assert drive is not None
    drive.delete(box.mailboxes[ALICE], [ids[0]])  # as quota eviction would
    with pytest.raises(poplib.error_proto, match="no longer on the box"):
        p.retr(1)
    assert retr(p, 2) == mail(2)
    p.dele(1)
    assert p.quit().startswith(b"+OK")  # deleting what is gone already is fine
    assert box.stored() == [ids[1]]


# -- logging in ------------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_get_the_same_reply(make_box: Callable[..., Pop3Box]):
    box = make_box(failure_delay=0.4)
    replies, times = [], []
    for user, password in (
        (ALICE, "wrong"),
        ("nobody@home.test", "wrong"),
        ("not an address", PASSWORD),
    ):
        sock = box.connect()
        w = Wire(sock)
        w.line()
        w.cmd(f"USER {user}".encode())
        started = time.monotonic()
        replies.append(w.cmd(f"PASS {password}".encode()))
        times.append(time.monotonic() - started)
        sock.close()
    assert replies == [b"-ERR [AUTH] Wrong user name or password\r\n"] * 3
    assert all(0.39 <= t < 5 for t in times), times


def test_failed_logins_close_the_session_after_three(wire: Wire):
    for _ in range(3):
        assert login(wire, password="nope").startswith(b"-ERR [AUTH]")
    assert wire.closed()


def test_failed_logins_are_rate_limited_per_address(make_box: Callable[..., Pop3Box]):
    box = make_box(max_failures=4)
    for _ in range(2):
        sock = box.connect()
        w = Wire(sock)
        w.line()
        assert login(w, password="nope").startswith(b"-ERR [AUTH]")
        assert login(w, user="x@home.test", password="nope").startswith(b"-ERR [AUTH]")
        sock.close()
    sock = box.connect()
    w = Wire(sock)
    w.line()
    # Locked out: even the right password is refused, unchecked, and the session ends.
    assert login(w) == (
        b"-ERR [SYS/TEMP] Too many failed logins from your address; try again in a few minutes\r\n"
    )
    assert w.closed()
    sock.close()
    assert box.limiter.blocked("127.0.0.1")
    box.limiter.window = 0  # the failures age out
    assert client(box).stat() == (0, 0)


def test_one_session_per_mailbox(box: Pop3Box):
    box.deliver(mail(1))
    first = client(box)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        client(box)
    other = client(box, BOB)  # other mailboxes are not affected
    other.quit()
    first.quit()
    again = client(box)
    assert again.stat()[0] == 1
    again.quit()


def test_in_use_is_only_said_to_whoever_has_the_password(box: Pop3Box):
    first = client(box)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client(box, password="wrong")
    first.quit()


def test_concurrent_sessions_on_different_mailboxes(box: Pop3Box):
    big = mail(0, (b"y" * 998 + b"\r\n") * 200)
    box.deliver(big, *(mail(i) for i in range(1, 6)))
    box.deliver(big, *(mail(i) for i in range(1, 6)), to=BOB)
    errors: list[BaseException] = []

    def read(user: str) -> None:
        try:
            for _ in range(3):
                p = client(box, user)
                got = [retr(p, i) for i in range(1, 7)]
                assert got == [big, *(mail(i) for i in range(1, 6))]
                p.quit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(u,)) for u in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_an_end_to_end_mailbox_says_how_to_read_it(box: Pop3Box):
    with pytest.raises(poplib.error_proto) as exc:
        client(box, CAROL, "anything")
    assert exc.value.args[0].startswith(b"-ERR [AUTH] This mailbox is end-to-end encrypted")
    assert b"letterbox fetch" in exc.value.args[0] and b"letterbox bridge" in exc.value.args[0]


def test_an_end_to_end_login_waits_and_counts_like_any_failure(make_box: Callable[..., Pop3Box]):
    box = make_box(failure_delay=0.4)
    sock = box.connect()
    w = Wire(sock)
    w.line()
    times = []
    for _ in range(3):
        w.cmd(f"USER {CAROL}".encode())
        started = time.monotonic()
        reply = w.cmd(b"PASS anything")
        times.append(time.monotonic() - started)
        assert reply.startswith(b"-ERR [AUTH] This mailbox is end-to-end encrypted")
    assert all(t >= 0.39 for t in times), times
    assert w.closed()  # the session's third failed login
    sock.close()


def test_sasl_plain(box: Pop3Box, wire: Wire):
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    assert wire.cmd(b"AUTH") == b"+OK SASL mechanisms follow\r\n"
    assert wire.multiline() == [b"PLAIN\r\n"]
    assert wire.cmd(b"AUTH CRAM-MD5").startswith(b"-ERR Unsupported SASL mechanism")
    assert wire.cmd(b"AUTH PLAIN") == b"+ \r\n"
    assert wire.cmd(b"*") == b"-ERR Authentication cancelled\r\n"
    assert wire.cmd(b"AUTH PLAIN !!notbase64").startswith(b"-ERR Malformed")
    bad = base64.b64encode(f"{BOB}\0{ALICE}\0{PASSWORD}".encode())  # authzid of another user
    assert wire.cmd(b"AUTH PLAIN " + bad).startswith(b"-ERR Malformed")
    wrong = base64.b64encode(f"\0{ALICE}\0nope".encode())
    assert wire.cmd(b"AUTH PLAIN " + wrong).startswith(b"-ERR [AUTH]")
    assert wire.cmd(b"AUTH PLAIN") == b"+ \r\n"
    assert wire.cmd(token).startswith(b"+OK Logged in: 0 messages")
    assert wire.cmd(b"QUIT").startswith(b"+OK")


def test_pass_keeps_spaces_and_needs_user(box: Pop3Box, wire: Wire):
    drive = box.drive
    assert drive is not None
    drive.create_mailbox("dave@home.test", quota=1 << 20, password=" two  words ")
    assert wire.cmd(b"PASS x") == b"-ERR Send USER first\r\n"
    assert login(wire, "Dave@Home.Test", " two  words ").startswith(b"+OK Logged in")


def test_commands_in_the_wrong_state(box: Pop3Box, wire: Wire):
    assert wire.cmd(b"STAT") == b"-ERR Log in first\r\n"
    assert wire.cmd(b"RETR 1") == b"-ERR Log in first\r\n"
    assert wire.cmd(b"NOOP") == b"-ERR Log in first\r\n"
    assert wire.cmd(b"APOP alice 0123").startswith(b"-ERR APOP is not offered")
    assert login(wire).startswith(b"+OK")
    assert wire.cmd(b"USER x") == b"-ERR Already logged in\r\n"
    assert wire.cmd(b"STLS") == b"-ERR Not allowed now\r\n"
    assert wire.cmd(b"NOOP") == b"+OK\r\n"
    assert wire.cmd(b"noop") == b"+OK\r\n"  # commands are case-insensitive


def test_syntax_errors(box: Pop3Box, wire: Wire):
    box.deliver(mail(1))
    login(wire)
    for command, usage in (
        (b"RETR", b"RETR msg"),
        (b"RETR x", b"RETR msg"),
        (b"RETR 1 2", b"RETR msg"),
        (b"TOP 1", b"TOP msg lines"),
        (b"TOP 1 -1", b"TOP msg lines"),
        (b"LIST 1 2", b"LIST [msg]"),
        (b"DELE", b"DELE msg"),
        (b"STAT 1", b"STAT"),
        (b"RETR \xd9\xa1", b"RETR msg"),
    ):  # an Arabic-Indic digit
        assert wire.cmd(command) == b"-ERR Syntax: " + usage + b"\r\n", command
    assert wire.cmd(b"RETR 0") == b"-ERR No such message\r\n"
    assert wire.cmd(b"RETR 2") == b"-ERR No such message\r\n"
    assert wire.cmd(b"RETR 99999999999999999999") == b"-ERR Syntax: RETR msg\r\n"


# -- CAPA, TLS, plaintext policy ---------------------------------------------------------------


def test_capa(make_box: Callable[..., Pop3Box]):
    box = make_box(expire="30")
    p = poplib.POP3("127.0.0.1", box.port)
    assert p.capa() == {
        "TOP": [],
        "UIDL": [],
        "USER": [],
        "SASL": ["PLAIN"],
        "RESP-CODES": [],
        "AUTH-RESP-CODE": [],
        "PIPELINING": [],
        "EXPIRE": ["30"],
        "IMPLEMENTATION": ["Letterbox"],
        "STLS": [],
    }
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.capa() == {
        "TOP": [],
        "UIDL": [],
        "RESP-CODES": [],
        "AUTH-RESP-CODE": [],
        "PIPELINING": [],
        "EXPIRE": ["30"],
        "IMPLEMENTATION": ["Letterbox"],
    }
    p.quit()


def test_no_plaintext_login_before_stls(make_box: Callable[..., Pop3Box]):
    box = make_box(plaintext="never")
    box.deliver(mail(1))
    p = poplib.POP3("127.0.0.1", box.port)
    capa = p.capa()
    assert "USER" not in capa and "SASL" not in capa and "STLS" in capa
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext login is not allowed"):
        p.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext login is not allowed"):
        p._shortcmd("AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode())
    p.stls(unverified_tls())
    capa = p.capa()
    assert "USER" in capa and "SASL" in capa and "STLS" not in capa
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert retr(p, 1) == mail(1)
    p.quit()


def test_stls_discards_what_was_pipelined_in_clear(box: Pop3Box, wire: Wire):
    # RFC 2595 §4 / CVE-2011-0411: a man in the middle appends commands after STLS.
    wire.send(f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    assert wire.line() == b"+OK Begin TLS negotiation\r\n"
    tls = unverified_tls().wrap_socket(wire.sock, server_hostname="box.home.test")
    w = Wire(tls)
    assert w.cmd(b"STAT") == b"-ERR Log in first\r\n"  # the injected login never ran
    assert w.cmd(b"STLS") == b"-ERR TLS is already active\r\n"
    assert login(w).startswith(b"+OK Logged in")
    tls.close()


def test_stls_forgets_a_user_given_before(box: Pop3Box, wire: Wire):
    assert wire.cmd(f"USER {ALICE}".encode()).startswith(b"+OK")
    assert wire.cmd(b"STLS").startswith(b"+OK")
    tls = unverified_tls().wrap_socket(wire.sock, server_hostname="box.home.test")
    w = Wire(tls)
    assert w.cmd(f"PASS {PASSWORD}".encode()) == b"-ERR Send USER first\r\n"
    tls.close()


def test_stls_without_a_certificate(make_box: Callable[..., Pop3Box]):
    box = make_box(tls=False)
    p = poplib.POP3("127.0.0.1", box.port)
    assert "STLS" not in p.capa()
    with pytest.raises(poplib.error_proto, match="STLS is not available"):
        p._shortcmd("STLS")
    p.quit()


def test_a_failed_tls_handshake_ends_the_session(box: Pop3Box, wire: Wire):
    assert wire.cmd(b"STLS").startswith(b"+OK")
    wire.send(b"this is not a TLS client hello\r\n" * 4)
    assert wire.closed()
    box.wait_idle()


def test_implicit_tls_port(box: Pop3Box):
    box.deliver(mail(1))
    p = poplib.POP3_SSL("127.0.0.1", box.tls_port, context=unverified_tls())
    assert "STLS" not in p.capa() and "USER" in p.capa()
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert retr(p, 1) == mail(1)
    p.quit()


def test_the_certificate_is_the_boxs(box: Pop3Box):
    with socket.create_connection(("127.0.0.1", box.tls_port)) as raw:
        ctx = ssl.create_default_context(cafile=str(box.root / "box" / "tls" / "cert.pem"))
        ctx.check_hostname = False
        with ctx.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


# -- pipelining and bad input ------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(box: Pop3Box, wire: Wire):
    box.deliver(mail(1), mail(2, b".x\r\n"))
    wire.send(
        f"CAPA\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nRETR 2\r\nTOP 1 0\r\n"
        "UIDL 1\r\nDELE 1\r\nNOOP\r\nQUIT\r\n".encode()
    )
    assert wire.line().startswith(b"+OK Capability")
    wire.multiline()
    assert wire.line() == b"+OK Send PASS\r\n"
    assert wire.line().startswith(b"+OK Logged in: 2 messages")
    assert wire.line().startswith(b"+OK 2 ")
    assert wire.line().startswith(b"+OK 2 messages")
    assert len(wire.multiline()) == 2
    assert wire.line() == f"+OK {len(mail(2, b'.x' + bytes([13, 10])))} octets\r\n".encode()
    assert wire.multiline()[-1] == b"..x\r\n"
    assert wire.line().startswith(b"+OK Top")
    assert wire.multiline()[-1] == b"\r\n"
    assert wire.line().startswith(b"+OK 1 ")
    assert wire.line() == b"+OK Message 1 deleted\r\n"
    assert wire.line() == b"+OK\r\n"
    assert wire.line() == b"+OK Letterbox signing off (1 deleted)\r\n"
    assert wire.closed()


def test_garbage_input(make_box: Callable[..., Pop3Box]):
    box = make_box(max_bad_commands=100)
    sock = box.connect()
    w = Wire(sock)
    w.line()
    bad_text = b"-ERR Commands are UTF-8 text without control characters\r\n"
    assert w.cmd(b"\xff\xfe\x00garbage") == bad_text
    assert w.cmd(b"NO\x00OP") == bad_text
    assert w.cmd(b"US\rER x") == bad_text
    assert w.cmd(b"HELO there") == b"-ERR Unknown command\r\n"
    assert w.cmd(b"") == b"-ERR Unknown command\r\n"
    assert w.cmd(b"USER " + b"a" * 300) == b"-ERR Line too long\r\n"
    assert w.cmd(b"X" * 100_000) == b"-ERR Line too long\r\n"  # discarded unread, still in step
    w.send(b"CAPA\n")  # a bare LF ends a command line too
    assert w.line().startswith(b"+OK Capability")
    w.multiline()
    assert login(w).startswith(b"+OK Logged in")
    sock.close()


def test_too_many_bad_commands_close_the_session(make_box: Callable[..., Pop3Box]):
    box = make_box(max_bad_commands=3)
    sock = box.connect()
    w = Wire(sock)
    w.line()
    w.send(b"BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    assert [w.line() for _ in range(4)] == [b"-ERR Unknown command\r\n"] * 3 + [
        b"-ERR Too many bad commands; closing\r\n"
    ]
    assert w.closed()
    sock.close()


def test_a_client_that_sends_a_line_without_end_and_leaves(box: Pop3Box, wire: Wire):
    wire.send(b"QUI")
    wire.sock.shutdown(socket.SHUT_WR)
    assert wire.closed()
    assert wire.buf == b""


def test_idle_timeout_closes_without_reply_or_update(make_box: Callable[..., Pop3Box]):
    box = make_box(timeout=0.5)
    ids = box.deliver(mail(1))
    sock = box.connect()
    w = Wire(sock)
    w.line()
    login(w)
    assert w.cmd(b"DELE 1").startswith(b"+OK")
    assert w.closed(timeout=5)
    assert w.buf == b""  # RFC 1939 §3: no response
    box.wait_idle()
    assert box.stored() == ids
    sock.close()


def test_too_many_connections_from_one_address(make_box: Callable[..., Pop3Box]):
    box = make_box(max_connections_per_address=2)
    socks = [box.connect() for _ in range(2)]
    for s in socks:
        assert Wire(s).line().startswith(b"+OK")
    third = Wire(box.connect())
    assert third.line() == b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
    assert third.closed()
    socks[0].close()
    box.call(_wait_sessions(box, 1))
    fourth = Wire(box.connect())
    assert fourth.line().startswith(b"+OK")
    for s in socks[1:]:
        s.close()


async def _wait_sessions(box: Pop3Box, n: int) -> None:
    for _ in range(200):
        if len(box.listener.sessions) <= n:
            return
        await asyncio.sleep(0.02)


# -- damage and the drive going away -------------------------------------------------------------


def _blob(box: Pop3Box, delivery_id: str):
    drive = box.drive
    assert drive is not None
    blob_id, _ = drive.sealed_meta(box.mailboxes[ALICE], delivery_id)
    return drive.blob_path(blob_id)


def test_a_damaged_message_is_refused_before_any_byte(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2))
    path = _blob(box, ids[0])
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    p = client(box)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] Message 1 failed verification"):
        p.retr(1)
    assert retr(p, 2) == mail(2)  # the session goes on
    p.quit()


def test_damage_found_mid_stream_drops_the_connection(box: Pop3Box, wire: Wire):
    big = mail(1, b"z" * 300_000 + b"\r\n")
    ids = box.deliver(big, mail(2))
    path = _blob(box, ids[0])
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # in the last chunk: the first ones verify and go out
    path.write_bytes(bytes(data))
    login(wire)
    assert wire.cmd(b"DELE 2").startswith(b"+OK")
    assert wire.cmd(b"RETR 1") == f"+OK {len(big)} octets\r\n".encode()
    assert wire.closed()
    assert not wire.buf.endswith(b"\r\n.\r\n")  # never passed off as whole
    box.wait_idle()
    assert box.stored() == ids  # and the DELE of this session did not happen


def test_drive_offline_at_login_and_during_a_session(box: Pop3Box):
    ids = box.deliver(mail(1), mail(2))
    drive, box.drive = box.drive, None
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\] The mail drive"):
        client(box)
    box.drive = drive
    p = client(box)
    box.drive = None
    assert p.stat() == (2, len(mail(1)) + len(mail(2)))  # the listing from login stands
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        p.retr(1)
    p.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] The drive could not delete"):
        p.quit()
    box.drive = drive
    assert box.stored() == ids
    assert client(box).stat()[0] == 2  # the IN-USE lock was released


def test_drive_closed_under_a_session(box: Pop3Box):
    box.deliver(mail(1))
    p = client(box)
    drive = box.drive
    assert drive is not None
    drive.close()  # e.g. unplugged: the object stays, every call fails
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        p.retr(1)
    p.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        p.quit()
    box.drive = None


def test_a_client_that_stops_reading_mid_retr_is_cut_off(make_box: Callable[..., Pop3Box]):
    box = make_box(timeout=0.5)
    # Larger than what the kernel buffers on both ends can hold.
    ids = box.deliver(b"Subject: big\r\n\r\n" + (b"s" * 998 + b"\r\n") * 16000)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", box.port))
    w = Wire(sock)
    w.line()
    login(w)
    w.send(b"RETR 1\r\n")  # and never read the answer
    box.wait_idle(timeout=30)  # the server gave up on the stalled socket
    assert w.closed(timeout=20)
    assert not w.buf.endswith(b"\r\n.\r\n")  # it was cut off mid-message
    sock.close()
    assert box.stored() == ids
    assert client(box).stat()[0] == 1  # and the mailbox is free


def test_the_event_loop_serves_others_while_a_key_is_unwrapped(box: Pop3Box):
    drive = box.drive
    assert drive is not None
    drive.limits = Argon2Limits(4, 256 << 20)  # a slow board's worth of Argon2id
    drive.create_mailbox("slow@home.test", quota=1 << 20, password=PASSWORD)
    other = client(box, BOB)
    took: list[float] = []

    def slow_login() -> None:
        started = time.monotonic()
        client(box, "slow@home.test").quit()
        took.append(time.monotonic() - started)

    t = threading.Thread(target=slow_login)
    t.start()
    time.sleep(0.05)
    gaps = []
    while t.is_alive():
        started = time.monotonic()
        other.noop()
        gaps.append(time.monotonic() - started)
    t.join()
    other.quit()
    assert len(gaps) > 3 and max(gaps) < took[0] / 3, (gaps, took)

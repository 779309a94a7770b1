"""The gateway over real sockets: smtplib and a raw client against a real drive.

Every accepted message must read back from the drive byte-identical apart from
the Received header; nothing refused may leave a file on the drive.
"""

from __future__ import annotations

import contextlib
import random
import re
import smtplib
import socket
import ssl
import threading
import time

import pytest

from tests.helpers import assert_refused, unverified_tls
from tests.smtp.conftest import (
    ALICE,
    BOB,
    Box,
    Wire,
    strip_received,
)

MSG = b"From: x@example.org\r\nTo: alice@home.test\r\nSubject: hello\r\n\r\nHello Alice.\r\n"


def send_raw(w: Wire, body_wire: bytes, rcpts: tuple[str, ...] = (ALICE,)) -> str:
    """MAIL, RCPT…, DATA, then `body_wire` (already stuffed, with its end mark)."""
    assert w.cmd("MAIL FROM:<x@example.org>").startswith("250 2.1.0")
    for r in rcpts:
        assert w.cmd(f"RCPT TO:<{r}>").startswith("250 2.1.5")
    assert w.cmd("DATA").startswith("354")
    w.send(body_wire)
    return w.line()


# -- the basics -------------------------------------------------------------------------------


def test_ehlo_offers_the_extensions(box: Box, wire):
    w = wire(ehlo=False)
    w.send(b"EHLO client.example\r\n")
    code, lines = w.reply()
    assert code == 250
    assert lines[0] == "mx.home.test"
    assert set(lines[1:]) == {
        "PIPELINING",
        f"SIZE {box.settings.max_message_size}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    }


def test_smtplib_plain_message_reads_back_identical(box: Box):
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        assert client.sendmail("x@example.org", [ALICE], MSG) == {}
    [stored] = box.messages(ALICE)
    assert strip_received(stored) == MSG
    assert stored.startswith(b"Return-Path: <x@example.org>\r\nReceived: from ")
    assert b"with ESMTP id" in stored and b"for <alice@home.test>" in stored


def test_starttls_and_the_received_header_names_tls(box: Box):
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.starttls(context=unverified_tls())
        client.ehlo()
        assert "starttls" not in client.esmtp_features
        client.sendmail("x@example.org", [ALICE], MSG)
    [stored] = box.messages(ALICE)
    assert strip_received(stored) == MSG
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)", stored)
    assert b"with ESMTPS id" in stored


def test_every_reply_has_an_enhanced_status_code(make_box, wire):
    w = wire(make_box(max_bad_commands=50))
    replies = [
        w.cmd("NOOP"),
        w.cmd("HELP"),
        w.cmd("VRFY alice"),
        w.cmd("RCPT TO:<a@home.test>"),
        w.cmd("DATA"),
        w.cmd("MAIL FROM:<x@example.org>"),
        w.cmd("MAIL FROM:<y@example.org>"),
        w.cmd("RCPT TO:<nobody@home.test>"),
        w.cmd("RCPT TO:<a@elsewhere.example>"),
        w.cmd("DATA"),
        w.cmd("RSET"),
        w.cmd("BOGUS"),
        w.cmd("MAIL FROM:<bad"),
        w.cmd("STARTTLS now"),
    ]
    for r in replies:
        assert re.fullmatch(r"[245]\d\d [245]\.\d+\.\d+ .+", r), r
    assert w.cmd("QUIT") == "221 2.0.0 Bye"


def test_null_sender_is_accepted(box: Box):
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("<>", [ALICE], MSG)
    assert len(box.messages(ALICE)) == 1


def test_helo_without_ehlo_works_but_offers_no_parameters(box: Box, wire):
    w = wire(ehlo=False)
    assert w.cmd("HELO old.example") == "250 mx.home.test"
    assert w.cmd("MAIL FROM:<x@example.org> SIZE=10").startswith("501 5.5.4")
    assert send_raw(w, MSG + b".\r\n").startswith("250 2.0.0")
    assert b"with SMTP id" in box.messages(ALICE)[0]


def test_commands_out_of_sequence(box: Box, wire):
    w = wire(ehlo=False)
    assert w.cmd("MAIL FROM:<x@example.org>").startswith("503 5.5.1")
    w.cmd("EHLO c")
    assert w.cmd("RCPT TO:<alice@home.test>").startswith("503 5.5.1")
    assert w.cmd("DATA").startswith("503 5.5.1")
    w.cmd("MAIL FROM:<x@example.org>")
    assert w.cmd("DATA").startswith("554 5.5.1")  # no valid recipients


def test_several_recipients_are_stored_once_and_delivered_to_each(box: Box):
    assert box.drive is not None
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("x@example.org", [ALICE, BOB, "Alice@HOME.test"], MSG)
    assert [strip_received(m) for m in box.messages(ALICE)] == [MSG]
    assert [strip_received(m) for m in box.messages(BOB)] == [MSG]
    assert box.drive.stats()["blobs"] == 1
    assert b"for <" not in box.messages(BOB)[0]  # recipients do not see each other


def test_dot_stuffing_round_trip(box: Box):
    body = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend.\r\n.\r\n"
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("x@example.org", [ALICE], body)  # smtplib stuffs
    assert strip_received(box.messages(ALICE)[0]) == body


def test_eight_bit_body_is_stored_untouched(box: Box):
    body = "Subject: Grüße\r\n\r\nÄpfel, Öl, 日本語\r\n".encode() + bytes(range(128, 256)) + b"\r\n"
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("x@example.org", [ALICE], body, mail_options=["BODY=8BITMIME"])
    assert strip_received(box.messages(ALICE)[0]) == body


def test_a_bounce_gets_the_null_return_path(box: Box):
    """RFC 5321 §4.4: the reverse-path of MAIL FROM:<> is recorded as "<>"."""
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        assert client.sendmail("<>", [ALICE], MSG) == {}
    [stored] = box.messages(ALICE)
    assert stored.startswith(b"Return-Path: <>\r\nReceived: from ")
    assert strip_received(stored) == MSG


def test_smtputf8_addresses(box: Box):
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("jürgen@example.org", ["jörg@home.test"], MSG, mail_options=["SMTPUTF8"])
    [stored] = box.messages("jörg@home.test")
    assert strip_received(stored) == MSG
    assert stored.startswith("Return-Path: <jürgen@example.org>\r\nReceived: ".encode())
    assert b"with UTF8SMTP id" in stored and "for <jörg@home.test>".encode() in stored


def test_non_ascii_address_without_smtputf8_is_refused(box: Box, wire):
    w = wire()
    assert w.cmd("MAIL FROM:<jürgen@example.org>").startswith("553 5.6.7")
    w.cmd("MAIL FROM:<x@example.org>")
    assert w.cmd("RCPT TO:<jörg@home.test>").startswith("553 5.6.7")


def test_pipelining(box: Box, wire):
    w = wire()
    w.send(
        b"MAIL FROM:<x@example.org>\r\nRCPT TO:<alice@home.test>\r\n"
        b"RCPT TO:<nobody@home.test>\r\nRCPT TO:<bob@home.test>\r\nDATA\r\n"
    )
    assert [w.line()[:9] for _ in range(5)] == [
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "354 End d",
    ]
    # After the end mark a client may pipeline the next transaction (RFC 2920).
    w.send(MSG + b".\r\nRSET\r\nMAIL FROM:<y@example.org>\r\nRCPT TO:<bob@home.test>\r\nDATA\r\n")
    assert [w.line()[:9] for _ in range(5)] == [
        "250 2.0.0",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "354 End d",
    ]
    w.send(b"second\r\n.\r\nQUIT\r\n")
    assert w.line().startswith("250 2.0.0")
    assert w.line() == "221 2.0.0 Bye"
    assert [strip_received(m) for m in box.messages(BOB)] == [MSG, b"second\r\n"]


def test_data_sent_before_354_closes_the_session(box: Box, wire):
    w = wire()
    w.send(b"MAIL FROM:<x@example.org>\r\nRCPT TO:<alice@home.test>\r\nDATA\r\n" + MSG + b".\r\n")
    assert w.line().startswith("250")
    assert w.line().startswith("250")
    assert w.line().startswith("421 4.5.0")
    assert w.closed()
    assert box.messages(ALICE) == [] and box.stored_files() == []


# -- line endings and smuggling (RFC 5321 §2.3.8, §4.1.1.4) ----------------------------------

SMUGGLE = (
    b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@home.test>\r\nDATA\r\n"
    b"From: ceo@bank.example\r\n\r\nPay now.\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n\n.\n\n"],
    ids=repr,
)
def test_smuggling_payloads_are_refused_whole(box: Box, wire, fake_end):
    w = wire()
    reply = send_raw(w, b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLE + b".\r\n")
    assert reply.startswith("550 5.6.0")
    assert w.closed()  # and nothing else was answered: no 250 for a smuggled message
    assert w.buf == b""
    box.wait_idle()
    assert box.messages(ALICE) == [] and box.messages(BOB) == []
    assert box.stored_files() == []


def test_bare_lf_in_an_ordinary_message_is_refused(box: Box, wire):
    w = wire()
    assert send_raw(w, b"Subject: unix\n\nline one\nline two\r\n.\r\n").startswith("550 5.6.0")
    box.wait_idle()
    assert box.stored_files() == []


def test_command_lines_must_end_with_crlf(box: Box, wire):
    w = wire()
    w.send(b"NOOP\n")
    assert w.line().startswith("500 5.5.2")
    w.send(b"NOOP\rRSET\r\n")
    assert w.line().startswith("500 5.5.2")
    assert w.cmd("NOOP").startswith("250 2.0.0")


# -- MAIL and RCPT parameters -------------------------------------------------------------------

# RFC 5321 §4.1.1.11: a parameter the server does not recognise or implement is
# 555; a recognised one with a bad value is a syntax error, 501 (SIZE: RFC 1870 §6,
# a number of octets; BODY: RFC 6152 §2). A refused MAIL starts no transaction.
MAIL_REFUSALS = [
    ("FOO=bar", "555 5.5.4"),
    ("RET=HDRS", "555 5.5.4"),  # DSN (RFC 3461) is not offered
    ("ENVID=abc", "555 5.5.4"),
    ("AUTH=<>", "555 5.5.4"),  # AUTH (RFC 4954) is not offered
    ("SIZE=10 XTRA", "555 5.5.4"),
    ("SIZE=abc", "501 5.5.4"),
    ("SIZE", "501 5.5.4"),
    ("SIZE=-1", "501 5.5.4"),
    ("SIZE=1e3", "501 5.5.4"),
    ("SIZE=\uff11\uff12", "501 5.5.4"),  # full-width digits pass str.isdigit()
    ("SIZE=1 SIZE=2", "501 5.1.7"),  # twice
    ("BODY=BINARYMIME", "501 5.5.4"),  # CHUNKING/BINARYMIME (RFC 3030) not offered
    ("BODY", "501 5.5.4"),
    ("SMTPUTF8=yes", "501 5.5.4"),  # RFC 6531 §3.4: no value
    ("=x", "501 5.1.7"),
    ("SIZE=" + "9" * 30, "552 5.3.4"),  # well-formed, but over the limit
]


@pytest.mark.parametrize(("params", "reply"), MAIL_REFUSALS)
def test_mail_parameter_refusals(box: Box, wire, params: str, reply: str):
    w = wire()
    assert w.cmd(f"MAIL FROM:<x@example.org> {params}").startswith(reply + " ")
    assert w.cmd("RCPT TO:<alice@home.test>").startswith("503 5.5.1")  # no transaction
    assert send_raw(w, MSG + b".\r\n").startswith("250 2.0.0")  # the session goes on


@pytest.mark.parametrize(
    "params", ["NOTIFY=NEVER", "ORCPT=rfc822;a@example.org", "SIZE=10", "BODY=8BITMIME", "X"]
)
def test_rcpt_parameters_are_not_implemented(box: Box, wire, params: str):
    # No DSN is offered, so no RCPT parameter is known (RFC 5321 §4.1.1.11: 555),
    # and the recipient is not added.
    w = wire()
    assert w.cmd("MAIL FROM:<x@example.org>").startswith("250 2.1.0")
    assert w.cmd(f"RCPT TO:<alice@home.test> {params}").startswith("555 5.5.4 ")
    assert w.cmd("DATA").startswith("554 5.5.1")  # no valid recipients
    assert box.messages(ALICE) == []


def test_known_parameters_in_any_case_are_accepted(box: Box, wire):
    w = wire()
    assert w.cmd("MAIL FROM:<x@example.org> size=100 body=8bitmime Smtputf8").startswith(
        "250 2.1.0"
    )
    assert w.cmd("RCPT TO:<alice@home.test>").startswith("250 2.1.5")
    assert w.cmd("DATA").startswith("354")
    w.send(MSG + b".\r\n")
    assert w.line().startswith("250 2.0.0")
    assert [strip_received(m) for m in box.messages(ALICE)] == [MSG]


# -- size --------------------------------------------------------------------------------------


def test_size_parameter_over_the_limit_is_refused_at_mail(make_box):
    box = make_box(max_message_size=1000)
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.ehlo()
        code, text = client.mail("x@example.org", ["SIZE=1001"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.mail("x@example.org", ["SIZE=1000"])[0] == 250


def test_oversize_stream_is_refused_and_the_partial_blob_removed(make_box, wire):
    box = make_box(max_message_size=200_000)
    w = wire(box)
    assert w.cmd("MAIL FROM:<x@example.org>").startswith("250")
    assert w.cmd("RCPT TO:<alice@home.test>").startswith("250")
    assert w.cmd("DATA").startswith("354")
    line = b"x" * 998 + b"\r\n"
    w.send(line * 150)  # 150 kB: under the limit, being written to the drive
    time.sleep(0.2)
    w.send(line * 150)  # now over it
    time.sleep(0.2)
    assert box.stored_files() == []  # the partial blob went as soon as the limit passed
    w.send(b".\r\n")
    assert w.line().startswith("552 5.3.4")
    assert w.cmd("NOOP").startswith("250")  # the session goes on
    assert box.messages(ALICE) == []


def test_message_larger_than_the_quota(make_box):
    box = make_box()
    box.add_mailbox("small@home.test", quota=10_000)
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.ehlo()
        client.mail("x@example.org", ["SIZE=20000"])
        code, text = client.rcpt("small@home.test")
        assert (code, text[:5]) == (552, b"5.2.2")  # by SIZE=, at RCPT
        client.rset()
        client.mail("x@example.org")
        assert client.rcpt("small@home.test")[0] == 250
        code, text = client.data(b"Subject: big\r\n\r\n" + b"y" * 20_000 + b"\r\n")
        assert (code, text[:5]) == (552, b"5.2.2")  # at commit
    assert box.messages("small@home.test") == [] and box.stored_files() == []


# -- recipients and relaying ----------------------------------------------------------------


@pytest.mark.parametrize(
    "rcpt",
    [
        "someone@example.com",
        "alice@home.test.example.com",
        "alice@[127.0.0.1]",
        "@home.test:someone@example.com",
        "alice%example.com@elsewhere.example",
    ],
)
def test_relaying_is_refused(box: Box, wire, rcpt):
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    assert w.cmd(f"RCPT TO:<{rcpt}>").startswith("554 5.7.1")


def test_percent_hack_to_a_local_domain_is_just_an_unknown_user(box: Box, wire):
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    assert w.cmd("RCPT TO:<someone%example.com@home.test>").startswith("550 5.1.1")


def test_unknown_users_and_configured_local_domains(box: Box, wire):
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    assert w.cmd("RCPT TO:<nobody@home.test>").startswith("550 5.1.1")
    assert w.cmd("RCPT TO:<nobody@extra.test>").startswith("550 5.1.1")  # smtp.local_domains
    assert w.cmd("RCPT TO:<postmaster>").startswith("250 2.1.5")  # RFC 5321 §4.5.1
    assert w.cmd("DATA").startswith("354")
    w.send(MSG + b".\r\n")
    assert w.line().startswith("250")
    assert len(box.messages("postmaster@home.test")) == 1


def test_too_many_recipients(make_box, wire):
    box = make_box(max_recipients=3)
    w = wire(box)
    w.cmd("MAIL FROM:<x@example.org>")
    for r in (ALICE, BOB, "postmaster@home.test"):
        assert w.cmd(f"RCPT TO:<{r}>").startswith("250")
    assert w.cmd("RCPT TO:<nobody@home.test>").startswith("452 4.5.3")


# -- limits on the client --------------------------------------------------------------------


def test_command_size_limits_do_not_leak_between_sessions(box: Box, wire):
    a = wire()
    b = wire(ehlo=False)  # a new connection in between (cleared aiosmtpd's shared dict)
    long_mail = "MAIL FROM:<x@example.org> SIZE=10 " + "BODY=8BITMIME "
    long_mail += " " * (540 - len(long_mail))  # legal after EHLO: 512 + 26 + 10 + 14
    assert len(long_mail) + 2 > 512
    assert a.cmd(long_mail).startswith("250")
    assert b.cmd("HELO c").startswith("250")
    assert b.cmd(long_mail).startswith("500 5.5.2")  # HELO: no extensions, 512
    for _ in range(20):  # EHLO again and again must not grow the limit (it did in aiosmtpd)
        a.send(b"EHLO c\r\n")
        a.reply()
    assert a.cmd("MAIL FROM:<x@example.org>" + " " * 600).startswith("500 5.5.2")


def test_too_many_errors_closes_with_421(make_box, wire):
    box = make_box(max_bad_commands=3)
    w = wire(box)
    assert w.cmd("FOO").startswith("500")
    assert w.cmd("BAR").startswith("500")
    assert w.cmd("BAZ").startswith("500")
    assert w.line().startswith("421 4.7.0")
    assert w.closed()


def test_connection_cap_per_address(make_box, wire):
    box = make_box(max_connections_per_address=2)
    first, second = wire(box), wire(box)
    third = Wire(box.connect())
    assert third.line().startswith("421 4.7.0")
    assert third.closed()
    first.cmd("QUIT")
    deadline = time.monotonic() + 5
    while len(box.listener.sessions) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fourth = Wire(box.connect())
    assert fourth.line().startswith("220")
    second.close()
    fourth.close()


@pytest.mark.slow
def test_a_trickling_client_is_closed_at_the_timeout_and_nothing_is_stored(make_box, wire):
    box = make_box(timeout=2)
    w = wire(box)
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    started = time.monotonic()
    closed = False
    for b in b"Subject: slow\r\n\r\n" + b"z" * 100:
        try:
            w.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if w.closed(timeout=0.5):
            closed = True
            break
    elapsed = time.monotonic() - started
    assert closed and 1.5 < elapsed < 4, elapsed
    assert w.buf.startswith(b"421 4.4.2")
    box.wait_idle()
    assert box.messages(ALICE) == [] and box.stored_files() == []


@pytest.mark.slow
def test_a_slow_but_steady_upload_outlasts_the_idle_timeout(make_box, wire):
    box = make_box(timeout=2)
    w = wire(box)
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    line = b"s" * 998 + b"\r\n"
    started = time.monotonic()
    while time.monotonic() - started < 5:  # 2.5 x the timeout, 100 kB a second
        w.send(line * 25)
        time.sleep(0.25)
    w.send(b".\r\n")
    assert w.line().startswith("250 2.0.0")


def test_idle_timeout_says_421(make_box, wire):
    box = make_box(timeout=1)
    w = wire(box)
    assert w.closed(timeout=5)
    assert w.buf.startswith(b"421 4.4.2")


# -- garbage -----------------------------------------------------------------------------------


def test_garbage_and_binary_commands_do_not_hurt(box: Box):
    rng = random.Random(5321)
    for _ in range(5):
        sock = box.connect()
        sock.sendall(rng.randbytes(200_000))
        sock.settimeout(10)
        got = b""
        # The server must end the session itself (too many bad commands): a clean
        # close, or a reset because our garbage was still unread. A timeout here
        # means it is still talking to a client that sends nothing but garbage.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
        sock.close()
        assert got.startswith(b"220 ")
        assert all(
            re.fullmatch(rb"(220|421|500|501|502|503|554|555|550|553) .*", line)
            for line in got.split(b"\r\n")
            if line
        ), got[:300]
    # and the gateway still works
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("x@example.org", [ALICE], MSG)
    box.wait_idle()
    assert len(box.messages(ALICE)) == 1
    assert len(box.stored_files()) == 1


def test_binary_message_content(box: Box, wire):
    rng = random.Random(1)
    w = wire()
    # Random bytes contain bare CR and LF: refused.
    assert send_raw(w, rng.randbytes(50_000) + b"\r\n.\r\n").startswith("550 5.6.0")
    # The same bytes with every CR/LF removed and put into CRLF lines: stored as is.
    raw = rng.randbytes(50_000).replace(b"\r", b"").replace(b"\n", b"")
    message = b"".join(raw[i : i + 900] + b"\r\n" for i in range(0, len(raw), 900))
    with smtplib.SMTP("127.0.0.1", box.port) as client:
        client.sendmail("x@example.org", [ALICE], message)
    assert [strip_received(m) for m in box.messages(ALICE)] == [message]


def test_an_overlong_command_line(box: Box, wire):
    w = wire()
    w.send(b"NOOP " + b"x" * 1_000_000 + b"\r\n")
    assert w.line().startswith("500 5.5.2")
    assert w.cmd("NOOP").startswith("250")


@pytest.mark.slow
def test_a_ten_megabyte_line_over_the_default_limit_is_refused(box: Box, wire):
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    chunk = b"L" * (1024 * 1024)
    for _ in range(10):
        w.send(chunk)
    w.send(b"\r\n.\r\n")
    assert w.line().startswith("550 5.6.0")
    assert w.cmd("NOOP").startswith("250")
    assert box.stored_files() == [] and box.messages(ALICE) == []


def test_a_line_over_max_line_length_is_refused(make_box, wire):
    box = make_box(max_line_length=1000)
    w = wire(box)
    assert send_raw(w, b"x" * 999 + b"\r\n.\r\n").startswith("550 5.6.0")
    assert send_raw(w, b"x" * 998 + b"\r\n.\r\n").startswith("250 2.0.0")
    assert box.stored_files() and len(box.messages(ALICE)) == 1


# -- the drive failing --------------------------------------------------------------------------


def test_no_drive_means_451_and_senders_retry(box: Box, wire):
    drive, box.drive = box.drive, None
    try:
        w = wire()
        w.cmd("MAIL FROM:<x@example.org>")
        assert w.cmd("RCPT TO:<alice@home.test>").startswith("451 4.3.0")
        assert w.cmd("RCPT TO:<someone@elsewhere.example>").startswith("451 4.3.0")
        assert w.cmd("RCPT TO:<a@extra.test>").startswith("451 4.3.0")
    finally:
        box.drive = drive


def test_drive_failing_at_commit_gives_451_and_leaves_nothing(box: Box, wire):
    assert box.drive is not None
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    w.send(MSG)
    # The drive's blob directories vanish (a failing USB stick): the rename at
    # commit fails, and the drive says DriveUnavailable.
    blobs = box.drive.layout.blobs
    moved = blobs.with_name("blobs-away")
    moved.mkdir()
    for sub in blobs.iterdir():
        if sub.name != "tmp":
            sub.rename(moved / sub.name)
    try:
        w.send(b".\r\n")
        assert w.line().startswith("451 4.3.0")
        assert box.stored_files() == []
    finally:
        for sub in moved.iterdir():
            sub.rename(blobs / sub.name)
        moved.rmdir()
    assert box.drive.list(box.mailboxes[ALICE]) == []
    assert w.cmd("NOOP").startswith("250")


def test_drive_closed_under_a_session_gives_451(box: Box, wire):
    assert box.drive is not None
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    w.send(MSG)
    box.drive.close()
    w.send(b".\r\n")
    assert w.line().startswith("451 4.3.0")
    w2 = wire()
    w2.cmd("MAIL FROM:<x@example.org>")
    assert w2.cmd("RCPT TO:<alice@home.test>").startswith("451 4.3.0")
    box.drive = None


# -- STARTTLS ----------------------------------------------------------------------------------


def test_commands_pipelined_after_starttls_are_discarded(box: Box, wire):
    w = wire()
    w.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
    assert w.line().startswith("220 2.0.0")
    tls = unverified_tls().wrap_socket(w.sock, server_hostname="mx.home.test")
    t = Wire(tls)
    t.send(b"EHLO again\r\n")
    code, lines = t.reply()
    assert code == 250 and "STARTTLS" not in lines  # the EHLO reply, nothing for the MAIL
    assert t.cmd("RCPT TO:<alice@home.test>").startswith("503 5.5.1")  # no MAIL took effect
    tls.close()


def test_starttls_forgets_the_session(box: Box, wire):
    w = wire()
    assert w.cmd("MAIL FROM:<x@example.org>").startswith("250")
    assert w.cmd("STARTTLS").startswith("220")
    tls = Wire(unverified_tls().wrap_socket(w.sock, server_hostname="mx.home.test"))
    assert tls.cmd("MAIL FROM:<x@example.org>").startswith("503 5.5.1")  # EHLO first
    tls.cmd("EHLO c")
    assert tls.cmd("MAIL FROM:<x@example.org>").startswith("250")  # no nested MAIL
    assert tls.cmd("STARTTLS").startswith("503 5.5.1")


def test_failed_tls_handshake_closes(box: Box, wire):
    w = wire()
    assert w.cmd("STARTTLS").startswith("220")
    w.send(b"this is not a TLS client hello\r\n" * 10)
    assert w.closed()
    box.wait_idle()


def test_no_tls_context_means_no_starttls(make_box, wire):
    box = make_box(tls=False)
    w = wire(box, ehlo=False)
    w.send(b"EHLO c\r\n")
    assert "STARTTLS" not in w.reply()[1]
    assert w.cmd("STARTTLS").startswith("454 4.7.0")


# -- concurrency and shutdown -----------------------------------------------------------------


def test_concurrent_sessions(box: Box):
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", box.port) as c:
                for i in range(10):
                    c.sendmail("x@example.org", [ALICE], b"Subject: %d.%d\r\n\r\nx\r\n" % (n, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(box.messages(ALICE)) == 80


def test_shutdown_lets_a_message_in_flight_finish_and_closes_idle_sessions(box: Box, wire):
    idle = wire()
    busy = wire()
    busy.cmd("MAIL FROM:<x@example.org>")
    busy.cmd("RCPT TO:<alice@home.test>")
    assert busy.cmd("DATA").startswith("354")
    busy.send(b"Subject: in flight\r\n\r\n")
    stopping = box.loop.call_soon_threadsafe(lambda: box.loop.create_task(box.listener.stop(5.0)))
    del stopping
    assert idle.line().startswith("421 4.3.2")
    assert idle.closed()
    time.sleep(0.3)
    busy.send(b"finished\r\n.\r\n")
    assert busy.line().startswith("250 2.0.0")
    assert busy.line().startswith("421 4.3.2")
    assert busy.closed()
    assert_refused(box.port)
    assert [strip_received(m) for m in box.messages(ALICE)] == [
        b"Subject: in flight\r\n\r\nfinished\r\n"
    ]


def test_shutdown_drops_an_unfinished_message_after_the_grace_period(box: Box, wire):
    busy = wire()
    busy.cmd("MAIL FROM:<x@example.org>")
    busy.cmd("RCPT TO:<alice@home.test>")
    assert busy.cmd("DATA").startswith("354")
    busy.send(b"Subject: never finished\r\n\r\n")
    started = time.monotonic()
    box.call(box.listener.stop(0.5))
    assert time.monotonic() - started < 3
    assert busy.closed()
    assert b"250" not in busy.buf
    assert busy.buf.startswith(b"421 4.3.2")
    assert box.messages(ALICE) == [] and box.stored_files() == []


def test_tls_context_is_a_real_server_context(box: Box):
    assert isinstance(box.tls_context, ssl.SSLContext)
    assert box.tls_context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_client_vanishing_mid_data_leaves_nothing(box: Box, wire):
    w = wire()
    w.cmd("MAIL FROM:<x@example.org>")
    w.cmd("RCPT TO:<alice@home.test>")
    assert w.cmd("DATA").startswith("354")
    w.send(b"Subject: cut off\r\n\r\n" + b"partial line\r\n" * 10_000)
    time.sleep(0.2)
    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    w.close()  # RST, no end mark
    box.wait_idle()
    assert box.messages(ALICE) == [] and box.stored_files() == []


def test_a_half_closed_client_still_gets_its_replies(box: Box, wire):
    w = wire()
    w.send(b"MAIL FROM:<x@example.org>\r\nRCPT TO:<alice@home.test>\r\nDATA\r\n")
    assert [w.line()[:3] for _ in range(3)] == ["250", "250", "354"]
    w.send(MSG + b".\r\nQUIT\r\n")
    w.sock.shutdown(socket.SHUT_WR)  # EOF right behind the end mark and QUIT
    assert w.line().startswith("250 2.0.0")
    assert w.line() == "221 2.0.0 Bye"
    assert [strip_received(m) for m in box.messages(ALICE)] == [MSG]

"""The fuzz checkers themselves: they must see a malformed reply, or the fuzz proves nothing."""

from __future__ import annotations

import random

from tests.fuzz import sessions


def test_smtp_checker_accepts_real_replies():
    good = (
        b"220 mx.home.test ESMTP Letterbox\r\n250-mx.home.test\r\n250-PIPELINING\r\n"
        b"250 SMTPUTF8\r\n500 5.5.2 Line too long\r\n221 2.0.0 Bye\r\n"
    )
    assert sessions.check_smtp(good) == []
    assert sessions.check_smtp(good + b"\x16\x03\x01 tls bytes", cut=True) == []


def test_smtp_checker_finds_what_is_wrong():
    greeting = b"220 mx ESMTP\r\n"
    for bad in (
        b"250 ok",  # no CRLF at the end
        b"250 ok\n",  # bare LF
        b"25 short\r\n",
        b"250 \x00nul\r\n",
        b"500 no enhanced code\r\n",
        b"250-first\r\n251 other code\r\n",
        b"Traceback (most recent call last):\r\n",
    ):
        assert sessions.check_smtp(greeting + bad), bad
    assert sessions.check_smtp(b"+OK pop3\r\n")


def test_pop3_checker_follows_multiline_responses():
    lines = [b"CAPA\r", b"LIST 1\r", b"RETR 1\r", b"BOGUS\r", b""]
    good = (
        b"+OK ready\r\n+OK Capability list follows\r\nTOP\r\n.\r\n+OK 1 20\r\n"
        b"+OK 20 octets\r\n-ERR looks like a status\r\n..stuffed\r\n.\r\n-ERR Unknown command\r\n"
    )
    assert sessions.check_pop3(lines, good) == []
    assert sessions.check_pop3(lines, good[:-4], cut=True) == []


def test_pop3_checker_finds_what_is_wrong():
    lines = [b"CAPA\r", b"NOOP\r", b""]
    for bad in (
        b"+OK ready\r\n+OK caps\r\nTOP\r\n",  # multi-line never terminated
        b"+OK ready\r\n+OK caps\r\n.\r\nOK no sign\r\n",
        b"+OK ready\r\n+OK caps\r\n.\r\n+OK\r\n+OK one reply too many\r\n",
        b"+OK ready\r\n+OK caps\r\n.\r\n-ERR \xff\r\n",
        b"hello\r\n",
    ):
        assert sessions.check_pop3(lines, bad), bad


def test_sessions_are_named_by_their_seed():
    a = sessions.smtp_session(random.Random(7), "r@x.test", "k@x.test", 1)
    b = sessions.smtp_session(random.Random(7), "r@x.test", "k@x.test", 1)
    assert a == b
    p = sessions.pop3_session(random.Random(7), "u", "p")
    assert p == sessions.pop3_session(random.Random(7), "u", "p")

"""The trace fields: Return-Path and Received (RFC 5321 §4.4)."""

from __future__ import annotations

from datetime import UTC, datetime

from letterbox.smtp.received import TlsInfo, protocol, received_header, return_path_header

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def header(**kw):
    args = dict(
        helo="client.example",
        peer=("192.0.2.7", 4000),
        host="mx.home.test",
        trace="abc123",
        extended=True,
        tls=None,
        utf8=False,
        recipients=["a@home.test"],
        now=NOW,
    )
    args.update(kw)
    return received_header(**args)


def test_plain_header():
    assert header() == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.home.test (Letterbox) with ESMTP id abc123\r\n"
        b"\tfor <a@home.test>; Wed, 02 Jan 2030 03:04:05 +0000\r\n"
    )


def test_tls_header_names_version_and_cipher():
    h = header(tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256))
    assert b"(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" in h
    assert b"with ESMTPS id" in h


def test_several_recipients_are_not_named():
    h = header(recipients=["a@home.test", "b@home.test"])
    assert h == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.home.test (Letterbox) with ESMTP id abc123\r\n"
        b"\t; Wed, 02 Jan 2030 03:04:05 +0000\r\n"
    )


def test_helo_is_sanitised_and_ipv6_literal():
    h = header(helo="evil) (\\x\x00\r\nX-Fake: 1", peer=("2001:db8::1", 25, 0, 0))
    first = h.split(b"\r\n")[0]
    assert first == b"Received: from evil????x???X-Fake:?1 ([IPv6:2001:db8::1])"


def test_protocol_names():
    assert protocol(False, False, False) == "SMTP"
    assert protocol(True, True, False) == "ESMTPS"
    assert protocol(True, False, True) == "UTF8SMTP"
    assert protocol(True, True, True) == "UTF8SMTPS"


def test_return_path_is_the_reverse_path_in_angle_brackets():
    assert return_path_header("x@example.org") == b"Return-Path: <x@example.org>\r\n"
    assert return_path_header("") == b"Return-Path: <>\r\n"  # the null reverse-path
    assert return_path_header("jörg@example.org", utf8=True) == (
        "Return-Path: <jörg@example.org>\r\n".encode()
    )

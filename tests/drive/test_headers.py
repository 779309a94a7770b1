"""The header picker that feeds sealed metadata: folded, encoded, garbage, endless."""

from __future__ import annotations

from letterbox.drive.headers import HEADER_LIMIT, HeaderSniffer


def sniff(*pieces: bytes) -> dict[str, str]:
    sniffer = HeaderSniffer()
    for piece in pieces:
        sniffer.feed(piece)
    return sniffer.headers()


def test_folded_encoded_and_repeated_fields() -> None:
    raw = (
        b"Received: from x\r\nFROM: =?utf-8?q?J=C3=B6rg?= <j@example.net>\r\n"
        b"Subject: a folded\r\n\tsubject line\r\nsubject: a second one\r\n"
        b"Message-ID: <id@example.net>\r\nX-Other: no\r\n\r\nSubject: body, not header\r\n"
    )
    # Split at awkward places: the separator itself straddles two writes.
    got = sniff(raw[:40], raw[40:-30], raw[-30:])
    assert got == {
        "From": "Jörg <j@example.net>",
        "Subject": "a folded subject line",
        "Message-ID": "<id@example.net>",
    }


def test_bare_lf_messages_and_garbage_do_not_break_it() -> None:
    assert sniff(b"Subject: lf only\n\nbody\n") == {"Subject": "lf only"}
    assert sniff(b"\x00\xff\xfe garbage without colon\r\n:\r\n\r\n") == {}
    assert sniff(b"") == {}
    assert sniff(b"Subject: =?bogus?x?zz?=\r\n\r\n")["Subject"] == "=?bogus?x?zz?="


def test_an_endless_header_block_costs_bounded_memory() -> None:
    sniffer = HeaderSniffer()
    for _ in range(1000):
        sniffer.feed(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    assert len(sniffer._buf) <= HEADER_LIMIT
    assert sniffer.headers() == {}

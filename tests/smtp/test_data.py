"""The DATA byte-stream reader: end mark, dot-unstuffing, bare CR/LF, size and line limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from letterbox.smtp.data import DataError, DataReader

BIG = 1 << 30


def feed_all(chunks: list[bytes], max_size: int = BIG, max_line: int = 0) -> DataReader:
    reader = DataReader(max_size, max_line)
    reader.out = b""  # type: ignore[attr-defined]
    reader.rest = b""  # type: ignore[attr-defined]
    for chunk in chunks:
        if reader.done:
            reader.rest += chunk  # type: ignore[attr-defined]
            continue
        content, rest = reader.feed(chunk)
        reader.out += content  # type: ignore[attr-defined]
        reader.rest += rest  # type: ignore[attr-defined]
    return reader


def run(wire: bytes, **kw: int) -> DataReader:
    return feed_all([wire], **kw)


def bytewise(wire: bytes, **kw: int) -> DataReader:
    return feed_all([wire[i : i + 1] for i in range(len(wire))], **kw)


def stuff(message: bytes) -> bytes:
    """What a conforming client sends for `message` (CRLF lines), end mark included."""
    lines = message.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if message and not message.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


# -- end of data and unstuffing (RFC 5321 §4.1.1.4, §4.5.2) ---------------------------------


@pytest.mark.parametrize("feed", [run, bytewise])
def test_message_ends_at_crlf_dot_crlf_and_keeps_its_last_crlf(feed):
    r = feed(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert r.done and r.error is None
    assert r.out == b"Subject: x\r\n\r\nbody\r\n"


@pytest.mark.parametrize("feed", [run, bytewise])
def test_empty_message(feed):
    r = feed(b".\r\n")
    assert r.done and r.out == b"" and r.error is None


@pytest.mark.parametrize("feed", [run, bytewise])
def test_dot_unstuffing(feed):
    r = feed(b"..\r\n...x\r\n.y\r\na.b\r\n..\r\n.\r\n")
    assert r.out == b".\r\n..x\r\ny\r\na.b\r\n.\r\n"


def test_first_line_dot_is_unstuffed():
    assert run(b"..hidden\r\n.\r\n").out == b".hidden\r\n"


@pytest.mark.parametrize("feed", [run, bytewise])
def test_bytes_after_the_end_mark_are_returned_for_the_command_stream(feed):
    r = feed(b"a\r\n.\r\nRSET\r\nQUIT\r\n")
    assert r.out == b"a\r\n"
    assert r.rest == b"RSET\r\nQUIT\r\n"


def test_feeding_after_the_end_is_an_error():
    r = DataReader(BIG)
    r.feed(b".\r\n")
    with pytest.raises(ValueError):
        r.feed(b"x")


def test_eight_bit_and_nul_bytes_are_data():
    body = bytes(b for b in range(256) if b not in (10, 13)) + b"\r\n"
    r = run(body + b".\r\n")
    assert r.error is None and r.out == body


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        max_size=30,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_chunking_gives_the_original_message(lines, cuts):
    message = b"".join(line + b"\r\n" for line in lines)
    wire = stuff(message)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    r = feed_all(chunks)
    assert r.done and r.error is None
    assert r.out == message
    assert r.size == len(message)
    assert r.received == len(wire)


# -- bare CR / LF and the SMTP-smuggling shapes (RFC 5321 §2.3.8) -----------------------------

SMUGGLED = b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<alice@home.test>\r\nDATA\r\nevil\r\n"
FAKE_ENDS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\r\n.\r\n",
    b"\n\n.\n\n",
]


@pytest.mark.parametrize("fake", FAKE_ENDS, ids=repr)
@pytest.mark.parametrize("feed", [run, bytewise])
def test_smuggling_end_marks_do_not_end_data(fake, feed):
    wire = b"Subject: hi\r\n\r\ntext" + fake + SMUGGLED + b".\r\n"
    r = feed(wire)
    assert r.done
    assert r.error is DataError.BARE_NEWLINE
    assert b"MAIL FROM" not in r.out
    if fake == b"\r\r\n.\r\n":
        # It contains a real CRLF "." CRLF, so the data does end there (RFC 5321
        # §4.1.1.4) and what follows is handed back; the server refuses the
        # message for its bare CR and closes without reading it (server.py).
        assert r.rest.startswith(b"MAIL FROM")
    else:
        assert r.rest == b""  # the smuggled commands were swallowed as refused data


def test_a_nul_before_a_dot_is_just_data():
    r = run(b"text\r\n\x00.\r\nmore\r\n.\r\n")
    assert r.error is None and r.out == b"text\r\n\x00.\r\nmore\r\n"


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"\n", b"\r\r\n", b"ab\r\n\n"])
def test_bare_cr_or_lf_anywhere_refuses_the_message(body):
    r = run(body + b"\r\n.\r\n")
    assert r.done and r.error is DataError.BARE_NEWLINE


def test_bare_lf_split_across_chunks_is_seen():
    r = feed_all([b"abc\r", b"\r\n", b".\r\n"])
    assert r.error is DataError.BARE_NEWLINE
    r = feed_all([b"abc", b"\n", b".\r\n"])
    assert r.error is DataError.BARE_NEWLINE


def test_after_an_error_nothing_more_is_produced_but_the_end_is_found():
    r = feed_all([b"ok line\r\n", b"bad\nline\r\n", b"more\r\n", b".", b"\r", b"\n", b"NOOP\r\n"])
    assert r.error is DataError.BARE_NEWLINE
    assert b"bad" not in r.out and b"more" not in r.out  # the server aborts what came before
    assert r.rest == b"NOOP\r\n"


# -- size (RFC 1870) ------------------------------------------------------------------------------


def test_size_limit_exactly_reached_is_fine():
    body = b"x" * 98 + b"\r\n"
    r = run(body + b".\r\n", max_size=100)
    assert r.error is None and r.out == body


def test_size_limit_exceeded_stops_output_and_still_finds_the_end():
    r = feed_all([b"x" * 60 + b"\r\n", b"y" * 60 + b"\r\n", b"z\r\n.\r\nQUIT\r\n"], max_size=100)
    assert r.error is DataError.TOO_BIG
    assert r.size <= 100
    assert r.rest == b"QUIT\r\n"


# -- line length -----------------------------------------------------------------------------


@pytest.mark.parametrize("feed", [run, bytewise])
def test_line_limit_counts_the_crlf(feed):
    ok = b"a" * 998 + b"\r\n"
    assert feed(ok + b".\r\n", max_line=1000).error is None
    too_long = b"a" * 999 + b"\r\n"
    assert feed(too_long + b".\r\n", max_line=1000).error is DataError.LINE_TOO_LONG


def test_long_line_across_many_chunks():
    chunks = [b"a" * 1000] * 5 + [b"\r\n.\r\n"]
    assert feed_all(chunks, max_line=4000).error is DataError.LINE_TOO_LONG
    assert feed_all(chunks, max_line=6000).error is None


def test_long_line_in_the_middle_of_a_chunk():
    wire = b"short\r\n" + b"b" * 3000 + b"\r\nshort\r\n.\r\n"
    assert run(wire, max_line=2000).error is DataError.LINE_TOO_LONG
    assert run(wire, max_line=3002).error is None


def test_no_line_limit_when_zero():
    r = feed_all([b"c" * 65536] * 40 + [b"\r\n.\r\n"], max_line=0)
    assert r.error is None and r.size == 65536 * 40 + 2

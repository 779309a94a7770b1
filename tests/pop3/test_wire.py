"""wire.Encoder: a message as a multi-line response, at any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from letterbox.pop3.wire import Encoder


def encode(
    message: bytes, cuts: list[int] | None = None, body_lines: int | None = None
) -> tuple[bytes, Encoder]:
    enc = Encoder(body_lines)
    out = b""
    points = sorted({0, len(message), *(c for c in (cuts or []) if 0 <= c <= len(message))})
    for a, b in itertools.pairwise(points):
        out += enc.feed(message[a:b])
    return out + enc.finish(), enc


def client_view(response: bytes) -> bytes:
    """What a POP3 client reconstructs: lines up to "." CRLF, one leading dot removed."""
    lines = response.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b".", response[-20:]
    body = []
    for line in lines[:-2]:
        body.append(line[1:] if line.startswith(b".") else line)
    return b"".join(line + b"\r\n" for line in body)


def canonical(message: bytes) -> bytes:
    out = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\n"):
        out += b"\r\n"
    return out


def test_crlf_message_goes_out_byte_identical_and_terminated():
    msg = b"Subject: hi\r\n\r\nline one\r\nline two\r\n"
    out, enc = encode(msg)
    assert out == msg + b".\r\n"
    assert enc.octets == len(msg)


def test_lines_starting_with_a_dot_are_stuffed():
    msg = b".first\r\n\r\n.\r\n..two\r\nmid.dle\r\n.\r\n"
    out, enc = encode(msg)
    assert out == b"..first\r\n\r\n..\r\n...two\r\nmid.dle\r\n..\r\n.\r\n"
    assert enc.octets == len(msg)  # octets count the message, not the stuffing
    assert client_view(out) == msg


def test_the_smtp_end_mark_inside_a_message_cannot_end_the_response():
    msg = b"a\r\n.\r\nQUIT\r\n"
    out, _ = encode(msg)
    assert b"\r\n.\r\n" not in out[:-3]
    assert client_view(out) == msg


def test_empty_message():
    out, enc = encode(b"")
    assert out == b".\r\n" and enc.octets == 0


def test_a_last_line_without_line_end_gets_one():
    out, enc = encode(b"Subject: x\r\n\r\nno newline")
    assert out == b"Subject: x\r\n\r\nno newline\r\n.\r\n"
    assert enc.octets == len(b"Subject: x\r\n\r\nno newline") + 2


def test_bare_lf_becomes_crlf_and_is_counted():
    msg = b"Subject: x\n\n.dot\nline\r\n"
    out, enc = encode(msg)
    assert out == b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n"
    assert enc.octets == len(msg) + 3


def test_bare_cr_is_data():
    msg = b"a\rb\r\n\r.c\r\n"
    out, enc = encode(msg)
    assert out == msg + b".\r\n" and enc.octets == len(msg)


def test_a_message_ending_in_a_bare_cr():
    out, _ = encode(b"abc\r")
    assert out == b"abc\r\r\n.\r\n"


@pytest.mark.parametrize("cut", range(1, 12))
def test_crlf_split_between_chunks(cut: int):
    msg = b"ab\r\n.c\r\n\r\n.\r\n"
    out, enc = encode(msg, [cut])
    assert out == b"ab\r\n..c\r\n\r\n..\r\n.\r\n"
    assert enc.octets == len(msg)


def test_single_byte_chunks():
    msg = b".a\r\nb\n.c\r\n\r\n..\r\n"
    out, _ = encode(msg, list(range(len(msg))))
    whole, _ = encode(msg)
    assert out == whole


# -- TOP ---------------------------------------------------------------------------------

MSG = b"From: a\r\nSubject: s\r\n\r\nl1\r\n.l2\r\nl3\r\n"


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, b"From: a\r\nSubject: s\r\n\r\n"),
        (1, b"From: a\r\nSubject: s\r\n\r\nl1\r\n"),
        (2, b"From: a\r\nSubject: s\r\n\r\nl1\r\n.l2\r\n"),
        (3, MSG),
        (99, MSG),
    ],
)
def test_top_sends_the_header_and_n_body_lines(n: int, expected: bytes):
    for cuts in ([], list(range(len(MSG)))):
        out, enc = encode(MSG, cuts, body_lines=n)
        assert client_view(out) == expected
        assert enc.done == (n <= 3)  # nothing more needed from the maildrop


def test_top_of_a_message_without_a_body_or_blank_line():
    out, _ = encode(b"From: a\r\nSubject: s\r\n", body_lines=0)
    assert client_view(out) == b"From: a\r\nSubject: s\r\n"
    out, _ = encode(b"From: a\r\nSubject: s", body_lines=5)
    assert client_view(out) == b"From: a\r\nSubject: s\r\n"


def test_top_of_a_message_with_an_empty_header():
    out, _ = encode(b"\r\nbody1\r\nbody2\r\n", body_lines=1)
    assert client_view(out) == b"\r\nbody1\r\n"


def test_top_stops_early_on_a_big_message():
    enc = Encoder(2)
    assert enc.feed(b"H: v\r\n\r\n") == b"H: v\r\n\r\n"
    assert not enc.done
    assert enc.feed(b"one\r\ntwo\r\n" + b"x" * 100000) == b"one\r\ntwo\r\n"
    assert enc.done
    assert enc.feed(b"more\r\n") == b""
    assert enc.finish() == b".\r\n"


# -- properties ------------------------------------------------------------------------

lines = st.lists(
    st.one_of(
        st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b".", b"..", b".x", b"", b" .", b"\r"]),
    ),
    max_size=15,
)


@settings(max_examples=300, deadline=None)
@given(
    lines,
    st.lists(st.integers(0, 300), max_size=8),
    st.sampled_from([b"\r\n", b"\n"]),
    st.booleans(),
)
def test_any_message_at_any_chunking_arrives_as_its_crlf_form(
    body: list[bytes], cuts: list[int], eol: bytes, last_eol: bool
):
    msg = eol.join(body) + (eol if last_eol and body else b"")
    out, enc = encode(msg, cuts)
    assert client_view(out) == canonical(msg)
    assert enc.octets == len(canonical(msg))
    assert out.count(b"\r\n.\r\n") + out.startswith(b".\r\n") == 1  # one end mark only


@settings(max_examples=200, deadline=None)
@given(lines, lines, st.integers(0, 20), st.lists(st.integers(0, 300), max_size=8))
def test_top_is_a_prefix_of_whole_lines(
    head: list[bytes], body: list[bytes], n: int, cuts: list[int]
):
    head = [h for h in head if h and h != b"\r"]  # header lines are not empty
    msg = b"".join(h + b"\r\n" for h in head) + b"\r\n" + b"".join(b + b"\r\n" for b in body)
    out, _ = encode(msg, cuts, body_lines=n)
    expected = (
        b"".join(h + b"\r\n" for h in head) + b"\r\n" + b"".join(b + b"\r\n" for b in body[:n])
    )
    assert client_view(out) == expected

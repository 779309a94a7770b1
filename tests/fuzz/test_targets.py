"""The fuzz targets under hypothesis: a bounded number of examples in the suite.

`make fuzz` runs the same targets far longer (atheris where it installs, else
hypothesis with HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import targets

# Bytes that matter to each parser, mixed with any bytes at all.
_DATA_PIECES = st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"\r\n.\r\n", b"..", b"x", b"\x00"])
_DATA = st.lists(st.one_of(_DATA_PIECES, st.binary(max_size=8)), max_size=60).map(b"".join)


@given(st.binary(min_size=2, max_size=2), _DATA)
def test_data_reader(head: bytes, wire: bytes):
    targets.data_reader(head + wire)


@given(st.binary(max_size=300))
def test_data_reader_any_bytes(data: bytes):
    targets.data_reader(data)


_PATH_PIECES = st.sampled_from(
    [
        "<",
        ">",
        "@",
        ".",
        '"',
        "\\",
        " ",
        ",",
        ":",
        "=",
        "a",
        "Z",
        "9",
        "-",
        "ü",
        "[1.2.3.4]",
        "postmaster",
        "SIZE=10",
        "BODY=8BITMIME",
        "@r,@s:",
        "<>",
        "\x00",
        "\t",
    ]
)
_PATH = st.lists(st.one_of(_PATH_PIECES, st.text(max_size=4)), max_size=30).map("".join)


_ATOM = st.text(st.sampled_from("abcXYZ09!#$%&'*+/=?^_`{|}~-ü"), min_size=1, max_size=6)
_LOCAL = st.one_of(
    st.lists(_ATOM, min_size=1, max_size=3).map(".".join),
    st.text(st.sampled_from('ab .@\\"<>()ü\x7f'), max_size=8).map(lambda t: f'"{t}"'),
)
_DOMAIN = st.one_of(
    st.lists(st.text(st.sampled_from("ab9-ü"), min_size=1, max_size=5), min_size=1, max_size=3).map(
        ".".join
    ),
    st.sampled_from(["[127.0.0.1]", "[IPv6:::1]", "example.org.", ""]),
)
_PARAM = st.sampled_from(["", " SIZE=10", " BODY=8BITMIME", " SMTPUTF8", " X=ü", " size=1 SIZE=2"])
_ADDRESS = st.tuples(_LOCAL, _DOMAIN, _PARAM, st.booleans()).map(
    lambda t: (f"<{t[0]}@{t[1]}>" if t[3] else f"{t[0]}@{t[1]}") + t[2]
)


@given(st.one_of(_PATH, _ADDRESS))
def test_syntax(text: str):
    targets.syntax(text.encode())


_POP3_LINES = st.sampled_from(
    [
        *(b"USER alice@home.test", b"PASS correct horse", b"PASS wrong", b"STAT", b"LIST"),
        *(b"LIST 2", b"UIDL", b"UIDL 1", b"RETR 1", b"RETR 3", b"TOP 2 1", b"TOP 1 0"),
        *(b"DELE 1", b"DELE 9", b"RSET", b"NOOP", b"CAPA", b"QUIT", b"AUTH", b"APOP x y"),
        b"AUTH PLAIN AGFsaWNlQGhvbWUudGVzdABjb3JyZWN0IGhvcnNl",
        *(b"STLS", b"", b"\xff", b"x" * 300, b"NOOP \x00"),
    ]
)
_POP3 = st.lists(
    st.tuples(
        st.one_of(_POP3_LINES, st.binary(max_size=12)),
        st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
    ),
    max_size=25,
).map(lambda pairs: b"".join(a + b for a, b in pairs))
_LOGIN = st.sampled_from([b"", b"USER alice@home.test\r\nPASS correct horse\r\n"])


@given(_LOGIN, _POP3)
def test_pop3_session(login: bytes, data: bytes):
    targets.pop3(login + data)

"""The reply table: well-formed lines, known response codes, nothing echoed."""

from __future__ import annotations

import re
import string

import pytest
from letterbox.pop3 import replies as R
from letterbox.pop3.replies import Reply

TABLE = {name: value for name, value in vars(R).items() if isinstance(value, Reply)}
# RFC 2449 §8.1.2 (IN-USE, LOGIN-DELAY), RFC 3206 (SYS/TEMP, SYS/PERM, AUTH).
KNOWN_CODES = {"", "IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH"}
SAMPLE_FIELDS = {
    "host": "letterbox.local",
    "count": 12345,
    "octets": 987654321,
    "n": 99999,
    "size": 26214400,
    "uid": "0" * 32,
    "deleted": 3,
    "usage": "TOP msg lines",
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_every_reply_is_one_short_ascii_line(name: str):
    reply = TABLE[name]
    fields = {k: v for k, v in SAMPLE_FIELDS.items() if "{" + k + "}" in reply.text}
    line = reply.line(**fields)
    assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert len(line) <= 512  # RFC 2449 §4
    text = line.decode("ascii")
    assert set(text[:-2]) <= set(string.printable) - set("\r\n\t\x0b\x0c")
    assert text.startswith("+OK") or text.startswith("-ERR ")
    assert reply.code in KNOWN_CODES
    if reply.code:
        assert re.match(r"^-ERR \[[A-Z/-]+\] ", text)


def test_stat_is_exactly_two_numbers():
    assert R.STAT.line(count=2, octets=320) == b"+OK 2 320\r\n"  # RFC 1939 §5


def test_login_failures_carry_response_codes():
    assert R.LOGIN_REFUSED.code == "AUTH"
    assert R.END_TO_END.code == "AUTH"
    assert R.IN_USE.code == "IN-USE"
    assert R.DRIVE_OFFLINE.code == "SYS/TEMP"
    assert R.LOGIN_THROTTLED.code == "SYS/TEMP"
    assert "letterbox fetch" in R.END_TO_END.text and "letterbox bridge" in R.END_TO_END.text


def test_multiline():
    assert R.multiline(b"+OK\r\n", ["TOP", "UIDL"]) == b"+OK\r\nTOP\r\nUIDL\r\n.\r\n"
    assert R.multiline(b"+OK\r\n", []) == b"+OK\r\n.\r\n"

"""The reply table: every reply well-formed, codes and enhanced codes consistent (RFC 3463)."""

from __future__ import annotations

import re

import pytest
from letterbox.smtp import replies as R

NO_ENHANCED = {"GREETING", "HELO", "START_DATA"}  # RFC 2034 §3, and 3xx has no class


@pytest.mark.parametrize("name", sorted(R.ALL))
def test_reply_is_well_formed(name):
    reply = R.ALL[name]
    assert 200 <= reply.code < 600
    if name in NO_ENHANCED:
        assert reply.enhanced == ""
        return
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.enhanced), name
    assert reply.enhanced[0] == str(reply.code)[0], "class digit must match the reply code"
    line = reply.line(host="h", usage="u", limit=1, trace="t")
    assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert len(line) <= 512  # RFC 5321 §4.5.3.1.5
    assert line.isascii()


def test_every_421_closes():
    assert all(r.closes for r in R.ALL.values() if r.code == 421)


def test_multiline_reply():
    assert R.multiline(250, ["a", "b", "c"]) == b"250-a\r\n250-b\r\n250 c\r\n"

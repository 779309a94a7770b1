"""MAIL/RCPT argument parsing (RFC 5321 §4.1.2, RFC 6531)."""

from __future__ import annotations

import pytest
from letterbox.smtp.syntax import PathError, domain_of, parse_path


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("FROM:<a@b.example>", "a@b.example"),
        ("from:<a@b.example>", "a@b.example"),
        ("FROM: <a@b.example>", "a@b.example"),  # a space after the colon, as many send
        ("FROM:a@b.example", "a@b.example"),  # no brackets
        ("FROM:<>", ""),  # the null reverse-path of bounces (RFC 5321 §4.5.5)
        ("FROM:<@relay.example,@other.example:a@b.example>", "a@b.example"),  # source route
        ('FROM:<"john"@b.example>', "john@b.example"),  # needless quotes dropped
        ('FROM:<"john doe"@b.example>', '"john doe"@b.example'),
        ('FROM:<"a>b"@b.example>', '"a>b"@b.example'),
        ("FROM:<a.b+c@[192.0.2.1]>", "a.b+c@[192.0.2.1]"),
        ("FROM:<jörg@bücher.example>", "jörg@bücher.example"),
        ("FROM:<a@b.example.>", "a@b.example."),
    ],
)
def test_valid_paths(arg, address):
    assert parse_path(arg, "FROM", null_ok=True).address == address


@pytest.mark.parametrize(
    "arg",
    [
        "FROM<a@b.example>",
        "TO:<a@b.example>",
        "FROM:<a@b.example",
        "FROM:<a@b.example>x",
        "FROM:<a>",
        "FROM:<@b.example>",
        "FROM:<a..b@b.example>",
        "FROM:<.a@b.example>",
        "FROM:<a@-b.example>",
        "FROM:<a@b..example>",
        "FROM:<a b@b.example>",
        "FROM:<a@b.example> SIZE=",
        "FROM:<a@b.example> =1",
        "FROM:<a@b.example> SIZE=1 SIZE=2",
        "FROM:",
        "FROM:<@relay.example:>",
        "FROM:<" + "a" * 300 + "@b.example>",
    ],
)
def test_invalid_paths(arg):
    with pytest.raises(PathError):
        parse_path(arg, "FROM", null_ok=True)


def test_null_path_not_allowed_for_recipients():
    with pytest.raises(PathError):
        parse_path("TO:<>", "TO", null_ok=False)


def test_bare_postmaster_is_accepted_for_recipients():
    assert parse_path("TO:<Postmaster>", "TO", null_ok=False).address == "postmaster"


def test_parameters_are_upper_cased_and_kept():
    path = parse_path("FROM:<a@b.example> size=100 BODY=8BITMIME smtputf8", "FROM", null_ok=True)
    assert path.params == {"SIZE": "100", "BODY": "8BITMIME", "SMTPUTF8": None}


def test_domain_of():
    assert domain_of("a@Home.TEST.") == "home.test"

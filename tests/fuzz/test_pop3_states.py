"""The POP3 session as a state machine (RFC 1939 §3-§6), checked against a model by hypothesis.

Hypothesis draws a mailbox (a few messages, dots and empty lines included) and
then a sequence of commands, each sent over a real socket to a real listener
with a real drive behind it. A model of RFC 1939 predicts every reply exactly,
from replies.py's table: what each state allows, message numbers that stay
fixed while DELE marks them, RSET, sizes and UIDs, the message bytes RETR
sends (unstuffed), three failed logins ending the session. When the session
ends, the drive holds exactly what the model says: QUIT in TRANSACTION removes
what was marked (RFC 1939 §6), and a dropped connection removes nothing.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from letterbox.pop3 import replies as R

from tests.pop3.conftest import PASSWORD, Pop3Box, Wire

_LINES = st.sampled_from([b"Subject: s", b"", b".", b"..", b".dot", b"text", b"x" * 300])
_MESSAGE = st.lists(_LINES, min_size=1, max_size=8).map(lambda ls: b"\r\n".join(ls) + b"\r\n")
_NUMBER = st.one_of(
    st.integers(1, 4),  # mostly numbers that name a message
    st.integers(1, 4),
    st.integers(0, 6),
    st.sampled_from(["x", "-1", "1 2", "99999999999999"]),
)
_numbers = itertools.count()


class Pop3States(RuleBasedStateMachine):
    box: Pop3Box  # set by the test: one listener and drive for every example

    def __init__(self) -> None:
        super().__init__()
        self.wire: Wire | None = None

    @initialize(messages=st.lists(_MESSAGE, min_size=1, max_size=5), login=st.booleans())
    def connect(self, messages: list[bytes], login: bool) -> None:
        drive = self.box.drive
        assert drive is not None
        self.address = f"u{next(_numbers)}@home.test"
        info, _ = drive.create_mailbox(self.address, quota=1 << 30, password=PASSWORD)
        self.mailbox = info.id
        self.messages = messages
        self.uids = [drive.deliver("s@example.net", [self.address], m)[0] for m in messages]
        self.reconnect(login)

    @precondition(lambda self: not self.open)
    @rule(login=st.booleans())
    def reconnect(self, login: bool) -> None:
        """A new session on the same mailbox: what the last one left is what it sees."""
        self.wire = Wire(self.box.connect(timeout=3))
        assert self.wire.line() == R.GREETING.line(host="box.home.test")
        self.logged_in = False
        self.pending_user: str | None = None
        self.failures = 0
        self.deleted: set[int] = set()
        if login:
            self.login()

    # -- helpers --------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.wire is not None

    def cmd(self, line: str, expected: bytes) -> None:
        assert self.wire is not None
        got = self.wire.cmd(line.encode())
        assert got == expected, (line, got, expected)

    def live(self) -> list[int]:
        return [i for i in range(len(self.messages)) if i not in self.deleted]

    def totals(self) -> dict[str, int]:
        live = self.live()
        return {"count": len(live), "octets": sum(len(self.messages[i]) for i in live)}

    def number(self, n: int | str) -> tuple[int | None, bytes | None]:
        """(index, None) for a usable message number, else (None, the -ERR expected)."""
        text = str(n)
        if not text.isdigit() or len(text) > 12:  # a message number has at most 12 digits
            return None, R.SYNTAX.line(usage="{usage}")  # only the prefix is compared
        i = int(text) - 1
        if not 0 <= i < len(self.messages):
            return None, R.NO_SUCH_MESSAGE.line()
        if i in self.deleted:
            return None, R.MESSAGE_DELETED.line(n=i + 1)
        return i, None

    def ended(self, gone: set[int]) -> None:
        assert self.wire is not None
        assert self.wire.closed()
        self.wire.sock.close()
        self.wire = None
        self.box.wait_idle()
        drive = self.box.drive
        assert drive is not None
        left = [d.id for d in drive.list(self.mailbox)]
        assert left == [u for i, u in enumerate(self.uids) if i not in gone]
        self.messages = [m for i, m in enumerate(self.messages) if i not in gone]
        self.uids = left

    # -- AUTHORIZATION ----------------------------------------------------------------------

    @precondition(lambda self: self.open)
    @rule(right=st.booleans())
    def user(self, right: bool) -> None:
        if self.logged_in:
            return self.cmd(f"USER {self.address}", R.ALREADY_LOGGED_IN.line())
        name = self.address if right else "nobody@home.test"
        self.cmd(f"USER {name}", R.USER_OK.line())
        self.pending_user = name

    @precondition(lambda self: self.open)
    @rule(right=st.booleans())
    def pass_(self, right: bool) -> None:
        password = PASSWORD if right else "wrong"
        if self.logged_in:
            return self.cmd(f"PASS {password}", R.ALREADY_LOGGED_IN.line())
        user, self.pending_user = self.pending_user, None
        if user is None:
            return self.cmd(f"PASS {password}", R.NEED_USER.line())
        if right and user == self.address:
            self.logged_in = True
            return self.cmd(f"PASS {password}", R.LOGGED_IN.line(**self.totals()))
        self.cmd(f"PASS {password}", R.LOGIN_REFUSED.line())
        self.failures += 1
        if self.failures >= 3:  # SessionOptions.max_login_failures
            self.ended(set())

    @precondition(lambda self: self.open and not self.logged_in)
    @rule()
    def login(self) -> None:
        """USER and PASS as a client sends them (the separate rules mix them up)."""
        self.user(right=True)
        self.pass_(right=True)

    # -- TRANSACTION ------------------------------------------------------------------------

    def _needs_login(self, line: str) -> bool:
        if not self.logged_in:
            self.cmd(line, R.NEED_LOGIN.line())
            return True
        return False

    @precondition(lambda self: self.open)
    @rule()
    def stat(self) -> None:
        if not self._needs_login("STAT"):
            self.cmd("STAT", R.STAT.line(**self.totals()))

    @precondition(lambda self: self.open)
    @rule(n=st.one_of(st.none(), _NUMBER), uidl=st.booleans())
    def listing(self, n: int | str | None, uidl: bool) -> None:
        verb = "UIDL" if uidl else "LIST"
        line = verb if n is None else f"{verb} {n}"
        if self._needs_login(line):
            return
        assert self.wire is not None

        def value(i: int) -> str:
            return self.uids[i] if uidl else str(len(self.messages[i]))

        if n is None:
            first = R.UIDL_ALL.line() if uidl else R.SCAN_ALL.line(**self.totals())
            self.cmd(line, first)
            expected = [f"{i + 1} {value(i)}\r\n".encode() for i in self.live()]
            assert self.wire.multiline() == expected
            return
        i, refusal = self.number(n)
        if i is None:
            assert refusal is not None
            got = self.wire.cmd(line.encode())
            assert got.startswith(refusal.split(b"{")[0].rstrip(b"\r\n")), (line, got)
            return
        one = R.UIDL_ONE if uidl else R.SCAN_ONE
        key = "uid" if uidl else "size"
        self.cmd(line, one.line(n=i + 1, **{key: value(i)}))

    @precondition(lambda self: self.open)
    @rule(n=_NUMBER, top=st.one_of(st.none(), st.integers(0, 3)))
    def retr(self, n: int | str, top: int | None) -> None:
        line = f"RETR {n}" if top is None else f"TOP {n} {top}"
        if self._needs_login(line):
            return
        assert self.wire is not None
        i, refusal = self.number(n)
        if i is None:
            assert refusal is not None
            got = self.wire.cmd(line.encode())
            assert got.startswith(refusal.split(b"{")[0].rstrip(b"\r\n")), (line, got)
            return
        message = self.messages[i]
        first = R.RETR.line(size=len(message)) if top is None else R.TOP.line()
        self.cmd(line, first)
        body = b"".join(ln[1:] if ln.startswith(b".") else ln for ln in self.wire.multiline())
        if top is None:
            assert body == message
        else:
            assert message.startswith(body)

    @precondition(lambda self: self.open)
    @rule(n=_NUMBER)
    def dele(self, n: int | str) -> None:
        if self._needs_login(f"DELE {n}"):
            return
        i, refusal = self.number(n)
        if i is None:
            assert refusal is not None and self.wire is not None
            got = self.wire.cmd(f"DELE {n}".encode())
            assert got.startswith(refusal.split(b"{")[0].rstrip(b"\r\n")), (n, got)
            return
        self.cmd(f"DELE {n}", R.DELETED.line(n=i + 1))
        self.deleted.add(i)

    @precondition(lambda self: self.open)
    @rule()
    def rset(self) -> None:
        if not self._needs_login("RSET"):
            self.deleted.clear()
            self.cmd("RSET", R.RSET.line(**self.totals()))

    @precondition(lambda self: self.open)
    @rule()
    def noop(self) -> None:
        if not self._needs_login("NOOP"):
            self.cmd("NOOP", R.NOOP.line())

    @precondition(lambda self: self.open)
    @rule(line=st.sampled_from(["BOGUS", "", "APOP a b", "retr", "XTND XMIT"]))
    def nonsense(self, line: str) -> None:
        assert self.wire is not None
        assert self.wire.cmd(line.encode()).startswith(b"-ERR ")

    # -- leaving ------------------------------------------------------------------------------

    @precondition(lambda self: self.open)
    @rule()
    def quit(self) -> None:
        if not self.logged_in:
            self.cmd("QUIT", R.BYE.line())
            return self.ended(set())
        self.cmd("QUIT", R.BYE_UPDATED.line(deleted=len(self.deleted)))
        self.ended(set(self.deleted))

    @precondition(lambda self: self.open)
    @rule()
    def drop(self) -> None:
        assert self.wire is not None
        self.wire.sock.shutdown(socket.SHUT_WR)  # gone without QUIT: no UPDATE state
        self.ended(set())

    @invariant()
    def numbers_stay_put(self) -> None:
        if self.wire is not None:
            assert self.deleted <= set(range(len(self.messages)))

    def teardown(self) -> None:
        if self.wire is not None:
            self.wire.sock.close()
            self.box.wait_idle()


@pytest.fixture(scope="module")
def shared_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pop3Box]:
    box = Pop3Box(
        Path(tmp_path_factory.mktemp("pop3states")), max_bad_commands=1 << 30, max_failures=1 << 30
    )
    yield box
    box.close()


def test_the_pop3_session_follows_its_model(shared_box: Pop3Box):
    Pop3States.box = shared_box
    run_state_machine_as_test(
        Pop3States,
        settings=settings(
            max_examples=max(100, settings.default.max_examples // 4),
            stateful_step_count=30,
            deadline=None,
        ),
    )

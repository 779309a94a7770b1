"""Seeded hostile sessions against a running box's SMTP and POP3 listeners.

`letterbox run --dev` as a real process takes a fixed number of sessions from
tests/fuzz/sessions.py, one SMTP and one POP3 in turn. After each one, every byte
it answered must be a well-formed reply; some SMTP sessions first make a valid
delivery in lockstep, and every one of those that got its 250 must be served by
POP3 at the end, byte-identical. The POP3 sessions log in to a mailbox of their
own (and delete from it), so they cannot take what SMTP acknowledged. At the end
the box still takes mail and logs in, exits cleanly, has logged no traceback,
and `letterbox drive check` finds its drive clean.

`FUZZ_SESSIONS` and `FUZZ_SEED` (environment) set the number of session pairs and
the seed: `make fuzz` runs many more than the suite does.
"""

from __future__ import annotations

import os
import poplib
import random
import smtplib
from pathlib import Path

import pytest

from tests.fuzz import sessions
from tests.helpers import letterbox_cli, message
from tests.integration.harness import SAMPLE, Run, write_config
from tests.smtp.conftest import strip_received

SEED = int(os.environ.get("FUZZ_SEED", "1939"))
SESSIONS = int(os.environ.get("FUZZ_SESSIONS", "400"))
FUZZ_BOX = "fuzz@letterbox.test"
FUZZ_PASSWORD = "fuzz password"


def served(run: Run, user: str, password: str) -> list[bytes]:
    p = poplib.POP3("127.0.0.1", run.pop3_port, timeout=30)
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        return [b"".join(line + b"\r\n" for line in p.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        p.quit()


@pytest.mark.slow
def test_seeded_hostile_sessions_leave_the_box_well(tmp_path: Path):
    data = tmp_path / "data"
    # No delay or limiter on failed logins: the fuzz fails thousands of them from one
    # address, and the POP3 sessions must still get into the TRANSACTION state.
    config = write_config(
        tmp_path / "letterbox.toml",
        smtp="max_bad_commands = 20\n",
        pop3="failed_login_delay = 0\nmax_failed_logins = 1000000\n",
    )
    first = Run(data, config)
    password = first.password()
    assert first.stop() == 0
    added = letterbox_cli(
        data,
        "mailbox",
        "add",
        FUZZ_BOX,
        "--password-stdin",
        stdin=FUZZ_PASSWORD + "\n",
        config=config,
    )
    assert added.returncode == 0, added.stderr

    rng = random.Random(SEED)
    run = Run(data, config)
    kept: list[bytes] = []
    try:
        for n in range(SESSIONS):
            if n % 10 == 0:  # mail for the POP3 sessions to list, read and delete
                with smtplib.SMTP("127.0.0.1", run.port, timeout=30) as client:
                    for size in (300, 5_000, 140_000):
                        client.sendmail("me@example.org", [FUZZ_BOX], message(n, size))
            smtp = sessions.smtp_session(rng, FUZZ_BOX, SAMPLE, n)
            received, cut, stored = sessions.run(run.port, smtp)
            problems = sessions.check_smtp(received, cut=cut)
            assert not problems, (f"SMTP session {n} (seed {SEED})", problems, received[:2000])
            if stored:
                assert smtp.delivery is not None
                kept.append(smtp.delivery)

            pop3 = sessions.pop3_session(rng, FUZZ_BOX, FUZZ_PASSWORD)
            received, cut, _ = sessions.run(run.pop3_port, pop3)
            problems = sessions.check_pop3(pop3.lines, received, cut=cut)
            assert not problems, (f"POP3 session {n} (seed {SEED})", problems, received[:2000])

        # Still alive: it takes mail and serves it.
        with smtplib.SMTP("127.0.0.1", run.port, timeout=30) as client:
            client.sendmail("me@example.org", [SAMPLE], sessions.canary(-1))
        kept.append(sessions.canary(-1))
        stored_now = [strip_received(m) for m in served(run, SAMPLE, password)]
        served(run, FUZZ_BOX, FUZZ_PASSWORD)
        assert run.stop() == 0
    finally:
        run.kill()
    print(f"{SESSIONS} SMTP and {SESSIONS} POP3 sessions; {len(kept)} deliveries kept")
    assert len(kept) > SESSIONS // 10, "the valid deliveries never got through"
    missing = [m[:60] for m in kept if m not in stored_now]
    assert not missing, f"acknowledged but not served: {missing[:5]}"
    log = run.stderr()
    assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]
    check = letterbox_cli(data, "drive", "check", config=config)
    assert check.returncode == 0, check.stdout + check.stderr

"""Fails when an aiosmtpd upgrade could break letterbox.smtp.server's subclass.

server.SmtpSession inherits aiosmtpd's protocol shell and replaces the rest,
skipping SMTP.__init__ for speed. Its correctness rests on exactly the pinned
1.4.6 sources checked here. After an upgrade: re-read the inherited methods and
SMTP.__init__, adjust SmtpSession, then update the pin and these hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect

import aiosmtpd
from aiosmtpd.smtp import SMTP
from letterbox.config import SmtpSettings
from letterbox.smtp.handler import Gateway
from letterbox.smtp.server import SessionContext, SmtpSession

INHERITED = {
    "connection_made": "77a45df5065bba34",
    "connection_lost": "d3bf6349bc3c25c1",
    "_reset_timeout": "fef19b94d28dff31",
    "_cb_client_connected": "a73e95bb7f362ab9",
    "_create_session": "22b243e82ff1c7a4",
    "_create_envelope": "54afceea638744d4",
    "_set_rset_state": "9ff64b71daa68e63",
    "_set_post_data_state": "1dc8a8abca2a8164",
}


class _NoRegistry:
    def admit(self, session):  # pragma: no cover - never connected here
        return None

    def release(self, session):  # pragma: no cover
        pass


def test_the_pinned_version():
    assert aiosmtpd.__version__ == "1.4.6"


def test_inherited_methods_are_unchanged():
    # Inherited as they are, or called through super() (connection_made/_lost).
    for name, digest in INHERITED.items():
        source = inspect.getsource(getattr(SMTP, name))
        assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, name


def test_our_init_sets_every_attribute_that_smtp_init_sets():
    async def build() -> tuple[set[str], set[str]]:
        theirs = SMTP(object(), hostname="h")
        settings = SmtpSettings()
        ours = SmtpSession(
            SessionContext(Gateway(settings, lambda: None), settings, "h", _NoRegistry())
        )
        return set(vars(theirs)), set(vars(ours))

    theirs, ours = asyncio.run(build())
    assert theirs - ours == set()


def test_every_command_is_ours():
    for verb, name in SmtpSession._COMMANDS.items():
        assert name in SmtpSession.__dict__, f"{verb} would run aiosmtpd's {name}"
    assert "AUTH" not in SmtpSession._COMMANDS  # not offered on the inbound MX


def test_stream_reader_internals_we_touch():
    async def probe() -> None:
        reader = asyncio.StreamReader(limit=10)
        assert isinstance(reader._buffer, bytearray)  # STARTTLS discard, early-DATA check
        assert hasattr(reader, "_transport")  # flow control after STARTTLS

    asyncio.run(probe())

"""Inbound policy and the way into the drive: who may send what to whom, and storing it.

The protocol code (server.py) asks this module one question per command and gets
a reply from the table back; this module alone talks to the drive, and only
through its public delivery interface (begin → add_recipient → write → commit or
abort; docs/design.md, "The drive"). Nothing here knows about sockets or aiosmtpd.

Policy, as docs/design.md, "Gateway (SMTP)" has it:

* mail only for local domains: those of the drive's mailboxes plus
  `smtp.local_domains`; anything else is 554 5.7.1, so the box is never a relay;
* an unknown local recipient is refused at RCPT (550 5.1.1), before any body;
  postmaster@ and abuse@ of a local domain, and bare <postmaster>, always have a
  mailbox (postmaster.py), or 450 4.2.1 while the box has none at all;
* `max_recipients` accepted recipients per message, then 452 4.5.3
  (RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction);
* SIZE= larger than `max_message_size` is refused at MAIL (RFC 1870), larger
  than a recipient's quota at RCPT (552 5.2.2);
* no drive, or a failing one, is 451 4.3.0 so senders retry and nothing is lost;
* 250 only once `commit_async()` has returned, i.e. the message is durable.

The drive is looked up through a callable on every use, so that taking the drive
offline (a later issue: USB unplug) is setting it to None.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from letterbox.config import SmtpSettings
from letterbox.drive import (
    Delivery,
    Drive,
    DriveError,
    DriveUnavailable,
    MailboxNotFound,
    MessageTooLarge,
    StorageFull,
)
from letterbox.logsafe import escape
from letterbox.smtp import postmaster
from letterbox.smtp import replies as R
from letterbox.smtp.replies import Reply
from letterbox.smtp.syntax import domain_of

log = logging.getLogger("letterbox.smtp")

# Trace ids (in Received, the 250 reply and the logs) only need to be unique per
# box and say nothing: a random per-process prefix and a counter, cheaper than
# asking the kernel for randomness on every message.
_TRACE_PREFIX = secrets.token_hex(3)
_trace_counter = itertools.count(1)


def new_trace() -> str:
    return f"{_TRACE_PREFIX}{next(_trace_counter):06x}"


@dataclass
class Transaction:
    """One MAIL … DATA exchange (RFC 5321 §3.3)."""

    mail_from: str
    size_hint: int | None = None
    smtputf8: bool = False
    trace: str = field(default_factory=new_trace)
    recipients: list[str] = field(default_factory=list)
    delivery: Delivery | None = None
    committing: bool = False  # handed to the drive's committer: never abort from here on
    started: float = field(default_factory=time.monotonic)


def reply_for(exc: BaseException) -> Reply:
    """The wire answer to a drive refusal (drive/errors.py names the SMTP codes)."""
    if isinstance(exc, MailboxNotFound):
        return R.UNKNOWN_USER
    if isinstance(exc, MessageTooLarge):
        return R.OVER_QUOTA
    if isinstance(exc, StorageFull):
        return R.STORAGE_FULL
    if isinstance(exc, DriveUnavailable):
        return R.DRIVE_UNAVAILABLE
    return R.LOCAL_ERROR


class Gateway:
    """Inbound policy for every session of one listener; shared, stateless per message."""

    def __init__(
        self,
        settings: SmtpSettings,
        drive: Callable[[], Drive | None],
        *,
        debug: bool = False,
        on_unavailable: Callable[[DriveUnavailable], None] | None = None,
    ) -> None:
        self.settings = settings
        self._drive = drive
        self.debug = debug
        # Told when the drive fails under a message (an I/O error), so the drive
        # manager can check it and take it offline (letterbox/usb/manager.py).
        self._on_unavailable = on_unavailable
        self._config_domains = {d.lower().rstrip(".") for d in settings.local_domains}
        self.stored = 0  # figures for tests and status lines
        self.refused = 0

    def reconfigure(self, settings: SmtpSettings) -> None:
        """New settings (the setup page changed domains or the size limit): they
        apply from the next command on; a message in flight keeps its limits."""
        self._config_domains = {d.lower().rstrip(".") for d in settings.local_domains}
        self.settings = settings

    # -- MAIL --------------------------------------------------------------------------------

    def mail(self, txn: Transaction) -> Reply:
        limit = self.settings.max_message_size
        if txn.size_hint is not None and txn.size_hint > limit:
            return R.SIZE_EXCEEDED
        return R.SENDER_OK

    # -- RCPT --------------------------------------------------------------------------------

    def rcpt(self, txn: Transaction, address: str) -> Reply:
        if len(txn.recipients) >= self.settings.max_recipients:
            return R.TOO_MANY_RECIPIENTS
        drive = self._drive()
        bare = "@" not in address  # only <postmaster> has no domain (syntax.py)
        if not bare:
            domain = domain_of(address)
            if domain not in self._config_domains:
                if drive is None:
                    return R.DRIVE_UNAVAILABLE  # its mailboxes may make the domain local
                try:
                    local = domain in drive.local_domains()
                except DriveError as exc:
                    return reply_for(exc)
                if not local:
                    return R.RELAY_DENIED
        if drive is None:
            return R.DRIVE_UNAVAILABLE
        try:
            mailbox = address
            if drive.recipient(address) is None:
                if not postmaster.is_role(address):
                    return R.UNKNOWN_USER
                # RFC 5321 §4.5.1, RFC 2142: postmaster@ and abuse@ of every served
                # domain, and bare <postmaster>, go to the mailbox the admin picked.
                target = postmaster.role_mailbox(
                    address, [m.address for m in drive.mailboxes()], self.settings.postmaster
                )
                if target is None:
                    return R.POSTMASTER_UNAVAILABLE
                mailbox = target
                if bare:  # the trace names a full address (RFC 5321 §4.4 "for")
                    address = f"postmaster@{domain_of(target)}"
            if txn.delivery is None:
                txn.delivery = drive.begin(txn.mail_from)
            txn.delivery.add_recipient(mailbox, size_hint=txn.size_hint)
        except DriveError as exc:
            return reply_for(exc)
        except Exception:
            log.exception("unexpected error at RCPT")
            return R.LOCAL_ERROR
        txn.recipients.append(address)
        return R.RECIPIENT_OK

    # -- DATA --------------------------------------------------------------------------------

    def begin_body(self, txn: Transaction, trace_header: bytes) -> Reply | None:
        """Write the trace fields ahead of the body; a reply only if that failed."""
        return self.write(txn, trace_header)

    def write(self, txn: Transaction, data: bytes) -> Reply | None:
        """Stream a piece of the message into the drive; a reply (and an abort) on failure."""
        delivery = txn.delivery
        if delivery is None:
            return R.DRIVE_UNAVAILABLE
        try:
            delivery.write(data)
        except DriveError as exc:  # the drive has aborted the delivery already
            txn.delivery = None
            self._unavailable(exc)
            return reply_for(exc)
        except Exception:
            log.exception("unexpected error while storing a message")
            self.abort(txn)
            return R.LOCAL_ERROR
        return None

    async def commit(self, txn: Transaction) -> Reply:
        """Make the message durable; R.STORED only once the drive says it is on disk."""
        delivery = txn.delivery
        if delivery is None:
            return R.DRIVE_UNAVAILABLE
        size = delivery.size
        began = time.monotonic()
        try:
            commit = delivery.commit_async()
            txn.committing = True
            # Shielded: a client that hangs up now must not cancel the drive's
            # future (the committer would then fail to set its result); the
            # message is stored either way, and no 250 goes out for it.
            task = asyncio.ensure_future(commit)
            task.add_done_callback(_consume)
            await asyncio.shield(task)
        except DriveError as exc:
            self.refused += 1
            self._unavailable(exc)
            reply = reply_for(exc)
            self._log_refused(txn, reply, "at commit", size)
            return reply
        except Exception:
            log.exception("unexpected error while committing a message")
            self.refused += 1
            return R.LOCAL_ERROR
        finally:
            txn.delivery = None
        self.stored += 1
        if self.debug:
            log.info(
                "stored %s: %d bytes from <%s> for %s, commit %.1f ms",
                txn.trace,
                size,
                escape(txn.mail_from),
                ", ".join(f"<{escape(r)}>" for r in txn.recipients),
                (time.monotonic() - began) * 1000,
            )
        else:  # per message only at debug level: the session's close line counts them
            log.debug(
                "stored %s: %d bytes for %d recipient%s, commit %.1f ms",
                txn.trace,
                size,
                len(txn.recipients),
                "" if len(txn.recipients) == 1 else "s",
                (time.monotonic() - began) * 1000,
            )
        return R.STORED

    def _unavailable(self, exc: DriveError) -> None:
        if isinstance(exc, DriveUnavailable) and self._on_unavailable is not None:
            self._on_unavailable(exc)

    def abort(self, txn: Transaction | None) -> None:
        """Drop whatever of the message reached the drive. Safe to call twice."""
        if txn is None or txn.committing or txn.delivery is None:
            return
        delivery, txn.delivery = txn.delivery, None
        with contextlib.suppress(Exception):
            delivery.abort()

    def refused_message(self, txn: Transaction, reply: Reply, size: int) -> None:
        """Account for a message refused during DATA (size, bare CR/LF, drive error)."""
        self.refused += 1
        self._log_refused(txn, reply, "during DATA", size)

    def _log_refused(self, txn: Transaction, reply: Reply, when: str, size: int) -> None:
        if self.debug:
            log.info(
                "refused %s %s: %d %s, %d bytes from <%s> for %s",
                txn.trace,
                when,
                reply.code,
                reply.enhanced,
                size,
                escape(txn.mail_from),
                ", ".join(f"<{escape(r)}>" for r in txn.recipients),
            )
        else:
            log.info(
                "refused %s %s: %d %s, %d bytes", txn.trace, when, reply.code, reply.enhanced, size
            )


def _consume(task: asyncio.Future[list[str]]) -> None:
    """Retrieve a shielded commit's outcome so an abandoned one logs no warning."""
    if not task.cancelled():
        task.exception()

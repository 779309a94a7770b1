"""Where mail for postmaster@ and abuse@ goes when nobody has a mailbox of that name.

RFC 5321 §4.5.1: every domain the box serves must accept mail for postmaster,
and a bare "<postmaster>" (§4.1.1.3, any case) must be accepted too; RFC 2142
§2 adds abuse@ for reports of misuse. A household rarely makes such mailboxes,
so these role addresses are delivered to a mailbox the admin picks on the Mail
settings page (`smtp.postmaster`), or, when none is picked (or the one picked
was removed), to the first mailbox as the Mailboxes page lists them. A real
mailbox of the role's name always gets its own mail.

Pure: the gateway (handler.py) passes the mailbox addresses it got from the
drive's public methods and the setting.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLE_LOCAL_PARTS = frozenset({"postmaster", "abuse"})  # RFC 5321 §4.5.1, RFC 2142 §2


def is_role(address: str) -> bool:
    """True for bare postmaster and postmaster@/abuse@ at any domain (any case)."""
    local, at, _ = address.rpartition("@")
    if not at:
        return address.lower() == "postmaster"
    return local.lower() in ROLE_LOCAL_PARTS


def role_mailbox(address: str, mailboxes: Sequence[str], chosen: str = "") -> str | None:
    """The address of the mailbox that stores mail for the role `address`.

    `mailboxes` are the drive's mailbox addresses in its listing order; `chosen`
    is the `smtp.postmaster` setting ("" for the first mailbox). None: there is
    no mailbox at all, so nowhere to put it yet (the gateway answers 450).
    """
    known = [m.lower() for m in mailboxes]
    wanted = address.lower().rstrip(".")
    if "@" in wanted:
        if wanted in known:
            return wanted
    else:  # bare postmaster: a real postmaster@ of any served domain first
        for mailbox in known:
            if mailbox.partition("@")[0] == "postmaster":
                return mailbox
    return chosen_mailbox(known, chosen)


def chosen_mailbox(mailboxes: Sequence[str], chosen: str = "") -> str | None:
    """The mailbox that takes role mail which has no mailbox of its own name: the
    one chosen if it still exists, else the first; None when there is none."""
    known = [m.lower() for m in mailboxes]
    choice = chosen.lower().strip()
    if choice and choice in known:
        return choice
    return known[0] if known else None

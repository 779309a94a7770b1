"""CSRF tokens: one random token per session, in a hidden `csrf` field of every form.

Every POST must carry the token of the session its cookie names, compared in
constant time. With SameSite=Strict cookies a cross-site POST arrives without the
cookie anyway; the token is the second lock, and the one that holds in browsers
that ignore SameSite (OWASP CSRF cheat sheet, "Synchronizer token pattern").
"""

from __future__ import annotations

import hmac

FIELD = "csrf"


def valid(expected: str | None, submitted: object) -> bool:
    if not expected or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())

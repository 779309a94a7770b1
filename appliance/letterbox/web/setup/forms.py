"""Reading form fields: every field has a length limit and a clear message when wrong.

A form is read once per request (aiohttp caches `request.post()`); views take
values through `Form`, which refuses a missing, repeated, oversized or non-text
field with `FormError`, whose text is shown above the form as is.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

# The whole body of one form; a request beyond it gets 413 before it is parsed.
MAX_FORM_BYTES = 16 * 1024
MAX_PASSWORD = 1024
MIN_PASSWORD = 8
# A mailbox id in a path (letterbox.crypto.new_id: 128 random bits, lower-case hex).
MAILBOX_ID_PATTERN = "[0-9a-f]{32}"
_MAILBOX_ID = re.compile(f"^{MAILBOX_ID_PATTERN}$")


def is_mailbox_id(text: str) -> bool:
    """Checked before any drive lookup, so a path never reaches SQLite unvetted."""
    return _MAILBOX_ID.fullmatch(text) is not None


class FormError(ValueError):
    """A field that cannot be used; the message is for the person who filled it in."""


PostData = MultiDictProxy[str | bytes | bytearray | web.FileField]  # request.post()


class Form:
    def __init__(self, data: PostData) -> None:
        self._data = data

    def text(self, name: str, label: str, *, max_len: int = 200, required: bool = True) -> str:
        values = self._data.getall(name, [])
        if len(values) > 1:
            raise FormError(f"{label}: given more than once")
        value = values[0] if values else ""
        if not isinstance(value, str):
            raise FormError(f"{label}: expected text, not a file")
        if len(value) > max_len:
            raise FormError(f"{label}: too long (at most {max_len} characters)")
        if "\x00" in value:
            raise FormError(f"{label}: contains a character that is not allowed")
        value = value.strip() if name not in ("password", "password2") else value
        if required and not value:
            raise FormError(f"{label}: please fill this in")
        return value

    def echo(self, name: str, max_len: int = 254) -> str:
        """A value to put back into the form after an error ("" if unusable)."""
        value = self._data.get(name, "")
        return value if isinstance(value, str) and len(value) <= max_len else ""

    def new_password(self, name: str = "password", again: str = "password2") -> str:
        password = self.text(name, "Password", max_len=MAX_PASSWORD)
        repeated = self.text(again, "Password (again)", max_len=MAX_PASSWORD)
        if len(password) < MIN_PASSWORD:
            raise FormError(f"Password: use at least {MIN_PASSWORD} characters")
        if password != repeated:
            raise FormError("The two passwords differ; type the same password twice")
        return password


class UnreadableForm(ValueError):
    """The request body is no form this page can read (the guard answers 400)."""


async def read_post(request: web.Request) -> PostData:
    """`request.post()`, with every way a body can be unreadable made `UnreadableForm`.

    aiohttp decodes with the request's `charset` as given (an unknown one is a
    LookupError) and lets a broken multipart body surface as whatever its parser
    tripped over (ValueError, or InvalidHeader for a body cut inside a part's
    headers); none of that is the box's fault, so none of it may become a 500.
    The page's own forms are UTF-8 (its pages say so), so only UTF-8 is read."""
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnreadableForm(f"a form in {charset!r}, not UTF-8")
    try:
        return await request.post()
    except (ValueError, LookupError, HttpProcessingError) as exc:
        raise UnreadableForm(type(exc).__name__) from None


async def read_form(request: web.Request) -> Form:
    return Form(await read_post(request))

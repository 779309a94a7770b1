"""The SMTP gateway: the household's MX, streaming each message encrypted into the drive.

listener.py  sockets, live sessions, per-address caps, graceful stop
server.py    one session: aiosmtpd's SMTP subclassed; command loop, streaming DATA
data.py      the DATA byte stream: end mark, dot-unstuffing, bare CR/LF, limits (pure)
syntax.py    MAIL/RCPT paths and parameters (pure)
received.py  the trace fields, Return-Path: and Received: (pure)
handler.py   policy and the only code here that talks to the drive
postmaster.py  which mailbox takes postmaster@ and abuse@ mail (pure)
replies.py   every reply: code, enhanced status code, text
"""

from letterbox.smtp.handler import Gateway
from letterbox.smtp.listener import SmtpListener

__all__ = ["Gateway", "SmtpListener"]

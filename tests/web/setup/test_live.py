"""The setup page in a real `letterbox run --dev`: settings change the running box.

A real process, real sockets, a real HTTP client (aiohttp's) and smtplib: a size
limit saved on the page is what the very next SMTP session announces and enforces,
and a retention what POP3 announces (EXPIRE), without a restart; both are still
in force after one.
"""

from __future__ import annotations

import asyncio
import poplib
import re
import smtplib
from pathlib import Path

import aiohttp
import pytest
from letterbox import claim

from tests.integration.harness import SAMPLE, Run, write_config

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ADMIN = "admin password 1"


async def claim_and_save_settings(run: Run, size: str) -> None:
    base = f"http://127.0.0.1:{run.web_port}"
    # unsafe=True: accept cookies from an IP address host, as browsers do.
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get("/status", allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (303, "/claim")
        async with http.get("/claim") as resp:
            token = CSRF.search(await resp.text())
        assert token is not None
        code = claim.setup_code(run.data)
        assert code is not None and code in run.out  # printed at start
        form = {"csrf": token.group(1), "setup_code": code, "password": ADMIN, "password2": ADMIN}
        async with http.post("/claim", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get("/settings") as resp:
            assert resp.status == 200
            token = CSRF.search(await resp.text())
        assert token is not None
        form = {
            "csrf": token.group(1),
            "local_domains": "family.example",
            "max_message_size": size,
            "keep_days": "30",
            "public_hostname": "",
        }
        async with http.post("/settings", data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        # Thunderbird names the address in the query; the access log leaves it out.
        params = {"emailaddress": "someone.private@family.example"}
        async with http.get("/mail/config-v1.1.xml", params=params) as resp:
            assert resp.status == 200


def pop3_expire(run: Run) -> str:
    """RFC 2449 §6.7: the EXPIRE capability tells clients the retention in days."""
    pop = poplib.POP3("127.0.0.1", run.pop3_port, timeout=10)
    try:
        return " ".join(pop.capa()["EXPIRE"])
    finally:
        pop.quit()


def size_offered(run: Run) -> int:
    with smtplib.SMTP("127.0.0.1", run.port, timeout=10) as smtp:
        smtp.ehlo("test.example")
        return int(smtp.esmtp_features["size"])


def send(run: Run, size: int) -> tuple[int, bytes]:
    body = b"Subject: size test\r\n\r\n" + b"x" * size + b"\r\n"
    with smtplib.SMTP("127.0.0.1", run.port, timeout=10) as smtp:
        smtp.ehlo("test.example")
        smtp.mail("a@example.net")
        smtp.rcpt(SAMPLE)
        return smtp.data(body)


@pytest.mark.slow
def test_a_new_size_limit_applies_to_the_next_smtp_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "letterbox.toml")
    run = Run(data, cfg)
    try:
        assert size_offered(run) == 50 << 20
        assert pop3_expire(run) == "NEVER"
        code, _ = send(run, 200_000)
        assert code == 250
        asyncio.run(claim_and_save_settings(run, "100K"))
        assert size_offered(run) == 100 << 10
        assert pop3_expire(run) == "30"
        assert '"GET /mail/config-v1.1.xml HTTP/1.1" 200' in run.stderr()
        assert "someone.private" not in run.stderr()
        code, reply = send(run, 200_000)
        assert code == 552, reply
        code, _ = send(run, 50_000)
        assert code == 250
    finally:
        assert run.stop() == 0
    # The saved setting is laid over the config file at the next start.
    run = Run(data, cfg)
    try:
        assert size_offered(run) == 100 << 10
        assert pop3_expire(run) == "30"
    finally:
        assert run.stop() == 0

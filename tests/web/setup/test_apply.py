"""Settings saved on the page reach the running listeners (`Appliance.apply_settings`).

A real SMTP listener on the setup page's box: after the page saves a new size
limit, the next SMTP session announces it in EHLO (RFC 1870 SIZE) without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from letterbox import config
from letterbox.smtp import Gateway, SmtpListener

from tests.web.setup.conftest import Page, SetupBox

SETTINGS = {
    "local_domains": "example.org",
    "max_message_size": "25M",
    "keep_days": "90",
    "public_hostname": "mail.example.org",
}


async def _ehlo_size(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # 220
        writer.write(b"EHLO client.example\r\n")
        size = -1
        while True:
            line = (await reader.readline()).decode()
            if line[4:].startswith("SIZE"):
                size = int(line[4:].split()[1])
            if line[3:4] != "-":
                break
        writer.write(b"QUIT\r\n")
        await reader.readline()
        return size
    finally:
        writer.close()


def test_a_saved_size_limit_is_what_the_next_smtp_session_announces(
    run_page: Any, setup_box: SetupBox
) -> None:
    cfg = setup_box.cfg
    setup_box.cfg = dataclasses.replace(
        cfg, smtp=dataclasses.replace(cfg.smtp, max_message_size=config.Size(10 << 20))
    )

    async def scenario(page: Page) -> None:
        s = setup_box.cfg.smtp
        listener = SmtpListener(
            Gateway(s, lambda: setup_box.drive),
            s,
            hostname="mx.example.org",
            host="127.0.0.1",
            port=0,
            tls_context=None,
        )
        await listener.start()
        setup_box.smtp = listener
        try:
            assert await _ehlo_size(listener.port) == 10 << 20
            await page.get("/settings")
            status, _, _ = await page.post("/settings", SETTINGS)
            assert status == 303
            assert await _ehlo_size(listener.port) == 25 << 20
        finally:
            setup_box.smtp = None
            await listener.stop(1.0)

    run_page(scenario, claimed=True)

"""One Argon2id budget for the whole box: POP3 logins and the setup page share it.

Each run holds 64 MiB; with a budget each, 4 POP3 and 4 page logins at once peaked
at 244 MiB RSS (bench/RESULTS.md, "Footprint"), over a Zero 2 W's memory cap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from letterbox import config
from letterbox.app import ARGON2_AT_ONCE, SAMPLE_MAILBOX, Appliance
from letterbox.web.setup.context import SETUP_STATE

from tests.integration.harness import write_config


def test_pop3_logins_wait_while_the_setup_page_holds_the_budget(tmp_path: Path) -> None:
    cfg = config.load(write_config(tmp_path / "letterbox.toml"))
    app = Appliance(cfg, tmp_path / "data", dev=True)

    async def go() -> None:
        await app.start()
        try:
            assert app.web is not None and app.pop3 is not None and app.sample is not None
            assert app.web.app[SETUP_STATE].argon2_slots is app.argon2_slots
            auth = app.pop3.options.authenticator
            for _ in range(ARGON2_AT_ONCE):  # the page's Argon2id runs take every slot
                await app.argon2_slots.acquire()
            login = asyncio.ensure_future(auth.login(SAMPLE_MAILBOX, app.sample[1], "192.0.2.1"))
            await asyncio.sleep(0.5)
            assert not login.done()  # waits for a slot, no Argon2id run of its own
            app.argon2_slots.release()
            maildrop = await asyncio.wait_for(login, 30)
            await maildrop.close()
        finally:
            await app.stop()

    asyncio.run(go())

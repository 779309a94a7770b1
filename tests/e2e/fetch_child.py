"""`letterbox fetch` in a child process that kills itself at a chosen step.

    LBX_CRASH_AT=STEP:N python -m tests.e2e.fetch_child KEYFILE URL MAILDIR < passphrase

runs the real fetch (letterbox.e2e.fetch.run) and sends itself SIGKILL the N-th time
it reaches checkpoint STEP: no cleanup, no flush, no finally, as a power cut or an
OOM kill would leave it. Exits normally if the step is never reached N times.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from letterbox.e2e import fetch


def main() -> int:
    step, _, nth = os.environ["LBX_CRASH_AT"].partition(":")
    left = int(nth or "1")

    def checkpoint(at: str, delivery_id: str) -> None:
        nonlocal left
        if at == step:
            left -= 1
            if left == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    key, url, maildir = sys.argv[1:4]
    return fetch.run(Path(key), url, Path(maildir), passphrase_stdin=True, checkpoint=checkpoint)


if __name__ == "__main__":
    sys.exit(main())

"""Print an Argon2id hash of an admin password for letterbox.toml's admin_password_hash,
so a maker can ship a claimed box without the password ever touching the SD card.

    .venv/bin/python -m image.hash_password [BOARD]
"""

from __future__ import annotations

import getpass
import sys

from letterbox import crypto

from image import boards


def main(argv: list[str]) -> int:
    board = boards.load(argv[0] if argv else "rpi4")
    password = getpass.getpass("Admin password: ")
    if len(password) < 8:
        print("Use at least 8 characters.", file=sys.stderr)
        return 1
    if getpass.getpass("Again: ") != password:
        print("The two passwords differ.", file=sys.stderr)
        return 1
    limits = crypto.Argon2Limits(board.argon2_opslimit, board.argon2_memlimit)
    print(f'admin_password_hash = "{crypto.hash_password(password, limits)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Who owns the box: the setup code before it is claimed, the admin password after.

An unclaimed box has a setup code in `DATA/box/setup-code` (made on first use; shown
by `letterbox status`, printed at start, written to the boot partition by
provisioning). Whoever types it on the setup page chooses the admin password, whose
Argon2id hash goes to `DATA/box/admin.json`; the setup code is then deleted, so it
is worthless once used. Provisioning may write admin.json directly from a hash in
the boot partition's letterbox.toml, and the box is then claimed from first boot.

Both files live on the SD card with the box keys, never on the drive.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from pathlib import Path

from letterbox import crypto
from letterbox.fsutil import write_atomic

SETUP_CODE_FILE = "box/setup-code"
ADMIN_FILE = "box/admin.json"

# Crockford base32 without the look-alikes, in groups of four: 12 symbols are 60
# bits, far beyond what the setup page's login rate limit lets anyone guess.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SYMBOLS, _GROUP = 12, 4
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def _box_dir(data_dir: Path) -> Path:
    path = data_dir / "box"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def normalize_code(code: str) -> str:
    """Forgive what people do when typing a code: case, spaces, dashes, O/0, I/L/1."""
    return "".join(c for c in code.upper() if c.isalnum()).translate(_ALIASES)


def is_claimed(data_dir: Path) -> bool:
    return (data_dir / ADMIN_FILE).exists()


def setup_code(data_dir: Path) -> str | None:
    """The setup code, made on first call; None once the box is claimed."""
    if is_claimed(data_dir):
        return None
    path = data_dir / SETUP_CODE_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    symbols = "".join(secrets.choice(_ALPHABET) for _ in range(_SYMBOLS))
    code = "-".join(symbols[i : i + _GROUP] for i in range(0, _SYMBOLS, _GROUP))
    _box_dir(data_dir)
    write_atomic(path, f"{code}\n".encode(), mode=0o600)
    return code


def check_setup_code(data_dir: Path, typed: str) -> bool:
    """Constant-time comparison with the current code; always False once claimed."""
    code = setup_code(data_dir)
    if code is None:
        return False
    return hmac.compare_digest(normalize_code(typed).encode(), normalize_code(code).encode())


def admin_hash(data_dir: Path) -> str | None:
    """The stored hash; None when unclaimed or damaged (a damaged file still counts as
    claimed, so nobody can take the box over by corrupting it: reset from the console)."""
    try:
        doc = json.loads((data_dir / ADMIN_FILE).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    value = doc.get("password_hash") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and crypto.is_password_hash(value) else None


def claim(data_dir: Path, password_hash: str) -> None:
    """Store the admin password hash and retire the setup code (in that order, so a
    crash in between leaves a claimed box, never an unclaimable one)."""
    if not crypto.is_password_hash(password_hash):
        raise ValueError("not an Argon2id password hash ($argon2id$v=19$...)")
    _box_dir(data_dir)
    doc = json.dumps({"password_hash": password_hash}).encode()
    write_atomic(data_dir / ADMIN_FILE, doc, mode=0o600)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(data_dir / SETUP_CODE_FILE)


def check_admin_password(data_dir: Path, password: str) -> bool:
    stored = admin_hash(data_dir)
    return stored is not None and crypto.verify_password(stored, password)

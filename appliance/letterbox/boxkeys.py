"""The box's own keys, kept on the SD card (the data directory), never on the drive.

The signing key vouches for every delivery record the box writes; the X25519 key
seals the things only the box itself needs to read from the drive (mailbox
addresses, later the outbound queue). Made once, on first use, readable by the
box's user only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

from letterbox.fsutil import write_atomic

KEYS_FILE = "box/keys.json"


@dataclass(frozen=True)
class BoxKeys:
    signing: SigningKey
    sealing: PrivateKey

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing.verify_key

    @classmethod
    def load_or_create(cls, data_dir: Path) -> BoxKeys:
        path = data_dir / KEYS_FILE
        try:
            doc = json.loads(path.read_bytes())
            return cls(
                SigningKey(bytes.fromhex(doc["signing_seed"])),
                PrivateKey(bytes.fromhex(doc["sealing_secret"])),
            )
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"box keys in {path} are damaged ({exc}); restore them from backup"
            ) from None
        keys = cls(SigningKey.generate(), PrivateKey.generate())
        doc = {
            "signing_seed": bytes(keys.signing).hex(),
            "sealing_secret": bytes(keys.sealing).hex(),
        }
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, json.dumps(doc).encode(), mode=0o600)
        os.chmod(path.parent, 0o700)
        return keys

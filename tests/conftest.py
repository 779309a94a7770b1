"""Shared fixtures: real drives in temporary directories, with cheap Argon2id limits.

Argon2id at its minimum (1 pass, 8 KiB) keeps the tests fast; the real limits are
exercised in tests/test_crypto.py and measured in bench/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from letterbox.boxkeys import BoxKeys
from letterbox.config import DriveSettings, Size
from letterbox.drive import Drive

from tests.helpers import FAST_ARGON2

# `make fuzz` (HYPOTHESIS_PROFILE=fuzz): the same properties, far more examples, no
# per-example deadline (the machine is shared). The suite keeps hypothesis's defaults.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def box_keys(data_dir: Path) -> BoxKeys:
    return BoxKeys.load_or_create(data_dir)


@pytest.fixture
def open_drive(data_dir: Path, box_keys: BoxKeys) -> Iterator[Callable[..., Drive]]:
    """Open (and afterwards close) drives under the data dir, with any DriveSettings."""
    opened: list[Drive] = []

    def _open(**settings: object) -> Drive:
        defaults: dict[str, object] = {"reserve": Size(0)}
        defaults.update(settings)
        drive = Drive.open(
            data_dir / "drive",
            box_keys,
            settings=DriveSettings(**defaults),  # type: ignore[arg-type]
            limits=FAST_ARGON2,
        )
        opened.append(drive)
        return drive

    yield _open
    for drive in opened:
        drive.close()


@pytest.fixture
def drive(open_drive: Callable[..., Drive]) -> Drive:
    return open_drive()

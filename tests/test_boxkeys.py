"""letterbox.boxkeys: the box's own keys, made once, private to the box's user, never replaced."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import KEYS_FILE, BoxKeys
from nacl.public import SealedBox


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o002, 0o077])
def test_created_once_private(tmp_path: Path, umask: Callable[[int], None], mask: int) -> None:
    umask(mask)
    data = tmp_path / "data"
    keys = BoxKeys.load_or_create(data)
    path = data / KEYS_FILE
    assert path == data / "box" / "keys.json"
    assert mode(path) == 0o600, oct(mode(path))
    assert mode(path.parent) == 0o700, oct(mode(path.parent))
    doc = json.loads(path.read_bytes())
    assert set(doc) == {"signing_seed", "sealing_secret"}
    assert bytes.fromhex(doc["signing_seed"]) == bytes(keys.signing)
    assert bytes.fromhex(doc["sealing_secret"]) == bytes(keys.sealing)
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temporaries left


def test_existing_box_directory_is_made_private(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir(mode=0o755)
    box.chmod(0o755)
    BoxKeys.load_or_create(tmp_path)
    assert mode(box) == 0o700
    assert mode(box / "keys.json") == 0o600


def test_reloaded_identical(tmp_path: Path) -> None:
    first = BoxKeys.load_or_create(tmp_path)
    raw = (tmp_path / KEYS_FILE).read_bytes()
    mtime = (tmp_path / KEYS_FILE).stat().st_mtime_ns
    second = BoxKeys.load_or_create(tmp_path)
    assert bytes(second.signing) == bytes(first.signing)
    assert bytes(second.sealing) == bytes(first.sealing)
    assert second.verify_key == first.verify_key
    # Not rewritten on load.
    assert (tmp_path / KEYS_FILE).read_bytes() == raw
    assert (tmp_path / KEYS_FILE).stat().st_mtime_ns == mtime
    # What the first vouched for and sealed, the second verifies and opens.
    signed = first.signing.sign(b"delivery record")
    assert second.verify_key.verify(signed) == b"delivery record"
    sealed = SealedBox(first.sealing.public_key).encrypt(b"anna@example.org")
    assert SealedBox(second.sealing).decrypt(sealed) == b"anna@example.org"


def test_each_box_gets_its_own_keys(tmp_path: Path) -> None:
    a = BoxKeys.load_or_create(tmp_path / "a")
    b = BoxKeys.load_or_create(tmp_path / "b")
    assert bytes(a.signing) != bytes(b.signing)
    assert bytes(a.sealing) != bytes(b.sealing)
    assert bytes(a.signing) != bytes(a.sealing)  # two independent keys, not one reused


def _valid(tmp_path: Path) -> dict[str, str]:
    BoxKeys.load_or_create(tmp_path)
    return json.loads((tmp_path / KEYS_FILE).read_bytes())


@pytest.mark.parametrize(
    "damage",
    [
        lambda doc: b"",
        lambda doc: b"{",
        lambda doc: b"\xff\xfe garbage",
        lambda doc: json.dumps(doc).encode()[:-10],
        lambda doc: b"[]",
        lambda doc: b"null",
        lambda doc: b'"keys"',
        lambda doc: json.dumps({"signing_seed": doc["signing_seed"]}).encode(),
        lambda doc: json.dumps({"sealing_secret": doc["sealing_secret"]}).encode(),
        lambda doc: json.dumps(dict(doc, signing_seed=doc["signing_seed"][:-2])).encode(),
        lambda doc: json.dumps(dict(doc, sealing_secret=doc["sealing_secret"] + "00")).encode(),
        lambda doc: json.dumps(dict(doc, signing_seed="zz" * 32)).encode(),
        lambda doc: json.dumps(dict(doc, sealing_secret=None)).encode(),
        lambda doc: json.dumps(dict(doc, signing_seed=12)).encode(),
    ],
    ids=[
        "empty",
        "cut-json",
        "binary",
        "truncated",
        "list",
        "null",
        "string",
        "no-sealing",
        "no-signing",
        "short-seed",
        "long-secret",
        "not-hex",
        "null-secret",
        "number-seed",
    ],
)
def test_damaged_file_stops_with_a_clear_message(
    tmp_path: Path, damage: Callable[[dict[str, str]], bytes]
) -> None:
    path = tmp_path / KEYS_FILE
    path.write_bytes(damage(_valid(tmp_path)))
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exc:
        BoxKeys.load_or_create(tmp_path)
    message = str(exc.value.code)
    assert str(path) in message
    assert "damaged" in message and "restore them from backup" in message
    # Never replaced by fresh keys: that would orphan every sealed record on the drive.
    assert path.read_bytes() == before

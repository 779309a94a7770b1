"""The setup code and the admin password (letterbox.claim)."""

from __future__ import annotations

from pathlib import Path

import pytest
from letterbox import claim, crypto

from tests.helpers import FAST_ARGON2


def test_setup_code_is_made_once_and_kept_private(tmp_path: Path):
    code = claim.setup_code(tmp_path)
    assert code is not None and len(code) == 14 and code.count("-") == 2
    assert claim.setup_code(tmp_path) == code
    assert (tmp_path / claim.SETUP_CODE_FILE).stat().st_mode & 0o077 == 0
    assert not claim.is_claimed(tmp_path)


def test_typing_slips_are_forgiven_but_a_wrong_code_is_not(tmp_path: Path):
    code = claim.setup_code(tmp_path)
    assert code is not None
    sloppy = " " + code.lower().replace("-", " ").replace("0", "o").replace("1", "l") + " "
    assert claim.check_setup_code(tmp_path, sloppy)
    wrong = ("1" if code[0] != "1" else "2") + code[1:]
    assert not claim.check_setup_code(tmp_path, wrong)
    assert not claim.check_setup_code(tmp_path, "")


def test_claiming_retires_the_code_and_checks_the_password(tmp_path: Path):
    claim.setup_code(tmp_path)
    claim.claim(tmp_path, crypto.hash_password("correct horse", FAST_ARGON2))
    assert claim.is_claimed(tmp_path)
    assert claim.setup_code(tmp_path) is None
    assert not (tmp_path / claim.SETUP_CODE_FILE).exists()
    assert not claim.check_setup_code(tmp_path, "anything")
    assert claim.check_admin_password(tmp_path, "correct horse")
    assert not claim.check_admin_password(tmp_path, "correct horse ")


def test_claim_refuses_something_that_is_not_a_hash(tmp_path: Path):
    with pytest.raises(ValueError, match="Argon2id"):
        claim.claim(tmp_path, "plaintext-password")
    assert not claim.is_claimed(tmp_path)


def test_a_damaged_admin_file_never_lets_anyone_in(tmp_path: Path):
    (tmp_path / "box").mkdir()
    (tmp_path / claim.ADMIN_FILE).write_text('{"password_hash": "$argon2id$garbage"}')
    assert not claim.check_admin_password(tmp_path, "")
    (tmp_path / claim.ADMIN_FILE).write_text("not json at all")
    assert not claim.check_admin_password(tmp_path, "")
    assert claim.is_claimed(tmp_path) and claim.setup_code(tmp_path) is None

"""DATA/box/settings.toml: what the setup page saves, laid over the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from letterbox import config, settingsfile


def test_nothing_saved_means_no_overrides(tmp_path: Path) -> None:
    assert settingsfile.read(tmp_path) == {}
    assert config.load(None, overrides={}) == config.Config()


def test_update_round_trips_and_wins_over_the_config_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "letterbox.toml"
    cfg_file.write_text(
        '[smtp]\nlocal_domains = ["old.example"]\nmax_message_size = "10M"\nmax_recipients = 7\n'
    )
    settingsfile.update(
        tmp_path,
        {
            "smtp": {
                "local_domains": ["example.org", 'we"ird.example'],
                "max_message_size": 5 << 20,
            },
            "drive": {"keep_days": 30},
        },
    )
    settingsfile.update(tmp_path, {"box": {"public_hostname": "mail.example.org"}})
    saved = settingsfile.read(tmp_path)
    assert saved["drive"] == {"keep_days": 30}
    assert saved["box"] == {"public_hostname": "mail.example.org"}
    cfg = config.load(cfg_file, overrides=saved)
    assert cfg.smtp.local_domains == ["example.org", 'we"ird.example']
    assert cfg.smtp.max_message_size == 5 << 20
    assert cfg.smtp.max_recipients == 7  # the file's other keys stay
    assert cfg.drive.keep_days == 30
    assert cfg.box.public_hostname == "mail.example.org"
    assert (tmp_path / "box" / "settings.toml").stat().st_mode & 0o777 == 0o600


def test_a_bad_value_is_not_written(tmp_path: Path) -> None:
    settingsfile.update(tmp_path, {"drive": {"keep_days": 3}})
    with pytest.raises(config.ConfigError, match=r"drive\.keep_days"):
        settingsfile.update(tmp_path, {"drive": {"keep_days": -1}})
    with pytest.raises(config.ConfigError, match="cannot be set"):
        settingsfile.update(tmp_path, {"smtp": {"port": 25}})
    assert settingsfile.read(tmp_path) == {"drive": {"keep_days": 3}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[smtp\n", "damaged"),
        ("[smtp]\nport = 25\n", "cannot be set"),
        ('[drive]\nkeep_days = "soon"\n', "drive.keep_days"),
        ("smtp = 1\n", "must be a table"),
    ],
)
def test_a_damaged_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "settings.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        settingsfile.read(tmp_path)

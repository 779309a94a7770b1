"""letterbox.config: embedded defaults, Size values, and a TOML file that names its mistakes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from letterbox import config
from letterbox.config import Config, ConfigError, Size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
LETTERBOX = Path(sys.executable).with_name("letterbox")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "letterbox.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# Defaults


def test_defaults_load_without_a_file() -> None:
    c = config.load(None)
    assert c == Config()
    assert c.box.hostname == "letterbox.local"
    assert c.drive.path == "" and c.drive.reserve == 64 * M and c.drive.keep_days == 0
    assert c.drive.group_commit is True
    assert c.mailbox.default_quota == 2 * G
    assert (c.crypto.argon2_opslimit, c.crypto.argon2_memlimit) == (2, 64 * M)
    assert c.smtp.local_domains == [] and c.smtp.max_message_size == 50 * M
    assert c.log.debug is False
    assert isinstance(c.drive.reserve, Size)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "")) == Config()
    assert config.load(write(tmp_path, "# only a comment\n[drive]\n")) == Config()


def test_drive_path_defaults_under_data(tmp_path: Path) -> None:
    assert Config().drive_path(tmp_path) == tmp_path / "drive"
    c = config.from_mapping({"drive": {"path": "/media/usb"}})
    assert c.drive_path(tmp_path) == Path("/media/usb")


# --------------------------------------------------------------------------------------
# Size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2G", 2 * G),
        ("64M", 64 * M),
        ("512K", 512 * K),
        ("1.5G", 3 * G // 2),
        ("0.5K", 512),
        ("1T", T),
        ("64MiB", 64 * M),
        ("64MB", 64 * M),
        ("64mb", 64 * M),
        ("2g", 2 * G),
        ("2 G", 2 * G),
        (" 2G ", 2 * G),
        ("100", 100),
        ("100B", 100),
        ("0", 0),
        (1048576, M),
        (0, 0),
    ],
)
def test_size_parse(text: object, expected: int) -> None:
    size = Size.parse(text)
    assert size == expected and isinstance(size, Size)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "G",
        "2X",
        "two",
        "2GG",
        "2 GB B",
        "-1G",
        "-5",
        "1e3",
        "1,5G",
        "0x10",
        "2Gi",
        "1.G",
        ".5G",
        -1,
        -(1 << 40),
        True,
        False,
        1.5,
        None,
        [],
        ["2G"],
        {"G": 2},
    ],
)
def test_size_parse_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        Size.parse(bad)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 80), st.sampled_from(["", "K", "M", "G", "T"]))
@example(2**53 + 1, "")
@example(10**400, "")
def test_size_parse_is_exact_for_whole_numbers(n: int, unit: str) -> None:
    scale = {"": 1, "K": K, "M": M, "G": G, "T": T}[unit]
    assert Size.parse(f"{n}{unit}") == n * scale
    assert Size.parse(f"{n} {unit.lower()}iB" if unit else str(n)) == n * scale


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 60))
def test_size_human_round_trips(n: int) -> None:
    assert Size.parse(Size(n).human()) == n


def test_size_human() -> None:
    assert Size(2 * G).human() == "2G"
    assert Size(64 * M).human() == "64M"
    assert Size(3 * G // 2).human() == "1536M"
    assert Size(1000).human() == "1000"
    assert Size(0).human() == "0"


# --------------------------------------------------------------------------------------
# A file overriding values


def test_file_overrides_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[box]
hostname = "box.example.org"

[drive]
path = "/media/letterbox"
reserve = "128M"
keep_days = 30
group_commit = false

[mailbox]
default_quota = 5368709120

[crypto]
argon2_opslimit = 3
argon2_memlimit = "32MiB"

[smtp]
local_domains = ["example.org", "example.net"]
max_message_size = "25M"

[log]
debug = true
""",
    )
    c = config.load(path)
    assert c.box.hostname == "box.example.org"
    assert c.drive == config.DriveSettings(
        path="/media/letterbox", reserve=Size(128 * M), keep_days=30, group_commit=False
    )
    assert isinstance(c.drive.reserve, Size)
    assert c.mailbox.default_quota == 5 * G and isinstance(c.mailbox.default_quota, Size)
    assert (c.crypto.argon2_opslimit, c.crypto.argon2_memlimit) == (3, 32 * M)
    assert c.smtp.local_domains == ["example.org", "example.net"]
    assert c.smtp.max_message_size == 25 * M
    assert c.log.debug is True


def test_unset_values_keep_their_defaults(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, "[drive]\nkeep_days = 7\n"))
    assert c.drive.keep_days == 7
    assert c.drive.reserve == Config().drive.reserve
    assert dataclasses.replace(c, drive=Config().drive) == Config()


def test_every_setting_can_be_written_back(tmp_path: Path) -> None:
    """Each default, written into a file as TOML, loads to the same value."""
    lines = []
    for section in dataclasses.fields(Config):
        lines.append(f"[{section.name}]")
        for f in dataclasses.fields(getattr(Config(), section.name)):
            value = getattr(getattr(Config(), section.name), f.name)
            if isinstance(value, bool):
                lines.append(f"{f.name} = {str(value).lower()}")
            elif isinstance(value, Size):
                lines.append(f'{f.name} = "{value.human()}"')
            elif isinstance(value, int):
                lines.append(f"{f.name} = {value}")
            elif isinstance(value, list):
                lines.append(f"{f.name} = {value!r}")
            else:
                lines.append(f'{f.name} = "{value}"')
    assert config.load(write(tmp_path, "\n".join(lines) + "\n")) == Config()


# --------------------------------------------------------------------------------------
# Mistakes, each named


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[drive]\nreserv = "1G"\n', "unknown setting 'drive.reserv'"),
        ("[smtp]\nmax_size = 5\n", "unknown setting 'smtp.max_size'"),
        ('[drvie]\nreserve = "1G"\n', "unknown section 'drvie'"),
        ('hostname = "x"\n', "unknown section 'hostname'"),
        ("drive = 5\n", "'drive' must be a table"),
    ],
)
def test_unknown_names_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.load(write(tmp_path, text))


def test_unknown_setting_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, '[drive]\nreserv = "1G"\n'))
    assert "reserve" in str(err.value) and "keep_days" in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[drive]\nkeep_days = "7"\n', "drive.keep_days"),  # string for int
        ("[drive]\nkeep_days = 1.5\n", "drive.keep_days"),
        ("[drive]\nkeep_days = true\n", "drive.keep_days"),  # bool is not an int
        ("[drive]\nkeep_days = -1\n", "drive.keep_days"),
        ("[drive]\ngroup_commit = 1\n", "drive.group_commit"),  # int for bool
        ('[drive]\ngroup_commit = "yes"\n', "drive.group_commit"),
        ("[log]\ndebug = 0\n", "log.debug"),
        ("[smtp]\nlocal_domains = [1, 2]\n", "smtp.local_domains"),  # list of non-strings
        ('[smtp]\nlocal_domains = ["a.org", 2]\n', "smtp.local_domains"),
        ('[smtp]\nlocal_domains = "a.org"\n', "smtp.local_domains"),
        ("[box]\nhostname = 5\n", "box.hostname"),
        ('[drive]\nreserve = "lots"\n', "drive.reserve"),
        ("[drive]\nreserve = -5\n", "drive.reserve"),
        ("[drive]\nreserve = true\n", "drive.reserve"),
        ("[drive]\nreserve = 1.5\n", "drive.reserve"),
        ('[drive]\nreserve = "-1G"\n', "drive.reserve"),
        ("[mailbox]\ndefault_quota = [1]\n", "mailbox.default_quota"),
        ("[crypto]\nargon2_opslimit = {a = 1}\n", "crypto.argon2_opslimit"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"setting '{key}'"):
        config.load(write(tmp_path, text))


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[drive\nreserve = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        config.load(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nowhere.toml")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[box]\nhostname = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------
# Through the CLI


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LETTERBOX), "--data", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[drive]\nreserv = "1G"\n', "drive.reserv"),
        ("[drive]\ngroup_commit = 1\n", "drive.group_commit"),
        ("[drive\n", "not valid TOML"),
    ],
)
def test_cli_reports_a_bad_config_and_exits_1(tmp_path: Path, text: str, named: str) -> None:
    bad = write(tmp_path, text)
    result = run_cli(tmp_path, "--config", str(bad), "mailbox", "list")
    assert result.returncode == 1, result.stderr
    assert named in result.stderr
    assert result.stderr.startswith("letterbox: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before touching any state


def test_cli_reports_a_missing_and_an_undecodable_config(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--config", str(tmp_path / "nope.toml"), "mailbox", "list")
    assert result.returncode == 1 and "does not exist" in result.stderr
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[box]\nhostname = "caf\xe9"\n')
    result = run_cli(tmp_path, "--config", str(latin), "mailbox", "list")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and str(latin) in result.stderr


def test_cli_runs_with_a_good_config(tmp_path: Path) -> None:
    good = write(tmp_path, '[drive]\nreserve = "0"\n[crypto]\nargon2_memlimit = "8K"\n')
    result = run_cli(tmp_path, "--config", str(good), "mailbox", "list", "--create")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "drive" / "letterbox" / "DRIVE").exists()

"""appliance/systemd/letterbox.service: clean under `systemd-analyze verify`, and the
settings the appliance relies on are there."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "appliance" / "systemd" / "letterbox.service"
IMAGE_BINARY = "/opt/letterbox/bin/letterbox"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs the systemd package"
    # The image's binary does not exist here; verify checks that ExecStart= is an
    # executable, so a copy points at this venv's letterbox instead.
    here = Path(sys.executable).parent / "letterbox"
    assert here.exists()
    text = UNIT.read_text()
    assert IMAGE_BINARY in text
    copy = tmp_path / "letterbox.service"
    copy.write_text(text.replace(IMAGE_BINARY, str(here)))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys or bad values; it only warns. Clean means
    # no output at all.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_broken_unit_is_noticed(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make test` installs the systemd package")
    bad = tmp_path / "bad.service"
    bad.write_text(
        "[Service]\nType=notify\nWatchdogSec=soon\nProtectSystm=strict\nExecStart=/bin/true\n"
    )
    done = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "WatchdogSec" in done.stderr or "soon" in done.stderr
    assert "ProtectSystm" in done.stderr


def test_the_settings_the_appliance_relies_on() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == (
        f"{IMAGE_BINARY} --data /var/lib/letterbox --config /etc/letterbox/letterbox.toml run"
    )
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    # Longer than the drains (SMTP 20 s, POP3 10 s at the same time) plus the drive close.
    assert int(service["TimeoutStopSec"]) > 20 + 10
    assert service["MemoryMax"] == "200M"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["ProtectHome"] == "yes"
    assert set(service["ReadWritePaths"].split()) == {"/var/lib/letterbox", "-/media/letterbox"}
    caps = set(service["CapabilityBoundingSet"].split())
    assert "CAP_NET_BIND_SERVICE" in caps and "CAP_SYS_ADMIN" in caps  # ports < 1024, mount
    assert caps <= {
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_CHOWN",
        "CAP_FOWNER",
    }

"""The storage page: drive state, usage, evictions; adopt and format forms.

The adopt/format tests use `UsbBus`, a small in-test `DriveControl` standing in
for a USB bus, which this machine does not have (docs/findings.md, "pyudev": no USB in the
kernel). It implements the same interface the real manager does; the page cannot
tell the difference, and the manager itself is tested in tests/usb/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from letterbox.config import Size
from letterbox.drive import Drive
from letterbox.usb.model import Candidate, DriveActionError, DriveState

from tests.web.setup.conftest import Page, SetupBox

STICK = Candidate(
    id="usb-SanDisk_Cruzer_4C53-0:0-part1",
    devnode="/dev/sda1",
    kind="foreign",
    size=32 << 30,
    bus="usb",
    model="SanDisk Cruzer Blade",
    label="HOLIDAY",
    fs_type="vfat",
)
OLD_DRIVE = Candidate(
    id="usb-WD_Elements_575834-0:0-part1",
    devnode="/dev/sdb1",
    kind="letterbox",
    size=1 << 40,
    bus="usb",
    model="WD Elements",
    label="letterbox",
    fs_type="ext4",
    drive_id="d" * 32,
)


class UsbBus:
    """Two sticks plugged in; records what the page asked for."""

    def __init__(self, drive: Drive | None) -> None:
        self._drive = drive
        self.adopted: list[str] = []
        self.formatted: list[tuple[str, str]] = []

    def drive(self) -> Drive | None:
        return self._drive

    def state(self) -> DriveState:
        if self._drive is None:
            return DriveState("absent", reason="no drive chosen yet")
        return DriveState("online", drive_id=self._drive.identity.drive_id, device="/dev/sdc1")

    def candidates(self) -> list[Candidate]:
        return [STICK, OLD_DRIVE]

    async def adopt(self, candidate_id: str) -> DriveState:
        if candidate_id != OLD_DRIVE.id:
            raise DriveActionError("that drive holds no Letterbox mail; format it instead")
        self.adopted.append(candidate_id)
        return self.state()

    async def format(self, candidate_id: str, confirm: str) -> DriveState:
        self.formatted.append((candidate_id, confirm))
        return self.state()


def usb_box(setup_box: SetupBox) -> tuple[SetupBox, UsbBus]:
    box = SetupBox(setup_box.cfg, setup_box.data_dir, setup_box.drive)
    bus = UsbBus(setup_box.drive)
    box.drives = bus  # type: ignore[attr-defined]
    return box, bus


def test_directory_mode_shows_usage_and_no_candidates(run_page: Any, setup_box: SetupBox) -> None:
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=1 << 20, password="a password")
    drive.deliver("x@example.net", [mailbox.address], b"Subject: hi\r\n\r\n" + b"x" * 5000)

    async def scenario(page: Page) -> None:
        status, text, _ = await page.get("/storage")
        assert status == 200
        assert "online" in text and "anna@example.org" in text
        assert "<meter" in text and "No other drive is plugged in" in text
        assert "No message has been evicted" in text
        assert "reserve-warning" not in text
        status, text, _ = await page.post("/storage/adopt", {"candidate": "x"})
        assert status == 400 and "directory" in text

    run_page(scenario, claimed=True)


def test_evictions_are_listed(run_page: Any, setup_box: SetupBox) -> None:
    drive = setup_box.drive
    assert drive is not None
    mailbox, _ = drive.create_mailbox("anna@example.org", quota=(1 << 20), password="a password")
    for n in range(6):
        drive.deliver(
            "x@example.net", [mailbox.address], b"Subject: %d\r\n\r\n" % n + b"x" * 300_000
        )
    assert drive.evictions(mailbox.id)

    async def scenario(page: Page) -> None:
        _, text, _ = await page.get("/storage")
        assert "No message has been evicted" not in text
        assert text.count("<td>quota</td>") == len(drive.evictions(mailbox.id))

    run_page(scenario, claimed=True)


def test_a_reserve_larger_than_the_drive_is_a_warning(
    run_page: Any, setup_box: SetupBox, open_drive: Callable[..., Drive]
) -> None:
    assert setup_box.drive is not None
    setup_box.drive.close()
    box = SetupBox(setup_box.cfg, setup_box.data_dir, open_drive(reserve=Size(1 << 60)))

    async def scenario(page: Page) -> None:
        status, text, _ = await page.get("/storage")
        assert status == 200
        assert 'id="reserve-warning"' in text
        assert f"drive.reserve ({1 << 60} bytes) is larger than the whole drive" in text

    run_page(scenario, box=box, claimed=True)


def test_adopt_and_format_through_the_drive_control(run_page: Any, setup_box: SetupBox) -> None:
    box, bus = usb_box(setup_box)

    async def scenario(page: Page) -> None:
        status, text, _ = await page.get("/storage")
        assert status == 200
        assert "/dev/sda1" in text and "SanDisk Cruzer Blade" in text and "HOLIDAY" in text
        assert "Use this drive" in text  # only the Letterbox drive offers adopt
        assert text.count('action="/storage/adopt"') == 1
        status, _, resp = await page.post("/storage/adopt", {"candidate": OLD_DRIVE.id})
        assert (status, resp.headers["Location"]) == (303, "/storage?done=adopt")
        assert bus.adopted == [OLD_DRIVE.id]
        status, text, _ = await page.post("/storage/adopt", {"candidate": STICK.id})
        assert status == 400 and "format it instead" in text

    run_page(scenario, box=box, claimed=True)


def test_format_needs_the_device_name_typed(run_page: Any, setup_box: SetupBox) -> None:
    box, bus = usb_box(setup_box)

    async def scenario(page: Page) -> None:
        await page.get("/storage")
        for confirm in ["yes", "/dev/sdb1", "sda1", ""]:
            status, text, _ = await page.post(
                "/storage/format", {"candidate": STICK.id, "confirm": confirm}
            )
            assert status == 400, confirm
        assert "Nothing was erased" in text or "please fill this in" in text
        assert bus.formatted == []
        status, text, _ = await page.post(
            "/storage/format", {"candidate": "usb-gone", "confirm": "/dev/sda1"}
        )
        assert status == 400 and "no longer plugged in" in text
        status, _, resp = await page.post(
            "/storage/format", {"candidate": STICK.id, "confirm": "/dev/sda1"}
        )
        assert (status, resp.headers["Location"]) == (303, "/storage?done=format")
        assert bus.formatted == [(STICK.id, "/dev/sda1")]

    run_page(scenario, box=box, claimed=True)

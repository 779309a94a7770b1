"""DriveManager on real loop devices: adopt, format, refuse, unplug, replug, I/O errors.

Each test runs the manager on its own event loop with kernel events (no udevd
here), as `letterbox run` would; loop devices stand in for USB sticks
(classify.allow_loop), and unplugging is the kernel's own remove event.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.drive import DriveUnavailable
from letterbox.usb import privileged
from letterbox.usb.manager import DriveManager, remembered_path
from letterbox.usb.model import Candidate, DriveActionError

from tests.usb.conftest import ADDRESS, PASSWORD, Loops, synth, usb_config

Setup = tuple[Path, Path, BoxKeys]


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting for the drive manager"
        await asyncio.sleep(0.05)


def run(usb_data: Setup, body: Callable[[DriveManager], Awaitable[None]]) -> None:
    data, mnt, _ = usb_data

    async def main() -> None:
        manager = DriveManager(usb_config(mnt), data, monitor_source="kernel")
        await manager.start()
        try:
            await body(manager)
        finally:
            await manager.stop()
        assert not os.path.ismount(mnt), "stop() unmounts the drive"

    asyncio.run(main())


def by_devnode(manager: DriveManager, devnode: str) -> Candidate:
    for c in manager.candidates():
        if c.devnode == devnode:
            return c
    raise AssertionError(f"{devnode} not among {manager.candidates()}")


def read_alice(manager: DriveManager) -> list[bytes]:
    drive = manager.drive()
    assert drive is not None
    box = drive.find_mailbox(ADDRESS)
    assert box is not None
    secret = drive.unlock(box.id, PASSWORD)
    return [drive.open_message(box.id, d.id, secret).read() for d in drive.list(box.id)]


def test_adopt_an_existing_letterbox_drive(loops: Loops, usb_data: Setup) -> None:
    data, mnt, keys = usb_data
    img, drive_id = loops.letterbox_image("lb.img", keys)
    dev = loops.attach(img)

    async def body(m: DriveManager) -> None:
        assert m.state().state == "absent"
        assert m.drive() is None
        c = by_devnode(m, dev)
        assert c.kind == "letterbox" and c.drive_id == drive_id and c.label == "LETTERBOX"
        st = await m.adopt(c.id)
        assert st.state == "online" and st.drive_id == drive_id and st.device == dev
        assert st.total > 0 and st.free > 0
        assert os.path.ismount(mnt)
        opts = next(
            line.split()[3]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1] == str(mnt)
        )
        for opt in ("nodev", "nosuid", "noexec", "noatime", "errors=remount-ro"):
            assert opt in opts.split(","), opts
        assert by_devnode(m, dev).in_use
        assert read_alice(m) == []
        assert (await m.adopt(c.id)).state == "online"  # again: nothing changes

    run(usb_data, body)
    remembered = json.loads(remembered_path(data).read_text())
    assert remembered["drive_id"] == drive_id and remembered["fs_uuid"]

    async def after_restart(m: DriveManager) -> None:  # the box boots with its drive in
        st = m.state()
        assert st.state == "online" and st.drive_id == drive_id and st.device == dev

    run(usb_data, after_restart)


def test_format_needs_the_device_name_and_writes_nothing_without_it(
    loops: Loops, usb_data: Setup
) -> None:
    img = loops.image("blank.img")
    dev = loops.attach(img)

    async def body(m: DriveManager) -> None:
        c = by_devnode(m, dev)
        assert c.kind == "empty" and c.fs_type == ""
        for wrong in ("", "yes", dev + " ", "/dev/sda", c.id if c.id != dev else "sure"):
            with pytest.raises(DriveActionError, match=f"confirm with its device name {dev}"):
                await m.format(c.id, confirm=wrong)
        assert img.read_bytes().count(0) == img.stat().st_size, "nothing written"
        assert m.state().state == "absent"
        st = await m.format(c.id, confirm=dev)
        assert st.state == "online" and st.device == dev
        after = by_devnode(m, dev)
        assert after.kind == "letterbox" and after.drive_id == st.drive_id
        assert after.label == "LETTERBOX" and after.fs_type == "ext4"
        drive = m.drive()
        assert drive is not None
        drive.create_mailbox(ADDRESS, quota=1 << 20, password=PASSWORD)
        drive.deliver("bob@example.org", [ADDRESS], b"Subject: hi\r\n\r\nfirst\r\n")
        with pytest.raises(DriveActionError, match="in use: refusing to erase"):
            await m.format(after.id, confirm=dev)

    run(usb_data, body)
    assert privileged.probe(dev)["ID_FS_LABEL"] == "LETTERBOX"


def test_refuses_mounted_unknown_and_foreign_adopts(loops: Loops, usb_data: Setup) -> None:
    img = loops.image("busy.img")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "PHOTOS", str(img)], check=True)
    dev = loops.attach(img)
    elsewhere = img.parent / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", dev, str(elsewhere)], check=True)
    (elsewhere / "holiday.jpg").write_bytes(b"precious")

    async def body(m: DriveManager) -> None:
        c = by_devnode(m, dev)
        assert c.kind == "foreign" and c.label == "PHOTOS"
        with pytest.raises(DriveActionError, match=r"mounted at .*elsewhere"):
            await m.format(c.id, confirm=dev)
        with pytest.raises(DriveActionError, match="not a Letterbox drive"):
            await m.adopt(c.id)
        root = next(line.split()[0] for line in Path("/proc/self/mounts").read_text().splitlines())
        for not_offered in (root, "/dev/sda", "/dev/mmcblk0p2", "nonsense"):
            with pytest.raises(DriveActionError, match="is plugged in"):
                await m.format(not_offered, confirm=not_offered)
        assert m.state().state == "absent"

    run(usb_data, body)
    assert (elsewhere / "holiday.jpg").read_bytes() == b"precious"


def test_unplug_takes_it_offline_and_the_same_drive_brings_it_back(
    loops: Loops, usb_data: Setup
) -> None:
    _, mnt, keys = usb_data
    img, drive_id = loops.letterbox_image("lb.img", keys)
    other_img, other_id = loops.letterbox_image("other.img", keys)
    dev = loops.attach(img)

    async def body(m: DriveManager) -> None:
        await m.adopt(by_devnode(m, dev).id)
        drive = m.drive()
        assert drive is not None
        drive.deliver("bob@example.org", [ADDRESS], b"Subject: 1\r\n\r\nbefore unplug\r\n")
        unfinished = drive.begin("carol@example.org")
        unfinished.add_recipient(ADDRESS)
        unfinished.write(b"Subject: 2\r\n\r\nin flight\r\n")

        synth(dev, "remove")  # the kernel's word that the stick is gone
        await until(lambda: m.state().state == "offline")
        assert m.drive() is None
        assert "removed" in m.state().reason and m.state().drive_id == drive_id
        with pytest.raises((DriveUnavailable, RuntimeError)):
            await unfinished.commit_async()  # never acknowledged: the sender retries
        await until(lambda: not os.path.ismount(mnt))
        loops.detach(dev)

        other = loops.attach(other_img)  # someone plugs in another Letterbox drive
        await until(lambda: "different" in m.state().reason)
        st = m.state()
        assert st.state == "offline" and m.drive() is None
        assert "different Letterbox drive" in st.reason and other_id in st.reason
        assert not os.path.ismount(mnt)
        loops.detach(other)

        back = loops.attach(img)  # the box's own drive again, maybe on another node
        await until(lambda: m.state().state == "online")
        assert m.state().device == back and m.state().drive_id == drive_id
        drive = m.drive()
        assert drive is not None and drive.recovery.crashed  # abandoned, so reconciled
        assert [b.split(b"\r\n\r\n")[1] for b in read_alice(m)] == [b"before unplug\r\n"]
        drive.deliver("bob@example.org", [ADDRESS], b"Subject: 3\r\n\r\nafter replug\r\n")
        assert len(read_alice(m)) == 2

    run(usb_data, body)


def test_an_io_error_confirmed_by_the_health_check_takes_it_offline(
    loops: Loops, usb_data: Setup
) -> None:
    keys = usb_data[2]
    img, _ = loops.letterbox_image("lb.img", keys)
    dev = loops.attach(img)

    async def body(m: DriveManager) -> None:
        await m.adopt(by_devnode(m, dev).id)
        m.report_io_error(DriveUnavailable("a stray error"))  # drive is fine: stays online
        await asyncio.sleep(0.3)
        assert m.state().state == "online"
        # ext4's own error path (as on a failing stick): with errors=remount-ro the
        # filesystem turns read-only, and the next write fails with EROFS.
        Path(f"/sys/fs/ext4/{Path(dev).name}/trigger_fs_error").write_text("test")
        drive = m.drive()
        assert drive is not None
        with pytest.raises(DriveUnavailable) as failed:
            drive.deliver("bob@example.org", [ADDRESS], b"Subject: x\r\n\r\nx\r\n" * 20000)
        m.report_io_error(failed.value)
        await until(lambda: m.state().state == "offline")
        assert "read-only" in m.state().reason.lower() and m.drive() is None

    run(usb_data, body)


def test_directory_mode_has_nothing_to_adopt(tmp_path: Path) -> None:
    from letterbox.config import Config

    async def main() -> None:
        m = DriveManager(Config(), tmp_path / "data")
        await m.start()
        try:
            assert m.state().state == "online" and m.drive() is not None
            assert m.candidates() == []
            with pytest.raises(DriveActionError, match=r'drive\.mode = "directory"'):
                await m.adopt("/dev/sda1")
        finally:
            await m.stop()

    asyncio.run(main())

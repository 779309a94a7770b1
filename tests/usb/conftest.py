"""Loop devices standing in for USB drives (no USB bus here: docs/findings.md, "pyudev").

Every loop device and mount a test makes is undone afterwards, even when the test
fails: mounts under the test's tmp_path are lazily unmounted, loop devices backed
by the test's images detached.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from letterbox.boxkeys import BoxKeys
from letterbox.config import Config, CryptoSettings, DriveSettings, Size
from letterbox.drive import Drive

from tests.helpers import FAST_ARGON2

PASSWORD = "correct horse battery staple"
ADDRESS = "alice@letterbox.test"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def usb_config(mount_point: Path) -> Config:
    return Config(
        drive=DriveSettings(mode="usb", path=str(mount_point), allow_loop=True, reserve=Size(0)),
        crypto=CryptoSettings(argon2_opslimit=1, argon2_memlimit=Size(8192)),
    )


def synth(devnode: str, action: str, *args: str) -> None:
    """A synthetic uevent (sysfs-uevent ABI): the kernel sends it to every listener."""
    line = f"{action} {uuid.uuid4()} {' '.join(args)}".strip() if args else action
    Path(f"/sys/class/block/{Path(devnode).name}/uevent").write_text(line)


class Loops:
    """Attach images as loop devices; detach and unmount everything at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: list[Path] = []

    def image(self, name: str, size: str = "48M") -> Path:
        path = self.root / name
        subprocess.run(["truncate", "-s", size, str(path)], check=True)
        self.images.append(path)
        return path

    def attach(self, image: Path) -> str:
        if image not in self.images:
            self.images.append(image)
        return sh("losetup", "--find", "--show", str(image))

    def detach(self, devnode: str) -> None:
        # Partitions added with `partx -a` outlive the detach unless deleted first.
        subprocess.run(["partx", "-d", devnode], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", devnode], check=False, capture_output=True)

    def letterbox_image(
        self, name: str, keys: BoxKeys, *, mailbox: bool = True
    ) -> tuple[Path, str]:
        """An ext4 image holding a Letterbox drive (with alice's mailbox): (image, drive_id)."""
        img = self.image(name)
        sh("mkfs.ext4", "-q", "-F", "-L", "LETTERBOX", str(img))
        mnt = self.root / f"{name}.mnt"
        mnt.mkdir()
        dev = self.attach(img)
        try:
            sh("mount", dev, str(mnt))
            try:
                with Drive.open(mnt, keys, limits=FAST_ARGON2) as drive:
                    if mailbox:
                        drive.create_mailbox(ADDRESS, quota=16 << 20, password=PASSWORD)
                    drive_id = drive.identity.drive_id
            finally:
                sh("umount", str(mnt))
        finally:
            self.detach(dev)
        return img, drive_id

    def cleanup(self) -> None:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for line in reversed(mounts):
            target = line.split()[1]
            if target.startswith(str(self.root)):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        for img in self.images:
            out = subprocess.run(
                ["losetup", "-j", str(img)], capture_output=True, text=True, check=False
            ).stdout
            for line in out.splitlines():
                with contextlib.suppress(Exception):
                    self.detach(line.split(":")[0])


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    lp = Loops(tmp_path)
    yield lp
    lp.cleanup()


@pytest.fixture
def usb_data(tmp_path: Path) -> tuple[Path, Path, BoxKeys]:
    """(data dir, mount point, box keys) for a box in usb mode."""
    data = tmp_path / "data"
    return data, tmp_path / "media" / "letterbox", BoxKeys.load_or_create(data)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

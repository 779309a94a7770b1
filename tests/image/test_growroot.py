"""Growing root to fill the card, on a real partitioned loop device (sfdisk, partx and
resize2fs as on the box), including after a power cut that fell between growing the
partition and growing the filesystem.

The filesystem is not mounted: on the box resize2fs grows the mounted root online, which
needs CAP_SYS_RESOURCE that this machine's root does not have; offline, a filesystem
never mounted since mkfs is grown by the same command."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning import growroot

MIB = 1 << 20


def run(*cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(cmd, input=stdin, check=True, capture_output=True, text=True).stdout


class Card:
    """A 96 MiB card image: a 4 MiB boot partition and a 28 MiB root, the rest free."""

    def __init__(self, tmp: Path) -> None:
        self.image = tmp / "card.img"
        run("truncate", "-s", f"{96 * MIB}", str(self.image))
        run("sfdisk", "-q", str(self.image), stdin="4MiB,4MiB,c\n8MiB,28MiB,83\n")
        self.disk = ""

    @property
    def part(self) -> str:
        return f"{self.disk}p2"

    @property
    def where(self) -> tuple[str, str, int]:
        return self.part, self.disk, 2

    def attach(self) -> None:
        self.disk = run("losetup", "--find", "--show", str(self.image)).strip()
        run("partx", "-a", self.disk)  # the partition nodes, as the card's are at boot

    def detach(self) -> None:
        # Partitions added with partx outlive the loop device unless deleted first.
        subprocess.run(["partx", "-d", self.disk], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", self.disk], check=False, capture_output=True)

    def reboot(self) -> None:
        """Detach and attach again: the kernel reads the partition table afresh."""
        self.detach()
        self.attach()

    def fs_size(self) -> int:
        head = run("dumpe2fs", "-h", self.part)
        fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
        return int(fields["Block count"]) * int(fields["Block size"])


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Card]:
    c = Card(tmp_path)
    try:
        c.attach()
        run("mkfs.ext4", "-q", "-F", c.part)
        yield c
    finally:
        if c.disk:
            c.detach()


def test_grows_partition_and_filesystem_then_does_nothing(card: Card) -> None:
    before = card.fs_size()
    said = growroot.grow_root(where=card.where)
    assert said and "MiB" in said
    assert growroot.free_after(card.disk, card.part) == 0
    assert card.fs_size() > before + 50 * MIB
    assert growroot.grow_root(where=card.where) is None


def test_a_power_cut_after_growing_the_partition_is_finished_next_boot(card: Card) -> None:
    before = card.fs_size()
    # What grow_root does first, then the power goes: the filesystem was never grown.
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-N", "2", card.disk, stdin=", +\n")
    card.reboot()
    assert growroot.free_after(card.disk, card.part) < 16 * MIB
    assert card.fs_size() == before
    said = growroot.grow_root(where=card.where)
    assert said and "cut off" in said
    assert card.fs_size() > before + 50 * MIB

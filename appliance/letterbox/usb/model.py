"""What the rest of the box sees of drive management: plain data and one interface.

The setup page, `letterbox status` and the CLI talk to the drive manager only
through `DriveControl`; how drives are found (pyudev), mounted and formatted
(letterbox.usb.privileged) stays behind it. Kept free of pyudev imports so that
web views and tests can use these types on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from letterbox.drive import Drive

# online: the drive is open and takes mail.
# offline: a drive was in use and is gone or failing (SMTP 451, POP3 [SYS/TEMP]);
#          only the same drive (same DRIVE identity) brings the box back online.
# absent: no drive has been chosen yet (a new box): waiting for adopt or format.
DriveStateName = Literal["online", "offline", "absent"]

# letterbox: carries a Letterbox drive (letterbox/DRIVE) and can be adopted as is.
# empty: no filesystem or partition table; formatting loses nothing.
# foreign: has another filesystem or data; formatting erases it.
CandidateKind = Literal["letterbox", "empty", "foreign"]


@dataclass(frozen=True)
class Candidate:
    """A block device that could become the box's drive."""

    id: str  # stable across replugs where udev gives one (ID_SERIAL/ID_FS_UUID), else devnode
    devnode: str  # /dev/sda1
    kind: CandidateKind
    size: int  # bytes
    bus: str  # "usb", or what udev says ("" for loop devices in tests)
    model: str  # vendor and model as udev reports them, for a person to recognise
    label: str  # filesystem label, "" if none
    fs_type: str  # "ext4", "vfat", "" if none
    drive_id: str = ""  # the DRIVE identity, for kind == "letterbox"
    in_use: bool = False  # the box's current drive

    def describe(self) -> str:
        """One line a person can match to the stick in their hand."""
        gib = self.size / (1 << 30)
        bits = [self.devnode, f"{gib:.1f} GiB", self.model or "unknown model"]
        if self.label:
            bits.append(f"label {self.label!r}")
        if self.fs_type:
            bits.append(self.fs_type)
        return ", ".join(bits)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DriveState:
    state: DriveStateName
    drive_id: str = ""  # identity of the drive in use, or of the one we wait for
    path: str = ""  # mount point or directory
    device: str = ""  # /dev node, "" in directory mode
    reason: str = ""  # why offline or absent, for a person
    total: int = 0  # filesystem bytes, 0 when unknown
    free: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class DriveActionError(Exception):
    """An adopt/format request that cannot be done; the message is for a person."""


class DriveControl(Protocol):
    """The drive manager as the setup page, status and CLI use it.

    `drive()` is the getter every listener already takes (None → 451 / [SYS/TEMP]
    / 503). `adopt` and `format` run privileged steps and may take seconds; they
    raise DriveActionError with a message for a person.
    """

    def drive(self) -> Drive | None: ...

    def state(self) -> DriveState: ...

    def candidates(self) -> list[Candidate]: ...

    async def adopt(self, candidate_id: str) -> DriveState: ...

    async def format(self, candidate_id: str, confirm: str) -> DriveState:
        """Erase and initialise; `confirm` must equal the candidate's devnode."""
        ...

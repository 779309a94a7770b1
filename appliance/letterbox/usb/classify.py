"""Which block devices could become the box's drive: a pure function of udev properties.

Input is what udev knows about one block device (the property names are udev's:
the kernel's uevent keys DEVNAME, DEVTYPE, MAJOR, PARTN; `ID_BUS`, `ID_SERIAL`,
`ID_VENDOR`, `ID_MODEL` from udev's usb_id/path_id builtins; `ID_FS_*` and
`ID_PART_TABLE_TYPE` from its blkid builtin; `ID_CDROM` from cdrom_id; see
systemd's src/udev/udev-builtin-*.c and 60-persistent-storage.rules), plus the
size in bytes from sysfs. No I/O here, so it is tested on recorded property sets
(tests/usb/fixtures/).

Rules:

* only the USB bus on the appliance (the SD card the system runs from is on
  mmc, other disks on ata/nvme); loop devices only when `allow_loop` (tests, demos);
* disks and partitions only; no optical drives (ID_CDROM), no zero-size media
  (a card reader with no card, a detached loop device);
* a disk with a partition table is not a candidate itself: its partitions are;
* kind: `letterbox` when the drive_id of letterbox/DRIVE was read off it, or when
  it is ext4 labelled LETTERBOX (how `format` leaves a drive, even if the
  identity is not readable without mounting); `empty` with no filesystem and no
  partition table; everything else `foreign` (formatting it erases data).
"""

from __future__ import annotations

from collections.abc import Mapping

from letterbox.usb.model import Candidate, CandidateKind

LETTERBOX_LABEL = "LETTERBOX"
LOOP_MAJOR = "7"


def is_loop(props: Mapping[str, str]) -> bool:
    name = props.get("DEVNAME", "")
    return props.get("MAJOR") == LOOP_MAJOR or name.startswith(("/dev/loop", "loop"))


def devnode_of(props: Mapping[str, str]) -> str:
    """Kernel events name the node relative to /dev (DEVNAME=sdb1), udev absolutely."""
    name = props.get("DEVNAME", "")
    return name if not name or name.startswith("/dev/") else f"/dev/{name}"


def candidate_id(props: Mapping[str, str]) -> str:
    """Stable across replugs where udev gives a serial or filesystem UUID, else the node."""
    partn = props.get("ID_PART_ENTRY_NUMBER") or props.get("PARTN") or ""
    part = f"-part{partn}" if props.get("DEVTYPE") == "partition" and partn else ""
    serial = props.get("ID_SERIAL", "")
    if serial and not is_loop(props):
        return f"usb-{serial}{part}"
    uuid = props.get("ID_FS_UUID", "")
    if uuid:
        return f"uuid-{uuid}"
    return devnode_of(props)


def _model(props: Mapping[str, str]) -> str:
    # udev replaces spaces by "_" in ID_VENDOR/ID_MODEL (the *_ENC forms keep \x20).
    bits = [props.get("ID_VENDOR", ""), props.get("ID_MODEL", "")]
    return " ".join(b.replace("_", " ").strip() for b in bits if b).strip()


def classify(
    props: Mapping[str, str],
    *,
    size: int,
    allow_loop: bool = False,
    drive_id: str = "",
) -> Candidate | None:
    """A Candidate for this device, or None when it must never be offered."""
    if props.get("SUBSYSTEM", "block") != "block":
        return None
    devtype = props.get("DEVTYPE", "")
    if devtype not in ("disk", "partition"):
        return None
    devnode = devnode_of(props)
    if not devnode:
        return None
    bus = props.get("ID_BUS", "")
    if is_loop(props):
        if not allow_loop:
            return None
    elif bus != "usb":
        return None
    if props.get("ID_CDROM") == "1" or devnode.startswith("/dev/sr"):
        return None
    if size <= 0:
        return None
    fs_type = props.get("ID_FS_TYPE", "")
    # udev copies ID_PART_TABLE_TYPE onto partitions too: only a disk's own counts.
    has_table = devtype == "disk" and bool(props.get("ID_PART_TABLE_TYPE"))
    if has_table and not fs_type:
        return None  # its partitions are the candidates
    label = props.get("ID_FS_LABEL", "")
    kind: CandidateKind
    if drive_id or (fs_type == "ext4" and label == LETTERBOX_LABEL):
        kind = "letterbox"
    elif not fs_type and not has_table and not props.get("ID_FS_USAGE"):
        kind = "empty"
    else:
        kind = "foreign"
    return Candidate(
        id=candidate_id(props),
        devnode=devnode,
        kind=kind,
        size=size,
        bus=bus,
        model=_model(props),
        label=label,
        fs_type=fs_type,
        drive_id=drive_id,
    )

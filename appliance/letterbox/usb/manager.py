"""The drive manager: which drive the box uses, whether it is online, and changing that.

Two modes (`drive.mode`):

* `directory` (development, the default): the drive is the directory
  `cfg.drive_path(data)`, opened at start as before; nothing to adopt or format.
* `usb` (the appliance): block devices are watched (monitor.py) and classified
  (classify.py). The drive the household chose is remembered in
  `DATA/box/drive.json` by its DRIVE identity and its filesystem UUID; it is
  mounted at `drive.path` (privileged.py) and opened with `state.open_drive`,
  which runs crash recovery. Removal, or an I/O error that a health check
  confirms, takes it offline: listeners see `drive()` return None at once (SMTP
  451 4.3.0, POP3 -ERR [SYS/TEMP]), then the Drive is closed and the mount
  detached. Only the same drive brings the box back online by itself; another
  Letterbox drive is named in the reason and waits for an explicit adopt.

Nothing acknowledged is lost by going offline: a 250 is sent only after the
drive's commit has synced (drive/committer.py), and a commit that the vanished
device cannot finish fails, which the SMTP gateway answers with 451.

Everything that changes the drive runs under one asyncio lock, in event order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from letterbox import config, state
from letterbox.drive import Drive, DriveError
from letterbox.fsutil import write_atomic
from letterbox.usb import privileged
from letterbox.usb.classify import classify
from letterbox.usb.model import Candidate, DriveActionError, DriveState

log = logging.getLogger("letterbox.usb")


@dataclass(frozen=True)
class Remembered:
    """The drive this box uses, as kept in DATA/box/drive.json."""

    drive_id: str
    fs_uuid: str
    description: str = ""


def remembered_path(data_dir: Path) -> Path:
    return data_dir / "box" / "drive.json"


def load_remembered(data_dir: Path) -> Remembered | None:
    path = remembered_path(data_dir)
    try:
        doc = json.loads(path.read_bytes())
        return Remembered(
            str(doc["drive_id"]), str(doc["fs_uuid"]), str(doc.get("description", ""))
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        log.error("%s is unreadable (%s): the box waits for a drive to be adopted", path, exc)
        return None


def save_remembered(data_dir: Path, r: Remembered) -> None:
    path = remembered_path(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"drive_id": r.drive_id, "fs_uuid": r.fs_uuid, "description": r.description}
    write_atomic(path, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)


@dataclass
class _Device:
    candidate: Candidate
    fs_uuid: str


class DriveManager:
    """Implements usb.model.DriveControl for the Appliance, the setup page and the CLI."""

    def __init__(
        self, cfg: config.Config, data_dir: Path, *, monitor_source: str | None = None
    ) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.usb = cfg.drive.mode == "usb"
        self.mount_point = cfg.drive_path(data_dir)
        self._monitor_source = monitor_source
        self._drive: Drive | None = None
        self._state = DriveState("absent", path=str(self.mount_point), reason="not started")
        self._devices: dict[str, _Device] = {}  # devnode -> what it is
        self._current = ""  # devnode of the drive in use
        self._current_disk = ""  # the whole disk it is a partition of, if it is one
        self._remembered: Remembered | None = None
        self._lock = asyncio.Lock()
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._monitor: Any = None
        self._probe_fs = True  # kernel events carry no ID_FS_*: ask blkid

    # -- DriveControl --------------------------------------------------------------------

    def drive(self) -> Drive | None:
        return self._drive

    def state(self) -> DriveState:
        st = self._state
        if st.state == "online":
            with contextlib.suppress(OSError):
                vfs = os.statvfs(self.mount_point)
                st = replace(
                    st, total=vfs.f_blocks * vfs.f_frsize, free=vfs.f_bavail * vfs.f_frsize
                )
        return st

    def candidates(self) -> list[Candidate]:
        out = []
        for devnode, dev in sorted(self._devices.items()):
            c = dev.candidate
            out.append(replace(c, in_use=bool(self._current) and devnode == self._current))
        return out

    async def adopt(self, candidate_id: str) -> DriveState:
        self._need_usb("adopt")
        async with self._lock:
            dev = self._find(candidate_id)
            c = dev.candidate
            if self._in_use_check(c):
                return self.state()
            if c.kind != "letterbox":
                raise DriveActionError(
                    f"{c.describe()} is not a Letterbox drive ({c.kind}); "
                    "format it to use it for mail"
                )
            self._not_mounted(c)
            await self._online(c.devnode, dev.fs_uuid, expect="", create=False, remember=True)
            if self._state.state != "online":
                raise DriveActionError(self._state.reason)
            return self.state()

    async def format(self, candidate_id: str, confirm: str) -> DriveState:
        self._need_usb("format")
        async with self._lock:
            dev = self._find(candidate_id)
            c = dev.candidate
            if confirm != c.devnode:
                raise DriveActionError(
                    f"not erased: to erase {c.describe()}, confirm with its device name "
                    f"{c.devnode} exactly"
                )
            if self._in_use_check(c, erase=True):
                raise AssertionError("unreachable")
            self._not_mounted(c)
            log.warning("formatting %s at a person's request", c.describe())
            try:
                await asyncio.to_thread(privileged.mkfs_ext4, c.devnode)
                props = await asyncio.to_thread(privileged.probe, c.devnode)
            except privileged.PrivilegedError as exc:
                raise DriveActionError(f"formatting {c.devnode} failed: {exc}") from None
            fs_uuid = props.get("ID_FS_UUID", "")
            await self._online(c.devnode, fs_uuid, expect="", create=True, remember=True)
            if self._state.state != "online":
                raise DriveActionError(self._state.reason)
            await self._rescan(c.devnode)
            return self.state()

    # -- the appliance's side ----------------------------------------------------------

    async def start(self) -> None:
        """Directory mode: open the drive now. USB mode: watch, then look for our drive."""
        if not self.usb:
            await self._open_directory()
            return
        from letterbox.usb.monitor import BlockMonitor, default_source, present

        source = self._monitor_source or default_source()
        self._probe_fs = source == "kernel"
        self._remembered = load_remembered(self.data_dir)
        if self._remembered is None:
            self._state = DriveState(
                "absent",
                path=str(self.mount_point),
                reason="no drive chosen yet: adopt or format one on the setup page",
            )
        else:
            self._state = DriveState(
                "offline",
                drive_id=self._remembered.drive_id,
                path=str(self.mount_point),
                reason=f"waiting for the box's drive {self._describe_remembered()}",
            )
        self._monitor = BlockMonitor(self._events.put_nowait, source=source)
        self._monitor.start()  # before listing, so nothing plugged in between is missed
        for event in await asyncio.to_thread(lambda: list(present(self._monitor.context))):
            await self._handle(event)
        self._worker = asyncio.create_task(self._work(), name="letterbox-usb-events")

    async def stop(self) -> None:
        """Close the drive cleanly (and unmount it, so the stick may be pulled)."""
        if self._monitor is not None:
            self._monitor.stop()
        for task in (self._worker, self._health):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        async with self._lock:
            drive, self._drive = self._drive, None
            if drive is not None:
                await asyncio.to_thread(_close_quietly, drive)
                log.info("drive closed cleanly")
            if self.usb and self._current:
                await self._unmount(lazy=False)
            self._current = ""

    def report_io_error(self, exc: BaseException) -> None:
        """A listener saw the drive fail (DriveUnavailable from an EIO, ENODEV, EROFS…).

        Called on the event loop. One failed write is not proof (the error may
        belong to a drive already being closed), so a health check decides: a
        read-only remount (errors=remount-ro), a missing device or a failing
        write-and-fsync takes the drive offline.
        """
        if self._drive is None or (self._health is not None and not self._health.done()):
            return
        log.warning("drive error reported: %s; checking the drive", exc)
        self._health = asyncio.create_task(self._check_health(), name="letterbox-drive-health")

    # -- internals ---------------------------------------------------------------------

    async def _open_directory(self) -> None:
        try:
            drive = await asyncio.to_thread(state.open_drive, self.cfg, self.data_dir)
        except DriveError as exc:
            log.error("drive unavailable (%s); SMTP answers 451 until it is back", exc)
            self._state = DriveState("offline", path=str(self.mount_point), reason=str(exc))
            return
        await self._set_online(drive, "")

    async def _set_online(self, drive: Drive, devnode: str) -> None:
        self._drive = drive
        self._current = devnode
        self._current_disk = _disk_of(devnode)
        self._state = DriveState(
            "online", drive_id=drive.identity.drive_id, path=str(self.mount_point), device=devnode
        )
        stats = await asyncio.to_thread(drive.stats)  # table counts: off the loop
        log.info(
            "drive %s online at %s%s: %s mailboxes, %s messages",
            stats["drive_id"],
            self.mount_point,
            f" ({devnode})" if devnode else "",
            stats["mailboxes"],
            stats["deliveries"],
        )

    def _need_usb(self, what: str) -> None:
        if not self.usb:
            raise DriveActionError(
                f"nothing to {what}: the drive is the directory {self.mount_point} "
                '(drive.mode = "directory")'
            )

    def _find(self, candidate_id: str) -> _Device:
        for devnode, dev in self._devices.items():
            if candidate_id in (dev.candidate.id, devnode):
                return dev
        raise DriveActionError(
            f"no drive {candidate_id!r} is plugged in (see `letterbox drive candidates`)"
        )

    def _in_use_check(self, c: Candidate, *, erase: bool = False) -> bool:
        """True when `c` is the drive in use (adopting it again changes nothing)."""
        if self._state.state != "online":
            return False
        if c.devnode == self._current:
            if erase:
                raise DriveActionError(
                    f"{c.devnode} is the box's drive in use: refusing to erase it"
                )
            return True
        raise DriveActionError(
            f"the box is using drive {self._state.drive_id} on {self._current}; "
            "unplug it before choosing another"
        )

    def _not_mounted(self, c: Candidate) -> None:
        used = privileged.mounts_of(c.devnode)
        if used:
            raise DriveActionError(
                f"{c.devnode} is in use (mounted at {', '.join(used)}): refusing"
            )

    def _describe_remembered(self) -> str:
        r = self._remembered
        if r is None:
            return ""
        return f"{r.drive_id}" + (f" ({r.description})" if r.description else "")

    async def _work(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("handling a block device event failed")

    async def _handle(self, event: Any) -> None:
        devnode: str = event.devnode
        if not devnode:
            return
        if event.action == "remove" or event.size == 0:
            self._devices.pop(devnode, None)
            gone = self._current and devnode in (self._current, self._current_disk)
            if gone and self._drive is not None:
                async with self._lock:
                    await self._offline(f"the drive ({self._current}) was removed")
            return
        props = dict(event.props)
        allow = self.cfg.drive.allow_loop
        if classify(props, size=event.size, allow_loop=allow) is None:
            return  # never a candidate: not USB, optical, a system disk…
        if self._probe_fs and devnode != self._current:
            with contextlib.suppress(privileged.PrivilegedError):
                props.update(await asyncio.to_thread(privileged.probe, devnode))
        drive_id = ""
        if props.get("ID_FS_TYPE") == "ext4" and devnode != self._current:
            drive_id = await asyncio.to_thread(privileged.read_drive_id, devnode)
        c = classify(props, size=event.size, allow_loop=allow, drive_id=drive_id)
        if c is None:
            self._devices.pop(devnode, None)
            return
        fs_uuid = props.get("ID_FS_UUID", "")
        self._devices[devnode] = _Device(c, fs_uuid)
        async with self._lock:
            await self._maybe_return(c, fs_uuid)

    async def _maybe_return(self, c: Candidate, fs_uuid: str) -> None:
        """The box is waiting for its drive: is this it? If not, say what it is."""
        r = self._remembered
        if r is None or self._drive is not None or c.kind != "letterbox":
            return
        if fs_uuid and fs_uuid == r.fs_uuid and (not c.drive_id or c.drive_id == r.drive_id):
            log.info("the box's drive is back on %s", c.devnode)
            await self._online(c.devnode, fs_uuid, expect=r.drive_id, create=False, remember=False)
            return
        self._state = replace(
            self._state,
            reason=(
                f"{c.describe()} is a different Letterbox drive "
                f"({c.drive_id or 'identity unknown'}); the box waits for its own drive "
                f"{self._describe_remembered()}. Adopt the other one to switch to it."
            ),
        )
        log.warning("%s", self._state.reason)

    async def _online(
        self, devnode: str, fs_uuid: str, *, expect: str, create: bool, remember: bool
    ) -> None:
        """Mount `devnode`, open the drive (recovery runs), check its identity."""
        if os.path.ismount(self.mount_point):
            await self._unmount(lazy=True)  # a stale mount of a drive that vanished
        reason = ""
        try:
            await asyncio.to_thread(privileged.mount, devnode, self.mount_point)
        except privileged.PrivilegedError as exc:
            reason = f"cannot mount {devnode}: {exc}"
        drive: Drive | None = None
        if not reason:
            try:
                drive = await asyncio.to_thread(
                    state.open_drive, self.cfg, self.data_dir, create=create
                )
            except DriveError as exc:
                reason = f"{devnode}: {exc}"
        if drive is not None and expect and drive.identity.drive_id != expect:
            reason = (
                f"{devnode} holds drive {drive.identity.drive_id}, not the box's drive {expect}"
            )
            await asyncio.to_thread(_close_quietly, drive)
            drive = None
        if drive is None:
            if not reason.startswith("cannot mount"):
                with contextlib.suppress(privileged.PrivilegedError):
                    await asyncio.to_thread(privileged.unmount, self.mount_point)
            log.error("%s", reason)
            self._state = replace(self._state, reason=reason)
            return
        if remember:
            dev = self._devices.get(devnode)
            self._remembered = Remembered(
                drive.identity.drive_id,
                fs_uuid,
                dev.candidate.describe() if dev else devnode,
            )
            await asyncio.to_thread(save_remembered, self.data_dir, self._remembered)
        await self._set_online(drive, devnode)

    async def _offline(self, reason: str) -> None:
        """Stop taking mail at once, then close the drive and let go of the mount."""
        drive, self._drive = self._drive, None  # from now on: 451 / [SYS/TEMP]
        self._state = DriveState(
            "offline",
            drive_id=self._remembered.drive_id if self._remembered else "",
            path=str(self.mount_point),
            device=self._current,
            reason=reason,
        )
        log.error("drive offline: %s; SMTP answers 451 until it is back", reason)
        if drive is not None:
            # Not a clean close: a failing drive must be reconciled (orphan blobs,
            # half-made files) when it is next opened, so its open marker stays.
            await asyncio.to_thread(_close_quietly, drive, clean=False)
        if self.usb:
            await self._unmount(lazy=True)
        self._current = ""

    async def _unmount(self, *, lazy: bool) -> None:
        if not os.path.ismount(self.mount_point):
            return
        try:
            await asyncio.to_thread(privileged.unmount, self.mount_point, lazy=lazy)
        except privileged.PrivilegedError as exc:
            log.error("cannot unmount %s: %s", self.mount_point, exc)

    async def _check_health(self) -> None:
        problem = await asyncio.to_thread(_health_problem, self.mount_point, self._current)
        if problem and self._drive is not None:
            async with self._lock:
                if self.usb:
                    await self._offline(f"the drive failed: {problem}")
                else:  # a directory cannot be replugged: keep trying, say why
                    log.error("the drive directory failed: %s", problem)

    async def _rescan(self, devnode: str) -> None:
        """Refresh one device's entry after we changed it (mkfs emits no kernel event)."""
        dev = self._devices.get(devnode)
        if dev is None:
            return
        props = await asyncio.to_thread(privileged.probe, devnode)
        c = dev.candidate
        self._devices[devnode] = _Device(
            replace(
                c,
                kind="letterbox",
                fs_type=props.get("ID_FS_TYPE", "ext4"),
                label=props.get("ID_FS_LABEL", ""),
                drive_id=self._state.drive_id,
                id=f"uuid-{props['ID_FS_UUID']}" if c.id.startswith("uuid-") else c.id,
            ),
            props.get("ID_FS_UUID", ""),
        )


def _disk_of(devnode: str) -> str:
    """/dev/sdb for /dev/sdb1 (sysfs puts a partition inside its disk), else ""."""
    if not devnode:
        return ""
    sys_dir = Path("/sys/class/block") / Path(devnode).name
    if not (sys_dir / "partition").exists():
        return ""
    return f"/dev/{sys_dir.resolve().parent.name}"


def _close_quietly(drive: Drive, *, clean: bool = True) -> None:
    """Close a drive whose device may be gone: what could be flushed is; errors are logged."""
    try:
        if clean:
            drive.close()
        else:
            drive.abandon()
    except (OSError, sqlite3.Error, DriveError) as exc:
        log.warning("closing the drive: %s", exc)


def _health_problem(mount_point: Path, devnode: str) -> str:
    """Empty when the drive takes a durable write, else what is wrong with it."""
    if devnode and not os.path.exists(devnode):
        return f"{devnode} is gone"
    if privileged.is_mount_read_only(mount_point):
        return "the filesystem went read-only after an error"
    probe = mount_point / "letterbox" / ".health"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"a test write failed: {exc.strerror or exc}"
    return ""

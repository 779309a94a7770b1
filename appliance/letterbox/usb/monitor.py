"""Block device events from the kernel/udev, delivered on the asyncio loop (pyudev).

The netlink socket of a `pyudev.Monitor` is read from the event loop itself
(`loop.add_reader(monitor.fileno())` + `monitor.poll(0)` until it runs dry), so no
thread is involved and events arrive in order (docs/findings.md, "pyudev").

Source: udev's events (after its rules ran, with ID_BUS, ID_FS_*) where udevd
runs, which is the appliance; the kernel's own where it does not (containers, CI),
and those lack every ID_* property: the manager then probes the device with
blkid (privileged.probe). A synthetic event (`echo "add $(uuid) IDBUS=usb" >
/sys/block/loop0/uevent`, see the kernel's Documentation/ABI/testing/sysfs-uevent)
carries its arguments as SYNTH_ARG_*; the kernel takes only alphanumeric keys and values
(lib/kobject_uevent.c), so `ID_BUS=usb` is refused with EINVAL and tests write
IDBUS. For loop devices, where that is how tests stand in for udev's rules,
`properties` maps SYNTH_ARG_IDBUS and friends (SYNTH_ALIASES) to udev's names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyudev

from letterbox.usb.classify import is_loop

log = logging.getLogger("letterbox.usb")

UDEV_CONTROL = Path("/run/udev/control")  # exists while systemd-udevd runs
# Synthetic-event argument → the udev property it stands for (loop devices only).
SYNTH_ALIASES = {
    "SYNTH_ARG_IDBUS": "ID_BUS",
    "SYNTH_ARG_IDVENDOR": "ID_VENDOR",
    "SYNTH_ARG_IDMODEL": "ID_MODEL",
    "SYNTH_ARG_IDSERIAL": "ID_SERIAL",
}


@dataclass(frozen=True)
class BlockEvent:
    """One block device as an event saw it: `add`, `change`, `remove`, or `present`
    for a device found when the monitor started."""

    action: str
    props: Mapping[str, str]
    size: int  # bytes, 0 when gone or empty
    sys_path: str = ""
    synthetic: bool = field(default=False)

    @property
    def devnode(self) -> str:
        name = self.props.get("DEVNAME", "")
        return name if not name or name.startswith("/dev/") else f"/dev/{name}"


def default_source() -> str:
    return "udev" if UDEV_CONTROL.exists() else "kernel"


def properties(device: pyudev.Device) -> dict[str, str]:
    """The device's udev properties; for a loop device, SYNTH_ALIASES applied."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    if is_loop(props):
        for synth, name in SYNTH_ALIASES.items():
            if synth in props:
                props[name] = props[synth]
    return props


def size_of(sys_path: str) -> int:
    """Bytes, from sysfs (`size` counts 512-byte sectors whatever the block size)."""
    try:
        return int(Path(sys_path, "size").read_text()) * 512
    except (OSError, ValueError):
        return 0


def _event(action: str, device: pyudev.Device) -> BlockEvent:
    props = properties(device)
    return BlockEvent(
        action=action,
        props=props,
        size=0 if action == "remove" else size_of(device.sys_path),
        sys_path=device.sys_path,
        synthetic="SYNTH_UUID" in props,
    )


def present(context: pyudev.Context | None = None) -> Iterator[BlockEvent]:
    """Every block device there is now, as `present` events."""
    context = context or pyudev.Context()
    for device in context.list_devices(subsystem="block"):
        yield _event("present", device)


class BlockMonitor:
    """Calls `on_event(BlockEvent)` on the loop for every block device event."""

    def __init__(self, on_event: Callable[[BlockEvent], None], *, source: str | None = None):
        self._on_event = on_event
        self.source = source or default_source()
        self.context = pyudev.Context()
        self._monitor: pyudev.Monitor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        monitor = pyudev.Monitor.from_netlink(self.context, source=self.source)
        monitor.filter_by(subsystem="block")
        monitor.start()
        self._monitor = monitor
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(monitor.fileno(), self._readable)
        log.info("watching block devices (%s events)", self.source)

    def _readable(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        while True:
            try:
                device = monitor.poll(0)
            except (OSError, pyudev.DeviceNotFoundError) as exc:
                log.warning("block device event unreadable: %s", exc)
                return
            if device is None:
                return
            try:
                self._on_event(_event(device.action or "change", device))
            except Exception:
                log.exception("handling a block device event failed")

    def stop(self) -> None:
        if self._monitor is not None and self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
            # pyudev has no close(): dropping the last reference closes the socket.
            self._monitor = None

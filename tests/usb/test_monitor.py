"""The asyncio monitor on real kernel events: loop devices attached, partitioned, detached,
and synthetic uevents standing in for udev's USB properties.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

from letterbox.usb.classify import classify
from letterbox.usb.monitor import BlockEvent, BlockMonitor, present

from tests.usb.conftest import Loops, sh, synth


async def wait_for(
    events: list[BlockEvent], match: Callable[[BlockEvent], bool], timeout: float = 5.0
) -> BlockEvent:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for e in events:
            if match(e):
                return e
        assert loop.time() < deadline, [(e.action, e.devnode, e.size) for e in events]
        await asyncio.sleep(0.02)


def test_attach_partition_synthetic_and_detach_events(loops: Loops) -> None:
    img = loops.image("parted.img", "32M")
    subprocess.run(
        ["sfdisk", "-q", str(img)], input="label: dos\nstart=2048, type=83\n", text=True, check=True
    )

    async def main() -> None:
        events: list[BlockEvent] = []
        monitor = BlockMonitor(events.append, source="kernel")
        monitor.start()
        try:
            dev = loops.attach(img)
            attached = await wait_for(events, lambda e: e.devnode == dev and e.size > 0)
            assert attached.action == "change" and attached.size == 32 << 20
            assert attached.props["DEVTYPE"] == "disk"
            assert classify(attached.props, size=attached.size) is None  # loop: not by default
            assert classify(attached.props, size=attached.size, allow_loop=True) is not None

            sh("partx", "-a", dev)  # the partition nodes, as a USB stick's would appear
            part = await wait_for(events, lambda e: e.devnode == f"{dev}p1" and e.action == "add")
            assert part.props["DEVTYPE"] == "partition" and part.props["PARTN"] == "1"
            assert 0 < part.size < 32 << 20
            assert any(e.devnode == f"{dev}p1" for e in present(monitor.context))

            # What udev's rules would have added on the appliance, via the kernel.
            synth(dev, "add", "IDBUS=usb", "IDVENDOR=SanDisk", "IDMODEL=CruzerBlade")
            usb = await wait_for(events, lambda e: e.synthetic and e.devnode == dev)
            assert usb.action == "add" and usb.props["ID_BUS"] == "usb"
            c = classify(usb.props, size=usb.size, allow_loop=True)
            assert c is not None and c.bus == "usb" and c.model == "SanDisk CruzerBlade"

            synth(f"{dev}p1", "remove")
            await wait_for(events, lambda e: e.devnode == f"{dev}p1" and e.action == "remove")
            sh("partx", "-d", dev)
            loops.detach(dev)
            gone = await wait_for(
                events, lambda e: e.devnode == dev and e.size == 0 and e is not attached
            )
            assert gone.action in ("change", "remove")
        finally:
            monitor.stop()

    asyncio.run(main())
    assert Path(img).exists()

"""USB drives: finding them (pyudev), classifying, mounting and formatting them.

See docs/design.md, "The drive" (USB drives) for how the box goes online and offline.

manager.py     DriveManager: which drive the box uses, online or offline, adopt and format
model.py       what the rest of the box sees: DriveControl, DriveState, Candidate (no pyudev)
monitor.py     block device events from udev or the kernel, on the event loop
classify.py    which block devices could be the drive: a pure function of udev properties
privileged.py  mount, unmount, mkfs.ext4, blkid and debugfs probes: the only root code
commands.py    drive.candidates, drive.adopt, drive.format on the control socket
"""

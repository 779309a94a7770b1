"""Boot a built image in QEMU: `python -m image.qemu qemu-x86_64` (what `make qemu` runs).

The kernel and initrd are read from the image's boot partition with mtools and booted
directly (no firmware to emulate), the disk is virtio, the network is user-mode with the
box's ports forwarded to 127.0.0.1, and an emulated USB stick on an xHCI controller
stands in for the household's drive, so the guest sees a real USB block device through
udev. The image file itself is never written: the VM writes to a qcow2 overlay (which
may be larger than the image, so first boot's root growing is exercised too).

The same class drives the slow image test: serial console to a file, a QMP socket for
a clean ACPI power-down.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from image import boards, partitions
from image.boards import Board

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
# Guest port → the default host port (docs/design.md, "Ports": the --dev ones).
GUEST_PORTS = {"smtp": 25, "pop3": 110, "pop3s": 995, "web": 80, "ssh": 22}
DEFAULT_HOST_PORTS = {"smtp": 2525, "pop3": 1110, "pop3s": 1995, "web": 8080, "ssh": 2222}
STICK_SIZE = 1 << 30


class QemuError(RuntimeError):
    pass


@dataclass
class QemuVM:
    board: Board
    image: Path
    workdir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_HOST_PORTS))
    disk_size: int | None = None  # overlay size; None: the image's size
    memory: str = "1024"
    accel: str = "tcg"
    serial_file: Path | None = None  # None: the console is this terminal
    fresh: bool = True  # a new overlay and a blank stick (else reuse those in workdir)
    process: subprocess.Popen[bytes] | None = None

    @property
    def overlay(self) -> Path:
        return self.workdir / f"disk-{self.board.name}.qcow2"

    @property
    def stick(self) -> Path:
        return self.workdir / f"usb-stick-{self.board.name}.img"

    @property
    def qmp_path(self) -> Path:
        return self.workdir / f"qmp-{self.board.name}.sock"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("vmlinuz", "initrd.img"):
            partitions.extract_boot_file(self.image, name, self.workdir / name)
        stale = self.overlay.exists() and self.overlay.stat().st_mtime < self.image.stat().st_mtime
        if self.fresh or stale or not self.overlay.exists():
            self.overlay.unlink(missing_ok=True)
            size = self.disk_size or self.image.stat().st_size
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(self.image.resolve()),
                    str(self.overlay),
                    str(size),
                ],
                check=True,
            )
        if self.fresh or stale or not self.stick.exists():
            # A blank, sparse stick: the box offers to format it.
            self.stick.unlink(missing_ok=True)
            with open(self.stick, "wb") as fh:
                fh.truncate(STICK_SIZE)

    def command(self) -> list[str]:
        b = self.board
        fwd = ",".join(
            f"hostfwd=tcp:127.0.0.1:{self.ports[k]}-:{GUEST_PORTS[k]}" for k in self.ports
        )
        cmdline = f"root=LABEL=root rootwait console={b.console_device} panic=-1 net.ifnames=0"
        if b.architecture == "amd64":
            cmd = ["qemu-system-x86_64", "-machine", "q35"]
        else:
            cmd = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72"]
        cmd += ["-accel", self.accel, "-m", self.memory, "-smp", "2", "-display", "none"]
        cmd += ["-no-reboot", "-kernel", str(self.workdir / "vmlinuz")]
        cmd += ["-initrd", str(self.workdir / "initrd.img"), "-append", cmdline]
        cmd += ["-drive", f"file={self.overlay},format=qcow2,if=virtio"]
        cmd += ["-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0"]
        cmd += ["-device", "qemu-xhci", "-drive", f"if=none,id=stick,format=raw,file={self.stick}"]
        cmd += ["-device", "usb-storage,drive=stick"]
        cmd += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if self.serial_file is None:
            cmd += ["-serial", "mon:stdio"]
        else:
            cmd += ["-serial", f"file:{self.serial_file}", "-monitor", "none"]
        return cmd

    def start(self) -> None:
        self.prepare()
        self.qmp_path.unlink(missing_ok=True)
        if self.serial_file is not None:
            self.serial_file.write_bytes(b"")
        # With the console in the terminal, QEMU reads the keyboard; otherwise nothing.
        stdin = None if self.serial_file is None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdin=stdin)

    def serial_text(self) -> str:
        assert self.serial_file is not None
        return self.serial_file.read_bytes().decode("utf-8", "replace")

    def wait_for_serial(self, pattern: str, timeout: float) -> re.Match[str]:
        """Poll the serial log until `pattern` appears; fail early if QEMU exits."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.serial_text())
            if m:
                return m
            if self.process is not None and self.process.poll() is not None:
                raise QemuError(f"QEMU exited ({self.process.returncode}) before {pattern!r}")
            if time.monotonic() > deadline:
                raise QemuError(f"no {pattern!r} on the serial console within {timeout:.0f} s")
            time.sleep(0.5)

    def qmp(self, command: str) -> dict[str, object]:
        """One QMP command (QEMU Machine Protocol: greeting, qmp_capabilities, command)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def powerdown(self, timeout: float = 120) -> int:
        """ACPI power button (the guest's systemd shuts down cleanly); wait for QEMU."""
        assert self.process is not None
        self.qmp("system_powerdown")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise QemuError(f"the guest did not power off within {timeout:.0f} s") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Boot a built Letterbox image in QEMU.")
    parser.add_argument("board", nargs="?", default="qemu-x86_64")
    parser.add_argument("--accel", default=os.environ.get("QEMU_ACCEL", "tcg"))
    parser.add_argument("--fresh", action="store_true", help="start from the image again")
    for name, port in DEFAULT_HOST_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    args = parser.parse_args(argv)
    board = boards.load(args.board)
    if board.boot_method != "direct-kernel":
        print(f"qemu: {board.name} boots through Pi firmware; use qemu-x86_64 or qemu-aarch64")
        return 1
    image = BUILD / f"letterbox-{board.name}.img"
    if not image.exists():
        print(f"qemu: {image} is missing: run `make image BOARD={board.name}` first")
        return 1
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_HOST_PORTS}
    vm = QemuVM(board, image, BUILD / "qemu", ports=ports, accel=args.accel, fresh=args.fresh)
    if shutil.which(vm.command()[0]) is None:
        print(f"qemu: {vm.command()[0]} is missing: `make qemu` installs it")
        return 1
    print("Letterbox in QEMU. Forwarded to 127.0.0.1:")
    for name, port in ports.items():
        print(f"  {name:6} {port} -> {GUEST_PORTS[name]}")
    print(f"The box keeps its disk and USB stick in {vm.workdir} (--fresh starts over).")
    print("Quit: Ctrl-A then X (or `poweroff` in the guest).\n", flush=True)
    vm.start()
    assert vm.process is not None
    return vm.process.wait()


if __name__ == "__main__":
    sys.exit(main())

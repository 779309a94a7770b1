"""Build a Letterbox image for one board: `python -m image.build rpi4`.

Steps (each prints its elapsed time): wheels for the board's architecture on the host →
Debian root filesystem with mmdebstrap (apt cache kept under build/cache/) → the project
installed offline into /opt/letterbox inside it → boot and root filesystems made from
directories, without mounting anything → partitions written into one image file at
fixed offsets → manifest (every Debian and Python package version, and a hash of the
inputs) → compressed copy and SHA256SUMS.

An image whose manifest records the same input hash is reused, so the QEMU test does
not rebuild an unchanged image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from letterbox import tomlwrite

from image import boards, partitions
from image.boards import Board

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
MIRROR = os.environ.get("LETTERBOX_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("LETTERBOX_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
COMPONENTS = "main non-free-firmware"  # raspi-firmware and Wi-Fi firmware are non-free-firmware
# What every board's root filesystem holds besides the kernel and firmware.
BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "systemd-timesyncd",
    "udev",
    "kmod",
    "iproute2",
    "python3",
    "python3-venv",
    "ca-certificates",
    "tzdata",
    "e2fsprogs",  # mkfs.ext4 for the USB drive, resize2fs at first boot
    "fdisk",  # sfdisk: grow the root partition at first boot
    "openssh-server",  # off unless letterbox.toml carries a key
    "initramfs-tools",
    "zstd",
]
PYTHON_PLATFORMS = {
    "amd64": "x86_64",
    "arm64": "aarch64",
}
# Debian bookworm has glibc 2.36: any manylinux wheel up to 2_36 runs there.
_GLIBC = (36, 34, 31, 28, 27, 26, 24, 17, 12, 5)
INPUTS = [
    "image",
    "provisioning",
    "appliance/letterbox",
    "appliance/systemd",
    "requirements.txt",
    "pyproject.toml",
]


class BuildError(RuntimeError):
    pass


class Progress:
    """`[3/8] rootfs ... 41.2 s (total 1:02)`: what is happening and how long it took."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.start = total, 0, time.monotonic()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.n += 1
        print(f"==> [{self.n}/{self.total}] {what}", flush=True)
        t0 = time.monotonic()
        yield
        took, total = time.monotonic() - t0, time.monotonic() - self.start
        print(
            f"==> [{self.n}/{self.total}] {what}: done in {took:.1f} s "
            f"(total {int(total) // 60}:{int(total) % 60:02d})",
            flush=True,
        )


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{shlex.join(cmd[:3])}... failed (exit {exc.returncode})") from None


def inputs_hash(board: Board) -> str:
    """A hash of every file the image is made from (board config, build code, project)."""
    h = hashlib.sha256()
    paths = [boards.CONFIG_DIR / f"{board.name}.toml"]
    for name in INPUTS:
        p = REPO / name
        if p.is_dir():
            paths += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
            )
        elif p.exists():
            paths.append(p)
    for f in paths:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def outputs(board: Board) -> dict[str, Path]:
    stem = BUILD / f"letterbox-{board.name}"
    return {
        "image": stem.with_suffix(".img"),
        "manifest": stem.with_suffix(".manifest.json"),
        "work": BUILD / f"work-{board.name}",
    }


def is_current(board: Board) -> bool:
    out = outputs(board)
    if not out["image"].exists() or not out["manifest"].exists():
        return False
    try:
        manifest = json.loads(out["manifest"].read_text())
    except ValueError:
        return False
    return manifest.get("inputs_sha256") == inputs_hash(board)


def check_host(board: Board) -> None:
    if os.geteuid() != 0:
        raise BuildError("building an image needs root (mmdebstrap --mode=root); run as root")
    for tool in ("mmdebstrap", "mkfs.vfat", "mcopy", "mkfs.ext4", "sfdisk"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: run `make image` (it installs the host tools)")
    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if board.architecture != host:
        # qemu-user runs the new root's maintainer scripts; binfmt_misc must be mounted
        # and the interpreter enabled, or mmdebstrap fails deep inside the build.
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False)
        interp = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}[board.architecture]
        subprocess.run(["update-binfmts", "--enable", interp], check=False)
        if not (binfmt / interp).exists():
            raise BuildError(f"binfmt_misc has no {interp}: install qemu-user-static")


def fetch_wheels(board: Board, wheels: Path) -> None:
    """The project's wheel and every pinned dependency's wheel for the target: the image
    installs offline, and no compiler is needed on the board or in the build.

    Two passes: `pip wheel` on the host gets (or builds, for sdist-only packages such as
    sdnotify) every pinned requirement; the ones that are not pure Python are then
    fetched again as binary wheels for the board's platform.
    """
    cache = BUILD / "cache" / f"wheels-{board.architecture}"
    host = cache / "host"
    host.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    reqs = str(REPO / "requirements.txt")
    run([*pip, "wheel", "--no-deps", "-r", reqs, "-w", str(host)])
    pinned = [
        line.split("#")[0].strip()
        for line in Path(reqs).read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    pure, native = [], []
    for req in pinned:
        name, version = req.split("==")
        norm = name.lower().replace("-", "_")
        found = [w for w in host.glob("*.whl") if w.name.lower().startswith(f"{norm}-{version}-")]
        if found and all(w.name.endswith("-none-any.whl") for w in found):
            pure.extend(found)
        else:
            native.append(req)
    target = cache / "target"
    target.mkdir(exist_ok=True)
    if native:
        arch = PYTHON_PLATFORMS[board.architecture]
        plat = [a for g in _GLIBC for a in ("--platform", f"manylinux_2_{g}_{arch}")]
        abis = ["--abi", "cp311", "--abi", "abi3", "--abi", "none"]
        run(
            [
                *pip,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                *plat,
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                *abis,
                "-d",
                str(target),
                *native,
            ]
        )
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    for w in [*pure, *target.glob("*.whl")]:
        shutil.copy2(w, wheels / w.name)
    # From a copy of the sources: setuptools would otherwise keep its build/lib under the
    # repository's build/ (our output directory), with stale modules from earlier builds.
    src = wheels.parent / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "appliance", src / "appliance", ignore=ignore)
    run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)])
    shutil.rmtree(src)


def stage(board: Board, work: Path) -> tuple[Path, Path]:
    """Two trees copied into the new root: `early` (before packages are installed) and
    `late` (after), and the build directory that setup-rootfs.sh reads."""
    early, late = work / "early", work / "late"
    for d in (early, late):
        if d.exists():
            shutil.rmtree(d)
    shutil.copytree(REPO / "image/overlay", late, symlinks=True)
    # The initrd settings must be in place before the kernel package triggers the initrd.
    shutil.copytree(REPO / "image/overlay/etc/initramfs-tools", early / "etc/initramfs-tools")
    (early / "etc/initramfs-tools/letterbox-modules").write_text(
        "".join(f"{m}\n" for m in board.initrd_modules)
    )
    (late / "etc/initramfs-tools/letterbox-modules").write_text(
        "".join(f"{m}\n" for m in board.initrd_modules)
    )
    units = late / "etc/systemd/system"
    enable = ["letterbox-ready.service", "letterbox-firstboot.service"]
    shipped = sorted((REPO / "appliance/systemd").glob("*.*"))
    if not any(u.name == "letterbox.service" for u in shipped):
        raise BuildError("appliance/systemd/letterbox.service is missing")
    for unit in shipped:
        shutil.copy2(unit, units / unit.name)
        if unit.suffix in (".service", ".socket", ".timer", ".path"):
            enable.append(unit.name)
    shutil.copy2(REPO / "provisioning/letterbox-firstboot.service", units)
    dropin = units / "letterbox.service.d"
    dropin.mkdir(parents=True)
    (dropin / "board.conf").write_text(
        f"# Memory caps for {board.name} ({board.ram.human()} RAM), from board-configs/.\n"
        f"[Service]\nMemoryHigh={board.memory_high}\nMemoryMax={board.memory_max}\n"
    )
    conf = boards.appliance_config(board)
    header = f"Letterbox settings for {board.name}. Written by the image build and first boot."
    (late / "etc/letterbox").mkdir(parents=True)
    (late / "etc/letterbox/letterbox.toml").write_text(tomlwrite.dumps(conf, header))
    (late / "boot/firmware").mkdir(parents=True)
    shutil.copy2(REPO / "provisioning/letterbox.toml", late / "boot/firmware/letterbox.toml")
    share = late / "opt/letterbox/share/provisioning"
    share.mkdir(parents=True)
    for f in (REPO / "provisioning").glob("*.py"):
        shutil.copy2(f, share / f.name)

    tmp = late / "tmp/letterbox-build"
    tmp.mkdir(parents=True)
    shutil.copy2(REPO / "image/setup-rootfs.sh", tmp)
    shutil.copy2(REPO / "requirements.txt", tmp)
    cmdline = f"root=LABEL=root rootwait console={board.console} panic=10"
    env = {
        "BOOT_METHOD": board.boot_method,
        "CONSOLE": board.console,
        "CMDLINE": cmdline,
        "UNITS_TO_ENABLE": " ".join(enable),
    }
    (tmp / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    return early, late


def mmdebstrap(board: Board, work: Path, early: Path, late: Path) -> Path:
    rootfs = work / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    cache = BUILD / "cache" / f"apt-{board.architecture}"
    cache.mkdir(parents=True, exist_ok=True)
    kernel = list(board.kernel)
    if board.kernel_suite != board.suite:
        kernel = [f"{k}/{board.kernel_suite}" for k in kernel]
    include = BASE_PACKAGES + kernel + list(board.firmware)
    sources = [
        f"deb {MIRROR} {board.suite} {COMPONENTS}",
        f"deb {MIRROR} {board.suite}-updates {COMPONENTS}",
        f"deb {SECURITY} {board.suite}-security {COMPONENTS}",
    ]
    if board.kernel_suite != board.suite:
        sources.append(f"deb {MIRROR} {board.kernel_suite} {COMPONENTS}")
    q = shlex.quote
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        f"--architectures={board.architecture}",
        f"--include={','.join(include)}",
        "--aptopt=Acquire::Retries=3",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives',
        f"--setup-hook=sync-in {q(str(cache))} /var/cache/apt/archives/",
        f'--essential-hook=cp -a {q(str(early))}/. "$1"/',
        # One initrd at the end instead of one per package that triggers it.
        '--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename '
        '--add /usr/sbin/update-initramfs && ln -s /bin/true "$1"/usr/sbin/update-initramfs',
        f'--customize-hook=cp -a {q(str(late))}/. "$1"/',
        '--customize-hook=chroot "$1" /bin/sh /tmp/letterbox-build/setup-rootfs.sh',
        f'--customize-hook=cp "$1"/tmp/letterbox-build/*-packages.txt {q(str(work))}/',
        '--customize-hook=rm -rf "$1"/tmp/letterbox-build',
        f"--customize-hook=sync-out /var/cache/apt/archives {q(str(cache))}",
        board.suite,
        str(rootfs),
        *sources,
    ]
    run(cmd)
    return rootfs


def check_boot_files(board: Board, bootfs: Path) -> None:
    """Refuse an image that cannot boot: the boot partition must hold what the board's
    boot method loads (QEMU: kernel and initrd; Pi firmware: config.txt, cmdline.txt
    pointing at our root, a kernel, an initrd and the device trees)."""
    names = {p.name for p in bootfs.iterdir()}
    if board.boot_method == "direct-kernel":
        missing = {"vmlinuz", "initrd.img", "cmdline.txt"} - names
    else:
        missing = {"config.txt", "cmdline.txt"} - names
        if not any(n.startswith("vmlinuz") for n in names):
            missing.add("vmlinuz-*")
        if not any(n.startswith("initrd.img") for n in names):
            missing.add("initrd.img-*")
        if not any(n.endswith(".dtb") for n in names):
            missing.add("*.dtb")
    if missing:
        raise BuildError(f"the boot partition lacks {', '.join(sorted(missing))}")
    cmdline = (bootfs / "cmdline.txt").read_text()
    if "root=LABEL=root" not in cmdline:
        raise BuildError(f"cmdline.txt does not boot the root partition: {cmdline.strip()!r}")


def _read_table(path: Path, sep: str) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if sep in line:
            name, version = line.split(sep, 1)
            out[name] = version.split("\t")[0]
    return out


def write_manifest(board: Board, work: Path, image: Path, manifest: Path) -> None:
    doc = {
        "board": board.name,
        "description": board.description,
        "architecture": board.architecture,
        "suite": board.suite,
        "inputs_sha256": inputs_hash(board),
        "image": image.name,
        "image_size": image.stat().st_size,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "partitions": partitions.layout(image),
        "debian_packages": _read_table(work / "debian-packages.txt", "\t"),
        "python_packages": _read_table(work / "python-packages.txt", "=="),
    }
    manifest.write_text(json.dumps(doc, indent=1) + "\n")


def compress(image: Path, kind: str) -> Path | None:
    if kind == "none":
        return None
    out = image.with_name(image.name + (".xz" if kind == "xz" else ".zst"))
    out.unlink(missing_ok=True)
    if kind == "xz":
        run(["xz", "-T0", "-6", "-k", "-f", str(image)])
    else:
        run(["zstd", "-q", "-T0", "-f", str(image), "-o", str(out)])
    return out


def write_sums(files: list[Path]) -> None:
    sums = BUILD / "SHA256SUMS"
    lines = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if (BUILD / name).exists():
                lines[name] = digest
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        lines[f.name] = h.hexdigest()
    sums.write_text("".join(f"{d}  {n}\n" for n, d in sorted(lines.items())))


def build(board: Board, compression: str = "xz", force: bool = False) -> Path:
    out = outputs(board)
    image = out["image"]
    if not force and is_current(board):
        print(f"==> {image.relative_to(REPO)} is up to date (inputs unchanged)", flush=True)
        extra = compress(image, compression) if compression != "none" else None
        if extra:
            write_sums([image, extra])
        return image
    steps = 6 + (compression != "none")
    progress = Progress(steps)
    work = out["work"]
    work.mkdir(parents=True, exist_ok=True)
    with progress.step(f"host tools for {board.name} ({board.architecture})"):
        check_host(board)
    with progress.step("wheels: the project and its pinned dependencies"):
        fetch_wheels(board, work / "late-wheels")
    with progress.step("staging the overlay, units and config"):
        early, late = stage(board, work)
        shutil.move(work / "late-wheels", late / "tmp/letterbox-build/wheels")
    with progress.step(f"root filesystem: Debian {board.suite} with mmdebstrap"):
        rootfs = mmdebstrap(board, work, early, late)
    with progress.step("partitions: FAT boot + ext4 root, assembled without mounting"):
        bootfs = work / "bootfs"
        if bootfs.exists():
            shutil.rmtree(bootfs)
        # The boot partition's files leave the root tree; /boot/firmware stays as the
        # mount point.
        shutil.move(rootfs / "boot/firmware", bootfs)
        (rootfs / "boot/firmware").mkdir()
        check_boot_files(board, bootfs)
        tmp = image.with_suffix(".img.tmp")
        partitions.assemble(bootfs, rootfs, tmp, board.image_size, board.boot_size, work)
        os.replace(tmp, image)
    with progress.step("manifest"):
        write_manifest(board, work, image, out["manifest"])
        shutil.rmtree(rootfs)
        shutil.rmtree(bootfs)
    files = [image]
    if compression != "none":
        with progress.step(f"compressing ({compression})"):
            extra = compress(image, compression)
            assert extra is not None
            files.append(extra)
    write_sums(files)
    print(f"==> built {image.relative_to(REPO)} ({image.stat().st_size >> 20} MiB)", flush=True)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a Letterbox image for one board.")
    parser.add_argument("board", help=f"one of: {', '.join(boards.names())}")
    parser.add_argument("--compress", choices=("xz", "zstd", "none"), default="xz")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        board = boards.load(args.board)
        build(board, args.compress, args.force)
    except (boards.BoardError, BuildError, partitions.PartitionError) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

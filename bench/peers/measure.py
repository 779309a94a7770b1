"""Measuring servers from the outside: which processes belong to a server, their CPU and memory.

Every benchmark compares Letterbox with a peer (Postfix, Dovecot) on the same machine in the
same run, so both must be measured the same way and from outside: nothing here asks a server
about itself. A `Tracker` knows the processes of one server; a `Sampler` polls their memory
while a load runs.

Two ways to know a server's processes, chosen once per machine by `make_tracker`:

* a cgroup v2 directory per server (preferred). Children inherit it whatever they do (Postfix
  forks and reaps short-lived workers all the time), `cgroup.procs` lists them, `cpu.stat`
  counts the CPU of every member including those already gone, and `cgroup.kill` ends them all.
* otherwise, the process tree under the server's launcher. CPU is then the sum over the live
  tree of utime+stime+cutime+cstime: a parent's cutime/cstime include the CPU of the children
  it has reaped, so nothing is lost as long as every worker is reaped inside the tree (a
  Postfix or Dovecot master in the foreground reaps its own children). But /proc rounds each
  figure down to 10 ms, so this is a lower bound: measured here 1.6 s where the cgroup said
  2.2 s for a 70-process Postfix. The method is printed with the figures.

Memory is proportional set size (PSS) summed over the server's processes, sampled every
~100 ms: shared libraries and shared memory are split among the processes that map them, so a
server of 40 processes is not charged 40 times for libc. cgroup memory counters are not used
because they include the page cache of the mail files written, which is not the server's own
memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CGROUP_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


# -- reading /proc -----------------------------------------------------------------------------


def _smaps_rollup_kib(pid: int, key: str) -> int:
    """One field (Pss, Rss) of /proc/PID/smaps_rollup in KiB; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(key.encode() + b":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB (0 if it has exited)."""
    return _smaps_rollup_kib(pid, "Pss")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if it has exited)."""
    return _smaps_rollup_kib(pid, "Rss")


def anon_kib(pid: int) -> int:
    """Anonymous memory of a process in KiB (heap, stacks, interpreter objects; 0 if gone).

    Unlike PSS it does not move when other processes on the machine map the same files
    (another engineer's Python and its libraries), so two builds of one server compare; and
    without swap it is the part of a cgroup's memory the kernel cannot reclaim.
    """
    return _smaps_rollup_kib(pid, "Anonymous")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of a process; False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's peak RSS since start or the last `reset_peak_rss` (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent running tasks since boot (user, nice, system).

    The difference over a load, minus what the server, the client, the benchmark and the
    kernel threads used, is what other processes took: a warning sign for the figures.
    Interrupt time is left out: it is mostly the network and disk work of the load itself.
    """
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system = (int(f) for f in fields[1:4])
    return (user + nice + system) / CLOCK_TICKS


def busy_share(window: float = 1.0) -> float:
    """Share of the machine's CPU capacity used by other processes over `window` seconds.

    This process's own CPU is left out; so are kernel threads, whose bookkeeping noise
    alone is a few percent.
    """
    before = machine_busy_seconds() - kernel_threads_seconds() - time.process_time()
    time.sleep(window)
    after = machine_busy_seconds() - kernel_threads_seconds() - time.process_time()
    return max(0.0, (after - before) / (window * (os.cpu_count() or 1)))


def wait_for_quiet(
    *, threshold: float = 0.05, max_wait: float = 20.0, window: float = 1.0
) -> tuple[float, float]:
    """Wait until other processes use less than `threshold` of the machine, at most `max_wait` s.

    Benchmarks on a shared development machine start in a quiet moment if there is one
    within `max_wait`; returns (seconds waited, last share seen) for the report.
    """
    started = time.monotonic()
    while True:
        share = busy_share(window)
        waited = time.monotonic() - started
        if share < threshold or waited + window > max_wait:
            return waited, share


def kernel_threads_seconds() -> float:
    """CPU seconds used so far by the live kernel threads (children of kthreadd, pid 2).

    During a load they mostly do the servers' I/O (writeback, the ext4 journal), which no
    server's own counters include; kept apart so as not to mistake it for someone else's work.
    """
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and (fields[1] == "2" or entry.name == "2"):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def kernel_thread_times() -> dict[int, float]:
    """CPU seconds used so far by each live kernel thread (pid -> seconds).

    For the CPU kernel threads used over an interval, compare two of these per pid
    (`kernel_threads_delta`): the difference of two `kernel_threads_seconds` sums goes wrong,
    even negative, when a busy kworker exits in between and takes its whole past with it.
    """
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and (fields[1] == "2" or entry.name == "2"):
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def kernel_threads_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds kernel threads used between two `kernel_thread_times` snapshots.

    Threads that started in between count whole; those that exited lose their last part.
    """
    return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _all_parents() -> dict[int, int]:
    """pid -> ppid for every process on the machine, for walking a process tree."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    return parents


# -- trackers ----------------------------------------------------------------------------------


class Tracker:
    """The processes of one server: membership, CPU, and ending them all."""

    method = "abstract"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line that starts `argv` inside this tracker."""
        return list(argv)

    def adopt(self, pid: int) -> None:
        """Note a launcher process whose descendants belong to the server."""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        """CPU (user + system) used so far by the server's processes, dead ones included."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL every process of the server (a last resort after a polite stop)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Release what the tracker holds (the cgroup directory)."""


class CgroupTracker(Tracker):
    """A cgroup v2 directory of its own; exact CPU including reaped children."""

    method = "cgroup v2 (cpu.stat usage_usec, exact including exited workers)"

    def __init__(self, parent: Path, name: str) -> None:
        self.path = parent / name
        self.path.mkdir()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        # The shell moves itself into the cgroup, then execs the server: everything the
        # server forks from then on inherits the cgroup.
        script = 'echo $$ > "$0" && exec "$@"'
        return ["/bin/sh", "-c", script, str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def cpu_seconds(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
        raise RuntimeError(f"no usage_usec in {self.path}/cpu.stat")

    def kill(self) -> None:
        killer = self.path / "cgroup.kill"
        if killer.exists():
            killer.write_text("1")
        else:
            super().kill()

    def close(self) -> None:
        self.kill()
        for _ in range(100):
            if not self.pids():
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.path.rmdir()


class TreeTracker(Tracker):
    """The process tree under the launchers; CPU via cumulative times of the live tree."""

    method = (
        "process tree (utime+stime+cutime+cstime of the live processes; a lower bound, "
        "/proc rounds each process down to 10 ms)"
    )

    def __init__(self) -> None:
        self.roots: list[int] = []

    def adopt(self, pid: int) -> None:
        self.roots.append(pid)

    def pids(self) -> list[int]:
        parents = _all_parents()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        found: list[int] = []
        todo = [r for r in self.roots if r in parents]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields:
                # utime, stime, cutime, cstime are fields 14-17 of stat; 12-15 after the name.
                ticks += sum(int(f) for f in fields[11:15])
        return ticks / CLOCK_TICKS


def _writable_cgroup_parent() -> Path | None:
    """A cgroup v2 directory we may create children in and whose members get cpu.stat."""
    for root in CGROUP_ROOTS:
        if not (root / "cgroup.procs").exists() or not (root / "cpu.stat").exists():
            continue
        probe = root / f"letterbox-bench-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if (probe / "cpu.stat").exists() and (probe / "cgroup.procs").exists():
                return root
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return None


class TrackerFactory:
    """Makes one tracker per server, all of the same kind, under one parent cgroup."""

    def __init__(self, *, allow_cgroup: bool = True) -> None:
        root = _writable_cgroup_parent() if allow_cgroup else None
        self.parent: Path | None = None
        if root is not None:
            self.parent = root / f"letterbox-bench-{os.getpid()}"
            self.parent.mkdir()
        self.method = CgroupTracker.method if self.parent else TreeTracker.method
        self._count = 0

    def new(self, name: str) -> Tracker:
        self._count += 1
        if self.parent is None:
            return TreeTracker()
        return CgroupTracker(self.parent, f"{self._count:02d}-{name}")

    def close(self) -> None:
        if self.parent is None:
            return
        for child in self.parent.iterdir():
            if child.is_dir():
                CgroupTracker.close(_existing_cgroup(child))
        with contextlib.suppress(OSError):
            self.parent.rmdir()


def _existing_cgroup(path: Path) -> CgroupTracker:
    """A CgroupTracker for a directory that already exists (for cleaning up)."""
    tracker = CgroupTracker.__new__(CgroupTracker)
    tracker.path = path
    return tracker


# -- sampling memory ---------------------------------------------------------------------------


@dataclass
class MemoryPeak:
    """What a Sampler saw: peak of the summed PSS, and peak RSS of one watched process."""

    pss_kib: int = 0
    watched_rss_kib: int = 0
    samples: int = 0
    max_processes: int = 0
    longest_interval: float = 0.0


@dataclass
class Sampler:
    """Polls the summed PSS of a server's processes on a thread while a load runs.

    Reading smaps_rollup walks a process's page tables: ~0.15 ms per process here, so one
    sample of a 70-process Postfix costs ~11 ms of CPU, taken from the same cores the server
    runs on. The sampler therefore never spends more than `max_duty` of one core: the interval
    is `interval` (100 ms) or longer when a sample is expensive (~0.5 s for a busy Postfix,
    whose memory is a plateau of worker processes, while a single Letterbox process is
    sampled every 100 ms).

    `watch_pid`, if given, also records the peak RSS of that one process (the Letterbox
    process, whose RSS growth over idle is one of the aims): exactly, from the kernel's
    high-water mark (reset when sampling starts), not only at the sampling instants.
    """

    tracker: Tracker
    interval: float = 0.1
    max_duty: float = 0.02
    watch_pid: int | None = None
    exact_rss_peak: bool = False
    peak: MemoryPeak = field(default_factory=MemoryPeak)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_once(self) -> float:
        """Take one sample; returns the CPU seconds it cost this thread."""
        cpu = time.thread_time()
        pids = self.tracker.pids()
        total = sum(pss_kib(pid) for pid in pids)
        peak = self.peak
        peak.pss_kib = max(peak.pss_kib, total)
        peak.max_processes = max(peak.max_processes, len(pids))
        peak.samples += 1
        if self.watch_pid is not None:
            peak.watched_rss_kib = max(peak.watched_rss_kib, rss_kib(self.watch_pid))
        return time.thread_time() - cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            cost = self.sample_once()
            period = max(self.interval, cost / self.max_duty)
            self.peak.longest_interval = max(self.peak.longest_interval, period)
            self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def __enter__(self) -> Sampler:
        if self.watch_pid is not None:
            self.exact_rss_peak = reset_peak_rss(self.watch_pid)
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample_once()
        if self.watch_pid is not None and self.exact_rss_peak:
            hwm = peak_rss_kib(self.watch_pid)
            self.peak.watched_rss_kib = max(self.peak.watched_rss_kib, hwm)


# -- processes, ports, polling -----------------------------------------------------------------


def start_process(
    argv: Sequence[str],
    tracker: Tracker,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (process group) inside its tracker, output to `log`.

    A session of its own means the benchmark can end the whole group even if the tracker
    cannot, and a Ctrl-C in the terminal reaches the benchmark, which then cleans up.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            tracker.wrap(argv),
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    tracker.adopt(proc.pid)
    return proc


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the server's leader, wait up to `grace` s, then SIGKILL its whole process group.

    Only the leader gets SIGTERM: a Dovecot or Postfix master then stops its own workers in
    order (signalling them all at once makes them log that they were killed).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_banner(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """The first line a server sends (an SMTP 220 greeting), to know it is really up."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
        with contextlib.suppress(OSError):
            s.sendall(b"QUIT\r\n")
    return data.decode("latin-1").strip()


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll `check` until true; returns the monotonic time it became true.

    Gives up after `timeout` seconds, or as soon as `alive` says the server died, so a
    broken server fails the benchmark quickly instead of hanging it.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if alive is not None and not alive():
            raise RuntimeError(f"server exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def count_files(dirs: Iterable[Path]) -> int:
    """Number of entries not starting with '.' in the given directories (Maildir new/, cur/).

    Names only, no stat: cheap enough to poll a directory of 10,000 files every 50 ms.
    """
    total = 0
    for d in dirs:
        try:
            with os.scandir(d) as it:
                total += sum(1 for e in it if not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return total


def machine_description() -> str:
    """nproc, memory and kernel, for the results table."""
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    uname = os.uname()
    cpu = f"{os.cpu_count()} CPUs" + (f" ({model})" if model else "")
    return f"{cpu}, {mem_kib / 1024 / 1024:.1f} GiB RAM, Linux {uname.release} {uname.machine}"


# -- what every benchmark run has --------------------------------------------------------------


@contextlib.contextmanager
def state_directory(name: str, keep: bool) -> Iterator[Path]:
    """A private directory for all servers' state, readable by the postfix/nobody users
    (their workers traverse it); removed afterwards unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix=f"letterbox-bench-{name}-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if keep:
            print(f"State and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def add_run_arguments(p: argparse.ArgumentParser, *, name: str, quiet_budget: float) -> None:
    """The options the peer-comparing benchmarks (SMTP, POP3) share."""
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="measure every (server, load) N times, interleaved; tables show the median run",
    )
    p.add_argument(
        "--quiet-budget",
        type=float,
        default=quiet_budget,
        metavar="S",
        help="before each measurement wait up to 20 s for other processes to go quiet, "
        f"at most S seconds in all (default {quiet_budget:.0f}; 0: never wait)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help=f"no measuring: redo the report from a saved run (bench/out/bench_{name}.json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the state directory and logs")
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument(
        "--sample-interval",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds between PSS samples (default 0.1)",
    )
    p.add_argument(
        "--no-cgroup",
        action="store_true",
        help="track processes by process tree even where a cgroup is possible",
    )

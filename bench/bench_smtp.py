"""SMTP inbound benchmark (issue 3): Letterbox against Postfix → Maildir and Postfix → Dovecot.

    make bench BENCH=smtp            # the full run (about 7 minutes), updates bench/RESULTS.md
    .venv/bin/python bench/bench_smtp.py --quick 10   # a tenth of the messages, no RESULTS.md

Postfix's `smtp-source` loads each server on a loopback port in the same run on the same
machine: 10,000 × 2 KB with 20 sessions, 200 × 1 MB with 4 sessions, 1 × 25 MB, a new
connection per message for all of them. Each measurement gets a fresh server with its own state
directory, one 2 KB warm-up message (so that lazily started workers and imports are not billed
to the load), a second of rest, then the load. Every (server, load) pair is measured three
times with the servers taking turns, because a small shared machine is noisy; the tables show
the run with the median msgs/s among those where other processes left the machine alone
(the CPU of everything outside the server is accounted for each run). Reported per pair:

* msgs/s and seconds *until stored*: from the start of smtp-source until every message is
  durable. Letterbox answers 250 only after its commit, so that is when smtp-source exits
  (checked afterwards with `letterbox mailbox list`); the peers queue first and deliver later,
  so the benchmark polls their Maildir until every file is there.
* peak PSS: the largest sum of PSS over all the server's processes, sampled every ~100 ms.
* CPU s: user + system CPU of all the server's processes during the load (see measure.py for
  how: a cgroup v2 per server where possible).
* ratios: Letterbox ÷ peer. For msgs/s higher is better; for PSS and CPU lower is better.

The aims from the issue are checked and printed; an aim not met is reported, not hidden, and
does not fail the run (a failed or unverifiable run does).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from peers import dovecot, letterbox_server, postfix
from peers.dovecot import DovecotConfig, DovecotPeer
from peers.letterbox_server import LetterboxConfig, LetterboxServer, LetterboxUnavailable
from peers.measure import (
    Sampler,
    Tracker,
    TrackerFactory,
    add_run_arguments,
    free_port,
    kernel_threads_seconds,
    machine_busy_seconds,
    machine_description,
    pss_kib,
    rss_kib,
    state_directory,
    wait_for_quiet,
)
from peers.postfix import PostfixConfig, PostfixPeer
from peers.report import first_line, replace_section
from peers.smtp_source import Load, run_load

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
OUT = HERE / "out"
SAVED = OUT / "bench_smtp.json"
SECTION = "## SMTP (issue 3)"
DOMAIN = "bench.test"
LOCAL = "bench"
RECIPIENT = f"{LOCAL}@{DOMAIN}"
SENDER = f"sender@{DOMAIN}"
MB = 1 << 20

LOADS = (
    Load("2k", "10,000 × 2 KB, 20 sessions", 10_000, 2048, 20),
    Load("1m", "200 × 1 MB, 4 sessions", 200, MB, 4),
    Load("25m", "1 × 25 MB, 1 session", 1, 25 * MB, 1),
)
WARMUP = Load("warmup", "1 × 2 KB warm-up", 1, 2048, 1)

LETTERBOX = "letterbox"
MAILDIR = "postfix-maildir"
DOVECOT = "postfix-dovecot"
LABELS = {
    LETTERBOX: "Letterbox",
    MAILDIR: "Postfix → Maildir",
    DOVECOT: "Postfix → Dovecot LMTP, mail_crypt",
}
SERVERS = (LETTERBOX, MAILDIR, DOVECOT)


# -- the servers under test, behind one small interface ---------------------------------------


class Subject:
    """A server being benchmarked: start it, count what it stored, verify, stop it."""

    name: str
    port: int
    tracker: Tracker
    # True if a 250 already means "stored", so the client finishing ends the load.
    acks_are_durable = False
    watch_pid: int | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def verify(self, expected: int) -> str:
        """Check (after the load) that exactly `expected` messages were stored; a note."""
        raise NotImplementedError


class LetterboxSubject(Subject):
    """`letterbox run --dev` with one mailbox; 250 means durably stored."""

    acks_are_durable = True

    def __init__(self, root: Path, tracker: Tracker) -> None:
        self.name, self.tracker = LETTERBOX, tracker
        self.server = LetterboxServer(root, LetterboxConfig(address=RECIPIENT), tracker)
        self.port = self.server.port

    def start(self) -> None:
        self.server.configure()
        self.server.start()
        self.watch_pid = self.server.pid

    def stored(self) -> int:
        raise AssertionError("Letterbox is counted after stop, see verify()")

    def stop(self) -> None:
        self.server.stop()

    def verify(self, expected: int) -> str:
        self.server.stop()  # the count opens the drive: never next to a running server
        count = self.server.count()
        if count != expected:
            raise RuntimeError(
                f"Letterbox: `mailbox list` shows {count} messages, expected {expected}"
            )
        return f"`letterbox mailbox list`: {count} messages"


class PostfixMaildirSubject(Subject):
    """Postfix with a virtual mailbox domain delivering to Maildir."""

    def __init__(self, root: Path, tracker: Tracker) -> None:
        self.name, self.tracker, self.port = MAILDIR, tracker, free_port()
        self.postfix = PostfixPeer(root, PostfixConfig(self.port, DOMAIN, LOCAL), tracker)

    def start(self) -> None:
        self.postfix.configure()
        self.postfix.start()

    def stored(self) -> int:
        return self.postfix.stored()

    def stop(self) -> None:
        self.postfix.stop()

    def verify(self, expected: int) -> str:
        count = self.postfix.stored()
        if count != expected:
            raise RuntimeError(f"Postfix Maildir holds {count} messages, expected {expected}")
        return f"Maildir: {count} files"


class PostfixDovecotSubject(Subject):
    """Postfix relaying over LMTP into Dovecot, which encrypts with per-user mail_crypt keys."""

    def __init__(self, root: Path, tracker: Tracker) -> None:
        self.name, self.tracker, self.port = DOVECOT, tracker, free_port()
        self.dovecot = DovecotPeer(root / "dovecot", DovecotConfig(user=RECIPIENT), tracker)
        pf_cfg = PostfixConfig(self.port, DOMAIN, LOCAL, lmtp_socket=self.dovecot.lmtp_socket)
        self.postfix = PostfixPeer(root / "postfix", pf_cfg, tracker)

    def start(self) -> None:
        self.dovecot.configure()
        self.dovecot.start()
        self.postfix.configure()
        self.postfix.start()

    def stored(self) -> int:
        return self.dovecot.stored()

    def stop(self) -> None:
        self.postfix.stop()
        self.dovecot.stop()

    def verify(self, expected: int) -> str:
        count = self.dovecot.stored()
        if count != expected:
            raise RuntimeError(f"Dovecot Maildir holds {count} messages, expected {expected}")
        plain = self.dovecot.unencrypted()
        if plain:
            raise RuntimeError(
                f"{len(plain)} Dovecot files do not start with CRYPTED, "
                f"e.g. {plain[0]}: mail_crypt is not working"
            )
        return f"Maildir: {count} files, all start with CRYPTED"


FACTORIES: dict[str, Callable[[Path, Tracker], Subject]] = {
    LETTERBOX: LetterboxSubject,
    MAILDIR: PostfixMaildirSubject,
    DOVECOT: PostfixDovecotSubject,
}


# -- measuring one (server, load) pair ---------------------------------------------------------


@dataclass
class Result:
    server: str
    load: Load
    seconds: float
    client_seconds: float
    cpu_seconds: float
    peak_pss_kib: int
    idle_pss_kib: int
    idle_rss_kib: int = 0  # of the watched process (Letterbox)
    peak_rss_kib: int = 0
    verified: str = ""
    observer_cpu: float = 0.0  # this benchmark's own CPU during the load
    client_cpu: float = 0.0  # smtp-source
    kernel_cpu: float = 0.0  # kernel threads (writeback, journal)
    other_cpu: float = 0.0  # every other process on the machine
    samples: int = 0
    longest_interval: float = 0.0

    @property
    def rate(self) -> float:
        return self.load.messages / self.seconds


def _settle_and_measure_idle(subject: Subject) -> tuple[int, int]:
    """Let the server go idle after the warm-up; its summed PSS and the watched RSS then."""
    time.sleep(1.0)
    idle_pss = sum(pss_kib(pid) for pid in subject.tracker.pids())
    idle_rss = rss_kib(subject.watch_pid) if subject.watch_pid else 0
    return idle_pss, idle_rss


def measure(subject: Subject, load: Load, logs: Path, sample_interval: float) -> Result:
    """Start the server, warm it up, run the load under the sampler, verify, stop it.

    Besides the server's own figures, the CPU of everything else during the load is
    recorded: smtp-source, this benchmark (PSS sampling, Maildir polling), and the rest of
    the machine. On a small shared machine those compete with the server; "other" CPU well
    above zero means someone else was busy and the figures are suspect.
    """
    try:
        subject.start()

        def stored(expected: int) -> Callable[[], int]:
            return (lambda: expected) if subject.acks_are_durable else subject.stored

        log = logs / f"smtp-source-{subject.name}-{load.key}.log"
        run_load(
            WARMUP,
            subject.port,
            sender=SENDER,
            recipient=RECIPIENT,
            stored=stored(1),
            expected=1,
            log=log,
            timeout=60,
        )
        idle_pss, idle_rss = _settle_and_measure_idle(subject)
        expected = 1 + load.messages
        sampler = Sampler(subject.tracker, interval=sample_interval, watch_pid=subject.watch_pid)
        before = _cpu_snapshot(subject)
        with sampler:
            timing = run_load(
                load,
                subject.port,
                sender=SENDER,
                recipient=RECIPIENT,
                stored=stored(expected),
                expected=expected,
                log=log,
            )
        after = _cpu_snapshot(subject)
        verified = subject.verify(expected)
    finally:
        subject.stop()
    server, observer, client, kthreads, machine = (
        y - x for x, y in zip(before, after, strict=True)
    )
    return Result(
        server=subject.name,
        load=load,
        seconds=timing.stored_seconds,
        client_seconds=timing.client_seconds,
        cpu_seconds=server,
        peak_pss_kib=sampler.peak.pss_kib,
        idle_pss_kib=idle_pss,
        idle_rss_kib=idle_rss,
        peak_rss_kib=sampler.peak.watched_rss_kib,
        verified=verified,
        observer_cpu=observer,
        client_cpu=client,
        kernel_cpu=kthreads,
        other_cpu=max(0.0, machine - server - observer - client - kthreads),
        samples=sampler.peak.samples,
        longest_interval=sampler.peak.longest_interval,
    )


def _cpu_snapshot(subject: Subject) -> tuple[float, float, float, float, float]:
    """Cumulative CPU s of: the server, this process, its reaped children (smtp-source),
    the kernel threads, and the whole machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        subject.tracker.cpu_seconds(),
        time.process_time(),
        children.ru_utime + children.ru_stime,
        kernel_threads_seconds(),
        machine_busy_seconds(),
    )


# -- reporting ---------------------------------------------------------------------------------


def _mb(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


QUIET_WAIT = 20.0  # seconds to wait at most, before one measurement, for a quiet machine
BUSY_WARNING = 0.05  # share of the machine's CPU taken by other processes: figures suspect


def other_share(r: Result) -> float:
    """Share of the machine's CPU capacity that other processes took during the load."""
    return r.other_cpu / (r.seconds * (os.cpu_count() or 1))


def outside_cpu_lines(runs: dict[str, list[Result]]) -> list[str]:
    """CPU spent outside the server in the reported runs; a warning if others were busy."""
    parts = []
    for name in SERVERS:
        if not runs.get(name):
            continue
        r = representative(runs[name])
        share = other_share(r)
        warn = " — **machine busy, figures suspect**" if share > BUSY_WARNING else ""
        parts.append(
            f"{LABELS[name]} {r.client_cpu:.2f} / {r.observer_cpu:.2f} / {r.kernel_cpu:.2f} / "
            f"{r.other_cpu:.2f} s ({share:.0%} of the machine){warn}"
        )
    head = (
        "CPU outside the server in the reported run (smtp-source / this benchmark / "
        "kernel threads / other processes): "
    )
    return [head + "; ".join(parts) + "."]


def quiet(r: Result) -> bool:
    """Whether other processes left the machine alone during this run."""
    return other_share(r) <= BUSY_WARNING


def median_run(runs: list[Result]) -> Result:
    """The run with the median msgs/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def representative(runs: list[Result]) -> Result:
    """The median run among those on a quiet machine, or the least disturbed one.

    On a shared machine another user's test suite can take half the CPU for a while; such
    runs are shown (marked) but do not decide the figures when quiet runs exist.
    """
    calm = [r for r in runs if quiet(r)]
    return median_run(calm) if calm else min(runs, key=other_share)


def medians(results: dict[str, dict[str, list[Result]]]) -> dict[str, dict[str, Result]]:
    return {
        load: {name: representative(runs) for name, runs in by_server.items() if runs}
        for load, by_server in results.items()
    }


def load_table(runs: dict[str, list[Result]]) -> list[str]:
    """A Markdown table for one load: the median run per server, ratios Letterbox ÷ peer."""
    lines = [
        "| server | msgs/s | seconds | client s | peak PSS MB | CPU s "
        "| msgs/s ratio (↑) | PSS ratio (↓) | CPU ratio (↓) | msgs/s of all runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    ours = representative(runs[LETTERBOX]) if runs.get(LETTERBOX) else None
    for name in SERVERS:
        if not runs.get(name):
            lines.append(f"| {LABELS[name]} | – | – | – | – | – | – | – | – | not measured |")
            continue
        r = representative(runs[name])
        if ours is None or name == LETTERBOX:
            ratios = "– | – | –"
        else:
            ratios = (
                f"{_ratio(ours.rate, r.rate)} | "
                f"{_ratio(ours.peak_pss_kib, r.peak_pss_kib)} | "
                f"{_ratio(ours.cpu_seconds, r.cpu_seconds)}"
            )
        every = ", ".join(f"{x.rate:,.1f}" + ("" if quiet(x) else " (busy)") for x in runs[name])
        lines.append(
            f"| {LABELS[name]} | {r.rate:,.1f} | {r.seconds:.2f} | {r.client_seconds:.2f} | "
            f"{_mb(r.peak_pss_kib)} | {r.cpu_seconds:.2f} | {ratios} | {every} |"
        )
    return lines


@dataclass
class Aim:
    text: str
    value: float | None
    target: float
    higher_is_better: bool = True

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "met" if ok else "NOT met"


def aims(results: dict[str, dict[str, list[Result]]]) -> list[Aim]:
    """The issue's aims, on the median runs; the RSS aim on the worst run."""
    mid = medians(results)

    def rate_ratio(load: str, peer: str) -> float | None:
        ours, theirs = mid.get(load, {}).get(LETTERBOX), mid.get(load, {}).get(peer)
        return ours.rate / theirs.rate if ours and theirs else None

    big = results.get("25m", {}).get(LETTERBOX)
    growth = max((r.peak_rss_kib - r.idle_rss_kib) / 1024 for r in big) if big else None
    return [
        Aim("2 KB: Letterbox ≥ 1.5× Postfix → Maildir msgs/s", rate_ratio("2k", MAILDIR), 1.5),
        Aim(
            "2 KB: Letterbox ≥ 4× Postfix → Dovecot mail_crypt msgs/s",
            rate_ratio("2k", DOVECOT),
            4.0,
        ),
        Aim("1 MB: Letterbox ≥ 1.0× Postfix → Maildir msgs/s", rate_ratio("1m", MAILDIR), 1.0),
        Aim(
            "25 MB: Letterbox RSS growth over idle ≤ 8 MB (worst run)",
            growth,
            8.0,
            higher_is_better=False,
        ),
    ]


def _aim_line(aim: Aim) -> str:
    if aim.value is None:
        shown = "–"
    elif aim.higher_is_better:
        shown = f"{aim.value:.2f}×"
    else:
        shown = f"{aim.value:.1f} MB"
    return f"- {aim.text}: {shown} — **{aim.verdict}**"


@dataclass
class RunInfo:
    started: datetime.datetime
    machine: str
    versions: str
    cpu_method: str
    repeat: int
    notes: list[str] = field(default_factory=list)


def method_lines(info: RunInfo) -> list[str]:
    """How the figures were obtained, as a Markdown list (part of every report)."""
    return [
        "- Load: Postfix `smtp-source` on loopback, one connection per message (no `-d`), the "
        "same for every server. Each measurement gets a fresh server, one 2 KB warm-up "
        "message, 1 s of rest, then the load. Every (server, load) is measured "
        f"{info.repeat} times, the servers taking turns. The tables show the run with the "
        "median msgs/s among the runs on a quiet machine (other processes took ≤ 5 % of the "
        "CPU; if none was, the least disturbed run), and the msgs/s of every run, busy ones "
        "marked. "
        "Before each measurement the benchmark waits up to 20 s for other processes to go "
        "quiet.",
        "- Letterbox: `letterbox run --dev` with one mailbox (`mailbox add`), config "
        "`max_message_size = 64M`, `max_connections_per_address = 100`, its own loopback port.",
        "- Postfix → Maildir: a private Postfix (`postfix -c DIR start-fg`), virtual mailbox "
        "domain, Maildir; Postfix defaults except no chroot, no DNS lookups of clients, "
        "client rate and connection limits off, `message_size_limit` 64 MB, "
        "`default_process_limit = 100`.",
        "- Postfix → Dovecot: the same Postfix with `virtual_transport = lmtp:unix:...` into "
        "a private Dovecot (`dovecot -F -c FILE`), Maildir, `mail_crypt` with per-user P-256 "
        "keys (`mail_crypt_save_version = 2`); every stored file is checked to start with "
        "`CRYPTED`. Both peers keep their default fsync behaviour.",
        "- *seconds*: from the start of smtp-source until every message is durably stored. "
        "Letterbox answers 250 only after its commit, so that is smtp-source's exit (the count "
        "is then checked with `letterbox mailbox list`); the peers queue first and deliver "
        "later, so their Maildir is counted after smtp-source exits, every 0.5 % of the time "
        "so far (20–500 ms). *client s*: when smtp-source exited.",
        "- *peak PSS*: the largest sum of PSS (`/proc/PID/smaps_rollup`) over all the "
        "server's processes, sampled every 100 ms, less often when one sample is expensive "
        "(sampling takes at most 2 % of one core: ~0.5 s for a busy Postfix).",
        f"- *CPU s*: user + system CPU of all the server's processes during the load, by "
        f"{info.cpu_method}.",
        "- Ratios are Letterbox ÷ peer: for msgs/s higher is better (↑), for PSS and CPU "
        "lower is better (↓).",
    ]


def big_message_lines(runs: dict[str, list[Result]]) -> list[str]:
    """Memory around the 25 MB message: Letterbox's RSS per run, every server's PSS."""
    lines = []
    for r in runs.get(LETTERBOX, []):
        lines.append(
            f"- Letterbox process RSS: idle {_mb(r.idle_rss_kib)} MB, peak "
            f"{_mb(r.peak_rss_kib)} MB during the message (kernel high-water mark), growth "
            f"{_mb(r.peak_rss_kib - r.idle_rss_kib)} MB"
        )
    for name in SERVERS:
        for r in runs.get(name, []):
            lines.append(
                f"- {LABELS[name]}: summed PSS idle {_mb(r.idle_pss_kib)} MB, "
                f"peak {_mb(r.peak_pss_kib)} MB"
            )
    return lines


def report(info: RunInfo, loads: list[Load], results: dict[str, dict[str, list[Result]]]) -> str:
    """The whole report in Markdown: printed, and written to RESULTS.md after a full run."""
    out = [
        SECTION,
        "",
        f"Command: `make bench BENCH=smtp` — run {info.started:%Y-%m-%d %H:%M %Z}".rstrip(),
        f"Machine: {info.machine}",
        f"Versions: {info.versions}",
        "",
        *method_lines(info),
        "",
    ]
    for load in loads:
        runs = results.get(load.key, {})
        out += [f"### {load.title}", "", *load_table(runs), ""]
        if runs:
            out += [*outside_cpu_lines(runs), ""]
        if load.key == "25m":
            out += [*big_message_lines(runs), ""]
    out += ["### Aims", "", *(_aim_line(a) for a in aims(results)), ""]
    if info.notes:
        out += ["### Notes", "", *(f"- {n}" for n in info.notes), ""]
    return "\n".join(out)


def write_results(section: str) -> None:
    replace_section(RESULTS, SECTION, section)


def versions() -> str:
    """Versions of the servers compared, so that figures can be traced."""
    commit = first_line("git", "-C", str(HERE), "describe", "--always", "--dirty")
    pf = first_line("/usr/sbin/postconf", "-dh", "mail_version")
    dc = first_line("/usr/sbin/dovecot", "--version").split(" ")[0]
    lb = first_line(str(letterbox_server.LETTERBOX), "--version")
    return f"{lb} (git {commit}), Postfix {pf}, Dovecot {dc}"


# -- main --------------------------------------------------------------------------------------


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP end the run through the normal cleanup (finally blocks)."""
    raise SystemExit(128 + signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick",
        type=int,
        default=1,
        metavar="N",
        help="divide message counts by N to try things out (RESULTS.md untouched)",
    )
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    p.add_argument(
        "--loads",
        nargs="+",
        choices=[load.key for load in LOADS],
        default=[load.key for load in LOADS],
    )
    add_run_arguments(p, name="smtp", quiet_budget=180.0)
    p.add_argument(
        "--shared-fs",
        action="store_true",
        help="store mail in directories of the root filesystem instead of a dedicated ext4 "
        "filesystem per server (as the appliance's USB drive is)",
    )
    return p.parse_args(argv)


def preflight(servers: list[str]) -> tuple[list[str], list[str]]:
    """Servers that can run here, and a message for each that cannot."""
    problems: list[str] = []
    if (why := postfix.available()) is not None:
        raise SystemExit(f"bench_smtp: {why}; run `make bench`, which installs it")
    runnable = []
    for name in servers:
        why = None
        if name == LETTERBOX:
            why = letterbox_server.available()
        elif name == DOVECOT:
            why = dovecot.available()
        if why:
            problems.append(f"{LABELS[name]} not measured: {why}")
        else:
            runnable.append(name)
    return runnable, problems


@contextlib.contextmanager
def dedicated_filesystem(mountpoint: Path, size: str = "8G") -> Iterator[Path]:
    """A fresh ext4 filesystem mounted at `mountpoint` (a sparse image on a loop device)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(exist_ok=True)
    image = Path(tempfile.mkstemp(dir=OUT, prefix="fs-", suffix=".img")[1])
    try:
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
        try:
            mountpoint.chmod(0o755)
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
    finally:
        image.unlink(missing_ok=True)


@dataclass
class Run:
    """Everything one benchmark run produced; saved as JSON so the report can be redone."""

    info: RunInfo
    loads: list[Load]
    results: dict[str, dict[str, list[Result]]]
    complete: bool = False  # every server, every load, every repetition, full size
    failed: bool = False
    problems: list[str] = field(default_factory=list)


def run_all(args: argparse.Namespace) -> Run:
    """Measure every (load, repetition, server), the servers taking turns."""
    loads = [load for load in LOADS if load.key in args.loads]
    if args.quick > 1:
        loads = [load.scaled(args.quick) for load in loads]
    runnable, problems = preflight(args.servers)
    for problem in problems:
        print(f"WARNING: {problem}", flush=True)
    factory = TrackerFactory(allow_cgroup=not args.no_cgroup)
    info = RunInfo(
        datetime.datetime.now().astimezone(),
        machine_description(),
        versions(),
        factory.method,
        args.repeat,
        notes=list(problems),
    )
    info.notes.append(
        "Storage: the root filesystem for every server (--shared-fs)."
        if args.shared_fs
        else "Storage: for each measurement a fresh ext4 filesystem of its own (an 8 GiB sparse "
        "image on a loop device, the same disk), as the appliance's USB drive is: Letterbox's "
        "drive directory is its mount point (so Letterbox makes each commit batch durable with "
        "one syncfs), and each peer's whole state directory (queue, Maildir) is one."
    )
    print(f"{info.machine}\n{info.versions}\nCPU accounting: {info.cpu_method}", flush=True)
    run = Run(info, loads, {}, problems=problems)
    try:
        with state_directory("smtp", args.keep) as state:
            for load in loads:
                for rep in range(1, args.repeat + 1):
                    for name in list(runnable):
                        try:
                            r = run_one(factory, state, load, name, rep, args)
                        except LetterboxUnavailable as exc:
                            print("unavailable", flush=True)
                            problems.append(f"{LABELS[name]} not measured: {exc}")
                            info.notes.append(f"{LABELS[name]} not measured: {exc}")
                            runnable.remove(name)
                            continue
                        except Exception as exc:
                            print("FAILED", flush=True)
                            print(
                                f"bench_smtp: {LABELS[name]}, {load.title}: {exc}", file=sys.stderr
                            )
                            run.failed = True
                            continue
                        run.results.setdefault(load.key, {}).setdefault(name, []).append(r)
    finally:
        factory.close()
    run.complete = (
        not run.failed
        and not problems
        and args.quick == 1
        and [load.key for load in loads] == [load.key for load in LOADS]
        and all(
            len(run.results.get(load.key, {}).get(name, [])) == args.repeat
            for load in loads
            for name in SERVERS
        )
    )
    return run


def save_run(run: Run, path: Path) -> None:
    """The raw figures as JSON (bench/out/ is git-ignored), for `--from-json`."""
    data = dataclasses.asdict(run)
    data["info"]["started"] = run.info.started.isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_run(path: Path) -> Run:
    """A Run saved by `save_run`."""
    data = json.loads(path.read_text())
    info = RunInfo(
        **{**data["info"], "started": datetime.datetime.fromisoformat(data["info"]["started"])}
    )
    results = {
        key: {
            name: [Result(**{**r, "load": Load(**r["load"])}) for r in runs]
            for name, runs in by_server.items()
        }
        for key, by_server in data["results"].items()
    }
    loads = [Load(**load) for load in data["loads"]]
    return Run(info, loads, results, data["complete"], data["failed"], data["problems"])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if args.from_json:
        run = load_run(args.from_json)
    else:
        run = run_all(args)
        save_run(run, SAVED)
    text = report(run.info, run.loads, run.results)
    print("\n" + text)
    if not args.from_json:
        print(f"Raw figures saved in {SAVED.relative_to(HERE.parent)}")
    if run.complete and not args.no_results:
        write_results(text)
        print(f"Wrote the SMTP section of {RESULTS.relative_to(HERE.parent)}")
    elif not args.no_results:
        print("bench/RESULTS.md not updated (partial, quick or failed run)")
    if run.failed:
        return 1
    if run.problems:
        for problem in run.problems:
            print(f"bench_smtp: {problem}", file=sys.stderr)
        return 2
    return 0


def run_one(
    factory: TrackerFactory, state: Path, load: Load, name: str, rep: int, args: argparse.Namespace
) -> Result:
    """One measurement: a fresh server with its own state directory and tracker."""
    if args.quiet_budget > 0:
        waited, share = wait_for_quiet(max_wait=min(QUIET_WAIT, args.quiet_budget))
        args.quiet_budget -= waited
        if share >= BUSY_WARNING:
            print(f"(machine busy: other processes use {share:.0%} of it)", end=" ", flush=True)
    root = state / f"{load.key}-{name}-{rep}"
    root.mkdir()
    # Where the mail is stored: as on the appliance, a filesystem of its own (a USB
    # drive: here an ext4 image on a loop device), for Letterbox's drive and for each
    # peer's whole state alike; or, with --shared-fs, a directory of the root filesystem.
    store = root / "data" / "drive" if name == "letterbox" else root
    with contextlib.ExitStack() as stack:
        if not args.shared_fs:
            stack.enter_context(dedicated_filesystem(store))
        subject = FACTORIES[name](root, factory.new(f"{load.key}-{name}-{rep}"))
        print(f"{load.title}, run {rep}/{args.repeat}: {LABELS[name]} ...", end=" ", flush=True)
        r = measure(subject, load, root, args.sample_interval)
    print(
        f"{r.rate:,.1f} msgs/s, {r.seconds:.2f} s, "
        f"PSS {_mb(r.peak_pss_kib)} MB ({r.samples} samples), "
        f"CPU {r.cpu_seconds:.2f} s; client {r.client_cpu:.2f} s, "
        f"benchmark {r.observer_cpu:.2f} s, kernel threads {r.kernel_cpu:.2f} s, "
        f"other processes {r.other_cpu:.2f} s ({other_share(r):.0%} of the machine); "
        f"{r.verified}",
        flush=True,
    )
    return r


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

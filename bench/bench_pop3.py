"""POP3 benchmark (issue 4): RETR from Letterbox against Dovecot's POP3, same messages, same run.

    make bench BENCH=pop3            # the full run (2-3 minutes), updates bench/RESULTS.md
    .venv/bin/python bench/bench_pop3.py --quick 10   # a tenth of the messages, no RESULTS.md

Three servers on loopback ports, each with two mailboxes holding the same messages:
1,000 × 50 KB in one, 10 × 25 MB in the other. The messages are generated here (seeded, so
every run has the same ones): distinct text of random words with CRLF line ends, some lines
starting with "." (byte-stuffing on both protocols), and for the big ones a base64 attachment.

* Letterbox: `letterbox run --dev`, mail delivered over its own SMTP (smtplib, one session per
  mailbox), stored encrypted the moment it arrives.
* Dovecot, mail_crypt: Debian's Dovecot 2.3 POP3 (`dovecot-pop3d`) in a private instance
  (bench/peers/dovecot.py), mail delivered over its LMTP socket (smtplib.LMTP) into Maildir,
  encrypted with per-user mail_crypt keys: every stored file is checked to start with CRYPTED.
  This is the peer the aims are measured against: both keep mail encrypted at rest.
* Dovecot, plain Maildir: the same without mail_crypt, for scale.

After delivery every server is restarted, so that it serves POP3 from a fresh process. Then
one untimed session per (server, mailbox) retrieves everything and checks it (below); it also
warms every cache. Then each (server, mailbox) is measured three times, the servers taking
turns: one session, USER/PASS, STAT, then RETR 1..n one at a time (each response read whole
before the next command, as most clients do), then QUIT without DELE so that the runs are
repeatable. The client is a small raw-socket POP3 client in this file, run as its own process
(`--client`), the same for every server: it reads each response into one buffer in large
chunks and finds its end with one comparison per read. Only the RETRs are timed.

Correctness: in the first session the client undoes the byte-stuffing and returns each
message's header section and a SHA-256 of its body. Each sent message must come back once,
its body byte-identical and its header section ending with the sent header section: the
servers only prepend trace fields (Letterbox: Return-Path, Received; Dovecot: Return-Path,
Delivered-To, Received), which the report names. In the timed sessions each response (as sent
on the wire) must have the same length and CRC-32 as in the checked session.

Memory: the summed PSS of all the server's processes is sampled every 100 ms during the
RETRs; each process's RSS high-water mark (VmHWM) is reset when the RETRs start and read
before QUIT, which is exact. The *serving process* is the Letterbox process, or Dovecot's
`pop3` worker (a process per session); its RSS after login and its peak during the RETRs show
whether memory grows with the message size.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from peers import dovecot, letterbox_server
from peers.dovecot import DovecotConfig, DovecotPeer
from peers.letterbox_server import LetterboxConfig, LetterboxServer, LetterboxUnavailable
from peers.measure import (
    Sampler,
    Tracker,
    TrackerFactory,
    add_run_arguments,
    free_port,
    kernel_thread_times,
    kernel_threads_delta,
    machine_busy_seconds,
    machine_description,
    peak_rss_kib,
    port_accepts,
    pss_kib,
    reset_peak_rss,
    rss_kib,
    state_directory,
    wait_for_quiet,
    wait_until,
)
from peers.report import first_line, replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SAVED = HERE / "out" / "bench_pop3.json"
SECTION = "## POP3 (issue 4)"
DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
PASSWORD = "bench"
MB = 1 << 20
KB = 1 << 10


@dataclass(frozen=True)
class Load:
    """One mailbox of the benchmark: n messages of about `size` bytes."""

    key: str
    title: str
    messages: int
    size: int
    user: str

    def scaled(self, divisor: int) -> Load:
        n = max(1, self.messages // divisor)
        return dataclasses.replace(self, messages=n, title=f"{self.title} (÷{divisor}: {n})")


LOADS = (
    Load("50k", "1,000 × 50 KB", 1000, 50 * KB, f"small@{DOMAIN}"),
    Load("25m", "10 × 25 MB", 10, 25 * MB, f"big@{DOMAIN}"),
)

LETTERBOX = "letterbox"
CRYPT = "dovecot-crypt"
PLAIN = "dovecot-plain"
LABELS = {
    LETTERBOX: "Letterbox",
    CRYPT: "Dovecot, mail_crypt",
    PLAIN: "Dovecot, plain Maildir",
}
SERVERS = (LETTERBOX, CRYPT, PLAIN)
AIM_PEER = CRYPT

QUIET_WAIT = 10.0  # seconds to wait at most, before one measurement, for a quiet machine
BUSY_WARNING = 0.05  # share of the machine's CPU taken by other processes: figures suspect


# -- the client (runs as its own process: `bench_pop3.py --client PORT USER PASSWORD`) ---------

TERMINATOR = b"\r\n.\r\n"
CRLF = b"\r\n"
RECV = 1 << 20


class Pop3Client:
    """A minimal POP3 client on a raw socket, lockstep: one command, its whole reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(4 * MB)

    def line(self) -> bytes:
        """One single-line reply; an error unless it is +OK."""
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {data!r}")
            data += chunk
        if not data.startswith(b"+OK"):
            raise RuntimeError(f"server said {data.strip()!r}")
        return data

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def retr(self, i: int) -> memoryview:
        """The whole RETR response (status line to terminator) as a view of the buffer."""
        self.sock.sendall(b"RETR %d\r\n" % i)
        buf, pos = self.buf, 0
        view = memoryview(buf)
        try:
            while True:
                if len(buf) - pos < RECV:
                    view.release()
                    buf.extend(bytes(len(buf)))  # double it; kept for the next messages
                    view = memoryview(buf)
                got = self.sock.recv_into(view[pos:])
                if not got:
                    raise ConnectionError(f"connection closed in RETR {i} after {pos} bytes")
                pos += got
                if buf[pos - 5 : pos] == TERMINATOR:
                    break
                if buf[0] == 0x2D and b"\r\n" in buf[:pos]:  # "-ERR ...": a single line
                    raise RuntimeError(f"RETR {i}: {bytes(buf[: buf.index(CRLF)])!r}")
            if not buf.startswith(b"+OK"):
                raise RuntimeError(f"RETR {i}: {bytes(buf[:80])!r}")
            return view[:pos]
        except BaseException:
            view.release()
            raise


def checked_message(response: memoryview) -> dict[str, object]:
    """The message in a RETR response, byte-stuffing undone: its header section and body hash."""
    raw = response.tobytes()
    start = raw.index(b"\r\n") + 2
    content = raw[start : len(raw) - 3]  # without ".\r\n"; the last CRLF is the message's
    message = content.replace(b"\r\n..", b"\r\n.")
    if message.startswith(b".."):
        message = message[1:]
    split = message.find(b"\r\n\r\n")
    header, body = (message, b"") if split < 0 else (message[: split + 2], message[split + 4 :])
    return {
        "octets": len(message),
        "header": header.decode("latin-1"),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


def client_main(port: int, user: str, password: str, check: bool) -> int:
    """Log in, report STAT, RETR 1..n when told "go", report, QUIT when told "quit".

    The parent measures the server between "go" and the report; the session stays open
    until "quit" so that the pop3 worker's memory can be read before it exits.
    """
    client = Pop3Client(port)
    client.line()
    client.command(f"USER {user}")
    client.command(f"PASS {password}")
    count, octets = (int(x) for x in client.command("STAT").split()[1:3])
    print(json.dumps({"count": count, "octets": octets}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    wire, crcs, checked = [], [], []
    cpu, started = time.process_time(), time.perf_counter()
    for i in range(1, count + 1):
        response = client.retr(i)
        wire.append(len(response))
        crcs.append(zlib.crc32(response))
        if check:
            checked.append(checked_message(response))
        response.release()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    report = {"seconds": seconds, "cpu": cpu, "wire": wire, "crc": crcs, "checked": checked}
    print(json.dumps(report), flush=True)
    sys.stdin.readline()
    client.command("QUIT")
    client.sock.close()
    return 0


# -- the messages ------------------------------------------------------------------------------

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or "
    "one had by word but not what all were we when your can said there use an each which she do "
    "how their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part over new sound take "
    "only little work know place year live me back give most very after thing our just name good "
    "sentence man think say great where help through much before line right too mean old any "
    "same tell boy follow came want show also around form three small set put end does another "
    "well large must big even such because turn here why ask went men read need land different "
    "home us move try kind hand picture again change off play spell air away animal house point "
    "page letter mother answer found study still learn should invoice meeting Tuesday attached "
    "regards thanks schedule quarterly report budget draft review Letterbox Dovecot garden"
)
WORDS = _WORDS.split()
DOT_LINES = (".", "..", ".signature follows", "...and so on", ". a line that starts with a dot")


def _line_pool(rng: random.Random, count: int = 4000) -> list[bytes]:
    """Text lines of 1-14 random words (a few empty, a few starting with a dot)."""
    pool = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.03:
            pool.append(b"")
        elif roll < 0.035:
            pool.append(rng.choice(DOT_LINES).encode())
        else:
            words = rng.choices(WORDS, k=rng.randint(1, 14))
            pool.append(" ".join(words).capitalize().encode() + b".")
    return pool


def _header(load: Load, i: int, rng: random.Random, multipart: bool) -> bytes:
    subject = " ".join(rng.choices(WORDS, k=5))
    date = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(minutes=i)
    fields = [
        f"From: Benchmark Sender <{SENDER}>",
        f"To: <{load.user}>",
        f"Subject: POP3 benchmark {load.key} #{i}: {subject}",
        f"Date: {date:%a, %d %b %Y %H:%M:%S +0000}",
        f"Message-ID: <pop3-{load.key}-{i}@{DOMAIN}>",
        "MIME-Version: 1.0",
    ]
    if multipart:
        fields.append(f'Content-Type: multipart/mixed; boundary="b-{load.key}-{i}"')
    else:
        fields.append("Content-Type: text/plain; charset=us-ascii")
    return "\r\n".join(fields).encode() + b"\r\n\r\n"


def _text(rng: random.Random, pool: list[bytes], size: int) -> bytes:
    """About `size` bytes of text lines, ending with CRLF, no bare CR or LF."""
    mean = sum(map(len, pool)) / len(pool) + 2
    lines = rng.choices(pool, k=int(size / mean * 1.2) + 10)
    text = b"\r\n".join(lines)[: max(0, size - 2)]
    if text.endswith(b"\r"):
        text = text[:-1] + b"x"
    return text + b"\r\n"


def make_message(load: Load, i: int, pool: list[bytes]) -> bytes:
    """Message i of a load: plain text, or for big ones a short text and a base64 attachment."""
    rng = random.Random(f"{load.key}-{i}")
    big = load.size > MB
    header = _header(load, i, rng, multipart=big)
    if not big:
        return header + _text(rng, pool, load.size - len(header))
    boundary = f"b-{load.key}-{i}".encode()
    intro = b"--" + boundary + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    intro += _text(rng, pool, 2000)
    intro += b"--" + boundary + b"\r\nContent-Type: application/octet-stream\r\n"
    intro += b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="'
    intro += b"data-%d.bin" % i + b'"\r\n\r\n'
    outro = b"--" + boundary + b"--\r\n"
    lines = (load.size - len(header) - len(intro) - len(outro)) // 78
    encoded = base64.b64encode(rng.randbytes(lines * 57))
    attachment = b"\r\n".join(encoded[j : j + 76] for j in range(0, len(encoded), 76)) + b"\r\n"
    return header + intro + attachment + outro


@dataclass(frozen=True)
class Expected:
    """What a message must look like when it comes back."""

    header: bytes
    body_sha256: str
    octets: int


def split_message(message: bytes) -> Expected:
    split = message.index(b"\r\n\r\n")
    return Expected(
        message[: split + 2], hashlib.sha256(message[split + 4 :]).hexdigest(), len(message)
    )


MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def verify_session(expected: dict[str, Expected], checked: list[dict]) -> set[str]:
    """Every sent message back exactly once, byte-identical after prepended trace fields.

    Returns the names of the header fields the server prepended.
    """
    if len(checked) != len(expected):
        raise RuntimeError(f"{len(checked)} messages retrieved, {len(expected)} sent")
    seen: set[str] = set()
    added: set[str] = set()
    for n, got in enumerate(checked, 1):
        header = str(got["header"])
        m = MESSAGE_ID.search(header)
        if not m or m.group(1) not in expected:
            raise RuntimeError(f"message {n}: no Message-ID of a sent message")
        mid = m.group(1)
        if mid in seen:
            raise RuntimeError(f"message {n}: {mid} retrieved twice")
        seen.add(mid)
        want = expected[mid]
        raw_header = header.encode("latin-1")
        if got["body_sha256"] != want.body_sha256:
            raise RuntimeError(f"message {n} ({mid}): body differs from what was sent")
        if not raw_header.endswith(want.header):
            raise RuntimeError(f"message {n} ({mid}): sent header section changed")
        prefix = raw_header[: len(raw_header) - len(want.header)].decode("latin-1")
        added.update(re.findall(r"^([!-9;-~]+):", prefix, re.MULTILINE))
    return added


# -- the servers -------------------------------------------------------------------------------


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Subject:
    """A server with two mailboxes: deliver to it, restart it, know its POP3 port and worker."""

    name: str
    tracker: Tracker
    pop3_port: int

    def start(self, users: list[str]) -> None:
        raise NotImplementedError

    def deliver(self, user: str, messages: list[bytes]) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def serving_pids(self) -> list[int]:
        """The process(es) serving the open POP3 session."""
        raise NotImplementedError

    def check_store(self, user: str, expected: int) -> str:
        """Check what the server stored, after delivery; a note for the report, or ""."""
        return ""

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self) -> str:
        return ""


class LetterboxSubject(Subject):
    def __init__(self, root: Path, tracker: Tracker) -> None:
        self.name, self.tracker = LETTERBOX, tracker
        self.server: LetterboxServer | None = None
        self.root = root

    def start(self, users: list[str]) -> None:
        cfg = LetterboxConfig(address=users[0], password=PASSWORD)
        self.server = LetterboxServer(self.root, cfg, self.tracker)
        self.server.configure()
        for user in users[1:]:
            self.server.add_mailbox(user, PASSWORD)
        port = self.server.pop3_port
        if port is None:
            raise LetterboxUnavailable("this Letterbox has no [pop3] port setting")
        self.pop3_port = port
        self._start()

    def _start(self) -> None:
        assert self.server is not None
        self.server.start()
        wait_until(
            lambda: port_accepts(self.pop3_port),
            timeout=30,
            what=f"Letterbox POP3 on port {self.pop3_port}",
            alive=self.server.alive,
        )

    def deliver(self, user: str, messages: list[bytes]) -> None:
        assert self.server is not None
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=300) as smtp:
            for message in messages:
                smtp.sendmail(SENDER, [user], message)

    def restart(self) -> None:
        assert self.server is not None
        self.server.stop()
        self._start()

    def serving_pids(self) -> list[int]:
        assert self.server is not None and self.server.pid is not None
        return [self.server.pid]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log_tail(self) -> str:
        return self.server.log_tail() if self.server else ""


class DovecotSubject(Subject):
    def __init__(self, root: Path, tracker: Tracker, *, mail_crypt: bool) -> None:
        self.name = CRYPT if mail_crypt else PLAIN
        self.tracker, self.root, self.mail_crypt = tracker, root, mail_crypt
        self.pop3_port = free_port()
        self.peer: DovecotPeer | None = None

    def start(self, users: list[str]) -> None:
        cfg = DovecotConfig(users[0], PASSWORD, self.mail_crypt, pop3_port=self.pop3_port)
        self.peer = DovecotPeer(self.root, cfg, self.tracker)
        self.peer.configure()
        self.peer.start()
        if self.mail_crypt:
            for user in users[1:]:
                self.peer.make_keys(user)

    def deliver(self, user: str, messages: list[bytes]) -> None:
        assert self.peer is not None
        with smtplib.LMTP(str(self.peer.lmtp_socket), timeout=300) as lmtp:
            for message in messages:
                lmtp.sendmail(SENDER, [user], message)

    def restart(self) -> None:
        assert self.peer is not None
        self.peer.stop()
        self.peer.start(make_keys=False)

    def serving_pids(self) -> list[int]:
        return [pid for pid in self.tracker.pids() if _comm(pid) == "pop3"]

    def check_store(self, user: str, expected: int) -> str:
        """The Maildir holds every message; with mail_crypt, each file starts with CRYPTED."""
        assert self.peer is not None
        maildir = self.peer.maildir_of(user)
        files = [p for d in ("new", "cur") for p in (maildir / d).glob("[!.]*")]
        if len(files) != expected:
            raise RuntimeError(f"{user}'s Maildir holds {len(files)} files, not {expected}")
        if not self.mail_crypt:
            return f"{len(files)} files"
        for path in files:
            with open(path, "rb") as fh:
                if fh.read(len(dovecot.CRYPTED_MAGIC)) != dovecot.CRYPTED_MAGIC:
                    raise RuntimeError(f"{path} does not start with CRYPTED: no mail_crypt")
        return f"{len(files)} files, all start with CRYPTED"

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.stop()

    def log_tail(self) -> str:
        return self.peer.log_tail() if self.peer else ""


def make_subject(name: str, root: Path, tracker: Tracker) -> Subject:
    root.mkdir(parents=True, exist_ok=True)
    if name == LETTERBOX:
        return LetterboxSubject(root, tracker)
    return DovecotSubject(root, tracker, mail_crypt=name == CRYPT)


# -- one measurement ---------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    load: str
    messages: int
    seconds: float  # all the RETRs, as timed by the client
    wire_octets: int  # every RETR response as received (status line, stuffing, terminator)
    cpu_seconds: float  # the server's processes during the RETRs
    idle_pss_kib: int  # all the server's processes, before the session
    idle_rss_kib: int
    peak_pss_kib: int  # sampled during the RETRs
    peak_rss_kib: int  # sum of every process's VmHWM over the RETRs
    login_rss_kib: int  # the serving process after login, before the RETRs
    serving_peak_rss_kib: int  # its VmHWM over the RETRs
    client_cpu: float = 0.0
    observer_cpu: float = 0.0
    kernel_cpu: float = 0.0
    other_cpu: float = 0.0
    samples: int = 0
    timed: bool = True

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.wire_octets / MB / self.seconds

    @property
    def growth_kib(self) -> int:
        return self.serving_peak_rss_kib - self.login_rss_kib


@dataclass
class Session:
    """What a measured session returned, besides the figures."""

    wire: list[int]
    crc: list[int]
    checked: list[dict]


@dataclass
class CpuSnapshot:
    """Cumulative CPU s of the server, this process, each kernel thread, the whole machine."""

    server: float
    observer: float
    kthreads: dict[int, float]
    machine: float

    @classmethod
    def take(cls, subject: Subject) -> CpuSnapshot:
        return cls(
            subject.tracker.cpu_seconds(),
            time.process_time(),
            kernel_thread_times(),
            machine_busy_seconds(),
        )


def measure(
    subject: Subject, load: Load, *, check: bool, sample_interval: float
) -> tuple[Result, Session]:
    """One POP3 session: log in, RETR every message under the sampler, QUIT."""
    pids = subject.tracker.pids()
    idle_pss = sum(pss_kib(pid) for pid in pids)
    idle_rss = sum(rss_kib(pid) for pid in pids)
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", str(subject.pop3_port)]
    argv += [load.user, PASSWORD] + (["--check"] if check else [])
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    try:
        stat = _client_reply(client)
        if stat["count"] != load.messages:
            raise RuntimeError(f"STAT says {stat['count']} messages, expected {load.messages}")
        serving = subject.serving_pids()
        if not serving:
            raise RuntimeError("no process serves the POP3 session")
        login_rss = max(rss_kib(pid) for pid in serving)
        for pid in subject.tracker.pids():
            reset_peak_rss(pid)
        sampler = Sampler(subject.tracker, interval=sample_interval)
        before = CpuSnapshot.take(subject)
        with sampler:
            client.stdin.write("go\n")
            client.stdin.flush()
            report = _client_reply(client)
            after = CpuSnapshot.take(subject)
            hwm = {pid: peak_rss_kib(pid) for pid in subject.tracker.pids()}
        client.stdin.write("quit\n")
        client.stdin.flush()
        if client.wait(60):
            raise RuntimeError(f"the POP3 client exited with {client.returncode}")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    server_cpu = after.server - before.server
    observer = after.observer - before.observer
    kthreads = kernel_threads_delta(before.kthreads, after.kthreads)
    machine = after.machine - before.machine
    client_cpu = float(report["cpu"])
    result = Result(
        server=subject.name,
        load=load.key,
        messages=len(report["wire"]),
        seconds=float(report["seconds"]),
        wire_octets=sum(report["wire"]),
        cpu_seconds=server_cpu,
        idle_pss_kib=idle_pss,
        idle_rss_kib=idle_rss,
        peak_pss_kib=sampler.peak.pss_kib,
        peak_rss_kib=sum(hwm.values()),
        login_rss_kib=login_rss,
        serving_peak_rss_kib=max(hwm.get(pid, 0) for pid in serving),
        client_cpu=client_cpu,
        observer_cpu=observer,
        kernel_cpu=kthreads,
        other_cpu=max(0.0, machine - server_cpu - observer - client_cpu - kthreads),
        samples=sampler.peak.samples,
        timed=not check,
    )
    return result, Session(report["wire"], report["crc"], report["checked"])


def _client_reply(client: subprocess.Popen[str]) -> dict:
    assert client.stdout is not None
    line = client.stdout.readline()
    if not line:
        client.wait(10)
        raise RuntimeError(f"the POP3 client failed (exit {client.returncode})")
    return dict(json.loads(line))


# -- reporting ---------------------------------------------------------------------------------


def _mb(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def other_share(r: Result) -> float:
    """Share of the machine's CPU capacity that other processes took during the RETRs."""
    return r.other_cpu / (r.seconds * (os.cpu_count() or 1))


def quiet(r: Result) -> bool:
    return other_share(r) <= BUSY_WARNING


def representative(runs: list[Result]) -> Result:
    """The run with the median msgs/s among those on a quiet machine, else the least disturbed."""
    calm = sorted((r for r in runs if quiet(r)), key=lambda r: r.rate)
    return calm[(len(calm) - 1) // 2] if calm else min(runs, key=other_share)


Results = dict[str, dict[str, list[Result]]]  # load key -> server -> timed runs


def load_table(runs: dict[str, list[Result]], servers: list[str]) -> list[str]:
    lines = [
        "| server | msgs/s | MB/s | seconds | CPU s | idle RSS MB | peak RSS MB | idle PSS MB "
        "| peak PSS MB | msgs/s ratio (↑) | peak RSS ratio (↓) | CPU ratio (↓) "
        "| msgs/s of all runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    ours = representative(runs[LETTERBOX]) if runs.get(LETTERBOX) else None
    for name in servers:
        if not runs.get(name):
            lines.append(f"| {LABELS[name]} |" + " – |" * 11 + " not measured |")
            continue
        r = representative(runs[name])
        if ours is None or name == LETTERBOX:
            ratios = "– | – | –"
        else:
            ratios = (
                f"{_ratio(ours.rate, r.rate)} | {_ratio(ours.peak_rss_kib, r.peak_rss_kib)} | "
                f"{_ratio(ours.cpu_seconds, r.cpu_seconds)}"
            )
        every = ", ".join(f"{x.rate:,.1f}" + ("" if quiet(x) else " (busy)") for x in runs[name])
        lines.append(
            f"| {LABELS[name]} | {r.rate:,.1f} | {r.mb_per_s:,.1f} | {r.seconds:.2f} | "
            f"{r.cpu_seconds:.2f} | {_mb(r.idle_rss_kib)} | {_mb(r.peak_rss_kib)} | "
            f"{_mb(r.idle_pss_kib)} | {_mb(r.peak_pss_kib)} | {ratios} | {every} |"
        )
    return lines


def outside_cpu_line(runs: dict[str, list[Result]], servers: list[str]) -> str:
    parts = []
    for name in servers:
        if not runs.get(name):
            continue
        r = representative(runs[name])
        share = other_share(r)
        warn = " — **machine busy, figures suspect**" if share > BUSY_WARNING else ""
        parts.append(
            f"{LABELS[name]} {r.client_cpu:.2f} / {r.observer_cpu:.2f} / {r.kernel_cpu:.2f} / "
            f"{r.other_cpu:.2f} s ({share:.0%} of the machine){warn}"
        )
    return (
        "CPU outside the server in the reported run (POP3 client / this benchmark / kernel "
        "threads / other processes): " + "; ".join(parts) + "."
    )


def serving_lines(runs: dict[str, list[Result]], servers: list[str]) -> list[str]:
    """The serving process's RSS after login and at its peak, every run."""
    lines = []
    for name in servers:
        if not runs.get(name):
            continue
        what = "Letterbox process" if name == LETTERBOX else "`pop3` worker"
        each = ", ".join(
            f"{_mb(r.login_rss_kib)} → {_mb(r.serving_peak_rss_kib)} (+{_mb(r.growth_kib)})"
            for r in runs[name]
        )
        lines.append(f"- {LABELS[name]}: {what} RSS MB after login → peak during the RETRs: {each}")
    return lines


@dataclass
class Aim:
    text: str
    value: float | None
    target: float
    higher_is_better: bool = True
    unit: str = "×"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "met" if ok else "NOT met"

    def line(self) -> str:
        if self.value is None:
            shown = "–"
        elif self.unit == "×":
            shown = f"{self.value:.2f}×"
        else:
            shown = f"{self.value:.1f} {self.unit}"
        note = f" ({self.note})" if self.note else ""
        return f"- {self.text}: {shown} — **{self.verdict}**{note}"


RSS_GROWTH_LIMIT_MB = 8.0


def aims(results: Results) -> list[Aim]:
    """Throughput on the representative runs; RSS flatness on the worst run."""

    def ratio(load: str, peer: str, attr: str) -> float | None:
        runs = results.get(load, {})
        if not runs.get(LETTERBOX) or not runs.get(peer):
            return None
        ours, theirs = representative(runs[LETTERBOX]), representative(runs[peer])
        return float(getattr(ours, attr)) / float(getattr(theirs, attr))

    def growth(load: str) -> float | None:
        runs = results.get(load, {}).get(LETTERBOX)
        return max(r.growth_kib for r in runs) / 1024 if runs else None

    def peak(load: str) -> str:
        runs = results.get(load, {}).get(LETTERBOX)
        return f"{max(r.serving_peak_rss_kib for r in runs) / 1024:.1f} MB" if runs else "–"

    def scale(load: str, attr: str) -> str:
        value = ratio(load, PLAIN, attr)
        return "" if value is None else f"for scale, vs {LABELS[PLAIN]}: {value:.2f}×"

    peer = LABELS[AIM_PEER]
    small_growth = growth("50k")
    return [
        Aim(
            f"1,000 × 50 KB: Letterbox ≥ 1.0× {peer} msgs/s",
            ratio("50k", AIM_PEER, "rate"),
            1,
            note=scale("50k", "rate"),
        ),
        Aim(
            f"10 × 25 MB: Letterbox ≥ 1.0× {peer} MB/s",
            ratio("25m", AIM_PEER, "mb_per_s"),
            1,
            note=scale("25m", "mb_per_s"),
        ),
        Aim(
            "RSS flat in message size: Letterbox process RSS growth over its RSS after login, "
            f"during the 25 MB RETRs, ≤ {RSS_GROWTH_LIMIT_MB:.0f} MB (worst run)",
            growth("25m"),
            RSS_GROWTH_LIMIT_MB,
            higher_is_better=False,
            unit="MB",
            note=f"worst runs: peak RSS {peak('25m')} with the 25 MB messages; with the 50 KB "
            f"ones peak {peak('50k')}, growth "
            + ("–" if small_growth is None else f"{small_growth:.1f} MB"),
        ),
    ]


@dataclass
class RunInfo:
    started: datetime.datetime
    machine: str
    versions: str
    cpu_method: str
    repeat: int
    servers: list[str]
    loads: list[Load]
    sizes: dict[str, float] = field(default_factory=dict)  # mean message size per load, bytes
    stores: list[str] = field(default_factory=list)
    added_headers: dict[str, list[str]] = field(default_factory=dict)
    setup_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def method_lines(info: RunInfo) -> list[str]:
    return [
        "- Messages: generated and seeded, the same in every server: 1,000 distinct text "
        "messages of 50 KB (random words, CRLF, some lines starting with a dot) and 10 of 25 MB "
        "(a short text and a base64 attachment), in two mailboxes. Mean sizes as sent: "
        + ", ".join(f"{k} {v / KB:,.1f} KB" for k, v in info.sizes.items())
        + ".",
        "- Letterbox: `letterbox run --dev`, two mailboxes (`mailbox add`), mail delivered over "
        "its SMTP port with smtplib, POP3 on its own loopback port (plaintext login, --dev).",
        "- Dovecot: Debian's Dovecot POP3 (`dovecot-pop3d`), a private instance "
        "(`dovecot -F -c FILE`, bench/peers/dovecot.py) with POP3 on a loopback port, static "
        "passdb/userdb, Maildir; mail delivered over its LMTP socket with smtplib.LMTP. "
        "*mail_crypt*: per-user P-256 keys (`mail_crypt_save_version = 2`), every stored file "
        "checked to start with `CRYPTED`; *plain Maildir*: the same without the plugin. The "
        "aims are measured against mail_crypt (both servers keep mail encrypted at rest).",
        "- Every server restarted after delivery. Then one untimed session per (server, "
        "mailbox) that checks every message (it also warms the caches; the files are in the "
        "page cache for all servers), then the timed sessions: every (server, mailbox) "
        f"{info.repeat} times, the servers taking turns, and up to 3 more times for a server "
        "none of whose runs was on a quiet machine; before each, up to 10 s of waiting for "
        "other processes to go quiet (90 s in all).",
        "- Client: a raw-socket POP3 client in bench_pop3.py, its own process, the same for "
        "every server: USER/PASS, STAT, then RETR 1..n in lockstep (each response read whole "
        "in ≤ 1 MiB `recv_into` calls before the next command), QUIT without DELE. *seconds*: "
        "from the first RETR sent to the last response's end. *MB/s*: RETR responses as "
        "received (MB = 2²⁰ bytes). The tables show the run with the median msgs/s among the "
        "runs on a quiet machine (other processes took ≤ 5 % of the CPU; if none was, the "
        "least disturbed run), and the msgs/s of every run, busy ones marked.",
        "- Correctness: in the checked session, every sent message came back exactly once, "
        "its body byte-identical (SHA-256 after undoing the byte-stuffing) and its header "
        "section ending with the sent header section; prepended trace fields: "
        + "; ".join(f"{LABELS[k]}: {', '.join(v) or 'none'}" for k, v in info.added_headers.items())
        + ". In the timed sessions every response had the length and CRC-32 of the checked one.",
        "- *idle RSS / PSS*: summed over all the server's processes before the session. *peak "
        "RSS*: the sum over the server's processes of each one's RSS high-water mark (VmHWM, "
        "reset when the RETRs start, read before QUIT: exact, and shared pages counted in "
        "every process). *peak PSS*: the largest sum of PSS (`/proc/PID/smaps_rollup`) "
        "sampled every 100 ms during the RETRs.",
        f"- *CPU s*: user + system CPU of all the server's processes during the RETRs, by "
        f"{info.cpu_method}.",
        "- Ratios are Letterbox ÷ peer: for msgs/s higher is better (↑), for RSS and CPU "
        "lower is better (↓).",
    ]


def report(info: RunInfo, results: Results) -> str:
    out = [
        SECTION,
        "",
        f"Command: `make bench BENCH=pop3` — run {info.started:%Y-%m-%d %H:%M %Z}".rstrip(),
        f"Machine: {info.machine}",
        f"Versions: {info.versions}",
        "",
        *method_lines(info),
        "",
    ]
    for load in info.loads:
        runs = results.get(load.key, {})
        out += [f"### RETR of {load.title}", "", *load_table(runs, info.servers), ""]
        if runs:
            out += [outside_cpu_line(runs, info.servers), "", *serving_lines(runs, info.servers)]
            out += [""]
    out += ["### Aims", "", *(a.line() for a in aims(results)), ""]
    if info.stores or info.notes:
        out += ["### Notes", "", *(f"- {n}" for n in [*info.stores, *info.notes]), ""]
    return "\n".join(out)


def write_results(section: str) -> None:
    replace_section(RESULTS, SECTION, section)


def versions() -> str:
    """Versions of the servers compared, so that figures can be traced."""
    commit = first_line("git", "-C", str(HERE), "describe", "--always", "--dirty")
    dc = first_line(dovecot.DOVECOT, "--version").split(" ")[0]
    lb = first_line(str(letterbox_server.LETTERBOX), "--version")
    return f"{lb} (git {commit}), Dovecot {dc}"


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", type=int, default=1, metavar="N", help="divide message counts by N")
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    p.add_argument(
        "--loads", nargs="+", choices=[x.key for x in LOADS], default=[x.key for x in LOADS]
    )
    add_run_arguments(p, name="pop3", quiet_budget=90.0)
    p.add_argument(
        "--extra",
        type=int,
        default=3,
        metavar="N",
        help="up to N more runs for a server none of whose runs was on a quiet machine",
    )
    return p.parse_args(argv)


@dataclass
class Run:
    info: RunInfo
    results: Results
    complete: bool = False
    failed: bool = False


def setup(
    subjects: dict[str, Subject], loads: list[Load], info: RunInfo
) -> dict[str, dict[str, Expected]]:
    """Generate the messages, deliver them to every server at once, restart the servers."""
    users = [load.user for load in loads]
    for subject in subjects.values():
        subject.start(users)
    expected: dict[str, dict[str, Expected]] = {}
    pool = _line_pool(random.Random("pop3-bench"))
    for load in loads:
        started = time.monotonic()
        messages = [make_message(load, i, pool) for i in range(1, load.messages + 1)]
        expected[load.key] = {
            f"<pop3-{load.key}-{i}@{DOMAIN}>": split_message(m) for i, m in enumerate(messages, 1)
        }
        info.sizes[load.key] = sum(map(len, messages)) / len(messages)
        generated = time.monotonic() - started
        errors: list[str] = []

        threads = [
            threading.Thread(target=_deliver, args=(s, load, messages, errors))
            for s in subjects.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("; ".join(errors))
        print(
            f"{load.title}: generated in {generated:.1f} s, delivered to every server in "
            f"{time.monotonic() - started - generated:.1f} s",
            flush=True,
        )
        for subject in subjects.values():
            note = subject.check_store(load.user, load.messages)
            if note:
                info.stores.append(f"{LABELS[subject.name]}, {load.title} stored: {note}")
    for subject in subjects.values():
        subject.restart()
    return expected


def _deliver(subject: Subject, load: Load, messages: list[bytes], errors: list[str]) -> None:
    """One server's delivery, on a thread of its own; failures are collected in `errors`."""
    try:
        subject.deliver(load.user, messages)
    except Exception as exc:
        errors.append(f"{LABELS[subject.name]}: delivery failed: {exc!r}")


def run_all(args: argparse.Namespace) -> Run:
    loads = [x for x in LOADS if x.key in args.loads]
    if args.quick > 1:
        loads = [x.scaled(args.quick) for x in loads]
    servers = [s for s in SERVERS if s in args.servers]
    for name, why in (
        (LETTERBOX, letterbox_server.available() if LETTERBOX in servers else None),
        (CRYPT, dovecot.available() if set(servers) & {CRYPT, PLAIN} else None),
    ):
        if why:
            raise SystemExit(f"bench_pop3: {LABELS[name]}: {why}")
    if (set(servers) & {CRYPT, PLAIN}) and not Path("/usr/lib/dovecot/pop3").exists():
        raise SystemExit("bench_pop3: missing Dovecot POP3 (Debian package dovecot-pop3d)")
    factory = TrackerFactory(allow_cgroup=not args.no_cgroup)
    info = RunInfo(
        datetime.datetime.now().astimezone(),
        machine_description(),
        versions(),
        factory.method,
        args.repeat,
        servers,
        loads,
    )
    print(f"{info.machine}\n{info.versions}\nCPU accounting: {info.cpu_method}", flush=True)
    run = Run(info, {})
    begun = time.monotonic()
    try:
        with state_directory("pop3", args.keep) as state:
            subjects = {n: make_subject(n, state / n, factory.new(n)) for n in servers}
            try:
                expected = setup(subjects, loads, info)
                info.setup_seconds = time.monotonic() - begun
                measure_all(subjects, loads, expected, args, run)
            except Exception:
                for subject in subjects.values():
                    with contextlib.suppress(Exception):
                        print(f"--- {LABELS[subject.name]} log ---\n{subject.log_tail()}")
                raise
            finally:
                for subject in subjects.values():
                    with contextlib.suppress(Exception):
                        subject.stop()
    finally:
        factory.close()
    print(f"Whole run: {time.monotonic() - begun:.0f} s", flush=True)
    run.complete = (
        not run.failed
        and args.quick == 1
        and [x.key for x in loads] == [x.key for x in LOADS]
        and servers == list(SERVERS)
        and all(
            len(run.results.get(x.key, {}).get(n, [])) >= args.repeat
            for x in loads
            for n in servers
        )
    )
    return run


def measure_all(
    subjects: dict[str, Subject],
    loads: list[Load],
    expected: dict[str, dict[str, Expected]],
    args: argparse.Namespace,
    run: Run,
) -> None:
    """The checked session of every (server, mailbox), then the timed ones, taking turns."""
    info = run.info
    reference: dict[tuple[str, str], Session] = {}
    for load in loads:
        for name, subject in subjects.items():
            r, session = measure(subject, load, check=True, sample_interval=args.sample_interval)
            added = verify_session(expected[load.key], session.checked)
            info.added_headers[name] = sorted(set(info.added_headers.get(name, [])) | added)
            reference[(load.key, name)] = Session(session.wire, session.crc, [])
            print(
                f"{load.title}, checked session: {LABELS[name]} {r.rate:,.1f} msgs/s, "
                f"{r.mb_per_s:,.1f} MB/s; all {r.messages} byte-identical "
                f"(prepended: {', '.join(sorted(added)) or 'nothing'})",
                flush=True,
            )
    for load in loads:
        for rep in range(1, args.repeat + 1):
            for subject in subjects.values():
                timed_run(subject, load, f"run {rep}/{args.repeat}", reference, args, run)
        # A shared machine: a server whose every run was disturbed gets a few more tries.
        for name, subject in subjects.items():
            for extra in range(1, args.extra + 1):
                runs = run.results.get(load.key, {}).get(name, [])
                if not runs or any(quiet(r) for r in runs):
                    break
                timed_run(
                    subject, load, f"extra run {extra} (no quiet run yet)", reference, args, run
                )


def timed_run(
    subject: Subject,
    load: Load,
    label: str,
    reference: dict[tuple[str, str], Session],
    args: argparse.Namespace,
    run: Run,
) -> None:
    """One timed session after waiting for a quiet moment; its result joins `run.results`."""
    name = subject.name
    if args.quiet_budget > 0:
        waited, share = wait_for_quiet(max_wait=min(QUIET_WAIT, args.quiet_budget))
        args.quiet_budget -= waited
        if share >= BUSY_WARNING:
            print(f"(machine busy: others use {share:.0%})", end=" ", flush=True)
    print(f"{load.title}, {label}: {LABELS[name]} ...", end=" ", flush=True)
    try:
        r, session = measure(subject, load, check=False, sample_interval=args.sample_interval)
        ref = reference[(load.key, name)]
        if (session.wire, session.crc) != (ref.wire, ref.crc):
            raise RuntimeError("responses differ from the checked session's")
    except Exception as exc:
        print("FAILED", flush=True)
        print(f"bench_pop3: {LABELS[name]}, {load.title}: {exc}", file=sys.stderr)
        run.failed = True
        return
    run.results.setdefault(load.key, {}).setdefault(name, []).append(r)
    print(
        f"{r.rate:,.1f} msgs/s, {r.mb_per_s:,.1f} MB/s, {r.seconds:.2f} s, "
        f"CPU {r.cpu_seconds:.2f} s, peak RSS {_mb(r.peak_rss_kib)} MB "
        f"(serving process {_mb(r.login_rss_kib)} → {_mb(r.serving_peak_rss_kib)}), "
        f"peak PSS {_mb(r.peak_pss_kib)} MB; client {r.client_cpu:.2f} s, other "
        f"processes {r.other_cpu:.2f} s ({other_share(r):.0%} of the machine)",
        flush=True,
    )


def save_run(run: Run, path: Path) -> None:
    data = dataclasses.asdict(run)
    data["info"]["started"] = run.info.started.isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_run(path: Path) -> Run:
    data = json.loads(path.read_text())
    raw = data["info"]
    info = RunInfo(
        **{
            **raw,
            "started": datetime.datetime.fromisoformat(raw["started"]),
            "loads": [Load(**x) for x in raw["loads"]],
        }
    )
    results = {
        key: {name: [Result(**r) for r in runs] for name, runs in by_server.items()}
        for key, by_server in data["results"].items()
    }
    return Run(info, results, data["complete"], data["failed"])


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--client"]:
        port, user, password = argv[1:4]
        return client_main(int(port), user, password, "--check" in argv[4:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if args.from_json:
        run = load_run(args.from_json)
    else:
        run = run_all(args)
        save_run(run, SAVED)
    text = report(run.info, run.results)
    print("\n" + text)
    if run.complete and not args.no_results:
        write_results(text)
        print(f"Wrote the POP3 section of {RESULTS.relative_to(HERE.parent)}")
    elif not args.no_results:
        print("bench/RESULTS.md not updated (partial, quick or failed run)")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The whole product as a household meets it, in QEMU: build the qemu-x86_64 image (reused
when its inputs are unchanged), boot it with the ports forwarded to loopback and a blank
emulated USB stick, read the setup code from the serial console, claim the box and format
the stick on the setup page, add a mailbox, send it a mail over SMTP, read the mail back
over POP3 with STLS, and power the VM off through ACPI, checking systemd stopped
Letterbox cleanly.

Slow (one to five minutes, most of it the image build on a cold apt cache); it runs in
CI through `make test`, which installs the image tools. It needs root for mmdebstrap.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import poplib
import re
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from image import boards, build, partitions
from image.qemu import QemuVM
from tests.helpers import unverified_tls
from tests.integration.harness import free_port

BOARD = "qemu-x86_64"
BOOT_TIMEOUT = 300  # seconds; TCG on a busy 2-core machine
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PASSWORD = "a long admin password"
MAILBOX = "alice@example.org"
# The storage page's format form: the candidate's id, then its devnode to type back.
FORMAT_FORM = re.compile(
    r'action="/storage/format".*?name="candidate" value="([^"]+)".*?<code>([^<]+)</code>', re.S
)
MAILBOX_PASSWORD = "alice's long password"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="building an image needs root (mmdebstrap)"),
]


class Browser:
    """Just enough of a browser for the setup page: cookies, redirects, hidden fields."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str, str]:
        try:
            with self.opener.open(self.base + path, timeout=60) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=120) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode()

    @staticmethod
    def csrf(page: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m, "no csrf field on the page"
        return m.group(1)


def wait_for_page(browser: Browser, path: str, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, url, body = browser.get(path)
            if status == 200:
                return url, body
            last = status
        except OSError as exc:  # refused or reset while the guest boots
            last = exc
        time.sleep(1)
    raise AssertionError(f"{path} did not answer 200 within {timeout:.0f} s (last: {last})")


@pytest.fixture(scope="module")
def image() -> Path:
    board = boards.load(BOARD)
    t0 = time.monotonic()
    path = build.build(board, compression="zstd")
    print(f"image ready in {time.monotonic() - t0:.0f} s")
    return path


def test_built_image_layout_and_manifest(image: Path) -> None:
    manifest = json.loads(image.with_suffix(".manifest.json").read_text())
    assert manifest["inputs_sha256"] == build.inputs_hash(boards.load(BOARD))
    layout = partitions.layout(image)
    assert layout == manifest["partitions"]
    assert [p["type"] for p in layout] == ["c", "83"]
    assert layout[0]["bootable"] and layout[0]["start"] == 8192
    sample = partitions.read_boot_file(image, "letterbox.toml").decode()
    assert sample.startswith("# Letterbox first-boot settings")
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        assert partitions.read_boot_file(image, name)
    debs = manifest["debian_packages"]
    assert {"linux-image-amd64", "python3", "udev", "openssh-server"} <= set(debs)
    assert "avahi-daemon" not in debs  # mDNS is the daemon's own
    assert manifest["python_packages"]["letterbox"] == "0.1.0"
    sums = (image.parent / "SHA256SUMS").read_text()
    assert f"  {image.name}\n" in sums and f"  {image.name}.zst\n" in sums


def test_boot_claim_format_mail_and_power_off(image: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("smtp", "pop3", "pop3s", "web", "ssh")}
    board = boards.load(BOARD)
    serial = tmp_path / "serial.log"
    # A disk 1 GiB larger than the image: first boot must grow the root to fill it.
    vm = QemuVM(
        board,
        image,
        tmp_path / "vm",
        ports=ports,
        disk_size=image.stat().st_size + (1 << 30),
        serial_file=serial,
    )
    t0 = time.monotonic()
    vm.start()
    try:
        code = vm.wait_for_serial(r"letterbox-firstboot: setup code: ([0-9A-Z-]+)", BOOT_TIMEOUT)
        setup_code = code.group(1)
        vm.wait_for_serial(r"letterbox: ready", BOOT_TIMEOUT)
        print(f"booted to ready in {time.monotonic() - t0:.0f} s")
        log = ANSI.sub("", vm.serial_text())
        assert "grew the root filesystem by 1024 MiB" in log

        # The setup page answers through the forwarded port; an unclaimed box sends
        # every page to /claim.
        browser = Browser(f"http://127.0.0.1:{ports['web']}")
        url, page = wait_for_page(browser, "/", BOOT_TIMEOUT)
        assert url.endswith("/claim")
        status, url, page = browser.post(
            "/claim",
            {
                "csrf": browser.csrf(page),
                "setup_code": setup_code.lower(),  # typed casually
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert status == 200 and not url.endswith("/claim"), page[:500]

        # The blank emulated USB stick is offered for formatting; confirm with its devnode.
        deadline = time.monotonic() + 120
        while True:
            status, _, page = browser.get("/storage")
            assert status == 200
            m = FORMAT_FORM.search(page)
            if m or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert m, f"no USB stick offered on /storage:\n{page[:2000]}"
        candidate, devnode = m.group(1), m.group(2)
        assert devnode.startswith("/dev/sd")
        status, _, page = browser.post(
            "/storage/format",
            {"csrf": browser.csrf(page), "candidate": candidate, "confirm": devnode},
        )
        assert status == 200, page[:2000]
        deadline = time.monotonic() + 120
        while 'class="state-online"' not in page:
            assert time.monotonic() < deadline, f"the drive did not come online:\n{page[:2000]}"
            time.sleep(2)
            _, _, page = browser.get("/storage")

        # A mailbox, unlocked at login.
        _, _, page = browser.get("/mailboxes")
        status, url, page = browser.post(
            "/mailboxes",
            {
                "csrf": browser.csrf(page),
                "address": MAILBOX,
                "password": MAILBOX_PASSWORD,
                "password2": MAILBOX_PASSWORD,
                "quota": "",
                "mode": "login",
            },
        )
        assert status == 200 and "/mailboxes/created/" in url, page[:2000]

        # Mail in over the forwarded SMTP port, out over the forwarded POP3 port.
        token = uuid.uuid4().hex
        msg = EmailMessage()
        msg["From"] = "bob@elsewhere.example"
        msg["To"] = MAILBOX
        msg["Subject"] = f"hello from the image test {token}"
        msg.set_content(f"Body {token}\n")
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=120) as smtp:
            smtp.ehlo("test.example")
            refused = smtp.send_message(msg)
            assert refused == {}
        tls = unverified_tls()  # the box's certificate is self-signed
        pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=120)
        try:
            pop.stls(context=tls)  # RFC 2595 §4
            pop.user(MAILBOX)
            pop.pass_(MAILBOX_PASSWORD)
            count, _size = pop.stat()
            assert count == 1
            _, lines, _ = pop.retr(1)
            text = b"\r\n".join(lines).decode()
            assert f"Subject: hello from the image test {token}" in text
            assert f"Body {token}" in text
        finally:
            pop.quit()

        # Power button: systemd stops Letterbox and the VM exits on its own.
        assert vm.powerdown(timeout=180) == 0
        log = ANSI.sub("", vm.serial_text())
        assert re.search(r"Stopped letterbox\.service", log), log[-3000:]
        assert "reboot: Power down" in log
        print(f"whole run {time.monotonic() - t0:.0f} s")
    finally:
        vm.kill()

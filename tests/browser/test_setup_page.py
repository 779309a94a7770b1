"""End to end in a real headless browser: Debian's Chromium, driven by Selenium
through Debian's chromedriver (installed by `make test`), against a real
`letterbox run --dev` process.

Claim the box → add a mailbox → send it a mail over SMTP → see its usage change →
download the Thunderbird autoconfig and the Apple profile. Every page is saved as a
screenshot under build/screenshots/ (a CI artefact) and checked not to be blank.
The browser runs with JavaScript disabled: every step must work without it.
"""

from __future__ import annotations

import io
import plistlib
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from letterbox import claim
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.harness import Run, write_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
ADMIN = "admin password 1"
ANNA = "anna@family.example"

pytestmark = pytest.mark.slow


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path / "data", write_config(tmp_path / "letterbox.toml"))
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (make test installs them)")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=420,900",  # a phone-sized window: the page must read well there
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "profile.managed_default_content_settings.javascript": 2,  # no JavaScript
        },
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: object, name: str) -> Path:
    """Save a screenshot and check it shows something: more than one colour, and
    not almost all one colour."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 1, f"{name}: blank screenshot"
    most = max(count for count, _ in colours)
    assert most < 0.995 * image.width * image.height, f"{name}: nearly blank screenshot"
    return path


def submit(driver: object, form_action: str, **fields: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, f'form[action="{form_action}"]')  # type: ignore[attr-defined]
    for name, value in fields.items():
        element = form.find_element(By.NAME, name)
        if element.get_attribute("type") == "radio":
            form.find_element(By.CSS_SELECTOR, f'input[name="{name}"][value="{value}"]').click()
            continue
        element.clear()
        element.send_keys(value)
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    # A click does not always wait for the next page (claiming runs Argon2id first).
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(form))
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def usage_of(driver: object, address: str) -> tuple[str, str]:
    used = driver.find_element(By.CSS_SELECTOR, f'.usage[data-mailbox="{address}"]').text  # type: ignore[attr-defined]
    messages = driver.find_element(By.CSS_SELECTOR, f'.messages[data-mailbox="{address}"]').text  # type: ignore[attr-defined]
    return used, messages


def test_claim_add_mail_usage_and_device_setup(box: Run, browser: object) -> None:
    d = browser
    base = f"http://127.0.0.1:{box.web_port}"

    d.get(base + "/")  # type: ignore[attr-defined]
    assert d.current_url == base + "/claim"  # type: ignore[attr-defined]
    shoot(d, "01-claim")
    code = claim.setup_code(box.data)
    assert code is not None
    submit(d, "/claim", setup_code=code, password=ADMIN, password2=ADMIN)
    assert d.current_url == base + "/status"  # type: ignore[attr-defined]
    assert "Running for" in d.page_source  # type: ignore[attr-defined]
    shoot(d, "02-status")

    d.get(base + "/mailboxes")  # type: ignore[attr-defined]
    shoot(d, "03-mailboxes")
    submit(
        d,
        "/mailboxes",
        address=ANNA,
        quota="10M",
        mode="login",
        password="anna's password",
        password2="anna's password",
    )
    assert "/mailboxes/created/" in d.current_url  # type: ignore[attr-defined]
    recovery = d.find_element(By.ID, "recovery-code").text  # type: ignore[attr-defined]
    assert re.fullmatch(r"[\w-]{16,}", recovery), recovery
    shoot(d, "04-recovery-code")

    d.get(base + "/storage")  # type: ignore[attr-defined]
    before = usage_of(d, ANNA)
    assert before[1] == "0"
    body = b"Subject: Hello Anna\r\n\r\n" + b"A letter for the box.\r\n" * 2000
    with smtplib.SMTP("127.0.0.1", box.port, timeout=10) as smtp:
        smtp.sendmail("friend@example.net", [ANNA], body)
    d.refresh()  # type: ignore[attr-defined]
    after = usage_of(d, ANNA)
    assert after[1] == "1" and after[0] != before[0], (before, after)
    shoot(d, "05-storage")

    d.get(base + "/settings")  # type: ignore[attr-defined]
    assert "_dmarc.family.example." in d.page_source  # type: ignore[attr-defined]
    shoot(d, "06-settings")

    d.get(base + "/devices")  # type: ignore[attr-defined]
    qr = d.find_element(By.CSS_SELECTOR, "img.qr")  # type: ignore[attr-defined]
    assert qr.get_property("naturalWidth") > 0  # the SVG loaded under the CSP
    shoot(d, "07-devices")

    d.find_element(By.CSS_SELECTOR, "a.profile").click()  # type: ignore[attr-defined]
    profile = wait_for_download(d.downloads, ".mobileconfig")  # type: ignore[attr-defined]
    doc = plistlib.loads(profile.read_bytes())
    (account,) = doc["PayloadContent"]
    assert account["EmailAddress"] == ANNA
    assert account["IncomingMailServerPortNumber"] == box.pop3s_port

    d.find_element(By.ID, "autoconfig").click()  # type: ignore[attr-defined]
    time.sleep(0.2)
    shoot(d, "08-autoconfig")
    source = d.page_source  # type: ignore[attr-defined]
    assert "clientConfig" in source and "family.example" in source
    # Chromium shows XML in a viewer; the bytes as served come from the browser's own
    # fetch (through the DevTools protocol: the page itself runs no JavaScript).
    xml = d.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Runtime.evaluate",
        {
            "expression": "fetch('/.well-known/autoconfig/mail/config-v1.1.xml'"
            ").then(r => r.text())",
            "awaitPromise": True,
        },
    )["result"]["value"]
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig"
    ports = {s.findtext("port") for s in root.iter("incomingServer")}
    assert ports == {str(box.pop3_port), str(box.pop3s_port)}
    # Nothing typed into the page reaches the box's log.
    log = box.stderr()
    for secret in (ADMIN, "anna's password", recovery, code):
        assert secret not in log


def wait_for_download(folder: Path, suffix: str, timeout: float = 10) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no {suffix} downloaded: {sorted(p.name for p in folder.iterdir())}")

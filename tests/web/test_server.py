"""The web server's place in `letterbox run`: its port, and a busy port not stopping mail."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

from letterbox.config import WebSettings
from letterbox.web.server import listen_address

from tests.integration.harness import Run, write_config


def test_listen_address_defaults() -> None:
    assert listen_address(WebSettings(), dev=False) == ("", 80)
    assert listen_address(WebSettings(), dev=True) == ("127.0.0.1", 8080)
    assert listen_address(WebSettings("192.0.2.1", 8888), dev=True) == ("192.0.2.1", 8888)


def test_a_busy_web_port_does_not_stop_the_box_receiving_mail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "letterbox.toml")
        config.write_text(config.read_text().replace("[web]\nport = ", f"[web]\nport = {port}\n#"))
        run = Run(tmp_path / "data", config)
        try:
            assert "web   not listening" in run.out
            with smtplib.SMTP("127.0.0.1", run.port, timeout=30) as smtp:
                smtp.sendmail(
                    "me@example.org",
                    ["postmaster@letterbox.test"],
                    b"Subject: hi\r\n\r\nstill here\r\n",
                )
            assert run.stop() == 0
        finally:
            run.kill()
        assert f"web: cannot listen on port {port}" in run.stderr()

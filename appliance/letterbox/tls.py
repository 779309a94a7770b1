"""The box's TLS certificate: the configured one, or a self-signed one made on first run.

Inbound SMTP TLS is opportunistic (RFC 3207): sending MTAs do not verify the
certificate of an MX, so a self-signed certificate still encrypts every session
against passive listeners, and the household can configure a real one later
(`smtp.tls_cert`, `smtp.tls_key`). The key is ECDSA P-256: quick to make and to
handshake on a small board, and accepted by every current MTA.

The pair lives with the box keys on the SD card (DATA/box/tls/), never on the
drive: a drive moved to another box must not carry this box's identity.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import ssl
from pathlib import Path

from letterbox.fsutil import write_atomic

log = logging.getLogger(__name__)

TLS_DIR = "box/tls"
VALID_DAYS = 3650
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.+?)-----END CERTIFICATE-----", re.DOTALL
)


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    d = data_dir / TLS_DIR
    return d / "cert.pem", d / "key.pem"


def ensure_self_signed(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """Return (certificate, key) under DATA/box/tls/, making them if missing."""
    cert_path, key_path = self_signed_paths(data_dir)
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    # Imported here: the cryptography package costs startup time and memory
    # that only the first run needs.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cert_path.parent, 0o700)
    write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.info("made a self-signed TLS certificate for %s in %s", hostname, cert_path.parent)
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer, no client certificates asked for."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def box_context(data_dir: Path, hostname: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """The configured pair if given, else the self-signed one (made if needed)."""
    if bool(cert) != bool(key):
        raise ValueError("set both smtp.tls_cert and smtp.tls_key, or neither")
    if cert:
        return server_context(Path(cert), Path(key))
    return server_context(*ensure_self_signed(data_dir, hostname))


# -- what a person pins in a mail client ----------------------------------------------


def certificate_path(data_dir: Path, configured: str = "") -> Path:
    """The certificate file the listeners serve: `smtp.tls_cert`, else the self-signed one."""
    return Path(configured) if configured else self_signed_paths(data_dir)[0]


def leaf_certificate(path: Path) -> bytes:
    """The DER bytes of the first certificate in a PEM file (the server's own, ahead of
    any chain). Only CERTIFICATE blocks are read, so a file that also holds the key
    never hands it on. Raises OSError, or ValueError for a file without a certificate."""
    match = _PEM_CERT.search(path.read_bytes())
    if match is None:
        raise ValueError(f"{path} holds no PEM certificate")
    pem = b"-----BEGIN CERTIFICATE-----\n" + match.group(1) + b"-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate as browsers and `openssl x509 -fingerprint
    -sha256` show it: upper-case hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def certificate_pem(der: bytes) -> str:
    """The certificate alone, PEM-encoded, for download (never the key)."""
    return ssl.DER_cert_to_PEM_cert(der)


def box_fingerprint(data_dir: Path, configured: str = "") -> str | None:
    """The served certificate's fingerprint, for the setup page, the banner and
    `letterbox status`; None when there is no readable certificate (yet)."""
    try:
        return fingerprint(leaf_certificate(certificate_path(data_dir, configured)))
    except (OSError, ValueError) as exc:
        log.debug("no certificate fingerprint: %s", exc)
        return None

"""Thunderbird autoconfiguration (the `config-v1.1.xml` "clientConfig" format).

Thunderbird asks `http://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=...`
and `http://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml`; the box answers
both paths. Format: Mozilla's "Autoconfig file format" (clientConfig version 1.1):
one emailProvider with its domains, incoming servers in order of preference
(POP3 with implicit TLS, then POP3 with STARTTLS/STLS), and the outgoing server.
The username is the whole address (`%EMAILADDRESS%`, which Thunderbird fills in).
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET


def _server(parent: ET.Element, tag: str, kind: str, fields: dict[str, str]) -> ET.Element:
    server = ET.SubElement(parent, tag, {"type": kind})
    for name, value in fields.items():
        ET.SubElement(server, name).text = value
    return server


def client_config(
    hostname: str, domains: Iterable[str], *, pop3: int, pop3s: int, smtp: int
) -> bytes:
    """The XML document for every address of `domains`, served by `hostname`."""
    domains = sorted(set(domains)) or [hostname]
    root = ET.Element("clientConfig", {"version": "1.1"})
    provider = ET.SubElement(root, "emailProvider", {"id": domains[0]})
    for domain in domains:
        ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"Letterbox at {hostname}"
    ET.SubElement(provider, "displayShortName").text = "Letterbox"
    common = {"username": "%EMAILADDRESS%", "authentication": "password-cleartext"}
    if pop3s:
        incoming = _server(
            provider,
            "incomingServer",
            "pop3",
            {"hostname": hostname, "port": str(pop3s), "socketType": "SSL", **common},
        )
        _pop3_options(incoming)
    if pop3:
        incoming = _server(
            provider,
            "incomingServer",
            "pop3",
            {"hostname": hostname, "port": str(pop3), "socketType": "STARTTLS", **common},
        )
        _pop3_options(incoming)
    # The box receives for its own domains; it relays nothing, so no login is needed.
    _server(
        provider,
        "outgoingServer",
        "smtp",
        {
            "hostname": hostname,
            "port": str(smtp),
            "socketType": "STARTTLS",
            "username": "%EMAILADDRESS%",
            "authentication": "none",
        },
    )
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _pop3_options(server: ET.Element) -> None:
    # Mail lives on the box's drive with quota eviction; clients keep their own copy.
    pop3 = ET.SubElement(server, "pop3")
    ET.SubElement(pop3, "leaveMessagesOnServer").text = "true"
    ET.SubElement(pop3, "downloadOnBiff").text = "true"

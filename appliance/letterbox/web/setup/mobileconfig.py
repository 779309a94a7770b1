"""An Apple configuration profile (`.mobileconfig`) that adds one POP mail account.

A property list (plistlib) with one `com.apple.mail.managed` payload, as Apple's
"Configuration Profile Reference" describes (EmailAccountType EmailTypePOP, incoming
server with TLS, outgoing server). It holds no password: the phone asks for it
when the profile is installed, so the file is safe to download over plain HTTP.
UUIDs derive from the box and mailbox ids, so installing it again replaces the
account instead of adding a second one. The profile is not signed (the phone
says "unverified"; the page explains it).
"""

from __future__ import annotations

import plistlib
import uuid

_NAMESPACE = uuid.UUID("6f1c6a64-5e7e-4d55-9f3a-6c6574746572")


def profile(*, hostname: str, mailbox_id: str, address: str, pop3s: int, smtp: int) -> bytes:
    ident = f"local.letterbox.{hostname}.mail.{mailbox_id}"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.account",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"{ident}.account")).upper(),
        "PayloadDisplayName": f"Mail for {address}",
        "EmailAccountDescription": f"Letterbox ({address})",
        "EmailAccountType": "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerHostName": hostname,
        "IncomingMailServerPortNumber": pop3s,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": hostname,
        "OutgoingMailServerPortNumber": smtp,
        "OutgoingMailServerUseSSL": False,
        "OutgoingMailServerAuthentication": "EmailAuthNone",
        "OutgoingMailServerUsername": address,
    }
    doc = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, ident)).upper(),
        "PayloadDisplayName": f"Letterbox mail: {address}",
        "PayloadDescription": f"Reads the mail of {address} from the Letterbox at {hostname}.",
        "PayloadOrganization": "Letterbox",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML)

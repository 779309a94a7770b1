"""The person's side of an end-to-end mailbox: `letterbox fetch` and `letterbox bridge`.

This runs on the person's own computer, which holds the key; the box only ever sees
signatures, ciphertext and sealed records (letterbox.web.driveapi is its other end).

fetch.py       `letterbox fetch`: the mailbox into a local Maildir, acknowledged once fsync'd
bridge.py      `letterbox bridge`: the mailbox as POP3 on 127.0.0.1 (letterbox.pop3's code)
verify.py      what is checked before anything is believed, written or acknowledged
api_client.py  the drive API client: challenge login, listing, download, signed acks
"""

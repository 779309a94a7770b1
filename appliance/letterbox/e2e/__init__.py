"""The person's side of an end-to-end mailbox: `letterbox fetch` and `letterbox bridge`.

This runs on the person's own computer, which holds the key; the box only ever sees
signatures, ciphertext and sealed records (letterbox.web.driveapi is its other end).
"""

"""QR codes as SVG (segno: pure Python, no image libraries on the box)."""

from __future__ import annotations

import io

import segno


def svg(text: str) -> bytes:
    """A QR code for `text` (error correction M: readable off a phone screen)."""
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="svg", scale=6, border=4, xmldecl=True)
    return out.getvalue()

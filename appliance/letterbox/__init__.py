"""Letterbox: a home mail box appliance.

SMTP in, encrypted the instant it arrives, kept on a USB drive, served to ordinary
mail clients. See README.md, docs/design.md (the design) and docs/findings.md.
"""

__version__ = "0.1.0"

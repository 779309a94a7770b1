"""Letterbox: a home mail box appliance.

SMTP in, encrypted the instant it arrives, kept on a USB drive, served to ordinary
mail clients. See DESIGN.md in the shared notes and README.md in the repository.
"""

__version__ = "0.1.0"

"""The web port: one aiohttp application for the drive API (and, later, the setup page)."""

"""The web port: one aiohttp application for the setup page and the drive API.

server.py    WebServer: the application, its listener, the access log
driveapi.py  the drive API under /api/v1/drive/, for end-to-end clients
setup/       the setup page (its own module map in setup/__init__.py)
"""

"""The box's presence on the household's LAN: mDNS/DNS-SD announcements (mdns.py)."""

"""First-boot provisioning: turns a freshly flashed image into one household's box."""

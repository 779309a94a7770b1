"""Tests of the board configs, image assembly, first-boot provisioning and the QEMU image."""

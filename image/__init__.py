"""Building Letterbox images: board configs, the rootfs, partition assembly, QEMU boots."""

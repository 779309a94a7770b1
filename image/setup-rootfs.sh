#!/bin/sh
# Runs inside the new root (chroot) at the end of mmdebstrap, after the overlay was
# copied in. Settings come from /tmp/letterbox-build/env, written by image/build.py.
set -eu
. /tmp/letterbox-build/env
B=/tmp/letterbox-build

echo "setup-rootfs: letterbox user, /var/lib/letterbox, /media/letterbox"
# The system user owns no process yet: letterbox.service runs as root with a cut-down
# capability set because it mounts and formats USB drives (see the unit). The data
# directory matches the unit's StateDirectoryMode=0700.
useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
  --user-group letterbox
install -d -m 0700 /var/lib/letterbox
install -d -m 0755 /media/letterbox /boot/firmware /etc/letterbox

echo "setup-rootfs: Python venv /opt/letterbox from $(ls $B/wheels | wc -l) wheels (offline)"
python3 -m venv /opt/letterbox
/opt/letterbox/bin/pip install -q --disable-pip-version-check --no-index \
  --find-links $B/wheels -r $B/requirements.txt letterbox
/opt/letterbox/bin/pip list --disable-pip-version-check --format=freeze > $B/python-packages.txt
# At the console, `letterbox status` (and every other command) means the running
# box: its data directory and config, not the CLI's development default ./.letterbox.
cat > /usr/local/bin/letterbox <<'WRAPPER'
#!/bin/sh
exec /opt/letterbox/bin/letterbox --data /var/lib/letterbox --config /etc/letterbox/letterbox.toml "$@"
WRAPPER
chmod 0755 /usr/local/bin/letterbox

echo "setup-rootfs: enabling units"
for unit in $UNITS_TO_ENABLE; do
  systemctl enable "$unit"
done
systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
# SSH is off until first boot installs a maker's key, and every box makes its own host keys.
systemctl disable ssh.service
rm -f /etc/ssh/ssh_host_*
# No console logins: the root account stays locked; makers use SSH keys.
passwd -l root >/dev/null

if [ "$BOOT_METHOD" = raspi-firmware ]; then
  # raspi-firmware's hooks write cmdline.txt and copy kernel, initrd and firmware to
  # /boot/firmware (the FAT partition) whenever the initrd is made, just below.
  sed -i -e "s|^#*ROOTPART=.*|ROOTPART=LABEL=root|" \
    -e "s|^#*CONSOLES=.*|CONSOLES=\"$CONSOLE tty0\"|" /etc/default/raspi-firmware
fi

echo "setup-rootfs: small initrd (MODULES=list)"
rm -f /usr/sbin/update-initramfs
dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
update-initramfs -c -k all
if [ "$BOOT_METHOD" = direct-kernel ]; then
  # QEMU loads these from the boot partition (make qemu extracts them with mcopy).
  cp -L /vmlinuz /boot/firmware/vmlinuz
  cp -L /initrd.img /boot/firmware/initrd.img
  echo "$CMDLINE" > /boot/firmware/cmdline.txt
fi

ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
echo letterbox > /etc/hostname
# systemd makes a new machine id on first boot (machine-id(5): empty file = first boot).
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' > $B/debian-packages.txt

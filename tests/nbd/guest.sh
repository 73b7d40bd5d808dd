#!/bin/bash
# Description: a QEMU guest (TCG) makes a file system on an export, writes files and powers
# off; after a restart of hutch-storaged, a freshly booted guest reads them back intact.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 --version
command -v apt-get >/dev/null || skip "needs apt-get (Debian) for the guest kernel and busybox"

# The guest: Debian's cloud kernel and busybox-static, fetched once into a
# cache shared with the VM tests, unpacked here.
cache=${HUTCH_DEB_CACHE:-/tmp/hutch-test-debs}
mkdir -p "$cache"
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || fail "no linux-image-cloud-amd64 in apt (run apt-get update)"
fetch() {
	ls "$cache/$1"_*_amd64.deb >/dev/null 2>&1 ||
		(cd "$cache" && flock "$cache/.lock" apt-get download "$1" >/dev/null 2>&1) ||
		fail "apt-get download $1 failed (network or apt sources)"
}
fetch "$kpkg"
fetch busybox-static
g="$HUTCH_HOME/guest"
mkdir -p "$g/k" "$g/bb" "$g/ird/bin" "$g/ird/lib" "$g/ird/dev" "$g/ird/proc" "$g/ird/sys" "$g/ird/mnt"
dpkg -x "$(ls "$cache/$kpkg"_*_amd64.deb | head -1)" "$g/k"
dpkg -x "$(ls "$cache"/busybox-static_*_amd64.deb | head -1)" "$g/bb"
cp "$g/bb/bin/busybox" "$g/ird/bin/busybox"
kmod=$(echo "$g"/k/lib/modules/*/kernel)
order=""
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
	drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
	b=$(basename "$m")
	if [ -f "$kmod/$m.ko.xz" ]; then xz -dc "$kmod/$m.ko.xz" >"$g/ird/lib/$b.ko"
	elif [ -f "$kmod/$m.ko" ]; then cp "$kmod/$m.ko" "$g/ird/lib/$b.ko"; fi
	order="$order $b"
done
cat >"$g/ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in$order; do insmod /lib/\$m.ko 2>/dev/null; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 200 ]; do sleep 0.05; i=\$((i+1)); done
step=\$(sed -n 's/.*hutch=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ "\$step" = write ]; then
	mke2fs -q -b 4096 /dev/vda && mount -t ext2 /dev/vda /mnt &&
	dd if=/dev/urandom of=/mnt/blob bs=1M count=24 2>/dev/null &&
	mkdir -p /mnt/dir && for i in \$(seq 200); do echo "file \$i" > /mnt/dir/f\$i; done &&
	md5sum /mnt/blob | cut -d' ' -f1 > /mnt/blob.md5 && sync && umount /mnt &&
	echo "HUTCH-GUEST-WROTE \$(cat /proc/uptime)"
else
	mount -t ext2 -o ro /dev/vda /mnt && [ "\$(md5sum /mnt/blob | cut -d' ' -f1)" = "\$(cat /mnt/blob.md5)" ] &&
	[ "\$(cat /mnt/dir/f137)" = "file 137" ] && [ \$(ls /mnt/dir | wc -l) = 200 ] &&
	echo "HUTCH-GUEST-READ-OK \$(cat /mnt/blob.md5)"
fi
sync
poweroff -f
EOF
chmod 755 "$g/ird/init"
(cd "$g/ird" && find . | "$g/ird/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$g/initrd.img"

start_storaged
make_image disk 128M

boot() {
	local log="$HUTCH_HOME/guest-$1.log"
	timeout 300 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 256M -smp 1 \
		-nodefaults -no-user-config -display none -no-reboot \
		-kernel "$(ls "$g"/k/boot/vmlinuz-* | head -1)" -initrd "$g/initrd.img" \
		-append "console=ttyS0 panic=-1 quiet hutch=$1" \
		-blockdev driver=nbd,node-name=d0,server.type=unix,server.path="$NBD_SOCK",export=disk \
		-device virtio-blk-pci,drive=d0 -serial file:"$log" ||
		fail "qemu ($1 boot) failed: $(tail -5 "$log")"
	cat "$log"
}
out=$(boot write)
echo "$out" | grep -q HUTCH-GUEST-WROTE || fail "guest did not write its file system: $(echo "$out" | tail -20)"
stop_storaged
start_storaged
out=$(boot read)
echo "$out" | grep -q HUTCH-GUEST-READ-OK || fail "fresh guest could not read the file system back: $(echo "$out" | tail -20)"
echo "$out" | grep HUTCH-GUEST
# the file system's data is allocated, the untouched rest is a hole
nbdinfo --map --totals "$(nbd_uri disk)"
echo "ok"

#!/bin/sh
# hutch-template-build: build a small bootable guest from Debian packages alone.
#
# Output (in OUTDIR): vmlinuz, initrd.img, disk.raw (ext4, no partition
# table) and template.conf (cmdline, cpus, memory, agent). `hutch template build`
# runs this and then imports the result into the store.
#
# Nothing is mounted and nothing is installed on the host: packages are
# fetched with `apt-get download`, unpacked with `dpkg -x`, the initramfs is
# packed with busybox's cpio and the root file system made with `mke2fs -d`.
set -eu

usage() {
	cat <<EOF
Usage: hutch-template-build [--cache DIR] [--size SIZE] OUTDIR

Builds a guest that boots to SSH-ready in seconds under TCG:
  kernel      Debian's linux-image-cloud-amd64 (direct kernel boot)
  initramfs   busybox-static + virtio modules; mounts /dev/vda as root
  root fs     busybox + dropbear SSH server (one per connection, started by
              busybox nc), ext4 image of SIZE (default 1G)
The guest takes its identity (hostname, machine-id, RNG seed, admin key)
from QEMU fw_cfg entries opt/hutch/* at every boot, and makes new SSH
host keys whenever its machine-id changes, so forks never share them.
It runs hutch's agent on the virtio port org.hutch.agent, through which
hutch-vmd re-identifies a VM forked from memory without an SSH session.

  --cache DIR   keep downloaded .deb files here (default \$HUTCH_HOME/cache/debs)
  --size SIZE   size of disk.raw (mke2fs syntax: 1G, 512M)
EOF
}

cache="${HUTCH_HOME:-/var/lib/hutch}/cache/debs"
size=1G
while [ $# -gt 0 ]; do
	case "$1" in
	-h|--help) usage; exit 0 ;;
	--cache) cache="$2"; shift 2 ;;
	--size) size="$2"; shift 2 ;;
	-*) echo "hutch-template-build: unknown option $1 (see --help)" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || { usage >&2; exit 2; }
out="$1"

for t in apt-get apt-cache dpkg mke2fs gzip; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "hutch-template-build: '$t' not found; install it (Debian: apt-get install $t)" >&2
		exit 1; }
done

mkdir -p "$cache" "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/hutch-template.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The versioned kernel package behind the cloud meta-package.
kernel_pkg() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
	# A fresh machine may have no package lists yet.
	apt-get update -qq >/dev/null 2>&1 || true
	kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || { echo "hutch-template-build: no linux-image-cloud-amd64 in apt; run apt-get update" >&2; exit 1; }

pkgs="$kpkg busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g"

# Fetch what the cache lacks (a cached .deb of the candidate version is reused).
# One apt-cache call for all packages: each call costs about half a second.
apt-cache policy $pkgs | awk '/^[^ ]/ { sub(":$", "", $1); p = $1 }
	/^ *Candidate:/ { v = $2; sub(":", "%3a", v); print p, v }' >"$work/versions"
deb_of() {
	ver=$(awk -v p="$1" '$1 == p { print $2 }' "$work/versions")
	echo "$cache/${1}_${ver}_amd64.deb"
}
need=""
for p in $pkgs; do
	[ -s "$(deb_of "$p")" ] || need="$need $p"
done
if [ -n "$need" ]; then
	echo "fetching:$need"
	(cd "$cache" && apt-get download $need >/dev/null 2>"$work/apt.err") || {
		cat "$work/apt.err" >&2
		echo "hutch-template-build: apt-get download failed; check network or apt sources" >&2
		exit 1; }
fi

root="$work/root"
kdir="$work/kernel"
mkdir -p "$root" "$kdir"
dpkg -x "$(deb_of "$kpkg")" "$kdir"
for p in busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g; do
	dpkg -x "$(deb_of "$p")" "$root"
done
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" \
	"$root/usr/share/lintian" "$root/usr/lib/x86_64-linux-gnu/gconv"
bb="$root/bin/busybox"

cp "$kdir"/boot/vmlinuz-* "$out/vmlinuz"
kver=$(ls "$kdir/lib/modules")
kmod="$kdir/lib/modules/$kver/kernel"

# ---- initramfs: busybox, virtio modules, /init that mounts the disk ----
ird="$work/initrd"
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
cp "$bb" "$ird/bin/busybox"
mods="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
net/core/failover drivers/net/net_failover drivers/net/virtio_net
drivers/firmware/qemu_fw_cfg drivers/char/hw_random/virtio-rng drivers/acpi/button
drivers/input/evdev drivers/virtio/virtio_balloon drivers/char/virtio_console"
order=""
for m in $mods; do
	b=$(basename "$m")
	if [ -f "$kmod/$m.ko.xz" ]; then
		xz -dc "$kmod/$m.ko.xz" >"$ird/lib/modules/$b.ko"
	elif [ -f "$kmod/$m.ko" ]; then
		cp "$kmod/$m.ko" "$ird/lib/modules/$b.ko"
	else
		echo "hutch-template-build: kernel $kver lacks module $m" >&2; exit 1
	fi
	order="$order $b"
done
cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in$order; do insmod /lib/modules/\$m.ko 2>/dev/null; done
root=/dev/vda
for a in \$(cat /proc/cmdline); do case "\$a" in root=*) root=\${a#root=};; esac; done
i=0
while [ ! -b "\$root" ] && [ \$i -lt 200 ]; do sleep 0.05; i=\$((i+1)); done
if ! mount -t ext4 -o rw "\$root" /newroot; then
	echo "hutch initramfs: cannot mount \$root; dropping to a shell"
	exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | "$bb" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out/initrd.img"

# ---- root file system ----
mkdir -p "$root/bin" "$root/sbin" "$root/etc/dropbear" "$root/etc/hutch" "$root/etc/acpi/PWRF" \
	"$root/root/.ssh" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" "$root/var/log"
chmod 700 "$root/root" "$root/root/.ssh"
chmod 1777 "$root/tmp"
for a in $("$bb" --list); do
	[ -e "$root/bin/$a" ] || [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] ||
		ln -s busybox "$root/bin/$a"
done
ln -sf ../bin/busybox "$root/sbin/init"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
# '*' and not '!': a locked password field makes dropbear refuse key logins too.
echo 'root:*:19000:0:99999:7:::' >"$root/etc/shadow"
chmod 600 "$root/etc/shadow"
echo 'root:x:0:' >"$root/etc/group"
echo '/bin/sh' >"$root/etc/shells"
echo 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin' >"$root/etc/profile"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
: >"$root/etc/machine-id"

# The RNG reseed helper the agent runs after a fork (built with hutch-vmd).
reseed="$(dirname "$0")/hutch-guest-reseed"
[ -x "$reseed" ] || { echo "hutch-template-build: $reseed is missing (installed with hutch-vmd)" >&2; exit 1; }
mkdir -p "$root/usr/lib/hutch"
cp "$reseed" "$root/usr/lib/hutch/guest-reseed"

cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/hutch/boot
::respawn:/bin/nc -ll -p 22 -e /usr/sbin/dropbear -i -s -r /etc/dropbear/dropbear_ed25519_host_key
::respawn:/etc/hutch/agent
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/bin/poweroff
::shutdown:/etc/hutch/shutdown
EOF

cat >"$root/etc/hutch/boot" <<'EOF'
#!/bin/sh
# First thing at every boot: take this VM's identity from the platform.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/hutch
get() { [ -r "$fw/$1/raw" ] && cat "$fw/$1/raw"; }

seed=$(get seed) && [ -n "$seed" ] && echo "$seed" >/dev/urandom
name=$(get hostname) && [ -n "$name" ] && { hostname "$name"; echo "$name" >/etc/hostname;
	printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" >/etc/hosts; }
[ -n "$name" ] || hostname -F /etc/hostname 2>/dev/null
mid=$(get machine-id)
if [ -n "$mid" ] && [ "$mid" != "$(cat /etc/machine-id 2>/dev/null)" ]; then
	# A new machine (a fork, or first boot of a template copy): never reuse host keys.
	rm -f /etc/dropbear/*_host_key
	echo "$mid" >/etc/machine-id
fi
[ -f /etc/dropbear/dropbear_ed25519_host_key ] ||
	dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
key=$(get admin-key) && [ -n "$key" ] && { echo "$key" >/root/.ssh/authorized_keys;
	chmod 600 /root/.ssh/authorized_keys; }

ip link set lo up
ip link set eth0 up 2>/dev/null && ip addr add 10.0.2.15/24 dev eth0 &&
	ip route add default via 10.0.2.2
echo 'nameserver 10.0.2.3' >/etc/resolv.conf
acpid -c /etc/acpi
sync
echo "hutch: $(hostname) ready"
EOF
chmod 755 "$root/etc/hutch/boot"

# The SSH server runs once per connection (busybox nc execs dropbear -i):
# each one reads the host key and seeds its random state afresh, so a VM
# forked from a template's memory needs only a new key file, no restart.
# This file tells hutch-vmd's re-identification so.
: >"$root/etc/hutch/ssh-per-connection"
cat >"$root/etc/hutch/agent" <<'EOF'
#!/bin/sh
# hutch's agent: runs each line hutch-vmd sends over the virtio port
# org.hutch.agent and sends back what it prints. Only hutch-vmd reaches the
# port's host side (a socket in the VM's private run directory). hutch-vmd
# stays connected while the VM runs, so this waits in read(): no polling.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
port=
for n in /sys/class/virtio-ports/*/name; do
	[ "$(cat "$n" 2>/dev/null)" = org.hutch.agent ] && { port=${n%/name}; port=/dev/${port##*/}; }
done
# No port (a QEMU without it): nothing to serve, and nothing for init to respawn.
[ -n "$port" ] || exec sleep 2147483647
while :; do
	# One open, read and write: a virtio port opens once at a time.
	{ while IFS= read -r line; do eval "$line"; done; } <>"$port" >&0 2>&0
	# The host side hung up (read sees end of file until it is back).
	sleep 1
done
EOF
chmod 755 "$root/etc/hutch/agent"

cat >"$root/etc/hutch/shutdown" <<'EOF'
#!/bin/sh
killall nc dropbear acpid 2>/dev/null
sync
umount -a -r 2>/dev/null
mount -o remount,ro / 2>/dev/null
sync
EOF
chmod 755 "$root/etc/hutch/shutdown"

# ACPI power button (QMP system_powerdown) -> busybox init's poweroff (SIGUSR2).
printf '#!/bin/sh\nkill -USR2 1\n' >"$root/etc/acpi/PWRF/00000080"
chmod 755 "$root/etc/acpi/PWRF/00000080"

rm -f "$out/disk.raw"
mke2fs -q -t ext4 -d "$root" -L hutch-root -E root_owner=0:0 "$out/disk.raw" "$size" >/dev/null ||
	{ echo "hutch-template-build: mke2fs failed" >&2; exit 1; }

# random.trust_cpu: RDRAND (real under KVM, from the host's getrandom under
# TCG -cpu max) seeds the kernel at once, so sshd's first keys never wait.
cat >"$out/template.conf" <<EOF
cmdline=console=ttyS0 root=/dev/vda rw quiet panic=-1 random.trust_cpu=on
cpus=1
memory=256M
agent=yes
EOF
echo "built template in $out (kernel $kver)"

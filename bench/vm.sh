#!/bin/bash
# hutch VMs against plain QEMU, in one run on the same guest:
#
#   - time from `hutch vm create` to SSH-ready (a real login running `true`),
#     next to the same kernel, initrd and root disk booted by plain QEMU from
#     a `qemu-img create -b` qcow2 overlay on a local raw file;
#   - time of `hutch vm fork` (stopped source) next to `qemu-img create -b`;
#   - host memory per idle VM: RSS and PSS of each QEMU after IDLE seconds.
#
# Usage: bench/vm.sh
#   HUTCH_BUILD=DIR   the meson build folder (default: the first build*/ with vmd/hutch-vmd)
#   RUNS=3            boots per row; IDLE=10 seconds before memory is read
#   VM_ACCEL=tcg      accelerator for both sides (auto probes KVM)
# Prints a markdown table. Numbers are from one run on a noisy machine.
HELP_LAST=15
. "$(dirname "$0")/vm-bench-lib.sh"

RUNS=${RUNS:-3}
IDLE=${IDLE:-10}
ACCEL=${VM_ACCEL:-tcg}
W="$HUTCH_HOME/work"
mkdir -p "$W"

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# mem PID: "RSS_MiB PSS_MiB"
mem() {
	local rss pss
	rss=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$1/status")
	pss=$(awk '/^Pss:/ { print int($2 / 1024) }' "/proc/$1/smaps_rollup")
	echo "$rss $pss"
}

# wait_banner PORT: until the guest's SSH server greets (slirp accepts at once;
# only the guest sends "SSH-"). The same probe for both sides, 1 s per try.
wait_banner() {
	until [ "$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 4 <&3" 2>/dev/null)" = "SSH-" ]; do
		sleep 0.05
	done
}

avg() { "$PYTHON" -c "import sys; v=[float(x) for x in sys.argv[1:]]; print('%.0f' % (sum(v)/len(v)) if v else '-')" "$@"; }

start_storaged
start_vmd
build_template
key="$HUTCH_HOME/vmd/admin_key"

# ---- hutch: create to SSH-ready ----
hutch_ms=() hutch_rss=() hutch_pss=()
for i in $(seq "$RUNS"); do
	t0=$(date +%s%N)
	hutch vm create "b$i" --no-wait >/dev/null || fail "vm create b$i"
	wait_banner "$(vm_field "b$i" ssh_port)"
	hutch vm ssh "b$i" true || fail "ssh into b$i"
	hutch_ms+=("$(ms_since "$t0")")
done
sleep "$IDLE"
for i in $(seq "$RUNS"); do
	read -r rss pss < <(mem "$(vm_field "b$i" pid)")
	hutch_rss+=("$rss") hutch_pss+=("$pss")
done
hutch vm stop b1 >/dev/null
t0=$(date +%s%N)
hutch vm fork b1 f1 --no-start >/dev/null || fail "vm fork"
fork_ms=$(ms_since "$t0")
for i in $(seq "$RUNS"); do hutch vm stop "b$i" --force >/dev/null; done

# ---- plain QEMU from a qcow2 overlay on a local raw copy of the same disk ----
tdir="$HUTCH_HOME/templates/default"
cmdline=$("$PYTHON" -c "import json; print(json.load(open('$tdir/template.json'))['cmdline'])")
qemu-img convert -O raw "$(nbd_uri template.default)" "$W/base.raw" || fail "export the template disk"
plain_ms=() plain_rss=() plain_pss=() pids=()
# The same accelerator settings hutch-vmd uses ([vmd] tcg_tb_size default 32 MiB).
ACCEL=$(vm_field b2 accel)	# what the probe chose, when VM_ACCEL=auto
plain_accel=$ACCEL
[ "$ACCEL" = tcg ] && plain_accel=tcg,tb-size=32
for i in $(seq "$RUNS"); do
	t0=$(date +%s%N)
	qemu-img create -q -f qcow2 -b "$W/base.raw" -F raw "$W/ov$i.qcow2" || fail "qemu-img create -b"
	[ "$i" = 1 ] && overlay_ms=$(ms_since "$t0")
	port=$((20000 + RANDOM % 20000))
	printf 'p%s' "$i" >"$W/hostname$i"
	head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/mid$i"
	qemu-system-x86_64 -machine q35 -accel "$plain_accel" -cpu max -m 256M -smp 1 -nodefaults -display none \
		-no-reboot -kernel "$tdir/vmlinuz" -initrd "$tdir/initrd.img" -append "$cmdline" \
		-drive file="$W/ov$i.qcow2",format=qcow2,if=virtio \
		-netdev user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22 -device virtio-net-pci,netdev=n0 \
		-device virtio-rng-pci -device virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on \
		-fw_cfg name=opt/hutch/hostname,file="$W/hostname$i" -fw_cfg name=opt/hutch/machine-id,file="$W/mid$i" \
		-fw_cfg name=opt/hutch/admin-key,file="$key.pub" \
		-serial file:"$W/console$i.log" -pidfile "$W/qemu$i.pid" -daemonize || fail "plain QEMU"
	pids+=("$(cat "$W/qemu$i.pid")")
	cleanup_fn kill -9 "$(cat "$W/qemu$i.pid")"
	wait_banner "$port"
	ssh -q -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o BatchMode=yes -o IdentitiesOnly=yes root@127.0.0.1 true || fail "ssh into plain VM $i"
	plain_ms+=("$(ms_since "$t0")")
done
sleep "$IDLE"
for p in "${pids[@]}"; do
	read -r rss pss < <(mem "$p")
	plain_rss+=("$rss") plain_pss+=("$pss")
	kill "$p"
done

echo
echo "VM boot and memory, $ACCEL, 1 vCPU, 256 MiB guest, $RUNS runs each (one noisy run; $(nproc) cores)"
echo
echo "| what | hutch (NBD disk on hutch-storaged) | plain QEMU (qcow2 overlay on a local file) |"
echo "| --- | ---: | ---: |"
echo "| create to SSH-ready, ms (each run) | ${hutch_ms[*]} | ${plain_ms[*]} |"
echo "| create to SSH-ready, ms (mean) | $(avg "${hutch_ms[@]}") | $(avg "${plain_ms[@]}") |"
echo "| new disk from the golden image, ms | $fork_ms (vm fork, incl. record) | $overlay_ms (qemu-img create -b) |"
echo "| QEMU RSS per idle VM, MiB (mean) | $(avg "${hutch_rss[@]}") | $(avg "${plain_rss[@]}") |"
echo "| QEMU PSS per idle VM, MiB (mean) | $(avg "${hutch_pss[@]}") | $(avg "${plain_pss[@]}") |"

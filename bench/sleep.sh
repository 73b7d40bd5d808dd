#!/bin/bash
# Sleep and wake of hutch VMs, in one run on the test guest (256 MiB, 1 vCPU):
#
#   - pause -> resume: QMP `cont` inside hutch-vmd (its log) and the whole
#     `vm.resume` control op (median of N);
#   - hibernate time (`hutch vm hibernate`, wall clock);
#   - resume from hibernation to the guest's SSH banner, next to a cold boot
#     of the same VM to its SSH banner (ratio; goal <= 0.2);
#   - store bytes added by the first hibernation, by a second one after a
#     small change (goal <= 10 % of RAM), and by hibernating 5 VMs of one
#     template (goal < 2 x one VM's): 5 booted ones, and 5 forked from the
#     template's warm memory (`template warm`), whose pages they share;
#   - guest RAM speed before and after RAM became a shared file: a
#     memory-bound dd in the guest's tmpfs, on plain QEMU with anonymous RAM
#     and with `memory-backend-file,share=on` on the same disk as HUTCH_HOME.
#
# Usage: bench/sleep.sh
#   HUTCH_BUILD=DIR   the meson build folder (default: the first build*/ with vmd/hutch-vmd)
#   N=20              pause/resume pairs; RUNS=3 hibernate/resume rounds
# Prints a markdown table. Numbers are from one run on a noisy machine.
HELP_LAST=20
. "$(dirname "$0")/vm-bench-lib.sh"

N=${N:-20}
RUNS=${RUNS:-3}
MEM=256
W="$HUTCH_HOME/work"
mkdir -p "$W"

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
median() { "$PYTHON" -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print('%.0f' % statistics.median(v) if v else '-')" "$@"; }
wait_banner() {
	until [ "$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 4 <&3" 2>/dev/null)" = "SSH-" ]; do
		sleep 0.02
	done
}
stored() { hutch store stats --json | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['unique_data'])"; }
mib() { "$PYTHON" -c "print('%.1f' % ($1 / 1048576))"; }

start_storaged
start_vmd
build_template
hutch vm create a --memory ${MEM}M >/dev/null || fail "vm create a"
hutch vm ssh a 'setsid sh -c "while :; do date > /tmp/now; sleep 1; done" </dev/null >/dev/null 2>&1 &'

# ---- pause -> resume ----
resume_us=$("$PYTHON" - "$HUTCH_HOME/run/vmd.sock" "$N" <<'PY'
import json, socket, statistics, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')
def call(op):
    s.sendall(json.dumps({"op": op, "name": "a", "wait": False}).encode() + b"\n")
    r = json.loads(f.readline()); assert r.get("ok"), r; return r
took = []
for i in range(int(sys.argv[2])):
    call("vm.pause")
    took.append(call("vm.resume")["took_us"])
print(int(statistics.median(took)))
PY
) || fail "pause/resume"
cont_us=$(grep -o 'QMP cont took [0-9]*' "$HUTCH_HOME/vmd.log" | awk '{print $4}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')

# ---- hibernate, resume to SSH; store bytes of the first and second ----
hib_ms=() res_ms=() added=()
for i in $(seq "$RUNS"); do
	before=$(stored)
	t0=$(date +%s%N)
	hutch vm hibernate a >/dev/null || fail "hibernate a"
	hib_ms+=("$(ms_since "$t0")")
	added+=("$(($(stored) - before))")
	sleep 1
	t0=$(date +%s%N)
	hutch vm resume a --no-wait >/dev/null || fail "resume a"
	wait_banner "$(vm_field a ssh_port)"
	res_ms+=("$(ms_since "$t0")")
	# A small change before the next round: a few MB in the guest's tmpfs.
	hutch vm ssh a "dd if=/dev/urandom of=/tmp/change$i bs=1M count=4 2>/dev/null" || fail "change in a"
done

# ---- cold boot of the same VM ----
cold_ms=()
for i in $(seq "$RUNS"); do
	hutch vm stop a >/dev/null || fail "stop a"
	t0=$(date +%s%N)
	hutch vm start a --no-wait >/dev/null || fail "start a"
	wait_banner "$(vm_field a ssh_port)"
	cold_ms+=("$(ms_since "$t0")")
done
hutch vm rm a >/dev/null
hutch store gc >/dev/null 2>&1

# ---- 5 VMs of one template: booted each, then forked from its warm memory ----
five_of() {	# PREFIX CREATE-FLAGS...: "bytes-of-the-first bytes-of-all-5" their hibernations add
	local p=$1 before first; shift
	for i in 1 2 3 4 5; do
		hutch vm create "$p$i" --memory ${MEM}M "$@" >/dev/null || fail "vm create $p$i"
	done
	sleep 5
	before=$(stored)
	hutch vm hibernate "${p}1" >/dev/null || fail "hibernate ${p}1"
	first=$(($(stored) - before))
	for i in 2 3 4 5; do hutch vm hibernate "$p$i" >/dev/null || fail "hibernate $p$i"; done
	echo "$first $(($(stored) - before))"
	for i in 1 2 3 4 5; do hutch vm rm "$p$i" >/dev/null; done
}
five_of c --cold >"$W/five" && read -r cold_one cold_five <"$W/five" || fail "5 booted VMs"
before=$(stored)
hutch template warm default >/dev/null || fail "template warm default"
warm_tmpl=$(($(stored) - before))
five_of w >"$W/five" && read -r warm_one warm_five <"$W/five" || fail "5 warm forks"

# ---- guest RAM speed: anonymous vs shared file (plain QEMU, same guest) ----
tdir="$HUTCH_HOME/templates/default"
cmdline=$("$PYTHON" -c "import json; print(json.load(open('$tdir/template.json'))['cmdline'])")
qemu-img convert -O raw "$(nbd_uri template.default)" "$W/base.raw" || fail "export the template disk"
key="$HUTCH_HOME/vmd/admin_key"
ramspeed() {	# NAME EXTRA-QEMU-ARGS...: "first-write-ms rewrite-ms read-ms" of 128 MiB in tmpfs
	local name=$1 port=$((20000 + RANDOM % 20000)); shift
	qemu-img create -q -f qcow2 -b "$W/base.raw" -F raw "$W/$name.qcow2"
	printf '%s' "$name" >"$W/hostname"
	qemu-system-x86_64 -accel tcg,tb-size=32 -cpu max -m ${MEM}M -smp 1 -nodefaults -display none \
		"$@" -no-reboot -kernel "$tdir/vmlinuz" -initrd "$tdir/initrd.img" -append "$cmdline" \
		-drive file="$W/$name.qcow2",format=qcow2,if=virtio \
		-netdev user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22 -device virtio-net-pci,netdev=n0 \
		-device virtio-rng-pci -fw_cfg name=opt/hutch/hostname,file="$W/hostname" \
		-fw_cfg name=opt/hutch/admin-key,file="$key.pub" \
		-serial null -pidfile "$W/$name.pid" -daemonize || fail "plain QEMU $name"
	cleanup_fn kill -9 "$(cat "$W/$name.pid")"
	wait_banner "$port"
	ssh -q -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o BatchMode=yes -o IdentitiesOnly=yes root@127.0.0.1 '
		t() { cut -d" " -f1 /proc/uptime; }
		a=$(t); dd if=/dev/zero of=/tmp/x bs=1M count=128 2>/dev/null; b=$(t)
		dd if=/dev/zero of=/tmp/x bs=1M count=128 conv=notrunc 2>/dev/null; c=$(t)
		dd if=/tmp/x of=/dev/null bs=1M 2>/dev/null; d=$(t)
		awk -v a=$a -v b=$b -v c=$c -v d=$d "BEGIN { printf \"%d %d %d\n\", (b-a)*1000, (c-b)*1000, (d-c)*1000 }"'
	kill "$(cat "$W/$name.pid")"
}
read -r anon1 anon2 anon3 < <(ramspeed anon -machine q35)
read -r file1 file2 file3 < <(ramspeed file -object memory-backend-file,id=ram0,size=${MEM}M,mem-path="$W/ram",share=on \
	-machine q35,memory-backend=ram0)

hib=$(median "${hib_ms[@]}") res=$(median "${res_ms[@]}") cold=$(median "${cold_ms[@]}")
echo
echo "Sleep and wake, TCG, 1 vCPU, $MEM MiB guest ($(nproc) cores, one noisy run)"
echo
echo "| what | measured | goal |"
echo "| --- | ---: | --- |"
echo "| pause -> resume: QMP cont in hutch-vmd, us (median of $N) | $cont_us | well under 1000 |"
echo "| pause -> resume: whole vm.resume control op, us (median) | $resume_us | |"
echo "| hibernate, ms (each: ${hib_ms[*]}) | $hib | |"
echo "| resume from hibernation to SSH banner, ms (each: ${res_ms[*]}) | $res | |"
echo "| cold boot of the same VM to SSH banner, ms (each: ${cold_ms[*]}) | $cold | |"
echo "| resume / cold boot | $("$PYTHON" -c "print('%.2f' % ($res / $cold))") | <= 0.2 |"
echo "| store bytes added by the 1st hibernation, MiB | $(mib "${added[0]}") | |"
for i in $(seq 2 "$RUNS"); do
	echo "| store bytes added by hibernation $i (after 4 MiB changed), MiB | $(mib "${added[$((i - 1))]}") ($("$PYTHON" -c "print('%.1f' % (${added[$((i - 1))]} * 100 / ($MEM * 1048576)))") % of RAM) | <= 10 % of RAM |"
done
ratio() { "$PYTHON" -c "print('%.2f' % ($1 / max($2, 1)))"; }
echo "| 5 booted VMs of a template: the 1st one's hibernation / all 5, MiB | $(mib "$cold_one") / $(mib "$cold_five") ($(ratio "$cold_five" "$cold_one") x one) | |"
echo "| \`template warm\`: the template's memory stored once, MiB | $(mib "$warm_tmpl") | |"
echo "| 5 warm forks of it: the 1st one's hibernation / all 5, MiB | $(mib "$warm_one") / $(mib "$warm_five") | |"
echo "| 5 warm forks' hibernations / one VM's own (1st of the booted ones) | $(ratio "$warm_five" "$cold_one") | < 2 |"
echo "| same, with the template's stored memory counted in | $(ratio $((warm_five + warm_tmpl)) "$cold_one") | |"
echo "| guest dd 128 MiB into tmpfs, first write, ms: anonymous RAM / shared file | $anon1 / $file1 | |"
echo "| guest dd 128 MiB rewrite, ms: anonymous / shared file | $anon2 / $file2 | |"
echo "| guest dd 128 MiB read, ms: anonymous / shared file | $anon3 / $file3 | |"

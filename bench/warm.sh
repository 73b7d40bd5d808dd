#!/bin/bash
# Warm templates against cold boots, on the test guest (256 MiB, 1 vCPU):
#
#   - `hutch vm create` to the guest's vCPUs running the template's
#     processes (hutch-vmd's log line after QMP cont; for a cold boot, QEMU
#     started), and to SSH-ready (create returns: for a warm VM after its
#     re-identification and its SSH server's restart with the new host key);
#     median over COUNT VMs each, and the ratio warm / cold;
#   - host memory of COUNT VMs from one warm template next to COUNT cold
#     booted ones, all running at once: the sum of the QEMU processes'
#     proportional set size (PSS: pages shared between them count once in
#     all), and their summed RSS.
#
# Usage: bench/warm.sh
#   HUTCH_BUILD=DIR   the meson build folder (default: the first build*/ with vmd/hutch-vmd)
#   COUNT=10          VMs of each kind
# Prints a markdown table. Numbers are from one run on a noisy machine.
HELP_LAST=18
. "$(dirname "$0")/vm-bench-lib.sh"

COUNT=${COUNT:-10}
median() { "$PYTHON" -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print('%.0f' % statistics.median(v) if v else '-')" "$@"; }
# ms from epoch-ns T0 to the timestamp of the last vmd.log line matching RE.
log_ms_after() {
	"$PYTHON" - "$1" "$2" "$HUTCH_HOME/vmd.log" <<'PY'
import re, sys, datetime
t0, rx, log = int(sys.argv[1]), re.compile(sys.argv[2]), sys.argv[3]
last = None
for line in open(log):
    if rx.search(line):
        last = line
ts = datetime.datetime.strptime(last[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
print(int(ts.timestamp() * 1000 - t0 / 1e6))
PY
}
# KiB of PSS and RSS summed over the QEMUs of the VMs named.
mem_of() {
	local pss=0 rss=0 n pid p r
	for n in "$@"; do
		pid=$(cat "$HUTCH_HOME/vms/$n/run/qemu.pid")
		p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
		r=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")
		pss=$((pss + p)); rss=$((rss + r))
	done
	echo "$pss $rss"
}

start_storaged
start_vmd
build_template
t0=$(date +%s%N)
hutch template warm default >/dev/null || fail "template warm"
warm_ms=$((($(date +%s%N) - t0) / 1000000))

wr=(); ws=(); warm=()
for i in $(seq 1 "$COUNT"); do
	t0=$(date +%s%N)
	hutch vm create "w$i" >/dev/null || fail "vm create w$i"
	ws+=($((($(date +%s%N) - t0) / 1000000)))
	wr+=("$(log_ms_after "$t0" "VM w$i resumed from warm template")")
	warm+=("w$i")
done
sleep 5
read -r wpss wrss < <(mem_of "${warm[@]}")
for n in "${warm[@]}"; do hutch vm rm "$n" >/dev/null; done

cr=(); cs=(); cold=()
for i in $(seq 1 "$COUNT"); do
	t0=$(date +%s%N)
	hutch vm create "c$i" --cold >/dev/null || fail "vm create c$i --cold"
	cs+=($((($(date +%s%N) - t0) / 1000000)))
	cr+=("$(log_ms_after "$t0" "VM c$i started")")
	cold+=("c$i")
done
sleep 5
read -r cpss crss < <(mem_of "${cold[@]}")

mwr=$(median "${wr[@]}"); mws=$(median "${ws[@]}"); mcr=$(median "${cr[@]}"); mcs=$(median "${cs[@]}")
ratio() { "$PYTHON" -c "import sys; print('%.3f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
echo
echo "warm template: \`hutch template warm\` took $warm_ms ms (boot to SSH + save)"
echo "warm create -> running (ms): ${wr[*]}"
echo "warm create -> SSH-ready (ms): ${ws[*]}"
echo "cold create -> running (ms): ${cr[*]}"
echo "cold create -> SSH-ready (ms): ${cs[*]}"
echo
echo "| $COUNT VMs, 256 MiB, TCG | warm | cold | warm / cold | goal |"
echo "| --- | --- | --- | --- | --- |"
echo "| create -> vCPUs running (median ms) | $mwr | $mcr | $(ratio "$mwr" "$mcr") | warm <= 150 ms |"
echo "| create -> SSH-ready (median ms) | $mws | $mcs | $(ratio "$mws" "$mcs") | <= 0.1 |"
echo "| host memory, sum of PSS (MiB) | $((wpss / 1024)) | $((cpss / 1024)) | $(ratio "$wpss" "$cpss") | < 0.5 |"
echo "| sum of RSS (MiB) | $((wrss / 1024)) | $((crss / 1024)) | $(ratio "$wrss" "$crss") | |"

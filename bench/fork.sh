#!/bin/bash
# Snapshot and fork cost against image size: a fully written 1 GiB and
# 16 GiB image (unique data), timed as the control request's round trip
# (median of N) and as the whole `hutch image fork` command; next to
# `qemu-img create -b` of a qcow2 overlay on raw files of the same sizes.
# Goal: 16 GiB / 1 GiB at most 1.2, median round trip under 1 ms.
#
#   bench/fork.sh [N (50)]
# Runs in $BENCH_DIR (default /var/tmp/hutch-bench); needs ~18 GiB free.
set -eu
cd "$(dirname "$0")/.."
n=${1:-50}
build=$(pwd)/${BUILD:-build}
scripts/build.sh >/dev/null || { echo "$0: the build failed; run scripts/build.sh to see why" >&2; exit 1; }
export HUTCH_HOME=${BENCH_DIR:-/var/tmp/hutch-bench}/fork
rm -rf "$HUTCH_HOME" && mkdir -p "$HUTCH_HOME"
"$build/storaged/hutch-storaged" --home "$HUTCH_HOME" >"$HUTCH_HOME/storaged.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$HUTCH_HOME"' EXIT
until grep -q " ready: " "$HUTCH_HOME/storaged.log"; do sleep 0.1; done
hutch="$build/cli/hutch"

for gib in 1 16; do
	"$hutch" image create "img$gib" "${gib}G" >/dev/null
	fio --name=fill --ioengine=nbd --uri="nbd+unix:///img$gib?socket=$HUTCH_HOME/run/nbd.sock" \
		--rw=write --bs=1M --iodepth=16 --size="${gib}G" --refill_buffers >/dev/null
	# qemu-img create -b reads only the backing file's header and size.
	truncate -s "${gib}G" "$HUTCH_HOME/raw$gib"
done

# Median round trip of N requests of one kind over one control connection.
rtt() {	# IMAGE OP
	/usr/bin/python3 - "$HUTCH_HOME/run/control.sock" "$1" "$2" "$n" <<'PY'
import json, socket, statistics, sys, time
path, img, op, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile('rb')
times = []
for i in range(n):
    if op == 'fork':
        req = {'op': 'image.fork', 'src': img, 'dst': f'{img}-f{i}'}
    else:
        req = {'op': 'image.snapshot', 'name': img, 'snap': f's{i}'}
    t = time.perf_counter()
    s.sendall(json.dumps(req).encode() + b'\n')
    reply = json.loads(f.readline())
    times.append(time.perf_counter() - t)
    assert reply.get('ok'), reply
print(f'{statistics.median(times) * 1000:.3f}')
PY
}

# median_ms CMD...: median wall time of 11 runs of CMD (with {} replaced by the run number).
median_ms() {
	local i t0 t1 ts=()
	for i in $(seq 11); do
		t0=$(date +%s%N)
		"${@//\{\}/$i}" >/dev/null
		t1=$(date +%s%N)
		ts+=($(( (t1 - t0) / 1000 )))
	done
	printf '%s\n' "${ts[@]}" | sort -n | sed -n 6p | awk '{ printf "%.2f", $1 / 1000 }'
}
cli_ms() { median_ms "$hutch" image fork "$1" "$1-cli{}-$2"; }	# IMAGE ROUND
overlay_ms() {	# GIB ROUND
	median_ms qemu-img create -q -f qcow2 -F raw -b "$HUTCH_HOME/raw$1" "$HUTCH_HOME/ov$1-{}-$2.qcow2"
}

# Let the fill reach the disk first: a sync behind a request is not its cost.
sync
declare -A r
for gib in 1 16; do
	r[snap$gib]=$(rtt "img$gib" snapshot)
	r[fork$gib]=$(rtt "img$gib" fork)
	r[cli$gib]=$(cli_ms "img$gib" 1)
	r[ov$gib]=$(overlay_ms "$gib" 1)
done
printf '%-34s %10s %10s %10s\n' "median, ms" "1 GiB" "16 GiB" "16G/1G"
row() { printf '%-34s %10s %10s %9.2fx\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"; }
row "hutch image snapshot (control RTT)" "${r[snap1]}" "${r[snap16]}"
row "hutch image fork (control RTT)" "${r[fork1]}" "${r[fork16]}"
row "hutch image fork (whole command)" "${r[cli1]}" "${r[cli16]}"
row "qemu-img create -b (qcow2 overlay)" "${r[ov1]}" "${r[ov16]}"
"$hutch" store stats | grep -E "logical|physical|dedup"

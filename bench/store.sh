#!/bin/bash
# The store engine's own throughput next to fio on a plain file of the same
# file system, as ratios: sequential 1 MiB write and read, random 4 KiB
# read and write; one thread, synchronous calls, writes end with a flush.
# fio keeps the page cache (--invalidate=0): both sides read what the
# writes before them left in memory.
#
#   bench/store.sh [SIZE_MIB (1024)] [SECONDS per random test (10)]
# Runs in $BENCH_DIR (default /var/tmp/hutch-bench). Needs fio.
set -eu
cd "$(dirname "$0")/.."
size=${1:-1024}
secs=${2:-10}
dir=${BENCH_DIR:-/var/tmp/hutch-bench}/store
build=${BUILD:-build}
scripts/build.sh >/dev/null || { echo "$0: the build failed; run scripts/build.sh to see why" >&2; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

declare -A hutch peer
while read -r name value _; do hutch[$name]=$value; done \
	< <("$build/bench/hutch-store-bench" "$dir/store" "$size" "$secs")

fio_run() {	# bw|iops RW BS [extra fio args]: prints MiB/s or IOPS
	local metric=$1 rw=$2 bs=$3; shift 3
	fio --name=peer --filename="$dir/file.raw" --size="${size}M" --ioengine=psync \
		--rw="$rw" --bs="$bs" --end_fsync=1 --refill_buffers --invalidate=0 --output-format=json "$@" |
		/usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
k = "write" if j["write"]["io_bytes"] else "read"
print(j[k]["bw_bytes"] / 1048576 if sys.argv[1] == "bw" else j[k]["iops"])' "$metric"
}
peer[seq-write-1M]=$(fio_run bw write 1M)
peer[seq-read-1M]=$(fio_run bw read 1M)
peer[rand-read-4k]=$(fio_run iops randread 4k --time_based --runtime="$secs")
peer[rand-write-4k]=$(fio_run iops randwrite 4k --time_based --runtime="$secs")

printf '%-14s %14s %14s %8s\n' test hutch-engine "fio (file)" ratio
for t in seq-write-1M seq-read-1M rand-read-4k rand-write-4k; do
	unit="MiB/s"; case $t in rand*) unit=IOPS ;; esac
	printf '%-14s %8.0f %-5s %8.0f %-5s %7.2fx\n' "$t" "${hutch[$t]}" "$unit" "${peer[$t]}" "$unit" \
		"$(echo "${hutch[$t]} / ${peer[$t]}" | bc -l)"
done

#!/bin/bash
# The NBD data path: hutch-storaged next to its peers, in one run, on the
# same bytes and the same size:
#
#   - hutch-storaged (an image imported from the raw file below)
#   - qemu-nbd on the raw file
#   - qemu-nbd on a qcow2 overlay of it (the peer that also forks)
#   - nbdkit's file plugin on the raw file
#
# fio, nbd engine over the unix socket, QD16, one job: sequential 1 MiB
# read and write, random 4 KiB read and write. Reads run first, on the
# imported data; every run starts after a sync, so the kernel's write-back
# of the run before is not charged to it. Prints a markdown table of MiB/s
# and IOPS with hutch's ratio to each peer.
#
# Usage: bench/nbd.sh
#   HUTCH_BUILD=DIR   the meson build folder (default: the first build*/ with storaged)
#   BENCH_SIZE=1G     data size; RUNTIME=10 seconds per fio run
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
	sed -n "2,18p" "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
if [ -z "${HUTCH_BUILD:-}" ]; then
	for d in "$SRC"/build*/; do
		[ -x "$d/storaged/hutch-storaged" ] && { HUTCH_BUILD=${d%/}; break; }
	done
fi
[ -n "${HUTCH_BUILD:-}" ] || { echo "set HUTCH_BUILD to a meson build folder" >&2; exit 1; }
export HUTCH_BUILD HUTCH_SRC=$SRC
. "$SRC/tests/functions.sh"
requires fio --enghelp=nbd
requires qemu-nbd --version
requires nbdkit --version

SIZE=${BENCH_SIZE:-1G}
RUNTIME=${RUNTIME:-10}
W="$HUTCH_HOME/bench"
mkdir -p "$W"

# The data: random bytes, fully allocated, the same for every server.
raw="$W/disk.raw"
fio --name=fill --filename="$raw" --rw=write --bs=1M --size="$SIZE" --refill_buffers \
	--output=/dev/null || fail "cannot write $raw"
qemu-img create -q -f qcow2 -b "$raw" -F raw "$W/overlay.qcow2" || fail "qemu-img create failed"

start_storaged
hutch image import "$raw" disk >/dev/null || fail "import failed"

peer_pids=()
cleanup_fn kill_peers
kill_peers() { for p in "${peer_pids[@]}"; do kill "$p" 2>/dev/null; done; }
qemu-nbd -f raw -x disk -k "$W/raw.sock" --persistent --shared=16 "$raw" &
peer_pids+=($!)
qemu-nbd -f qcow2 -x disk -k "$W/qcow2.sock" --persistent --shared=16 "$W/overlay.qcow2" &
peer_pids+=($!)
nbdkit -f -U "$W/nbdkit.sock" --exportname=disk file file="$raw" &
peer_pids+=($!)
for s in raw qcow2 nbdkit; do wait_for 10 test -S "$W/$s.sock" || fail "$s server did not start"; done

servers=(hutch qemu-raw qemu-qcow2 nbdkit)
declare -A uri=(
	[hutch]="nbd+unix:///disk?socket=$HUTCH_HOME/run/nbd.sock"
	[qemu-raw]="nbd+unix:///disk?socket=$W/raw.sock"
	[qemu-qcow2]="nbd+unix:///disk?socket=$W/qcow2.sock"
	[nbdkit]="nbd+unix:///disk?socket=$W/nbdkit.sock"
)
tests=("read 1M" "randread 4k" "write 1M" "randwrite 4k")
declare -A mib iops

for t in "${tests[@]}"; do
	set -- $t
	for s in "${servers[@]}"; do
		# Each run starts with no dirty pages of the one before: the
		# kernel writing those back would be charged to this server.
		sync
		fio --name=b --ioengine=nbd --uri="${uri[$s]}" --rw="$1" --bs="$2" --iodepth=16 \
			--size="$SIZE" --runtime="$RUNTIME" --time_based --output-format=json \
			>"$W/fio.json" 2>"$W/fio.err" || { cat "$W/fio.err" >&2; fail "fio $t on $s failed"; }
		read -r m i < <("$PYTHON" - "$W/fio.json" "$1" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]   # fio may print notes before the JSON
d = j["write" if "write" in sys.argv[2] else "read"]
print("%.0f %.0f" % (d["bw_bytes"] / 1048576, d["iops"]))
PY
)
		mib["$t/$s"]=$m
		iops["$t/$s"]=$i
	done
done

ratio() { "$PYTHON" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b if b else 0))" "$1" "$2"; }
echo
echo "fio nbd engine, unix socket, QD16, 1 job, $SIZE, ${RUNTIME}s per run ($(nproc) CPUs)"
echo
printf '| test | hutch | qemu-nbd raw | qemu-nbd qcow2 | nbdkit file | hutch/raw | hutch/qcow2 | hutch/nbdkit |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for t in "${tests[@]}"; do
	row="| $t |"
	for s in "${servers[@]}"; do
		row+=" ${mib[$t/$s]} MiB/s, ${iops[$t/$s]} IOPS |"
	done
	for s in qemu-raw qemu-qcow2 nbdkit; do
		row+=" $(ratio "${iops["$t/hutch"]}" "${iops["$t/$s"]}") |"
	done
	echo "$row"
done

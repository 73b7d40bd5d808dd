#!/bin/bash
# hutch-fuse against its peers, in one run on the same data:
#
#   - sequential 1 MiB write and read, random 4 KiB read (fio, O_DIRECT,
#     libaio, QD16) through the hutch-fuse mount, and through nbdfuse over
#     qemu-nbd serving a raw file holding the same bytes;
#   - fork time by cp of a written 1 GiB and 16 GiB image: hutch-fuse
#     (copy_file_range sharing chunks) next to cp --reflink=always on an
#     XFS loop mount and a plain cp (--reflink=never) on the same XFS.
#
# Usage: bench/fuse.sh [--quick]      (needs root for the XFS loop mount)
#   HUTCH_BUILD=DIR   the meson build folder (default: the first build*/)
#   BENCH_SIZE=1G     size of the fio file; RUNTIME=5 seconds per fio run;
#   ROUNDS=3          runs per row and side, alternating; the best counts
#   --quick           skip the 16 GiB rows
#   --io-only         only the fio rows; --fork-only: only the cp rows
#   HUTCH_FUSE_ARGS   extra hutch-fuse options (e.g. "-C 4")
# Prints a markdown table. Numbers are from one run on a noisy machine.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
QUICK=
IO_ONLY=
[ "${1:-}" = "--quick" ] && QUICK=1
FORK_ONLY=
[ "${1:-}" = "--io-only" ] && IO_ONLY=1
[ "${1:-}" = "--fork-only" ] && FORK_ONLY=1
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
	exit 0
fi
if [ -z "${HUTCH_BUILD:-}" ]; then
	for d in "$SRC"/build*/; do
		[ -x "$d/fuse/hutch-fuse" ] && { HUTCH_BUILD=${d%/}; break; }
	done
fi
[ -n "${HUTCH_BUILD:-}" ] || { echo "set HUTCH_BUILD to a meson build folder with fuse/hutch-fuse" >&2; exit 1; }
export HUTCH_BUILD
. "$SRC/tests/fuse/fuse-functions.sh"
requires fio --version
requires qemu-nbd --version
requires nbdfuse --version
command -v mkfs.xfs >/dev/null || skip "needs mkfs.xfs (apt-get install xfsprogs)"

SIZE=${BENCH_SIZE:-1G}
RUNTIME=${RUNTIME:-5}
W="$HUTCH_HOME/work"
mkdir -p "$W"
cd "$W" || exit 1

start_storaged
start_fuse ${HUTCH_FUSE_ARGS:-}
I="$MNT/images"

# fio_row TARGET ARGS...: prints "MB/s IOPS" of one fio run. TARGET is a
# file (through a mount: O_DIRECT, libaio) or an NBD URI (fio's nbd engine).
fio_row() {
	local target=$1; shift
	local how=(--filename="$target" --ioengine=libaio --direct=1)
	case "$target" in nbd*) how=(--ioengine=nbd --uri="$target") ;; esac
	fio --name=b "${how[@]}" --iodepth=16 --size="$SIZE" --output-format=json "$@" \
	    >"$W/fio.json" 2>"$W/fio.err" || { cat "$W/fio.err" >&2; echo "0 0"; return; }
	"$PYTHON" - "$W/fio.json" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]	# the nbd engine may print a line first
rw = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.0f" % (rw["bw_bytes"] / 1e6, rw["iops"]))
PY
}

if [ -z "$FORK_ONLY" ]; then
# --- the data path --------------------------------------------------------
# Both files hold the same bytes before any row runs, so every write row is
# an overwrite on both sides. Rows alternate between the two mounts and
# each is run ROUNDS times; the best run counts (the machine is shared).
truncate -s "$SIZE" "$I/data" || fail "create image"
fio --name=fill --filename="$I/data" --rw=write --bs=1M --ioengine=libaio --direct=1 \
    --iodepth=16 --size="$SIZE" >/dev/null 2>&1 || fail "fill the image"
cp "$I/data" "$W/data.raw" || fail "copy the data out"
qemu-nbd -f raw -k "$W/qnbd.sock" --shared=16 "$W/data.raw" &
QPID=$!
_daemon_pids+=("$QPID")
wait_for 10 test -S "$W/qnbd.sock" || fail "qemu-nbd did not start"
mkdir -p "$W/nf"
nbdfuse "$W/nf/data" --unix "$W/qnbd.sock" &
NPID=$!
unmount_nf() { if mountpoint -q "$W/nf"; then fusermount3 -u -z "$W/nf"; fi; }
cleanup_fn unmount_nf
wait_for 10 test -f "$W/nf/data" || fail "nbdfuse did not mount"

ROUNDS=${ROUNDS:-3}
# best A B ROW-ARGS...: sets h and n to the best "MB/s IOPS" of targets A and B
best() {
	local a=$1 b=$2 i r; shift 2
	h="0 0"; n="0 0"
	for ((i = 0; i < ROUNDS; i++)); do
		r=$(fio_row "$a" "$@" --runtime="$RUNTIME" --time_based)
		[ "${r%% *}" -gt "${h%% *}" ] && h=$r
		r=$(fio_row "$b" "$@" --runtime="$RUNTIME" --time_based)
		[ "${r%% *}" -gt "${n%% *}" ] && n=$r
	done
}
best "$I/data" "$W/nf/data" --rw=write --bs=1M; h_sw=$h; n_sw=$n
best "$I/data" "$W/nf/data" --rw=read --bs=1M; h_sr=$h; n_sr=$n
best "$I/data" "$W/nf/data" --rw=randread --bs=4k; h_rr=$h; n_rr=$n
# The same rows straight over NBD (one connection, no FUSE): where a gap
# between the mounts comes from the servers rather than the FUSE layer.
QURI="nbd+unix:///?socket=$W/qnbd.sock"
best "$(nbd_uri data)" "$QURI" --rw=write --bs=1M; r_h_sw=$h; r_n_sw=$n
best "$(nbd_uri data)" "$QURI" --rw=read --bs=1M; r_h_sr=$h; r_n_sr=$n
best "$(nbd_uri data)" "$QURI" --rw=randread --bs=4k; r_h_rr=$h; r_n_rr=$n
fusermount3 -u "$W/nf"
wait "$NPID" 2>/dev/null

ratio() { "$PYTHON" -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b) if b else '-')" "$@"; }
f1() { echo "${1%% *}"; }
f2() { echo "${1##* }"; }
echo
echo "hutch-fuse vs nbdfuse over qemu-nbd (fio, libaio QD16, $SIZE, best of $ROUNDS x ${RUNTIME}s)"
echo
echo "| row | hutch-fuse | nbdfuse + qemu-nbd | ratio | storaged, NBD direct | qemu-nbd, NBD direct |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
echo "| seq write 1 MiB (MB/s) | $(f1 "$h_sw") | $(f1 "$n_sw") | $(ratio "$(f1 "$h_sw")" "$(f1 "$n_sw")") | $(f1 "$r_h_sw") | $(f1 "$r_n_sw") |"
echo "| seq read 1 MiB (MB/s) | $(f1 "$h_sr") | $(f1 "$n_sr") | $(ratio "$(f1 "$h_sr")" "$(f1 "$n_sr")") | $(f1 "$r_h_sr") | $(f1 "$r_n_sr") |"
echo "| rand read 4 KiB (IOPS) | $(f2 "$h_rr") | $(f2 "$n_rr") | $(ratio "$(f2 "$h_rr")" "$(f2 "$n_rr")") | $(f2 "$r_h_rr") | $(f2 "$r_n_rr") |"
echo
[ -n "$IO_ONLY" ] && exit 0
fi

# --- fork time --------------------------------------------------------------
# fill_image NAME SIZE: every chunk written (a repeating pattern, so the
# store stays small), over NBD.
fill_image() {
	truncate -s "$2" "$I/$1" || fail "create $1"
	fio --name=fill --ioengine=nbd --uri="$(nbd_uri "$1")" --rw=write --bs=1m --iodepth=16 \
	    --size="$2" --buffer_pattern=0x5a17c0de >/dev/null 2>&1 || fail "fill $1"
}
secs() { "$PYTHON" -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }
time_cp() {	# time_cp ARGS...: seconds
	local t0 t1
	t0=$(date +%s.%N)
	cp "$@" || fail "cp $*"
	t1=$(date +%s.%N)
	secs "$t0" "$t1"
}

XFS_IMG="$W/xfs.img"
truncate -s 48G "$XFS_IMG"
mkfs.xfs -q -m reflink=1 "$XFS_IMG" || fail "mkfs.xfs"
mkdir -p "$W/xfs"
mount -o loop "$XFS_IMG" "$W/xfs" || skip "cannot loop-mount XFS (needs root and loop devices)"
unmount_xfs() { if mountpoint -q "$W/xfs"; then umount -l "$W/xfs"; fi; }
cleanup_fn unmount_xfs

sizes="1G"
[ -z "$QUICK" ] && sizes="1G 16G"
declare -A f_h f_d f_x f_p
for s in $sizes; do
	fill_image "f$s" "$s"
	sync "$I/f$s"		# fsync: the store writes its map out first, like XFS below
	p0=$(store_physical)
	f_h[$s]=$(time_cp "$I/f$s" "$I/f$s-fork")
	f_d[$s]=$(( $(store_physical) - p0 ))
	# The same size written on XFS, synced so the copies do not flush it.
	fio --name=fill --filename="$W/xfs/f$s" --rw=write --bs=1m --iodepth=16 --ioengine=libaio \
	    --direct=1 --size="$s" --buffer_pattern=0x5a17c0de >"$W/fill.log" 2>&1 ||
		{ tail -5 "$W/fill.log" >&2; df -h "$W/xfs" >&2; fail "fill xfs $s"; }
	sync
	f_x[$s]=$(time_cp --reflink=always "$W/xfs/f$s" "$W/xfs/f$s-reflink")
	f_p[$s]=$(time_cp --reflink=never "$W/xfs/f$s" "$W/xfs/f$s-plain")
	rm -f "$W/xfs/f$s"*
done

echo "Fork by cp of a written image (seconds)"
echo
echo "| size | hutch-fuse cp | store bytes added by it | XFS cp --reflink=always | XFS plain cp |"
echo "| --- | ---: | ---: | ---: | ---: |"
for s in $sizes; do
	echo "| $s | ${f_h[$s]} | ${f_d[$s]} | ${f_x[$s]} | ${f_p[$s]} |"
done

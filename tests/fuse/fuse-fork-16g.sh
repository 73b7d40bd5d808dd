#!/bin/bash
# Description: cp of a 16 GiB image whose every chunk is written finishes
# in well under a second and adds no physical bytes: the fork shares
# chunks, it does not copy them. (bench/fuse.sh gives the timing table.)
. "$(dirname "$0")/fuse-functions.sh"
requires fio --version
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 16G "$I/big" || fail "create 16 GiB image"
# Every chunk written (a repeating pattern, so the store dedups it and the
# test needs little disk): the fork still has 16 GiB of allocated map.
fio --name=fill --ioengine=nbd --uri="$(nbd_uri big)" --rw=write --bs=1m --iodepth=16 \
    --size=16G --buffer_pattern=0x5a17c0de --numjobs=1 >"$HUTCH_HOME/fill.log" 2>&1 \
	|| { cat "$HUTCH_HOME/fill.log" >&2; fail "filling the image over NBD"; }
nbdinfo --map "$(nbd_uri big)" | grep -q hole && fail "image is not fully allocated"
blocks=$(stat -c %b "$I/big")
[ "$blocks" -ge $((16 * 1024 * 1024 * 2)) ] || fail "st_blocks $blocks: not 16 GiB allocated"
qemu-io -f raw -c "flush" "$(nbd_uri big)" >/dev/null || fail "flush"
before=$(store_physical)

t0=$(date +%s.%N)
cp "$I/big" "$I/big2" || fail "cp big big2"
t1=$(date +%s.%N)
secs=$("$PYTHON" -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1")
echo "cp of a 16 GiB written image: $secs s"
after=$(store_physical)
echo "physical before $before, after $after"
[ "$after" -le $((before + 1048576)) ] || fail "cp added physical bytes: $before -> $after"
# Copying 16 GiB of data would take well over 10 s here; sharing takes milliseconds.
"$PYTHON" -c 'import sys; sys.exit(float(sys.argv[1]) >= 5)' "$secs" || fail "cp took $secs s: chunks were copied, not shared"
assert_eq "$(stat -c %s "$I/big2")" 17179869184 "fork size"
nbdinfo --map "$(nbd_uri big2)" | grep -q hole && fail "fork has holes"
# Spot-check content at the start, at a 4 GiB boundary and at the end.
for off in 0 4294901760 17179803648; do
	cmp <(dd if="$I/big" bs=64k skip=$((off / 65536)) count=1 status=none) \
	    <(dd if="$I/big2" bs=64k skip=$((off / 65536)) count=1 status=none) || fail "fork differs at $off"
done
echo ok

#!/bin/bash
# Description: cp forks: the copy equals its source, shares its chunks (no
# physical bytes added), then both diverge independently; cp from a
# snapshot forks too; unaligned sizes copy their edges.
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 64M "$I/base" || fail "create base"
head -c 48M /dev/urandom >"$HUTCH_HOME/d"
dd if="$HUTCH_HOME/d" of="$I/base" bs=1M conv=notrunc,fsync status=none || fail "fill base"
sync "$I/base"
before=$(store_physical)

cp "$I/base" "$I/fork" || fail "cp base fork"
cmp "$I/base" "$I/fork" || fail "fork differs from base"
assert_eq "$(stat -c %s "$I/fork")" 67108864 "fork size"
hutch store stats >/dev/null
after=$(store_physical)
# Allow one chunk of slack for journal/metadata records.
[ "$after" -le $((before + 1048576)) ] || fail "cp added physical bytes: $before -> $after"
echo "physical before cp $before, after $after"

# Diverge both ways.
head -c 1M /dev/urandom >"$HUTCH_HOME/x"
head -c 1M /dev/urandom >"$HUTCH_HOME/y"
dd if="$HUTCH_HOME/x" of="$I/fork" bs=1M seek=2 conv=notrunc,fsync status=none || fail "write fork"
dd if="$HUTCH_HOME/y" of="$I/base" bs=1M seek=3 conv=notrunc,fsync status=none || fail "write base"
cmp -n 1048576 "$HUTCH_HOME/x" <(dd if="$I/fork" bs=1M skip=2 count=1 status=none) || fail "fork lost its write"
cmp -n 1048576 <(dd if="$HUTCH_HOME/d" bs=1M skip=2 count=1 status=none) \
	<(dd if="$I/base" bs=1M skip=2 count=1 status=none) || fail "fork's write leaked into base"
cmp -n 1048576 <(dd if="$HUTCH_HOME/d" bs=1M skip=3 count=1 status=none) \
	<(dd if="$I/fork" bs=1M skip=3 count=1 status=none) || fail "base's write leaked into fork"

# Fork from a snapshot.
ln "$I/base" "$I/base.snap/s1" || fail "snapshot"
cp "$I/base.snap/s1" "$I/fromsnap" || fail "cp snapshot to a new image"
cmp "$I/base" "$I/fromsnap" || fail "fork of the snapshot differs"
[ -w "$I/fromsnap" ] && dd if=/dev/urandom of="$I/fromsnap" bs=4k count=1 conv=notrunc status=none || fail "fork of a snapshot is writable"

# A size that is not a multiple of the chunk size, and an odd offset range.
head -c 1234567 /dev/urandom >"$HUTCH_HOME/odd"
cp "$HUTCH_HOME/odd" "$I/odd" || fail "cp a local file in"
cp "$I/odd" "$I/odd2" || fail "cp an odd-sized image"
cmp "$HUTCH_HOME/odd" "$I/odd2" || fail "odd-sized fork differs"
"$PYTHON" - "$I/base" "$I/odd2" <<'PY' || fail "copy_file_range at unaligned offsets"
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY); dst = os.open(sys.argv[2], os.O_RDWR)
n = os.copy_file_range(src, dst, 300000, 4097, 777)
want = os.pread(src, n, 4097)
assert n > 0 and os.pread(dst, n, 777) == want, "unaligned copy"
PY
# A sparse image of many extents: cp walks SEEK_DATA/SEEK_HOLE and forks
# extent by extent; the fork has the same map and adds no data.
truncate -s 64M "$I/frag" || fail "create frag"
for i in $(seq 0 2 63); do
	dd if="$HUTCH_HOME/d" of="$I/frag" bs=64k count=1 skip=$i seek=$((i * 16)) conv=notrunc status=none
done
sync "$I/frag"
before=$(store_physical)
cp "$I/frag" "$I/frag2" || fail "cp a sparse image"
cmp "$I/frag" "$I/frag2" || fail "sparse fork differs"
assert_eq "$(nbdinfo --map "$(nbd_uri frag2)")" "$(nbdinfo --map "$(nbd_uri frag)")" "allocation map of the sparse fork"
after=$(store_physical)
[ "$after" -le $((before + 1048576)) ] || fail "sparse cp added physical bytes: $before -> $after"

# cp back out to a local file.
cp "$I/odd2" "$HUTCH_HOME/out" && [ "$(stat -c %s "$HUTCH_HOME/out")" = 1234567 ] || fail "cp out of the mount"
echo ok

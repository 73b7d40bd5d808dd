#!/bin/bash
# Description: images as files on a real mount: create by truncate and by
# dd, dd+cmp round trips at odd offsets, sizes, sparse st_blocks,
# SEEK_DATA/SEEK_HOLE, resize, rename and remove.
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
start_storaged
start_fuse

I="$MNT/images"
[ -d "$I" ] || fail "no images/ folder in the mount"

# truncate -s creates an image of that size.
truncate -s 64M "$I/a" || fail "truncate -s 64M images/a"
assert_eq "$(stat -c %s "$I/a")" 67108864 "size of images/a"
hutch image info a >/dev/null || fail "the store does not know image a"
assert_eq "$(ls "$I")" "a" "listing of images/"
assert_eq "$(stat -c %b "$I/a")" 0 "st_blocks of a fresh image"

# dd + cmp round trips, aligned and not.
head -c 3M /dev/urandom >"$HUTCH_HOME/r1"
dd if="$HUTCH_HOME/r1" of="$I/a" bs=1M seek=5 conv=notrunc,fsync status=none || fail "dd 1M-aligned"
cmp -n 3145728 "$HUTCH_HOME/r1" <(dd if="$I/a" bs=1M skip=5 count=3 status=none) || fail "read back 1M-aligned"
head -c 100001 /dev/urandom >"$HUTCH_HOME/r2"
dd if="$HUTCH_HOME/r2" of="$I/a" bs=4096 seek=12345 oflag=seek_bytes conv=notrunc status=none || fail "dd unaligned"
cmp "$HUTCH_HOME/r2" <(dd if="$I/a" bs=100001 skip=12345 iflag=skip_bytes,fullblock count=1 status=none) || fail "read back unaligned"
# What was not written reads as zeroes.
cmp <(head -c 1M /dev/zero) <(dd if="$I/a" bs=1M skip=20 count=1 status=none) || fail "unwritten range is not zero"

# st_blocks counts allocated chunks only: about 3 MiB + 128 KiB, far below 64 MiB.
blocks=$(stat -c %b "$I/a")
[ "$blocks" -ge $((3 * 2048)) ] && [ "$blocks" -le $((4 * 2048)) ] || fail "st_blocks $blocks not ~3 MiB"

# SEEK_DATA / SEEK_HOLE follow the allocation map.
out=$("$PYTHON" - "$I/a" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
d = os.lseek(fd, 0, os.SEEK_DATA)
h = os.lseek(fd, d, os.SEEK_HOLE)
d2 = os.lseek(fd, h, os.SEEK_DATA)
h2 = os.lseek(fd, d2, os.SEEK_HOLE)
try:
    os.lseek(fd, h2, os.SEEK_DATA); last = "data"
except OSError as e:
    last = "ENXIO" if e.errno == 6 else str(e)
print(d, h, d2, h2, last)
PY
)
cs=$(hutch store stats --json | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("stats", d)["chunk_size"])')
lo=$((12345 / cs * cs)); hi=$(( (12345 + 100001 + cs - 1) / cs * cs ))
assert_eq "$out" "$lo $hi $((5 << 20)) $((8 << 20)) ENXIO" "SEEK_DATA/SEEK_HOLE offsets"

# dd into a new name creates the image and grows it as it writes.
dd if="$HUTCH_HOME/r1" of="$I/b" bs=1M status=none || fail "dd into a new image"
assert_eq "$(stat -c %s "$I/b")" 3145728 "size of images/b"
cmp "$HUTCH_HOME/r1" "$I/b" || fail "images/b differs from what was written"
nbdinfo --size "$(nbd_uri b)" | grep -qx 3145728 || fail "NBD size of b is not 3 MiB"

# Resize both ways.
truncate -s 10M "$I/b" || fail "grow b"
assert_eq "$(stat -c %s "$I/b")" 10485760 "grown size"
cmp -n 3145728 "$HUTCH_HOME/r1" "$I/b" || fail "grow changed the data"
truncate -s 1M "$I/b" || fail "shrink b"
assert_eq "$(stat -c %s "$I/b")" 1048576 "shrunk size"
cmp -n 1048576 "$HUTCH_HOME/r1" "$I/b" || fail "shrink changed the first MiB"

# Rename and remove.
mv "$I/b" "$I/c" || fail "mv b c"
[ -e "$I/b" ] && fail "b still there after mv"
cmp -n 1048576 "$HUTCH_HOME/r1" "$I/c" || fail "c has not b's data"
hutch image info c >/dev/null || fail "store has no c after mv"
rm "$I/c" || fail "rm c"
[ -e "$I/c" ] && fail "c still there after rm"
expect_fail hutch image info c

# A file held open across rm never reaches a new image of the same name.
truncate -s 1M "$I/z" || fail "create z"
exec 3<"$I/z"
rm "$I/z" || fail "rm z"
head -c 1M /dev/urandom >"$I/z" || fail "recreate z"
got=$("$PYTHON" -c '
import errno, os
try:
    os.pread(3, 4096, 0); print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])')
assert_eq "$got" ESTALE "read through a descriptor of a removed image"
exec 3<&-

# df works on the mount.
df "$MNT" >/dev/null || fail "statfs on the mount"
echo "ok"

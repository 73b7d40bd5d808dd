#!/bin/bash
# Description: nbdcopy into and out of an export with several connections, byte-identical, sparse.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdcopy --version
start_storaged
make_image disk 256M
uri=$(nbd_uri disk)

src="$HUTCH_HOME/src.img"
truncate -s 256M "$src"
# data with holes between, and one chunk's worth of zeros written explicitly
head -c 40M /dev/urandom | dd of="$src" conv=notrunc status=none
head -c 10M /dev/urandom | dd of="$src" bs=1M seek=100 conv=notrunc status=none
dd if=/dev/zero of="$src" bs=1M seek=150 count=4 conv=notrunc status=none
head -c 3M /dev/urandom | dd of="$src" bs=1M seek=253 conv=notrunc status=none

nbdcopy -C 4 --requests=16 "$src" "$uri" || fail "nbdcopy in failed"
out="$HUTCH_HOME/out.img"
nbdcopy -C 4 --requests=16 "$uri" "$out" || fail "nbdcopy out failed"
cmp "$src" "$out" || fail "nbdcopy round trip is not byte-identical"
alloc=$(du -k "$out" | cut -f1)
[ "$alloc" -lt $((60 * 1024)) ] || fail "nbdcopy out wrote holes as data: $alloc KiB allocated"

# the store holds only the data (zeros are not stored)
info=$(hutch image info disk --json 2>/dev/null || hutch image info disk)
echo "$info" | grep -q . || fail "hutch image info failed"

# and a second image copied export-to-export
make_image copy 256M
nbdcopy -C 4 "$uri" "$(nbd_uri copy)" || fail "nbdcopy export to export failed"
nbdcopy "$(nbd_uri copy)" - | cmp - "$src" || fail "export-to-export copy differs"
echo "ok"

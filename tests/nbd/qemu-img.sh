#!/bin/bash
# Description: qemu-img info/convert/compare/map against an export.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires qemu-img --version
start_storaged
make_image disk 64M
uri=$(nbd_uri disk)

info=$(qemu-img info --output=json "$uri") || fail "qemu-img info failed"
assert_contains "$info" '"virtual-size": 67108864' "qemu-img info size"

# A sparse qcow2 source: 1 MiB of data at 0, 512 KiB at 32 MiB, the rest unallocated.
src="$HUTCH_HOME/src.qcow2"
qemu-img create -q -f qcow2 "$src" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0x22 32M 512k" "$src" >/dev/null
qemu-img convert -n -f qcow2 -O raw "$src" "$uri" || fail "qemu-img convert into the export failed"
qemu-img compare -f qcow2 -F raw "$src" "$uri" || fail "qemu-img compare: export differs from source"

# map: only the two written ranges hold data
map=$(qemu-img map -f raw --output=json "$uri") || fail "qemu-img map failed"
data=$(echo "$map" | "$PYTHON" -c '
import json, sys
print(" ".join("%d+%d" % (e["start"], e["length"]) for e in json.load(sys.stdin) if e["data"]))')
assert_eq "$data" "0+1048576 33554432+524288" "data extents from qemu-img map"

# and back out: convert the export to qcow2, compare, stays sparse
out="$HUTCH_HOME/out.qcow2"
qemu-img convert -f raw -O qcow2 "$uri" "$out" || fail "qemu-img convert out of the export failed"
qemu-img compare -f qcow2 -F qcow2 "$src" "$out" || fail "round trip differs"
alloc=$(qemu-img info --output=json "$out" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["actual-size"])')
[ "$alloc" -lt $((8 << 20)) ] || fail "converted image is not sparse: $alloc bytes on disk"
echo "ok"

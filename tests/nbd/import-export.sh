#!/bin/bash
# Description: hutch image import/export of raw and qcow2 files, sparse-aware, byte-identical.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdcopy --version
requires qemu-img --version
start_storaged

raw="$HUTCH_HOME/in.raw"
truncate -s 100M "$raw"
head -c 8M /dev/urandom | dd of="$raw" conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$raw" bs=1M seek=50 conv=notrunc status=none
qcow="$HUTCH_HOME/in.qcow2"
qemu-img convert -f raw -O qcow2 "$raw" "$qcow"

out=$(hutch image import "$raw" fromraw) || fail "import of a raw file failed"
assert_contains "$out" "imported .*raw" "import message"
hutch image import "$qcow" fromqcow >/dev/null || fail "import of a qcow2 file failed"
info=$(hutch --json image info fromqcow) || fail "image info failed"
assert_contains "$info" '"size": *104857600' "imported qcow2 has its virtual size"
# only the data is stored: 10 MiB of 100
alloc=$(echo "$info" | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("image", d)["allocated"])')
[ "$alloc" -le $((11 << 20)) ] || fail "import stored zeros: $alloc bytes allocated"

hutch image export fromqcow "$HUTCH_HOME/out.raw" >/dev/null || fail "export to raw failed"
cmp "$raw" "$HUTCH_HOME/out.raw" || fail "raw export differs from the original"
kb=$(du -k "$HUTCH_HOME/out.raw" | cut -f1)
[ "$kb" -lt $((20 * 1024)) ] || fail "raw export is not sparse: $kb KiB"
hutch image export fromraw "$HUTCH_HOME/out.qcow2" >/dev/null || fail "export to qcow2 failed"
assert_contains "$(qemu-img info "$HUTCH_HOME/out.qcow2")" "file format: qcow2" "export format"
qemu-img compare -f raw -F qcow2 "$raw" "$HUTCH_HOME/out.qcow2" >/dev/null || fail "qcow2 export differs"

# snapshots export too; errors say what to do
hutch image snapshot fromraw s1 >/dev/null
hutch image export fromraw@s1 "$HUTCH_HOME/snap.raw" >/dev/null || fail "export of a snapshot failed"
cmp "$raw" "$HUTCH_HOME/snap.raw" || fail "snapshot export differs"
expect_fail hutch image export fromraw "$HUTCH_HOME/out.raw"
assert_contains "$EXPECT_ERR" "--force" "overwrite refused with a hint"
expect_fail hutch image export nothere "$HUTCH_HOME/x.raw"
assert_contains "$EXPECT_ERR" "hutch image list" "missing image named with a hint"
expect_fail hutch image import "$raw" fromraw
expect_fail hutch image import "$HUTCH_HOME/nofile" x
echo "ok"

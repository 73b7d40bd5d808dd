#!/bin/bash
# Description: snapshots are read-only: NBD writes and resize are refused; the data stays.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version

start_storaged
hutch image create img 16M || fail "create"
qemu-io -f raw -c 'write -P 0x11 0 1M' "$(nbd_uri img)" >/dev/null || fail "write"
hutch image snapshot img s || fail "snapshot"

# Writes to the snapshot export fail.
out=$(qemu-io -f raw -c 'write -P 0x22 0 64k' "$(nbd_uri img@s)" 2>&1)
grep -q "wrote" <<<"$out" && fail "write to a snapshot succeeded: $out"
expect_fail hutch image resize img@s 32M
assert_contains "$EXPECT_ERR" "read-only snapshot" "resize of a snapshot"
out=$(ctl_raw '{"op":"image.resize","name":"img@s","size":33554432}')
assert_contains "$out" '"errno":"EROFS"' "daemon refuses to resize a snapshot"

# The image itself stays writable, and the snapshot keeps the old bytes.
qemu-io -f raw -c 'write -P 0x33 0 1M' "$(nbd_uri img)" >/dev/null || fail "write image"
qemu-io -f raw -r -c 'read -P 0x11 0 1M' "$(nbd_uri img@s)" | grep -q "verification failed" &&
	fail "snapshot changed"
qemu-io -f raw -c 'read -P 0x33 0 1M' "$(nbd_uri img)" | grep -q "verification failed" &&
	fail "image lost its write"
exit 0

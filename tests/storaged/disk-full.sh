#!/bin/bash
# Description: a full disk: writes fail with ENOSPC, nothing already
# acknowledged is lost (also across a restart), and the store works again
# once space is freed.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version

store="$HUTCH_HOME/store"
mkdir -p "$store"
mount -t tmpfs -o size=40m tmpfs "$store" 2>/dev/null || skip "cannot mount a small tmpfs (needs CAP_SYS_ADMIN)"
cleanup_fn umount -l "$store"
# Ballast to free later.
dd if=/dev/zero of="$store/ballast" bs=1M count=8 status=none
head -c 48M /dev/urandom >"$HUTCH_HOME/random.bin"

start_storaged
hutch image create full 96M >/dev/null || fail "create failed"
uri=$(nbd_uri full)
qemu-io -f raw -c "write -P 0x11 0 8M" -c flush "$uri" >/dev/null || fail "first write failed"

out=$(qemu-io -f raw -c "write -s $HUTCH_HOME/random.bin 16M 48M" -c flush "$uri" 2>&1)
assert_contains "$out" "No space left on device" "a write past the free space"
grep -q "No space\|ENOSPC" "$HUTCH_HOME/storaged.log" || true

out=$(qemu-io -f raw -c "read -P 0x11 0 8M" "$uri" 2>&1) || fail "acknowledged data unreadable: $out"
assert_contains "$out" "read 8388608/8388608" "acknowledged data after ENOSPC"

rm -f "$store/ballast"
qemu-io -f raw -c "write -P 0x33 4M 1M" -c flush "$uri" >/dev/null || fail "write after freeing space failed"

kill9_storaged
start_storaged
qemu-io -f raw -c "read -P 0x11 0 4M" -c "read -P 0x33 4M 1M" -c "read -P 0x11 5M 3M" "$uri" \
	| grep -c "^read" | grep -qx 3 || fail "data wrong after restart"
hutch store verify >/dev/null || fail "verify failed after ENOSPC"
echo "ENOSPC reported, acknowledged data kept, writes work again after freeing space"

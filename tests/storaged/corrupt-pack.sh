#!/bin/bash
# Description: a flipped byte in a pack file: `hutch store verify` names the
# bad chunk and every image and offset that uses it, and reading that range
# over NBD fails with EIO instead of returning wrong data; the rest reads.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version

start_storaged
hutch image create a 8M >/dev/null || fail "create failed"
qemu-io -f raw -c "write -P 0x41 0 8M" -c flush "$(nbd_uri a)" >/dev/null || fail "write failed"
hutch image fork a b >/dev/null || fail "fork failed"
stop_storaged

# The first record of the first pack holds the chunk at offset 0 (all 0x41
# chunks are one chunk: every 64 KiB of both images uses it). Flip a payload byte.
pack="$HUTCH_HOME/store/packs/00000001.pack"
printf '\x00' | dd of="$pack" bs=1 seek=$((48 + 16 * 4 + 100)) conv=notrunc status=none
start_storaged

out=$(hutch store verify 2>&1) && fail "verify passed over a damaged chunk"
assert_contains "$out" "00000001.pack" "verify names the pack"
assert_contains "$out" "used by a at offset 0\b" "verify names image a"
assert_contains "$out" "used by b at offset 8323072" "verify names the last chunk of b"
json=$(hutch --json store verify 2>/dev/null) && fail "verify --json passed"
assert_contains "$json" '"bad"' "verify --json"

out=$(qemu-io -f raw -c "read -P 0x41 0 4096" "$(nbd_uri b)" 2>&1)
assert_contains "$out" "Input/output error" "a read of the damaged range"
# Another image's different data still reads.
hutch image create c 1M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 1M" -c "read -P 0x42 0 1M" "$(nbd_uri c)" | grep -q "^read 1048576" \
	|| fail "undamaged data unreadable"
echo "verify named the damaged chunk; reads of it fail with EIO"

#!/bin/bash
# Description: a truncated or corrupt tail of the heads journal and of a
# pack: hutch-storaged starts, keeps the last consistent state, and says in
# its log what it dropped.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version

start_storaged
hutch image create keep 8M >/dev/null || fail "create failed"
qemu-io -f raw -c "write -P 0x61 0 8M" -c flush "$(nbd_uri keep)" >/dev/null || fail "write failed"
hutch image snapshot keep s1 >/dev/null || fail "snapshot failed"
stop_storaged

# Garbage after the last whole record of each, as a crash mid-append leaves.
head -c 700 /dev/urandom >>"$HUTCH_HOME/store/heads"
head -c 5000 /dev/urandom >>"$HUTCH_HOME/store/packs/00000001.pack"
start_storaged
grep -q "heads journal.*dropped 700 bytes" "$HUTCH_HOME/storaged.log" || fail "the dropped journal tail is not reported"
grep -q "pack 00000001: dropped 5000 bytes" "$HUTCH_HOME/storaged.log" || fail "the dropped pack tail is not reported"
qemu-io -f raw -r -c "read -P 0x61 0 8M" "$(nbd_uri keep@s1)" | grep -q "^read 8388608" || fail "snapshot lost"
qemu-io -f raw -c "write -P 0x62 0 1M" -c flush "$(nbd_uri keep)" >/dev/null || fail "write after repair failed"
stop_storaged

# A torn last journal record (the flush of the 0x62 write): the state before
# it, all 0x61, is kept.
size=$(stat -c %s "$HUTCH_HOME/store/heads")
truncate -s $((size - 5)) "$HUTCH_HOME/store/heads"
rm -f "$HUTCH_HOME/store/index"		# and make it rebuild the index from the packs
start_storaged
grep -q "heads journal.*dropped" "$HUTCH_HOME/storaged.log" || fail "the torn record is not reported"
qemu-io -f raw -c "read -P 0x61 0 8M" "$(nbd_uri keep)" | grep -q "^read 8388608" || fail "state before the torn record lost"
hutch store verify >/dev/null || fail "verify failed after repair"
echo "torn tails dropped and reported; the last consistent state kept"

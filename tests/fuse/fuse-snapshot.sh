#!/bin/bash
# Description: ln images/NAME images/NAME.snap/SNAP takes a read-only
# snapshot; later writes to NAME leave it unchanged; rm drops it.
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 16M "$I/vm" || fail "create vm"
head -c 4M /dev/urandom >"$HUTCH_HOME/v1"
dd if="$HUTCH_HOME/v1" of="$I/vm" bs=1M conv=notrunc,fsync status=none || fail "write v1"
ls "$I" | grep -q snap && fail "vm.snap listed before there is a snapshot"
ls "$I/vm.snap" >/dev/null || fail "vm.snap must be reachable by path even when empty"

ln "$I/vm" "$I/vm.snap/monday" || fail "ln to take a snapshot"
[ -f "$I/vm.snap/monday" ] || fail "snapshot not listed"
assert_eq "$(ls "$I")" "$(printf 'vm\nvm.snap')" "listing of images/"
assert_eq "$(ls "$I/vm.snap")" "monday" "listing of vm.snap/"
hutch image info vm@monday >/dev/null || fail "store has no vm@monday"
assert_eq "$(stat -c %s "$I/vm.snap/monday")" 16777216 "snapshot size"
assert_eq "$(stat -c %a "$I/vm.snap/monday")" 400 "snapshot mode"

# Diverge: the image changes, the snapshot keeps v1.
head -c 4M /dev/urandom >"$HUTCH_HOME/v2"
dd if="$HUTCH_HOME/v2" of="$I/vm" bs=1M conv=notrunc,fsync status=none || fail "write v2"
cmp -n 4194304 "$HUTCH_HOME/v2" "$I/vm" || fail "vm does not hold v2"
cmp -n 4194304 "$HUTCH_HOME/v1" "$I/vm.snap/monday" || fail "snapshot changed after writes to vm"
# NBD sees the snapshot the same way.
qemu-io -r -f raw -c "read -P 0 4M 12M" "$(nbd_uri vm@monday)" | grep -q "read 12582912" || fail "NBD read of the snapshot"

# Snapshots are read-only (EROFS), whoever asks.
expect_errno EROFS "os.open('$I/vm.snap/monday', os.O_WRONLY)" "open snapshot for writing"
expect_errno EROFS "os.truncate('$I/vm.snap/monday', 0)" "truncate a snapshot"
cmp -n 4194304 "$HUTCH_HOME/v1" "$I/vm.snap/monday" || fail "snapshot changed"

# A second snapshot, then remove the first.
ln "$I/vm" "$I/vm.snap/tuesday" || fail "second snapshot"
cmp -n 4194304 "$HUTCH_HOME/v2" "$I/vm.snap/tuesday" || fail "tuesday does not hold v2"
rm "$I/vm.snap/monday" || fail "rm a snapshot"
expect_fail hutch image info vm@monday
assert_eq "$(ls "$I/vm.snap")" "tuesday" "vm.snap after rm"
# mv renames the image together with its snapshots.
mv "$I/vm" "$I/vm2" || fail "mv vm vm2"
cmp -n 4194304 "$HUTCH_HOME/v2" "$I/vm2.snap/tuesday" || fail "snapshot did not move with its image"
rm "$I/vm2.snap/tuesday" && rmdir "$I/vm2.snap" || fail "rm -r of a snapshot folder"
echo ok

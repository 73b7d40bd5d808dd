#!/bin/bash
# Description: coherence with NBD clients both ways: what the mount writes
# and fsyncs, qemu-io reads over NBD; what qemu-io writes over NBD, a
# file already open on the mount reads at once.
. "$(dirname "$0")/fuse-functions.sh"
requires qemu-io --version
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 8M "$I/c" || fail "create"

# Mount -> NBD.
"$PYTHON" - "$I/c" <<'PY' || fail "write through the mount"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"\xa5" * 65536, 1 << 20)
os.fsync(fd)
os.close(fd)
PY
qemu-io -r -f raw -c "read -P 0xa5 1M 64k" "$(nbd_uri c)" | grep -q "read 65536" || fail "NBD client does not see the mount's write"

# NBD -> mount, with the file held open and read before and after.
exec 3<"$I/c"
"$PYTHON" -c 'import os,sys; d=os.pread(3, 4096, 2<<20); sys.exit(0 if d == bytes(4096) else 1)' || fail "initial read"
qemu-io -f raw -c "write -P 0x3c 2M 64k" -c flush "$(nbd_uri c)" >/dev/null || fail "qemu-io write"
"$PYTHON" -c 'import os,sys; d=os.pread(3, 65536, 2<<20); sys.exit(0 if d == b"\x3c"*65536 else 1)' || fail "the open file does not see the NBD write"
# A reader through the mount with the page cache in play (no O_DIRECT).
cmp <(head -c 65536 /dev/zero | tr '\0' '\074') <(dd if="$I/c" bs=64k skip=32 count=1 status=none) || fail "cat does not see the NBD write"
exec 3<&-

# An NBD resize shows through the mount (after the attribute timeout).
hutch image resize c 16M || fail "resize over control"
sleep 1.2
assert_eq "$(stat -c %s "$I/c")" 16777216 "size after a resize made elsewhere"
qemu-io -f raw -c "write -P 0x77 15M 4k" "$(nbd_uri c)" >/dev/null || fail "write the new tail"
cmp <(head -c 4096 /dev/zero | tr '\0' '\167') <(dd if="$I/c" bs=4k skip=3840 count=1 status=none) || fail "new tail not readable through the mount"
# A write through the mount past the size its connections were made with
# (the resize above happened elsewhere) must not shrink the image back.
"$PYTHON" -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"\x66" * 4096, (14 << 20) + 4096)
os.fsync(fd)' "$I/c" || fail "write past the old size"
nbdinfo --size "$(nbd_uri c)" | grep -qx 16777216 || fail "the image shrank after a write past its old size"
qemu-io -r -f raw -c "read -P 0x77 15M 4k" "$(nbd_uri c)" | grep -q "read 4096" || fail "the tail written over NBD was lost"
echo ok

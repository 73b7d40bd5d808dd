#!/bin/bash
# Description: storaged killed while files are open: I/O fails with EIO,
# the mount stays; once storaged is back the same open files work again.
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 8M "$I/r" || fail "create"
head -c 1M /dev/urandom >"$HUTCH_HOME/d"
dd if="$HUTCH_HOME/d" of="$I/r" bs=1M conv=notrunc,fsync status=none || fail "write"

# fd 3 stays open across the restart; each python inherits it.
exec 3<>"$I/r"
pyfd() { "$PYTHON" -c "import errno, os, sys
d = open('$HUTCH_HOME/d', 'rb').read()
$1"; }
pyfd 'assert os.pread(3, len(d), 0) == d' || fail "read before the kill"

kill9_storaged
for what in "os.pread(3, 4096, 0)" "os.pwrite(3, b'x' * 4096, 0)" "os.fsync(3)"; do
	got=$(pyfd "
try:
    $what; print('OK')
except OSError as e:
    print(errno.errorcode[e.errno])")
	assert_eq "$got" EIO "$what while storaged is down"
done
mountpoint -q "$MNT" || fail "the mount went away with storaged"

mv "$HUTCH_HOME/storaged.log" "$HUTCH_HOME/storaged.1.log"
start_storaged
pyfd 'assert os.pread(3, len(d), 0) == d' || fail "read with the same fd after the restart"
pyfd 'os.pwrite(3, b"\x42" * 65536, 1 << 20); os.fsync(3)' || fail "write+fsync after the restart"
qemu-io -r -f raw -c "read -P 0x42 1M 64k" "$(nbd_uri r)" | grep -q "read 65536" || fail "NBD does not see the write made after the restart"
cmp -n 1048576 "$HUTCH_HOME/d" "$I/r" || fail "new opens after the restart"
exec 3>&-
echo ok

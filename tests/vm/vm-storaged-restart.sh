#!/bin/bash
# Description: hutch-storaged killed and restarted while a VM runs: the guest's
# disk stalls and then carries on (QEMU reconnects as the VM's own uid), and
# everything written before, during and after is there afterwards, also after
# a restart of the VM (so it is in the store, not only in the guest's cache).
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch vm create a >/dev/null || fail "vm create a"

# Writes straight to the disk, past the guest's page cache: dd with fsync.
hutch vm ssh a 'echo before > /root/before; sync' || fail "write before"

kill9_storaged
# During: this write stalls until storaged is back.
hutch vm ssh a 'echo during > /root/during; sync; dd if=/dev/urandom of=/root/blob bs=64k count=64 conv=fsync 2>/dev/null; md5sum /root/blob' \
	>"$HUTCH_HOME/during.out" 2>&1 &
writer=$!
sleep 4
kill -0 "$writer" 2>/dev/null || { cat "$HUTCH_HOME/during.out" >&2; fail "the write during the outage did not wait for storaged"; }
start_storaged
wait "$writer" || { cat "$HUTCH_HOME/during.out" >&2; fail "the write during the outage failed"; }
sum=$(cut -d' ' -f1 "$HUTCH_HOME/during.out")

hutch vm ssh a 'echo after > /root/after; sync' || fail "write after"
hutch vm ssh a 'dmesg | grep -i "i/o error"' && fail "the guest saw I/O errors"

hutch vm restart a >/dev/null || fail "vm restart a"
for f in before during after; do
	assert_eq "$(hutch vm ssh a cat /root/$f)" "$f" "/root/$f after the outage and a VM restart"
done
assert_eq "$(hutch vm ssh a md5sum /root/blob | cut -d' ' -f1)" "$sum" "blob written during the outage"
exit 0

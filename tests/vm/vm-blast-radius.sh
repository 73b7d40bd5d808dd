#!/bin/bash
# Description: a VM's QEMU user can open only that VM's disk: a process running
# as VM a's uid cannot open VM b's disk nor the template over NBD (storaged
# checks SO_PEERCRED against the ACL hutch-vmd keeps), while a's own disk works.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"
requires nbdinfo --version
requires setpriv --version
[ "$(id -u)" = 0 ] || skip "needs root to run QEMU and the probes as per-VM uids"

start_storaged
start_vmd
build_template
hutch vm create a --no-start >/dev/null || fail "vm create a"
hutch vm create b --no-start >/dev/null || fail "vm create b"
uid_a=$(vm_field a uid)
uid_b=$(vm_field b uid)
[ "$uid_a" -gt 0 ] && [ "$uid_b" -gt 0 ] || fail "VMs have no uid of their own ($uid_a, $uid_b)"
[ "$uid_a" != "$uid_b" ] || fail "a and b share uid $uid_a"

as_a() { setpriv --reuid="$uid_a" --regid="$uid_a" --clear-groups "$@"; }

as_a nbdinfo --size "$(nbd_uri vm.a)" >/dev/null || fail "a's uid cannot open a's own disk"
as_a nbdinfo --size "$(nbd_uri vm.b)" >/dev/null 2>&1 && fail "a's uid opened b's disk"
as_a nbdinfo --size "$(nbd_uri template.default)" >/dev/null 2>&1 && fail "a's uid opened the template"
list=$(as_a nbdinfo --list --json "nbd+unix://?socket=$HUTCH_HOME/run/nbd.sock" 2>/dev/null) || true
printf '%s' "$list" | grep -q '"vm.b"' && fail "a's uid can list b's disk"
# An unrelated uid gets nothing at all.
setpriv --reuid=12345 --regid=12345 --clear-groups nbdinfo --size "$(nbd_uri vm.a)" >/dev/null 2>&1 &&
	fail "an unrelated uid opened a's disk"
# Root (the admin, hutch-fuse) still opens everything.
nbdinfo --size "$(nbd_uri vm.b)" >/dev/null || fail "root cannot open b's disk"

# The guest itself runs: QEMU as a's uid boots from its disk.
hutch vm start a >/dev/null || fail "vm start a"
assert_eq "$(ps -o user= -p "$(vm_field a pid)" | tr -d ' ')" "$uid_a" "a's QEMU user"
assert_eq "$(hutch vm ssh a hostname)" a "a boots as its own uid"
exit 0

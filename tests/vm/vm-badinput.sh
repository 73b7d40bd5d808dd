#!/bin/bash
# Description: bad input to vm create (unknown template, duplicate name, more
# memory than the host has, a QEMU that fails to start) gives a clear error,
# QEMU's own message included, and leaves no half-created VM behind.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd

no_leftovers() {
	hutch vm list | grep -q "^$1 " && fail "$2: VM $1 is listed"
	[ -e "$HUTCH_HOME/vms/$1" ] && fail "$2: $HUTCH_HOME/vms/$1 left behind"
	hutch image list | grep -q "^vm\.$1 " && fail "$2: image vm.$1 left in the store"
	return 0
}

expect_fail hutch vm create x --template nope
assert_contains "$EXPECT_ERR" "no template named 'nope'" "unknown template"
assert_contains "$EXPECT_ERR" "hutch template build" "unknown template says what to do"
no_leftovers x "unknown template"

build_template

expect_fail hutch vm create x --memory 64T
assert_contains "$EXPECT_ERR" "more than this host has" "too much memory"
no_leftovers x "too much memory"

expect_fail hutch vm create -- -x
assert_contains "$EXPECT_ERR" "invalid VM name" "bad name"

# q35 takes at most 288 CPUs: QEMU itself refuses, and says why.
expect_fail hutch vm create x --cpus 300
assert_contains "$EXPECT_ERR" "QEMU failed to start" "QEMU failure"
assert_contains "$EXPECT_ERR" "qemu-system-x86_64: .*(CPUs|cpus)" "QEMU's own message"
no_leftovers x "QEMU failure"

hutch vm create x --no-start >/dev/null || fail "create x --no-start"
assert_eq "$(vm_field x state)" stopped "state after --no-start"
expect_fail hutch vm create x --no-start
assert_contains "$EXPECT_ERR" "already exists" "duplicate name"
[ -f "$HUTCH_HOME/vms/x/vm.json" ] || fail "the duplicate create removed the first VM"

expect_fail hutch vm start nope
assert_contains "$EXPECT_ERR" "no VM named 'nope'" "start of an unknown VM"
expect_fail hutch vm fork nope y
assert_contains "$EXPECT_ERR" "no VM named 'nope'" "fork of an unknown VM"
no_leftovers y "fork of an unknown VM"
hutch vm rm x || fail "rm x"
no_leftovers x "rm"

# template import: a qcow2 copy of the built template's disk lands in the
# store with the same bytes; bad files are refused with qemu-img's reason.
t="$HUTCH_HOME/templates/default"
qemu-img convert -O qcow2 "$(nbd_uri template.default)" "$HUTCH_HOME/t.qcow2" || fail "export as qcow2"
hutch template import q --disk "$HUTCH_HOME/t.qcow2" --kernel "$t/vmlinuz" --initrd "$t/initrd.img" \
	--cmdline "console=ttyS0 root=/dev/vda rw" --memory 128M >/dev/null || fail "template import q"
qemu-img compare -q "$(nbd_uri template.default)" "$(nbd_uri template.q)" || fail "imported qcow2 differs"
hutch template list | grep -q '^q ' || fail "imported template not listed"
hutch vm create y --template q --no-start >/dev/null || fail "vm from the imported template"
assert_eq "$(vm_field y memory)" 134217728 "memory default from the imported template"
expect_fail hutch template import j --disk /nonexistent --kernel "$t/vmlinuz" --initrd "$t/initrd.img"
assert_contains "$EXPECT_ERR" "nonexistent" "import of a missing file"
expect_fail hutch template import q --disk "$HUTCH_HOME/t.qcow2" --kernel "$t/vmlinuz" --initrd "$t/initrd.img"
assert_contains "$EXPECT_ERR" "already exists" "import over an existing template"
hutch template rm q || fail "template rm q"
hutch image list | grep -q '^template\.q ' && fail "template.q still in the store"
hutch vm rm y || fail "rm y (its template is gone)"
exit 0

#!/bin/bash
# Description: vm fork of a stopped VM gives a new VM with the source's files
# but its own identity (hostname, machine-id, SSH host key); a running VM is
# not forked (its disk would be inconsistent).
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch vm create a >/dev/null || fail "vm create a"
hutch vm ssh a 'echo from-a > /root/note; sync' || fail "write in a"
key_a=$(hutch vm ssh a dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519')
id_a=$(hutch vm ssh a cat /etc/machine-id)

expect_fail hutch vm fork a b
assert_contains "$EXPECT_ERR" "is running; stop it first" "fork of a running VM"

hutch vm stop a || fail "stop a"
start=$(date +%s%N)
hutch vm fork a b --no-start >/dev/null || fail "vm fork a b"
echo "fork of a stopped VM took $((($(date +%s%N) - start) / 1000000)) ms"
hutch vm start b >/dev/null || fail "start b"
assert_eq "$(hutch vm ssh b cat /root/note)" from-a "a's file in the fork"
assert_eq "$(hutch vm ssh b hostname)" b "hostname of the fork"
id_b=$(hutch vm ssh b cat /etc/machine-id)
key_b=$(hutch vm ssh b dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519')
[ "$id_a" != "$id_b" ] || fail "the fork kept a's machine-id"
[ "$key_a" != "$key_b" ] || fail "the fork kept a's SSH host key"
hutch image info vm.b --json | grep -q '"parent": *"vm.a"' || fail "vm.b is not a fork of vm.a in the store"
exit 0

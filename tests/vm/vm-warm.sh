#!/bin/bash
# Description: warm templates. `template warm` saves the booted template;
# 5 VMs created from it resume its memory (shared copy-on-write), each
# SSH-reachable with its own hostname, machine-id, SSH host key, MAC and
# random bytes, and a file written in one is absent in the others. A warm
# template still boots cold on request (--cold).
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"
requires nbdcopy --version

start_storaged
start_vmd
build_template
hutch template warm default >/dev/null || fail "template warm default"
hutch template list | grep -Eq '^default .* yes ' || { hutch template list >&2; fail "template list does not show default warm"; }
[ -s "$HUTCH_HOME/templates/default/warm.ram" ] || fail "no warm RAM file"
hutch image info template.default.ram >/dev/null || fail "the warm RAM is not in the store"

names="w1 w2 w3 w4 w5"
for n in $names; do
	t0=$(date +%s%N)
	hutch vm create "$n" >/dev/null || fail "vm create $n from the warm template"
	echo "warm create $n: $((($(date +%s%N) - t0) / 1000000)) ms to SSH-ready and re-identified"
	grep -q "VM $n resumed from warm template" "$HUTCH_HOME/vmd.log" || fail "$n was not resumed from the warm state"
done

declare -A seen
for n in $names; do
	h=$(hutch vm ssh "$n" hostname) || fail "ssh $n"
	assert_eq "$h" "$n" "hostname of $n"
	mid=$(hutch vm ssh "$n" cat /etc/machine-id)
	assert_eq "$mid" "$(vm_field "$n" machine_id)" "machine-id of $n"
	mac=$(hutch vm ssh "$n" cat /sys/class/net/eth0/address)
	assert_eq "$mac" "$(vm_field "$n" mac)" "MAC of $n"
	key=$(hutch vm ssh "$n" dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519' | cut -d' ' -f2)
	[ -n "$key" ] || fail "no host key in $n"
	# The key the client learnt is the one the guest now has.
	grep -q "$key" "$HUTCH_HOME/vms/$n/known_hosts" || fail "$n's SSH server does not serve its new host key"
	rnd=$(hutch vm ssh "$n" 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
	[ ${#rnd} -eq 64 ] || fail "urandom of $n: '$rnd'"
	for v in "mid:$mid" "mac:$mac" "key:$key" "rnd:$rnd"; do
		[ -z "${seen[$v]:-}" ] || fail "$n shares ${v%%:*} ${v#*:} with ${seen[$v]}"
		seen[$v]=$n
	done
	echo "$n: machine-id $mid mac $mac urandom $rnd"
done

hutch vm ssh w1 'echo only-in-w1 > /root/mine; sync' || fail "write in w1"
for n in w2 w3 w4 w5; do
	hutch vm ssh "$n" 'test ! -e /root/mine' || fail "w1's file is visible in $n"
done
assert_eq "$(hutch vm ssh w1 cat /root/mine)" only-in-w1 "w1's own file"

# The shared memory is the template's file, mapped privately.
pid=$(vm_field w1 pid)
grep -q "templates/default/warm.ram" "/proc/$pid/maps" || fail "w1 does not map the template's RAM"

# --cold boots instead, from the template's (not the warm) disk.
hutch vm create c1 --cold >/dev/null || fail "vm create --cold"
grep -q "VM c1 resumed" "$HUTCH_HOME/vmd.log" && fail "--cold resumed the warm state"
assert_eq "$(hutch vm ssh c1 hostname)" c1 "hostname of a cold VM"

# A warm template's VM must have its machine.
expect_fail hutch vm create bad --memory 512M
assert_contains "$EXPECT_ERR" "--cold" "create with other memory than the warm state"
exit 0

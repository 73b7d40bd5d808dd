#!/bin/bash
# Description: warm templates. `template warm` saves the booted template;
# 5 VMs created from it resume its memory (shared copy-on-write), each
# SSH-reachable with its own hostname, machine-id, SSH host key, MAC and
# random bytes, and a file written in one is absent in the others. A warm
# fork hibernates and resumes (its RAM split out of the migration stream),
# and forks live. Forks get their identity through the guest agent, or over
# SSH from a template without it. A warm template still boots cold on
# request (--cold).
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
	# Through the guest agent, not an SSH session.
	grep "VM $n re-identified after the fork" "$HUTCH_HOME/vmd.log" | grep -q "(agent)" ||
		{ grep "VM $n " "$HUTCH_HOME/vmd.log" >&2; fail "$n was not re-identified through its agent"; }
	# Its new MAC was announced: the first connection to its SSH server got in.
	! grep "VM $n: no SSH banner" "$HUTCH_HOME/vmd.log" || fail "$n's first SSH connection got no answer"
done
grep -E "VM w[1-5] (resumed from|re-identified)" "$HUTCH_HOME/vmd.log"

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

# A warm fork hibernates: its RAM comes out of the migration stream
# (hutch-vmstate-split), page-aligned, so the store keeps only what it changed
# from the template's memory. It resumes with its processes and tmpfs.
hutch vm ssh w2 'echo in-tmpfs > /dev/shm/mark; setsid sh -c "i=0; while :; do i=\$((i + 1)); echo \$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done" \
	</dev/null >/dev/null 2>&1 & echo $! > /tmp/counter.pid' || fail "start a counter in w2"
sleep 1
cpid=$(hutch vm ssh w2 cat /tmp/counter.pid)
c1=$(hutch vm ssh w2 cat /tmp/count)
stored() { hutch store stats --json | jq .unique_data; }
before=$(stored)
hutch vm hibernate w2 >/dev/null || fail "hibernate the warm fork w2"
added=$(($(stored) - before))
ram=$(vm_field w2 memory)
echo "hibernating warm fork w2 added $((added >> 20)) MiB to the store (RAM $((ram >> 20)) MiB)"
[ "$added" -lt $((ram / 8)) ] || fail "w2's hibernation stored $added bytes: its RAM did not dedup with the template's"
assert_eq "$(vm_field w2 tier)" hibernated "tier of w2"
[ -e "$HUTCH_HOME/run/sleep/w2/ram" ] && fail "the split RAM file is left on the host"
hutch vm resume w2 >/dev/null || fail "resume w2"
assert_eq "$(hutch vm ssh w2 cat /tmp/counter.pid)" "$cpid" "w2's counter pid after resume"
hutch vm ssh w2 "kill -0 $cpid" || fail "w2's counter is gone after resume"
sleep 1
c2=$(hutch vm ssh w2 cat /tmp/count)
[ "$c2" -gt "$c1" ] || fail "w2's count did not carry on ($c1 -> $c2)"
assert_eq "$(hutch vm ssh w2 cat /dev/shm/mark)" in-tmpfs "w2's tmpfs file after resume"
assert_eq "$(hutch vm ssh w2 hostname)" w2 "w2's hostname after resume"
grep -q "vms/w2/run/ram" "/proc/$(vm_field w2 pid)/maps" || fail "resumed w2 does not map its own RAM file"

# A warm fork forks live too: its RAM goes straight into the new VM's file.
hutch vm fork w3 w6 --live >/dev/null || fail "live fork of the warm fork w3"
assert_eq "$(hutch vm ssh w6 hostname)" w6 "hostname of the live fork of a warm fork"
assert_eq "$(vm_field w3 state)" running "w3 after the live fork"
hutch vm ssh w3 true || fail "w3 after the live fork"

# --cold boots instead, from the template's (not the warm) disk.
hutch vm create c1 --cold >/dev/null || fail "vm create --cold"
grep -q "VM c1 resumed" "$HUTCH_HOME/vmd.log" && fail "--cold resumed the warm state"
assert_eq "$(hutch vm ssh c1 hostname)" c1 "hostname of a cold VM"

# A guest without hutch's agent (an imported template): its forks get their
# identity over SSH instead.
hutch image export template.default "$HUTCH_HOME/plain.raw" >/dev/null || fail "export the template disk"
cmdline=$(hutch template list --json | jq -r '.[] | select(.name == "default") | .cmdline')
[ -n "$cmdline" ] || fail "no kernel command line for template default in template list --json"
hutch template import plain --disk "$HUTCH_HOME/plain.raw" --kernel "$HUTCH_HOME/templates/default/vmlinuz" \
	--initrd "$HUTCH_HOME/templates/default/initrd.img" --cmdline "$cmdline" \
	>/dev/null || fail "template import without the agent"
rm -f "$HUTCH_HOME/plain.raw"
hutch template warm plain >/dev/null || fail "template warm plain"
hutch vm create p1 --template plain >/dev/null || fail "vm create from a warm template without the agent"
grep "VM p1 re-identified after the fork" "$HUTCH_HOME/vmd.log" | grep -q "(SSH)" || fail "p1 was not re-identified over SSH"
assert_eq "$(hutch vm ssh p1 hostname)" p1 "hostname of p1"
key=$(hutch vm ssh p1 dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519' | cut -d' ' -f2)
grep -q "$key" "$HUTCH_HOME/vms/p1/known_hosts" || fail "p1's SSH server does not serve its new host key"
[ -z "${seen[key:$key]:-}" ] || fail "p1 has the host key of ${seen[key:$key]}"

# A warm template's VM must have its machine.
expect_fail hutch vm create bad --memory 512M
assert_contains "$EXPECT_ERR" "--cold" "create with other memory than the warm state"
exit 0

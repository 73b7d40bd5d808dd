#!/bin/bash
# Description: end to end under TCG: build the test template, create three VMs,
# each sees only its own files, each has its own hostname, machine-id and SSH
# host key, a stopped and restarted VM keeps its data, and the store holds the
# three disks for far less than three copies.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch template list | grep -q '^default ' || fail "template default not listed"

for v in a b c; do
	hutch vm create "$v" >"$HUTCH_HOME/create-$v.out" 2>&1 || { cat "$HUTCH_HOME/create-$v.out" >&2; fail "vm create $v"; }
done
for v in a b c; do
	assert_eq "$(vm_field "$v" state)" running "state of $v"
	assert_eq "$(vm_field "$v" accel)" tcg "accelerator of $v"
done

# A different file in each, over `hutch vm ssh`.
for v in a b c; do
	hutch vm ssh "$v" "echo secret-of-$v > /root/mine-$v; sync" || fail "write in $v"
done
for v in a b c; do
	for w in a b c; do
		if [ "$v" = "$w" ]; then
			got=$(hutch vm ssh "$v" cat "/root/mine-$w") || fail "$v cannot read its own file"
			assert_eq "$got" "secret-of-$v" "own file in $v"
		else
			hutch vm ssh "$v" test -e "/root/mine-$w" && fail "$v sees $w's file"
		fi
	done
done

# The serial console: its log, and a shell on it.
hutch vm console a --log | grep -q "hutch: a ready" || fail "console log of a lacks the boot line"
out=$(printf 'echo console-$((6 * 7))\n' | timeout 30 hutch vm console a) || fail "vm console a"
assert_contains "$out" "console-42" "a command on the serial console"

# Exit status and stderr pass through.
hutch vm ssh a 'echo to-stderr >&2; exit 7' 2>"$HUTCH_HOME/ssh.err"
assert_eq "$?" 7 "exit status through vm ssh"
assert_eq "$(cat "$HUTCH_HOME/ssh.err")" to-stderr "stderr through vm ssh"

# Identity: hostname = VM name, and no two VMs share machine-id or host key.
ids="" keys=""
for v in a b c; do
	assert_eq "$(hutch vm ssh "$v" hostname)" "$v" "hostname of $v"
	id=$(hutch vm ssh "$v" cat /etc/machine-id) || fail "machine-id of $v"
	assert_eq "$id" "$(vm_field "$v" machine_id)" "machine-id of $v as recorded"
	key=$(hutch vm ssh "$v" dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519') ||
		fail "host key of $v"
	ids="$ids$id"$'\n' keys="$keys$key"$'\n'
done
assert_eq "$(printf '%s' "$ids" | sort -u | wc -l)" 3 "distinct machine-ids"
assert_eq "$(printf '%s' "$keys" | sort -u | wc -l)" 3 "distinct SSH host keys"
seeds=$(for v in a b c; do hutch vm ssh "$v" 'head -c 16 /dev/urandom | md5sum'; done | sort -u | wc -l)
assert_eq "$seeds" 3 "distinct random streams"

# Stop (ACPI) and start again: the file is still there.
hutch vm stop b || fail "vm stop b"
assert_eq "$(vm_field b state)" stopped "state after stop"
hutch vm list | grep -Eq '^b +stopped' || fail "vm list does not show b stopped"
hutch vm start b || fail "vm start b"
assert_eq "$(hutch vm ssh b cat /root/mine-b)" secret-of-b "b's file after stop and start"

# Three 1 GiB VMs share the template's chunks: far less than three copies.
stats=$(hutch store stats --json) || fail "store stats"
unique=$(printf '%s' "$stats" | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['unique_data'])")
tmpl=$(hutch image info template.default --json | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['allocated'])")
echo "template allocated $tmpl bytes; unique data with three VMs $unique bytes"
hutch store stats
[ "$unique" -lt $((tmpl * 3 / 2)) ] || fail "three VMs cost $unique bytes, template alone $tmpl"

hutch vm rm a || fail "vm rm a"
hutch vm list | grep -q '^a ' && fail "a still listed after rm"
hutch image list | grep -q '^vm\.a ' && fail "a's disk still in the store after rm"
exit 0

#!/bin/bash
# Description: a real sshd on a loopback port refuses an unknown key and
# every kind of forwarding; a known key whose VM service is down (or hung)
# gets a clear message, exit 255, no hang, and an audit record; VM names that try
# to leave the user's own VMs are refused before anything runs.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/ssh-functions.sh"

start_sshd
make_user alice
make_key stranger

# Unknown key: sshd itself says no; hutch-shell never runs.
out=$(ssh_cmd stranger true 2>&1); st=$?
assert_eq "$st" 255 "exit status of an unknown key"
assert_contains "$out" "Permission denied" "unknown key message"

# vmd is not running: a clear message, quickly, and an audit record.
start=$(date +%s)
out=$(SSH_TIMEOUT=30 ssh_cmd alice hostname 2>&1); st=$?
[ "$st" -ne 124 ] || fail "login hung with hutch-vmd down"
assert_eq "$st" 255 "exit status with hutch-vmd down"
assert_contains "$out" "VM service \(hutch-vmd\) is not running" "message with hutch-vmd down"
[ $(($(date +%s) - start)) -le 10 ] || fail "login with hutch-vmd down took over 10 s"
rec=$(hutch audit show --type session --json | "$PYTHON" -c '
import json, sys
r = [x for x in json.load(sys.stdin) if x["event"] == "refused"]
print(r[-1]["user"], r[-1]["vm"], r[-1]["key"].startswith("SHA256:"), "hutch-vmd" in r[-1]["error"])')
assert_eq "$rec" "alice alice True True" "audit record of the refused login"

# A hung hutch-vmd (accepts, never answers): the login gives up with a message.
mkdir -p "$HUTCH_HOME/run"
"$PYTHON" -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(300)' \
	"$HUTCH_HOME/run/vmd.sock" &
hung=$!
cleanup_fn sh -c "kill $hung 2>/dev/null; true"
wait_for 10 test -S "$HUTCH_HOME/run/vmd.sock" || fail "fake hung hutch-vmd did not start"
start=$(date +%s)
out=$(SSH_TIMEOUT=90 ssh_cmd alice hostname 2>&1); st=$?
assert_eq "$st" 255 "exit status with hutch-vmd hung"
assert_contains "$out" "did not answer within 30 s" "message with hutch-vmd hung"
[ $(($(date +%s) - start)) -le 60 ] || fail "login with hutch-vmd hung took over 60 s"
kill "$hung"; wait "$hung" 2>/dev/null
rm -f "$HUTCH_HOME/run/vmd.sock"

# Names that try to leave the user's own VMs never reach hutch-vmd.
for bad in 'vm=../bob hostname' 'vm=bob;id hostname' 'vm=$(id) hostname' "vm='bob' hostname" 'vm=a/b true'; do
	out=$(ssh_cmd alice "$bad" 2>&1); st=$?
	assert_eq "$st" 255 "exit status for '$bad'"
	assert_contains "$out" "is not a VM name you can choose" "message for '$bad'"
done
HUTCH_VM='x y' timeout 30 ssh $(ssh_opts alice) -o SetEnv=HUTCH_VM=../../x "$SSH_LOGIN@127.0.0.1" true 2>"$HUTCH_HOME/env.err"
assert_eq "$?" 255 "exit status for HUTCH_VM=../../x"
grep -q "is not a VM name you can choose" "$HUTCH_HOME/env.err" || fail "HUTCH_VM=../../x not refused: $(cat "$HUTCH_HOME/env.err")"

# Very long input is refused with a reason, not cut or passed on.
long=$(head -c 20000 /dev/zero | tr '\0' x)
out=$(ssh_cmd alice "echo $long" 2>&1); st=$?
assert_eq "$st" 255 "exit status of a 20 kB command"
assert_contains "$out" "more than the 8192 hutch carries" "message for a 20 kB command"

# Host-side shell syntax is never interpreted on the host.
rm -f /tmp/hutch-ssh-pwned.$$
ssh_cmd alice "vm=\$(touch /tmp/hutch-ssh-pwned.$$) true" >/dev/null 2>&1
ssh_cmd alice "; touch /tmp/hutch-ssh-pwned.$$" >/dev/null 2>&1
ssh_cmd alice "\$(touch /tmp/hutch-ssh-pwned.$$)" >/dev/null 2>&1
[ -e /tmp/hutch-ssh-pwned.$$ ] && { rm -f /tmp/hutch-ssh-pwned.$$; fail "a command ran on the host"; }

# Forwarding: stdio (-W, a direct-tcpip channel) and remote (-R) are refused.
out=$(timeout 30 ssh $(ssh_opts alice) -W 127.0.0.1:"$SSH_PORT" "$SSH_LOGIN@127.0.0.1" </dev/null 2>&1); st=$?
[ "$st" -ne 0 ] || fail "ssh -W (port forwarding) was allowed"
assert_contains "$out" "prohibited|failed" "ssh -W refusal"
out=$(timeout 30 ssh $(ssh_opts alice) -N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 \
	"$SSH_LOGIN@127.0.0.1" 2>&1); st=$?
[ "$st" -ne 0 ] || fail "ssh -R (remote forwarding) was allowed"
assert_contains "$out" "forwarding failed|Error: remote port forwarding" "ssh -R refusal"
grep -Eq "restrict|Agent forwarding disabled|agent forwarding" "$HUTCH_HOME/sshd/sshd.log" ||
	true	# sshd logs the key options only at higher levels; the guest check is in ssh-e2e
exit 0

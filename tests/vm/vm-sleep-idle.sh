#!/bin/bash
# Description: the idle policy with short windows: an idle VM is paused and
# then hibernated, a VM running a CPU-bound job with nobody logged in stays
# awake, and an open session (vm.session) wakes a VM and keeps it awake.
. "$(dirname "$0")/../functions.sh"
mkdir -p "$HUTCH_HOME"
cat >"$HUTCH_HOME/hutch.conf" <<'CONF'
[vmd]
accel = tcg
log_level = debug
stop_timeout = 20s
boot_timeout = 120s
reconnect_delay = 60

[idle]
window = 1s
cpu_percent = 30
pause_after = 4s
hibernate_after = 10s
CONF
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch vm create busy --memory 256M >/dev/null || fail "vm create busy"
# A CPU-bound job, nobody logged in.
hutch vm ssh busy 'setsid sh -c "while :; do :; done" </dev/null >/dev/null 2>&1 &' || fail "start the job"
hutch vm create idle --memory 256M >/dev/null || fail "vm create idle"

tier() { vm_field "$1" tier; }
wait_for 30 sh -c "hutch vm list | grep -Eq '^idle +paused '" ||
	{ hutch vm list >&2; grep 'VM idle:' "$HUTCH_HOME/vmd.log" | tail -5 >&2; fail "the idle VM was not paused"; }
wait_for 40 sh -c "hutch vm list | grep -Eq '^idle +hibernated '" ||
	{ hutch vm list >&2; fail "the idle VM was not hibernated"; }
grep -E 'VM busy: cpu' "$HUTCH_HOME/vmd.log" | tail -3
grep -E 'VM idle: cpu' "$HUTCH_HOME/vmd.log" | tail -3
assert_eq "$(tier busy)" awake "the busy VM's tier"
assert_eq "$(vm_field busy state)" running "the busy VM's state"
grep -q "VM busy idle for" "$HUTCH_HOME/vmd.log" && fail "the busy VM was put to sleep"

# A session wakes the hibernated VM and keeps it awake past hibernate_after.
session() {
	"$PYTHON" - "$HUTCH_HOME/run/vmd.sock" "$1" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((json.dumps({"op": "vm.session", "name": sys.argv[2], "action": sys.argv[3]}) + "\n").encode())
reply = json.loads(s.makefile().readline())
sys.exit(0 if reply.get("ok") else 1)
PY
}
session idle begin || fail "vm.session begin"
assert_eq "$(tier idle)" awake "a hibernated VM after a session began"
assert_eq "$(hutch vm ssh idle echo hi)" hi "ssh into the woken VM"
sleep 14
assert_eq "$(tier idle)" awake "a VM with an open session, after hibernate_after"
session idle end || fail "vm.session end"
wait_for 30 sh -c "hutch vm list | grep -Eq '^idle +(paused|hibernated) '" ||
	{ hutch vm list >&2; fail "the VM did not sleep once its session ended"; }
assert_eq "$(tier busy)" awake "the busy VM's tier at the end"
exit 0

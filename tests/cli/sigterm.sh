#!/bin/bash
# Description: SIGTERM and SIGINT stop hutch-storaged cleanly, with acknowledged data on disk.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version

start_storaged
[ -f "$HUTCH_HOME/run/storaged.pid" ] || fail "no pid file"
assert_eq "$(cat "$HUTCH_HOME/run/storaged.pid")" "$STORAGED_PID" "pid file"
hutch image create disk 64M || fail "create"
[ -S "$HUTCH_HOME/run/nbd.sock" ] || fail "no NBD socket"

# Write without an explicit flush: a clean stop must still keep it.
qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 32M 64k' \
	"$(nbd_uri disk)" >/dev/null || fail "write over NBD"

stop_storaged
grep -q "stopped; store closed cleanly" "$HUTCH_HOME/storaged.log" || fail "no clean-stop line"
[ -e "$HUTCH_HOME/run/control.sock" ] && fail "control socket left behind"
[ -e "$HUTCH_HOME/run/storaged.pid" ] && fail "pid file left behind"

start_storaged
qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 32M 64k' -c 'read -P 0 1M 1M' \
	"$(nbd_uri disk)" | grep -q "Pattern verification failed" && fail "data lost over a clean stop"

# SIGTERM in the middle of a stream of NBD writes: still a clean stop, and
# the store opens and verifies afterwards.
head -c 48M /dev/urandom >"$HUTCH_HOME/data"
( while :; do
	qemu-img convert -n -f raw -O raw "$HUTCH_HOME/data" "$(nbd_uri disk)" >/dev/null 2>&1 || break
done ) &
writer=$!
cleanup_fn kill $writer
sleep 0.5
stop_storaged
wait $writer 2>/dev/null
start_storaged
hutch store verify >/dev/null || fail "verify after a stop under load"
qemu-io -f raw -c 'read 0 48M' "$(nbd_uri disk)" >/dev/null || fail "read after a stop under load"

# After kill -9 the stale socket and pid file are replaced on the next start.
kill9_storaged
[ -S "$HUTCH_HOME/run/control.sock" ] || fail "kill -9 should leave the socket file behind"
start_storaged
assert_eq "$(cat "$HUTCH_HOME/run/storaged.pid")" "$STORAGED_PID" "pid file after kill -9 and restart"
hutch image info disk >/dev/null || fail "control socket after kill -9 and restart"

# SIGINT too, while a client is connected to the control socket.
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(30)' \
	"$HUTCH_HOME/run/control.sock" &
idle=$!
cleanup_fn kill $idle
sleep 0.3
kill -INT "$STORAGED_PID"
for _ in $(seq 100); do kill -0 "$STORAGED_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$STORAGED_PID" 2>/dev/null && fail "SIGINT with an idle client did not stop the daemon"
wait "$STORAGED_PID"; assert_eq "$?" 0 "exit status after SIGINT"
exit 0

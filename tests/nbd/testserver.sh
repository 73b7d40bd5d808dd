#!/bin/bash
# Description: the nbd/ library on its own (nbd-testserver, in-memory exports): real clients
# are served, bad ones are counted as dropped, large writes being stored do not stop a connection's
# reading, a clean stop reports every connection closed.
. "$(dirname "$0")/../functions.sh"
requires nbdinfo --version
requires qemu-io --version
srv="$HUTCH_BUILD/nbd/nbd-testserver"
sock="$HUTCH_HOME/t.sock"
export HUTCH_HOLD="$HUTCH_HOME/hold"	# nbdraw's held_writes case holds writes with it
"$srv" --socket "$sock" --workers 3 --hold-writes "$HUTCH_HOLD" --export disk:64M --export ro:1M:ro >"$HUTCH_HOME/ts.out" 2>&1 &
pid=$!
_daemon_pids+=("$pid")
wait_for 10 test -S "$sock" || fail "nbd-testserver did not start"

uri="nbd+unix:///disk?socket=$sock"
qemu-io -f raw -c "write -P 0x17 1M 3M" -c "read -P 0x17 1M 3M" "$uri" >/dev/null || fail "qemu-io"
assert_eq "$(nbdinfo --map "$uri" | awk '$3 == 0 { print $1, $2 }')" "1048576 3145728" "map"
nbdinfo --is read-only "nbd+unix:///ro?socket=$sock" || fail "ro export not read-only"
for c in bad_magic bad_request_magic bad_client_flags held_writes; do
	"$PYTHON" "$HUTCH_SRC/tests/nbd/nbdraw.py" "$sock" "$c" disk || fail "case $c"
done
nbdcopy -C 4 "$uri" "$HUTCH_HOME/c.raw" || fail "nbdcopy"
qemu-img convert -f raw -O raw "$uri" "$HUTCH_HOME/q.raw" || fail "qemu-img convert"
cmp "$HUTCH_HOME/c.raw" "$HUTCH_HOME/q.raw" || fail "nbdcopy and qemu-img disagree"

kill -TERM "$pid"
wait "$pid" || fail "nbd-testserver exited with $?"
stats=$(cat "$HUTCH_HOME/ts.out")
assert_contains "$stats" "active=0 dropped=3" "stats after stop: $stats"
echo "ok: $stats"

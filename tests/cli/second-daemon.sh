#!/bin/bash
# Description: a second hutch-storaged on the same store is refused with a clear message.
. "$(dirname "$0")/../functions.sh"

start_storaged
hutch image create keep 1M || fail "create"

hutch-storaged --home "$HUTCH_HOME" >"$HUTCH_HOME/second.out" 2>&1 &
pid2=$!
_daemon_pids+=("$pid2")
for _ in $(seq 100); do kill -0 "$pid2" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid2" 2>/dev/null && fail "second daemon still running"
wait "$pid2"; st=$?
assert_eq "$st" 1 "second daemon's exit status"
msg=$(cat "$HUTCH_HOME/second.out")
assert_contains "$msg" "store $HUTCH_HOME/store is in use by another hutch-storaged \(pid $STORAGED_PID\)" "message names the store and pid"

# The first daemon is unaffected: its socket still answers.
hutch image info keep >/dev/null || fail "first daemon lost its socket"
kill -0 "$STORAGED_PID" || fail "first daemon died"
exit 0

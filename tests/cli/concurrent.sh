#!/bin/bash
# Description: many clients at once: parallel forks, lists and infos all succeed, nothing is lost.
. "$(dirname "$0")/../functions.sh"
requires jq --version

start_storaged
hutch image create base 1G || fail "create"

pids=()
for i in $(seq 30); do
	hutch image fork base "f$i" >/dev/null 2>"$HUTCH_HOME/err.$i" &
	pids+=($!)
	hutch image list >/dev/null 2>>"$HUTCH_HOME/err.list" &
	pids+=($!)
	hutch image info base >/dev/null 2>>"$HUTCH_HOME/err.info" &
	pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
[ "$failed" -eq 0 ] || fail "$failed of ${#pids[@]} parallel commands failed: $(cat "$HUTCH_HOME"/err.* | sort | uniq -c)"
assert_eq "$(hutch --json image list | jq '[.[] | select(.parent == "base")] | length')" 30 "forks made in parallel"

# Two clients racing for the same name: exactly one wins.
for i in 1 2 3 4; do hutch image create race 1M >/dev/null 2>&1 & pids2+=($!); done
wins=0
for p in "${pids2[@]}"; do wait "$p" && wins=$((wins + 1)); done
assert_eq "$wins" 1 "creates of the same name that succeeded"
exit 0

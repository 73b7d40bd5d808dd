#!/bin/bash
# Description: kill -9 of hutch-storaged at random moments while a writer
# writes and flushes known patterns, many times over: after each restart
# every flushed pattern reads back exactly and the store opens without
# manual repair.
. "$(dirname "$0")/../functions.sh"
requires /usr/bin/python3 -c 'import nbd'

rounds=${KILL9_ROUNDS:-12}
start_storaged
hutch image create crash 64M >/dev/null || fail "create failed"
log="$HUTCH_HOME/writes.txt"
: >"$log"
for round in $(seq "$rounds"); do
	"$PYTHON" "$HUTCH_SRC/tests/storaged/kill9-writer.py" write "$(nbd_uri crash)" "$log" "$round" &
	writer=$!
	# Somewhere between 0.2 and 2 s into the writing.
	sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.2 + (r % 180) / 100 }')"
	kill9_storaged
	wait "$writer"
	echo C >>"$log"
	start_storaged
	grep -q "dropped\|damaged" "$HUTCH_HOME/storaged.log" && echo "round $round: the store repaired a torn tail (logged)"
	"$PYTHON" "$HUTCH_SRC/tests/storaged/kill9-writer.py" check "$(nbd_uri crash)" "$log" \
		|| fail "round $round: data lost or wrong after kill -9"
done
hutch store verify >/dev/null || fail "verify found damage after $rounds crashes"
echo "$rounds rounds of kill -9: every flushed write survived"

#!/bin/bash
# Description: bad magic, unknown options and commands, oversized/out-of-range/overflowing
# requests, read-only violations: answered per the spec or the client dropped; others keep being served.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
start_storaged
make_image disk 16M
hutch image snapshot disk s1 >/dev/null || fail "snapshot failed"

for c in bad_magic bad_client_flags unknown_option malformed_options export_name_unknown \
	requests huge_write bad_request_magic; do
	raw "$c" disk || fail "case $c"
	# a well-behaved client is served right after each bad one
	[ "$(nbdinfo --size "$(nbd_uri disk)")" = 16777216 ] || fail "server unusable after case $c"
done
raw readonly disk@s1 || fail "case readonly"
kill -0 "$STORAGED_PID" || fail "hutch-storaged died"
# a clean exit: every connection and handle released (and, under ASan, no leak)
stop_storaged
echo "ok"

#!/bin/bash
# Description: clients that hang up mid-handshake, mid-option, mid-request and mid-payload,
# hundreds of times: the server keeps serving and leaks no descriptors or memory.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
start_storaged
make_image disk 16M
uri=$(nbd_uri disk)

round() {
	for c in half_handshake half_option half_request half_payload bad_magic bad_request_magic \
		huge_write export_name_unknown; do
		raw "$c" disk || fail "case $c"
	done
}
# warm up (first-use allocations), then measure
round
nbdinfo --size "$uri" >/dev/null
sleep 0.5
fds0=$(storaged_fds)
rss0=$(storaged_rss_kb)
for i in $(seq 30); do round; done
sleep 1
fds1=$(storaged_fds)
rss1=$(storaged_rss_kb)
echo "fds $fds0 -> $fds1, rss ${rss0} KiB -> ${rss1} KiB after 240 bad clients"
[ "$fds1" -le "$fds0" ] || fail "descriptor leak: $fds0 -> $fds1"
# (ASan's quarantine keeps freed memory resident; its leak check runs at exit instead)
grep -q asan "/proc/$STORAGED_PID/maps" ||
	[ "$rss1" -lt $((rss0 + 16384)) ] || fail "memory grew by $((rss1 - rss0)) KiB over 240 bad clients"
[ "$(nbdinfo --size "$uri")" = 16777216 ] || fail "server unusable afterwards"
# a clean exit: every connection and handle released (and, under ASan, no leak)
stop_storaged
echo "ok"

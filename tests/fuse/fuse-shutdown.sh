#!/bin/bash
# Description: hutch-fuse exits cleanly (status 0, mount gone) on SIGTERM
# and on fusermount3 -u; --help works; bad options fail with a hint.
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
hutch-fuse --help | grep -q "images/NAME.snap/SNAP" || fail "--help"
expect_fail hutch-fuse --connections 0
assert_contains "$EXPECT_ERR" "connections" "bad --connections message"
expect_fail hutch-fuse --no-such-option
assert_contains "$EXPECT_ERR" "hutch-fuse --help" "bad option hint"

start_storaged
start_fuse
truncate -s 1M "$MNT/images/x" || fail "create"
kill -TERM "$FUSE_PID"
wait "$FUSE_PID"; st=$?
assert_eq "$st" 0 "exit status after SIGTERM"
mountpoint -q "$MNT" && fail "still mounted after SIGTERM"

start_fuse
[ -f "$MNT/images/x" ] || fail "image not visible after remount"
exec 3<"$MNT/images/x"	# an open file must not block the unmount's exit
exec 3<&-
fusermount3 -u "$MNT" || fail "fusermount3 -u"
for _ in $(seq 50); do kill -0 "$FUSE_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$FUSE_PID" 2>/dev/null && fail "hutch-fuse still running after fusermount3 -u"
wait "$FUSE_PID"; st=$?
assert_eq "$st" 0 "exit status after fusermount3 -u"
echo ok

#!/bin/bash
# Description: invalid image names are refused, by the CLI before sending and by the daemon.
. "$(dirname "$0")/../functions.sh"

start_storaged

long=$(printf 'a%.0s' $(seq 129))
ok128=$(printf 'b%.0s' $(seq 128))
for bad in "a/b" ".hidden" "-dash" "sp ace" "x.snap" "$long" "" "a@b@c" "ü"; do
	hutch image create -- "$bad" 1G 2>"$HUTCH_HOME/err" && fail "created '$bad'"
	grep -Eq "invalid|must be|unknown option|missing" "$HUTCH_HOME/err" || fail "'$bad': $(cat "$HUTCH_HOME/err")"
done
# A snapshot reference is not a plain name.
expect_fail hutch image create a@b 1G
assert_contains "$EXPECT_ERR" "not a snapshot" "NAME@SNAP as create name"
expect_fail hutch image fork x "bad/name"
expect_fail hutch image snapshot x "bad@snap"
expect_fail hutch image rename x "../x"
expect_fail hutch image create ok 0
assert_contains "$EXPECT_ERR" "more than 0" "zero size"
expect_fail hutch image create ok 10Q
assert_contains "$EXPECT_ERR" "not a size" "garbage size"

hutch image create "$ok128" 1M || fail "a 128-character name is valid"
hutch image create "A-z_0.9+x" 1M || fail "all allowed characters"

# The daemon checks too: send invalid names raw.
out=$(ctl_raw '{"op":"image.create","name":"a/b","size":1048576}')
assert_contains "$out" '"errno":"EINVAL"' "daemon rejects a/b"
out=$(ctl_raw "{\"op\":\"image.create\",\"name\":\"$long\",\"size\":1048576}")
assert_contains "$out" '"errno":"EINVAL"' "daemon rejects long names"
out=$(ctl_raw '{"op":"image.fork","src":"x@y@z","dst":"d"}')
assert_contains "$out" '"errno":"EINVAL"' "daemon rejects bad refs"
exit 0

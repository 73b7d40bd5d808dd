#!/bin/bash
# Description: image create/list/info/rm/resize/rename/snapshot/fork through the daemon.
. "$(dirname "$0")/../functions.sh"
requires jq --version

start_storaged

# Only root (or group hutch, when it exists) may use the control socket.
mode=$(stat -c %a "$HUTCH_HOME/run/control.sock")
if getent group hutch >/dev/null; then
	assert_eq "$mode" 660 "control socket mode with group hutch"
	assert_eq "$(stat -c %G "$HUTCH_HOME/run/control.sock")" hutch "control socket group"
else
	assert_eq "$mode" 600 "control socket mode"
fi

hutch image create base 1G || fail "create"
out=$(hutch image list) || fail "list"
assert_contains "$out" "^NAME +SIZE +ALLOCATED +UNIQUE +SHARED +PARENT" "list header"
assert_contains "$out" "^base +1\.0 GiB" "list shows base"

out=$(hutch image info base) || fail "info"
assert_contains "$out" "size +1\.0 GiB \(1073741824 bytes\)" "info size"
assert_contains "$out" "type +image \(writable\)" "info type"
assert_contains "$out" "nbd\+unix:///base\?socket=$HUTCH_HOME/run/nbd.sock" "info uri"

# Duplicate, unknown.
expect_fail hutch image create base 2G
assert_contains "$EXPECT_ERR" "already exists" "duplicate create"
expect_fail hutch image info nope
assert_contains "$EXPECT_ERR" "no image named 'nope'" "unknown image"
expect_fail hutch image rm nope
assert_contains "$EXPECT_ERR" "no image named 'nope'" "rm unknown image"
expect_fail hutch image resize nope 1G
expect_fail hutch image rename nope other
expect_fail hutch image fork nope other
expect_fail hutch image snapshot nope s1

# Resize.
hutch image resize base 2G || fail "resize"
assert_eq "$(hutch --json image info base | jq .size)" 2147483648 "size after resize"

# Snapshot and fork.
hutch image snapshot base s1 || fail "snapshot"
expect_fail hutch image snapshot base s1
assert_contains "$EXPECT_ERR" "already exists" "duplicate snapshot"
assert_eq "$(hutch --json image info base@s1 | jq .readonly)" true "snapshot is read-only"
out=$(hutch image info base@s1)
assert_contains "$out" "snapshot \(read-only\)" "snapshot type"
hutch image fork base@s1 dev1 || fail "fork from snapshot"
hutch image fork base dev2 || fail "fork from image"
assert_eq "$(hutch --json image info dev1 | jq .readonly)" false "fork is writable"
assert_eq "$(hutch --json image info dev1 | jq .size)" 2147483648 "fork has the source's size"
assert_eq "$(hutch --json image info dev1 | jq -r .parent)" "base@s1" "fork's parent"
expect_fail hutch image fork base dev1
assert_contains "$EXPECT_ERR" "already exists" "fork onto existing"

names=$(hutch --json image list | jq -r '.[].name' | tr '\n' ' ')
assert_eq "$names" "base base@s1 dev1 dev2 " "list after fork"

# Rename carries the snapshots along.
hutch image rename base golden || fail "rename"
names=$(hutch --json image list | jq -r '.[].name' | tr '\n' ' ')
assert_eq "$names" "dev1 dev2 golden golden@s1 " "list after rename"
expect_fail hutch image rename dev1 dev2
assert_contains "$EXPECT_ERR" "already exists" "rename onto existing"

# Remove one snapshot, then an image with its snapshots.
hutch image snapshot golden s2 || fail "second snapshot"
hutch image rm golden@s1 || fail "rm snapshot"
hutch image info golden >/dev/null || fail "image survives rm of its snapshot"
hutch image rm golden || fail "rm image"
expect_fail hutch image info golden@s2
names=$(hutch --json image list | jq -r '.[].name' | tr '\n' ' ')
assert_eq "$names" "dev1 dev2 " "list after rm"

# Everything is still there after a restart.
stop_storaged
start_storaged
names=$(hutch --json image list | jq -r '.[].name' | tr '\n' ' ')
assert_eq "$names" "dev1 dev2 " "list after restart"
assert_eq "$(hutch --json image info dev1 | jq .size)" 2147483648 "size after restart"
exit 0

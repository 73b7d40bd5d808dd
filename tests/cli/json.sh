#!/bin/bash
# Description: --json output parses and carries the same data as the human output.
. "$(dirname "$0")/../functions.sh"
requires jq --version

start_storaged

j=$(hutch --json image create base 64M) || fail "create --json"
assert_eq "$(jq -r .name <<<"$j")" base "create --json names the image"
assert_eq "$(jq .size <<<"$j")" 67108864 "create --json size"
# --json works after the command too.
j=$(hutch image list --json) || fail "list --json"
assert_eq "$(jq length <<<"$j")" 1 "list length"
for k in name parent size allocated unique shared generation created readonly open; do
	jq -e "has(\"$k\")" <<<"$(jq '.[0]' <<<"$j")" >/dev/null || fail "image object lacks $k"
done
j=$(hutch --json image snapshot base s) || fail "snapshot --json"
assert_eq "$(jq -r .name <<<"$j")" base@s "snapshot --json"
j=$(hutch --json image fork base@s f) || fail "fork --json"
assert_eq "$(jq -r .parent <<<"$j")" base@s "fork --json parent"
j=$(hutch --json image rename f g) || fail "rename --json"
assert_eq "$(jq -r .name <<<"$j")" g "rename --json"
j=$(hutch --json image resize g 128M) || fail "resize --json"
assert_eq "$(jq .size <<<"$j")" 134217728 "resize --json"
j=$(hutch --json image rm g) || fail "rm --json"
assert_eq "$(jq -r .removed <<<"$j")" g "rm --json"

j=$(hutch --json store stats) || fail "stats --json"
for k in chunk_size images snapshots provisioned logical unique_data physical packs pack_bytes dead_bytes chunks dedup_ratio; do
	jq -e "has(\"$k\")" <<<"$j" >/dev/null || fail "stats lacks $k"
done
assert_eq "$(jq .images <<<"$j")" 1 "stats images"
assert_eq "$(jq .snapshots <<<"$j")" 1 "stats snapshots"
j=$(hutch --json store gc) || fail "gc --json"
jq -e 'has("bytes_before") and has("bytes_after")' <<<"$j" >/dev/null || fail "gc --json: $j"
j=$(hutch --json store verify) || fail "verify --json"
assert_eq "$(jq .bad <<<"$j")" 0 "verify --json bad"
assert_eq "$(jq '.bad_chunks | length' <<<"$j")" 0 "verify --json bad_chunks"
exit 0

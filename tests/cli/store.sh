#!/bin/bash
# Description: store init/stats/gc/verify: chunk size, logical vs physical, dedup ratio, space back after rm+gc.
. "$(dirname "$0")/../functions.sh"
requires jq --version
requires qemu-io --version

# init needs no daemon; a second init is refused; bad chunk sizes are usage errors.
expect_fail hutch store init --chunk-size 3000
assert_contains "$EXPECT_ERR" "power of two" "bad chunk size"
expect_fail hutch store init --chunk-size
hutch store init --chunk-size 128K >/dev/null || fail "store init"
expect_fail hutch store init
assert_contains "$EXPECT_ERR" "already exists" "second init"

# Small packs, so the data lands in sealed packs that gc can drop.
printf '[store]\npack_size = 1M\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
j=$(hutch --json store stats)
assert_eq "$(jq .chunk_size <<<"$j")" 131072 "chunk size chosen at init"
assert_eq "$(jq .logical <<<"$j")" 0 "empty store: logical"

# 8 MiB of random data, then two forks: logical triples, physical does not.
hutch image create base 64M || fail "create"
head -c 8M /dev/urandom >"$HUTCH_HOME/data"
qemu-io -f raw -c "write -s $HUTCH_HOME/data 0 8M" -c flush "$(nbd_uri base)" >/dev/null ||
	fail "write over NBD"
hutch image fork base f1 || fail "fork"
hutch image fork base f2 || fail "fork"
j=$(hutch --json store stats)
logical=$(jq .logical <<<"$j")
physical=$(jq .physical <<<"$j")
assert_eq "$logical" $((3 * 8 << 20)) "logical bytes of three 8 MiB images"
[ "$physical" -lt $((12 << 20)) ] || fail "physical $physical: forks were copied"
[ "$physical" -ge $((8 << 20)) ] || fail "physical $physical is less than the data"
awk -v r="$(jq .dedup_ratio <<<"$j")" 'BEGIN { exit !(r > 2.0) }' || fail "dedup ratio $(jq .dedup_ratio <<<"$j")"
out=$(hutch store stats)
assert_contains "$out" "logical +24\.0 MiB" "human stats: logical"
assert_contains "$out" "dedup ratio +[0-9.]+x" "human stats: ratio"

# A fork shares everything; list shows shared and unique bytes.
assert_eq "$(hutch --json image info f1 | jq .shared)" $((8 << 20)) "fork's shared bytes"
assert_eq "$(hutch --json image info f1 | jq .unique)" 0 "fork's unique bytes"
qemu-io -f raw -c "write -P 0x5a 0 1M" -c flush "$(nbd_uri f1)" >/dev/null || fail "write f1"
assert_eq "$(hutch --json image info f1 | jq .unique)" $((1 << 20)) "unique bytes after a write"

# verify: clean, exit 0. Not a terminal: no progress on stderr.
hutch store verify >"$HUTCH_HOME/out" 2>"$HUTCH_HOME/err" || fail "verify: $(cat "$HUTCH_HOME/out")"
grep -q "intact" "$HUTCH_HOME/out" || fail "verify output"
[ -s "$HUTCH_HOME/err" ] && fail "progress written to a non-terminal: $(cat -A "$HUTCH_HOME/err")"

# On a terminal, verify shows progress on stderr (script(1) gives it one).
if command -v script >/dev/null; then
	out=$(script -qec "hutch store verify" /dev/null) || fail "verify on a terminal"
	assert_contains "$out" "verify: +[0-9]+%" "progress on a terminal"
fi

# rm everything, gc: the store's packs shrink back.
before=$(hutch --json store stats | jq .pack_bytes)
hutch image rm f1 && hutch image rm f2 && hutch image rm base || fail "rm"
hutch store gc >"$HUTCH_HOME/out" 2>"$HUTCH_HOME/err" || fail "gc"
grep -q "freed" "$HUTCH_HOME/out" || fail "gc output"
[ -s "$HUTCH_HOME/err" ] && fail "gc progress written to a non-terminal"
after=$(hutch --json store stats | jq .pack_bytes)
[ "$after" -lt $((before / 4)) ] || fail "gc left $after of $before pack bytes"
exit 0

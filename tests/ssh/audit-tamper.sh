#!/bin/bash
# Description: the audit log's hash chain: control operations of
# hutch-storaged and `hutch user` changes are recorded with the caller's
# unix user and verify; an edited, removed, reordered or cut-short record
# makes `hutch audit verify` exit 1 naming that record.
. "$(dirname "$0")/../functions.sh"

start_storaged
hutch image create base 64M >/dev/null || fail "image create"
hutch image snapshot base s1 >/dev/null || fail "image snapshot"
hutch image fork base@s1 copy >/dev/null || fail "image fork"
hutch image list >/dev/null || fail "image list"
ssh-keygen -q -t ed25519 -N '' -f "$HUTCH_HOME/k" || fail "ssh-keygen"
hutch user add carol --key "$HUTCH_HOME/k.pub" >/dev/null || fail "user add"
hutch image rm copy >/dev/null || fail "image rm"

log=$HUTCH_HOME/audit/log.jsonl
[ -f "$log" ] || fail "no audit log at $log"
n=$(wc -l <"$log")
assert_eq "$n" 5 "records (create, snapshot, fork, user.add, rm; queries are not recorded)"
out=$(hutch audit verify) || fail "verify of an intact log: $out"
assert_contains "$out" "5 records" "verify output"
me=$(id -un)
ops=$(hutch audit show --json | "$PYTHON" -c '
import json, sys
print(" ".join("%s:%s:%s" % (r["op"], r.get("unix_user"), r["uid"]) for r in json.load(sys.stdin)))')
assert_eq "$ops" "image.create:$me:$(id -u) image.snapshot:$me:$(id -u) image.fork:$me:$(id -u) user.add:$me:$(id -u) image.rm:$me:$(id -u)" "recorded ops and callers"
assert_eq "$(hutch audit --user carol --json | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')" 1 "audit --user carol"
assert_eq "$(hutch audit show --since 1h --json | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')" 5 "audit --since 1h"
assert_eq "$(hutch audit show --since 2999-01-01 --json | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')" 0 "audit --since the future"
expect_fail hutch audit show --since yesterday-ish
cp "$log" "$HUTCH_HOME/good.jsonl"
cp "$HUTCH_HOME/audit/head" "$HUTCH_HOME/good.head"

restore() { cp "$HUTCH_HOME/good.jsonl" "$log"; cp "$HUTCH_HOME/good.head" "$HUTCH_HOME/audit/head"; }

# verify_broken N WHAT: verify must fail and name record N.
verify_broken() {
	local out st
	out=$(hutch audit verify 2>&1); st=$?
	assert_eq "$st" 1 "verify exit status after $2"
	assert_contains "$out" "BROKEN at record $1:" "verify names record $1 after $2"
	restore
	hutch audit verify >/dev/null || fail "verify after restoring from $2"
}

# One field of record 2 changed.
sed -i '2s/"image.snapshot"/"image.sn4pshot"/' "$log"
verify_broken 2 "an edit of record 2"
# The last record changed: only the head knows.
sed -i '5s/"copy"/"c0py"/' "$log"
verify_broken 5 "an edit of the last record"
# Whitespace counts too.
sed -i '3s/,"op"/, "op"/' "$log"
verify_broken 3 "a space added in record 3"
# The last record removed.
sed -i '$d' "$log"
verify_broken 5 "removing the last record"
# A record removed in the middle.
sed -i '3d' "$log"
verify_broken 3 "removing record 3"
# Two records swapped.
"$PYTHON" - "$log" <<'PY'
import sys
p = sys.argv[1]; l = open(p).readlines(); l[1], l[2] = l[2], l[1]; open(p, "w").writelines(l)
PY
verify_broken 2 "swapping records 2 and 3"
# Cut in the middle of the last line.
truncate -s -20 "$log"
verify_broken 5 "cutting the last record short"
# The first record removed.
sed -i '1d' "$log"
verify_broken 1 "removing record 1"

# Appends after a restore continue the chain.
hutch image create more 1M >/dev/null || fail "image create after restore"
hutch audit verify >/dev/null || fail "verify after another append"
assert_eq "$(wc -l <"$log")" 6 "records after another append"

# Records longer than the writer's first look at the tail (8 KiB), and a
# request too big to record in full: the chain still holds.
x=$(head -c 4000 /dev/zero | tr '\0' x)
ctl_raw "{\"op\":\"image.create\",\"name\":\"wide\",\"size\":1048576,\"a\":\"$x\",\"b\":\"$x\",\"c\":\"$x\"}" |
	grep -q '"ok":true' || fail "image.create with wide arguments"
many=$("$PYTHON" -c 'import json; d = {"op": "image.create", "name": "many", "size": 1048576}
d.update(("k%d" % i, "v" * 4000) for i in range(30)); print(json.dumps(d))')
ctl_raw "$many" | grep -q '"ok":true' || fail "image.create with 30 wide arguments"
hutch image create after 1M >/dev/null || fail "image create after wide records"
hutch audit verify >/dev/null || fail "verify after wide records: $(hutch audit verify 2>&1)"
assert_eq "$(wc -l <"$log")" 9 "records after wide ones"
sed -n 8p "$log" | grep -q '"args":{"name":"many","args_json_bytes":' || fail "a huge request is not summarised: $(sed -n 8p "$log" | head -c 300)"
exit 0

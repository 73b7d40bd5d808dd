#!/bin/bash
# Description: nbdinfo --can for every advertised feature; snapshots are read-only; LIST has descriptions.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
start_storaged
make_image disk 16M
hutch image snapshot disk snap1 >/dev/null || fail "snapshot failed"
uri=$(nbd_uri disk)

for f in structured-reply flush fua multi-conn trim zero fast-zero cache df; do
	nbdinfo --can "$f" "$uri" || fail "nbdinfo --can $f: not advertised"
done
nbdinfo --is read-only "$uri" && fail "disk is advertised read-only"
nbdinfo --json "$uri" | grep -q '"base:allocation"' || fail "base:allocation missing"

snap=$(nbd_uri disk@snap1)
nbdinfo --is read-only "$snap" || fail "disk@snap1 is not read-only"
nbdinfo --can trim "$snap" && fail "disk@snap1 advertises trim"
nbdinfo --can zero "$snap" && fail "disk@snap1 advertises zero"
assert_eq "$(nbdinfo --size "$snap")" 16777216 "snapshot size"

list=$(nbdinfo --list --json "nbd+unix:///?socket=$NBD_SOCK") || fail "nbdinfo --list failed"
echo "$list" | "$PYTHON" -c '
import json, sys
ex = {e["export-name"]: e for e in json.load(sys.stdin)["exports"]}
assert set(ex) == {"disk", "disk@snap1"}, ex.keys()
assert "read-only" in ex["disk@snap1"]["description"], ex["disk@snap1"]
assert ex["disk"]["description"], ex["disk"]
' || fail "LIST does not show both exports with descriptions: $list"

out=$(nbdinfo "$(nbd_uri nothere)" 2>&1) && fail "nbdinfo of a missing export succeeded"
assert_contains "$out" "nothere" "error names the missing export"
echo "ok"

#!/bin/bash
# Description: --help works at every level and usage errors say what to do next.
. "$(dirname "$0")/../functions.sh"

out=$(hutch --help) || fail "hutch --help failed"
assert_contains "$out" "store" "top help lists groups"
assert_contains "$out" "image" "top help lists groups"
hutch --version | grep -q '^hutch ' || fail "hutch --version"

for g in store image; do
	out=$(hutch $g --help) || fail "hutch $g --help failed"
	assert_contains "$out" "Usage: hutch $g" "group help"
done
for c in init stats gc verify; do
	out=$(hutch store $c --help) || fail "hutch store $c --help failed"
	assert_contains "$out" "Usage: hutch store $c" "command help"
done
for c in create list info rm resize rename snapshot fork import export; do
	out=$(hutch image $c --help) || fail "hutch image $c --help failed"
	assert_contains "$out" "Usage: hutch image $c" "command help"
done
# --help anywhere on the line, even after operands.
hutch image create foo 1G --help | grep -q "Usage: hutch image create" || fail "--help after operands"

for d in hutch-storaged; do
	out=$($d --help) || fail "$d --help failed"
	assert_contains "$out" "--home" "$d help"
	$d --version | grep -q "$d" || fail "$d --version"
done

# Usage errors: exit 2 with a pointer to --help.
hutch >/dev/null 2>&1; assert_eq "$?" 2 "bare hutch"
hutch nosuch 2>"$HUTCH_HOME/err"; assert_eq "$?" 2 "unknown group"
grep -q "hutch --help" "$HUTCH_HOME/err" || fail "unknown group hints at --help"
hutch image nosuch 2>"$HUTCH_HOME/err"; assert_eq "$?" 2 "unknown command"
grep -q "hutch image --help" "$HUTCH_HOME/err" || fail "unknown command hints at --help"
hutch image create onlyname 2>"$HUTCH_HOME/err"; assert_eq "$?" 2 "missing operand"
grep -q "Usage: hutch image create NAME SIZE" "$HUTCH_HOME/err" || fail "missing operand shows usage"
hutch image list extra 2>/dev/null; assert_eq "$?" 2 "extra operand"
hutch image list --bogus 2>/dev/null; assert_eq "$?" 2 "unknown option"
hutch-storaged --bogus 2>/dev/null; assert_eq "$?" 2 "storaged unknown option"
exit 0

#!/bin/bash
# Description: hutch user add|rm|list|key add|key rm keep
# $HUTCH_HOME/ssh/authorized_keys with one restricted line per key, forced
# to hutch-shell with the user's name and the key's fingerprint; bad names
# and bad key files are refused and change nothing.
. "$(dirname "$0")/../functions.sh"
command -v ssh-keygen >/dev/null || skip "needs ssh-keygen"

k=$HUTCH_HOME/k
ssh-keygen -q -t ed25519 -N '' -C 'alice@laptop' -f "$k.a1"
ssh-keygen -q -t ecdsa -N '' -f "$k.a2"
ssh-keygen -q -t rsa -b 2048 -N '' -f "$k.b1"
fp() { ssh-keygen -lf "$1" | awk '{print $2}'; }
ak=$HUTCH_HOME/ssh/authorized_keys

hutch user add alice --key "$k.a1.pub" >/dev/null || fail "user add alice"
hutch user key add alice "$k.a2.pub" --vm dev >/dev/null || fail "key add alice --vm dev"
hutch user add bob --key "$k.b1.pub" >/dev/null || fail "user add bob"
assert_eq "$(grep -vc '^#' "$ak")" 3 "authorized_keys lines"
while read -r line; do
	case "$line" in '#'*) continue ;; esac
	assert_contains "$line" '^restrict,pty,command="[^"]*hutch-shell --home [^ ]+ --key SHA256:[A-Za-z0-9+/]+ (--vm dev )?(alice|bob)" (ssh-|ecdsa-)' "authorized_keys line"
done <"$ak"
grep -q -- "--key $(fp "$k.a1.pub") alice\" ssh-ed25519" "$ak" || fail "alice's first key line"
grep -q -- "--key $(fp "$k.a2.pub") --vm dev alice\" ecdsa-sha2-nistp256" "$ak" || fail "alice's second key line"
grep -q -- "--key $(fp "$k.b1.pub") bob\" ssh-rsa" "$ak" || fail "bob's key line"
# sshd itself accepts every line.
if command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; then
	# ssh-keygen -l parses authorized_keys lines with their options.
	assert_eq "$(ssh-keygen -lf "$ak" | wc -l)" 3 "ssh-keygen reads authorized_keys"
fi

list=$(hutch user list) || fail "user list"
assert_contains "$list" "alice +$(fp "$k.a1.pub" | sed 's/+/\\+/g') +alice " "list alice"
assert_contains "$list" "$(fp "$k.a2.pub" | sed 's/+/\\+/g') +alice.dev" "list alice.dev"
assert_eq "$(hutch user list --json | "$PYTHON" -c 'import json,sys; print(sum(len(u["keys"]) for u in json.load(sys.stdin)))')" 3 "keys in --json"

# Refusals, each leaving authorized_keys as it was.
cp "$ak" "$HUTCH_HOME/ak.before"
expect_fail hutch user add bob --key "$k.a1.pub"
assert_contains "$EXPECT_ERR" "exists" "adding an existing user"
expect_fail hutch user add carol --key "$k.a1.pub"
assert_contains "$EXPECT_ERR" "already belongs to user alice" "one key, two users"
for bad in Alice 'a b' 'x;y' '../x' 'a.b' '-x' "$(head -c 40 /dev/zero | tr '\0' a)" ''; do
	expect_fail hutch user add "$bad" --key "$k.b1.pub"
done
expect_fail hutch user add carol --key "$k.a1"
assert_contains "$EXPECT_ERR" "not a public key type" "a private key"
printf 'command="sh" %s\n' "$(cat "$k.b1.pub")" >"$HUTCH_HOME/opts.pub"
expect_fail hutch user add carol --key "$HUTCH_HOME/opts.pub"
printf 'ssh-ed25519 AAAAnotbase64!!\n' >"$HUTCH_HOME/junk.pub"
expect_fail hutch user add carol --key "$HUTCH_HOME/junk.pub"
# A valid base64 blob of the wrong type.
printf 'ssh-ed25519 %s x\n' "$(awk '{print $2}' "$k.b1.pub")" >"$HUTCH_HOME/mixed.pub"
expect_fail hutch user add carol --key "$HUTCH_HOME/mixed.pub"
printf 'ssh-ed25519 %s evil"\nrestrict\n' "$(awk '{print $2}' "$HUTCH_HOME/k.a1.pub")" >"$HUTCH_HOME/nl.pub"
expect_fail hutch user add carol --key "$HUTCH_HOME/nl.pub"	# same key as alice's
expect_fail hutch user key add alice "$k.b1.pub" --vm '../x'
expect_fail hutch user add carol --key /nonexistent.pub
cmp -s "$ak" "$HUTCH_HOME/ak.before" || fail "a refused change altered authorized_keys"

# Removing a key, then a user.
hutch user key rm alice "$(fp "$k.a2.pub")" >/dev/null || fail "key rm"
assert_eq "$(grep -vc '^#' "$ak")" 2 "lines after key rm"
expect_fail hutch user key rm alice "$(fp "$k.a2.pub")"
hutch user rm bob >/dev/null || fail "user rm bob"
assert_eq "$(grep -vc '^#' "$ak")" 1 "lines after user rm"
grep -q " bob\"" "$ak" && fail "bob still in authorized_keys"
expect_fail hutch user rm bob
# The same key may now join another user.
hutch user add carol --key "$k.b1.pub" >/dev/null || fail "re-using a removed user's key"
ops=$(hutch audit show --type admin --json | "$PYTHON" -c 'import json,sys; print(" ".join(r["op"] for r in json.load(sys.stdin)))')
assert_eq "$ops" "user.add user.key.add user.add user.key.rm user.rm user.add" "admin records"
hutch audit verify >/dev/null || fail "audit verify"
exit 0

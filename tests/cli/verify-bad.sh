#!/bin/bash
# Description: a flipped byte in a pack: `hutch store verify` names the bad chunk, its pack and the image and offset using it, and exits 1.
. "$(dirname "$0")/../functions.sh"
requires jq --version
requires qemu-io --version

start_storaged
hutch image create base 16M || fail "create"
head -c 4M /dev/urandom >"$HUTCH_HOME/data"
qemu-io -f raw -c "write -s $HUTCH_HOME/data 0 4M" -c flush "$(nbd_uri base)" >/dev/null || fail "write"
hutch store verify >/dev/null || fail "verify of an intact store"
stop_storaged

pack=$(ls "$HUTCH_HOME"/store/packs/*.pack | head -n 1)
[ -f "$pack" ] || fail "no pack file in $HUTCH_HOME/store/packs"
# Flip one byte in the middle of the pack: inside some chunk's data.
off=$(( $(stat -c %s "$pack") / 2 ))
b=$(od -An -tu1 -j "$off" -N1 "$pack" | tr -d ' ')
printf "$(printf '\\%03o' $(( b ^ 0xff )))" | dd of="$pack" bs=1 seek="$off" conv=notrunc status=none

start_storaged
out=$(hutch store verify 2>&1); st=$?
assert_eq "$st" 1 "verify exit status with a bad chunk"
assert_contains "$out" "bad chunk [^ ]+ in pack [^ ]+ at offset [0-9]+: .*; used by base at offset [0-9]+" "verify names chunk, pack, image, offset"
assert_contains "$out" "1 bad chunk" "verify counts bad chunks"

j=$(hutch --json store verify); st=$?
assert_eq "$st" 1 "verify --json exit status"
assert_eq "$(jq .bad <<<"$j")" 1 "verify --json bad"
assert_eq "$(jq -r '.bad_chunks[0].image' <<<"$j")" base "verify --json image"
img_off=$(jq '.bad_chunks[0].image_offset' <<<"$j")

# Reading that range fails instead of returning wrong bytes.
out=$(qemu-io -f raw -c "read $img_off 4k" "$(nbd_uri base)" 2>&1)
grep -q "read failed" <<<"$out" || fail "read of the bad range did not fail: $out"
exit 0

#!/bin/bash
# Description: qemu-io patterns: write -P / read -P, write -z, discard, FUA writes, flush.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires qemu-io --version
start_storaged
make_image disk 32M
uri=$(nbd_uri disk)

qio() {
	local out
	out=$(qemu-io -f raw "$@" "$uri" 2>&1) || fail "qemu-io $*: $out"
	if echo "$out" | grep -q -i "fail\|error\|pattern verification"; then
		fail "qemu-io $*: $out"
	fi
}
qio -c "write -P 0xa5 0 1M" -c "write -P 0x5a 1M 4k" -c "write -P 0x33 3M 100"
qio -c "read -P 0xa5 0 1M" -c "read -P 0x5a 1M 4k" -c "read -P 0x33 3M 100" -c "read -P 0 3145828 100"
qio -c "write -z 0 512k" -c "read -P 0 0 512k" -c "read -P 0xa5 512k 512k"
qio -c "discard 512k 512k" -c "read -P 0 0 1M" -c "read -P 0x5a 1M 4k"
qio -c "write -f -P 0x77 8M 64k" -c "flush" -c "read -P 0x77 8M 64k"
qio -c "write -z -u 16M 1M" -c "read -P 0 16M 1M"
# unaligned, straddling chunks
qio -c "write -P 0x42 65000 200000" -c "read -P 0x42 65000 200000" -c "read -P 0 64999 1"
# a pattern that does not match must fail: the test can fail
if qemu-io -f raw -c "read -P 0x99 8M 64k" "$uri" 2>&1 | grep -q "Pattern verification failed"; then
	:
else
	fail "qemu-io did not notice a wrong pattern"
fi
echo "ok"

#!/bin/bash
# Description: nbdinfo --map (base:allocation) matches what was written, zeroed and trimmed.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
requires qemu-io --version
start_storaged
make_image disk 8M
uri=$(nbd_uri disk)

qemu-io -f raw -c "write -P 1 0 1M" -c "write -P 2 2M 1M" -c "write -P 3 6M 2M" "$uri" >/dev/null ||
	fail "writes failed"
map() { nbdinfo --map --totals "$uri" >/dev/null && nbdinfo --map "$uri" | awk '{ print $1, $2, $3 }' | tr '\n' ';'; }
got=$(map)
assert_eq "$got" "0 1048576 0;1048576 1048576 3;2097152 1048576 0;3145728 3145728 3;6291456 2097152 0;" \
	"map after writes"

# trim the middle of the last extent and zero the first: they read as holes
qemu-io -f raw -c "discard 6M 1M" -c "write -z 0 1M" "$uri" >/dev/null || fail "discard failed"
got=$(map)
assert_eq "$got" "0 2097152 3;2097152 1048576 0;3145728 4194304 3;7340032 1048576 0;" "map after trim and zero"

# writing zeroes as data also leaves a hole (zero chunks are never stored)
qemu-io -f raw -c "write -P 0 2M 1M" "$uri" >/dev/null || fail "zero-pattern write failed"
got=$(map)
assert_eq "$got" "0 7340032 3;7340032 1048576 0;" "map after writing zero bytes"
echo "ok"

#!/bin/bash
# Description: [nbd] tcp_listen serves the same exports over TCP on loopback.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
requires qemu-io --version
port=$((20000 + RANDOM % 20000))
cat >"$HUTCH_HOME/hutch.conf" <<CONF
[nbd]
tcp_listen = 127.0.0.1:$port
CONF
start_storaged
make_image disk 4M
qemu-io -f raw -c "write -P 0x3c 0 64k" "nbd://127.0.0.1:$port/disk" >/dev/null || fail "write over TCP failed"
qemu-io -f raw -c "read -P 0x3c 0 64k" "$(nbd_uri disk)" | grep -q "read 65536" || fail "unix socket does not see the TCP write"
assert_eq "$(nbdinfo --size "nbd://127.0.0.1:$port/disk")" 4194304 "size over TCP"
echo "ok"

#!/bin/bash
# Description: unix clients get [nbd] send_buffer as their socket send buffer; a cap by the kernel is logged once.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires ss --version
requires "$PYTHON" -c 'import nbd'

# The send buffer (ss: skmem tb) of hutch-storaged's end of a connection
# held open for a moment by a libnbd client.
server_sndbuf() {
	"$PYTHON" -c 'import nbd, sys, time; h = nbd.NBD(); h.connect_uri(sys.argv[1]); time.sleep(2)' \
		"$(nbd_uri disk)" &
	local client=$! tb=""
	for _ in $(seq 20); do
		tb=$(ss -xmpH state connected 2>/dev/null | grep "nbd.sock .*pid=$STORAGED_PID," |
			grep -o '[(,]tb[0-9]*' | head -n 1 | tr -d '(,tb')
		[ -n "$tb" ] && break
		sleep 0.1
	done
	wait "$client" || fail "the libnbd client could not connect"
	echo "$tb"
}

wmem_max=$(cat /proc/sys/net/core/wmem_max)
start_storaged
make_image disk 4M
tb=$(server_sndbuf)
[ -n "$tb" ] || fail "no connection of hutch-storaged seen by ss"
# The kernel grants twice what is asked, at most twice wmem_max.
want=$(( 2 * (wmem_max < 2097152 ? wmem_max : 2097152) ))
assert_eq "$tb" "$want" "send buffer of a unix connection with the default 2M (wmem_max $wmem_max)"
grep -q "send buffer .* instead of" "$HUTCH_HOME/storaged.log" && [ "$wmem_max" -ge 2097152 ] &&
	fail "a cap was reported though wmem_max ($wmem_max) allows 2M"

# Asking more than the kernel allows: served all the same, said once.
stop_storaged
printf '[nbd]\nsend_buffer = 64M\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
if [ "$wmem_max" -ge $((64 << 20)) ]; then
	echo "SKIP (this part): net.core.wmem_max ($wmem_max) allows 64M: the cap cannot be shown" >&2
else
	server_sndbuf >/dev/null
	server_sndbuf >/dev/null
	n=$(grep -c "send buffer $((wmem_max / 1024)) KiB instead of \[nbd\] send_buffer 65536 KiB" "$HUTCH_HOME/storaged.log")
	assert_eq "$n" 1 "warnings about the capped send buffer after two connections"
fi
qemu-io -f raw -c "read 0 1M" "$(nbd_uri disk)" | grep -q "read 1048576" || fail "a 1 MiB read failed with a capped send buffer"

stop_storaged
printf '[nbd]\nsend_buffer = 0\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
tb=$(server_sndbuf)
assert_eq "$tb" "$(cat /proc/sys/net/core/wmem_default)" "send buffer with send_buffer = 0 (the kernel's default)"
echo "ok"

#!/bin/bash
# Description: clients that flood requests and never read replies are held back
# (bounded memory), while other clients keep being served; their end frees everything.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires nbdinfo --version
requires qemu-io --version
start_storaged
make_image disk 64M
uri=$(nbd_uri disk)
qemu-io -f raw -c "write -P 0x61 0 1M" "$uri" >/dev/null || fail "write failed"
nbdinfo --size "$uri" >/dev/null
# warm up: threads that touch the store for the first time may open per-thread resources
"$PYTHON" "$NBDRAW" "$NBD_SOCK" no_read disk 1 >/dev/null
sleep 1
fds0=$(storaged_fds)
rss0=$(storaged_rss_kb)

# four flooding clients, each sending 2000 1 MiB reads and reading nothing for 6 s
pids=()
for i in 1 2 3 4; do
	"$PYTHON" "$NBDRAW" "$NBD_SOCK" no_read disk 6 >"$HUTCH_HOME/flood$i.out" &
	pids+=($!)
done
sleep 2
# others are served meanwhile, promptly
start=$(date +%s%N)
qemu-io -f raw -c "read -P 0x61 0 1M" "$uri" >/dev/null || fail "read while flooded failed"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
rss1=$(storaged_rss_kb)
echo "read during flood took ${ms} ms; rss ${rss0} -> ${rss1} KiB"
[ "$ms" -lt 5000 ] || fail "a normal client waited ${ms} ms behind flooding clients"
# 4 clients x (64 MiB queued cap + 1 MiB payload) is the bound; allow slack
[ "$rss1" -lt $((rss0 + 4 * 80 * 1024)) ] || fail "flooding clients grew memory by $((rss1 - rss0)) KiB"
for p in "${pids[@]}"; do wait "$p" || fail "flood client failed"; done
sleep 1
fds2=$(storaged_fds)
[ "$fds2" -le "$fds0" ] || fail "descriptors not released after flooding clients left: $fds0 -> $fds2"
# stopping the server while flooding clients are connected and not reading: a clean, quick exit
for i in 1 2; do
	"$PYTHON" "$NBDRAW" "$NBD_SOCK" no_read disk 8 >/dev/null 2>&1 &
	pids+=($!)
done
sleep 2
stop_storaged
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
echo "ok"

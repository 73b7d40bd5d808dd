#!/bin/bash
# Description: 20 forks of a written 1 GiB image, each then given 64 MiB of
# its own random data over NBD: physical store growth is at most
# 1.05 x 20 x 64 MiB, as `hutch store stats` reports and du confirms; after
# `image rm` of all forks and `store gc`, du of the store is back within
# 10 % of its size before the forks.
. "$(dirname "$0")/../functions.sh"
requires qemu-io --version
requires fio --version

start_storaged
hutch image create golden 1G >/dev/null || fail "create failed"
fio --name=fill --ioengine=nbd --uri="$(nbd_uri golden)" --rw=write --bs=1M --iodepth=16 \
	--size=1G --refill_buffers >/dev/null || fail "filling golden failed"

physical() { hutch --json store stats | jq -r '.physical'; }
du_store() { du -sb "$HUTCH_HOME/store" | cut -f1; }
phys0=$(physical)
du0=$(du_store)

for i in $(seq 20); do
	hutch image fork golden "fork$i" >/dev/null || fail "fork $i failed"
	head -c 64M /dev/urandom >"$HUTCH_HOME/own.bin"
	qemu-io -f raw -c "write -s $HUTCH_HOME/own.bin $(( (i - 1) * 48 ))M 64M" -c flush \
		"$(nbd_uri "fork$i")" >/dev/null || fail "writing fork $i failed"
done
rm -f "$HUTCH_HOME/own.bin"
phys1=$(physical)
du1=$(du_store)
limit=$(( 105 * 20 * 64 * 1024 * 1024 / 100 ))
echo "growth: $(( (phys1 - phys0) >> 20 )) MiB (stats), $(( (du1 - du0) >> 20 )) MiB (du), limit $(( limit >> 20 )) MiB"
[ $((phys1 - phys0)) -le "$limit" ] || fail "store stats: grew $((phys1 - phys0)) bytes, more than $limit"
[ $((du1 - du0)) -le "$limit" ] || fail "du: grew $((du1 - du0)) bytes, more than $limit"

for i in $(seq 20); do hutch image rm "fork$i" >/dev/null || fail "rm fork$i failed"; done
hutch store gc >/dev/null || fail "gc failed"
du2=$(du_store)
echo "after rm and gc: $(( du2 >> 20 )) MiB, before the forks: $(( du0 >> 20 )) MiB"
[ $(( du2 * 100 )) -le $(( du0 * 110 )) ] || fail "gc left $du2 bytes, more than 110 % of $du0"
qemu-img compare -f raw -F raw "$(nbd_uri golden)" "$(nbd_uri golden)" >/dev/null || fail "golden unreadable"
hutch store verify >/dev/null || fail "verify failed"

#!/bin/bash
# Description: fio --ioengine=nbd mixed random read/write, several jobs, crc32c verified.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires fio --enghelp=nbd
start_storaged
make_image disk 512M
uri=$(nbd_uri disk)

out=$(fio --name=verify --ioengine=nbd --uri="$uri" --rw=randrw --rwmixread=50 \
	--bs=4k --bsrange=4k-64k --iodepth=16 --numjobs=4 --size=48M --offset_increment=64M \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --group_reporting 2>&1) ||
	fail "fio failed: $out"
echo "$out" | grep -q "err= 0" || fail "fio reported errors: $out"
echo "$out" | grep -qi "verify: bad\|crc32c.*mismatch" && fail "fio verify mismatch: $out"

# and once more from a fresh connection set: data written above reads back verified
out=$(fio --name=verify --ioengine=nbd --uri="$uri" --rw=randwrite --bs=16k --iodepth=16 \
	--numjobs=2 --size=32M --offset_increment=64M --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
	--do_verify=1 --verify_backlog=64 --group_reporting 2>&1) || fail "fio backlog verify failed: $out"
echo "ok"

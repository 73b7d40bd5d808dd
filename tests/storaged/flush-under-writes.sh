#!/bin/bash
# Description: flushes run while writers go on (a write-out alongside them,
# the write log's flush on the flusher thread): with a flush every 20 ms and
# a 1 MiB dirty limit, random unaligned writes, zeroes and whole chunks from
# two clients at once read back exactly as written, also after a kill -9
# in the middle of it, and fio's crc32c verify passes.
. "$(dirname "$0")/../functions.sh"
requires /usr/bin/python3 -c 'import nbd'
requires qemu-img --version
requires fio --enghelp=nbd

printf '[store]\nflush_interval = 20ms\ndirty_limit = 1M\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
hutch image create f 64M >/dev/null || fail "create failed"

# ops.py URI COPY SEED FROM TO N: N random operations in [FROM, TO) on the
# export and the same on COPY: writes of 1 byte to 300 KiB at any offset,
# zeroes, whole 64 KiB chunks, with a flush now and then. HOLD keeps the
# connection open after 'applied'.
cat >"$HUTCH_HOME/ops.py" <<'PY'
import os, random, sys, time, nbd
uri, copy, seed, lo, hi, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rnd = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
f = open(copy, 'r+b')
for i in range(n):
    k = rnd.random()
    if k < 0.3:
        off = lo + rnd.randrange(0, (hi - lo) // 65536) * 65536
        data = rnd.randbytes(65536 * rnd.randint(1, 4))
        data = data[:hi - off]
    else:
        off = rnd.randrange(lo, hi - 1)
        data = rnd.randbytes(min(rnd.randint(1, 300 << 10), hi - off))
    if k > 0.9:
        h.zero(len(data), off)
        data = bytes(len(data))
    else:
        h.pwrite(data, off)
    f.seek(off); f.write(data)
    if rnd.random() < 0.01:
        h.flush()
f.close()
print('applied', flush=True)
if os.environ.get('HOLD'):
    time.sleep(3600)
PY
copy="$HUTCH_HOME/copy.raw"
truncate -s 64M "$copy"
same() {
	qemu-img compare -q -f raw -F raw "$copy" "$(nbd_uri f)" || fail "$1: the image differs from the copy"
}

# Two clients on the two halves at once.
"$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri f)" "$copy" 1 0 $((32 << 20)) 1500 >/dev/null &
a=$!
"$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri f)" "$copy" 2 $((32 << 20)) $((64 << 20)) 1500 >/dev/null &
b=$!
wait $a || fail "client 1 failed"
wait $b || fail "client 2 failed"
same "after two clients under constant flushes"

# A kill -9 while two clients hold unflushed writes.
start_held "$HUTCH_HOME/ops.1.out" "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri f)" "$copy" 3 0 $((32 << 20)) 800
start_held "$HUTCH_HOME/ops.2.out" "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri f)" "$copy" 4 $((32 << 20)) $((64 << 20)) 800
wait_applied "$HUTCH_HOME/ops.1.out" "$HUTCH_HOME/ops.2.out"
kill9_storaged
kill_held
start_storaged
same "after kill -9 under constant flushes"

out=$(fio --name=verify --ioengine=nbd --uri="$(nbd_uri f)" --rw=randrw --rwmixread=40 \
	--bsrange=4k-192k --iodepth=16 --numjobs=2 --size=24M --offset_increment=32M \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --group_reporting 2>&1) || fail "fio failed: $out"
echo "$out" | grep -q "err= 0" || fail "fio reported errors: $out"
# Many writes to a few chunks: a chunk is often written again, whole or in
# part, while a write-out of it is under way.
out=$(fio --name=hot --ioengine=nbd --uri="$(nbd_uri f)" --rw=randwrite --bsrange=4k-128k \
	--iodepth=16 --serialize_overlap=1 --size=512k --io_size=48M --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
	--do_verify=1 --verify_backlog=32 2>&1) || fail "fio on a hot region failed: $out"
grep -Ei "failed|cannot|damaged|missing" "$HUTCH_HOME/storaged.log" &&
	fail "hutch-storaged logged a failure"
hutch store verify >/dev/null || fail "store verify found damage"
echo "writes under constant flushes read back as written"

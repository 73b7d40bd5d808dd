#!/bin/bash
# Description: chunks rewritten between flushes do not grow the packs by
# every rewrite: the places of records no flushed tree holds are reused.
# What was flushed, snapshotted or forked keeps its data; a kill -9 after
# rewrites whose first copies were written over replays to the right bytes;
# verify and gc find nothing wrong afterwards.
. "$(dirname "$0")/../functions.sh"
requires /usr/bin/python3 -c 'import nbd'
requires qemu-img --version

# No timer flush: only the client's FLUSH ends an epoch.
printf '[store]\nflush_interval = 1h\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
hutch image create r 8M >/dev/null || fail "create failed"

# ops.py URI COPY OP...: each OP on the export and the same on COPY (a local
# file). OP: pass:SEED (8 MiB of fresh random bytes in 1 MiB writes),
# w:OFF:LEN:SEED (random bytes), z:OFF:LEN (zeroes), f (flush). With HOLD
# the connection stays open after 'applied', until killed.
cat >"$HUTCH_HOME/ops.py" <<'PY'
import os, random, sys, time, nbd
uri, copy, ops = sys.argv[1], sys.argv[2], sys.argv[3:]
h = nbd.NBD()
h.connect_uri(uri)
f = open(copy, 'r+b')
def write(off, data):
    h.pwrite(data, off)
    f.seek(off); f.write(data)
for op in ops:
    a = op.split(':')
    if a[0] == 'pass':
        rnd = random.Random(int(a[1]))
        for off in range(0, 8 << 20, 1 << 20):
            write(off, rnd.randbytes(1 << 20))
    elif a[0] == 'w':
        write(int(a[1]), random.Random(int(a[3])).randbytes(int(a[2])))
    elif a[0] == 'z':
        off, n = int(a[1]), int(a[2])
        h.zero(n, off)
        f.seek(off); f.write(bytes(n))
    elif a[0] == 'f':
        h.flush()
f.close()
print('applied', flush=True)
if os.environ.get('HOLD'):
    time.sleep(3600)
PY
copy="$HUTCH_HOME/copy.raw"
truncate -s 8M "$copy"
ops() { "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri r)" "$copy" "$@" >/dev/null || fail "ops $* failed"; }
packs() { "$PYTHON" -c 'import os, sys; d = sys.argv[1]; print(sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)))' \
	"$HUTCH_HOME/store/packs"; }
same() {
	qemu-img compare -q -f raw -F raw "$copy" "$(nbd_uri r)" || fail "$1: the image differs from the copy"
}

# One pass, then eight rewrites of all of it in one connection, no flush:
# the packs grow by one pass and one write's worth, not nine passes.
ops pass:1 f
before=$(packs)
ops pass:2 pass:3 pass:4 pass:5 pass:6 pass:7 pass:8 pass:9 pass:10
grown=$(($(packs) - before))
echo "packs grew by $grown bytes for 9 passes of 8 MiB"
[ "$grown" -le $((10 << 20)) ] || fail "the packs grew by $grown bytes: rewrites are not recycled"
same "after rewrites"

# A snapshot holds the flushed bytes; rewrites of the image must not touch them.
ops f
cp "$copy" "$HUTCH_HOME/snap.raw"
hutch image snapshot r s1 >/dev/null || fail "snapshot failed"
hutch image fork r r2 >/dev/null || fail "fork failed"
ops pass:11 pass:12 pass:13 w:65536:65536:14 z:131072:131072 pass:15
same "after rewrites over a snapshot"
qemu-img compare -q -f raw -F raw "$HUTCH_HOME/snap.raw" "$(nbd_uri r@s1)" || fail "the snapshot changed"
qemu-img compare -q -f raw -F raw "$HUTCH_HOME/snap.raw" "$(nbd_uri r2)" || fail "the fork changed"

# kill -9 after rewrites: the log names chunks whose places were reused
# since; the later whole writes in the same log stand in for them. Partial
# writes and zeroes in between, whole rewrites after.
ops f
start_held "$HUTCH_HOME/ops.out" "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri r)" "$copy" pass:20 w:4096:8192:21 \
	w:70000:300000:22 z:1048576:65536 pass:23 w:2097152:4096:24 pass:25 w:3145728:1048576:26
wait_applied "$HUTCH_HOME/ops.out"
kill9_storaged
kill_held
start_storaged
grep -q "image r: 29 writes .* replayed from its write log" "$HUTCH_HOME/storaged.log" ||
	{ cat "$HUTCH_HOME/storaged.log" >&2; fail "the replay is not reported"; }
same "after kill -9 over recycled chunks"
qemu-img compare -q -f raw -F raw "$HUTCH_HOME/snap.raw" "$(nbd_uri r@s1)" || fail "the snapshot changed after the replay"

# Places are reused after the restart too; then verify and gc.
ops pass:30 pass:31 pass:32 f
same "after rewrites following the restart"
hutch store verify >/dev/null || fail "store verify found damage"
hutch store gc >/dev/null || fail "gc failed"
same "after gc"
ops pass:33 pass:34 f
same "after rewrites following gc"
hutch store verify >/dev/null || fail "store verify found damage after gc"
qemu-img compare -q -f raw -F raw "$HUTCH_HOME/snap.raw" "$(nbd_uri r2)" || fail "the fork changed in the end"

# A logged chunk really missing (its record cut from the pack) and not
# written whole again later: damage, not recycling. The log is kept aside
# and the image stays as last flushed.
stop_storaged
start_storaged	# no recycled places: the next records go to the end of a pack
cp "$copy" "$HUTCH_HOME/flushed.raw"
start_held "$HUTCH_HOME/ops.out" "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri r)" "$copy" w:1048576:131072:40
wait_applied "$HUTCH_HOME/ops.out"
kill9_storaged
kill_held
pack=$(ls "$HUTCH_HOME"/store/packs/*.pack | sort | tail -1)
truncate -s $(($(stat -c %s "$pack") - 65648)) "$pack"	# one 64 KiB chunk record
start_storaged
grep -q "image r: its write log names chunks missing from the store (1, " "$HUTCH_HOME/storaged.log" ||
	{ cat "$HUTCH_HOME/storaged.log" >&2; fail "the missing chunk is not reported"; }
ls "$HUTCH_HOME"/store/wlog/r.*.unreplayed >/dev/null 2>&1 || fail "the log was not kept aside"
cp "$HUTCH_HOME/flushed.raw" "$copy"
same "after a log naming a missing chunk"
echo "rewrites recycle their places; flushed, snapshotted and forked data is intact"

#!/bin/bash
# Description: writes acknowledged but not yet flushed survive a kill -9 of
# hutch-storaged (its write log, in the page cache, is replayed at the next
# start): partial and whole chunks, unaligned bytes, zeroes, trims and a
# write past a resize, all compared with a local copy. A log record cut by
# the crash is left out and reported; no log is left behind after a replay.
. "$(dirname "$0")/../functions.sh"
requires /usr/bin/python3 -c 'import nbd'
requires qemu-img --version

# No timer flush during the test: only the log keeps the writes.
printf '[store]\nflush_interval = 1h\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
hutch image create u 16M >/dev/null || fail "create failed"

# ops.py URI COPY OP...: apply each OP to the export and the same to COPY (a
# local file), without a flush; then wait with the connection open, as a
# guest would, until killed. OP: w:OFF:LEN:BYTE, z:OFF:LEN (zero), t:OFF:LEN
# (trim: reads back as zeroes here), f (flush), grow:SIZE.
cat >"$HUTCH_HOME/ops.py" <<'PY'
import sys, time, os, nbd
uri, copy, ops = sys.argv[1], sys.argv[2], sys.argv[3:]
h = nbd.NBD()
h.connect_uri(uri)
f = open(copy, 'r+b')
for op in ops:
    a = op.split(':')
    if a[0] == 'w':
        off, n, b = int(a[1]), int(a[2]), int(a[3], 16)
        h.pwrite(bytes([b]) * n, off)
        f.seek(off); f.write(bytes([b]) * n)
    elif a[0] in ('z', 't'):
        off, n = int(a[1]), int(a[2])
        (h.zero if a[0] == 'z' else h.trim)(n, off)
        f.seek(off); f.write(bytes(n))
    elif a[0] == 'f':
        h.flush()
    elif a[0] == 'grow':
        f.truncate(int(a[1]))
f.close()
print('applied', flush=True)
if os.environ.get('HOLD'):
    time.sleep(3600)
PY
copy="$HUTCH_HOME/copy.raw"
truncate -s 16M "$copy"
ops() { "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri u)" "$copy" "$@"; }
# apply_held IMAGE OP...: apply, and keep the connection open (in the background).
apply_held() {
	local img=$1; shift
	start_held "$HUTCH_HOME/ops.out" "$PYTHON" "$HUTCH_HOME/ops.py" "$(nbd_uri "$img")" "$copy" "$@"
	wait_applied "$HUTCH_HOME/ops.out"
}
crash() {
	kill9_storaged
	kill_held
}
# hold OP...: apply to u, then kill -9 hutch-storaged with the connection open.
hold() {
	apply_held u "$@"
	crash
}
same() {
	qemu-img compare -q -f raw -F raw "$copy" "$(nbd_uri u)" || fail "$1: the image differs from the copy"
}

# Flushed first, so zeroes and trims have something to clear.
ops w:0:4194304:aa f >/dev/null || fail "the flushed write failed"
hold w:12288:4096:11 w:70001:1000:22 w:2097152:1048576:33 w:3211264:131072:34 \
	z:1048576:65536 t:1245184:65536 w:4190000:9000:35 z:4186000:100
start_storaged
grep -q "image u: 8 writes .* replayed from its write log" "$HUTCH_HOME/storaged.log" ||
	{ cat "$HUTCH_HOME/storaged.log" >&2; fail "the replay is not reported"; }
same "after kill -9 with unflushed writes"
[ -z "$(ls "$HUTCH_HOME/store/wlog")" ] || fail "write logs left after the replay: $(ls "$HUTCH_HOME/store/wlog")"

# A resize (flushed by itself), then writes past the old end.
hutch image resize u 32M >/dev/null || fail "resize failed"
truncate -s 32M "$copy"
hold w:20971520:65536:44 w:16773120:8192:45
start_storaged
same "after a resize and kill -9"

# The last record cut short, as a crash in the middle of its append leaves
# it: that write was never acknowledged; the ones before it stay.
hold w:8192:4096:55
start_storaged
hold w:8192:4096:56 w:4096:4096:57
log=$(ls "$HUTCH_HOME"/store/wlog/u.*)
[ "$(echo "$log" | wc -l)" -eq 1 ] || fail "expected one write log, found: $log"
truncate -s $(($(stat -c %s "$log") - 10)) "$log"
start_storaged
grep -q "write log .*u\..*: [0-9]* bytes after its last whole record ignored" "$HUTCH_HOME/storaged.log" ||
	fail "the cut record is not reported"
# 56 at 8192 applied, 57 at 4096 cut: the copy without the last write.
"$PYTHON" - "$copy" <<'PY'
import sys
f = open(sys.argv[1], 'r+b'); f.seek(4096); f.write(b'\xaa' * 4096)
PY
same "after a cut log record"
# An image removed with unflushed writes and created again under its name
# before the crash: the new one gets nothing of the old one's log.
hutch image create again 1M >/dev/null || fail "create again"
copy="$HUTCH_HOME/again.raw"
truncate -s 1M "$copy"
apply_held again w:0:4096:77
hutch image rm again >/dev/null || fail "rm again with a connection open"
hutch image create again 1M >/dev/null || fail "create again, again"
crash
start_storaged
grep -q "image again: .* replayed" "$HUTCH_HOME/storaged.log" && fail "a removed image's log was replayed"
qemu-io -f raw -r -c "read -P 0 0 1M" "$(nbd_uri again)" | grep -q "^read 1048576" ||
	fail "the new image 'again' has data of the removed one"
hutch store verify >/dev/null || fail "store verify after the replays"
echo "unflushed writes survived kill -9; a cut record was left out"

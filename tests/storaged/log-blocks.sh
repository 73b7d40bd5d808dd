#!/bin/bash
# Description: whole 4 KiB blocks written into a chunk stay in the write log
# (page cache) rather than in a second copy in hutch-storaged's memory: 256
# MiB of 4 KiB writes, not flushed, grow its resident set by far less than
# that, and read back exactly from the log; an unaligned write and partial
# reads in a chunk of log blocks; then the flush writes them out from the log,
# and a restart reads the same bytes.
. "$(dirname "$0")/../functions.sh"
. "$HUTCH_SRC/tests/nbd/lib.sh"
requires /usr/bin/python3 -c 'import nbd'
requires fio --version

# meson sets MALLOC_PERTURB_, which has malloc write over every buffer it
# returns: the untouched pages measured here would all be touched.
unset MALLOC_PERTURB_
# No timer flush: the blocks stay in the log until the test flushes.
printf '[store]\nflush_interval = 1h\n' >"$HUTCH_HOME/hutch.conf"
start_storaged
make_image lb 256M
uri=$(nbd_uri lb)
fio_lb() {
	fio --name=lb --ioengine=nbd --uri="$uri" --bs=4k --size=256M --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
		--output="$HUTCH_HOME/fio.out" "$@" || { cat "$HUTCH_HOME/fio.out" >&2; return 1; }
}

rss0=$(storaged_rss_kb)
fio_lb --rw=write --do_verify=1 || fail "4 KiB writes did not read back before a flush"
rss=$(storaged_rss_kb)
echo "resident set ${rss0} KiB -> ${rss} KiB after 256 MiB of 4 KiB writes"
# A copy in memory would be 256 MiB; the buffers' bookkeeping is a page or
# two per chunk. (ASan's allocator touches what it hands out: not measured.)
if grep -q asan "/proc/$STORAGED_PID/maps"; then
	echo "SKIP: the resident-set check (AddressSanitizer build)"
else
	[ $((rss - rss0)) -lt $((96 * 1024)) ] ||
		fail "256 MiB of unflushed 4 KiB writes grew hutch-storaged by $(((rss - rss0) / 1024)) MiB (a second copy?)"
fi

# In one chunk of log blocks: partial reads of blocks, an unaligned write
# (the chunk's blocks come into memory first), a whole block after it.
"$PYTHON" - "$uri" <<'PY' || fail "reads and writes in a chunk of log blocks"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
c = 7 * 65536
before = h.pread(65536, c)
for off, n in ((50, 100), (4000, 200), (8191, 8194), (0, 65536)):
    assert h.pread(n, c + off) == before[off:off + n], ("partial read", off, n)
want = bytearray(before)
h.pwrite(b'\x5a' * 100, c + 1000)
want[1000:1100] = b'\x5a' * 100
h.pwrite(b'\xa5' * 4096, c + 8192)
want[8192:12288] = b'\xa5' * 4096
assert h.pread(65536, c) == bytes(want), "after an unaligned write"
h.flush()
assert h.pread(65536, c) == bytes(want), "after the flush"
h.pwrite(before, c)	# as fio wrote it, for its verify below
h.shutdown()
PY

# Writes during a flush's write-out: a chunk written to between its copy
# and its install keeps its new blocks over the stored chunk, which has the
# blocks it had in the file before. 128 MiB of log blocks make the write-out
# long enough for hundreds of such writes.
make_image cw 128M
fio --name=cw --ioengine=nbd --uri="$(nbd_uri cw)" --rw=write --bs=4k --size=128M --output=/dev/null ||
	fail "fio on cw failed"
"$PYTHON" - "$(nbd_uri cw)" <<'PY' || fail "writes during a write-out"
import sys, subprocess, random, nbd
uri = sys.argv[1]
size = 128 << 20
h = nbd.NBD()
h.connect_uri(uri)
want = bytearray(b''.join(h.pread(1 << 20, o) for o in range(0, size, 1 << 20)))
# The flush from another process: the bindings hold Python's lock while they wait.
flush = subprocess.Popen([sys.executable, '-c', 'import sys, nbd; h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush()', uri])
rnd, n = random.Random(7), 0
while flush.poll() is None or n < 100:
    off = rnd.randrange(size // 4096) * 4096
    blk = bytes([n % 251 + 1]) * 4096
    h.pwrite(blk, off)
    want[off:off + 4096] = blk
    n += 1
assert flush.wait() == 0, "the flush failed"
got = b''.join(h.pread(1 << 20, o) for o in range(0, size, 1 << 20))
bad = [o for o in range(0, size, 4096) if got[o:o + 4096] != want[o:o + 4096]]
assert not bad, "%d of %d blocks differ after %d writes during the flush, first at %d" % (len(bad), size // 4096, n, bad[0])
print(n, "writes during the flush", file=sys.stderr)
PY

# Flushed when the last client leaves: written out from the log.
fio_lb --rw=read --verify_only=1 || fail "the blocks differ after the flush"
! grep -E "error|failed" "$HUTCH_HOME/storaged.log" || fail "errors logged"
stop_storaged
start_storaged
fio_lb --rw=read --verify_only=1 || fail "the blocks differ after a restart"
hutch store verify >/dev/null || fail "store verify found damage"

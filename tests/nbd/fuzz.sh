#!/bin/bash
# Description: libFuzzer on the handshake and request parser for a bounded time
# (HUTCH_FUZZ_SECONDS, default 60); any crash, leak or sanitizer report fails.
. "$(dirname "$0")/../functions.sh"
requires clang --version
secs=${HUTCH_FUZZ_SECONDS:-60}
src="$HUTCH_SRC"
bin="$HUTCH_HOME/nbd-fuzz"
clang -std=gnu17 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -I"$src/common" -I"$src/nbd" -I"$HUTCH_BUILD" \
	"$src"/nbd/nbd-{buf,conn,handshake,request,mem,fuzz}.c -o "$bin" 2>"$HUTCH_HOME/cc.log" ||
	{ cat "$HUTCH_HOME/cc.log" >&2; fail "cannot build the fuzz target"; }

# Seeds: a full negotiation followed by one of each request, so the fuzzer starts deep.
corpus="$HUTCH_HOME/corpus"
mkdir -p "$corpus"
"$PYTHON" - "$corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""): return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def req(cmd, off, ln, flags=0, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, 7, off, ln) + payload
name = b"disk"
hs = struct.pack(">I", 3) + opt(8) + opt(10, struct.pack(">I", 4) + name + struct.pack(">II", 1, 15) + b"base:allocation")
go = opt(7, struct.pack(">I", 4) + name + struct.pack(">HH", 1, 3))
reqs = [req(1, 0, 512, 1, b"a" * 512), req(0, 0, 4096), req(7, 0, 1 << 20), req(6, 4096, 8192, 16),
        req(4, 0, 65536), req(3, 0, 0), req(5, 0, 4096), req(0, 0, 1 << 21, 4), req(2, 0, 0)]
seeds = {
    "go": hs + go + b"".join(reqs),
    "export_name": struct.pack(">I", 1) + opt(1, name) + b"".join(reqs),
    "list_info": struct.pack(">I", 3) + opt(3) + opt(6, struct.pack(">I", 2) + b"ro" + struct.pack(">H", 0))
                 + opt(9, struct.pack(">I", 4) + name + struct.pack(">I", 0)) + opt(2),
}
for k, v in seeds.items():
    open(os.path.join(d, k), "wb").write(v)
    # the same with an odd last byte: jobs then complete out of order (see nbd-fuzz.c)
    open(os.path.join(d, k + "-async"), "wb").write(v + b"\x01")
PY
log="$HUTCH_HOME/fuzz.log"
"$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$HUTCH_HOME/" "$corpus" >"$log" 2>&1 || {
	tail -n 40 "$log" >&2
	for a in "$HUTCH_HOME"/crash-* "$HUTCH_HOME"/leak-* "$HUTCH_HOME"/timeout-*; do
		[ -f "$a" ] && { echo "artifact: $a"; xxd "$a" | head -20; } >&2
	done
	fail "fuzzer found a problem"
}
grep -E "^Done|stat::number_of_executed_units" "$log" | tail -1
echo "ok: $(grep -c . "$log") log lines, no crash in ${secs}s"

#!/bin/bash
# Description: clients silent mid-handshake are dropped after the handshake timeout (30 s);
# a connected client idle for as long is not.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires "$PYTHON" -c "import nbd"
start_storaged
make_image disk 4M
"$PYTHON" - "$NBD_SOCK" <<'PY' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri("nbd+unix:///disk?socket=" + sys.argv[1])
h.pwrite(b"i" * 512, 0)
time.sleep(36)
assert h.pread(512, 0) == b"i" * 512
h.shutdown()
PY
idle=$!
sleep 0.5
fds0=$(storaged_fds)
raw stall disk || fail "stalled handshakes"
wait "$idle" || fail "an idle connected client was dropped or failed"
[ "$(storaged_fds)" -le "$fds0" ] || fail "stalled clients' descriptors not released"
stop_storaged
echo "ok"

#!/bin/bash
# Description: multi-conn: writes acknowledged on two connections survive kill -9 once
# a FLUSH on a third connection is acknowledged.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires "$PYTHON" -c "import nbd"
start_storaged
make_image disk 32M

"$PYTHON" - "$NBD_SOCK" <<'PY' || fail "writes or flush failed"
import nbd, sys
uri = "nbd+unix:///disk?socket=" + sys.argv[1]
hs = []
for i in range(3):
    h = nbd.NBD(); h.connect_uri(uri); hs.append(h)
    assert h.can_multi_conn(), "multi-conn not advertised"
hs[0].pwrite(b"\x01" * (1 << 20), 0)
hs[1].pwrite(b"\x02" * (1 << 20), 8 << 20)
hs[2].flush()
# deliberately no shutdown: the process dies below with the connections open
PY
kill9_storaged
start_storaged
"$PYTHON" - "$NBD_SOCK" <<'PY' || fail "data acknowledged before the flush was lost by kill -9"
import nbd, sys
h = nbd.NBD(); h.connect_uri("nbd+unix:///disk?socket=" + sys.argv[1])
assert h.pread(1 << 20, 0) == b"\x01" * (1 << 20), "connection 1's write lost"
assert h.pread(1 << 20, 8 << 20) == b"\x02" * (1 << 20), "connection 2's write lost"
PY
echo "ok"

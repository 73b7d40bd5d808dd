#!/bin/bash
# Description: removing or renaming an image with open connections: in-flight requests
# finish, later ones fail with ESHUTDOWN, the server does not crash, the new name serves.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/lib.sh"
requires "$PYTHON" -c "import nbd"
start_storaged
make_image a 8M
make_image b 8M

"$PYTHON" - "$NBD_SOCK" <<'PY' || fail "open-connection semantics"
import nbd, subprocess, sys
sock = sys.argv[1]
def conn(name):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h
ha, hb = conn("a"), conn("b")
ha.pwrite(b"A" * 4096, 0)
hb.pwrite(b"B" * 4096, 0)
hb.flush()
def hutch(*args):
    subprocess.run(["hutch", "image"] + list(args), check=True, stdout=subprocess.DEVNULL)
hutch("rm", "a")
hutch("rename", "b", "c")
for h, what in ((ha, "removed"), (hb, "renamed")):
    for op in (lambda: h.pread(4096, 0), lambda: h.pwrite(b"x" * 512, 0), h.flush):
        try:
            op()
        except nbd.Error as e:
            if e.errno not in (None, 108, "ESHUTDOWN"):
                sys.exit("%s image: errno %s, want ESHUTDOWN (%s)" % (what, e.errno, e))
        else:
            sys.exit("I/O on a %s image succeeded" % what)
ha.shutdown(); hb.shutdown()
hc = conn("c")
assert hc.pread(4096, 0) == b"B" * 4096, "renamed image lost its data"
try:
    conn("a")
    sys.exit("removed image still opens")
except nbd.Error:
    pass
PY
kill -0 "$STORAGED_PID" || fail "hutch-storaged died"
echo "ok"

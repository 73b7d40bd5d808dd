# Helpers for the NBD tests; source after ../functions.sh.

NBD_SOCK="$HUTCH_HOME/run/nbd.sock"
NBDRAW="$HUTCH_SRC/tests/nbd/nbdraw.py"

# make_image NAME SIZE: create an image through the control socket.
make_image() {
	hutch image create "$1" "$2" >/dev/null || fail "hutch image create $1 $2 failed"
}

# storaged_fds: number of open descriptors of hutch-storaged.
storaged_fds() {
	ls "/proc/$STORAGED_PID/fd" | wc -l
}

# storaged_rss_kb: resident set of hutch-storaged in KiB.
storaged_rss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$STORAGED_PID/status"
}

# raw CASE [ARG]...: run one raw-socket client case of nbdraw.py against the server.
raw() {
	"$PYTHON" "$NBDRAW" "$NBD_SOCK" "$@"
}

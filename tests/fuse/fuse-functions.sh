# Helpers for the hutch-fuse tests, on top of tests/functions.sh.
#
#   . "$(dirname "$0")/fuse-functions.sh"
#   start_storaged
#   start_fuse
#   truncate -s 1G "$MNT/images/a"

. "$(dirname "${BASH_SOURCE[0]}")/../functions.sh"

MNT="$HUTCH_HOME/fs"

requires_fuse() {
	[ -c /dev/fuse ] || skip "no /dev/fuse (FUSE not available in this kernel or container)"
	command -v fusermount3 >/dev/null || skip "needs fusermount3 (Debian package fuse3)"
}

_unmount_fuse() {
	if mountpoint -q "$MNT"; then fusermount3 -u -z "$MNT"; fi
}

# start_fuse [ARG]...: mount $MNT with hutch-fuse and wait for it.
# Sets FUSE_PID; the log is $HUTCH_HOME/fuse.log.
start_fuse() {
	requires_fuse
	local log="$HUTCH_HOME/fuse.log"
	mkdir -p "$MNT"
	hutch-fuse --home "$HUTCH_HOME" "$@" >>"$log" 2>&1 &
	FUSE_PID=$!
	_daemon_pids+=("$FUSE_PID")
	# Unmount before the HUTCH_HOME is removed, or rm -rf would walk the mount.
	if [ -z "${_fuse_cleanup:-}" ]; then
		cleanup_fn _unmount_fuse
		_fuse_cleanup=1
	fi
	local tries=100
	while ! mountpoint -q "$MNT"; do
		kill -0 "$FUSE_PID" 2>/dev/null || { cat "$log" >&2; fail "hutch-fuse exited during startup"; }
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || { cat "$log" >&2; fail "hutch-fuse did not mount within 10 s"; }
		sleep 0.1
	done
}

# errno_of PYTHON-STATEMENT: run it with os imported, print OK or the errno name.
errno_of() {
	"$PYTHON" - "$1" <<'PYEOF'
import errno, os, sys
try:
    exec(sys.argv[1])
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PYEOF
}

# expect_errno WANT PYTHON-STATEMENT MSG
expect_errno() {
	local got
	got=$(errno_of "$2")
	[ "$got" = "$1" ] || fail "$3: got $got, want $1 ($2)"
}

# store_physical: bytes the store takes on disk, from `hutch store stats --json`.
store_physical() {
	hutch store stats --json | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); d=d.get("stats", d); print(d["physical"])'
}

# image_names: the store's heads, one a line, via the CLI.
image_names() {
	hutch image list --json | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
d = d.get("images", d) if isinstance(d, dict) else d
for i in d: print(i["name"], i["size"])'
}

# Shared helpers for hutch's shell tests. Source it first thing:
#
#   #!/bin/bash
#   # Description: what this test checks.
#   . "$(dirname "$0")/../functions.sh"
#   requires qemu-img --version
#   start_storaged
#   hutch image create base 1G || fail "create failed"
#
# Every test gets its own HUTCH_HOME in a fresh directory under /tmp, so
# tests run in parallel. Daemons started here are killed on exit. Exit 77
# means "skipped" (only for a missing tool or kernel feature, with the
# reason printed); anything else non-zero is a failure.

set -u

# The build directory: meson sets HUTCH_BUILD; when run by hand, guess.
if [ -z "${HUTCH_BUILD:-}" ]; then
	for d in "$(dirname "$0")"/../../build* ; do
		if [ -x "$d/cli/hutch" ]; then HUTCH_BUILD=$(cd "$d" && pwd); break; fi
	done
fi
if [ -z "${HUTCH_BUILD:-}" ] || [ ! -d "$HUTCH_BUILD" ]; then
	echo "functions.sh: set HUTCH_BUILD to the meson build directory" >&2
	exit 99
fi
export HUTCH_BUILD
HUTCH_SRC=${HUTCH_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export HUTCH_SRC
export PATH="$HUTCH_BUILD/cli:$HUTCH_BUILD/storaged:$HUTCH_BUILD/fuse:$HUTCH_BUILD/vmd:$PATH"

# Debian's Python modules (libnbd, ...) live with /usr/bin/python3.
PYTHON=/usr/bin/python3

HUTCH_HOME=$(mktemp -d /tmp/hutch-test.XXXXXX)
export HUTCH_HOME
TEST_NAME=$(basename "$0" .sh)

_cleanup_fns=()
_daemon_pids=()

# cleanup_fn CMD [ARG]...: run CMD at exit (in reverse order of registration).
cleanup_fn() {
	_cleanup_fns+=("$(printf '%q ' "$@")")
}

_run_cleanup() {
	local status=$? i pid
	set +e
	for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
		eval "${_cleanup_fns[$i]}"
	done
	for pid in "${_daemon_pids[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${_daemon_pids[@]}"; do
		# Give a daemon 5 s to stop, then kill it.
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
	done
	if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then
		for log in "$HUTCH_HOME"/*.log; do
			[ -f "$log" ] || continue
			echo "---- $log (last 30 lines) ----" >&2
			tail -n 30 "$log" >&2
		done
	fi
	if [ -n "${HUTCH_KEEP:-}" ]; then
		echo "kept $HUTCH_HOME" >&2
	else
		rm -rf "$HUTCH_HOME"
	fi
	exit "$status"
}
trap _run_cleanup EXIT
trap 'exit 130' INT TERM

# fail MSG: the test failed.
fail() {
	echo "FAIL: $TEST_NAME: $*" >&2
	exit 1
}

# skip MSG: a missing tool or kernel feature; exit 77.
skip() {
	echo "SKIP: $TEST_NAME: $*" >&2
	exit 77
}

# requires CMD [ARG]...: skip unless CMD runs successfully.
requires() {
	"$@" >/dev/null 2>&1 || skip "needs '$*'"
}

# expect_fail CMD [ARG]...: CMD must exit non-zero (its stderr is kept in $EXPECT_ERR).
expect_fail() {
	local errf="$HUTCH_HOME/.expect_err"
	if "$@" >/dev/null 2>"$errf"; then
		EXPECT_ERR=$(cat "$errf")
		fail "expected failure: $*"
	fi
	EXPECT_ERR=$(cat "$errf")
}

# assert_eq GOT WANT MSG
assert_eq() {
	[ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"
}

# assert_contains TEXT PATTERN MSG (grep -E pattern)
assert_contains() {
	printf '%s' "$1" | grep -Eq -- "$2" || fail "$3: '$1' does not match '$2'"
}

# start_held OUT CMD [ARG]...: runs a client in the background with HOLD=1;
# it prints 'applied' to OUT once its writes are acknowledged and keeps its
# connection open (as a guest would) until kill_held.
held_pids=()
start_held() {
	local out=$1
	shift
	rm -f "$out"	# no 'applied' left from an earlier client
	HOLD=1 "$@" >"$out" 2>&1 &
	held_pids+=($!)
}

# wait_applied OUT...: waits until each held client has applied its writes.
wait_applied() {
	local out
	for out in "$@"; do
		wait_for 120 grep -q applied "$out" || { cat "$out" >&2; fail "a held client did not apply its writes ($out)"; }
	done
}

kill_held() {
	kill "${held_pids[@]}" 2>/dev/null
	wait "${held_pids[@]}" 2>/dev/null
	held_pids=()
}

# wait_for SECONDS CMD [ARG]...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local tries=$(($1 * 10)); shift
	while ! "$@" >/dev/null 2>&1; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

# start_storaged [ARG]...: start hutch-storaged on $HUTCH_HOME, wait until
# its sockets listen. Sets STORAGED_PID; its log is $HUTCH_HOME/storaged.log.
start_storaged() {
	local log="$HUTCH_HOME/storaged.log" skip=0
	# The log is appended to across restarts: look only at this start's lines.
	[ -f "$log" ] && skip=$(wc -l <"$log")
	hutch-storaged --home "$HUTCH_HOME" "$@" >>"$log" 2>&1 &
	STORAGED_PID=$!
	_daemon_pids+=("$STORAGED_PID")
	local tries=200
	while ! tail -n +$((skip + 1)) "$log" 2>/dev/null | grep -q " ready: "; do
		if ! kill -0 "$STORAGED_PID" 2>/dev/null; then
			cat "$log" >&2
			fail "hutch-storaged exited during startup"
		fi
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || { cat "$log" >&2; fail "hutch-storaged not ready after 20 s"; }
		sleep 0.1
	done
	[ -S "$HUTCH_HOME/run/control.sock" ] || fail "no control socket after 'ready'"
}

# stop_storaged: SIGTERM, and require a clean exit (status 0) within 20 s.
stop_storaged() {
	local pid=$STORAGED_PID status
	kill -TERM "$pid" || fail "hutch-storaged (pid $pid) is not running"
	for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && fail "hutch-storaged did not stop within 20 s of SIGTERM"
	wait "$pid"; status=$?
	[ "$status" -eq 0 ] || fail "hutch-storaged exited with status $status after SIGTERM"
}

# kill9_storaged: kill -9 and reap, as a crash would.
kill9_storaged() {
	kill -9 "$STORAGED_PID" 2>/dev/null
	wait "$STORAGED_PID" 2>/dev/null
	return 0
}

# nbd_uri NAME: the NBD URI of an image.
nbd_uri() {
	echo "nbd+unix:///$1?socket=$HUTCH_HOME/run/nbd.sock"
}

# ctl_raw LINE...: send raw lines to the control socket, print the replies.
ctl_raw() {
	"$PYTHON" - "$HUTCH_HOME/run/control.sock" "$@" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
f = s.makefile('rb')
for line in sys.argv[2:]:
    s.sendall(line.encode('utf-8', 'surrogateescape') + b'\n')
    while True:
        reply = f.readline()
        if not reply:
            sys.exit("connection closed")
        sys.stdout.write(reply.decode())
        if b'"ok"' in reply:
            break
EOF
}

# Helpers for the hutch-vmd tests; source after ../functions.sh.
#
# Every test builds the small test template (hutch template build) into its
# own HUTCH_HOME; downloaded .debs are shared between tests and runs in
# $HUTCH_DEB_CACHE (default /tmp/hutch-test-debs), guarded by a lock.

requires qemu-system-x86_64 --version
requires ssh -V
command -v ssh-keygen >/dev/null || skip "needs ssh-keygen"
command -v apt-get >/dev/null || skip "needs apt-get (Debian) to build the test template"

HUTCH_DEB_CACHE=${HUTCH_DEB_CACHE:-/tmp/hutch-test-debs}
export HUTCH_TEMPLATE_BUILD="$HUTCH_BUILD/vmd/hutch-template-build"

# QEMU runs as its own uid and reconnects to nbd.sock as that uid: the home
# must be traversable (mktemp makes it 0700).
chmod 0755 "$HUTCH_HOME"
# Tests run under TCG on purpose (KVM is probed by the accel test only), and
# stop quickly when a guest does not power off.
if [ ! -f "$HUTCH_HOME/hutch.conf" ]; then
	printf '[vmd]\naccel = %s\nstop_timeout = 20s\nboot_timeout = 120s\nreconnect_delay = 60\n' \
		"${VM_ACCEL:-tcg}" >"$HUTCH_HOME/hutch.conf"
fi

# start_vmd: start hutch-vmd, wait for its socket. Sets VMD_PID; log in $HUTCH_HOME/vmd.log.
start_vmd() {
	local log="$HUTCH_HOME/vmd.log" skip=0
	# A killed hutch-vmd leaves its socket: wait for this start's ready line.
	[ -f "$log" ] && skip=$(wc -l <"$log")
	hutch-vmd --home "$HUTCH_HOME" >>"$log" 2>&1 &
	VMD_PID=$!
	_daemon_pids+=("$VMD_PID")
	wait_for 20 sh -c "tail -n +$((skip + 1)) '$log' | grep -q ' ready: '" ||
		{ cat "$log" >&2; fail "hutch-vmd did not start"; }
	# Its QEMUs outlive it by design: stop them when the test ends.
	cleanup_fn _kill_vm_qemus
	cleanup_fn _vm_logs_on_failure
}

# On failure, what the guests and their QEMUs said ($status is the exit
# status of the test, seen from functions.sh's cleanup).
_vm_logs_on_failure() {
	local f
	[ "${status:-0}" -ne 0 ] && [ "${status:-0}" -ne 77 ] || return 0
	for f in "$HUTCH_HOME"/vms/*/console.log "$HUTCH_HOME"/vms/*/qemu.log; do
		[ -f "$f" ] || continue
		echo "---- $f (last 15 lines) ----" >&2
		tail -n 15 "$f" >&2
	done
	df -h "$HUTCH_HOME" >&2
	return 0
}

_kill_vm_qemus() {
	local p
	for p in "$HUTCH_HOME"/vms/*/run/qemu.pid; do
		[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
	done
	return 0
}

# build_template [NAME]: the test template, with the shared .deb cache.
build_template() {
	local name=${1:-default}
	mkdir -p "$HUTCH_DEB_CACHE"
	flock "$HUTCH_DEB_CACHE/.lock" \
		hutch template build "$name" --cache "$HUTCH_DEB_CACHE" >"$HUTCH_HOME/template-build.log" 2>&1 ||
		{ cat "$HUTCH_HOME/template-build.log" >&2; fail "hutch template build $name failed"; }
}

# vm_field NAME FIELD: one member of `hutch vm info NAME --json`.
vm_field() {
	hutch vm info "$1" --json | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

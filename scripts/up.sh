#!/bin/bash
# Brings hutch up on this machine with nothing to configure: installs what
# is missing (Debian 12), builds, and starts the daemons on $HUTCH_HOME
# (default /var/lib/hutch as root, ~/.hutch otherwise). The store is made
# on first start. Prints how to use it. `scripts/up.sh --stop` stops it.
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)

if [ -z "${HUTCH_HOME:-}" ]; then
	if [ "$(id -u)" -eq 0 ]; then HUTCH_HOME=/var/lib/hutch; else HUTCH_HOME=$HOME/.hutch; fi
fi
export HUTCH_HOME
build="$src/${BUILD:-build}"
logdir="$HUTCH_HOME/log"

stop_daemon() {	# NAME
	local pidf="$HUTCH_HOME/run/$1.pid"
	[ -f "$pidf" ] || return 0
	local pid
	pid=$(cat "$pidf")
	kill "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	echo "stopped $1"
}

if [ "${1:-}" = "--stop" ]; then
	stop_daemon vmd
	stop_daemon storaged
	exit 0
fi

scripts/deps.sh
BUILD="${BUILD:-build}" scripts/build.sh
mkdir -p "$logdir"

# start_daemon NAME BINARY: start unless running, wait for its ready line.
start_daemon() {
	local name=$1 bin=$2 pidf="$HUTCH_HOME/run/$1.pid" log="$logdir/$1.log"
	if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
		echo "$name is already running (pid $(cat "$pidf"))"
		return 0
	fi
	local skip=0
	[ -f "$log" ] && skip=$(wc -l <"$log")
	setsid "$bin" --home "$HUTCH_HOME" >>"$log" 2>&1 </dev/null &
	local pid=$! tries=300
	until tail -n +$((skip + 1)) "$log" | grep -q " ready: "; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$log" >&2
			echo "$name failed to start; its log is $log" >&2
			exit 1
		fi
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || { echo "$name not ready after 30 s; see $log" >&2; exit 1; }
		sleep 0.1
	done
	echo "$name is up (pid $pid, log $log)"
}

start_daemon storaged "$build/storaged/hutch-storaged"

hutch="$build/cli/hutch"
cat <<EOT

hutch is up on HUTCH_HOME=$HUTCH_HOME.

  export HUTCH_HOME=$HUTCH_HOME PATH=$build/cli:\$PATH
  hutch image create demo 1G
  qemu-io -f raw -c 'write -P 0x5a 0 1M' 'nbd+unix:///demo?socket=$HUTCH_HOME/run/nbd.sock'
  hutch image snapshot demo first && hutch image fork demo@first demo2
  hutch image list && hutch store stats

Stop it with: scripts/up.sh --stop
EOT
"$hutch" store stats >/dev/null 2>&1 || echo "warning: hutch store stats failed" >&2

#!/bin/bash
# Brings hutch up on this machine with nothing to configure: installs what
# is missing (Debian 12), builds, starts hutch-storaged and hutch-vmd on
# $HUTCH_HOME (default /var/lib/hutch as root, ~/.hutch otherwise), builds
# the test template if there is none, creates a first VM, starts hutch's own
# sshd on a loopback port with your public key, and prints how to reach it. The store is made on first start. `scripts/up.sh --stop` stops
# the daemons (VMs keep running and are re-adopted at the next start).
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
	# VMs first (ACPI shutdown, then killed after vmd's timeout), then the daemons.
	hutch="$build/cli/hutch"
	if [ -x "$hutch" ] && "$hutch" vm list >/dev/null 2>&1; then
		for vm in $("$hutch" --json vm list | jq -r '.[] | select(.state == "running") | .name'); do
			"$hutch" vm stop "$vm"
		done
	fi
	PATH="$build/cli:$build/shell:$PATH" scripts/sshd-up.sh --stop || true
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

# hutch-vmd, the test template "default" (built from Debian packages the
# first time), and a first VM.
HUTCH_BUILD="$build" scripts/vmd-up.sh first

# hutch's own sshd on a loopback port (the host's sshd is left alone), with
# the invoking user's public key, if there is one, as a hutch user.
PATH="$build/cli:$build/shell:$PATH" scripts/sshd-up.sh

cat <<EOT

hutch is up on HUTCH_HOME=$HUTCH_HOME. To use it from this shell:

  export HUTCH_HOME=$HUTCH_HOME PATH=$build/cli:\$PATH
  hutch vm ssh first                 # a shell in the first VM
  hutch vm create alice              # another VM, forked from the template in O(1)
  hutch image list && hutch store stats

Stop it with: scripts/up.sh --stop
EOT

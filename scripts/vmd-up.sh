#!/bin/bash
# The VM half of bringing a hutch host up (hutch-storaged must be running):
# starts hutch-vmd if it is not running, builds the test template "default"
# if there is none, creates (or starts) a first VM and prints how to reach it.
#
# Usage: scripts/vmd-up.sh [VM_NAME]        (default VM name: first)
#   HUTCH_HOME   state directory (default /var/lib/hutch)
#   HUTCH_BUILD  a meson build folder to run from (default: hutch-* on PATH)
set -eu
name=${1:-first}
if [ "${name}" = "--help" ] || [ "${name}" = "-h" ]; then
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
export HUTCH_HOME=${HUTCH_HOME:-/var/lib/hutch}
if [ -n "${HUTCH_BUILD:-}" ]; then
	export PATH="$HUTCH_BUILD/cli:$HUTCH_BUILD/storaged:$HUTCH_BUILD/vmd:$PATH"
	export HUTCH_TEMPLATE_BUILD="$HUTCH_BUILD/vmd/hutch-template-build"
fi
for c in hutch hutch-vmd qemu-system-x86_64 ssh; do
	command -v "$c" >/dev/null || { echo "vmd-up: '$c' not found; build hutch or install it" >&2; exit 1; }
done
mkdir -p "$HUTCH_HOME/run"
# VM uids reconnect to nbd.sock through this directory.
chmod 755 "$HUTCH_HOME"

[ -S "$HUTCH_HOME/run/control.sock" ] ||
	{ echo "vmd-up: hutch-storaged is not running; start it first (hutch-storaged --home $HUTCH_HOME &)" >&2; exit 1; }

if ! hutch vm list >/dev/null 2>&1; then
	mkdir -p "$HUTCH_HOME/log"
	echo "starting hutch-vmd (log: $HUTCH_HOME/log/vmd.log)"
	setsid hutch-vmd --home "$HUTCH_HOME" >>"$HUTCH_HOME/log/vmd.log" 2>&1 </dev/null &
	for _ in $(seq 100); do
		[ -S "$HUTCH_HOME/run/vmd.sock" ] && hutch vm list >/dev/null 2>&1 && break
		sleep 0.1
	done
	hutch vm list >/dev/null || { tail -n 20 "$HUTCH_HOME/log/vmd.log" >&2; exit 1; }
fi

if ! hutch template list --json | grep -q '"name": *"default"'; then
	echo "building the template 'default' from Debian packages (about a minute the first time)"
	hutch template build default
fi

state=$(hutch vm info "$name" --json 2>/dev/null | sed -n 's/.*"state": *"\([a-z]*\)".*/\1/p' || true)
case "$state" in
"") echo "creating VM $name"; hutch vm create "$name" ;;
running) ;;
*) echo "starting VM $name"; hutch vm start "$name" ;;
esac

echo
echo "VM $name is running. Reach it with:"
echo "  hutch vm ssh $name            # a root shell in the guest"
echo "  hutch vm ssh $name uname -a   # one command"
echo "  hutch vm console $name        # its serial console (Ctrl-] leaves)"
echo "  hutch vm list                 # all VMs"

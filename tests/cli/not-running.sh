#!/bin/bash
# Description: without a daemon, commands say it is not running and how to start it.
. "$(dirname "$0")/../functions.sh"

for cmd in "image list" "image info x" "image create x 1G" "store stats" "store gc" "store verify"; do
	hutch $cmd >/dev/null 2>"$HUTCH_HOME/err"
	st=$?
	assert_eq "$st" 1 "'hutch $cmd' exit status without daemon"
	grep -q "hutch-storaged is not running" "$HUTCH_HOME/err" || fail "'hutch $cmd': $(cat "$HUTCH_HOME/err")"
	grep -q "hutch-storaged --home $HUTCH_HOME" "$HUTCH_HOME/err" || fail "'hutch $cmd' says how to start it"
done

# A stale socket file (daemon gone) is reported the same way.
mkdir -p "$HUTCH_HOME/run"
/usr/bin/python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" \
	"$HUTCH_HOME/run/control.sock"
hutch image list >/dev/null 2>"$HUTCH_HOME/err" && fail "stale socket accepted"
grep -q "not running" "$HUTCH_HOME/err" || fail "stale socket: $(cat "$HUTCH_HOME/err")"
exit 0

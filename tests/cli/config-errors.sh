#!/bin/bash
# Description: config errors stop the daemon naming FILE:LINE; --help-config documents every key.
. "$(dirname "$0")/../functions.sh"
requires jq --version

conf="$HUTCH_HOME/hutch.conf"

check_bad() {  # check_bad LINE PATTERN: the daemon must refuse to start, naming the line
	local line=$1 pattern=$2 out st
	out=$(timeout 10 hutch-storaged --home "$HUTCH_HOME" 2>&1); st=$?
	assert_eq "$st" 1 "exit status for: $(sed -n "${line}p" "$conf")"
	assert_contains "$out" "$conf:$line: .*$pattern" "message"
	[ -e "$HUTCH_HOME/run/control.sock" ] && fail "socket created despite config error"
	return 0
}

printf '[store]\nchunk_size = 64K\n\n[storaged]\nlog_levle = info\n' >"$conf"
check_bad 5 "unknown key 'log_levle' in \[storaged\]"
printf '# comment\n[stroe]\n' >"$conf"
check_bad 2 "unknown section \[stroe\]"
printf '[store]\nflush_interval = 5s\nchunk_size = 3000\n' >"$conf"
check_bad 3 "chunk_size.*power of two"
printf '[store]\ndirty_limit = lots\n' >"$conf"
check_bad 2 "dirty_limit.*not a size"
printf '[store]\nflush_interval = 5 fortnights\n' >"$conf"
check_bad 2 "flush_interval.*not a duration"
printf '[storaged]\nlog_level = loud\n' >"$conf"
check_bad 2 "log_level.*debug, info, warning, error"
printf '[nbd]\nworkers = 0\n' >"$conf"
check_bad 2 "workers.*out of range"
printf '[nbd]\ntcp_listen = nowhere\n' >"$conf"
check_bad 2 "tcp_listen.*ADDR:PORT"
printf 'orphan = 1\n' >"$conf"
check_bad 1 "outside any section"
printf '[store]\nthis line has no equals sign\n' >"$conf"
check_bad 2 "syntax error"

long=$(printf 'a%.0s' $(seq 300))
printf '[nbd]\ntcp_listen = %s:80\n' "$long" >"$conf"
check_bad 2 "line longer than"
# Long comments, a byte-order mark, CRLF and inline comments are fine; lines still count right.
printf '\xef\xbb\xbf# %s\r\n[store]\r\nchunk_size = 128K ; why\r\n[nbd]\nbogus = 1\n' "$long" >"$conf"
check_bad 5 "unknown key 'bogus' in \[nbd\]"

# --check-config on a good file; --config FILE elsewhere; a missing --config file.
printf '[store]\nchunk_size = 128K\nflush_interval = 500ms\n[storaged]\nlog_level = debug\n' >"$conf"
hutch-storaged --home "$HUTCH_HOME" --check-config | grep -q "$conf: OK" || fail "--check-config"
cp "$conf" "$HUTCH_HOME/other.conf"
rm "$conf"
hutch-storaged --home "$HUTCH_HOME" --config "$HUTCH_HOME/other.conf" --check-config >/dev/null || fail "--config"
out=$(hutch-storaged --home "$HUTCH_HOME" --config "$HUTCH_HOME/none.conf" 2>&1) && fail "missing --config accepted"
assert_contains "$out" "none.conf: cannot open" "missing --config"

# The file's chunk size is used for a store created on first start.
start_storaged --config "$HUTCH_HOME/other.conf"
assert_eq "$(hutch --json store stats | jq .chunk_size)" 131072 "chunk size from config"

# Every key of the reference is documented and the reference itself loads.
ref=$(hutch-storaged --help-config) || fail "--help-config"
for k in chunk_size dirty_limit pack_size flush_interval log_level tcp_listen workers max_request max_inflight inline_max send_buffer; do
	assert_contains "$ref" "^$k = " "reference lists $k"
done
printf '%s\n' "$ref" >"$HUTCH_HOME/ref.conf"
hutch-storaged --home "$HUTCH_HOME" --config "$HUTCH_HOME/ref.conf" --check-config >/dev/null ||
	fail "the printed reference does not load"
exit 0

#!/bin/bash
# Description: live fork. A counter process in running SRC keeps counting in
# both SRC and DST after `vm fork SRC DST --live`, separately (a reset in one
# does not show in the other); DST has its own hostname and machine-id, and
# SRC kept its own. A hutch-vmd killed during `template warm` leaves nothing
# running once it is back.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch vm create src >/dev/null || fail "vm create src"
hutch vm ssh src 'setsid sh -c "i=0; while :; do i=\$((i + 1)); echo \$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done" \
	</dev/null >/dev/null 2>&1 & echo $! > /tmp/counter.pid' || fail "start the counter"
sleep 2
c0=$(hutch vm ssh src cat /tmp/count)
[ "$c0" -gt 0 ] || fail "the counter does not count ($c0)"
mid_src=$(hutch vm ssh src cat /etc/machine-id)

t0=$(date +%s%N)
hutch vm fork src dst --live >/dev/null || fail "vm fork src dst --live"
echo "live fork took $((($(date +%s%N) - t0) / 1000000)) ms to DST SSH-ready"
grep -E "live fork to dst saved; src was stopped for [0-9]+ ms" "$HUTCH_HOME/vmd.log" | tail -n 1

assert_eq "$(vm_field src state)" running "src after the fork"
assert_eq "$(hutch vm ssh dst hostname)" dst "hostname of dst"
assert_eq "$(hutch vm ssh src hostname)" src "hostname of src"
mid_dst=$(hutch vm ssh dst cat /etc/machine-id)
[ "$mid_dst" != "$mid_src" ] || fail "dst kept src's machine-id"
assert_eq "$(hutch vm ssh src cat /etc/machine-id)" "$mid_src" "src's machine-id"
# Same counter process, carried on in both.
assert_eq "$(hutch vm ssh dst cat /tmp/counter.pid)" "$(hutch vm ssh src cat /tmp/counter.pid)" "counter pid in dst"
d1=$(hutch vm ssh dst cat /tmp/count)
[ "$d1" -ge "$c0" ] || fail "dst's counter went back: $d1 < $c0"
sleep 2
s2=$(hutch vm ssh src cat /tmp/count)
d2=$(hutch vm ssh dst cat /tmp/count)
[ "$d2" -gt "$d1" ] || fail "dst's counter stopped ($d1 -> $d2)"
# Separately: restart src's count; dst's goes on from where it was.
hutch vm ssh src 'echo 0 > /tmp/count; kill $(cat /tmp/counter.pid); echo 1000000 > /tmp/count'
sleep 1
d3=$(hutch vm ssh dst cat /tmp/count)
[ "$d3" -gt "$d2" ] && [ "$d3" -lt 1000000 ] || fail "dst's counter is not its own ($d2 -> $d3)"
assert_eq "$(hutch vm ssh src cat /tmp/count)" 1000000 "src's count after stopping its counter"
echo "counts: before $c0; after: src $s2, dst $d1 -> $d2 -> $d3"

# hutch-vmd killed during `template warm`: the next one stops the hidden
# QEMU it left and removes its directory; the template stays cold.
hutch template warm default >/dev/null 2>&1 &
warm_cli=$!
wait_for 60 test -s "$HUTCH_HOME/vms/.warm-default/run/qemu.pid" || fail "template warm started no QEMU"
hidden=$(cat "$HUTCH_HOME/vms/.warm-default/run/qemu.pid")
kill -9 "$VMD_PID"; wait "$VMD_PID" 2>/dev/null; wait "$warm_cli" 2>/dev/null
kill -0 "$hidden" || fail "the hidden QEMU died with hutch-vmd (nothing left to test)"
start_vmd
gone() { [ ! -e "/proc/$1" ] || grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
wait_for 10 gone "$hidden" || fail "the hidden QEMU of a killed template warm still runs"
[ -e "$HUTCH_HOME/vms/.warm-default" ] && fail "the hidden VM's directory is still there"
hutch template list | grep -Eq '^default .* no ' || { hutch template list >&2; fail "default is not cold"; }
grep -q "a template warm that did not finish" "$HUTCH_HOME/vmd.log" || fail "no log line for the leftover"
exit 0

#!/bin/bash
# Description: hibernate and resume under TCG: a counter process keeps its
# PID and carries on counting, a file in the guest's tmpfs survives, the QEMU
# process is gone and nothing of the VM stays resident while it sleeps, its
# synced disk writes are in the store, and the guest's clock is right within
# 2 s after resume. Also the paused tier (QMP stop/cont), and hibernating the
# same VM a second time.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"
requires nbdcopy --version
requires debugfs -V

start_storaged
start_vmd
build_template
hutch vm create a --memory 256M >/dev/null || fail "vm create a"

# The counter: a detached process writing an increasing number into tmpfs.
hutch vm ssh a 'echo kept-in-tmpfs > /tmp/note; echo on-disk > /root/disk-file; sync;
	setsid sh -c "i=0; while :; do i=\$((i + 1)); echo \$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done" \
		</dev/null >/dev/null 2>&1 & echo $! > /tmp/counter.pid' || fail "start the counter"
sleep 2
cpid=$(hutch vm ssh a cat /tmp/counter.pid) || fail "read the counter's pid"
c1=$(hutch vm ssh a cat /tmp/count) || fail "read the count"
[ "$c1" -gt 0 ] || fail "the counter does not count ($c1)"
qpid=$(vm_field a pid)

# ---- hibernate ----
t0=$(date +%s%N)
hutch vm hibernate a || fail "vm hibernate a"
t1=$(date +%s%N)
echo "hibernate took $(((t1 - t0) / 1000000)) ms"
hutch vm list | grep -Eq '^a +hibernated ' || { hutch vm list >&2; fail "vm list does not show a hibernated"; }
assert_eq "$(vm_field a tier)" hibernated "tier after hibernate"
# Exited (a zombie until its reaper gets to it counts as gone).
gone() { [ ! -e "/proc/$1" ] || grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
wait_for 5 gone "$qpid" || fail "QEMU (pid $qpid) still runs after hibernate"
assert_eq "$(vm_field a pid)" 0 "pid of a hibernated VM"
[ -e "$HUTCH_HOME/vms/a/run/ram" ] && fail "the RAM file is still on the host"
# Nothing resident: no process holds anything of the VM's directory.
for p in /proc/[0-9]*; do
	if ls -l "$p/fd" "$p/map_files" 2>/dev/null | grep -q "$HUTCH_HOME/vms/a/"; then
		fail "process ${p#/proc/} still holds files of the hibernated VM"
	fi
done
hutch image list | grep -q '^vm\.a\.ram\.1 ' || { hutch image list >&2; fail "no RAM image in the store"; }
hutch image list | grep -q '^vm\.a\.state\.1 ' || fail "no device state image in the store"

# The guest's synced disk writes are in the store, not only in QEMU.
qemu-img convert -f raw -O raw "nbd+unix:///vm.a?socket=$HUTCH_HOME/run/nbd.sock" "$HUTCH_HOME/disk.img" ||
	fail "read a's disk from the store"
# The metadata may still be in the ext4 journal only: replay it, as a mount would.
e2fsck -E journal_only -y "$HUTCH_HOME/disk.img" >"$HUTCH_HOME/e2fsck.out" 2>&1
got=$(debugfs -R 'cat /root/disk-file' "$HUTCH_HOME/disk.img" 2>"$HUTCH_HOME/debugfs.err")
[ "$got" = on-disk ] || cat "$HUTCH_HOME/e2fsck.out" "$HUTCH_HOME/debugfs.err" >&2
assert_eq "$got" on-disk "the synced file on the disk image in the store"
rm -f "$HUTCH_HOME/disk.img"

sleep 4	# time the guest's clock must catch up

# ---- resume ----
t0=$(date +%s%N)
hutch vm resume a || fail "vm resume a"
t1=$(date +%s%N)
echo "resume (to SSH answering, clock set) took $(((t1 - t0) / 1000000)) ms"
assert_eq "$(vm_field a tier)" awake "tier after resume"
hutch vm list | grep -Eq '^a +running ' || fail "vm list does not show a running"
kill -0 "$(vm_field a pid)" || fail "no QEMU after resume"

host0=$(date +%s)
guest=$(hutch vm ssh a date +%s) || fail "date in the guest"
host1=$(date +%s)
echo "host clock $host0..$host1, guest $guest"
[ "$guest" -ge $((host0 - 2)) ] && [ "$guest" -le $((host1 + 2)) ] ||
	fail "guest clock $guest is off (host $host0..$host1)"

assert_eq "$(hutch vm ssh a cat /tmp/counter.pid)" "$cpid" "counter pid file"
hutch vm ssh a "kill -0 $cpid" || fail "the counter process $cpid is gone after resume"
c2=$(hutch vm ssh a cat /tmp/count)
sleep 1
c3=$(hutch vm ssh a cat /tmp/count)
echo "count before hibernate $c1, after resume $c2, a second later $c3"
[ "$c2" -gt "$c1" ] || fail "the count did not carry on ($c1 -> $c2)"
[ "$c3" -gt "$c2" ] || fail "the counter stopped after resume ($c2 -> $c3)"
# Not a restarted counter: it went on from where it was, not from 1.
[ "$c2" -ge "$c1" ] || fail "the counter restarted"
assert_eq "$(hutch vm ssh a cat /tmp/note)" kept-in-tmpfs "the tmpfs file after resume"
assert_eq "$(hutch vm ssh a cat /root/disk-file)" on-disk "the disk file after resume"

# ---- a second hibernation, woken by vm ssh ----
hutch vm hibernate a || fail "second hibernate"
hutch image list | grep -q '^vm\.a\.ram\.2 ' || fail "no second RAM image"
hutch image list | grep -q '^vm\.a\.ram\.1 ' && fail "the first RAM image was kept after the second"
assert_eq "$(hutch vm ssh a cat /tmp/note)" kept-in-tmpfs "vm ssh wakes a hibernated VM"
hutch vm ssh a "kill -0 $cpid" || fail "the counter is gone after the second resume"

# ---- paused tier ----
out=$(hutch vm pause a --json) || fail "vm pause a"
hutch vm list | grep -Eq '^a +paused ' || { hutch vm list >&2; fail "vm list does not show a paused"; }
kill -0 "$(vm_field a pid)" || fail "QEMU gone while paused"
out=$(hutch vm resume a --json) || fail "vm resume a (paused)"
assert_eq "$(vm_field a tier)" awake "tier after continuing"
hutch vm ssh a "kill -0 $cpid" || fail "the counter is gone after pause and resume"

# A paused VM stops cleanly (it is continued first), and so does a hibernated one.
hutch vm pause a >/dev/null || fail "pause before stop"
hutch vm stop a || fail "stop a paused VM"
assert_eq "$(vm_field a state)" stopped "state after stopping a paused VM"
grep -q "did not power off" "$HUTCH_HOME/vmd.log" && fail "the paused guest ignored the power button"
hutch vm rm a || fail "vm rm a"
hutch image list | grep -q '^vm\.a\.' && { hutch image list >&2; fail "images of a left after vm rm"; }
exit 0

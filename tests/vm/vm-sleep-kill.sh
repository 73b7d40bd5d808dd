#!/bin/bash
# Description: hutch-vmd killed with kill -9 at random points of hibernate
# and resume, many times: every time, the VM comes back, either still
# running or cleanly resumable, with its processes, tmpfs and disk intact.
. "$(dirname "$0")/../functions.sh"
. "$(dirname "$0")/vm-functions.sh"
requires nbdcopy --version

ROUNDS=${SLEEP_KILL_ROUNDS:-8}
start_storaged
start_vmd
build_template
hutch vm create a --memory 256M >/dev/null || fail "vm create a"
hutch vm ssh a 'echo kept > /tmp/note; echo on-disk > /root/disk-file; sync;
	setsid sh -c "i=0; while :; do i=\$((i + 1)); echo \$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done" \
		</dev/null >/dev/null 2>&1 & echo $! > /tmp/counter.pid' || fail "start the counter"
cpid=$(hutch vm ssh a cat /tmp/counter.pid) || fail "counter pid"
last=0

for round in $(seq "$ROUNDS"); do
	tier=$(vm_field a tier)
	if [ "$tier" = hibernated ]; then op=resume; max=4000; else op=hibernate; max=1200; fi
	delay=$((RANDOM % max))
	hutch vm "$op" a >/dev/null 2>&1 &
	cli=$!
	sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
	kill -9 "$VMD_PID"
	wait "$VMD_PID" 2>/dev/null
	wait "$cli" 2>/dev/null
	start_vmd
	tier=$(vm_field a tier) || fail "round $round: vm info after the restart"
	state=$(vm_field a state)
	echo "round $round: $op killed after ${delay} ms: $state, $tier"
	case "$state/$tier" in
	running/awake | stopped/hibernated) ;;
	*) hutch vm list >&2; fail "round $round: VM a is $state/$tier after a killed $op" ;;
	esac
	# Either way it comes back with everything.
	if [ "$tier" = hibernated ]; then
		hutch vm resume a >/dev/null || fail "round $round: resume after the restart"
	fi
	hutch vm ssh a "kill -0 $cpid" || {
		hutch vm ssh a 'ps; cat /tmp/count /tmp/note /proc/uptime' >&2
		fail "round $round: the counter process is gone"
	}
	c=$(hutch vm ssh a cat /tmp/count) || fail "round $round: read the count"
	[ "$c" -gt "$last" ] || fail "round $round: count $c, was $last: it restarted or stopped"
	last=$c
	assert_eq "$(hutch vm ssh a cat /tmp/note)" kept "round $round: tmpfs file"
	assert_eq "$(hutch vm ssh a cat /root/disk-file)" on-disk "round $round: disk file"
	# Leave it hibernated half of the time, to kill resumes too.
	if [ $((RANDOM % 2)) = 0 ]; then
		hutch vm hibernate a >/dev/null || fail "round $round: hibernate"
	fi
done
# No stray hibernation images: at most the current generation.
n=$(hutch image list | grep -c '^vm\.a\.ram\.')
[ "$n" -le 1 ] || { hutch image list >&2; fail "$n RAM images of a in the store"; }
exit 0

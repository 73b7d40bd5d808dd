#!/bin/bash
# Description: hutch-vmd killed with kill -9 and started again re-adopts the
# running VMs (still listed, reachable, stoppable); a QEMU that dies is
# noticed and shown as crashed, also when it died while hutch-vmd was down.
# Runs with [vmd] accel = auto: the accelerator is chosen by a probe, and
# `vm info` says which and why.
. "$(dirname "$0")/../functions.sh"
VM_ACCEL=auto
. "$(dirname "$0")/vm-functions.sh"

start_storaged
start_vmd
build_template
hutch vm create a >/dev/null || fail "vm create a"
hutch vm create b >/dev/null || fail "vm create b"
pid_a=$(vm_field a pid)
accel=$(vm_field a accel)
reason=$(vm_field a accel_reason)
echo "accelerator: $accel ($reason)"
case "$accel" in
kvm) assert_contains "$reason" "probe kernel booted under KVM" "why KVM" ;;
tcg) [ -n "$reason" ] || fail "no reason given for TCG" ;;
*) fail "accelerator '$accel'" ;;
esac
[ -w /dev/kvm ] || assert_eq "$accel" tcg "accelerator without a usable /dev/kvm"
hutch vm info a | grep -q "^accel: *$accel" || fail "vm info does not show the accelerator"

kill -9 "$VMD_PID"; wait "$VMD_PID" 2>/dev/null
kill -0 "$pid_a" || fail "a's QEMU died with hutch-vmd"
# b's QEMU dies while nobody watches.
kill -9 "$(cat "$HUTCH_HOME/vms/b/run/qemu.pid")" || fail "kill b's QEMU"
start_vmd

hutch vm list | grep -Eq '^a +running' || { hutch vm list >&2; fail "a not listed as running after the restart"; }
assert_eq "$(vm_field a pid)" "$pid_a" "a's QEMU pid after re-adoption"
assert_eq "$(hutch vm ssh a hostname)" a "ssh into the re-adopted VM"
hutch vm list | grep -Eq '^b +crashed' || { hutch vm list >&2; fail "b not shown as crashed"; }

# A crash while hutch-vmd runs is noticed too.
kill -9 "$pid_a"
wait_for 10 sh -c "hutch vm list | grep -Eq '^a +crashed'" || { hutch vm list >&2; fail "a's crash not noticed"; }
grep -q "VM a: QEMU (pid $pid_a) exited unexpectedly" "$HUTCH_HOME/vmd.log" || fail "a's crash not logged"

# Crashed VMs start again, and stop cleanly (ACPI).
hutch vm start a >/dev/null || fail "start a after its crash"
hutch vm stop a || fail "stop a"
assert_eq "$(vm_field a state)" stopped "a after stop"
grep -q "did not power off" "$HUTCH_HOME/vmd.log" && fail "the guest ignored the ACPI power button"
exit 0

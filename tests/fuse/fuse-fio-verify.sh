#!/bin/bash
# Description: fio with --verify=crc32c, parallel jobs, on a file of the mount.
. "$(dirname "$0")/fuse-functions.sh"
requires fio --version
requires_fuse
start_storaged
start_fuse

cd "$HUTCH_HOME" || fail "cd"   # fio leaves verify state files in the working folder
truncate -s 256M "$MNT/images/fio" || fail "create image"
for rw in randwrite write; do
	fio --name=verify --filename="$MNT/images/fio" --rw=$rw --bsrange=4k-1m \
	    --size=256M --numjobs=1 --iodepth=8 --ioengine=libaio --direct=1 \
	    --verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --randrepeat=0 \
	    >"$HUTCH_HOME/fio-$rw.log" 2>&1 || { cat "$HUTCH_HOME/fio-$rw.log" >&2; fail "fio $rw verify"; }
	grep -q "verify" "$HUTCH_HOME/fio-$rw.log" || true
done
# Several writers at once, each on its own part of the file.
fio --name=par --filename="$MNT/images/fio" --rw=randwrite --bs=64k --size=64M \
    --offset_increment=64M --numjobs=4 --iodepth=4 --ioengine=libaio --direct=1 \
    --verify=crc32c --verify_fatal=1 --verify_state_save=0 --group_reporting \
    >"$HUTCH_HOME/fio-par.log" 2>&1 || { cat "$HUTCH_HOME/fio-par.log" >&2; fail "fio parallel verify"; }
# And the same bytes over NBD: verify-only pass from the NBD side.
fio --name=par --ioengine=nbd --uri="$(nbd_uri fio)" --rw=randwrite --bs=64k --size=64M \
    --offset_increment=64M --numjobs=4 --iodepth=4 --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
    --verify_only --group_reporting \
    >"$HUTCH_HOME/fio-nbd.log" 2>&1 || { cat "$HUTCH_HOME/fio-nbd.log" >&2; fail "NBD side does not verify what the mount wrote"; }
echo ok

#!/bin/bash
# Description: bad input gets a clear errno and leaves the store unchanged:
# writes to snapshots (EROFS), invalid names (EINVAL), existing names
# (EEXIST), snapshot into another image's folder (EXDEV), mkdir and other
# shapes that make no sense (EPERM).
. "$(dirname "$0")/fuse-functions.sh"
requires_fuse
start_storaged
start_fuse
I="$MNT/images"

truncate -s 4M "$I/a" || fail "create a"
truncate -s 8M "$I/b" || fail "create b"
ln "$I/a" "$I/a.snap/s" || fail "snapshot a@s"
dd if=/dev/urandom of="$I/a" bs=1M count=1 conv=notrunc,fsync status=none
sum_a=$(md5sum <"$I/a"); sum_b=$(md5sum <"$I/b"); sum_s=$(md5sum <"$I/a.snap/s")
state() { image_names; }
before=$(state)

# Snapshots are read-only.
expect_errno EROFS "os.open('$I/a.snap/s', os.O_RDWR)" "open a snapshot read-write"
expect_errno EROFS "os.open('$I/a.snap/new', os.O_CREAT|os.O_WRONLY)" "create a file in a .snap folder"
expect_errno EROFS "os.truncate('$I/a.snap/s', 1)" "truncate a snapshot"
# Invalid names.
expect_errno EINVAL "os.close(os.open('$I/-bad', os.O_CREAT|os.O_WRONLY))" "create '-bad'"
expect_errno EINVAL "os.close(os.open('$I/x.snap', os.O_CREAT|os.O_WRONLY))" "create a name ending in .snap"
expect_errno EINVAL "os.close(os.open('$I/sp ace', os.O_CREAT|os.O_WRONLY))" "create a name with a space"
expect_errno EINVAL "os.link('$I/a', '$I/a.snap/bad@name')" "snapshot with '@' in its name"
expect_errno EINVAL "os.rename('$I/a', '$I/b@c')" "rename to an invalid name"
expect_errno ENAMETOOLONG "os.close(os.open('$I/' + 'n'*300, os.O_CREAT|os.O_WRONLY))" "create a 300-byte name"
# Existing names.
expect_errno EEXIST "os.link('$I/a', '$I/a.snap/s')" "snapshot onto an existing snapshot"
expect_errno EEXIST "os.rename('$I/a', '$I/b')" "mv onto an existing image"
expect_errno EEXIST "os.open('$I/b', os.O_WRONLY|os.O_TRUNC)" "cp/dd onto an existing image (O_TRUNC)"
expect_errno EEXIST "os.open('$I/b', os.O_WRONLY|os.O_CREAT|os.O_EXCL)" "O_EXCL create of an existing image"
expect_fail cp "$I/a" "$I/b"
assert_contains "$EXPECT_ERR" "File exists" "cp onto an existing image"
# Snapshots belong to their own image.
expect_errno EXDEV "os.link('$I/a', '$I/b.snap/s')" "snapshot a into b's folder"
expect_errno EPERM "os.link('$I/a', '$I/c')" "hard link between images"
expect_errno EPERM "os.link('$I/a.snap/s', '$I/a.snap/t')" "snapshot of a snapshot"
# Shapes that make no sense.
expect_errno EPERM "os.mkdir('$I/d')" "mkdir in images/"
expect_errno EPERM "os.mkdir('$MNT/top')" "mkdir at the top"
expect_errno EPERM "os.mkdir('$I/a.snap/d')" "mkdir in a .snap folder"
expect_errno EPERM "os.symlink('a', '$I/l')" "symlink"
expect_errno EPERM "os.rename('$I/a.snap/s', '$I/a.snap/t')" "rename a snapshot"
expect_errno EPERM "os.rename('$I/a', '$I/a.snap/t')" "move an image into a .snap folder"
expect_errno EPERM "os.close(os.open('$MNT/f', os.O_CREAT|os.O_WRONLY))" "create at the top"
expect_errno ENOTEMPTY "os.rmdir('$I/a.snap')" "rmdir a .snap folder with snapshots"
expect_errno EPERM "os.rmdir('$MNT/images')" "rmdir images/"
expect_errno EISDIR "os.open('$I/a.snap', os.O_WRONLY)" "open a .snap folder for writing"
expect_errno ENOENT "os.stat('$I/nope')" "stat a missing image"
expect_errno ENOENT "os.link('$I/nope', '$I/nope.snap/x')" "snapshot of a missing image"

after=$(state)
assert_eq "$after" "$before" "the store's heads after bad input"
assert_eq "$(md5sum <"$I/a")" "$sum_a" "a's data after bad input"
assert_eq "$(md5sum <"$I/b")" "$sum_b" "b's data after bad input"
assert_eq "$(md5sum <"$I/a.snap/s")" "$sum_s" "a@s's data after bad input"
echo ok

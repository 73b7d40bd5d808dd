/*
 * Which local user may open which NBD export (the VM blast radius).
 *
 * Connections over the unix socket carry the peer's uid (SO_PEERCRED).
 * root, hutch-storaged's own uid and group hutch may open every export. Any other uid
 * may open only the exports listed for it in $HUTCH_HOME/nbd-acl, one
 * "UID EXPORT" per line ('#' starts a comment), which hutch-vmd writes:
 * each VM's QEMU runs as its own uid and may open its own disk only, not
 * another VM's nor a template. The file is read at every check, so it
 * holds across restarts of either daemon. TCP peers (uid -1) are not
 * checked here: [nbd] tcp_listen is documented as unauthenticated.
 */
#ifndef HUTCH_STORAGED_ACL_H
#define HUTCH_STORAGED_ACL_H

#include <stdbool.h>
#include <sys/socket.h>

/* ACL_PATH is $HUTCH_HOME/nbd-acl. True when PEER may open EXPORT
 * (NAME or NAME@SNAP: a snapshot is allowed when its image is). */
bool storaged_acl_allows(const char *acl_path, const struct ucred *peer, const char *export);

#endif

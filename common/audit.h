/*
 * The audit log: $HUTCH_HOME/audit/log.jsonl, append-only JSON lines.
 *
 * Every record is one JSON object on one line. The writer adds `seq`
 * (1, 2, ...), `time` (UTC, ISO 8601 with milliseconds) and `prev`: the
 * SHA-256 of the previous line's bytes (64 zeros for the first record),
 * so changing, removing or reordering a line breaks the chain at a place
 * `audit_verify()` names. $HUTCH_HOME/audit/head holds the seq and hash
 * of the last record, so a log cut short at the end is noticed too.
 *
 * SHA-256 rather than the store's XXH3-128: XXH3 is not collision
 * resistant, so someone able to edit the log could craft a changed record
 * with the same hash and keep the chain intact.
 *
 * Several processes (hutch-storaged, hutch-vmd, every hutch-shell) append
 * to the same file; an exclusive flock(2) on it makes "read the last
 * record, write the next" atomic. Functions return 0 or a negative errno.
 */
#ifndef HUTCH_AUDIT_H
#define HUTCH_AUDIT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_HASH_HEX 64
/* A string argument kept in a record is cut to this many bytes. */
#define AUDIT_MAX_STRING 4096

/* Appends REC (a JSON object; consumed). On success, when SEQ is not NULL,
 * stores the record's seq there. */
int audit_append(const char *home, json_object *rec, uint64_t *seq);

/*
 * One "control" record for a request on a control socket: the daemon, the
 * op, its arguments and the caller's uid, user name and pid read with
 * SO_PEERCRED on FD. Queries that change nothing (ping, *.list, *.info,
 * store.stats) are not recorded. HOME is the state directory.
 */
int audit_control(const char *home, const char *daemon, int fd, const char *op,
		  json_object *req);
/* The same, with the home taken from a control socket's path
 * (HOME/run/NAME.sock), for servers that know only their socket. */
int audit_control_sock(const char *sock_path, const char *daemon, int fd, const char *op,
		       json_object *req);

/* Current time as the log writes it: "2026-01-31T12:34:56.789Z". */
void audit_time_now(char *buf, size_t sz);
/* HOME/audit/REL into BUF; -ENAMETOOLONG when it does not fit. */
int audit_path(char *buf, size_t sz, const char *home, const char *rel);
/* Creates HOME/audit (group hutch, setgid, when that group exists). */
int audit_mkdir(const char *home);

struct audit_verify_result {
	uint64_t records;	/* records read */
	uint64_t bad;		/* the first broken record's line number (1-based); 0 if none */
	char why[512];		/* what is wrong with it */
	char last_hash[AUDIT_HASH_HEX + 1];	/* hash of the last record */
};
/* Checks the chain and the head. Returns 0 (look at res->bad) or -errno
 * when the log cannot be read at all. A missing log is an empty one. */
int audit_verify(const char *home, struct audit_verify_result *res);

/* Calls FN for every record that parses, in order; FN returning non-zero
 * stops the walk and is returned. */
typedef int (*audit_record_fn)(void *opaque, json_object *rec);
int audit_foreach(const char *home, audit_record_fn fn, void *opaque);

#endif

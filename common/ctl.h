/*
 * The control protocol (docs/control.md): one JSON object per line over a
 * unix stream socket, request then reply. Shared by hutch-storaged's
 * control server, the `hutch` CLI, and the other daemons.
 *
 * Client: ctl_connect() + ctl_call(). Server: a ctl_reader per connection,
 * ctl_reply_ok()/ctl_reply_error()/ctl_send_event() to answer.
 */
#ifndef HUTCH_CTL_H
#define HUTCH_CTL_H

#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A request line may not be longer than this (newline excluded). */
#define CTL_MAX_LINE (1u << 20)
/* Replies can be longer (a list of thousands of images); clients accept this much. */
#define CTL_MAX_REPLY (64u << 20)

/* ---- client --------------------------------------------------------- */

/* Connects to the unix socket PATH. Returns the fd, or -ENOENT / -ECONNREFUSED
 * when no daemon listens there (the caller says how to start one). */
int ctl_connect(const char *path);

/* Called for every non-final line (progress, bad_chunk, ...) of a reply. */
typedef void (*ctl_event_fn)(void *opaque, json_object *event);

/*
 * Sends REQ (not consumed) and waits for the final reply. On success
 * (`"ok":true`) stores the reply in *reply (caller puts it) and returns 0.
 * An error reply returns its errno negated and copies its message into
 * ERR; transport failures return -errno with a message too. *reply is
 * untouched on failure. EVENT may be NULL.
 */
int ctl_call(int fd, json_object *req, json_object **reply, ctl_event_fn event, void *opaque,
	     char *err, size_t errsz);

/* ---- server --------------------------------------------------------- */

struct ctl_reader {
	int fd;
	char *buf;
	size_t start, len, cap;	/* unread bytes are buf[start, len) */
	size_t max;		/* longest line accepted; CTL_MAX_LINE after init */
	bool discarding;	/* skipping the rest of an over-long line */
};

void ctl_reader_init(struct ctl_reader *r, int fd);
void ctl_reader_free(struct ctl_reader *r);
/*
 * Reads the next line. Returns 1 with *line NUL-terminated (newline
 * stripped; valid until the next call), 0 at end of stream, -E2BIG for a
 * line over r->max (its bytes are skipped, the next call reads the
 * line after it), or another -errno.
 */
int ctl_read_line(struct ctl_reader *r, char **line, size_t *len);

/* Parses LINE into a JSON object with a string "op". On error returns
 * -EINVAL and an explanation in WHY. */
int ctl_parse_request(const char *line, size_t len, json_object **req, const char **op,
		      char *why, size_t whysz);

/* Writes OBJ as one line. Never raises SIGPIPE. */
int ctl_send(int fd, json_object *obj);
/* {"ok":true, ...MEMBERS}. MEMBERS (an object, may be NULL) is consumed. */
int ctl_reply_ok(int fd, json_object *members);
/* {"ok":false,"errno":"ENAME","error":"..."} for a negative or positive errno. */
int ctl_reply_error(int fd, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* {"KIND": BODY} as a non-final line. BODY is consumed. */
int ctl_send_event(int fd, const char *kind, json_object *body);
int ctl_send_progress(int fd, uint64_t done, uint64_t total);

/* The peer's pid, uid and gid (SO_PEERCRED). */
int ctl_peer_creds(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/* ---- argument helpers (server side) ---------------------------------
 * Each returns -EINVAL with a message in WHY when the member is missing
 * (unless optional) or has the wrong type. */

int ctl_arg_string(json_object *req, const char *key, const char **out, char *why, size_t whysz);
int ctl_arg_u64(json_object *req, const char *key, uint64_t *out, char *why, size_t whysz);
/* Leaves *out alone when the member is absent. */
int ctl_arg_bool_opt(json_object *req, const char *key, bool *out, char *why, size_t whysz);

/* "ENOENT" for ENOENT (sign ignored); "EIO" for unknown values. */
const char *ctl_errno_name(int err);
/* ENOENT for "ENOENT"; EIO when unknown. */
int ctl_errno_from_name(const char *name);

#endif

/*
 * A small QMP client: one connection to one QEMU's monitor socket.
 *
 * Not thread-safe: a connection belongs to whoever opened it. Commands are
 * synchronous with a timeout; events that arrive while waiting for a reply
 * are handed to the event callback (if any) in arrival order.
 */
#ifndef HUTCH_VMD_QMP_H
#define HUTCH_VMD_QMP_H

#include <json-c/json.h>
#include <stddef.h>

struct qmp;

/* Called with the event's name and the whole event object (borrowed). */
typedef void (*qmp_event_fn)(void *opaque, const char *event, json_object *ev);

/* Connects to the unix socket PATH, reads the greeting and negotiates
 * capabilities. -ETIMEDOUT when QEMU does not answer within timeout_ms. */
int qmp_connect(const char *path, int timeout_ms, struct qmp **out);
void qmp_close(struct qmp *q);
void qmp_set_event_handler(struct qmp *q, qmp_event_fn fn, void *opaque);

/* Runs CMD with ARGS (borrowed; may be NULL). On success *ret (may be NULL)
 * gets a new reference to the "return" member. A QMP error gives -EIO with
 * its description in err; a closed socket -ECONNRESET; no reply in time
 * -ETIMEDOUT. */
int qmp_execute(struct qmp *q, const char *cmd, json_object *args, int timeout_ms,
		json_object **ret, char *err, size_t errsz);

/* Waits for the event NAME (any event when NULL); *ev (may be NULL) gets a
 * new reference. Events already seen but not yet waited for count. */
int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, json_object **ev);

#endif

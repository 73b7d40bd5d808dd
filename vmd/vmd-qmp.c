/* QMP client: line-framed JSON over a unix socket, with timeouts. */
#include "vmd-qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

#define QMP_MAX_LINE (4u << 20)	/* a reply larger than this is a broken peer */
#define QMP_MAX_PENDING 256	/* queued events nobody waited for */

struct qmp {
	int fd;
	unsigned long next_id;
	char *buf;
	size_t len, cap;
	qmp_event_fn event_fn;
	void *event_opaque;
	json_object *pending[QMP_MAX_PENDING];	/* events not yet consumed by wait */
	size_t npending;
};

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = now_ns();

	if (now >= deadline)
		return 0;
	return (int)((deadline - now) / 1000000u) + 1;
}

/* Reads one complete line (without the newline) into a new json object. */
static int qmp_read_obj(struct qmp *q, uint64_t deadline, json_object **out)
{
	for (;;) {
		char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;

		if (nl) {
			size_t linelen = (size_t)(nl - q->buf);
			json_object *o;

			*nl = '\0';
			o = json_tokener_parse(q->buf);
			memmove(q->buf, nl + 1, q->len - linelen - 1);
			q->len -= linelen + 1;
			if (!o)
				continue;	/* not JSON: skip it rather than stall */
			*out = o;
			return 0;
		}
		if (q->len + 4096 > q->cap) {
			size_t ncap = q->cap ? q->cap * 2 : 16384;
			char *nb;

			if (ncap > QMP_MAX_LINE)
				return -EMSGSIZE;
			nb = realloc(q->buf, ncap);
			if (!nb)
				return -ENOMEM;
			q->buf = nb;
			q->cap = ncap;
		}
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		int ms = remaining_ms(deadline);
		int r;

		if (ms == 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len - 1);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		q->len += (size_t)n;
	}
}

static void qmp_queue_event(struct qmp *q, json_object *ev)
{
	json_object *name;

	if (q->event_fn && json_object_object_get_ex(ev, "event", &name))
		q->event_fn(q->event_opaque, json_object_get_string(name), ev);
	if (q->npending == QMP_MAX_PENDING) {
		json_object_put(q->pending[0]);
		memmove(q->pending, q->pending + 1, sizeof(q->pending[0]) * (QMP_MAX_PENDING - 1));
		q->npending--;
	}
	q->pending[q->npending++] = ev;
}

/* One line; MSG_NOSIGNAL: a QEMU that went away is -EPIPE, not SIGPIPE. */
static int qmp_send(struct qmp *q, json_object *msg)
{
	const char *s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s), off = 0;
	char *line = malloc(len + 1);

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len++] = '\n';
	while (off < len) {
		ssize_t n = send(q->fd, line + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			free(line);
			return -e;
		}
		off += (size_t)n;
	}
	free(line);
	return 0;
}

int qmp_execute(struct qmp *q, const char *cmd, json_object *args, int timeout_ms,
		json_object **ret, char *err, size_t errsz)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	unsigned long id = ++q->next_id;
	json_object *msg = json_object_new_object();
	int r;

	json_object_object_add(msg, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(msg, "arguments", json_object_get(args));
	json_object_object_add(msg, "id", json_object_new_uint64(id));
	r = qmp_send(q, msg);
	json_object_put(msg);
	if (r < 0)
		return r;

	for (;;) {
		json_object *o, *v;

		r = qmp_read_obj(q, deadline, &o);
		if (r < 0)
			return r;
		if (json_object_object_get_ex(o, "event", NULL)) {
			qmp_queue_event(q, o);
			continue;
		}
		if (!json_object_object_get_ex(o, "id", &v) || json_object_get_uint64(v) != id) {
			json_object_put(o);	/* a reply to a command that timed out earlier */
			continue;
		}
		if (json_object_object_get_ex(o, "error", &v)) {
			json_object *desc;

			if (err && errsz)
				snprintf(err, errsz, "%s",
					 json_object_object_get_ex(v, "desc", &desc) ?
					 json_object_get_string(desc) : "QMP error");
			json_object_put(o);
			return -EIO;
		}
		if (ret)
			*ret = json_object_object_get_ex(o, "return", &v) ? json_object_get(v) : NULL;
		json_object_put(o);
		return 0;
	}
}

int qmp_wait_event(struct qmp *q, const char *name, int timeout_ms, json_object **ev)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		for (size_t i = 0; i < q->npending; i++) {
			json_object *n;
			json_object *e = q->pending[i];

			if (name && (!json_object_object_get_ex(e, "event", &n) ||
				     strcmp(json_object_get_string(n), name) != 0))
				continue;
			memmove(q->pending + i, q->pending + i + 1,
				sizeof(q->pending[0]) * (q->npending - i - 1));
			q->npending--;
			if (ev)
				*ev = e;
			else
				json_object_put(e);
			return 0;
		}
		json_object *o;
		int r = qmp_read_obj(q, deadline, &o);

		if (r < 0)
			return r;
		if (json_object_object_get_ex(o, "event", NULL))
			qmp_queue_event(q, o);
		else
			json_object_put(o);
	}
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	_cleanup_close_ int fd = -1;
	struct qmp *q;
	json_object *greeting;
	int r;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -errno;

	q = calloc(1, sizeof *q);
	if (!q)
		return -ENOMEM;
	q->fd = TAKE_FD(fd);
	r = qmp_read_obj(q, deadline, &greeting);
	if (r < 0)
		goto out_close;
	if (!json_object_object_get_ex(greeting, "QMP", NULL)) {
		json_object_put(greeting);
		r = -EPROTO;
		goto out_close;
	}
	json_object_put(greeting);
	r = qmp_execute(q, "qmp_capabilities", NULL, remaining_ms(deadline), NULL, NULL, 0);
	if (r < 0)
		goto out_close;
	*out = q;
	return 0;

out_close:
	qmp_close(q);
	return r;
}

void qmp_set_event_handler(struct qmp *q, qmp_event_fn fn, void *opaque)
{
	q->event_fn = fn;
	q->event_opaque = opaque;
}

void qmp_close(struct qmp *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->npending; i++)
		json_object_put(q->pending[i]);
	if (q->fd >= 0)
		close(q->fd);
	free(q->buf);
	free(q);
}

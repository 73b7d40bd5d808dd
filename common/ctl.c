#include "ctl.h"
#include "cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- errno names ------------------------------------------------------ */

const char *ctl_errno_name(int err)
{
	const char *n;

	if (err < 0)
		err = -err;
	n = strerrorname_np(err);
	return n ? n : "EIO";
}

int ctl_errno_from_name(const char *name)
{
	for (int e = 1; e < 200; e++) {
		const char *n = strerrorname_np(e);

		if (n && strcmp(n, name) == 0)
			return e;
	}
	return EIO;
}

/* ---- sending ---------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t r = send(fd, p, len, MSG_NOSIGNAL);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int ctl_send(int fd, json_object *obj)
{
	size_t len;
	const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
	_cleanup_free_ char *line = malloc(len + 1);

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len] = '\n';
	return send_all(fd, line, len + 1);
}

int ctl_reply_ok(int fd, json_object *members)
{
	json_object *o = members ? members : json_object_new_object();
	int r;

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	r = ctl_send(fd, o);
	json_object_put(o);
	return r;
}

int ctl_reply_error(int fd, int err, const char *fmt, ...)
{
	json_object *o = json_object_new_object();
	char msg[1024];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "errno", json_object_new_string(ctl_errno_name(err)));
	json_object_object_add(o, "error", json_object_new_string(msg));
	r = ctl_send(fd, o);
	json_object_put(o);
	return r;
}

int ctl_send_event(int fd, const char *kind, json_object *body)
{
	json_object *o = json_object_new_object();
	int r;

	json_object_object_add(o, kind, body);
	r = ctl_send(fd, o);
	json_object_put(o);
	return r;
}

int ctl_send_progress(int fd, uint64_t done, uint64_t total)
{
	json_object *p = json_object_new_object();

	json_object_object_add(p, "done", json_object_new_uint64(done));
	json_object_object_add(p, "total", json_object_new_uint64(total));
	return ctl_send_event(fd, "progress", p);
}

/* ---- reading lines ---------------------------------------------------- */

void ctl_reader_init(struct ctl_reader *r, int fd)
{
	memset(r, 0, sizeof *r);
	r->fd = fd;
	r->max = CTL_MAX_LINE;
}

void ctl_reader_free(struct ctl_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
	r->start = r->len = r->cap = 0;
}

int ctl_read_line(struct ctl_reader *r, char **line, size_t *len)
{
	size_t scanned = 0;	/* bytes after start already known to hold no newline */

	for (;;) {
		char *nl = r->len > r->start + scanned
			? memchr(r->buf + r->start + scanned, '\n', r->len - r->start - scanned)
			: NULL;
		ssize_t n;

		if (nl) {
			char *l = r->buf + r->start;
			size_t ll = (size_t)(nl - l);

			r->start += ll + 1;
			if (r->discarding) {
				r->discarding = false;
				return -E2BIG;
			}
			*nl = '\0';
			if (ll && l[ll - 1] == '\r')
				l[--ll] = '\0';
			*line = l;
			*len = ll;
			return 1;
		}
		scanned = r->len - r->start;

		/* Enforce the cap: drop what we have and skip to the next newline. */
		if (scanned > r->max) {
			r->discarding = true;
			r->start = r->len = 0;
			scanned = 0;
		}

		/* Move the unread bytes to the front, grow if full. */
		if (r->start) {
			memmove(r->buf, r->buf + r->start, r->len - r->start);
			r->len -= r->start;
			r->start = 0;
		}
		if (r->len == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 4096;
			char *b;

			if (cap > r->max + 4096)
				cap = r->max + 4096;
			b = realloc(r->buf, cap + 1);
			if (!b)
				return -ENOMEM;
			r->buf = b;
			r->cap = cap;
		}
		n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			/* A last line without newline still counts. */
			if (r->len > r->start && !r->discarding) {
				char *l = r->buf + r->start;
				size_t ll = r->len - r->start;

				l[ll] = '\0';
				r->start = r->len;
				*line = l;
				*len = ll;
				return 1;
			}
			if (r->discarding) {
				/* Report the cut line once, drop its tail; the next
				 * call sees the end. */
				r->discarding = false;
				r->start = r->len = 0;
				return -E2BIG;
			}
			return 0;
		}
		r->len += (size_t)n;
	}
}

int ctl_parse_request(const char *line, size_t len, json_object **req, const char **op,
		      char *why, size_t whysz)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;
	json_object *v;
	enum json_tokener_error e;

	if (!tok) {
		snprintf(why, whysz, "out of memory");
		return -ENOMEM;
	}
	o = json_tokener_parse_ex(tok, line, (int)len);
	e = json_tokener_get_error(tok);
	if (!o || e != json_tokener_success) {
		snprintf(why, whysz, "malformed JSON: %s",
			 o ? "trailing data" : json_tokener_error_desc(e == json_tokener_continue
								      ? json_tokener_error_parse_eof : e));
		json_object_put(o);
		json_tokener_free(tok);
		return -EINVAL;
	}
	/* Anything but whitespace after the object is an error. */
	for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') {
			snprintf(why, whysz, "malformed JSON: trailing data after the object");
			json_object_put(o);
			json_tokener_free(tok);
			return -EINVAL;
		}
	}
	json_tokener_free(tok);
	if (!json_object_is_type(o, json_type_object)) {
		snprintf(why, whysz, "a request must be a JSON object");
		json_object_put(o);
		return -EINVAL;
	}
	if (!json_object_object_get_ex(o, "op", &v) || !json_object_is_type(v, json_type_string)) {
		snprintf(why, whysz, "a request needs a string member \"op\"");
		json_object_put(o);
		return -EINVAL;
	}
	*op = json_object_get_string(v);
	*req = o;
	return 0;
}

/* ---- peers ------------------------------------------------------------ */

int ctl_peer_creds(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred uc;
	socklen_t l = sizeof uc;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0)
		return -errno;
	if (pid)
		*pid = uc.pid;
	if (uid)
		*uid = uc.uid;
	if (gid)
		*gid = uc.gid;
	return 0;
}

/* ---- arguments -------------------------------------------------------- */

int ctl_arg_string(json_object *req, const char *key, const char **out, char *why, size_t whysz)
{
	json_object *v;

	if (!json_object_object_get_ex(req, key, &v)) {
		snprintf(why, whysz, "missing argument \"%s\"", key);
		return -EINVAL;
	}
	if (!json_object_is_type(v, json_type_string)) {
		snprintf(why, whysz, "argument \"%s\" must be a string", key);
		return -EINVAL;
	}
	*out = json_object_get_string(v);
	return 0;
}

int ctl_arg_u64(json_object *req, const char *key, uint64_t *out, char *why, size_t whysz)
{
	json_object *v;

	if (!json_object_object_get_ex(req, key, &v)) {
		snprintf(why, whysz, "missing argument \"%s\"", key);
		return -EINVAL;
	}
	/* json-c keeps integers as int64 or uint64; a negative one is rejected. */
	if (!json_object_is_type(v, json_type_int) ||
	    (json_object_get_int64(v) < 0 && json_object_get_uint64(v) == 0)) {
		snprintf(why, whysz, "argument \"%s\" must be a non-negative integer", key);
		return -EINVAL;
	}
	*out = json_object_get_uint64(v);
	return 0;
}

int ctl_arg_bool_opt(json_object *req, const char *key, bool *out, char *why, size_t whysz)
{
	json_object *v;

	if (!json_object_object_get_ex(req, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_boolean)) {
		snprintf(why, whysz, "argument \"%s\" must be true or false", key);
		return -EINVAL;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

/* ---- client ----------------------------------------------------------- */

int ctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -errno;
	return TAKE_FD(fd);
}

int ctl_call(int fd, json_object *req, json_object **reply, ctl_event_fn event, void *opaque,
	     char *err, size_t errsz)
{
	struct ctl_reader rd;
	int r;

	r = ctl_send(fd, req);
	if (r < 0) {
		snprintf(err, errsz, "cannot send request: %s", strerror(-r));
		return r;
	}
	/* The server sends nothing after the final reply unless asked, so a
	 * reader local to this call loses no bytes. */
	ctl_reader_init(&rd, fd);
	rd.max = CTL_MAX_REPLY;
	for (;;) {
		char *line;
		size_t len;
		json_object *o, *ok;

		r = ctl_read_line(&rd, &line, &len);
		if (r == 0) {
			snprintf(err, errsz, "the daemon closed the connection without a reply");
			r = -ECONNRESET;
			break;
		}
		if (r < 0) {
			snprintf(err, errsz, "cannot read reply: %s", strerror(-r));
			break;
		}
		o = json_tokener_parse(line);
		if (!o || !json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			snprintf(err, errsz, "the daemon sent a malformed reply");
			r = -EPROTO;
			break;
		}
		if (!json_object_object_get_ex(o, "ok", &ok)) {
			if (event)
				event(opaque, o);
			json_object_put(o);
			continue;
		}
		if (json_object_get_boolean(ok)) {
			*reply = o;
			r = 0;
			break;
		}
		{
			json_object *en, *msg;
			const char *m = "unknown error";

			r = -EIO;
			if (json_object_object_get_ex(o, "errno", &en))
				r = -ctl_errno_from_name(json_object_get_string(en));
			if (json_object_object_get_ex(o, "error", &msg))
				m = json_object_get_string(msg);
			snprintf(err, errsz, "%s", m);
			json_object_put(o);
			break;
		}
	}
	ctl_reader_free(&rd);
	return r;
}

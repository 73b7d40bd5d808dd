/*
 * The control socket server.
 *
 * Threads: one acceptor, plus one thread per connection that reads a
 * request line, runs the operation against the store (whose functions are
 * thread-safe) and writes the reply. Connections are kept in a list under
 * `lock`; finished ones are reaped by the acceptor, the rest at stop.
 * Nothing a client sends can stop the daemon: every problem with a request
 * becomes an error reply and the connection stays usable.
 */
#include "storaged-control.h"
#include "store.h"

#include "audit.h"
#include "cleanup.h"
#include "ctl.h"
#include "log.h"
#include "util.h"
#include "hutch-version.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
	struct storaged_control *ctl;
	int fd;
	pid_t pid;
	uid_t uid;
	pthread_t thread;
	bool done;		/* protected by ctl->lock */
	struct conn *next;	/* protected by ctl->lock */
};

struct storaged_control {
	struct store *store;
	char path[108];
	int listen_fd;
	int stop_pipe[2];
	pthread_t acceptor;
	pthread_mutex_t lock;
	struct conn *conns;	/* protected by lock */
	bool stopping;		/* protected by lock */
};

/* ---- replies ---------------------------------------------------------- */

#define NAME_RULES "use letters, digits, '.', '_', '+' or '-' (at most 128), " \
		   "not starting with '.' or '-', not ending in '.snap'"

/* Turns a store error about image REF into an error reply people can act on. */
static int reply_store_error(int fd, int err, const char *what, const char *ref)
{
	switch (-err) {
	case ENOENT:
		return ctl_reply_error(fd, err, "no image named '%s' (see `hutch image list`)", ref);
	case EEXIST:
		return ctl_reply_error(fd, err, "an image named '%s' already exists", ref);
	case EROFS:
		return ctl_reply_error(fd, err, "'%s' is a read-only snapshot; fork it to get a writable image", ref);
	case EBUSY:
		return ctl_reply_error(fd, err, "'%s' is in use; close its NBD connections first", ref);
	case ENOSPC:
		return ctl_reply_error(fd, err, "%s '%s': no space left on the store's disk", what, ref);
	case EFBIG: {
		char max[32];

		return ctl_reply_error(fd, err, "%s '%s': size too large (at most %s)", what, ref,
				       format_size(STORE_MAX_IMAGE_SIZE, max, sizeof max));
	}
	default:
		return ctl_reply_error(fd, err, "%s '%s': %s", what, ref, strerror(-err));
	}
}

static int reply_bad_size(int fd)
{
	char max[32];

	return ctl_reply_error(fd, EINVAL, "size must be between 1 byte and %s",
			       format_size(STORE_MAX_IMAGE_SIZE, max, sizeof max));
}

static json_object *image_to_json(const struct store_image_info *i)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(i->name));
	json_object_object_add(o, "parent", json_object_new_string(i->parent));
	json_object_object_add(o, "size", json_object_new_uint64(i->size));
	json_object_object_add(o, "allocated", json_object_new_uint64(i->allocated));
	json_object_object_add(o, "unique", json_object_new_uint64(i->unique));
	json_object_object_add(o, "shared", json_object_new_uint64(i->shared));
	json_object_object_add(o, "generation", json_object_new_uint64(i->generation));
	json_object_object_add(o, "created", json_object_new_uint64(i->created));
	json_object_object_add(o, "readonly", json_object_new_boolean(i->readonly));
	json_object_object_add(o, "open", json_object_new_uint64(i->open_count));
	return o;
}

/* ---- operations --------------------------------------------------------
 * Each sends exactly one final reply; a negative return means the
 * connection is broken. */

typedef int (*op_fn)(struct conn *c, json_object *req);

#define ARG_STRING(key, var)                                                    \
	do {                                                                    \
		if (ctl_arg_string(req, key, &(var), why, sizeof why) < 0)      \
			return ctl_reply_error(c->fd, EINVAL, "%s", why);       \
	} while (0)
#define ARG_U64(key, var)                                                       \
	do {                                                                    \
		if (ctl_arg_u64(req, key, &(var), why, sizeof why) < 0)         \
			return ctl_reply_error(c->fd, EINVAL, "%s", why);       \
	} while (0)
#define CHECK_NAME(var)                                                         \
	do {                                                                    \
		if (!name_is_valid(var))                                        \
			return ctl_reply_error(c->fd, EINVAL,                   \
				"invalid image name '%s': " NAME_RULES, var);   \
	} while (0)
#define CHECK_REF(var)                                                          \
	do {                                                                    \
		if (!ref_is_valid(var))                                         \
			return ctl_reply_error(c->fd, EINVAL,                   \
				"invalid image reference '%s': NAME or NAME@SNAP; " NAME_RULES, var); \
	} while (0)

static int op_ping(struct conn *c, json_object *req)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "version", json_object_new_string(HUTCH_VERSION));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "chunk_size",
			       json_object_new_uint64(store_chunk_size(c->ctl->store)));
	json_object_object_add(o, "store", json_object_new_string(store_dir(c->ctl->store)));
	return ctl_reply_ok(c->fd, o);
}

static int op_store_stats(struct conn *c, json_object *req)
{
	struct store_stats st;
	json_object *o, *s;
	int r = store_stats(c->ctl->store, &st);

	if (r < 0)
		return ctl_reply_error(c->fd, r, "cannot read store statistics: %s", strerror(-r));
	s = json_object_new_object();
	json_object_object_add(s, "chunk_size", json_object_new_uint64(st.chunk_size));
	json_object_object_add(s, "images", json_object_new_uint64(st.images));
	json_object_object_add(s, "snapshots", json_object_new_uint64(st.snapshots));
	json_object_object_add(s, "provisioned", json_object_new_uint64(st.provisioned));
	json_object_object_add(s, "logical", json_object_new_uint64(st.logical));
	json_object_object_add(s, "unique_data", json_object_new_uint64(st.unique_data));
	json_object_object_add(s, "physical", json_object_new_uint64(st.physical));
	json_object_object_add(s, "packs", json_object_new_uint64(st.packs));
	json_object_object_add(s, "pack_bytes", json_object_new_uint64(st.pack_bytes));
	json_object_object_add(s, "dead_bytes", json_object_new_uint64(st.dead_bytes));
	json_object_object_add(s, "chunks", json_object_new_uint64(st.chunks));
	/* NaN or infinity is not JSON (an empty store has no physical bytes). */
	json_object_object_add(s, "dedup_ratio",
			       json_object_new_double(isfinite(st.dedup_ratio) ? st.dedup_ratio : 0));
	o = json_object_new_object();
	json_object_object_add(o, "stats", s);
	return ctl_reply_ok(c->fd, o);
}

struct progress_ctx {
	int fd;
	uint64_t last_ns;
	int err;		/* first send error: the client went away */
};

/* At most ten progress lines a second, and always the last one. */
static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct progress_ctx *p = opaque;
	uint64_t now = now_ns();

	if (p->err || (done < total && now - p->last_ns < 100000000ull))
		return;
	p->last_ns = now;
	p->err = ctl_send_progress(p->fd, done, total);
}

static int op_store_gc(struct conn *c, json_object *req)
{
	struct progress_ctx p = { .fd = c->fd };
	struct store_gc_result g;
	json_object *o, *gj;
	int r;

	log_info("gc requested by uid %u pid %d", (unsigned)c->uid, (int)c->pid);
	r = store_gc(c->ctl->store, on_progress, &p, &g);
	if (p.err)
		return p.err;
	if (r < 0)
		return ctl_reply_error(c->fd, r, "garbage collection failed: %s", strerror(-r));
	log_info("gc: %" PRIu64 " live, %" PRIu64 " dead chunks; %" PRIu64 " packs removed, %"
		 PRIu64 " compacted; %" PRIu64 " -> %" PRIu64 " bytes", g.live_chunks, g.dead_chunks,
		 g.packs_removed, g.packs_compacted, g.bytes_before, g.bytes_after);
	gj = json_object_new_object();
	json_object_object_add(gj, "live_chunks", json_object_new_uint64(g.live_chunks));
	json_object_object_add(gj, "dead_chunks", json_object_new_uint64(g.dead_chunks));
	json_object_object_add(gj, "packs_removed", json_object_new_uint64(g.packs_removed));
	json_object_object_add(gj, "packs_compacted", json_object_new_uint64(g.packs_compacted));
	json_object_object_add(gj, "bytes_before", json_object_new_uint64(g.bytes_before));
	json_object_object_add(gj, "bytes_after", json_object_new_uint64(g.bytes_after));
	o = json_object_new_object();
	json_object_object_add(o, "gc", gj);
	return ctl_reply_ok(c->fd, o);
}

static void on_bad_chunk(void *opaque, const struct store_verify_error *e)
{
	struct progress_ctx *p = opaque;
	json_object *b;

	log_error("verify: bad chunk %s in pack %s at %" PRIu64 " (image %s at %" PRIu64 "): %s",
		  e->chunk, e->pack, e->pack_offset, e->image, e->image_offset, e->what);
	if (p->err)
		return;
	b = json_object_new_object();
	json_object_object_add(b, "chunk", json_object_new_string(e->chunk));
	json_object_object_add(b, "pack", json_object_new_string(e->pack));
	json_object_object_add(b, "pack_offset", json_object_new_uint64(e->pack_offset));
	json_object_object_add(b, "image", json_object_new_string(e->image));
	json_object_object_add(b, "image_offset", json_object_new_uint64(e->image_offset));
	json_object_object_add(b, "what", json_object_new_string(e->what));
	p->err = ctl_send_event(p->fd, "bad_chunk", b);
}

static int op_store_verify(struct conn *c, json_object *req)
{
	struct progress_ctx p = { .fd = c->fd };
	uint64_t bad = 0;
	json_object *o;
	int r;

	log_info("verify requested by uid %u pid %d", (unsigned)c->uid, (int)c->pid);
	r = store_verify(c->ctl->store, on_bad_chunk, on_progress, &p, &bad);
	if (p.err)
		return p.err;
	if (r < 0)
		return ctl_reply_error(c->fd, r, "verify failed: %s", strerror(-r));
	log_info("verify: %" PRIu64 " bad chunks", bad);
	o = json_object_new_object();
	json_object_object_add(o, "bad", json_object_new_uint64(bad));
	return ctl_reply_ok(c->fd, o);
}

static int op_image_create(struct conn *c, json_object *req)
{
	const char *name;
	uint64_t size;
	char why[256];
	int r;

	ARG_STRING("name", name);
	ARG_U64("size", size);
	CHECK_NAME(name);
	if (size == 0 || size > STORE_MAX_IMAGE_SIZE)
		return reply_bad_size(c->fd);
	r = store_image_create(c->ctl->store, name, size);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot create", name);
	log_info("image %s created (%" PRIu64 " bytes) by uid %u", name, size, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_list(struct conn *c, json_object *req)
{
	_cleanup_free_ struct store_image_info *list = NULL;
	bool usage = true;
	char why[256];
	json_object *o, *arr;
	size_t n = 0;
	int r;

	if (ctl_arg_bool_opt(req, "usage", &usage, why, sizeof why) < 0)
		return ctl_reply_error(c->fd, EINVAL, "%s", why);
	r = store_image_list(c->ctl->store, usage, &list, &n);
	if (r < 0)
		return ctl_reply_error(c->fd, r, "cannot list images: %s", strerror(-r));
	arr = json_object_new_array_ext((int)n);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(arr, image_to_json(&list[i]));
	o = json_object_new_object();
	json_object_object_add(o, "images", arr);
	return ctl_reply_ok(c->fd, o);
}

static int op_image_info(struct conn *c, json_object *req)
{
	struct store_image_info info;
	const char *name;
	char why[256];
	json_object *o;
	int r;

	ARG_STRING("name", name);
	CHECK_REF(name);
	/* usage (unique and shared bytes) walks every image: callers that only
	 * need the size, like hutch-fuse's stat, say "usage": false. */
	bool usage = true;
	if (ctl_arg_bool_opt(req, "usage", &usage, why, sizeof why) < 0)
		return ctl_reply_error(c->fd, EINVAL, "%s", why);
	r = store_image_info(c->ctl->store, name, usage, &info);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot read", name);
	o = json_object_new_object();
	json_object_object_add(o, "image", image_to_json(&info));
	return ctl_reply_ok(c->fd, o);
}

static int op_image_rm(struct conn *c, json_object *req)
{
	const char *name;
	char why[256];
	int r;

	ARG_STRING("name", name);
	CHECK_REF(name);
	r = store_image_remove(c->ctl->store, name);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot remove", name);
	log_info("image %s removed by uid %u", name, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_resize(struct conn *c, json_object *req)
{
	const char *name;
	uint64_t size;
	char why[256];
	int r;

	ARG_STRING("name", name);
	ARG_U64("size", size);
	if (strchr(name, '@') && ref_is_valid(name))
		return ctl_reply_error(c->fd, EROFS, "'%s' is a read-only snapshot and cannot be resized", name);
	CHECK_NAME(name);
	if (size == 0 || size > STORE_MAX_IMAGE_SIZE)
		return reply_bad_size(c->fd);
	r = store_image_resize(c->ctl->store, name, size);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot resize", name);
	log_info("image %s resized to %" PRIu64 " bytes by uid %u", name, size, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_rename(struct conn *c, json_object *req)
{
	const char *old_name, *new_name;
	char why[256];
	int r;

	ARG_STRING("old", old_name);
	ARG_STRING("new", new_name);
	CHECK_NAME(old_name);
	CHECK_NAME(new_name);
	r = store_image_rename(c->ctl->store, old_name, new_name);
	if (r == -EEXIST)
		return reply_store_error(c->fd, r, "cannot rename", new_name);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot rename", old_name);
	log_info("image %s renamed to %s by uid %u", old_name, new_name, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_snapshot(struct conn *c, json_object *req)
{
	const char *name, *snap;
	char ref[2 * HUTCH_NAME_MAX + 2];
	char why[256];
	int r;

	ARG_STRING("name", name);
	ARG_STRING("snap", snap);
	CHECK_NAME(name);
	if (!name_is_valid(snap))
		return ctl_reply_error(c->fd, EINVAL, "invalid snapshot name '%s': " NAME_RULES, snap);
	r = store_image_snapshot(c->ctl->store, name, snap);
	snprintf(ref, sizeof ref, "%s@%s", name, snap);
	if (r == -EEXIST)
		return reply_store_error(c->fd, r, "cannot snapshot", ref);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot snapshot", name);
	log_info("snapshot %s taken by uid %u", ref, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_fork(struct conn *c, json_object *req)
{
	const char *src, *dst;
	char why[256];
	int r;

	ARG_STRING("src", src);
	ARG_STRING("dst", dst);
	CHECK_REF(src);
	CHECK_NAME(dst);
	r = store_image_fork(c->ctl->store, src, dst);
	if (r == -EEXIST)
		return reply_store_error(c->fd, r, "cannot fork", dst);
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot fork", src);
	log_info("image %s forked to %s by uid %u", src, dst, (unsigned)c->uid);
	return ctl_reply_ok(c->fd, NULL);
}

static int op_image_clone_range(struct conn *c, json_object *req)
{
	const char *src, *dst;
	uint64_t src_off, dst_off, len;
	char why[256];
	int r;

	ARG_STRING("src", src);
	ARG_U64("src_offset", src_off);
	ARG_STRING("dst", dst);
	ARG_U64("dst_offset", dst_off);
	ARG_U64("length", len);
	CHECK_REF(src);
	CHECK_NAME(dst);
	r = store_image_clone_range(c->ctl->store, src, src_off, dst, dst_off, len);
	if (r == -EINVAL)
		return ctl_reply_error(c->fd, r, "cannot clone %s to %s: offsets and length must be "
				       "multiples of the chunk size (%u) and inside both images",
				       src, dst, store_chunk_size(c->ctl->store));
	if (r == -EROFS)
		return reply_store_error(c->fd, r, "cannot clone into", dst);
	if (r == -ENOENT) {
		struct store_image_info info;

		if (store_image_info(c->ctl->store, dst, false, &info) < 0)
			return reply_store_error(c->fd, r, "cannot clone into", dst);
	}
	if (r < 0)
		return reply_store_error(c->fd, r, "cannot clone", src);
	log_debug("cloned %s[%" PRIu64 "+%" PRIu64 "] to %s[%" PRIu64 "]", src, src_off, len,
		  dst, dst_off);
	return ctl_reply_ok(c->fd, NULL);
}

static const struct {
	const char *name;
	op_fn fn;
} ops[] = {
	{ "ping", op_ping },
	{ "store.stats", op_store_stats },
	{ "store.gc", op_store_gc },
	{ "store.verify", op_store_verify },
	{ "image.create", op_image_create },
	{ "image.list", op_image_list },
	{ "image.info", op_image_info },
	{ "image.rm", op_image_rm },
	{ "image.resize", op_image_resize },
	{ "image.rename", op_image_rename },
	{ "image.snapshot", op_image_snapshot },
	{ "image.fork", op_image_fork },
	{ "image.clone_range", op_image_clone_range },
};

/* ---- connections ------------------------------------------------------ */

static int handle_line(struct conn *c, const char *line, size_t len)
{
	json_object *req;
	const char *op;
	char why[256];
	int r;

	if (len == 0)
		return 0;	/* blank lines are keep-alives */
	if (ctl_parse_request(line, len, &req, &op, why, sizeof why) < 0)
		return ctl_reply_error(c->fd, EINVAL, "%s", why);
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		if (strcmp(ops[i].name, op) == 0) {
			/* Before the op runs, so the log has it even if it fails. */
			audit_control_sock(c->ctl->path, "hutch-storaged", c->fd, op, req);
			r = ops[i].fn(c, req);
			json_object_put(req);
			return r;
		}
	}
	r = ctl_reply_error(c->fd, EOPNOTSUPP, "unknown op '%s' (see docs/control.md)", op);
	json_object_put(req);
	return r;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct ctl_reader rd;

	ctl_reader_init(&rd, c->fd);
	for (;;) {
		char *line;
		size_t len;
		int r = ctl_read_line(&rd, &line, &len);

		if (r == -E2BIG) {
			if (ctl_reply_error(c->fd, EINVAL, "request longer than %u bytes", CTL_MAX_LINE) < 0)
				break;
			continue;
		}
		if (r <= 0)
			break;
		if (handle_line(c, line, len) < 0)
			break;
	}
	ctl_reader_free(&rd);
	/* The client sees the end now; the fd itself is closed when reaped. */
	shutdown(c->fd, SHUT_RDWR);

	pthread_mutex_lock(&c->ctl->lock);
	c->done = true;
	pthread_mutex_unlock(&c->ctl->lock);
	return NULL;
}

/* Joins and frees finished connections (all of them when ALL). */
static void reap(struct storaged_control *ctl, bool all)
{
	struct conn **pp = &ctl->conns;

	pthread_mutex_lock(&ctl->lock);
	while (*pp) {
		struct conn *c = *pp;

		if (!c->done && !all) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		pthread_mutex_unlock(&ctl->lock);
		pthread_join(c->thread, NULL);
		close(c->fd);
		free(c);
		pthread_mutex_lock(&ctl->lock);
	}
	pthread_mutex_unlock(&ctl->lock);
}

static void *accept_main(void *arg)
{
	struct storaged_control *ctl = arg;
	struct pollfd pfd[2] = {
		{ .fd = ctl->listen_fd, .events = POLLIN },
		{ .fd = ctl->stop_pipe[0], .events = POLLIN },
	};

	for (;;) {
		struct conn *c;
		int fd;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("control socket: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				log_warn("control socket: accept: %s", strerror(errno));
			/* Out of fds: do not spin. */
			if (errno == EMFILE || errno == ENFILE)
				usleep(100000);
			continue;
		}
		reap(ctl, false);

		c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->ctl = ctl;
		c->fd = fd;
		ctl_peer_creds(fd, &c->pid, &c->uid, NULL);

		pthread_mutex_lock(&ctl->lock);
		if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
			pthread_mutex_unlock(&ctl->lock);
			log_warn("control socket: cannot start a connection thread");
			close(fd);
			free(c);
			continue;
		}
		c->next = ctl->conns;
		ctl->conns = c;
		pthread_mutex_unlock(&ctl->lock);
	}
	return NULL;
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	struct group gr, *grp = NULL;
	char buf[4096];
	mode_t old;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	/* Never let the socket exist with looser permissions, even briefly. */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = -errno;

		umask(old);
		return e;
	}
	umask(old);
	if (getgrnam_r("hutch", &gr, buf, sizeof buf, &grp) == 0 && grp) {
		if (chown(path, (uid_t)-1, grp->gr_gid) == 0)
			chmod(path, 0660);
		else
			log_warn("cannot give %s to group hutch: %s", path, strerror(errno));
	}
	if (listen(fd, 64) < 0)
		return -errno;
	return TAKE_FD(fd);
}

int storaged_control_start(struct store *s, const char *path, struct storaged_control **out)
{
	struct storaged_control *ctl = calloc(1, sizeof *ctl);
	int r;

	if (!ctl)
		return -ENOMEM;
	ctl->store = s;
	ctl->stop_pipe[0] = ctl->stop_pipe[1] = -1;
	pthread_mutex_init(&ctl->lock, NULL);
	if (strlen(path) >= sizeof ctl->path) {
		r = -ENAMETOOLONG;
		goto out_free;
	}
	strcpy(ctl->path, path);
	ctl->listen_fd = listen_on(path);
	if (ctl->listen_fd < 0) {
		r = ctl->listen_fd;
		goto out_free;
	}
	if (pipe2(ctl->stop_pipe, O_CLOEXEC) < 0) {
		r = -errno;
		goto out_close;
	}
	r = -pthread_create(&ctl->acceptor, NULL, accept_main, ctl);
	if (r < 0)
		goto out_pipe;
	*out = ctl;
	return 0;

out_pipe:
	close(ctl->stop_pipe[0]);
	close(ctl->stop_pipe[1]);
out_close:
	close(ctl->listen_fd);
	unlink(path);
out_free:
	pthread_mutex_destroy(&ctl->lock);
	free(ctl);
	return r;
}

void storaged_control_stop(struct storaged_control *ctl)
{
	if (!ctl)
		return;
	/* Stop accepting first, then wake every connection thread that waits
	 * for a request; one running an operation finishes it first. */
	if (write(ctl->stop_pipe[1], "x", 1) < 0)
		log_warn("control socket: cannot signal the acceptor: %s", strerror(errno));
	pthread_join(ctl->acceptor, NULL);
	close(ctl->listen_fd);
	unlink(ctl->path);

	pthread_mutex_lock(&ctl->lock);
	ctl->stopping = true;
	for (struct conn *c = ctl->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&ctl->lock);
	reap(ctl, true);

	close(ctl->stop_pipe[0]);
	close(ctl->stop_pipe[1]);
	pthread_mutex_destroy(&ctl->lock);
	free(ctl);
}

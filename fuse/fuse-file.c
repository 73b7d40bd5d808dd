/*
 * Data operations: open, read, write, fsync, lseek and fallocate,
 * carried to storaged over NBD through the image's connection pool
 * (copy_file_range is in fuse-copy.c). Files are opened with direct_io: the kernel keeps no
 * pages of ours, so what another NBD client writes is what the next read
 * through the mount returns (docs/hutch-fuse.md explains the choice).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/falloc.h>

#include "cleanup.h"
#include "log.h"
#include "fuse-internal.h"

/* Every open handle, so that those the kernel never releases (a lazy
 * unmount with files open) are freed at exit. */
static pthread_mutex_t fh_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fhandle *fh_list;	/* protected by fh_lock */

static void fh_link(struct fhandle *fh)
{
	pthread_mutex_lock(&fh_lock);
	fh->next = fh_list;
	if (fh_list)
		fh_list->prev = fh;
	fh_list = fh;
	pthread_mutex_unlock(&fh_lock);
}

static void fh_free(struct fhandle *fh)
{
	if (!fh)
		return;
	pthread_mutex_lock(&fh_lock);
	if (fh->prev)
		fh->prev->next = fh->next;
	else
		fh_list = fh->next;
	if (fh->next)
		fh->next->prev = fh->prev;
	pthread_mutex_unlock(&fh_lock);
	free(fh);
}

void fs_file_cleanup(void)
{
	while (fh_list)
		fh_free(fh_list);
}

/* One read buffer per FUSE worker, freed when libfuse ends the thread. */
struct tbuf {
	char *p;
	size_t size;
};
static pthread_key_t tbuf_key;
static pthread_once_t tbuf_once = PTHREAD_ONCE_INIT;

static void tbuf_free(void *v)
{
	struct tbuf *t = v;
	free(t->p);
	free(t);
}

static void tbuf_init(void)
{
	pthread_key_create(&tbuf_key, tbuf_free);
}

char *thread_buf(size_t size)
{
	pthread_once(&tbuf_once, tbuf_init);
	struct tbuf *t = pthread_getspecific(tbuf_key);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t || pthread_setspecific(tbuf_key, t) != 0) {
			free(t);
			return NULL;
		}
	}
	if (size > t->size) {
		free(t->p);
		t->p = malloc(size);
		t->size = t->p ? size : 0;
	}
	return t->p;
}

bool is_zero(const char *p, size_t len)
{
	static const char zero[4096];
	while (len) {
		size_t n = MIN(len, sizeof(zero));
		if (memcmp(p, zero, n) != 0)
			return false;
		p += n;
		len -= n;
	}
	return true;
}

/* Size of the image as storaged sees it now (handshake sizes may lag). */
static int node_size(struct node *n, uint64_t *size)
{
	char ref[REF_MAX];
	struct fctl_image info;

	if (node_is_pending(n)) {
		*size = 0;
		return 0;
	}
	node_ref(n, ref, sizeof(ref));
	int r = fctl_image_info(ref, &info);
	if (r == 0)
		*size = info.size;
	return r;
}

/* The size from a pooled connection's handshake: no control round trip
 * (image.info also computes usage, which costs milliseconds on big
 * images). Pools are reset after every resize made through the mount,
 * so this is only stale after a resize made elsewhere, for at most as
 * long as an idle connection lives. */
int node_size_nbd(struct node *n, uint64_t *size)
{
	struct pool *p = node_pool(n);
	struct conn c;

	if (node_is_pending(n)) {
		*size = 0;
		return 0;
	}
	int r = pool_get(p, &c);
	if (r < 0)
		return r;
	*size = (uint64_t)nbd_get_size(c.h);
	pool_put(p, &c);
	return 0;
}

int node_grow(struct node *n, uint64_t want, bool trust, uint64_t *size_out)
{
	char ref[REF_MAX];
	uint64_t size = 0;
	int r = 0;

	pthread_mutex_lock(&n->grow_lock);
	node_ref(n, ref, sizeof(ref));
	if (node_is_pending(n)) {
		r = want ? fctl_image_create(ref, want) : 0;
		if (r == 0 && want) {
			node_set_pending(n, false);
			n->size = size = want;
			n->size_known = true;
		}
		goto out;
	}
	if (!trust || !n->size_known) {
		/* Idle connections may predate a resize made elsewhere: a fresh
		 * handshake, or a stale size could shrink the image below. */
		pool_reset(node_pool(n), NULL);
		r = node_size_nbd(n, &n->size);
		n->size_known = r == 0;
		if (r < 0)
			goto out;
	}
	size = n->size;
	if (size < want) {
		r = fctl_image_resize(ref, want);
		if (r < 0) {
			n->size_known = false;
			goto out;
		}
		n->size = size = want;
		pool_reset(node_pool(n), NULL);
	}
out:
	pthread_mutex_unlock(&n->grow_lock);
	if (r == 0 && size_out)
		*size_out = size;
	return r;
}

void node_forget_size(struct node *n)
{
	pthread_mutex_lock(&n->grow_lock);
	n->size_known = false;
	pthread_mutex_unlock(&n->grow_lock);
}

static int do_open(struct node *n, struct fuse_file_info *fi)
{
	uint64_t size;
	int r;

	if (n->kind != NODE_IMAGE && n->kind != NODE_SNAP)
		return -EISDIR;
	if (n->kind == NODE_SNAP &&
	    ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
		return -EROFS;
	/* Truncating a disk image on open is almost always a mistake (cp or
	 * dd onto an existing name): refuse rather than destroy it. */
	if (fi->flags & O_TRUNC) {
		r = node_size(n, &size);
		if (r < 0)
			return r;
		if (size > 0)
			return -EEXIST;
	}
	struct fhandle *fh = calloc(1, sizeof(*fh));
	if (!fh)
		return -ENOMEM;
	fh->n = n;
	fh_link(fh);
	fi->fh = (uint64_t)(uintptr_t)fh;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	return 0;
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_by_ino(ino);
	int r = n ? do_open(n, fi) : -ENOENT;

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct node *n;
	int r = dir_create_image(parent, name, mode, &n);
	if (r == 0)
		r = do_open(n, fi);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	struct fuse_entry_param e = {
		.ino = n->ino,
		.generation = 1,
		.attr_timeout = fs_cfg.attr_timeout,
		.entry_timeout = fs_cfg.attr_timeout,
	};
	r = node_stat(n, &e.attr);
	if (r < 0) {
		fh_free((struct fhandle *)(uintptr_t)fi->fh);
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_create(req, &e, fi);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fh_free((struct fhandle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static int node_flush(struct node *n)
{
	struct pool *p = node_pool(n);
	struct conn c;
	int r;

	if (node_is_pending(n))
		return 0;
	r = pool_get(p, &c);
	if (r < 0)
		return r;
	if (nbd_flush(c.h, 0) < 0)
		r = pool_errno();
	pool_put(p, &c);
	return r;
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	/* Every write already reached storaged (direct_io, no cache here);
	 * fsync makes it durable. close() does not, as on local disks:
	 * storaged's flush timer and its shutdown cover the rest. */
	int r = fh->n->kind == NODE_IMAGE ? node_flush(fh->n) : 0;

	fuse_reply_err(req, -r);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	struct pool *p = node_pool(fh->n);
	char *buf = thread_buf(size);
	struct conn c;
	int r;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (node_is_pending(fh->n)) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	for (int attempt = 0;; attempt++) {
		r = pool_get(p, &c);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		uint64_t esize = (uint64_t)nbd_get_size(c.h);
		uint64_t count = (uint64_t)off >= esize ? 0 : MIN((uint64_t)size, esize - (uint64_t)off);
		if (count < size && attempt == 0) {
			/* At the handshake's end of file: the image may have grown since. */
			uint64_t now;
			pool_put(p, &c);
			if (node_size(fh->n, &now) == 0 && now > esize)
				pool_reset(p, NULL);
			continue;
		}
		if (count && nbd_pread(c.h, buf, count, (uint64_t)off, 0) < 0) {
			r = pool_errno();
			pool_put(p, &c);
			fuse_reply_err(req, -r);
			return;
		}
		pool_put(p, &c);
		fuse_reply_buf(req, buf, count);
		return;
	}
}

int write_range(struct node *n, const void *buf, uint64_t len, uint64_t off)
{
	struct pool *p = node_pool(n);
	struct conn c;
	int r;

	if (node_is_pending(n) && (r = node_grow(n, off + len, false, NULL)) < 0)
		return r;
	for (int attempt = 0;; attempt++) {
		r = pool_get(p, &c);
		if (r < 0)
			return r;
		uint64_t esize = (uint64_t)nbd_get_size(c.h);
		if (off + len > esize) {
			/* Writing past the end grows the image, like a file. */
			pool_put(p, &c);
			if (attempt >= 3)
				return -EIO;
			r = node_grow(n, off + len, false, NULL);
			if (r < 0)
				return r;
			continue;
		}
		int rr = buf ? nbd_pwrite(c.h, buf, len, off, 0) : nbd_zero(c.h, len, off, 0);
		r = rr < 0 ? pool_errno() : 0;
		pool_put(p, &c);
		return r;
	}
}

static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;

	if (fh->n->kind != NODE_IMAGE) {
		fuse_reply_err(req, EROFS);
		return;
	}
	int r = write_range(fh->n, buf, size, (uint64_t)off);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_write(req, size);
}

/* ---- SEEK_DATA / SEEK_HOLE from base:allocation ----------------------- */

struct seek_state {
	int whence;
	uint64_t from;
	uint64_t next;		/* end of the last extent seen */
	bool found;
	uint64_t result;
};

static int seek_cb(void *opaque, const char *metacontext, uint64_t offset,
		   uint32_t *entries, size_t nr_entries, int *error)
{
	struct seek_state *s = opaque;

	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		bool data = !(entries[i + 1] & LIBNBD_STATE_HOLE);
		if (!s->found && data == (s->whence == SEEK_DATA)) {
			s->found = true;
			s->result = MAX(offset, s->from);
		}
		offset += entries[i];
	}
	s->next = offset;
	return 0;
}

static int seek_extent(struct node *n, uint64_t off, int whence, uint64_t *out)
{
	struct pool *p = node_pool(n);
	struct conn c;
	int r;

	if (node_is_pending(n))
		return -ENXIO;
	r = pool_get(p, &c);
	if (r < 0)
		return r;
	uint64_t size = (uint64_t)nbd_get_size(c.h);
	struct seek_state s = { .whence = whence, .from = off, .next = off };
	if (off >= size) {
		pool_put(p, &c);
		return -ENXIO;
	}
	if (!nbd_can_meta_context(c.h, LIBNBD_CONTEXT_BASE_ALLOCATION)) {
		pool_put(p, &c);
		*out = whence == SEEK_DATA ? off : size;	/* all data */
		return 0;
	}
	while (!s.found && s.next < size) {
		uint64_t start = s.next;
		nbd_extent_callback cb = { .callback = seek_cb, .user_data = &s };
		if (nbd_block_status(c.h, MIN(size - start, (uint64_t)1 << 31), start, cb, 0) < 0) {
			r = pool_errno();
			pool_put(p, &c);
			return r;
		}
		if (s.next <= start)
			break;
	}
	pool_put(p, &c);
	if (s.found && s.result < size)
		*out = s.result;
	else if (whence == SEEK_HOLE)
		*out = size;		/* the end of file is a hole */
	else
		return -ENXIO;
	return 0;
}

static void fs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	uint64_t res = 0;

	if ((whence != SEEK_DATA && whence != SEEK_HOLE) || off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	int r = seek_extent(fh->n, (uint64_t)off, whence, &res);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lseek(req, (off_t)res);
}

static void fs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	uint64_t size;
	int r;

	if (fh->n->kind != NODE_IMAGE) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	r = node_size(fh->n, &size);
	if (r == 0 && !(mode & FALLOC_FL_KEEP_SIZE) && (uint64_t)(off + len) > size) {
		r = node_grow(fh->n, (uint64_t)(off + len), false, NULL);
		size = (uint64_t)(off + len);
	}
	/* Holes and zeroes are the same thing in this store: a zero chunk is a hole. */
	if (r == 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) &&
	    (uint64_t)off < size)
		r = write_range(fh->n, NULL, MIN((uint64_t)len, size - (uint64_t)off),
				(uint64_t)off);
	fuse_reply_err(req, -r);
}

void fs_file_ops(struct fuse_lowlevel_ops *ops)
{
	ops->open = fs_open;
	ops->create = fs_create;
	ops->release = fs_release;
	ops->fsync = fs_fsync;
	ops->read = fs_read;
	ops->write = fs_write;
	ops->lseek = fs_lseek;
	ops->fallocate = fs_fallocate;
	ops->copy_file_range = fs_copy_file_range;	/* fuse-copy.c */
}

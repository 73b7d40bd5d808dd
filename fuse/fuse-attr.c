/*
 * Attributes. Sizes and read-only flags come from storaged (image.info);
 * st_blocks from NBD block status, so a sparse image shows the chunks it
 * really holds, as `du` expects.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cleanup.h"
#include "fuse-internal.h"

static struct timespec mount_time;

struct alloc_sum {
	uint64_t bytes;
	uint64_t next;		/* offset after the last extent seen */
};

static int alloc_cb(void *opaque, const char *metacontext, uint64_t offset,
		    uint32_t *entries, size_t nr_entries, int *error)
{
	struct alloc_sum *a = opaque;

	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		if (!(entries[i + 1] & LIBNBD_STATE_HOLE))
			a->bytes += entries[i];
		offset += entries[i];
	}
	a->next = offset;
	return 0;
}

int node_allocated(struct node *n, uint64_t size, uint64_t *out)
{
	struct pool *p = node_pool(n);
	struct conn c;
	struct alloc_sum a = { 0, 0 };
	int r;

	r = pool_get(p, &c);
	if (r < 0)
		return r;
	if (!nbd_can_meta_context(c.h, LIBNBD_CONTEXT_BASE_ALLOCATION)) {
		*out = size;
		pool_put(p, &c);
		return 0;
	}
	int64_t esize = nbd_get_size(c.h);
	if (esize >= 0 && (uint64_t)esize < size)
		size = (uint64_t)esize;
	while (a.next < size) {
		uint64_t start = a.next;
		uint64_t len = MIN(size - start, (uint64_t)1 << 31);
		nbd_extent_callback cb = { .callback = alloc_cb, .user_data = &a };
		if (nbd_block_status(c.h, len, start, cb, 0) < 0) {
			r = pool_errno();
			pool_put(p, &c);
			return r;
		}
		if (a.next <= start) {
			r = -EIO;	/* the server made no progress */
			pool_put(p, &c);
			return r;
		}
	}
	pool_put(p, &c);
	*out = a.bytes;
	return 0;
}

static void stat_dir(struct stat *st, fuse_ino_t ino)
{
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
}

int node_stat_with(struct node *n, const struct fctl_image *known, struct stat *st)
{
	char ref[REF_MAX];
	struct fctl_image info;
	int r;

	if (mount_time.tv_sec == 0)
		clock_gettime(CLOCK_REALTIME, &mount_time);
	memset(st, 0, sizeof(*st));
	st->st_uid = fs_cfg.uid;
	st->st_gid = fs_cfg.gid;
	st->st_blksize = 1u << 20;
	st->st_atim = st->st_mtim = st->st_ctim = mount_time;
	node_ref(n, ref, sizeof(ref));

	switch (n->kind) {
	case NODE_ROOT:
	case NODE_IMAGES:
		stat_dir(st, n->ino);
		return 0;
	case NODE_SNAPDIR:
		/* Exists while its image does. */
		r = known ? 0 : fctl_image_info(ref, &info);
		if (r < 0)
			return r;
		stat_dir(st, n->ino);
		return 0;
	case NODE_IMAGE:
	case NODE_SNAP:
		if (node_is_pending(n)) {
			st->st_ino = n->ino;
			st->st_mode = S_IFREG | 0600;
			st->st_nlink = 1;
			return 0;
		}
		if (known)
			info = *known;
		else if ((r = fctl_image_info(ref, &info)) < 0)
			return r;
		st->st_ino = n->ino;
		st->st_mode = S_IFREG | (info.readonly ? 0400 : 0600);
		st->st_nlink = 1;
		st->st_size = (off_t)info.size;
		st->st_mtim.tv_sec = st->st_ctim.tv_sec = (time_t)info.created;
		st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = 0;
		uint64_t alloc;
		if (node_allocated(n, info.size, &alloc) < 0)
			alloc = info.size;	/* storaged busy or gone: say "not sparse" */
		st->st_blocks = (blkcnt_t)DIV_ROUND_UP(alloc, 512);
		return 0;
	}
	return -EIO;
}

int node_stat(struct node *n, struct stat *st)
{
	return node_stat_with(n, NULL, st);
}

void reply_entry_with(fuse_req_t req, struct node *n, const struct fctl_image *known)
{
	struct fuse_entry_param e = {
		.ino = n->ino,
		.generation = 1,
		.attr_timeout = fs_cfg.attr_timeout,
		.entry_timeout = fs_cfg.attr_timeout,
	};
	int r = node_stat_with(n, known, &e.attr);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &e);
}

void reply_entry(fuse_req_t req, struct node *n)
{
	reply_entry_with(req, n, NULL);
}

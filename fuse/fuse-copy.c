/*
 * copy_file_range: `cp images/SRC images/NEW` forks by sharing whole
 * chunks (image.clone_range on the control socket); only unaligned edges
 * travel over NBD. docs/hutch-fuse.md explains the 4 GiB pieces.
 */
#include <errno.h>
#include <string.h>

#include "cleanup.h"
#include "fuse-internal.h"

/* Bytes copied through NBD per copy_file_range call when chunks cannot
 * be shared: bounded so one call never holds a FUSE thread for long. */
#define COPY_SLICE (64ull << 20)

static int copy_via_nbd(struct node *src, uint64_t src_off, struct node *dst,
			uint64_t dst_off, uint64_t len)
{
	struct pool *p = node_pool(src);
	char *buf = thread_buf(FUSE_MAX_WRITE);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	while (len && r == 0) {
		uint64_t n = MIN(len, (uint64_t)FUSE_MAX_WRITE);
		struct conn c;
		r = pool_get(p, &c);
		if (r < 0)
			break;
		if (nbd_pread(c.h, buf, n, src_off, 0) < 0)
			r = pool_errno();
		pool_put(p, &c);
		if (r == 0)
			r = write_range(dst, is_zero(buf, n) ? NULL : buf, n, dst_off);
		src_off += n;
		dst_off += n;
		len -= n;
	}
	return r;
}

/* Copies what it can of [off_in, off_in+len) and returns how much: the
 * caller loops, as copy_file_range(2) allows. When source and target
 * offsets agree modulo the chunk size, whole chunks are shared by the
 * store (image.clone_range) and only the unaligned edges travel over NBD;
 * a range the kernel cut off mid-chunk is ended at the chunk boundary so
 * that the next call starts aligned. */
static int64_t do_copy(struct node *src, uint64_t off_in, struct node *dst, uint64_t off_out,
		       uint64_t len)
{
	char sref[REF_MAX], dref[REF_MAX];
	uint64_t ssize = 0, dsize = 0, done = 0;
	uint32_t cs;
	int r;

	r = node_size_nbd(src, &ssize);
	if (r < 0)
		return r;
	if (off_in >= ssize || len == 0)
		return 0;
	len = MIN(len, ssize - off_in);
	/* cp of a sparse image extends the target extent by extent: the
	 * remembered size spares a reconnect per extent. */
	r = node_grow(dst, off_out + len, true, &dsize);
	if (r < 0)
		return r;
	node_ref(src, sref, sizeof(sref));
	node_ref(dst, dref, sizeof(dref));

	if (fctl_chunk_size(&cs) < 0 || off_in % cs != off_out % cs) {
		len = MIN(len, COPY_SLICE);
		r = copy_via_nbd(src, off_in, dst, off_out, len);
		return r < 0 ? r : (int64_t)len;
	}
	uint64_t head = (cs - off_in % cs) % cs;
	if (head) {
		head = MIN(head, len);
		r = copy_via_nbd(src, off_in, dst, off_out, head);
		if (r < 0)
			return r;
		done = head;
	}
	uint64_t mid = (len - done) / cs * cs;
	/* The store shares a last partial chunk too when the range ends
	 * both images (a whole-image cp). */
	if (off_in + len == ssize && off_out + len == dsize)
		mid = len - done;
	if (mid) {
		r = fctl_image_clone_range(sref, off_in + done, dref, off_out + done, mid);
		if (r == -ENOSYS || r == -EOPNOTSUPP || r == -ENOTSUP) {
			/* A storaged without clone_range: a plain copy, in slices. */
			mid = MIN(mid, COPY_SLICE);
			r = copy_via_nbd(src, off_in + done, dst, off_out + done, mid);
		}
		if (r < 0)
			return done ? (int64_t)done : r;
		done += mid;
	}
	uint64_t tail = len - done;
	if (tail && (mid == 0 || off_in + len == ssize)) {
		r = copy_via_nbd(src, off_in + done, dst, off_out + done, tail);
		if (r < 0)
			return done ? (int64_t)done : r;
		done += tail;
	}
	return (int64_t)done;
}

void fs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct fhandle *in = (struct fhandle *)(uintptr_t)fi_in->fh;
	struct fhandle *out = (struct fhandle *)(uintptr_t)fi_out->fh;

	if (flags != 0 || off_in < 0 || off_out < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (out->n->kind != NODE_IMAGE) {
		fuse_reply_err(req, EROFS);
		return;
	}
	int64_t r = do_copy(in->n, (uint64_t)off_in, out->n, (uint64_t)off_out, len);
	if (r == -EINVAL) {
		/* The target may have been resized elsewhere: ask afresh once. */
		node_forget_size(out->n);
		r = do_copy(in->n, (uint64_t)off_in, out->n, (uint64_t)off_out, len);
	}
	if (r < 0) {
		fuse_reply_err(req, (int)-r);
		return;
	}
	fuse_reply_write(req, (size_t)r);
}

/*
 * The data plane: reads, writes, zeroes, extents and flush of open images.
 *
 * Writes of whole chunks are hashed and stored at once. Partial writes go
 * to an in-memory copy of the chunk (a dirty buffer) that later writes to
 * the same chunk update in place; dirty buffers are written out on FLUSH,
 * on FUA, on the flush timer, and oldest first when the store's dirty limit
 * is passed. Nothing is acknowledged as durable before FLUSH or FUA.
 *
 * A dirty buffer need not hold the whole chunk: writes of whole 4 KiB
 * blocks only mark the blocks they bring (a bitmap after the chunk's bytes
 * in the same allocation), and the stored chunk is read for the others
 * only when something needs them: a read of such a block, an unaligned
 * write, the write-out. So random 4 KiB writes read nothing.
 *
 * Nor need it hold the bytes of those blocks: they are in the write log
 * already (store-wlog.c), in the page cache, so the buffer keeps where
 * they are and its own pages stay untouched (random writes would
 * otherwise fill a second copy of every chunk they touch). A buffer is
 * settled, its log blocks read into it, before anything changes its bytes
 * in place; a flush's write-out reads them itself, and what of the file
 * before its buffers still name is in the chunks it stored.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

uint64_t image_size(struct image *img) { return img->size; }
bool image_readonly(struct image *img) { return img->ro; }
const char *image_name(struct image *img) { return img->name; }
bool image_is_gone(struct image *img) { return atomic_load(&img->gone); }

static int check_range(struct image *img, uint64_t off, uint64_t len)
{
	if (atomic_load(&img->gone))
		return -ESHUTDOWN;
	if (off > img->size || len > img->size - off)
		return -EINVAL;
	return 0;
}

/* ---- dirty buffers: the chunk's bytes, a bitmap of the blocks held, then who it is ---- */

struct dirty_meta {
	uint64_t id;		/* new for every buffer: a flush's write-out tells a replaced one */
	uint64_t seq;		/* image.dirty_seq at its last change */
	uint64_t mark;		/* queue compaction round that saw it */
	uint64_t nlog;		/* blocks held in the write log rather than here */
	uint64_t at[];		/* per block: where in the log, 0 for none (log_at) */
};

/* A block in the log: the file's tag (wlog_tag) in the top bit, then the
 * offset, never 0 (a record starts with its header). */
static uint64_t log_at(unsigned tag, uint64_t off) { return (uint64_t)tag << 63 | off; }
static uint64_t log_off(uint64_t at) { return at & ~(1ull << 63); }
static unsigned log_tag(uint64_t at) { return (unsigned)(at >> 63); }

static size_t dmap_bytes(uint32_t cs)
{
	return (cs / SUB_BLOCK + 7) / 8;
}

/* The chunk's bytes and the bitmap: what a write-out copies. */
static size_t dirty_bytes_of(uint32_t cs)
{
	return cs + DIV_ROUND_UP(dmap_bytes(cs), 8) * 8;
}

static struct dirty_meta *dmeta(uint8_t *b, uint32_t cs)
{
	return (struct dirty_meta *)(void *)(b + dirty_bytes_of(cs));
}

static size_t dlog_bytes(uint32_t cs)
{
	return cs / SUB_BLOCK * sizeof(uint64_t);
}

/* Image write-locked. */
static uint8_t *dirty_new(struct image *img, bool whole)
{
	const uint32_t cs = img->s->chunk_size;
	uint8_t *b = malloc(dirty_bytes_of(cs) + sizeof(struct dirty_meta) + dlog_bytes(cs));

	if (b) {
		memset(b + cs, whole ? 0xff : 0, dmap_bytes(cs));
		*dmeta(b, cs) = (struct dirty_meta){ .id = ++img->dirty_ids, .seq = ++img->dirty_seq };
		memset(dmeta(b, cs)->at, 0, dlog_bytes(cs));
	}
	return b;
}

static bool block_held(const uint8_t *b, uint32_t cs, uint32_t blk)
{
	return b[cs + blk / 8] & (1u << (blk % 8));
}

static void block_mark(uint8_t *b, uint32_t cs, uint32_t blk, bool held)
{
	if (held)
		b[cs + blk / 8] |= (uint8_t)(1u << (blk % 8));
	else
		b[cs + blk / 8] &= (uint8_t)~(1u << (blk % 8));
}

/* Reads n bytes at off of a log file, all of them or an error. */
static int log_pread(int fd, void *dst, size_t n, uint64_t off)
{
	ssize_t got = fd < 0 ? -1 : pread(fd, dst, n, (off_t)off);

	if (got < 0)
		return fd < 0 ? -EIO : -errno;
	return (size_t)got == n ? 0 : -EIO;
}

/* Block k of chunk bytes b read from the log (at: log_at, fd: the files
 * by tag) and marked held. */
static int log_block_in(uint8_t *b, uint32_t cs, uint32_t k, const int fd[2], uint64_t at)
{
	int r = log_pread(fd[log_tag(at)], b + k * SUB_BLOCK, SUB_BLOCK, log_off(at));

	if (r == 0)
		block_mark(b, cs, k, true);
	return r;
}

/* Image write-locked: the buffer's log blocks (only_prev: those in the
 * file before) read into it, before its bytes change or the file goes. */
static int dirty_settle(struct image *img, uint8_t *b, bool only_prev)
{
	const uint32_t cs = img->s->chunk_size;
	struct dirty_meta *m = dmeta(b, cs);
	const int fd[2] = { wlog_fd_of(img, 0), wlog_fd_of(img, 1) };

	for (uint32_t k = 0; m->nlog && k < cs / SUB_BLOCK; k++) {
		if (!m->at[k] || (only_prev && log_tag(m->at[k]) == wlog_tag(img)))
			continue;
		int r = log_block_in(b, cs, k, fd, m->at[k]);
		if (r < 0)
			return r;
		m->at[k] = 0;
		m->nlog--;
	}
	return 0;
}

/* Whether the buffer holds every block of [from, from+len). */
static bool dirty_holds(const uint8_t *b, uint32_t cs, uint32_t from, uint32_t len)
{
	for (uint32_t k = from / SUB_BLOCK; k < DIV_ROUND_UP(from + len, SUB_BLOCK); k++)
		if (!block_held(b, cs, k))
			return false;
	return true;
}

/* A buffer and the stored chunk it was started from. */
struct fill {
	const struct ref *base;
	uint8_t *b;
};

/* Brings in the blocks each buffer lacks from its stored chunk, straight
 * into place, the reads of all of them in as few submissions as can be
 * (random reads one by one would wait on the disk for each). */
static int fill_blocks(struct store *s, const struct fill *f, unsigned n)
{
	const uint32_t cs = s->chunk_size, blocks = cs / SUB_BLOCK;
	struct chunk_req req[CHUNK_READ_BATCH];
	unsigned m = 0;
	int r = 0;

	for (unsigned k = 0; r == 0 && k < n; k++) {
		for (uint32_t i = 0, e; r == 0 && i < blocks; i = e) {
			if (block_held(f[k].b, cs, i)) {
				e = i + 1;
				continue;
			}
			for (e = i + 1; e < blocks && !block_held(f[k].b, cs, e); e++)
				;
			req[m++] = (struct chunk_req){ *f[k].base, i * SUB_BLOCK, (e - i) * SUB_BLOCK,
						       f[k].b + i * SUB_BLOCK };
			if (m == CHUNK_READ_BATCH) {
				r = chunk_read_many(s, req, m);
				m = 0;
			}
		}
	}
	if (r == 0 && m)
		r = chunk_read_many(s, req, m);
	for (unsigned k = 0; r == 0 && k < n; k++)
		memset(f[k].b + cs, 0xff, dmap_bytes(cs));
	return r;
}

static int dirty_fill(struct store *s, const struct ref *ref, uint8_t *b)
{
	return fill_blocks(s, &(struct fill){ ref, b }, 1);
}

/* [from, from+len) of a dirty chunk: its blocks, here or in the log, the
 * stored chunk for the rest. Image locked. */
static int dirty_read(struct image *img, const struct ref *ref, const uint8_t *b, uint32_t from, uint32_t len,
		      uint8_t *out)
{
	const uint32_t cs = img->s->chunk_size;
	const struct dirty_meta *m = dmeta((uint8_t *)b, cs);
	bool all = true;
	int r = 0;

	for (uint32_t k = from / SUB_BLOCK; all && k < DIV_ROUND_UP(from + len, SUB_BLOCK); k++)
		all = block_held(b, cs, k) || m->at[k];
	if (!all && (r = chunk_read(img->s, ref, from, len, out)) < 0)
		return r;
	for (uint32_t k = from / SUB_BLOCK; r == 0 && k < DIV_ROUND_UP(from + len, SUB_BLOCK); k++) {
		uint32_t a = MAX(k * SUB_BLOCK, from), e = MIN((k + 1) * SUB_BLOCK, from + len);

		if (block_held(b, cs, k))
			memcpy(out + (a - from), b + a, e - a);
		else if (m->at[k])
			r = log_pread(wlog_fd_of(img, log_tag(m->at[k])), out + (a - from), e - a,
				      log_off(m->at[k]) + (a - k * SUB_BLOCK));
	}
	return r;
}

/* A chunk's leaf without loading one for a hole: NULL with *hole set. */
static struct leaf *leaf_for_read(struct image *img, uint64_t c, bool *hole, int *err)
{
	uint64_t li = c / NODE_FANOUT;

	*hole = false;
	if (!__atomic_load_n(&img->leaves[li], __ATOMIC_ACQUIRE) && ref_is_hole(&img->lv[1][li])) {
		*hole = true;
		return NULL;
	}
	return tree_leaf(img, li, err);
}

int image_read(struct image *img, void *buf, uint64_t off, uint32_t len)
{
	const uint32_t cs = img->s->chunk_size;
	struct chunk_req req[CHUNK_READ_BATCH];
	unsigned n = 0;
	uint8_t *out = buf;
	int r;

	pthread_rwlock_rdlock(&img->lock);
	r = check_range(img, off, len);
	while (r == 0 && len) {
		uint64_t c = off / cs;
		uint32_t within = (uint32_t)(off % cs);
		uint32_t cnt = MIN(cs - within, len);
		bool hole;
		struct leaf *l = leaf_for_read(img, c, &hole, &r);

		if (hole) {
			memset(out, 0, cnt);
		} else if (!l) {
			break;
		} else if (l->dirty[c % NODE_FANOUT]) {
			r = dirty_read(img, &l->refs[c % NODE_FANOUT], l->dirty[c % NODE_FANOUT], within, cnt, out);
		} else {
			/* Stored chunks are read in batches, one submission each. */
			req[n++] = (struct chunk_req){ l->refs[c % NODE_FANOUT], within, cnt, out };
			if (n == CHUNK_READ_BATCH) {
				r = chunk_read_many(img->s, req, n);
				n = 0;
			}
		}
		out += cnt;
		off += cnt;
		len -= cnt;
	}
	if (r == 0 && n)
		r = chunk_read_many(img->s, req, n);
	pthread_rwlock_unlock(&img->lock);
	return r;
}

static int dirty_push(struct image *img, uint64_t c)
{
	if (img->dirty_n == img->dirty_cap) {
		if (img->dirty_head > img->dirty_n / 2) {
			memmove(img->dirty_q, img->dirty_q + img->dirty_head,
				(img->dirty_n - img->dirty_head) * sizeof *img->dirty_q);
			img->dirty_n -= img->dirty_head;
			img->dirty_head = 0;
		} else {
			size_t cap = img->dirty_cap ? img->dirty_cap * 2 : 256;
			uint64_t *q = realloc(img->dirty_q, cap * sizeof *q);
			if (!q)
				return -ENOMEM;
			img->dirty_q = q;
			img->dirty_cap = cap;
		}
	}
	img->dirty_q[img->dirty_n++] = c;
	return 0;
}

/* Stores one dirty buffer and drops it. */
static int writeback_one(struct image *img, uint64_t c)
{
	struct leaf *l = img->leaves[c / NODE_FANOUT];
	unsigned j = c % NODE_FANOUT;
	struct ref ref, old;
	int r;

	if (!l || !l->dirty[j])
		return 0;	/* overwritten whole, zeroed or cut by a resize since */
	r = dirty_settle(img, l->dirty[j], false);
	if (r == 0)
		r = dirty_fill(img->s, &l->refs[j], l->dirty[j]);
	if (r == 0)
		r = chunk_put_owned(img->s, l->dirty[j], img->epoch, true, &ref);
	if (r < 0)
		return r;
	old = l->refs[j];
	l->refs[j] = ref;
	/* Only an earlier write-out's record can go: no log names it. */
	if (!ref_eq(&old, &ref) && !img->writing_out)
		chunk_release(img->s, &old, 1, img->epoch, false);
	free(l->dirty[j]);
	l->dirty[j] = NULL;
	atomic_fetch_sub(&img->s->dirty_bytes, img->s->chunk_size);
	tree_mark_chunk(img, c);
	return 0;
}

/* The blocks the next queued buffers lack, read together. */
static int fill_ahead(struct image *img)
{
	const uint32_t cs = img->s->chunk_size;
	struct fill f[CHUNK_READ_BATCH];
	unsigned n = 0;
	int r = 0;

	for (size_t i = img->dirty_head; r == 0 && i < img->dirty_n && n < CHUNK_READ_BATCH; i++) {
		uint64_t c = img->dirty_q[i];
		struct leaf *l = img->leaves[c / NODE_FANOUT];
		uint8_t *b = l ? l->dirty[c % NODE_FANOUT] : NULL;

		if (b && (r = dirty_settle(img, b, false)) == 0 && !dirty_holds(b, cs, 0, cs))
			f[n++] = (struct fill){ &l->refs[c % NODE_FANOUT], b };
	}
	return r < 0 ? r : fill_blocks(img->s, f, n);
}

/* Oldest first: all of this image's, or until the store's dirty bytes are
 * at most target. */
static int writeback_queue(struct image *img, uint64_t target, bool all)
{
	for (unsigned i = 0; img->dirty_head < img->dirty_n && (all || atomic_load(&img->s->dirty_bytes) > target); i++) {
		int r = i % CHUNK_READ_BATCH ? 0 : fill_ahead(img);
		if (r == 0)
			r = writeback_one(img, img->dirty_q[img->dirty_head]);
		if (r < 0)
			return r;
		img->dirty_head++;
	}
	if (img->dirty_head == img->dirty_n)
		img->dirty_head = img->dirty_n = 0;
	return 0;
}

static int writeback_until(struct image *img, uint64_t target)
{
	return writeback_queue(img, target, false);
}

static int image_writeback(struct image *img)
{
	return writeback_queue(img, 0, true);
}

/* The refs a write replaced, for chunk_release once it is logged. Past
 * RELEASE_MAX (a trim of a whole disk) the rest are left to gc. */
#define RELEASE_MAX 1024u
struct replaced {
	struct ref old[RELEASE_MAX];
	size_t n;
};

/* Where byte pos of a write of [off, off+len) is in its log record, whose
 * data starts at data_at: all its bytes, or with pre the bytes before and
 * after the whole chunks. */
static uint64_t logged_at(uint64_t pos, uint64_t off, uint64_t len, uint32_t cs, bool pre, uint64_t pre_first,
			  uint64_t data_at)
{
	uint64_t tail_at = (off + len) / cs * cs;

	if (!pre || pos < pre_first * cs)
		return data_at + (pos - off);
	return data_at + (pre_first * cs - off) + (pos - tail_at);
}

/* Image write-locked: the blocks of [within, within+n) of buffer b are in
 * the current log file from at on. */
static void dirty_log_blocks(struct image *img, uint8_t *b, uint32_t within, uint32_t n, uint64_t at)
{
	const uint32_t cs = img->s->chunk_size;
	struct dirty_meta *m = dmeta(b, cs);

	for (uint32_t k = within / SUB_BLOCK; k < (within + n) / SUB_BLOCK; k++, at += SUB_BLOCK) {
		m->nlog += !m->at[k];
		m->at[k] = log_at(wlog_tag(img), at);
		block_mark(b, cs, k, false);
	}
}

/* Writes src (NULL = zeroes) into [off, off+len). Image write-locked.
 * pre, when set, holds the refs of the whole chunks from chunk pre_first
 * on, already stored. rep, when set, collects the refs of whole chunks
 * replaced. data_at, when not 0, is where the write's record data starts
 * in the current log file: whole blocks are left there. */
static int write_range(struct image *img, const uint8_t *src, uint64_t off, uint64_t len,
		       const struct ref *pre, uint64_t pre_first, struct replaced *rep, uint64_t data_at)
{
	const uint32_t cs = img->s->chunk_size;
	const uint64_t off0 = off, len0 = len;
	int r = 0;

	while (len) {
		uint64_t c = off / cs;
		uint32_t within = (uint32_t)(off % cs);
		uint32_t n = (uint32_t)MIN((uint64_t)(cs - within), len);
		unsigned j = c % NODE_FANOUT;
		struct leaf *l = tree_leaf(img, c / NODE_FANOUT, &r);

		if (!l)
			return r;
		if (n == cs) {
			/* A whole chunk: store it now (a hole for zeroes), no copy kept. */
			struct ref ref = { 0 };
			if (src && pre) {
				ref = pre[c - pre_first];
			} else if (src) {
				r = chunk_put_owned(img->s, src, img->epoch, false, &ref);
				if (r < 0)
					return r;
			}
			if (l->dirty[j]) {
				free(l->dirty[j]);
				l->dirty[j] = NULL;
				atomic_fetch_sub(&img->s->dirty_bytes, cs);
			}
			if (rep && rep->n < RELEASE_MAX && !ref_is_hole(&l->refs[j]) && !ref_eq(&l->refs[j], &ref))
				rep->old[rep->n++] = l->refs[j];
			l->refs[j] = ref;
			tree_mark_chunk(img, c);
		} else {
			/* Whole blocks need nothing of the stored chunk; others need their blocks. */
			bool blocks = within % SUB_BLOCK == 0 && n % SUB_BLOCK == 0;
			bool by_log = blocks && src && data_at;
			uint8_t *b = l->dirty[j];
			struct dirty_meta *m = b ? dmeta(b, cs) : NULL;

			if (!b) {
				b = dirty_new(img, !blocks);
				if (!b)
					return -ENOMEM;
				r = blocks ? 0 : chunk_read(img->s, &l->refs[j], 0, cs, b);
				if (r == 0)
					r = dirty_push(img, c);
				if (r < 0) {
					free(b);
					return r;
				}
				l->dirty[j] = b;
				atomic_fetch_add(&img->s->dirty_bytes, cs);
				tree_mark_chunk(img, c);
			} else if (m->nlog && !by_log && (r = dirty_settle(img, b, false)) < 0) {
				return r;
			} else if (!blocks && !dirty_holds(b, cs, within, n) &&
				   (r = dirty_fill(img->s, &l->refs[j], b)) < 0) {
				return r;
			}
			if (by_log)
				dirty_log_blocks(img, b, within, n,
						 logged_at(off, off0, len0, cs, pre != NULL, pre_first, data_at));
			else if (src)
				memcpy(b + within, src, n);
			else
				memset(b + within, 0, n);
			dmeta(b, cs)->seq = ++img->dirty_seq;
			for (uint32_t k = within / SUB_BLOCK; blocks && !by_log && k < (within + n) / SUB_BLOCK; k++)
				block_mark(b, cs, k, true);
		}
		if (src)
			src += n;
		off += n;
		len -= n;
	}
	if (atomic_load(&img->s->dirty_bytes) > img->s->opts.dirty_limit)
		r = writeback_until(img, img->s->opts.dirty_limit / 2);
	return r;
}

/* Hashes and stores the whole chunks of a write before the image lock is
 * taken, so writers to one image (NBD multi-conn, parallel requests) hash
 * in parallel and readers are not held up meanwhile. Concurrent writes to
 * the same range are unordered in NBD, so applying the refs later is fine. */
static int store_whole_chunks(struct image *img, const uint8_t *buf, uint64_t off, uint64_t len,
			      struct ref **pre, uint64_t *pre_first)
{
	const uint32_t cs = img->s->chunk_size;
	uint64_t a = DIV_ROUND_UP(off, cs), b = (off + len) / cs;
	uint64_t epoch = atomic_load(&img->epoch);	/* an older one only keeps them */

	*pre = NULL;
	if (b <= a || b - a < 2)
		return 0;	/* one chunk or less: no parallelism to gain */
	*pre = malloc((b - a) * sizeof **pre);
	if (!*pre)
		return -ENOMEM;
	for (uint64_t c = a; c < b; c++) {
		int r = chunk_put_owned(img->s, buf + (c * cs - off), epoch, false, &(*pre)[c - a]);
		if (r < 0) {
			free(*pre);
			*pre = NULL;
			return r;
		}
	}
	*pre_first = a;
	return 0;
}

static int modify(struct image *img, const void *buf, uint64_t off, uint64_t len, unsigned flags)
{
	_cleanup_free_ struct ref *pre = NULL;
	_cleanup_free_ struct replaced *rep = NULL;
	uint64_t pre_first = 0, epoch = 0, data_at = 0;
	int r;

	/* A look first, so a bad request stores nothing. */
	pthread_rwlock_rdlock(&img->lock);
	r = check_range(img, off, len);
	if (r == 0 && img->ro)
		r = -EROFS;
	pthread_rwlock_unlock(&img->lock);
	if (r == 0 && buf)
		r = store_whole_chunks(img, buf, off, len, &pre, &pre_first);
	if (r == 0 && len >= img->s->chunk_size && !(rep = malloc(sizeof *rep)))
		r = -ENOMEM;
	if (r < 0)
		return r;
	if (rep)
		rep->n = 0;

	pthread_rwlock_wrlock(&img->lock);
	r = check_range(img, off, len);	/* a resize may have come in between */
	if (r == 0 && img->ro)
		r = -EROFS;
	/* In the page cache before it is acknowledged: a killed hutch-storaged
	 * replays it at its next start. Logged first, so the dirty buffers can
	 * point into the log. */
	if (r == 0)
		r = wlog_write(img, buf, off, len, pre, pre_first, &data_at);
	if (r == 0)
		r = write_range(img, buf, off, len, pre, pre_first, rep, data_at);
	epoch = img->writing_out ? 0 : img->epoch;	/* 0: nothing is released */
	/* A log as large as the dirty limit: flushing the image starts a new one. */
	bool log_full = img->wlog_end > img->s->opts.dirty_limit;
	/* Durable before the reply; or the log twice that: the flusher falls
	 * behind, and this writer waits for a flush. */
	bool flush_now = (flags & IMAGE_FUA) || img->wlog_end > 2 * img->s->opts.dirty_limit;
	pthread_rwlock_unlock(&img->lock);
	/* Logged: what it replaced of this epoch's own records can go. */
	if (r == 0 && rep)
		chunk_release(img->s, rep->old, rep->n, epoch, true);
	if (r == 0 && flush_now)
		r = image_flush(img);
	else if (r == 0 && log_full)
		flusher_request(img);
	return r;
}

/* Marks chunk c as waiting for a whole write (waiting) or as written whole. */
static int unresolved_set(struct refmap *m, uint64_t c, bool waiting)
{
	struct ref key = { c, 0, 1 };
	bool added;
	uint64_t *v = waiting ? refmap_get(m, &key, &added) : refmap_find(m, &key);

	if (waiting && !v)
		return -ENOMEM;
	if (v)
		*v = waiting;
	return 0;
}

int image_replay_write(struct image *img, const uint8_t *buf, uint64_t off, uint64_t len, const struct ref *pre,
		       uint64_t pre_first, struct refmap *unresolved)
{
	const uint32_t cs = img->s->chunk_size;
	uint64_t first = DIV_ROUND_UP(off, cs), end = (off + len) / cs;
	_cleanup_free_ struct ref *refs = NULL;
	int r = 0;

	/* A ref the store lacks was recycled after a later write stored its
	 * chunk whole (store-recycle.c): a hole until that write comes. */
	if (pre && end > pre_first) {
		refs = malloc((end - pre_first) * sizeof *refs);
		if (!refs)
			return -ENOMEM;
		memcpy(refs, pre, (end - pre_first) * sizeof *refs);
	}
	for (uint64_t c = first; r == 0 && c < end; c++) {
		struct idx_ent e;
		bool gone = refs && !ref_is_hole(&refs[c - pre_first]) &&
			    index_lookup(&img->s->index, &refs[c - pre_first], &e) < 0;

		if (gone)
			memset(&refs[c - pre_first], 0, sizeof *refs);
		r = unresolved_set(unresolved, c, gone);
	}
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&img->lock);
	r = check_range(img, off, len);
	if (r == 0)
		r = write_range(img, buf, off, len, refs, pre_first, NULL, 0);
	pthread_rwlock_unlock(&img->lock);
	return r;
}

int image_replay_resize(struct image *img, uint64_t size)
{
	pthread_rwlock_wrlock(&img->lock);
	int r = tree_resize(img, size);
	pthread_rwlock_unlock(&img->lock);
	return r;
}

int image_write(struct image *img, const void *buf, uint64_t off, uint32_t len, unsigned flags)
{
	return modify(img, buf, off, len, flags);
}

int image_zero(struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
	return modify(img, NULL, off, len, flags);
}

int image_trim(struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
	return modify(img, NULL, off, len, flags);
}

/* The root as the tree stands (clean trees only). */
static bool tree_root_is(struct image *img, const struct ref *r)
{
	static const struct ref hole;

	return ref_eq(img->g.depth ? &img->lv[img->g.depth][0] : &hole, r);
}

/* ---- a flush's write-out, alongside writers ---- */

/* A dirty chunk being written out: a copy of its buffer taken under the
 * read lock, filled from its base and stored without a lock. */
struct writeout {
	uint64_t c, id, seq;
	struct ref base, ref;
	uint8_t *copy;
	uint64_t *at;		/* the buffer's log blocks */
	int fd[2];		/* the log files, by tag */
};

/* Image read-locked: what of buffer b the write-out needs, without
 * touching the pages of blocks it does not hold. */
static void writeout_copy(struct image *img, const uint8_t *b, struct writeout *w)
{
	const uint32_t cs = img->s->chunk_size;
	const struct dirty_meta *m = dmeta((uint8_t *)b, cs);

	memcpy(w->copy + cs, b + cs, dmap_bytes(cs));
	for (uint32_t k = 0; k < cs / SUB_BLOCK; k++)
		if (block_held(b, cs, k))
			memcpy(w->copy + k * SUB_BLOCK, b + k * SUB_BLOCK, SUB_BLOCK);
	memcpy(w->at, m->at, dlog_bytes(cs));
	w->fd[0] = wlog_fd_of(img, 0);
	w->fd[1] = wlog_fd_of(img, 1);
}

/* No lock: the copy's log blocks read in. The file is not closed while
 * the flush runs, and what is in it does not change. */
static int writeout_read_log(uint32_t cs, struct writeout *w)
{
	int r = 0;

	for (uint32_t k = 0; r == 0 && k < cs / SUB_BLOCK; k++)
		if (w->at[k])
			r = log_block_in(w->copy, cs, k, w->fd, w->at[k]);
	return r;
}

/* Image write-locked: the stored chunk becomes the chunk's base unless the
 * chunk was replaced, zeroed or cut since the copy. */
static void writeout_install(struct image *img, const struct writeout *w)
{
	const uint32_t cs = img->s->chunk_size;
	struct leaf *l = w->c < img->g.nchunks ? img->leaves[w->c / NODE_FANOUT] : NULL;
	unsigned j = w->c % NODE_FANOUT;
	uint8_t *b = l ? l->dirty[j] : NULL;
	struct ref old;

	if (!b || dmeta(b, cs)->id != w->id)
		return;	/* the stored chunk is garbage for gc */
	old = l->refs[j];
	l->refs[j] = w->ref;
	tree_mark_chunk(img, w->c);
	/* Written to since the copy: the buffer stays over the new base,
	 * whose blocks it lacks are the old base's. Its blocks still in the
	 * file before were copied, so they are the new base's. */
	struct dirty_meta *m = dmeta(b, cs);
	if (m->seq == w->seq) {
		free(b);
		l->dirty[j] = NULL;
		atomic_fetch_sub(&img->s->dirty_bytes, cs);
	} else {
		for (uint32_t k = 0; m->nlog && k < cs / SUB_BLOCK; k++) {
			if (m->at[k] && log_tag(m->at[k]) != wlog_tag(img)) {
				m->at[k] = 0;
				m->nlog--;
			}
		}
	}
	/* No later batch reads it: a chunk's base is in one chunk only while
	 * it may be released (a second would be a dedup hit). */
	if (!ref_eq(&old, &w->ref))
		chunk_release(img->s, &old, 1, img->epoch, false);
}

/* Writes out the chunks of list that still have dirty buffers, a batch at
 * a time: copied under the read lock, filled, hashed and stored with no
 * lock held, put in under the write lock. */
static int writeout_concurrent(struct image *img, const uint64_t *list, size_t n)
{
	const uint32_t cs = img->s->chunk_size;
	struct writeout w[CHUNK_READ_BATCH];
	size_t i = 0;
	if (!n)
		return 0;
	/* Copies for one batch (a FUA write's flush has few chunks). */
	const size_t each = dirty_bytes_of(cs) + dlog_bytes(cs);
	_cleanup_free_ uint8_t *mem = malloc(MIN(n, (size_t)CHUNK_READ_BATCH) * each);
	int r = mem ? 0 : -ENOMEM;

	while (r == 0 && i < n) {
		unsigned k = 0;

		pthread_rwlock_rdlock(&img->lock);
		for (; i < n && k < CHUNK_READ_BATCH; i++) {
			uint64_t c = list[i];
			struct leaf *l = c < img->g.nchunks ? img->leaves[c / NODE_FANOUT] : NULL;
			uint8_t *b = l ? l->dirty[c % NODE_FANOUT] : NULL;

			if (!b)
				continue;
			w[k] = (struct writeout){ c, dmeta(b, cs)->id, dmeta(b, cs)->seq, l->refs[c % NODE_FANOUT],
						  { 0 }, mem + k * each, (uint64_t *)(void *)(mem + k * each + dirty_bytes_of(cs)),
						  { -1, -1 } };
			writeout_copy(img, b, &w[k]);
			k++;
		}
		pthread_rwlock_unlock(&img->lock);
		struct fill f[CHUNK_READ_BATCH];
		for (unsigned j = 0; r == 0 && j < k; j++) {
			f[j] = (struct fill){ &w[j].base, w[j].copy };
			r = writeout_read_log(cs, &w[j]);
		}
		if (r == 0)
			r = fill_blocks(img->s, f, k);
		for (unsigned j = 0; r == 0 && j < k; j++)
			r = chunk_put(img->s, REC_DATA, w[j].copy, cs, &w[j].ref);
		if (r < 0)
			break;
		pthread_rwlock_wrlock(&img->lock);
		for (unsigned j = 0; j < k; j++)
			writeout_install(img, &w[j]);
		pthread_rwlock_unlock(&img->lock);
	}
	return r;
}

/* Image write-locked: the queue keeps each chunk that has a buffer, once. */
static void dirty_queue_compact(struct image *img)
{
	const uint32_t cs = img->s->chunk_size;
	uint64_t round = ++img->dirty_seq;
	size_t w = 0;

	for (size_t i = img->dirty_head; i < img->dirty_n; i++) {
		uint64_t c = img->dirty_q[i];
		struct leaf *l = c < img->g.nchunks ? img->leaves[c / NODE_FANOUT] : NULL;
		uint8_t *b = l ? l->dirty[c % NODE_FANOUT] : NULL;

		if (!b || dmeta(b, cs)->mark == round)
			continue;
		dmeta(b, cs)->mark = round;
		img->dirty_q[w++] = c;
	}
	img->dirty_head = 0;
	img->dirty_n = w;
}

/* Image write-locked: no buffer keeps blocks in the log file before,
 * which can then be closed. */
static int dirty_settle_prev(struct image *img)
{
	const uint32_t cs = img->s->chunk_size;
	int r = 0;

	for (size_t i = img->dirty_head; r == 0 && i < img->dirty_n; i++) {
		uint64_t c = img->dirty_q[i];
		struct leaf *l = c < img->g.nchunks ? img->leaves[c / NODE_FANOUT] : NULL;
		uint8_t *b = l ? l->dirty[c % NODE_FANOUT] : NULL;

		if (b && dmeta(b, cs)->nlog)
			r = dirty_settle(img, b, true);
	}
	return r;
}

int image_prepare_flush(struct image *img, struct ref *root)
{
	int r = image_writeback(img);

	if (r == 0)
		r = tree_write(img, root);
	return r;
}

int image_flush(struct image *img)
{
	struct store *s = img->s;
	_cleanup_free_ uint64_t *list = NULL;
	struct ref root;
	uint64_t size, logged = 0;
	size_t n;
	int r = 0;

	/* Flushes of one image are serialised so heads never go backwards.
	 * Writers carry on while dirty chunks are written out and while
	 * packs and heads are synced: the write lock is held only to start a
	 * new log and to write the nodes. */
	pthread_mutex_lock(&img->flush_lock);
	pthread_rwlock_wrlock(&img->lock);
	if (atomic_load(&img->gone)) {
		pthread_rwlock_unlock(&img->lock);
		r = -ESHUTDOWN;
		goto out;
	}
	if (img->ro || (!img->tree_dirty && img->dirty_head == img->dirty_n && img->size == img->flushed_size &&
			tree_root_is(img, &img->flushed_root))) {
		pthread_rwlock_unlock(&img->lock);
		goto out;
	}
	/* What is dirty now goes into this flush's root; later writes go to
	 * a new log file, replayed over that root after a crash. */
	n = img->dirty_n - img->dirty_head;
	/* A failed flush before may have left buffers on the file before. */
	if (img->wlog_prev_fd >= 0 && (r = dirty_settle_prev(img)) < 0) {
		pthread_rwlock_unlock(&img->lock);
		goto out;
	}
	list = malloc(MAX(n, (size_t)1) * sizeof *list);
	if (list) {
		if (n)
			memcpy(list, img->dirty_q + img->dirty_head, n * sizeof *list);
		logged = wlog_rotate(img);
		img->writing_out = true;
	}
	pthread_rwlock_unlock(&img->lock);
	r = list ? writeout_concurrent(img, list, n) : -ENOMEM;

	pthread_rwlock_wrlock(&img->lock);
	if (r == 0 && atomic_load(&img->gone))
		r = -ESHUTDOWN;
	if (r == 0)
		r = tree_write(img, &root);
	size = img->size;
	/* The root holds this epoch's records: a new epoch for the records
	 * only later writes hold. */
	if (r == 0)
		atomic_store(&img->epoch, epoch_next(s));
	img->writing_out = false;
	/* The file before goes once no buffer has blocks in it (after a
	 * failed write-out; otherwise the installs took them out). */
	int settled = dirty_settle_prev(img);
	if (settled == 0)
		wlog_close_prev(img);
	else if (r == 0)
		r = settled;
	dirty_queue_compact(img);
	pthread_rwlock_unlock(&img->lock);
	if (r < 0)
		goto out;
	/* Chunks first, then the head that points at them. */
	r = packs_sync(s);
	if (r == 0 && ref_eq(&root, &img->flushed_root) && size == img->flushed_size)
		wlog_drop(img, logged);
	if (r < 0 || (ref_eq(&root, &img->flushed_root) && size == img->flushed_size))
		goto out;

	pthread_mutex_lock(&s->lock);
	struct head *h = head_find(s, img->name);
	if (h && !atomic_load(&img->gone)) {
		struct head_change c = { .op = HEAD_PUT, .h = *h };
		c.h.root = root;
		c.h.size = size;
		c.h.gen = s->next_gen;
		r = heads_commit(s, &c, 1);
	}
	pthread_mutex_unlock(&s->lock);
	if (r == 0) {
		img->flushed_root = root;
		img->flushed_size = size;
		wlog_drop(img, logged);
	}
out:
	pthread_mutex_unlock(&img->flush_lock);
	return r;
}

int image_extents(struct image *img, uint64_t off, uint64_t len, image_extent_fn fn, void *opaque)
{
	const uint32_t cs = img->s->chunk_size;
	uint64_t end, run_start = off;
	uint32_t run_flags = 0;
	bool have_run = false;
	int r;

	pthread_rwlock_rdlock(&img->lock);
	r = check_range(img, off, len);
	if (r < 0)
		goto out;
	end = off + len;
	while (off < end) {
		uint64_t c = off / cs, next;
		uint32_t flags;
		bool hole;
		struct leaf *l = leaf_for_read(img, c, &hole, &r);

		if (hole) {
			flags = EXTENT_HOLE | EXTENT_ZERO;
			next = (c / NODE_FANOUT + 1) * NODE_FANOUT * (uint64_t)cs;
		} else if (!l) {
			goto out;
		} else {
			unsigned j = c % NODE_FANOUT;
			if (l->dirty[j])
				/* A buffer without all its blocks here counts as data. */
				flags = !dmeta(l->dirty[j], cs)->nlog && dirty_holds(l->dirty[j], cs, 0, cs) &&
					buf_is_zero(l->dirty[j], cs) ? EXTENT_ZERO : 0;
			else
				flags = ref_is_hole(&l->refs[j]) ? EXTENT_HOLE | EXTENT_ZERO : 0;
			next = (c + 1) * cs;
		}
		next = MIN(next, img->size);
		if (have_run && flags != run_flags) {
			r = fn(opaque, run_start, off - run_start, run_flags);
			if (r != 0)
				goto out_stop;
			run_start = off;
		}
		run_flags = flags;
		have_run = true;
		off = next;
	}
	/* The last extent may run past the request, to the end of its chunk run. */
	if (have_run)
		r = fn(opaque, run_start, off - run_start, run_flags);
out_stop:
	if (r > 0)
		r = 0;
out:
	pthread_rwlock_unlock(&img->lock);
	return r;
}

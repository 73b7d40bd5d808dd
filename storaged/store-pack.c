/*
 * Pack files: chunk records appended one after another.
 *
 * A record is a 48-byte header, a checksum per 4 KiB of payload, then the
 * payload. The header checksum covers the header and the sub-block
 * checksums, so a scan can tell a whole record from a torn or corrupt one,
 * and a read verifies only the sub-blocks it touches.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY	/* XXH32_state_t on the stack */
#include <xxhash.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define MAX_SUBS (STORE_MAX_CHUNK_SIZE / SUB_BLOCK)

static void le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint32_t hdr_csum(const uint8_t *hdr, const uint32_t *subs, uint32_t nsub)
{
	XXH32_state_t st;

	XXH32_reset(&st, 0);
	XXH32_update(&st, hdr, 44);
	XXH32_update(&st, subs, 4ull * nsub);
	return XXH32_digest(&st);
}

static void hdr_encode(const struct rec_hdr *h, const uint32_t *subs, uint8_t out[PACK_HDR_SIZE])
{
	memset(out, 0, PACK_HDR_SIZE);
	le32(out, PACK_MAGIC);
	out[4] = h->type;
	le32(out + 8, h->len);
	le32(out + 12, h->slot);
	le64(out + 16, h->h0);
	le64(out + 24, h->h1);
	le32(out + 32, h->nsub);
	le32(out + 44, hdr_csum(out, subs, h->nsub));
}

/* Decodes a header whose sub checksums are already in subs. */
static int hdr_decode(const uint8_t in[PACK_HDR_SIZE], struct rec_hdr *h)
{
	if (rd32(in) != PACK_MAGIC)
		return -EBADMSG;
	h->type = in[4];
	h->len = rd32(in + 8);
	h->slot = rd32(in + 12);
	h->h0 = rd64(in + 16);
	h->h1 = rd64(in + 24);
	h->nsub = rd32(in + 32);
	if ((h->type != REC_DATA && h->type != REC_NODE) || h->len == 0 ||
	    h->len > STORE_MAX_CHUNK_SIZE || h->nsub != DIV_ROUND_UP(h->len, SUB_BLOCK) ||
	    h->slot == 0)
		return -EBADMSG;
	return 0;
}

int pack_path(const struct store *s, uint32_t id, char *buf, size_t sz)
{
	int n = snprintf(buf, sz, "%s/packs/%08x.pack", s->dir, id);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

int pack_open(struct store *s, uint32_t id, bool create, struct pack **out)
{
	char path[4200];
	struct stat st;
	struct pack *p;
	int fd, r;

	r = pack_path(s, id, path, sizeof path);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	p = calloc(1, sizeof *p);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	p->id = id;
	p->fd = fd;
	p->size = p->synced = (uint64_t)st.st_size;
	*out = p;
	return 0;
}

void pack_free(struct pack *p)
{
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

void pack_sub_csums(const struct rec_hdr *h, const void *payload, uint32_t *subs)
{
	const uint8_t *pl = payload;

	for (uint32_t i = 0; i < h->nsub; i++) {
		uint32_t n = MIN(SUB_BLOCK, h->len - i * SUB_BLOCK);
		subs[i] = sub_csum(pl + (uint64_t)i * SUB_BLOCK, n);
	}
}

/* One pwritev of header, sub checksums and payload at `at`. */
static int record_write(struct pack *p, const struct rec_hdr *h, const void *payload, const uint32_t *given_subs,
			uint64_t at)
{
	uint32_t own[MAX_SUBS];
	const uint32_t *subs = given_subs;
	uint8_t hdr[PACK_HDR_SIZE];
	struct iovec iov[3];
	ssize_t w;

	if (!subs) {
		pack_sub_csums(h, payload, own);
		subs = own;
	}
	hdr_encode(h, subs, hdr);
	iov[0] = (struct iovec){ hdr, PACK_HDR_SIZE };
	iov[1] = (struct iovec){ (void *)subs, 4ull * h->nsub };
	iov[2] = (struct iovec){ (void *)payload, h->len };
	w = pwritev(p->fd, iov, 3, (off_t)at);
	if (w < 0 || (uint64_t)w != rec_size(h->len))
		return w < 0 ? -errno : -ENOSPC;
	return 0;
}

int pack_append(struct pack *p, const struct rec_hdr *h, const void *payload, const uint32_t *subs,
		uint64_t *off)
{
	uint64_t at = p->size;
	int r = record_write(p, h, payload, subs, at);

	if (r < 0) {
		/* Cut a partial record back so the pack stays a sequence of whole records. */
		if (ftruncate(p->fd, (off_t)at) < 0)
			log_warn("pack %08x: cannot cut back a failed append: %s", p->id, strerror(errno));
		return r;
	}
	p->size = at + rec_size(h->len);
	*off = at;
	return 0;
}

int pack_overwrite(struct pack *p, const struct rec_hdr *h, const void *payload, const uint32_t *subs,
		   uint64_t off)
{
	/* A failure leaves a damaged record no index entry names: the scan
	 * at the next start skips it. */
	int r = record_write(p, h, payload, subs, off);

	/* The next sync must cover it (a flush syncs packs written since),
	 * and a sync already under way may have missed it. */
	p->synced = MIN(p->synced, off);
	p->rewrites++;
	return r;
}

int pack_read_hdr(int fd, uint64_t off, struct rec_hdr *h, uint32_t *subs, uint32_t max_subs)
{
	uint8_t hdr[PACK_HDR_SIZE];
	int r;

	r = pread_all(fd, hdr, sizeof hdr, off);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	r = hdr_decode(hdr, h);
	if (r < 0)
		return r;
	if (h->nsub > max_subs)
		return -EBADMSG;
	r = pread_all(fd, subs, 4ull * h->nsub, off + PACK_HDR_SIZE);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	if (hdr_csum(hdr, subs, h->nsub) != rd32(hdr + 44))
		return -EBADMSG;
	return 0;
}

/* Reads straight into the caller's buffer when the request is sub-block
 * aligned, else into a bounce buffer. */
int span_init(struct span *sp, uint32_t from, uint32_t len, uint32_t plen, void *buf)
{
	sp->first = from / SUB_BLOCK;
	sp->last = (from + len - 1) / SUB_BLOCK;
	sp->start = sp->first * SUB_BLOCK;
	sp->end = MIN((sp->last + 1) * SUB_BLOCK, plen);
	sp->tmp = NULL;
	sp->buf = buf;
	if (sp->start != from || sp->end != from + len) {
		sp->tmp = malloc(sp->end - sp->start);
		if (!sp->tmp)
			return -ENOMEM;
		sp->buf = sp->tmp;
	}
	return 0;
}

/* Checks the sub-blocks read and hands the requested bytes over. */
int span_finish(struct span *sp, const uint32_t *subs, uint32_t plen, uint32_t from,
		       uint32_t len, void *buf)
{
	int r = 0;

	for (uint32_t i = sp->first; i <= sp->last && r == 0; i++) {
		uint32_t n = MIN(SUB_BLOCK, plen - i * SUB_BLOCK);
		if (sub_csum(sp->buf + (i - sp->first) * SUB_BLOCK, n) != subs[i])
			r = -EIO;
	}
	if (r == 0 && sp->tmp)
		memcpy(buf, sp->tmp + (from - sp->start), len);
	free(sp->tmp);
	sp->tmp = NULL;
	return r;
}

int pack_read_payload(int fd, uint64_t off, const struct rec_hdr *h, const uint32_t *subs,
		      uint32_t from, uint32_t len, void *buf)
{
	uint64_t base = off + PACK_HDR_SIZE + 4ull * h->nsub;
	struct span sp;
	int r;

	if (len == 0)
		return 0;
	if ((uint64_t)from + len > h->len)
		return -EINVAL;
	r = span_init(&sp, from, len, h->len, buf);
	if (r < 0)
		return r;
	r = pread_all(fd, sp.buf, sp.end - sp.start, base + sp.start);
	if (r < 0) {
		free(sp.tmp);
		return r == -ENODATA ? -EIO : r;
	}
	return span_finish(&sp, subs, h->len, from, len, buf);
}

int rec_read_prepare(struct store *s, struct rec_read *rr, int fd, const struct idx_ent *e,
		     uint32_t from, uint32_t len, void *buf)
{
	uint32_t nsub = DIV_ROUND_UP(e->len, SUB_BLOCK);
	size_t dlen;
	int r;

	if (len == 0 || (uint64_t)from + len > e->len || nsub > MAX_SUBS)
		return -EINVAL;
	rr->e = *e;
	rr->fd = fd;
	rr->from = from;
	rr->len = len;
	rr->out = buf;
	rr->hlen = PACK_HDR_SIZE + 4ull * nsub;
	r = span_init(&rr->sp, from, len, e->len, buf);
	if (r < 0)
		return r;
	dlen = rr->sp.end - rr->sp.start;
	rr->iov[0] = (struct iovec){ rr->hdr, rr->hlen };
	rr->iov[1] = (struct iovec){ rr->sp.buf, dlen };
	rr->hdr_cached = hdr_cache_get(s, e, rr->hdr, rr->hlen);
	if (rr->hdr_cached) {
		rr->op[0] = (struct rec_op){ &rr->iov[1], 1, e->off + rr->hlen + rr->sp.start, dlen };
		rr->nops = 1;
	} else if (rr->sp.start == 0) {
		/* Reads that start the payload get header and data in one go. */
		rr->op[0] = (struct rec_op){ rr->iov, 2, e->off, rr->hlen + dlen };
		rr->nops = 1;
	} else {
		rr->op[0] = (struct rec_op){ &rr->iov[0], 1, e->off, rr->hlen };
		rr->op[1] = (struct rec_op){ &rr->iov[1], 1, e->off + rr->hlen + rr->sp.start, dlen };
		rr->nops = 2;
	}
	return 0;
}

int rec_read_finish(struct store *s, struct rec_read *rr, int res)
{
	uint32_t nsub = (uint32_t)((rr->hlen - PACK_HDR_SIZE) / 4);
	uint32_t subs[MAX_SUBS];
	struct rec_hdr h;

	if (res == 0) {
		memcpy(subs, rr->hdr + PACK_HDR_SIZE, 4ull * nsub);
		if (hdr_decode(rr->hdr, &h) < 0 || h.nsub != nsub ||
		    hdr_csum(rr->hdr, subs, nsub) != rd32(rr->hdr + 44) || h.h0 != rr->e.h0 ||
		    h.h1 != rr->e.h1 || h.slot != rr->e.slot || h.len != rr->e.len ||
		    h.type != rr->e.type)
			res = -EIO;
	}
	if (res < 0) {
		free(rr->sp.tmp);
		rr->sp.tmp = NULL;
		return res;
	}
	if (!rr->hdr_cached)
		hdr_cache_put(s, &rr->e, rr->hdr, rr->hlen);
	return span_finish(&rr->sp, subs, rr->e.len, rr->from, rr->len, rr->out);
}

/* Reads [from, from+len) of the record e points at, checking its header
 * against e and the checksums of the sub-blocks touched: one preadv when
 * the span starts the payload (whole-chunk reads), two reads otherwise. */
static int record_read(struct store *s, int fd, const struct idx_ent *e, uint32_t from, uint32_t len,
		       void *buf)
{
	struct rec_read *rr = rec_read_scratch();
	int r, res;

	if (len == 0)
		return 0;
	if (!rr)
		return -ENOMEM;
	r = rec_read_prepare(s, rr, fd, e, from, len, buf);
	if (r < 0)
		return r;
	r = rec_read_batch(s, rr, 1, &res);
	return rec_read_finish(s, rr, r < 0 ? r : res);
}

/* Looks for the next whole record after a bad one. */
static int scan_resync(int fd, uint64_t from, uint64_t file_size, uint64_t *next)
{
	const uint8_t magic[4] = { 0x48, 0x54, 0x50, 0x4b };
	_cleanup_free_ uint8_t *win = malloc(1 << 20);
	_cleanup_free_ uint32_t *subs = malloc(4 * MAX_SUBS);
	uint64_t pos = from;

	if (!win || !subs)
		return -ENOMEM;
	while (pos + PACK_HDR_SIZE <= file_size) {
		size_t n = (size_t)MIN((uint64_t)(1 << 20), file_size - pos);
		int r = pread_all(fd, win, n, pos);
		if (r < 0)
			return r;
		for (size_t i = 0; i + 4 <= n; i++) {
			struct rec_hdr h;
			if (memcmp(win + i, magic, 4) != 0)
				continue;
			if (pack_read_hdr(fd, pos + i, &h, subs, MAX_SUBS) == 0 &&
			    pos + i + rec_size(h.len) <= file_size) {
				*next = pos + i;
				return 0;
			}
		}
		if (n < 4)
			break;
		pos += n - 3;	/* a magic may straddle windows */
	}
	return -ENOENT;
}

int pack_scan(int fd, uint64_t from, uint64_t file_size, bool check_payload,
	      pack_scan_fn fn, void *opaque, uint64_t *good_end)
{
	_cleanup_free_ uint32_t *subs = malloc(4 * MAX_SUBS);
	_cleanup_free_ uint8_t *payload = check_payload ? malloc(STORE_MAX_CHUNK_SIZE) : NULL;
	uint64_t off = from;
	int r;

	if (!subs || (check_payload && !payload))
		return -ENOMEM;
	*good_end = from;
	while (off < file_size) {
		struct rec_hdr h;
		bool ok = true;
		uint64_t next;

		r = pack_read_hdr(fd, off, &h, subs, MAX_SUBS);
		if (r == 0 && off + rec_size(h.len) > file_size)
			r = -EBADMSG;	/* the record runs past the end: torn */
		if (r < 0 && r != -EBADMSG)
			return r;
		if (r == -EBADMSG) {
			/* Corruption in the middle (a good record follows) is
			 * skipped; a bad tail is where the good records end. */
			if (scan_resync(fd, off + 1, file_size, &next) < 0)
				return 0;
			log_warn("pack: skipping %llu bytes of damaged records at offset %llu",
				 (unsigned long long)(next - off), (unsigned long long)off);
			off = next;
			continue;
		}
		/* Only the last record can be torn by a crash; damage elsewhere
		 * is verify's to find, and reading every payload would make a
		 * restart read the whole store. */
		if (check_payload && off + rec_size(h.len) == file_size)
			ok = pack_read_payload(fd, off, &h, subs, 0, h.len, payload) == 0;
		if (!ok)
			return 0;	/* the last record is torn */
		r = fn(opaque, off, &h, ok);
		if (r < 0)
			return r;
		off += rec_size(h.len);
		*good_end = off;
	}
	return 0;
}

/* ---- chunks ---- */

struct pack *store_pack(struct store *s, uint32_t id)
{
	/* The count first: a new array is published before its count, so an
	 * array read after the count is at least that long. */
	uint32_t n = __atomic_load_n(&s->npacks, __ATOMIC_ACQUIRE);
	struct pack **packs = __atomic_load_n(&s->packs, __ATOMIC_ACQUIRE);

	return id < n ? packs[id] : NULL;
}

static int chunk_read_full(struct store *s, const struct idx_ent *e, void *buf)
{
	struct pack *p = store_pack(s, e->pack);

	return p ? record_read(s, p->fd, e, 0, e->len, buf) : -EIO;
}

int pack_for_append(struct store *s, uint64_t need, struct pack **out)
{
	struct pack *p = s->active;
	int r;

	if (p && (p->size == 0 || p->size + need <= s->opts.pack_size)) {
		*out = p;
		return 0;
	}
	/* Seal the current pack and start a new one. */
	uint32_t id = s->npacks ? s->npacks : 1;
	struct pack **np = malloc(sizeof *np * (id + 1));
	if (!np)
		return -ENOMEM;
	r = pack_open(s, id, true, &p);
	if (r < 0) {
		free(np);
		return r;
	}
	if (s->npacks)
		memcpy(np, s->packs, sizeof *np * s->npacks);
	else
		np[0] = NULL;
	np[id] = p;
	/* Readers may hold the old array: it is kept with the zombies. */
	struct pack **old = s->packs;
	__atomic_store_n(&s->packs, np, __ATOMIC_RELEASE);
	__atomic_store_n(&s->npacks, id + 1, __ATOMIC_RELEASE);
	if (old)
		store_retire(s, old);
	fsync(s->dir_fd);
	s->active = p;
	*out = p;
	return 0;
}

static int put(struct store *s, enum rec_type type, const void *buf, uint32_t len, uint64_t owner, bool unlogged,
	       struct ref *out)
{
	_cleanup_free_ uint8_t *cmp = NULL;
	struct ref r;
	struct idx_ent e;
	struct pack *p;
	uint64_t off;
	int ret;

	if (type == REC_DATA && buf_is_zero(buf, len)) {
		memset(out, 0, sizeof *out);
		return 0;
	}
	chunk_hash(s->secret, buf, len, &r);
	/* The record's checksums too, before the lock all writers share. */
	uint32_t subs[MAX_SUBS];
	struct rec_hdr h = { .type = (uint8_t)type, .len = len, .h0 = r.h0, .h1 = r.h1,
			     .nsub = DIV_ROUND_UP(len, SUB_BLOCK) };
	pack_sub_csums(&h, buf, subs);

	pthread_mutex_lock(&s->put_lock);
	for (r.slot = 1;; r.slot++) {
		if (index_lookup(&s->index, &r, &e) < 0)
			break;
		if (e.type != type || e.len != len)
			continue;
		/* Verify on match: XXH3 is not collision resistant. */
		if (!cmp && !(cmp = malloc(len))) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		if (chunk_read_full(s, &e, cmp) == 0 && memcmp(cmp, buf, len) == 0) {
			bool gc = atomic_load(&s->gc_running);
			if (e.owner || gc) {
				/* Held twice now: never recycled; and live for a gc under way. */
				pthread_rwlock_wrlock(&s->index.lock);
				struct idx_ent *ie = index_find_locked(&s->index, &r);
				if (ie) {
					ie->owner = 0;
					if (gc)
						atomic_fetch_or(&ie->gc, GC_MARK);
				}
				pthread_rwlock_unlock(&s->index.lock);
			}
			*out = r;
			ret = 0;
			goto out_unlock;
		}
		/* A collision, or a damaged copy: store these bytes under the next slot. */
	}

	h.slot = r.slot;
	if (type == REC_DATA && len == s->chunk_size && (p = recycled_take(s, &off))) {
		ret = pack_overwrite(p, &h, buf, subs, off);
		if (ret == 0)
			hdr_cache_drop(s, &(struct idx_ent){ .pack = p->id, .off = off });
	} else {
		ret = pack_for_append(s, rec_size(len), &p);
		if (ret == 0)
			ret = pack_append(p, &h, buf, subs, &off);
	}
	if (ret < 0)
		goto out_unlock;
	s->appended_since_save += rec_size(len);

	e = (struct idx_ent){ .h0 = r.h0, .h1 = r.h1, .slot = r.slot, .pack = p->id, .off = off,
			      .len = len, .type = (uint8_t)type, .owner = owner, .unlogged = unlogged };
	e.gc = atomic_load(&s->gc_running) ? GC_MARK : 0;
	pthread_rwlock_wrlock(&s->index.lock);
	ret = index_put_locked(&s->index, &e);
	pthread_rwlock_unlock(&s->index.lock);
	if (ret == 0)
		*out = r;
out_unlock:
	pthread_mutex_unlock(&s->put_lock);
	return ret;
}

int chunk_put(struct store *s, enum rec_type type, const void *buf, uint32_t len, struct ref *out)
{
	return put(s, type, buf, len, 0, false, out);
}

int chunk_put_owned(struct store *s, const void *buf, uint64_t owner, bool unlogged, struct ref *out)
{
	return put(s, REC_DATA, buf, s->chunk_size, owner, unlogged, out);
}

static void log_bad_chunk(const struct ref *r, int err)
{
	char id[64];

	ref_format(r, id, sizeof id);
	log_error("chunk %s: %s; failing the read with EIO (run `hutch store verify`)", id,
		  err == -ENOENT ? "missing from the store" : "damaged");
}

int chunk_read_many(struct store *s, const struct chunk_req *req, unsigned n)
{
	struct rec_read *rr = rec_read_scratch();
	int res[CHUNK_READ_BATCH];
	unsigned m = 0, map[CHUNK_READ_BATCH];
	int ret = 0;

	if (!rr)
		return -ENOMEM;
	if (n > CHUNK_READ_BATCH)
		return -EINVAL;
	for (unsigned k = 0; k < n; k++) {
		struct idx_ent e;
		struct pack *p;
		int r;

		if (req[k].len == 0)
			continue;
		if (ref_is_hole(&req[k].r)) {
			memset(req[k].buf, 0, req[k].len);
			continue;
		}
		r = index_lookup(&s->index, &req[k].r, &e);
		if (r == 0)
			r = (p = store_pack(s, e.pack)) ? rec_read_prepare(s, &rr[m], p->fd, &e, req[k].from,
									    req[k].len, req[k].buf) : -EIO;
		if (r < 0) {
			if (r != -ENOMEM)
				log_bad_chunk(&req[k].r, r);
			ret = ret ? ret : (r == -ENOMEM ? r : -EIO);
			continue;
		}
		map[m++] = k;
	}
	if (m && rec_read_batch(s, rr, m, res) < 0)
		for (unsigned j = 0; j < m; j++)
			res[j] = -EIO;
	for (unsigned j = 0; j < m; j++) {
		int r = rec_read_finish(s, &rr[j], res[j]);
		if (r < 0 && r != -ENOMEM)
			log_bad_chunk(&req[map[j]].r, r);
		if (r < 0 && !ret)
			ret = r == -ENOMEM ? r : -EIO;
	}
	return ret;
}

int chunk_read(struct store *s, const struct ref *r, uint32_t from, uint32_t len, void *buf)
{
	struct chunk_req req = { *r, from, len, buf };

	return chunk_read_many(s, &req, 1);
}

int packs_sync(struct store *s)
{
	struct { int fd; uint32_t id; uint64_t size, rewrites; } todo[64];
	unsigned n;
	int ret = 0;

	do {
		n = 0;
		pthread_mutex_lock(&s->put_lock);
		for (uint32_t i = 0; i < s->npacks && n < ARRAY_SIZE(todo); i++) {
			struct pack *p = s->packs[i];
			if (!p || p->removed || p->synced == p->size)
				continue;
			todo[n].fd = dup(p->fd);
			todo[n].id = i;
			todo[n].size = p->size;
			todo[n].rewrites = p->rewrites;
			if (todo[n].fd < 0) {
				ret = -errno;
				break;
			}
			n++;
		}
		pthread_mutex_unlock(&s->put_lock);
		for (unsigned i = 0; i < n; i++) {
			if (fdatasync(todo[i].fd) < 0 && !ret)
				ret = -errno;
			close(todo[i].fd);
		}
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&s->put_lock);
		for (unsigned i = 0; i < n; i++) {
			struct pack *p = s->packs[todo[i].id];
			if (p && p->synced < todo[i].size && p->rewrites == todo[i].rewrites)
				p->synced = todo[i].size;
		}
		pthread_mutex_unlock(&s->put_lock);
	} while (n == ARRAY_SIZE(todo));
	return 0;
}

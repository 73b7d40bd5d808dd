/*
 * verify: re-hash every chunk reachable from a head. Pass one checks each
 * distinct chunk once; if any is bad, pass two walks every head again to
 * name each image and offset that uses a bad chunk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define V_OK 1
#define V_BAD_MISSING 2
#define V_BAD_HEADER 3
#define V_BAD_DATA 4
#define V_BAD_HASH 5

struct verify_ctx {
	struct store *s;
	struct refmap seen;
	uint8_t *buf;
	uint64_t checked, total, bad;
	store_progress_fn progress;
	store_verify_fn report;
	void *opaque;
	const char *image;
};

static int check_chunk(struct verify_ctx *c, const struct ref *r, unsigned level)
{
	uint32_t subs[STORE_MAX_CHUNK_SIZE / SUB_BLOCK];
	struct rec_hdr h;
	struct idx_ent e;
	struct ref got;
	struct pack *p;

	if (index_lookup(&c->s->index, r, &e) < 0 || !(p = store_pack(c->s, e.pack)))
		return V_BAD_MISSING;
	if (pack_read_hdr(p->fd, e.off, &h, subs, ARRAY_SIZE(subs)) < 0 || h.h0 != r->h0 ||
	    h.h1 != r->h1 || h.slot != r->slot || h.type != (level ? REC_NODE : REC_DATA))
		return V_BAD_HEADER;
	if (pack_read_payload(p->fd, e.off, &h, subs, 0, h.len, c->buf) < 0)
		return V_BAD_DATA;
	chunk_hash(c->s->secret, c->buf, h.len, &got);
	if (got.h0 != r->h0 || got.h1 != r->h1)
		return V_BAD_HASH;
	return V_OK;
}

static int pass1_fn(void *opaque, const struct ref *r, unsigned level, uint64_t first)
{
	struct verify_ctx *c = opaque;
	bool added;
	uint64_t *v;

	if (level & WALK_UNREADABLE)
		return 0;	/* already recorded as bad when it was checked */
	v = refmap_get(&c->seen, r, &added);
	if (!v)
		return -ENOMEM;
	if (!added)
		return 1;
	*v = (uint64_t)check_chunk(c, r, level);
	if (*v != V_OK)
		c->bad++;
	if (c->progress && (++c->checked % 256 == 0))
		c->progress(c->opaque, c->checked, c->total);
	return 0;
}

static const char *what(uint64_t v)
{
	switch (v) {
	case V_BAD_MISSING: return "missing from the store";
	case V_BAD_HEADER: return "record header damaged";
	case V_BAD_DATA: return "data fails its checksum";
	case V_BAD_HASH: return "data does not match its hash";
	}
	return "unknown";
}

static int pass2_fn(void *opaque, const struct ref *r, unsigned level, uint64_t first)
{
	struct verify_ctx *c = opaque;
	struct store_verify_error e = { 0 };
	struct idx_ent ie;
	uint64_t *v;

	if (level & WALK_UNREADABLE)
		return 0;
	v = refmap_find(&c->seen, r);
	if (!v || *v == V_OK)
		return 0;
	ref_format(r, e.chunk, sizeof e.chunk);
	if (index_lookup(&c->s->index, r, &ie) == 0) {
		snprintf(e.pack, sizeof e.pack, "%08x.pack", ie.pack);
		e.pack_offset = ie.off;
	} else {
		snprintf(e.pack, sizeof e.pack, "-");
	}
	snprintf(e.image, sizeof e.image, "%s", c->image);
	e.image_offset = first * c->s->chunk_size;
	snprintf(e.what, sizeof e.what, "%s%s", level ? "map node: " : "", what(*v));
	if (c->report)
		c->report(c->opaque, &e);
	return 0;
}

int store_verify(struct store *s, store_verify_fn report, store_progress_fn progress,
		 void *opaque, uint64_t *bad)
{
	struct verify_ctx c = { .s = s, .report = report, .progress = progress, .opaque = opaque };
	_cleanup_free_ struct head *heads = NULL;
	size_t nh;
	int r;

	pthread_mutex_lock(&s->gc_lock);
	store_flush_all(s);
	heads = heads_copy(s, &nh);
	pthread_rwlock_rdlock(&s->index.lock);
	c.total = s->index.count;
	pthread_rwlock_unlock(&s->index.lock);
	c.buf = malloc(STORE_MAX_CHUNK_SIZE);
	r = refmap_init(&c.seen);
	if (!heads || !c.buf || r < 0) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; r == 0 && i < nh; i++)
		r = tree_walk(s, &heads[i].root, heads[i].size, pass1_fn, &c);
	for (size_t i = 0; r == 0 && c.bad && i < nh; i++) {
		c.image = heads[i].name;
		r = tree_walk(s, &heads[i].root, heads[i].size, pass2_fn, &c);
	}
	if (progress)
		progress(opaque, c.checked, c.checked);
	if (r == 0)
		*bad = c.bad;
out:
	refmap_free(&c.seen);
	free(c.buf);
	pthread_mutex_unlock(&s->gc_lock);
	return r;
}

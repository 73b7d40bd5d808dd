/*
 * Map trees: an image is the root of a tree of map nodes, each node itself
 * a content-addressed chunk of 256 refs, so snapshot and fork copy one ref.
 *
 * An open image keeps the refs of every node above the leaves in arrays
 * (lv[k] for level k), loaded at open, and loads leaves (the nodes holding
 * data refs) on first touch. A write marks the leaf dirty; tree_write
 * rewrites dirty nodes bottom-up and yields the new root.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "store-internal.h"

void geometry_for(uint64_t size, uint32_t chunk_size, struct geometry *g)
{
	uint64_t n;

	memset(g, 0, sizeof *g);
	g->nchunks = n = DIV_ROUND_UP(size, chunk_size);
	g->count[0] = n;
	if (n == 0)
		return;
	do {
		n = DIV_ROUND_UP(n, NODE_FANOUT);
		g->count[++g->depth] = n;
	} while (n > 1);
}

static bool bit_test(const uint8_t *bm, uint64_t i) { return bm[i / 8] & (1u << (i % 8)); }
static void bit_set(uint8_t *bm, uint64_t i) { bm[i / 8] |= (uint8_t)(1u << (i % 8)); }
static void bit_clear(uint8_t *bm, uint64_t i) { bm[i / 8] &= (uint8_t)~(1u << (i % 8)); }

int node_read(struct store *s, const struct ref *r, unsigned level, struct ref *refs)
{
	uint8_t buf[NODE_SIZE];
	int ret;

	if (ref_is_hole(r)) {
		memset(refs, 0, NODE_FANOUT * sizeof *refs);
		return 0;
	}
	ret = chunk_read(s, r, 0, NODE_SIZE, buf);
	if (ret < 0)
		return ret;
	if (buf[0] != level)
		return -EIO;
	for (unsigned i = 0; i < NODE_FANOUT; i++)
		ref_decode(buf + NODE_HDR_SIZE + i * NODE_REF_SIZE, &refs[i]);
	return 0;
}

static int node_write(struct store *s, unsigned level, const struct ref *refs, unsigned n,
		      struct ref *out)
{
	uint8_t buf[NODE_SIZE] = { 0 };
	bool empty = true;

	buf[0] = (uint8_t)level;
	for (unsigned i = 0; i < n; i++) {
		if (ref_is_hole(&refs[i]))
			continue;
		empty = false;
		ref_encode(&refs[i], buf + NODE_HDR_SIZE + i * NODE_REF_SIZE);
	}
	if (empty) {
		memset(out, 0, sizeof *out);	/* an all-hole subtree is a hole */
		return 0;
	}
	return chunk_put(s, REC_NODE, buf, NODE_SIZE, out);
}

static int alloc_levels(struct image *img, const struct geometry *g)
{
	for (unsigned k = 1; k <= g->depth; k++) {
		img->lv[k] = calloc(g->count[k], sizeof(struct ref));
		img->dirty_lv[k] = calloc(DIV_ROUND_UP(g->count[k], 8), 1);
		if (!img->lv[k] || !img->dirty_lv[k])
			return -ENOMEM;
	}
	if (g->depth) {
		img->leaves = calloc(g->count[1], sizeof *img->leaves);
		if (!img->leaves)
			return -ENOMEM;
	}
	img->g = *g;
	return 0;
}

int tree_load(struct image *img, const struct ref *root, uint64_t size)
{
	struct ref refs[NODE_FANOUT];
	struct geometry g;
	int r;

	geometry_for(size, img->s->chunk_size, &g);
	r = alloc_levels(img, &g);
	if (r < 0)
		return r;
	img->size = size;
	if (g.depth == 0)
		return 0;
	img->lv[g.depth][0] = *root;
	for (unsigned k = g.depth; k >= 2; k--) {
		for (uint64_t i = 0; i < g.count[k]; i++) {
			if (ref_is_hole(&img->lv[k][i]))
				continue;
			r = node_read(img->s, &img->lv[k][i], k, refs);
			if (r < 0)
				return r;
			uint64_t base = i * NODE_FANOUT;
			uint64_t n = MIN((uint64_t)NODE_FANOUT, g.count[k - 1] - base);
			memcpy(&img->lv[k - 1][base], refs, n * sizeof *refs);
		}
	}
	return 0;
}

static void leaf_free(struct image *img, struct leaf *l)
{
	if (!l)
		return;
	for (unsigned j = 0; j < NODE_FANOUT; j++) {
		if (l->dirty[j]) {
			free(l->dirty[j]);
			atomic_fetch_sub(&img->s->dirty_bytes, img->s->chunk_size);
		}
	}
	free(l);
}

void tree_free(struct image *img)
{
	if (img->leaves)
		for (uint64_t i = 0; i < img->g.count[1]; i++)
			leaf_free(img, img->leaves[i]);
	free(img->leaves);
	img->leaves = NULL;
	for (unsigned k = 1; k <= MAX_DEPTH; k++) {
		free(img->lv[k]);
		free(img->dirty_lv[k]);
		img->lv[k] = NULL;
		img->dirty_lv[k] = NULL;
	}
	free(img->dirty_q);
	img->dirty_q = NULL;
	img->dirty_n = img->dirty_cap = img->dirty_head = 0;
	memset(&img->g, 0, sizeof img->g);
}

struct leaf *tree_leaf(struct image *img, uint64_t li, int *err)
{
	struct leaf *l = __atomic_load_n(&img->leaves[li], __ATOMIC_ACQUIRE);
	int r;

	if (l)
		return l;
	/* Readers share the image lock; loads are serialised here. */
	pthread_mutex_lock(&img->load_lock);
	l = img->leaves[li];
	if (!l) {
		l = calloc(1, sizeof *l);
		if (!l) {
			*err = -ENOMEM;
			goto out;
		}
		r = node_read(img->s, &img->lv[1][li], 1, l->refs);
		if (r < 0) {
			free(l);
			l = NULL;
			*err = r;
			goto out;
		}
		__atomic_store_n(&img->leaves[li], l, __ATOMIC_RELEASE);
	}
out:
	pthread_mutex_unlock(&img->load_lock);
	return l;
}

void tree_mark_chunk(struct image *img, uint64_t chunk)
{
	bit_set(img->dirty_lv[1], chunk / NODE_FANOUT);
	img->tree_dirty = true;
}

int tree_write(struct image *img, struct ref *root)
{
	const struct geometry *g = &img->g;
	int r;

	if (g->depth == 0) {
		memset(root, 0, sizeof *root);
		img->tree_dirty = false;
		return 0;
	}
	for (unsigned k = 1; k <= g->depth; k++) {
		for (uint64_t i = 0; i < g->count[k]; i++) {
			const struct ref *child;
			unsigned n;

			if (!bit_test(img->dirty_lv[k], i)) {
				/* Skip clean bytes of the bitmap quickly. */
				if (i % 8 == 0 && img->dirty_lv[k][i / 8] == 0)
					i += 7;
				continue;
			}
			if (k == 1) {
				child = img->leaves[i]->refs;
				n = NODE_FANOUT;
			} else {
				child = &img->lv[k - 1][i * NODE_FANOUT];
				n = (unsigned)MIN((uint64_t)NODE_FANOUT, g->count[k - 1] - i * NODE_FANOUT);
			}
			r = node_write(img->s, k, child, n, &img->lv[k][i]);
			if (r < 0)
				return r;
			bit_clear(img->dirty_lv[k], i);
			if (k < g->depth)
				bit_set(img->dirty_lv[k + 1], i / NODE_FANOUT);
		}
	}
	*root = img->lv[g->depth][0];
	img->tree_dirty = false;
	return 0;
}

int tree_resize(struct image *img, uint64_t new_size)
{
	struct geometry ng, og = img->g;
	struct ref *old1 = img->lv[1];
	struct leaf **old_leaves = img->leaves;
	uint8_t *old_dirty1 = img->dirty_lv[1];
	uint64_t keep_leaves;
	int r;

	geometry_for(new_size, img->s->chunk_size, &ng);
	/* Clear data refs past the new end in the leaf that straddles it. */
	if (ng.nchunks < og.nchunks && ng.nchunks % NODE_FANOUT) {
		uint64_t li = ng.nchunks / NODE_FANOUT;
		struct leaf *l = tree_leaf(img, li, &r);
		if (!l)
			return r;
		for (unsigned j = ng.nchunks % NODE_FANOUT; j < NODE_FANOUT; j++) {
			memset(&l->refs[j], 0, sizeof l->refs[j]);
			if (l->dirty[j]) {
				free(l->dirty[j]);
				l->dirty[j] = NULL;
				atomic_fetch_sub(&img->s->dirty_bytes, img->s->chunk_size);
			}
		}
		bit_set(old_dirty1, li);
	}
	/* Drop queued dirty chunks past the end (their buffers go with the leaves). */
	size_t w = 0;
	for (size_t i = img->dirty_head; i < img->dirty_n; i++)
		if (img->dirty_q[i] < ng.nchunks)
			img->dirty_q[w++] = img->dirty_q[i];
	img->dirty_n = w;
	img->dirty_head = 0;

	keep_leaves = MIN(og.count[1], ng.count[1]);
	for (uint64_t i = keep_leaves; i < og.count[1]; i++)
		leaf_free(img, old_leaves[i]);
	for (unsigned k = 2; k <= MAX_DEPTH; k++) {
		free(img->lv[k]);
		free(img->dirty_lv[k]);
		img->lv[k] = NULL;
		img->dirty_lv[k] = NULL;
	}
	img->lv[1] = NULL;
	img->dirty_lv[1] = NULL;
	img->leaves = NULL;
	r = alloc_levels(img, &ng);
	if (r == 0 && ng.depth) {
		if (keep_leaves) {
			memcpy(img->lv[1], old1, keep_leaves * sizeof *old1);
			memcpy(img->leaves, old_leaves, keep_leaves * sizeof *old_leaves);
		}
		for (uint64_t i = 0; i < keep_leaves; i++)
			if (bit_test(old_dirty1, i))
				bit_set(img->dirty_lv[1], i);
		/* Upper levels are few: rebuild them all from level 1. */
		for (unsigned k = 2; k <= ng.depth; k++)
			memset(img->dirty_lv[k], 0xff, DIV_ROUND_UP(ng.count[k], 8));
		for (unsigned k = 2; k <= ng.depth; k++)
			for (uint64_t i = ng.count[k]; i < DIV_ROUND_UP(ng.count[k], 8) * 8; i++)
				bit_clear(img->dirty_lv[k], i);
	}
	free(old1);
	free(old_leaves);
	free(old_dirty1);
	img->size = new_size;
	img->tree_dirty = true;
	return r;
}

static int walk(struct store *s, const struct ref *r, unsigned level, uint64_t first,
		uint64_t span, tree_walk_fn fn, void *opaque)
{
	struct ref *refs;
	int ret;

	ret = fn(opaque, r, level, first);
	if (ret != 0 || level == 0)
		return ret < 0 ? ret : 0;
	refs = malloc(NODE_FANOUT * sizeof *refs);
	if (!refs)
		return -ENOMEM;
	ret = node_read(s, r, level, refs);
	if (ret < 0) {
		/* Tell fn; it decides whether the walk goes on without this subtree. */
		free(refs);
		ret = fn(opaque, r, level | WALK_UNREADABLE, first);
		return ret < 0 ? ret : 0;
	}
	for (unsigned i = 0; i < NODE_FANOUT && ret >= 0; i++)
		if (!ref_is_hole(&refs[i]))
			ret = walk(s, &refs[i], level - 1, first + i * (span / NODE_FANOUT),
				   span / NODE_FANOUT, fn, opaque);
	free(refs);
	return ret;
}

int tree_walk(struct store *s, const struct ref *root, uint64_t size, tree_walk_fn fn, void *opaque)
{
	struct geometry g;
	uint64_t span = 1;

	geometry_for(size, s->chunk_size, &g);
	if (g.depth == 0 || ref_is_hole(root))
		return 0;
	for (unsigned k = 0; k < g.depth; k++)
		span *= NODE_FANOUT;
	return walk(s, root, g.depth, 0, span, fn, opaque);
}

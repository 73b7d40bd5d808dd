/*
 * A cache of record headers (and their sub-block checksums), so a small
 * read of a chunk read before is one pread of its data instead of two. A
 * record never moves within a pack and pack ids are never reused, so
 * (pack, offset) names one header until a recycled record is written over
 * it (hdr_cache_drop).
 * Direct-mapped, with striped locks.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

#define ENTRIES (1u << 16)
#define STRIPES 64u
#define MAX_HDR (PACK_HDR_SIZE + 4 * 16)	/* chunks up to 64 KiB */

struct hdr_cache {
	pthread_mutex_t lock[STRIPES];
	struct {
		uint64_t key;		/* 0 = empty (pack ids start at 1) */
		uint8_t hdr[MAX_HDR];
	} e[ENTRIES];
};

static uint64_t key_of(const struct idx_ent *e)
{
	return (uint64_t)e->pack << 40 | e->off;
}

static unsigned slot_of(uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ull;
	return (unsigned)(key >> 40) & (ENTRIES - 1);
}

void hdr_cache_init(struct store *s)
{
	struct hdr_cache *c = calloc(1, sizeof *c);

	if (!c)
		return;	/* reads work without it */
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_init(&c->lock[i], NULL);
	s->hdr_cache = c;
}

void hdr_cache_free(struct store *s)
{
	struct hdr_cache *c = s->hdr_cache;

	if (!c)
		return;
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&c->lock[i]);
	free(c);
	s->hdr_cache = NULL;
}

bool hdr_cache_get(struct store *s, const struct idx_ent *e, uint8_t *hdr, size_t len)
{
	struct hdr_cache *c = s->hdr_cache;
	uint64_t key = key_of(e);
	unsigned i = slot_of(key);
	bool hit;

	if (!c || len > MAX_HDR || e->off >= 1ull << 40)
		return false;
	pthread_mutex_lock(&c->lock[i % STRIPES]);
	hit = c->e[i].key == key;
	if (hit)
		memcpy(hdr, c->e[i].hdr, len);
	pthread_mutex_unlock(&c->lock[i % STRIPES]);
	return hit;
}

void hdr_cache_put(struct store *s, const struct idx_ent *e, const uint8_t *hdr, size_t len)
{
	struct hdr_cache *c = s->hdr_cache;
	uint64_t key = key_of(e);
	unsigned i = slot_of(key);

	if (!c || len > MAX_HDR || e->off >= 1ull << 40)
		return;
	pthread_mutex_lock(&c->lock[i % STRIPES]);
	c->e[i].key = key;
	memcpy(c->e[i].hdr, hdr, len);
	pthread_mutex_unlock(&c->lock[i % STRIPES]);
}

void hdr_cache_drop(struct store *s, const struct idx_ent *e)
{
	struct hdr_cache *c = s->hdr_cache;
	uint64_t key = key_of(e);
	unsigned i = slot_of(key);

	if (!c)
		return;
	pthread_mutex_lock(&c->lock[i % STRIPES]);
	if (c->e[i].key == key)
		c->e[i].key = 0;
	pthread_mutex_unlock(&c->lock[i % STRIPES]);
}

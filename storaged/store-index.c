/*
 * The index: chunk ref -> where its record is. An open-addressing hash table
 * in memory, saved to store/index on clean shutdown and after gc. It is
 * only a cache of the packs: whatever it does not cover is rebuilt by
 * scanning them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define INDEX_MAGIC 0x58495448u	/* "HTIX" */
#define INDEX_ENT_DISK 37u

static uint64_t mix(const struct ref *r)
{
	uint64_t x = r->h0 ^ (r->h1 << 17 | r->h1 >> 47) ^ ((uint64_t)r->slot * 0x9e3779b97f4a7c15ull);

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool ent_is(const struct idx_ent *e, const struct ref *r)
{
	return e->used && e->h0 == r->h0 && e->h1 == r->h1 && e->slot == r->slot;
}

int index_init(struct index *ix, uint64_t cap)
{
	uint64_t c = 1024;

	while (c < cap)
		c <<= 1;
	ix->tab = calloc(c, sizeof *ix->tab);
	if (!ix->tab)
		return -ENOMEM;
	ix->cap = c;
	ix->count = 0;
	pthread_rwlock_init(&ix->lock, NULL);
	return 0;
}

void index_destroy(struct index *ix)
{
	free(ix->tab);
	ix->tab = NULL;
	pthread_rwlock_destroy(&ix->lock);
}

struct idx_ent *index_find_locked(struct index *ix, const struct ref *r)
{
	uint64_t mask = ix->cap - 1;

	for (uint64_t i = mix(r) & mask;; i = (i + 1) & mask) {
		struct idx_ent *e = &ix->tab[i];
		if (!e->used)
			return NULL;
		if (ent_is(e, r))
			return e;
	}
}

int index_lookup(struct index *ix, const struct ref *r, struct idx_ent *out)
{
	struct idx_ent *e;
	int ret = -ENOENT;

	pthread_rwlock_rdlock(&ix->lock);
	e = index_find_locked(ix, r);
	if (e) {
		memcpy(out, e, sizeof *out);
		ret = 0;
	}
	pthread_rwlock_unlock(&ix->lock);
	return ret;
}

static void insert_raw(struct idx_ent *tab, uint64_t cap, const struct idx_ent *e)
{
	struct ref r = { e->h0, e->h1, e->slot };
	uint64_t mask = cap - 1;

	for (uint64_t i = mix(&r) & mask;; i = (i + 1) & mask) {
		if (!tab[i].used || ent_is(&tab[i], &r)) {
			memcpy(&tab[i], e, sizeof *e);
			tab[i].used = 1;
			return;
		}
	}
}

static int rehash(struct index *ix, uint64_t cap, bool (*keep)(void *, struct idx_ent *), void *opaque)
{
	struct idx_ent *tab = calloc(cap, sizeof *tab);
	uint64_t count = 0;

	if (!tab)
		return -ENOMEM;
	for (uint64_t i = 0; i < ix->cap; i++) {
		struct idx_ent *e = &ix->tab[i];
		if (!e->used || (keep && !keep(opaque, e)))
			continue;
		insert_raw(tab, cap, e);
		count++;
	}
	free(ix->tab);
	ix->tab = tab;
	ix->cap = cap;
	ix->count = count;
	return 0;
}

int index_put_locked(struct index *ix, const struct idx_ent *e)
{
	struct ref r = { e->h0, e->h1, e->slot };
	struct idx_ent *old = index_find_locked(ix, &r);

	if (old) {
		uint8_t gc = atomic_load(&old->gc);
		memcpy(old, e, sizeof *e);
		old->used = 1;
		atomic_store(&old->gc, gc | atomic_load(&e->gc));
		return 0;
	}
	if ((ix->count + 1) * 10 > ix->cap * 7) {
		int ret = rehash(ix, ix->cap * 2, NULL, NULL);
		if (ret < 0)
			return ret;
	}
	insert_raw(ix->tab, ix->cap, e);
	ix->count++;
	return 0;
}

/* Linear probing without tombstones: the entries after the removed one
 * that would not be found past the gap move back into it. */
void index_remove_locked(struct index *ix, struct idx_ent *e)
{
	uint64_t mask = ix->cap - 1, gap = (uint64_t)(e - ix->tab);

	for (uint64_t j = (gap + 1) & mask; ix->tab[j].used; j = (j + 1) & mask) {
		struct ref r = { ix->tab[j].h0, ix->tab[j].h1, ix->tab[j].slot };
		uint64_t home = mix(&r) & mask;

		/* Stays when its home lies cyclically in (gap, j]. */
		if (gap < j ? (home > gap && home <= j) : (home > gap || home <= j))
			continue;
		memcpy(&ix->tab[gap], &ix->tab[j], sizeof *ix->tab);
		gap = j;
	}
	memset(&ix->tab[gap], 0, sizeof *ix->tab);
	ix->count--;
}

int index_filter_locked(struct index *ix, bool (*keep)(void *, struct idx_ent *), void *opaque)
{
	return rehash(ix, ix->cap, keep, opaque);
}

/* ---- persistence ---- */

static void put32(uint8_t **p, uint32_t v) { for (int i = 0; i < 4; i++) *(*p)++ = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t **p, uint64_t v) { put32(p, (uint32_t)v); put32(p, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t **p) { uint32_t v = 0; for (int i = 0; i < 4; i++) v |= (uint32_t)*(*p)++ << (8 * i); return v; }
static uint64_t get64(const uint8_t **p) { uint64_t lo = get32(p); return lo | (uint64_t)get32(p) << 32; }

/* Caller holds put_lock, so packs and their synced sizes stand still. */
int index_save(struct store *s)
{
	uint64_t npk = 0, nent = 0, len;
	_cleanup_free_ uint8_t *buf = NULL;
	uint8_t *p;
	int r;

	for (uint32_t i = 0; i < s->npacks; i++)
		if (s->packs[i] && !s->packs[i]->removed)
			npk++;

	pthread_rwlock_rdlock(&s->index.lock);
	len = 24 + npk * 12 + s->index.count * INDEX_ENT_DISK + 8;
	buf = malloc(len);
	if (!buf) {
		pthread_rwlock_unlock(&s->index.lock);
		return -ENOMEM;
	}
	p = buf + 24;
	for (uint32_t i = 0; i < s->npacks; i++) {
		struct pack *pk = s->packs[i];
		if (!pk || pk->removed)
			continue;
		put32(&p, pk->id);
		put64(&p, pk->synced);
	}
	for (uint64_t i = 0; i < s->index.cap; i++) {
		struct idx_ent *e = &s->index.tab[i];
		struct pack *pk;
		if (!e->used)
			continue;
		pk = e->pack < s->npacks ? s->packs[e->pack] : NULL;
		/* Only what is on disk for sure; a scan finds the rest. */
		if (!pk || pk->removed || e->off + rec_size(e->len) > pk->synced)
			continue;
		put64(&p, e->h0);
		put64(&p, e->h1);
		put32(&p, e->slot);
		put32(&p, e->pack);
		put64(&p, e->off);
		put32(&p, e->len);
		*p++ = e->type;
		nent++;
	}
	pthread_rwlock_unlock(&s->index.lock);

	uint8_t *h = buf;
	put32(&h, INDEX_MAGIC);
	put32(&h, STORE_FORMAT_VERSION);
	put64(&h, npk);
	put64(&h, nent);
	len = (uint64_t)(p - buf);
	put64(&p, XXH3_64bits(buf, len));
	len += 8;

	r = file_replace(s->dir_fd, "index", buf, len, NULL);
	/* Records the index on disk covers are never written over: after a
	 * failure either file may be there. */
	for (uint32_t i = 0; i < s->npacks; i++) {
		struct pack *pk = s->packs[i];
		if (pk && !pk->removed)
			pk->indexed = r < 0 ? MAX(pk->indexed, pk->synced) : pk->synced;
	}
	if (r < 0)
		return r;
	s->appended_since_save = 0;
	return 0;
}

int index_load(struct store *s, uint64_t *covered)
{
	char path[4200];
	_cleanup_close_ int fd = -1;
	_cleanup_free_ uint8_t *buf = NULL;
	const uint8_t *p, *end;
	struct stat st;
	uint64_t npk, nent;
	int r;

	snprintf(path, sizeof path, "%s/index", s->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < 32)
		return -EBADMSG;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	r = pread_all(fd, buf, (size_t)st.st_size, 0);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	end = buf + st.st_size - 8;
	p = end;
	if (get64(&p) != XXH3_64bits(buf, (size_t)st.st_size - 8))
		return -EBADMSG;
	p = buf;
	if (get32(&p) != INDEX_MAGIC || get32(&p) != STORE_FORMAT_VERSION)
		return -EBADMSG;
	npk = get64(&p);
	nent = get64(&p);
	if ((uint64_t)(end - p) != npk * 12 + nent * INDEX_ENT_DISK)
		return -EBADMSG;
	for (uint64_t i = 0; i < npk; i++) {
		uint32_t id = get32(&p);
		uint64_t cov = get64(&p);
		struct pack *pk = store_pack(s, id);
		if (pk) {
			covered[id] = MIN(cov, pk->size);
			pk->indexed = cov;	/* what the file claims: see recycled_take */
		}
	}
	pthread_rwlock_wrlock(&s->index.lock);
	for (uint64_t i = 0; i < nent; i++) {
		struct idx_ent e = { 0 };
		e.h0 = get64(&p);
		e.h1 = get64(&p);
		e.slot = get32(&p);
		e.pack = get32(&p);
		e.off = get64(&p);
		e.len = get32(&p);
		e.type = *p++;
		if (e.pack >= s->npacks || !s->packs[e.pack] ||
		    e.off + rec_size(e.len) > covered[e.pack])
			continue;	/* its pack is gone or shorter: a scan decides */
		r = index_put_locked(&s->index, &e);
		if (r < 0)
			break;
	}
	pthread_rwlock_unlock(&s->index.lock);
	return r < 0 ? r : 0;
}

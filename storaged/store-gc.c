/*
 * Online garbage collection.
 *
 * Mark: while gc runs, every chunk a write stores or dedups against is
 * marked (GC_MARK), so nothing written during the collection is lost. All
 * open images are flushed, then every head is walked (GC_VISIT); a subtree
 * already visited is skipped, so shared trees cost one visit.
 *
 * Sweep: under put_lock (writers that must store a chunk wait; readers do
 * not), packs with no live record are removed and packs whose live share is
 * low are compacted into the active pack. The index is saved before old
 * packs are unlinked; their fds stay open until the next gc for readers
 * that looked a location up just before it moved.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define COMPACT_BELOW 0.5	/* compact a pack whose live share is below this */

struct mark_ctx {
	struct store *s;
	int unreadable;
};

static int mark_fn(void *opaque, const struct ref *r, unsigned level, uint64_t first)
{
	struct mark_ctx *c = opaque;
	struct idx_ent *e;
	int ret = 0;

	if (level & WALK_UNREADABLE) {
		/* Its children are unknown: sweeping now could drop live data. */
		c->unreadable++;
		return -EIO;
	}
	pthread_rwlock_rdlock(&c->s->index.lock);
	e = index_find_locked(&c->s->index, r);
	if (!e)
		ret = -EIO;
	else if (atomic_fetch_or(&e->gc, GC_VISIT) & GC_VISIT)
		ret = 1;
	pthread_rwlock_unlock(&c->s->index.lock);
	return ret;
}

static bool keep_live(void *opaque, struct idx_ent *e)
{
	(void)opaque;
	return atomic_load(&e->gc) != 0;
}

static uint64_t packs_bytes(struct store *s)
{
	uint64_t t = 0;

	pthread_mutex_lock(&s->put_lock);
	for (uint32_t i = 0; i < s->npacks; i++)
		if (s->packs[i] && !s->packs[i]->removed)
			t += s->packs[i]->size;
	pthread_mutex_unlock(&s->put_lock);
	return t;
}

/* Moves one live record into the active pack. put_lock held. */
static int move_record(struct store *s, struct idx_ent *e, void *buf)
{
	struct pack *from = s->packs[e->pack], *to;
	uint32_t subs[STORE_MAX_CHUNK_SIZE / SUB_BLOCK];
	struct rec_hdr h;
	uint64_t off;
	int r;

	r = pack_read_hdr(from->fd, e->off, &h, subs, ARRAY_SIZE(subs));
	if (r == 0)
		r = pack_read_payload(from->fd, e->off, &h, subs, 0, h.len, buf);
	if (r < 0)
		return r == -EBADMSG ? -EIO : r;
	r = pack_for_append(s, rec_size(h.len), &to);
	if (r < 0)
		return r;
	r = pack_append(to, &h, buf, NULL, &off);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&s->index.lock);
	e->pack = to->id;
	e->off = off;
	pthread_rwlock_unlock(&s->index.lock);
	return 0;
}

int store_gc(struct store *s, store_progress_fn fn, void *opaque, struct store_gc_result *out)
{
	struct store_gc_result res = { 0 };
	_cleanup_free_ struct head *heads = NULL;
	_cleanup_free_ uint64_t *live = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	struct mark_ctx mc = { s, 0 };
	size_t nh;
	int r = 0;

	pthread_mutex_lock(&s->gc_lock);
	/* Packs removed by the last gc: nobody can still be reading them. */
	pthread_mutex_lock(&s->put_lock);
	for (size_t i = 0; i < s->nzombies; i++) {
		struct pack *z = s->zombies[i];
		s->packs[z->id] = NULL;
		pack_free(z);
	}
	s->nzombies = 0;
	pthread_mutex_unlock(&s->put_lock);
	res.bytes_before = packs_bytes(s);

	atomic_store(&s->gc_running, true);
	r = store_flush_all(s);
	if (r < 0)
		goto out;
	heads = heads_copy(s, &nh);
	if (!heads) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nh; i++) {
		r = tree_walk(s, &heads[i].root, heads[i].size, mark_fn, &mc);
		if (r < 0) {
			log_error("gc: image %s has a missing or unreadable chunk; not sweeping "
				  "(run `hutch store verify` to see which)", heads[i].name);
			goto out;
		}
		if (fn)
			fn(opaque, i + 1, nh + 1);
	}

	/* Sweep. */
	pthread_mutex_lock(&s->put_lock);
	recycled_forget(s);	/* records move, packs go */
	live = calloc(s->npacks, sizeof *live);
	buf = malloc(STORE_MAX_CHUNK_SIZE);
	if (!live || !buf) {
		r = -ENOMEM;
		goto out_unlock;
	}
	pthread_rwlock_rdlock(&s->index.lock);
	for (uint64_t i = 0; i < s->index.cap; i++) {
		struct idx_ent *e = &s->index.tab[i];
		if (!e->used)
			continue;
		if (atomic_load(&e->gc)) {
			res.live_chunks++;
			if (e->pack < s->npacks)
				live[e->pack] += rec_size(e->len);
		} else {
			res.dead_chunks++;
		}
	}
	pthread_rwlock_unlock(&s->index.lock);

	/* A mostly dead active pack is sealed so it can be collected too; the
	 * next append starts a new one. */
	if (s->active && s->active->size &&
	    (double)live[s->active->id] < COMPACT_BELOW * (double)s->active->size)
		s->active = NULL;
	uint32_t npacks = s->npacks;
	bool *doomed = calloc(npacks, sizeof *doomed);
	if (!doomed) {
		r = -ENOMEM;
		goto out_unlock;
	}
	for (uint32_t id = 1; id < npacks; id++) {
		struct pack *p = s->packs[id];
		if (!p || p->removed || p == s->active || p->size == 0)
			continue;	/* records move into the active pack: it stays */
		if (live[id] == 0 || (double)live[id] < COMPACT_BELOW * (double)p->size)
			doomed[id] = true;
	}
	/* The active pack (never doomed) takes the moved records. */
	for (uint64_t i = 0; r == 0 && i < s->index.cap; i++) {
		struct idx_ent *e = &s->index.tab[i];
		if (!e->used || !atomic_load(&e->gc) || e->pack >= npacks || !doomed[e->pack])
			continue;
		r = move_record(s, e, buf);
		if (r == -EIO) {
			char id[64];
			struct ref rr = { e->h0, e->h1, e->slot };
			ref_format(&rr, id, sizeof id);
			log_error("gc: chunk %s in pack %08x is damaged; keeping that pack", id, e->pack);
			doomed[e->pack] = false;
			r = 0;
		}
	}
	if (r == 0 && s->active) {
		/* Moved records must be on disk before the index points at them. */
		if (fdatasync(s->active->fd) == 0)
			s->active->synced = s->active->size;
		else
			r = -errno;
	}
	if (r == 0) {
		pthread_rwlock_wrlock(&s->index.lock);
		r = index_filter_locked(&s->index, keep_live, NULL);
		pthread_rwlock_unlock(&s->index.lock);
	}
	if (r == 0)
		r = index_save(s);
	for (uint32_t id = 1; r == 0 && id < npacks; id++) {
		struct pack *p = s->packs[id];
		char path[4200];
		if (!doomed[id] || !p)
			continue;
		pack_path(s, id, path, sizeof path);
		if (unlink(path) < 0) {
			log_warn("gc: cannot remove %s: %s", path, strerror(errno));
			continue;
		}
		p->removed = true;
		struct pack **z = realloc(s->zombies, (s->nzombies + 1) * sizeof *z);
		if (z) {
			s->zombies = z;
			s->zombies[s->nzombies++] = p;
		}
		if (live[id])
			res.packs_compacted++;
		else
			res.packs_removed++;
	}
	fsync(s->dir_fd);
	free(doomed);
out_unlock:
	pthread_mutex_unlock(&s->put_lock);
out:
	/* Clear the marks for the next run. */
	pthread_rwlock_wrlock(&s->index.lock);
	for (uint64_t i = 0; i < s->index.cap; i++)
		atomic_store(&s->index.tab[i].gc, 0);
	atomic_store(&s->gc_running, false);
	pthread_rwlock_unlock(&s->index.lock);
	res.bytes_after = packs_bytes(s);
	if (fn)
		fn(opaque, 1, 1);
	pthread_mutex_unlock(&s->gc_lock);
	if (r == 0 && out)
		*out = res;
	return r;
}

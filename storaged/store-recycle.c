/*
 * Recycling records no flushed tree ever named.
 *
 * Packs are append-only, so a client rewriting the same blocks between
 * flushes (a guest's journal, a database file, fio) would make them grow by
 * every rewrite, and the kernel would write every superseded copy out. A
 * record stored by an image's write since that image's last flush (its
 * epoch), that no other tree holds (no dedup hit on it), is dead once the
 * image replaces it: its place is written over by the next new record, in
 * the page cache, as a file system rewrites a block in place.
 *
 * What may still name a dead record, and why that is safe:
 * - Flushed trees, snapshots and clones: they were written before the
 *   epoch began (a flush starts a new one), or dedup-hit the record.
 * - Readers: image reads hold the image's read lock, the replacement its
 *   write lock; dedup reads run under put_lock, as does recycling. A
 *   flush's write-out reads bases with no lock: while it runs, its image
 *   releases nothing (image.writing_out).
 * - The write log: the record that stored it, when a client wrote that
 *   chunk whole. It is released only once the write replacing it is in the
 *   log too, and replay takes a ref missing from the store as a hole to be
 *   overwritten by that later whole write (store-wlog.c). A write-out's
 *   records (UNLOGGED) are named by no log, so any replacement frees them.
 * - The saved index: a restart trusts it for what it covers, so places it
 *   may cover (pack.indexed) are never reused.
 * - gc moves records and removes packs: nothing is released while it runs,
 *   and the places kept are forgotten when it starts.
 */
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

#define RECYCLED_MAX (1u << 20)	/* places kept; more are left to gc */

struct recycled {
	uint32_t pack;
	uint64_t off;
};

uint64_t epoch_next(struct store *s)
{
	return atomic_fetch_add(&s->next_epoch, 1) + 1;
}

static bool usable(struct store *s, uint32_t pack, uint64_t off)
{
	struct pack *p = pack < s->npacks ? s->packs[pack] : NULL;

	return p && !p->removed && off >= p->indexed;
}

static void keep(struct store *s, uint32_t pack, uint64_t off)
{
	if (s->nrecycled == s->recycled_cap) {
		if (s->recycled_head > s->nrecycled / 2) {
			memmove(s->recycled, s->recycled + s->recycled_head,
				(s->nrecycled - s->recycled_head) * sizeof *s->recycled);
			s->nrecycled -= s->recycled_head;
			s->recycled_head = 0;
		} else {
			size_t cap = s->recycled_cap ? 2 * s->recycled_cap : 1024;
			struct recycled *n = cap <= RECYCLED_MAX ? realloc(s->recycled, cap * sizeof *n) : NULL;
			if (!n)
				return;	/* the record stays garbage for gc */
			s->recycled = n;
			s->recycled_cap = cap;
		}
	}
	s->recycled[s->nrecycled++] = (struct recycled){ pack, off };
}

void chunk_release(struct store *s, const struct ref *old, size_t n, uint64_t owner, bool by_logged_write)
{
	if (!owner || !n)
		return;
	pthread_mutex_lock(&s->put_lock);
	if (atomic_load(&s->gc_running)) {
		pthread_mutex_unlock(&s->put_lock);
		return;
	}
	pthread_rwlock_wrlock(&s->index.lock);
	for (size_t i = 0; i < n; i++) {
		struct idx_ent *e = ref_is_hole(&old[i]) ? NULL : index_find_locked(&s->index, &old[i]);

		if (!e || e->owner != owner || (!e->unlogged && !by_logged_write) || e->type != REC_DATA ||
		    e->len != s->chunk_size || !usable(s, e->pack, e->off))
			continue;
		keep(s, e->pack, e->off);
		index_remove_locked(&s->index, e);
	}
	pthread_rwlock_unlock(&s->index.lock);
	pthread_mutex_unlock(&s->put_lock);
}

struct pack *recycled_take(struct store *s, uint64_t *off)
{
	if (atomic_load(&s->gc_running))
		return NULL;
	/* Oldest first: rewrites of a run of chunks land where the last
	 * copies were, in the same order. */
	while (s->recycled_head < s->nrecycled) {
		struct recycled r = s->recycled[s->recycled_head++];

		if (usable(s, r.pack, r.off)) {
			*off = r.off;
			return s->packs[r.pack];
		}
	}
	s->recycled_head = s->nrecycled = 0;
	return NULL;
}

void recycled_forget(struct store *s)
{
	s->recycled_head = s->nrecycled = 0;
}

void recycled_free(struct store *s)
{
	free(s->recycled);
	s->recycled = NULL;
	s->nrecycled = s->recycled_head = s->recycled_cap = 0;
}

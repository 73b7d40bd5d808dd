/* A hash map from chunk ref to a 64-bit value, for walks over many trees
 * (usage, verify) that must visit each shared chunk once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

static uint64_t slot_of(const struct ref *r, uint64_t mask)
{
	uint64_t x = r->h0 * 0x9e3779b97f4a7c15ull ^ r->h1 ^ r->slot;

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	return (x ^ (x >> 32)) & mask;
}

int refmap_init(struct refmap *m)
{
	m->cap = 1024;
	m->count = 0;
	m->tab = calloc(m->cap, sizeof *m->tab);
	return m->tab ? 0 : -ENOMEM;
}

void refmap_free(struct refmap *m)
{
	free(m->tab);
	m->tab = NULL;
}

uint64_t *refmap_find(struct refmap *m, const struct ref *r)
{
	uint64_t mask = m->cap - 1;

	for (uint64_t i = slot_of(r, mask);; i = (i + 1) & mask) {
		if (!m->tab[i].used)
			return NULL;
		if (ref_eq(&m->tab[i].r, r))
			return &m->tab[i].v;
	}
}

static int grow(struct refmap *m)
{
	struct refmap n = { .cap = m->cap * 2 };

	n.tab = calloc(n.cap, sizeof *n.tab);
	if (!n.tab)
		return -ENOMEM;
	for (uint64_t i = 0; i < m->cap; i++) {
		if (!m->tab[i].used)
			continue;
		uint64_t j = slot_of(&m->tab[i].r, n.cap - 1);
		while (n.tab[j].used)
			j = (j + 1) & (n.cap - 1);
		n.tab[j] = m->tab[i];
	}
	n.count = m->count;
	free(m->tab);
	*m = n;
	return 0;
}

uint64_t *refmap_get(struct refmap *m, const struct ref *r, bool *added)
{
	uint64_t *v = refmap_find(m, r);
	uint64_t mask;

	*added = false;
	if (v)
		return v;
	if ((m->count + 1) * 10 > m->cap * 7 && grow(m) < 0)
		return NULL;
	mask = m->cap - 1;
	for (uint64_t i = slot_of(r, mask);; i = (i + 1) & mask) {
		if (!m->tab[i].used) {
			m->tab[i].used = true;
			m->tab[i].r = *r;
			m->tab[i].v = 0;
			m->count++;
			*added = true;
			return &m->tab[i].v;
		}
	}
}

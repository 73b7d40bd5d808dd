/*
 * What the store holds: image lists with the bytes each image shares and
 * owns alone, and store-wide logical and physical bytes.
 *
 * Two walks: the first counts, for every chunk, how many heads reach it
 * (a subtree already seen for this head is skipped); the second adds up
 * each head's allocated and unique bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "store-internal.h"
#include "util.h"

struct count_ctx {
	struct refmap *m;
	uint32_t head;		/* index + 1 */
	uint64_t live_rec_bytes, live_data;
	uint32_t cs;
};

/* v: high 32 bits = heads reaching the chunk, low 32 = last head seen + 1. */
static int count_fn(void *opaque, const struct ref *r, unsigned level, uint64_t first)
{
	struct count_ctx *c = opaque;
	bool added;
	uint64_t *v;

	if (level & WALK_UNREADABLE)
		return 0;	/* counted already; its subtree is unknown */
	v = refmap_get(c->m, r, &added);
	if (!v)
		return -ENOMEM;
	if (added) {
		c->live_rec_bytes += rec_size(level ? NODE_SIZE : c->cs);
		if (level == 0)
			c->live_data += c->cs;
	}
	if ((*v & 0xffffffffu) == c->head)
		return 1;
	*v = ((*v >> 32) + 1) << 32 | c->head;
	return 0;
}

struct sum_ctx {
	struct refmap *m;
	uint32_t cs;
	uint64_t size, allocated, unique;
};

static int sum_fn(void *opaque, const struct ref *r, unsigned level, uint64_t first)
{
	struct sum_ctx *c = opaque;
	uint64_t *v, bytes;

	if (level != 0)
		return 0;
	v = refmap_find(c->m, r);
	bytes = MIN((uint64_t)c->cs, c->size - first * c->cs);
	c->allocated += bytes;
	if (v && (*v >> 32) == 1)
		c->unique += bytes;
	return 0;
}

static int cmp_info(const void *a, const void *b)
{
	return strcmp(((const struct store_image_info *)a)->name,
		      ((const struct store_image_info *)b)->name);
}

static void fill_info(struct store *s, const struct head *h, struct store_image_info *o)
{
	memset(o, 0, sizeof *o);
	snprintf(o->name, sizeof o->name, "%s", h->name);
	snprintf(o->parent, sizeof o->parent, "%s", h->parent);
	o->size = h->size;
	o->generation = h->gen;
	o->created = h->created;
	o->readonly = h->ro;
	for (struct image *i = s->open_images; i; i = i->next)
		if (strcmp(i->name, h->name) == 0 && !atomic_load(&i->gone))
			o->open_count = i->opens;
}

/* Snapshot of the heads and their infos, with usage when asked. */
static int collect(struct store *s, bool usage, struct store_image_info **out, size_t *n,
		   struct count_ctx *totals)
{
	_cleanup_free_ struct head *heads = NULL;
	struct store_image_info *info;
	struct refmap m = { 0 };
	size_t nh;
	int r = 0;

	if (usage)
		store_flush_all(s);
	pthread_mutex_lock(&s->lock);
	nh = s->nheads;
	heads = malloc((nh + 1) * sizeof *heads);
	info = calloc(nh + 1, sizeof *info);
	if (!heads || !info) {
		pthread_mutex_unlock(&s->lock);
		free(info);
		return -ENOMEM;
	}
	if (nh)
		memcpy(heads, s->heads, nh * sizeof *heads);
	for (size_t i = 0; i < nh; i++)
		fill_info(s, &heads[i], &info[i]);
	pthread_mutex_unlock(&s->lock);

	if (usage) {
		struct count_ctx c = { .cs = s->chunk_size };
		r = refmap_init(&m);
		c.m = &m;
		for (size_t i = 0; r == 0 && i < nh; i++) {
			c.head = (uint32_t)i + 1;
			r = tree_walk(s, &heads[i].root, heads[i].size, count_fn, &c);
		}
		for (size_t i = 0; r == 0 && i < nh; i++) {
			struct sum_ctx sc = { &m, s->chunk_size, heads[i].size, 0, 0 };
			r = tree_walk(s, &heads[i].root, heads[i].size, sum_fn, &sc);
			info[i].allocated = sc.allocated;
			info[i].unique = sc.unique;
			info[i].shared = sc.allocated - sc.unique;
		}
		if (totals)
			*totals = c;
		refmap_free(&m);
	}
	if (r < 0) {
		free(info);
		return r;
	}
	qsort(info, nh, sizeof *info, cmp_info);
	*out = info;
	*n = nh;
	return 0;
}

int store_image_list(struct store *s, bool usage, struct store_image_info **out, size_t *n)
{
	return collect(s, usage, out, n, NULL);
}

int store_image_info(struct store *s, const char *ref, bool usage, struct store_image_info *out)
{
	_cleanup_free_ struct store_image_info *all = NULL;
	size_t n;
	int r;

	if (!ref_is_valid(ref))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	bool exists = head_find(s, ref) != NULL;
	pthread_mutex_unlock(&s->lock);
	if (!exists)
		return -ENOENT;
	r = collect(s, usage, &all, &n, NULL);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(all[i].name, ref) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return -ENOENT;
}

static uint64_t disk_usage(const char *path, uint64_t *pack_bytes, uint64_t *packs)
{
	DIR *d = opendir(path);
	struct dirent *de;
	uint64_t total = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char p[4300];
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", path, de->d_name);
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			total += disk_usage(p, pack_bytes, packs);
			continue;
		}
		total += (uint64_t)st.st_blocks * 512;
		if (strstr(de->d_name, ".pack")) {
			*pack_bytes += (uint64_t)st.st_size;
			(*packs)++;
		}
	}
	closedir(d);
	return total;
}

int store_stats(struct store *s, struct store_stats *o)
{
	_cleanup_free_ struct store_image_info *info = NULL;
	struct count_ctx c = { 0 };
	size_t n;
	int r;

	memset(o, 0, sizeof *o);
	r = collect(s, true, &info, &n, &c);
	if (r < 0)
		return r;
	o->chunk_size = s->chunk_size;
	for (size_t i = 0; i < n; i++) {
		if (info[i].readonly && strchr(info[i].name, '@'))
			o->snapshots++;
		else
			o->images++;
		o->provisioned += info[i].size;
		o->logical += info[i].allocated;
	}
	o->unique_data = c.live_data;
	o->physical = disk_usage(s->dir, &o->pack_bytes, &o->packs);
	o->dead_bytes = o->pack_bytes > c.live_rec_bytes ? o->pack_bytes - c.live_rec_bytes : 0;
	pthread_rwlock_rdlock(&s->index.lock);
	o->chunks = s->index.count;
	pthread_rwlock_unlock(&s->index.lock);
	o->dedup_ratio = o->physical ? (double)o->logical / (double)o->physical : 0.0;
	return 0;
}

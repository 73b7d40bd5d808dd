/*
 * The inode table. Inode numbers are handed out once per (kind, name) and
 * never reused while mounted, so FORGET needs no bookkeeping: a node
 * costs a few hundred bytes and stores hold hundreds of images, not
 * millions. Lookup by name is a linear scan for the same reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse-internal.h"

static struct {
	pthread_mutex_t lock;
	struct node **v;		/* index = ino; protected by lock */
	size_t n, cap;			/* protected by lock */
} fs = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct node *node_add_locked(enum node_kind kind, const char *ref)
{
	if (fs.n == fs.cap) {
		size_t ncap = fs.cap ? fs.cap * 2 : 64;
		struct node **nv = realloc(fs.v, ncap * sizeof(*nv));
		if (!nv)
			return NULL;
		fs.v = nv;
		fs.cap = ncap;
	}
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->ino = fs.n;
	n->kind = kind;
	snprintf(n->ref, sizeof(n->ref), "%s", ref);
	pthread_mutex_init(&n->grow_lock, NULL);
	fs.v[fs.n++] = n;
	return n;
}

void node_table_init(void)
{
	pthread_mutex_lock(&fs.lock);
	fs.n = 0;
	fs.v = NULL;
	fs.cap = 0;
	/* ino 0 is invalid in FUSE: keep the slot empty. */
	node_add_locked(NODE_ROOT, "");
	fs.v[0]->dead = true;
	node_add_locked(NODE_ROOT, "");
	node_add_locked(NODE_IMAGES, "images");
	pthread_mutex_unlock(&fs.lock);
}

void node_table_free(void)
{
	pthread_mutex_lock(&fs.lock);
	for (size_t i = 0; i < fs.n; i++) {
		pool_free(fs.v[i]->pool);
		pthread_mutex_destroy(&fs.v[i]->grow_lock);
		free(fs.v[i]);
	}
	free(fs.v);
	fs.v = NULL;
	fs.n = fs.cap = 0;
	pthread_mutex_unlock(&fs.lock);
}

struct node *node_get(enum node_kind kind, const char *ref)
{
	struct node *n = NULL;

	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n; i++) {
		struct node *x = fs.v[i];
		if (x->kind == kind && !x->dead && strcmp(x->ref, ref) == 0) {
			n = x;
			break;
		}
	}
	if (!n)
		n = node_add_locked(kind, ref);
	pthread_mutex_unlock(&fs.lock);
	return n;
}

struct node *node_by_ino(fuse_ino_t ino)
{
	struct node *n = NULL;

	pthread_mutex_lock(&fs.lock);
	if (ino > 0 && ino < fs.n)
		n = fs.v[ino];
	pthread_mutex_unlock(&fs.lock);
	return n;
}

void node_ref(struct node *n, char *buf, size_t sz)
{
	pthread_mutex_lock(&fs.lock);
	snprintf(buf, sz, "%s", n->ref);
	pthread_mutex_unlock(&fs.lock);
}

struct pool *node_pool(struct node *n)
{
	struct pool *p;

	pthread_mutex_lock(&fs.lock);
	if (!n->pool)
		n->pool = pool_new(n->ref);
	p = n->pool;
	pthread_mutex_unlock(&fs.lock);
	return p;
}

void node_rename_image(const char *old_name, const char *new_name)
{
	size_t ol = strlen(old_name);

	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n; i++) {
		struct node *x = fs.v[i];
		char nref[REF_MAX];
		if (x->dead)
			continue;
		if ((x->kind == NODE_IMAGE || x->kind == NODE_SNAPDIR) &&
		    strcmp(x->ref, old_name) == 0)
			snprintf(nref, sizeof(nref), "%s", new_name);
		else if (x->kind == NODE_SNAP && strncmp(x->ref, old_name, ol) == 0 &&
			 x->ref[ol] == '@')
			snprintf(nref, sizeof(nref), "%s%s", new_name, x->ref + ol);
		else
			continue;
		snprintf(x->ref, sizeof(x->ref), "%s", nref);
		if (x->pool)
			pool_reset(x->pool, nref);
	}
	pthread_mutex_unlock(&fs.lock);
}

static void node_kill_locked(struct node *x)
{
	x->dead = true;
	if (x->pool)
		pool_kill(x->pool);
}

void node_forget_ref(enum node_kind kind, const char *ref)
{
	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n; i++) {
		struct node *x = fs.v[i];
		if (!x->dead && x->kind == kind && strcmp(x->ref, ref) == 0)
			node_kill_locked(x);
	}
	pthread_mutex_unlock(&fs.lock);
}

void node_forget_image(const char *name)
{
	size_t nl = strlen(name);

	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n; i++) {
		struct node *x = fs.v[i];
		if (x->dead)
			continue;
		if (((x->kind == NODE_IMAGE || x->kind == NODE_SNAPDIR) &&
		     strcmp(x->ref, name) == 0) ||
		    (x->kind == NODE_SNAP && strncmp(x->ref, name, nl) == 0 &&
		     x->ref[nl] == '@'))
			node_kill_locked(x);
	}
	pthread_mutex_unlock(&fs.lock);
}

bool snapdir_name(const char *entry, char *name, size_t sz)
{
	size_t l = strlen(entry), sl = strlen(SNAPDIR_SUFFIX);

	if (l <= sl || strcmp(entry + l - sl, SNAPDIR_SUFFIX) != 0 || l - sl >= sz)
		return false;
	memcpy(name, entry, l - sl);
	name[l - sl] = '\0';
	return true;
}

bool node_is_pending(struct node *n)
{
	pthread_mutex_lock(&fs.lock);
	bool p = n->pending;
	pthread_mutex_unlock(&fs.lock);
	return p;
}

void node_set_pending(struct node *n, bool pending)
{
	pthread_mutex_lock(&fs.lock);
	n->pending = pending;
	pthread_mutex_unlock(&fs.lock);
}

struct node *node_find_pending(const char *name)
{
	struct node *n = NULL;

	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n && !n; i++) {
		struct node *x = fs.v[i];
		if (!x->dead && x->pending && x->kind == NODE_IMAGE && strcmp(x->ref, name) == 0)
			n = x;
	}
	pthread_mutex_unlock(&fs.lock);
	return n;
}

int node_pending_names(char ***names, size_t *n)
{
	char **v = NULL;
	size_t k = 0;
	int r = 0;

	pthread_mutex_lock(&fs.lock);
	for (size_t i = 2; i < fs.n && r == 0; i++) {
		struct node *x = fs.v[i];
		if (x->dead || !x->pending)
			continue;
		char **nv = realloc(v, (k + 1) * sizeof(*nv));
		if (!nv || !(nv[k] = strdup(x->ref))) {
			v = nv ? nv : v;
			r = -ENOMEM;
			break;
		}
		v = nv;
		k++;
	}
	pthread_mutex_unlock(&fs.lock);
	*names = v;
	*n = k;
	return r;
}

/*
 * Per-image pool of libnbd handles. A FUSE thread borrows one handle for
 * one synchronous request, so up to fs_cfg.connections requests per image
 * run in parallel over separate connections (storaged advertises
 * multi-conn: a flush on one covers writes made on the others).
 *
 * Handles are made on demand and dropped when they die, so a storaged
 * restart costs the requests in flight (EIO) and nothing after it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "fuse-internal.h"

#define POOL_MAX 64

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char export_name[REF_MAX];	/* protected by lock */
	uint64_t gen;			/* protected by lock; bumped by pool_reset */
	struct nbd_handle *idle[POOL_MAX]; /* protected by lock */
	unsigned n_idle;		/* protected by lock */
	unsigned n_total;		/* borrowed + idle + connecting; protected by lock */
	bool dead;			/* the image was removed through the mount; protected by lock */
};

struct pool *pool_new(const char *export_name)
{
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	snprintf(p->export_name, sizeof(p->export_name), "%s", export_name);
	return p;
}

void pool_free(struct pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->n_idle; i++)
		nbd_close(p->idle[i]);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}

int pool_errno(void)
{
	int e = nbd_get_errno();
	if (e == 0 || e == ENOTCONN || e == ECONNRESET || e == EPIPE ||
	    e == ECONNREFUSED || e == ESHUTDOWN)
		return -EIO;
	return -e;
}

static int pool_connect(const char *export_name, struct nbd_handle **out)
{
	struct nbd_handle *h = nbd_create();
	if (!h)
		return -ENOMEM;
	if (nbd_set_export_name(h, export_name) < 0 ||
	    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    nbd_connect_unix(h, fs_cfg.nbd_socket) < 0) {
		int e = nbd_get_errno();
		log_debug("nbd connect %s: %s", export_name, nbd_get_error());
		nbd_close(h);
		/* The server refuses an unknown export with an NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT. */
		return e == ENOENT ? -ENOENT : -EIO;
	}
	*out = h;
	return 0;
}

int pool_get(struct pool *p, struct conn *c)
{
	char name[REF_MAX];
	uint64_t gen;

	if (!p)
		return -ENOMEM;		/* node_pool() could not make one */
	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (p->dead) {
			/* Files open on a removed image must not reach a new image of the same name. */
			pthread_mutex_unlock(&p->lock);
			return -ESTALE;
		}
		if (p->n_idle) {
			c->h = p->idle[--p->n_idle];
			c->gen = p->gen;
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
		if (p->n_total < fs_cfg.connections)
			break;
		pthread_cond_wait(&p->cond, &p->lock);
	}
	p->n_total++;
	gen = p->gen;
	memcpy(name, p->export_name, sizeof(name));
	pthread_mutex_unlock(&p->lock);

	struct nbd_handle *h = NULL;
	int r = pool_connect(name, &h);
	if (r < 0) {
		pthread_mutex_lock(&p->lock);
		p->n_total--;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		return r;
	}
	/* Without multi-conn a flush would cover one connection only. */
	if (!nbd_can_multi_conn(h) && fs_cfg.connections > 1)
		log_debug("%s: server has no multi-conn", name);
	c->h = h;
	c->gen = gen;
	return 0;
}

void pool_put(struct pool *p, struct conn *c)
{
	if (!p || !c->h)
		return;
	pthread_mutex_lock(&p->lock);
	bool keep = c->gen == p->gen && p->n_idle < POOL_MAX &&
		    nbd_aio_is_ready(c->h) && nbd_aio_in_flight(c->h) == 0;
	if (keep)
		p->idle[p->n_idle++] = c->h;
	else
		p->n_total--;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (!keep)
		nbd_close(c->h);
	c->h = NULL;
}

void pool_kill(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->dead = true;
	pthread_mutex_unlock(&p->lock);
	pool_reset(p, NULL);
}

void pool_reset(struct pool *p, const char *new_export)
{
	struct nbd_handle *old[POOL_MAX];
	unsigned n;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (new_export)
		snprintf(p->export_name, sizeof(p->export_name), "%s", new_export);
	p->gen++;
	n = p->n_idle;
	memcpy(old, p->idle, n * sizeof(old[0]));
	p->n_idle = 0;
	p->n_total -= n;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < n; i++)
		nbd_close(old[i]);
}

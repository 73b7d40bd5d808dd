/*
 * Data buffers for READ replies and WRITE payloads, kept for reuse by the
 * worker that owns the connection.
 *
 * A 1 MiB buffer from malloc is a fresh mapping each time: the kernel
 * faults in and zeroes 256 pages per request, which at queue depth 16
 * cost more than the copy itself. Each worker keeps the buffers its
 * connections give back, up to a count and a byte budget, so the memory
 * held is bounded per worker, not per connection. Buffers are taken and
 * given back only on the worker thread: no lock.
 */
#include <limits.h>
#include <stdlib.h>

#include "nbd-internal.h"

#define BUF_HDR 4096u		/* keeps data page-aligned */
#define POOL_MAX_BUF (4u * 1024 * 1024)	/* larger ones are freed at once */

void nbd_buf_pool_free(struct nbd_buf_pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		free(p->buf[i]);
	p->n = 0;
	p->bytes = 0;
}

void *nbd_buf_get(struct nbd_conn *c, size_t len)
{
	struct nbd_buf_pool *p = c->pool;
	size_t cap = 4096;

	while (cap < len)
		cap <<= 1;
	/* The smallest that fits: a 4 KiB request must not take a 1 MiB buffer
	 * that the next large one then has to allocate again. */
	unsigned best = UINT_MAX;
	for (unsigned i = 0; p && i < p->n; i++) {
		size_t have = *(size_t *)p->buf[i];
		if (have >= len && (best == UINT_MAX || have < *(size_t *)p->buf[best]))
			best = i;
	}
	if (best != UINT_MAX) {
		size_t *h = p->buf[best];
		p->buf[best] = p->buf[--p->n];
		p->bytes -= *h;
		return (uint8_t *)h + BUF_HDR;
	}
	void *b;
	if (posix_memalign(&b, 4096, BUF_HDR + cap))
		return NULL;
	*(size_t *)b = cap;
	return (uint8_t *)b + BUF_HDR;
}

void nbd_buf_put(struct nbd_conn *c, void *data)
{
	struct nbd_buf_pool *p = c->pool;

	if (!data)
		return;
	size_t *h = (size_t *)((uint8_t *)data - BUF_HDR);
	if (p && *h <= POOL_MAX_BUF && p->n < NBD_POOL_BUFS && p->bytes + *h <= NBD_POOL_BYTES) {
		p->buf[p->n++] = h;
		p->bytes += *h;
		return;
	}
	free(h);
}

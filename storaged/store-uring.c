/*
 * Chunk reads in batches through io_uring: an image read that spans many
 * chunks submits all their record reads at once and waits once, instead
 * of one syscall per chunk. The store keeps a few rings, made when it
 * opens (so its descriptors do not grow with use); a batch takes a free
 * one. With none free, or without io_uring, reads are done one by one.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define RING_ENTRIES 64
#define RINGS 4		/* as many batches at once; more wait on none, they read by hand */

struct uring_pool {
	struct {
		pthread_mutex_t lock;
		struct io_uring ring;
		bool ok;
	} r[RINGS];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static __thread struct rec_read *scratch;

static void scratch_key_init(void)
{
	pthread_key_create(&scratch_key, free);
}

struct rec_read *rec_read_scratch(void)
{
	if (scratch)
		return scratch;
	pthread_once(&scratch_once, scratch_key_init);
	scratch = malloc(CHUNK_READ_BATCH * sizeof *scratch);
	if (scratch)
		pthread_setspecific(scratch_key, scratch);
	return scratch;
}

void uring_pool_init(struct store *s)
{
	struct uring_pool *p = calloc(1, sizeof *p);
	unsigned ok = 0;

	if (!p)
		return;
	for (unsigned i = 0; i < RINGS; i++) {
		pthread_mutex_init(&p->r[i].lock, NULL);
		p->r[i].ok = io_uring_queue_init(RING_ENTRIES, &p->r[i].ring, 0) == 0;
		ok += p->r[i].ok;
	}
	if (!ok)
		log_debug("io_uring unavailable; chunk reads go one by one");
	s->rings = p;
}

void uring_pool_free(struct store *s)
{
	struct uring_pool *p = s->rings;

	if (!p)
		return;
	for (unsigned i = 0; i < RINGS; i++) {
		if (p->r[i].ok)
			io_uring_queue_exit(&p->r[i].ring);
		pthread_mutex_destroy(&p->r[i].lock);
	}
	free(p);
	s->rings = NULL;
}

/* A free ring, locked; NULL when all are busy or there are none. */
static int ring_take(struct store *s)
{
	struct uring_pool *p = s->rings;

	for (unsigned i = 0; p && i < RINGS; i++)
		if (p->r[i].ok && pthread_mutex_trylock(&p->r[i].lock) == 0)
			return (int)i;
	return -1;
}

/* Each op's user_data: the index of its rec_read, and which op of it. */
#define UD(i, op) ((uint64_t)(i) << 1 | (op))

static void queue(struct io_uring *r, struct rec_read *rr, unsigned i)
{
	for (unsigned k = 0; k < rr->nops; k++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(r);
		const struct rec_op *op = &rr->op[k];

		if (op->iovcnt == 1)
			io_uring_prep_read(sqe, rr->fd, op->iov->iov_base, (unsigned)op->len, op->off);
		else
			io_uring_prep_readv(sqe, rr->fd, op->iov, (unsigned)op->iovcnt, op->off);
		sqe->user_data = UD(i, k);
	}
}

/* The same reads without a ring. */
static int read_one(struct rec_read *rr)
{
	for (unsigned k = 0; k < rr->nops; k++) {
		const struct rec_op *op = &rr->op[k];
		ssize_t got = preadv(rr->fd, op->iov, op->iovcnt, (off_t)op->off);

		if (got < 0)
			return errno == EINTR ? read_one(rr) : -errno;
		if ((size_t)got != op->len)
			return -EIO;	/* short: the record is cut */
	}
	return 0;
}

int rec_read_batch(struct store *s, struct rec_read *rr, unsigned n, int *res)
{
	/* A single read gains nothing from a ring. */
	int ri = n > 1 ? ring_take(s) : -1;
	struct io_uring *r = ri >= 0 ? &s->rings->r[ri].ring : NULL;
	unsigned i = 0;
	int ret = 0;

	for (unsigned k = 0; k < n; k++)
		res[k] = 0;
	/* Fill the ring, wait for what was queued, go on with the rest. */
	while (r && i < n) {
		unsigned queued = 0, start = i;

		while (i < n && io_uring_sq_space_left(r) >= rr[i].nops) {
			queue(r, &rr[i], i);
			queued += rr[i].nops;
			i++;
		}
		do
			ret = io_uring_submit_and_wait(r, queued);
		while (ret == -EINTR);
		if (ret < 0) {
			/* The queued reads may not have gone: retire the ring, read by hand. */
			log_warn("io_uring submit failed (%s); reading without it", strerror(-ret));
			s->rings->r[ri].ok = false;
			i = start;
			ret = 0;
			break;
		}
		ret = 0;
		while (queued) {
			struct io_uring_cqe *cqe;
			int w = io_uring_wait_cqe(r, &cqe);
			if (w == -EINTR)
				continue;
			if (w < 0) {
				ret = w;
				goto out;
			}
			unsigned k = (unsigned)(cqe->user_data >> 1), op = cqe->user_data & 1;
			if (cqe->res < 0)
				res[k] = cqe->res;
			else if ((size_t)cqe->res != rr[k].op[op].len && res[k] == 0)
				res[k] = -EIO;	/* short: the record is cut */
			io_uring_cqe_seen(r, cqe);
			queued--;
		}
	}
	for (; i < n; i++)
		res[i] = read_one(&rr[i]);
out:
	if (ri >= 0)
		pthread_mutex_unlock(&s->rings->r[ri].lock);
	return ret;
}

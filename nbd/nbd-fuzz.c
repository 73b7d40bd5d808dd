/*
 * libFuzzer target for the handshake and request parser: the input is
 * what a client sends, cut into reads of varying size, against the
 * in-memory backend. Replies are drained as a client would read them.
 * Jobs handed to "executors" are held back and completed later, out of
 * order, as the event loop's executors would.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd-internal.h"
#include "nbd-mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct nbd_backend be;

struct held {
	struct nbd_job *jobs[128];
	unsigned n;
};

static void hold_job(void *opaque, struct nbd_job *j)
{
	struct held *h = opaque;
	if (h->n == 128) {	/* more than any cap lets through: finish it now */
		nbd_job_run(j);
		nbd_job_done(j);
		return;
	}
	h->jobs[h->n++] = j;
}

/* Completes up to k held jobs, picking by seed so the order varies. */
static void complete(struct held *h, unsigned k, unsigned seed)
{
	while (h->n && k--) {
		unsigned i = seed++ % h->n;
		struct nbd_job *j = h->jobs[i];
		h->jobs[i] = h->jobs[--h->n];
		nbd_job_run(j);
		nbd_job_done(j);
	}
}

static void drain(struct nbd_conn *c)
{
	struct iovec iov[64];
	int n = nbd_conn_out_iov(c, iov, 64);
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	nbd_conn_sent(c, total);
	nbd_conn_process(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!be.open) {
		struct nbd_mem *m = nbd_mem_new();
		nbd_mem_add(m, "disk", 1 << 20, false);
		nbd_mem_add(m, "ro", 64 << 10, true);
		nbd_mem_backend(m, &be);
	}
	/* small limits so the fuzzer reaches them */
	struct nbd_conn *c = nbd_conn_new(&be, 256 * 1024, 4, NULL);
	struct held h = { .n = 0 };
	size_t pos = 0;
	unsigned step = 0;

	/* odd last byte: executor mode, where jobs complete later and out of order */
	if (size && (data[size - 1] & 1)) {
		c->submit = hold_job;
		c->submit_opaque = &h;
	}
	while (pos < size && !nbd_conn_finished(c)) {
		void *buf;
		size_t len;
		nbd_conn_recv_buf(c, &buf, &len);
		if (!len) {
			complete(&h, 2, step);
			drain(c);
			nbd_conn_recv_buf(c, &buf, &len);
			if (!len) {
				complete(&h, h.n, step);
				drain(c);
				nbd_conn_recv_buf(c, &buf, &len);
				if (!len)
					break;
			}
		}
		/* vary the read size so requests split at every boundary */
		size_t chunk = 1 + (data[pos] ^ step++) % 97;
		chunk = chunk > len ? len : chunk;
		chunk = chunk > size - pos ? size - pos : chunk;
		memcpy(buf, data + pos, chunk);
		pos += chunk;
		nbd_conn_received(c, chunk);
		if (step % 3 == 0)
			drain(c);
		if (step % 5 == 0)
			complete(&h, 1 + step % 3, step);
	}
	/* as the loop does: a connection is freed only once its jobs are back */
	complete(&h, h.n, step);
	nbd_conn_free(c);
	return 0;
}

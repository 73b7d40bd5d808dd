/*
 * The transmission phase: parse a request, validate it in one place
 * (validate_request), call the backend, queue the reply. Errors from the
 * backend become NBD errors in one switch (nbd_errno).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "nbd-internal.h"
#include "nbd-proto.h"

int nbd_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0: return 0;
	case EPERM: case EACCES: case EROFS: return NBD_EPERM;
	case EIO: return NBD_EIO;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: case ERANGE: return NBD_EINVAL;
	case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: case ENOENT: case ESTALE: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}

static bool is_write(uint16_t type)
{
	return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
}

static uint16_t allowed_flags(const struct nbd_conn *c, uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ: return c->structured ? NBD_CMD_FLAG_DF : 0;
	case NBD_CMD_WRITE: return NBD_CMD_FLAG_FUA;
	case NBD_CMD_TRIM: return NBD_CMD_FLAG_FUA;
	case NBD_CMD_WRITE_ZEROES:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
	case NBD_CMD_BLOCK_STATUS: return NBD_CMD_FLAG_REQ_ONE;
	default: return 0;
	}
}

/* Every check a request must pass before the backend sees it. */
static int validate_request(const struct nbd_conn *c, const struct nbd_request *r)
{
	switch (r->type) {
	case NBD_CMD_READ: case NBD_CMD_WRITE: case NBD_CMD_DISC: case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM: case NBD_CMD_CACHE: case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_BLOCK_STATUS:
		break;
	default:
		return -EINVAL;
	}
	if (r->flags & ~allowed_flags(c, r->type))
		return -EINVAL;
	if ((r->flags & NBD_CMD_FLAG_FUA) && !(c->tflags & NBD_FLAG_SEND_FUA))
		return -EINVAL;
	if ((r->flags & NBD_CMD_FLAG_FAST_ZERO) && !(c->tflags & NBD_FLAG_SEND_FAST_ZERO))
		return -EINVAL;
	if (r->type == NBD_CMD_DISC)
		return 0;
	if (r->type == NBD_CMD_FLUSH)
		return r->offset || r->len ? -EINVAL : 0;
	if (is_write(r->type) && c->info.readonly)
		return -EPERM;
	if (r->type == NBD_CMD_TRIM && !(c->tflags & NBD_FLAG_SEND_TRIM))
		return -EINVAL;
	if (r->type == NBD_CMD_WRITE_ZEROES && !(c->tflags & NBD_FLAG_SEND_WRITE_ZEROES))
		return -EINVAL;
	if (r->type == NBD_CMD_BLOCK_STATUS && !c->meta_alloc)
		return -EINVAL;
	if (r->len == 0)
		return -EINVAL;
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->len > c->max_request)
		return c->structured ? -EOVERFLOW : -EINVAL;
	if (r->offset > c->info.size || r->len > c->info.size - r->offset)
		return is_write(r->type) ? -ENOSPC : -EINVAL;
	return 0;
}

static void put_simple(struct nbd_out *o, uint64_t cookie, int err)
{
	put32(o->hdr, NBD_SIMPLE_REPLY_MAGIC);
	put32(o->hdr + 4, (uint32_t)nbd_errno(err));
	put64(o->hdr + 8, cookie);
	o->hdr_len = NBD_SIMPLE_REPLY_SIZE;
}

static void put_structured(struct nbd_out *o, uint64_t cookie, uint16_t type, uint32_t len)
{
	put32(o->hdr, NBD_STRUCTURED_REPLY_MAGIC);
	put16(o->hdr + 4, NBD_REPLY_FLAG_DONE);
	put16(o->hdr + 6, type);
	put64(o->hdr + 8, cookie);
	put32(o->hdr + 16, len);
	o->hdr_len = NBD_STRUCTURED_REPLY_SIZE;
}

/* Replies with no payload: success, or an error. */
static void reply(struct nbd_conn *c, const struct nbd_request *r, int err)
{
	struct nbd_out *o = nbd_out_new(c, 0);
	if (!o) {
		nbd_conn_drop(c, "out of memory");
		return;
	}
	/* READ and BLOCK_STATUS answer in structured form once it is negotiated. */
	if (err && c->structured && (r->type == NBD_CMD_READ || r->type == NBD_CMD_BLOCK_STATUS)) {
		put_structured(o, r->cookie, NBD_REPLY_TYPE_ERROR, 6);
		put32(o->hdr + 20, (uint32_t)nbd_errno(err));
		put16(o->hdr + 24, 0);
		o->hdr_len += 6;
	} else {
		put_simple(o, r->cookie, err);
	}
	nbd_conn_queue(c, o);
}

struct extents_ctx {
	uint8_t *desc;
	unsigned n, max;
	uint64_t next, end;
};

static int extent_cb(void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
	struct extents_ctx *x = opaque;

	flags &= NBD_STATE_HOLE | NBD_STATE_ZERO;
	if (off > x->next || len > UINT64_MAX - off || off + len <= x->next)
		return 1;	/* a gap or a repeat: stop, what we have is valid */
	uint64_t end = MIN(off + len, x->end);
	uint32_t l = (uint32_t)(end - x->next);	/* fits: the request length is 32-bit */
	if (x->n && get32(x->desc + 8 * (x->n - 1) + 4) == flags) {
		uint8_t *p = x->desc + 8 * (x->n - 1);
		put32(p, get32(p) + l);
	} else {
		if (x->n == x->max)
			return 1;
		put32(x->desc + 8 * x->n, l);
		put32(x->desc + 8 * x->n + 4, flags);
		x->n++;
	}
	x->next = end;
	return x->next >= x->end;
}

static int run_block_status(struct nbd_job *j)
{
	const struct nbd_request *r = &j->req;
	struct nbd_conn *c = j->c;
	struct extents_ctx x = { .desc = j->o->data, .max = (unsigned)(j->o->data_len / 8),
				 .next = r->offset, .end = r->offset + r->len };
	int err = 0;

	while (x.next < x.end) {
		uint64_t before = x.next;
		err = c->be->extents(c->handle, (uint32_t)(x.end - x.next), x.next, extent_cb, &x);
		if (err > 0)
			err = 0;
		/* No progress: the reply is full, or the backend had nothing more. */
		if (err < 0 || x.next == before)
			break;
	}
	if (!err && x.n == 0)
		err = -EIO;
	j->o->data_len = 8u * x.n;
	return err;
}

static unsigned be_flags(const struct nbd_request *r)
{
	return ((r->flags & NBD_CMD_FLAG_FUA) ? NBD_BE_FUA : 0) |
	       ((r->flags & NBD_CMD_FLAG_FAST_ZERO) ? NBD_BE_FAST_ZERO : 0);
}

/* The backend call of a job. Runs on any thread: it touches only the job
 * and what stays fixed after the handshake (backend, handle). */
void nbd_job_run(struct nbd_job *j)
{
	const struct nbd_request *r = &j->req;
	struct nbd_conn *c = j->c;

	switch (r->type) {
	case NBD_CMD_READ:
		j->err = c->be->pread(c->handle, j->o->data, r->len, r->offset);
		break;
	case NBD_CMD_WRITE:
		j->err = c->be->pwrite(c->handle, j->payload, r->len, r->offset, be_flags(r));
		break;
	case NBD_CMD_BLOCK_STATUS:
		j->err = run_block_status(j);
		break;
	case NBD_CMD_FLUSH:
		j->err = c->be->flush(c->handle);
		break;
	case NBD_CMD_TRIM:
		j->err = c->be->trim(c->handle, r->len, r->offset, be_flags(r));
		break;
	case NBD_CMD_WRITE_ZEROES:
		j->err = c->be->zero(c->handle, r->len, r->offset, be_flags(r));
		break;
	case NBD_CMD_CACHE:
		j->err = c->be->cache ? c->be->cache(c->handle, r->len, r->offset) : 0;
		break;
	default:
		j->err = -EINVAL;
		break;
	}
}

static void job_free(struct nbd_conn *c, struct nbd_job *j)
{
	if (j->o) {
		nbd_buf_put(c, j->o->data);
		free(j->o);
	}
	nbd_buf_put(c, j->payload);
	free(j);
}

/* Back on the connection's thread: queue the job's reply. */
void nbd_job_done(struct nbd_job *j)
{
	struct nbd_conn *c = j->c;
	const struct nbd_request *r = &j->req;

	if (j->submitted)
		c->inflight--;
	c->job_bytes -= j->bytes;
	if (c->state == NBD_ST_DEAD) {
		job_free(c, j);
		return;
	}
	if (j->err < 0 || !j->o) {
		reply(c, r, j->err);
		job_free(c, j);
		return;
	}
	struct nbd_out *o = TAKE_PTR(j->o);
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		put_structured(o, r->cookie, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + (uint32_t)o->data_len);
		put32(o->hdr + 20, NBD_META_BASE_ALLOCATION);
		o->hdr_len += 4;
	} else if (c->structured) {
		put_structured(o, r->cookie, NBD_REPLY_TYPE_OFFSET_DATA, 8 + r->len);
		put64(o->hdr + 20, r->offset);
		o->hdr_len += 8;
	} else {
		put_simple(o, r->cookie, 0);
	}
	nbd_conn_queue(c, o);
	job_free(c, j);
}

/* Small data requests: the store serves them from memory and the page
 * cache in a few microseconds, less than two thread hand-offs cost. */
static bool runs_inline(const struct nbd_conn *c, const struct nbd_job *j)
{
	switch (j->req.type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
	case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_TRIM:
		return j->req.len <= c->inline_max;
	default:
		return false;
	}
}

/* Runs the jobs of one parsed batch: all but the last go to the executors
 * (when there are any), the last runs here, so a lone request (QD1) never
 * pays for a thread hop and a deep queue keeps every core busy; small data
 * requests run here too. A last one that is not small (a 1 MiB write, a
 * FLUSH) goes too when the client is already sending more: stored here, a
 * 1 MiB write kept the worker from reading the next one. */
void nbd_conn_flush_batch(struct nbd_conn *c)
{
	while (c->batch) {
		struct nbd_job *j = c->batch;
		c->batch = j->next;
		j->next = NULL;
		if (c->submit && !runs_inline(c, j) &&
		    (c->batch || (c->peer_sending && c->peer_sending(c->submit_opaque)))) {
			j->submitted = true;
			c->inflight++;
			c->submit(c->submit_opaque, j);
		} else {
			nbd_job_run(j);
			nbd_job_done(j);
		}
	}
	c->batch_tail = NULL;
}

/* Prepares a validated request that calls the backend; PAYLOAD (a WRITE's
 * data, owned) is handed over. */
static void start(struct nbd_conn *c, const struct nbd_request *r, uint8_t *payload)
{
	struct nbd_job *j = calloc(1, sizeof(*j));
	if (!j) {
		nbd_buf_put(c, payload);
		reply(c, r, -ENOMEM);
		return;
	}
	j->c = c;
	j->req = *r;
	j->payload = payload;
	if (r->type == NBD_CMD_READ)
		j->o = nbd_out_new(c, r->len);
	else if (r->type == NBD_CMD_BLOCK_STATUS)
		j->o = nbd_out_new(c, 8u * ((r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS));
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_BLOCK_STATUS) && !j->o) {
		job_free(c, j);
		reply(c, r, -ENOMEM);
		return;
	}
	j->bytes = (payload ? r->len : 0) + (j->o ? j->o->data_len : 0);
	c->job_bytes += j->bytes;
	if (c->batch_tail)
		c->batch_tail->next = j;
	else
		c->batch = j;
	c->batch_tail = j;
	c->nbatch++;
}

/* Executes a validated request that carries no payload. */
static void execute(struct nbd_conn *c, const struct nbd_request *r)
{
	if (r->type == NBD_CMD_DISC) {
		c->state = NBD_ST_CLOSING;
		c->why = "client disconnected";
		return;
	}
	start(c, r, NULL);
}

/* A WRITE whose data sits in the input buffer, which is reused: copy it. */
static void execute_write(struct nbd_conn *c, const struct nbd_request *r, const uint8_t *data,
			  int err)
{
	if (err) {
		reply(c, r, err);
		return;
	}
	uint8_t *owned = nbd_buf_get(c, r->len);
	if (!owned) {
		reply(c, r, -ENOMEM);
		return;
	}
	memcpy(owned, data, r->len);
	start(c, r, owned);
}

void nbd_request_payload_done(struct nbd_conn *c)
{
	uint8_t *data = TAKE_PTR(c->payload);
	c->state = NBD_ST_TRANSMISSION;
	c->payload_got = 0;
	if (c->wreq_err) {
		nbd_buf_put(c, data);
		reply(c, &c->wreq, c->wreq_err);
	} else {
		start(c, &c->wreq, data);
	}
}

size_t nbd_request_step(struct nbd_conn *c, const uint8_t *buf, size_t len)
{
	if (len < NBD_REQUEST_SIZE)
		return 0;
	if (get32(buf) != NBD_REQUEST_MAGIC) {
		nbd_conn_drop(c, "bad request magic");
		return len;
	}
	struct nbd_request r = {
		.flags = get16(buf + 4),
		.type = get16(buf + 6),
		.cookie = get64(buf + 8),
		.offset = get64(buf + 16),
		.len = get32(buf + 24),
	};
	c->requests++;

	if (r.type != NBD_CMD_WRITE) {
		int err = validate_request(c, &r);
		if (err)
			reply(c, &r, err);
		else
			execute(c, &r);
		return NBD_REQUEST_SIZE;
	}

	int err = validate_request(c, &r);
	if (r.len > c->max_request) {
		/* Not worth reading up to 4 GiB to stay in sync: answer, then hang up. */
		reply(c, &r, err);
		c->state = NBD_ST_CLOSING;
		c->why = "write payload over the request size limit";
		return len;
	}
	size_t have = len - NBD_REQUEST_SIZE;
	if (have >= r.len) {
		execute_write(c, &r, buf + NBD_REQUEST_SIZE, err);
		return NBD_REQUEST_SIZE + r.len;
	}
	c->payload = nbd_buf_get(c, r.len);
	if (!c->payload) {
		nbd_conn_drop(c, "out of memory for a write payload");
		return len;
	}
	memcpy(c->payload, buf + NBD_REQUEST_SIZE, have);
	c->payload_got = (uint32_t)have;
	c->wreq = r;
	c->wreq_err = err;
	c->state = NBD_ST_PAYLOAD;
	return len;
}

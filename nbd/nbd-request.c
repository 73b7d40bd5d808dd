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

static void do_read(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_out *o = nbd_out_new(c, r->len);
	if (!o) {
		reply(c, r, -ENOMEM);
		return;
	}
	int err = c->be->pread(c->handle, o->data, r->len, r->offset);
	if (err < 0) {
		nbd_buf_put(c, o->data);
		free(o);
		reply(c, r, err);
		return;
	}
	if (c->structured) {
		put_structured(o, r->cookie, NBD_REPLY_TYPE_OFFSET_DATA, 8 + r->len);
		put64(o->hdr + 20, r->offset);
		o->hdr_len += 8;
	} else {
		put_simple(o, r->cookie, 0);
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

static void do_block_status(struct nbd_conn *c, const struct nbd_request *r)
{
	unsigned max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
	struct nbd_out *o = nbd_out_new(c, 8u * max);
	if (!o) {
		reply(c, r, -ENOMEM);
		return;
	}
	struct extents_ctx x = { .desc = o->data, .max = max, .next = r->offset,
				 .end = r->offset + r->len };
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
	if (err < 0) {
		nbd_buf_put(c, o->data);
		free(o);
		reply(c, r, err);
		return;
	}
	o->data_len = 8u * x.n;
	put_structured(o, r->cookie, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + (uint32_t)o->data_len);
	put32(o->hdr + 20, NBD_META_BASE_ALLOCATION);
	o->hdr_len += 4;
	nbd_conn_queue(c, o);
}

static unsigned be_flags(const struct nbd_request *r)
{
	return ((r->flags & NBD_CMD_FLAG_FUA) ? NBD_BE_FUA : 0) |
	       ((r->flags & NBD_CMD_FLAG_FAST_ZERO) ? NBD_BE_FAST_ZERO : 0);
}

/* Executes a validated request that carries no payload. */
static void execute(struct nbd_conn *c, const struct nbd_request *r)
{
	int err;

	switch (r->type) {
	case NBD_CMD_READ:
		do_read(c, r);
		return;
	case NBD_CMD_BLOCK_STATUS:
		do_block_status(c, r);
		return;
	case NBD_CMD_DISC:
		c->state = NBD_ST_CLOSING;
		c->why = "client disconnected";
		return;
	case NBD_CMD_FLUSH:
		err = c->be->flush(c->handle);
		break;
	case NBD_CMD_TRIM:
		err = c->be->trim(c->handle, r->len, r->offset, be_flags(r));
		break;
	case NBD_CMD_WRITE_ZEROES:
		err = c->be->zero(c->handle, r->len, r->offset, be_flags(r));
		break;
	case NBD_CMD_CACHE:
		err = c->be->cache ? c->be->cache(c->handle, r->len, r->offset) : 0;
		break;
	default:
		err = -EINVAL;
		break;
	}
	reply(c, r, err);
}

static void execute_write(struct nbd_conn *c, const struct nbd_request *r, const uint8_t *data,
			  int err)
{
	if (!err)
		err = c->be->pwrite(c->handle, data, r->len, r->offset, be_flags(r));
	reply(c, r, err);
}

void nbd_request_payload_done(struct nbd_conn *c)
{
	c->state = NBD_ST_TRANSMISSION;
	execute_write(c, &c->wreq, c->payload, c->wreq_err);
	nbd_buf_put(c, c->payload);
	c->payload = NULL;
	c->payload_got = 0;
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

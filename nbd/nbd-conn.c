/*
 * One connection's protocol state, with no I/O of its own: the event loop
 * (nbd-loop.c) and the fuzz target (nbd-fuzz.c) move the bytes. Received
 * bytes land in a fixed input buffer, except a large WRITE's data, which
 * goes straight into the buffer handed to the backend. Replies wait in a
 * queue of header+data pairs that the loop sends with one sendmsg.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "nbd-internal.h"

/* Queued reply bytes per connection before we stop reading its requests. */
#define NBD_MAX_OUT_BYTES (64u * 1024 * 1024)

struct nbd_conn *nbd_conn_new(const struct nbd_backend *be, uint32_t max_request,
			      unsigned max_inflight, const struct ucred *peer)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->in = malloc(NBD_INBUF_SIZE);
	if (!c->in) {
		free(c);
		return NULL;
	}
	c->be = be;
	c->max_request = max_request ? max_request : NBD_DEFAULT_MAX_REQUEST;
	c->max_inflight = max_inflight ? max_inflight : NBD_DEFAULT_MAX_INFLIGHT;
	if (peer)
		c->peer = *peer;
	else
		c->peer = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	c->state = NBD_ST_CLIENT_FLAGS;
	nbd_handshake_greet(c);
	return c;
}

void nbd_conn_free(struct nbd_conn *c)
{
	if (!c)
		return;
	while (c->out_head) {
		struct nbd_out *o = c->out_head;
		c->out_head = o->next;
		nbd_buf_put(c, o->data);
		free(o);
	}
	nbd_buf_put(c, c->payload);
	if (c->handle)
		c->be->close(c->handle);
	free(c->meta_export);
	free(c->in);
	free(c);
}

struct nbd_out *nbd_out_new(struct nbd_conn *c, size_t data_len)
{
	struct nbd_out *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	if (data_len) {
		o->data = nbd_buf_get(c, data_len);
		if (!o->data) {
			free(o);
			return NULL;
		}
		o->data_len = data_len;
	}
	return o;
}

void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o)
{
	o->next = NULL;
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->out_count++;
	c->out_bytes += o->hdr_len + o->data_len;
}

void nbd_conn_drop(struct nbd_conn *c, const char *why)
{
	if (c->state != NBD_ST_DEAD)
		c->why = why;
	c->state = NBD_ST_DEAD;
}

static bool backpressured(const struct nbd_conn *c)
{
	return c->out_count + c->inflight + c->nbatch >= c->max_inflight ||
	       c->out_bytes + c->job_bytes >= NBD_MAX_OUT_BYTES;
}

bool nbd_conn_want_recv(const struct nbd_conn *c)
{
	switch (c->state) {
	case NBD_ST_PAYLOAD:
		return true;
	case NBD_ST_CLIENT_FLAGS:
	case NBD_ST_OPTIONS:
	case NBD_ST_TRANSMISSION:
		return !backpressured(c) && c->in_len < NBD_INBUF_SIZE;
	default:
		return false;
	}
}

bool nbd_conn_finished(const struct nbd_conn *c)
{
	return c->state == NBD_ST_DEAD ||
	       (c->state == NBD_ST_CLOSING && !c->out_head && !c->inflight);
}

void nbd_conn_recv_buf(struct nbd_conn *c, void **buf, size_t *len)
{
	if (!nbd_conn_want_recv(c)) {
		*buf = NULL;
		*len = 0;
	} else if (c->state == NBD_ST_PAYLOAD) {
		*buf = c->payload + c->payload_got;
		*len = c->wreq.len - c->payload_got;
	} else {
		*buf = c->in + c->in_len;
		*len = NBD_INBUF_SIZE - c->in_len;
	}
}

void nbd_conn_process(struct nbd_conn *c)
{
	size_t pos = 0;

	while (pos < c->in_len && !backpressured(c)) {
		size_t used;
		if (c->state == NBD_ST_CLIENT_FLAGS || c->state == NBD_ST_OPTIONS)
			used = nbd_handshake_step(c, c->in + pos, c->in_len - pos);
		else if (c->state == NBD_ST_TRANSMISSION)
			used = nbd_request_step(c, c->in + pos, c->in_len - pos);
		else
			break;
		if (!used)
			break;
		pos += used;
	}
	nbd_conn_flush_batch(c);
	c->nbatch = 0;
	if (c->state == NBD_ST_CLOSING || c->state == NBD_ST_DEAD) {
		c->in_len = 0;	/* nothing more is read from this client */
		return;
	}
	if (pos) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
}

void nbd_conn_received(struct nbd_conn *c, size_t n)
{
	if (c->state == NBD_ST_PAYLOAD) {
		c->payload_got += n;
		if (c->payload_got < c->wreq.len)
			return;
		nbd_request_payload_done(c);
	} else {
		c->in_len += n;
	}
	nbd_conn_process(c);
}

int nbd_conn_out_iov(struct nbd_conn *c, struct iovec *iov, int max)
{
	int n = 0;
	size_t skip = c->out_sent;

	for (struct nbd_out *o = c->out_head; o && n + 2 <= max; o = o->next) {
		if (skip < o->hdr_len) {
			iov[n++] = (struct iovec){ o->hdr + skip, o->hdr_len - skip };
			skip = 0;
		} else {
			skip -= o->hdr_len;
		}
		if (o->data_len > skip)
			iov[n++] = (struct iovec){ o->data + skip, o->data_len - skip };
		skip = 0;
	}
	return n;
}

void nbd_conn_sent(struct nbd_conn *c, size_t n)
{
	c->out_sent += n;
	while (c->out_head) {
		struct nbd_out *o = c->out_head;
		size_t sz = o->hdr_len + o->data_len;
		if (c->out_sent < sz)
			break;
		c->out_sent -= sz;
		c->out_head = o->next;
		if (!c->out_head)
			c->out_tail = NULL;
		c->out_count--;
		c->out_bytes -= sz;
		nbd_buf_put(c, o->data);
		free(o);
	}
}

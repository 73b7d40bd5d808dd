/*
 * Fixed newstyle negotiation: the greeting, the client's flags, and one
 * option at a time until EXPORT_NAME or GO moves the connection into the
 * transmission phase.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "nbd-internal.h"
#include "nbd-proto.h"

void nbd_handshake_greet(struct nbd_conn *c)
{
	struct nbd_out *o = nbd_out_new(c, 0);
	if (!o) {
		nbd_conn_drop(c, "out of memory");
		return;
	}
	put64(o->hdr, NBD_MAGIC);
	put64(o->hdr + 8, NBD_IHAVEOPT);
	put16(o->hdr + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	o->hdr_len = 18;
	nbd_conn_queue(c, o);
}

/* Queue an option reply whose payload is the concatenation of the parts. */
static void opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *a, size_t alen,
		      const void *b, size_t blen)
{
	struct nbd_out *o = nbd_out_new(c, alen + blen);
	if (!o) {
		nbd_conn_drop(c, "out of memory");
		return;
	}
	put64(o->hdr, NBD_REP_MAGIC);
	put32(o->hdr + 8, opt);
	put32(o->hdr + 12, type);
	put32(o->hdr + 16, (uint32_t)(alen + blen));
	o->hdr_len = 20;
	if (alen)
		memcpy(o->data, a, alen);
	if (blen)
		memcpy(o->data + alen, b, blen);
	nbd_conn_queue(c, o);
}

static void opt_ack(struct nbd_conn *c, uint32_t opt)
{
	opt_reply(c, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
}

__attribute__((format(printf, 4, 5)))
static void opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	opt_reply(c, opt, type, msg, MIN((size_t)n, sizeof(msg) - 1), NULL, 0);
}

/* Export names on the wire are not NUL-terminated and must not contain NUL. */
static char *wire_string(const uint8_t *p, size_t len)
{
	if (memchr(p, 0, len))
		return NULL;
	return strndup((const char *)p, len);
}

static uint32_t open_error(int r)
{
	switch (r) {
	case -ENOENT: case -EINVAL: case -ENAMETOOLONG: return NBD_REP_ERR_UNKNOWN;
	case -EACCES: case -EPERM: return NBD_REP_ERR_POLICY;
	case -ESHUTDOWN: return NBD_REP_ERR_SHUTDOWN;
	default: return NBD_REP_ERR_PLATFORM;
	}
}

static uint16_t transmission_flags(const struct nbd_conn *c)
{
	const struct nbd_export_info *i = &c->info;
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_CACHE;

	if (i->can_flush)
		f |= NBD_FLAG_SEND_FLUSH;
	if (i->can_multi_conn)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	if (i->readonly)
		return f | NBD_FLAG_READ_ONLY;
	if (i->can_fua)
		f |= NBD_FLAG_SEND_FUA;
	if (i->can_trim)
		f |= NBD_FLAG_SEND_TRIM;
	if (i->can_zero)
		f |= NBD_FLAG_SEND_WRITE_ZEROES;
	if (i->can_zero && i->can_fast_zero)
		f |= NBD_FLAG_SEND_FAST_ZERO;
	return f;
}

/* Opens NAME into c->handle / c->info. */
static int open_export(struct nbd_conn *c, const char *name)
{
	void *h = NULL;
	struct nbd_export_info info = { 0 };
	int r = c->be->open(c->be->opaque, name, &c->peer, &h, &info);
	if (r < 0)
		return r;
	if (c->handle)
		c->be->close(c->handle);
	c->handle = h;
	c->info = info;
	if (!c->info.pref_block)
		c->info.pref_block = 4096;
	c->tflags = transmission_flags(c);
	return 0;
}

static void enter_transmission(struct nbd_conn *c, const char *name)
{
	/* Meta contexts chosen for another export do not carry over. */
	if (c->meta_alloc && (!c->meta_export || strcmp(c->meta_export, name)))
		c->meta_alloc = false;
	c->state = NBD_ST_TRANSMISSION;
}

static void opt_export_name(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
	_cleanup_free_ char *name = wire_string(data, len);
	/* This option has no error reply: the spec says to hang up. */
	if (!name || open_export(c, name) < 0) {
		nbd_conn_drop(c, "EXPORT_NAME of an unknown export");
		return;
	}
	size_t zeroes = c->no_zeroes ? 0 : 124;
	struct nbd_out *o = nbd_out_new(c, zeroes);
	if (!o) {
		nbd_conn_drop(c, "out of memory");
		return;
	}
	put64(o->hdr, c->info.size);
	put16(o->hdr + 8, c->tflags);
	o->hdr_len = 10;
	if (zeroes)
		memset(o->data, 0, zeroes);
	nbd_conn_queue(c, o);
	enter_transmission(c, name);
}

struct list_ctx {
	struct nbd_conn *c;
};

static int list_one(void *ctx, const char *name, const char *description)
{
	struct nbd_conn *c = ((struct list_ctx *)ctx)->c;
	size_t nl = strlen(name), dl = description ? strlen(description) : 0;
	uint8_t hdr[4 + 4096 + 1024];

	nl = MIN(nl, (size_t)4096);
	dl = MIN(dl, (size_t)1024);
	put32(hdr, (uint32_t)nl);
	memcpy(hdr + 4, name, nl);
	if (dl)
		memcpy(hdr + 4 + nl, description, dl);
	opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, hdr, 4 + nl + dl, NULL, 0);
	return c->state == NBD_ST_DEAD ? -1 : 0;
}

static void opt_list(struct nbd_conn *c, uint32_t len)
{
	if (len) {
		opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
		return;
	}
	struct list_ctx ctx = { c };
	int r = c->be->list(c->be->opaque, &c->peer, list_one, &ctx);
	if (c->state == NBD_ST_DEAD)
		return;
	if (r < 0) {
		opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_PLATFORM, "cannot list exports: %s",
			  strerror(-r));
		return;
	}
	opt_ack(c, NBD_OPT_LIST);
}

static void info_reply(struct nbd_conn *c, uint32_t opt, uint16_t type, const void *p, size_t len)
{
	uint8_t t[2];
	put16(t, type);
	opt_reply(c, opt, NBD_REP_INFO, t, 2, p, len);
}

/* NBD_OPT_INFO and NBD_OPT_GO. */
static void opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
	if (len < 6) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "option data too short");
		return;
	}
	uint32_t namelen = get32(data);
	if (namelen > len - 6) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "export name length is past the option's end");
		return;
	}
	uint16_t nreq = get16(data + 4 + namelen);
	if ((uint64_t)4 + namelen + 2 + 2ull * nreq != len) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "information requests do not fill the option");
		return;
	}
	bool want_name = false, want_desc = false;
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t = get16(data + 4 + namelen + 2 + 2 * i);
		want_name |= t == NBD_INFO_NAME;
		want_desc |= t == NBD_INFO_DESCRIPTION;
	}
	_cleanup_free_ char *name = wire_string(data + 4, namelen);
	if (!name) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
		return;
	}
	int r = open_export(c, name);
	if (r < 0) {
		if (r == -ENOENT || r == -EINVAL)
			opt_error(c, opt, open_error(r), "no export named '%s' (list them with nbdinfo --list)", name);
		else
			opt_error(c, opt, open_error(r), "cannot open export '%s': %s", name, strerror(-r));
		return;
	}

	uint8_t b[12];
	put64(b, c->info.size);
	put16(b + 8, c->tflags);
	info_reply(c, opt, NBD_INFO_EXPORT, b, 10);
	if (want_name)
		info_reply(c, opt, NBD_INFO_NAME, name, strlen(name));
	if (want_desc && c->info.description[0])
		info_reply(c, opt, NBD_INFO_DESCRIPTION, c->info.description,
			   strnlen(c->info.description, sizeof(c->info.description)));
	/* Sent unasked, which the spec allows: any alignment works, payloads are capped. */
	put32(b, 1);
	put32(b + 4, c->info.pref_block);
	put32(b + 8, c->max_request);
	info_reply(c, opt, NBD_INFO_BLOCK_SIZE, b, 12);
	opt_ack(c, opt);

	if (opt == NBD_OPT_GO) {
		enter_transmission(c, name);
	} else {
		c->be->close(c->handle);
		c->handle = NULL;
	}
}

static void meta_reply(struct nbd_conn *c, uint32_t opt)
{
	static const char ctx[] = "base:allocation";
	uint8_t id[4];
	put32(id, NBD_META_BASE_ALLOCATION);
	opt_reply(c, opt, NBD_REP_META_CONTEXT, id, 4, ctx, sizeof(ctx) - 1);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: only base:allocation exists. */
static void opt_meta(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
	bool set = opt == NBD_OPT_SET_META_CONTEXT;

	if (!c->structured) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "negotiate structured replies first");
		return;
	}
	if (len < 8 || get32(data) > len - 8) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed meta context option");
		return;
	}
	uint32_t namelen = get32(data);
	uint32_t nq = get32(data + 4 + namelen);
	size_t pos = 8 + namelen;
	/* Check the whole option before answering anything. */
	for (uint32_t i = 0; i < nq; i++) {
		if (len - pos < 4 || get32(data + pos) > len - pos - 4) {
			opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed meta context query");
			return;
		}
		pos += 4 + get32(data + pos);
	}
	if (pos != len) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "trailing bytes after meta context queries");
		return;
	}
	_cleanup_free_ char *name = wire_string(data + 4, namelen);
	if (!name) {
		opt_error(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
		return;
	}
	/* The export is not opened here: GO reports a missing one. */
	bool found = false;
	pos = 8 + namelen;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql = get32(data + pos);
		const char *q = (const char *)data + pos + 4;
		pos += 4 + ql;
		bool exact = ql == 15 && !memcmp(q, "base:allocation", 15);
		bool ns = ql == 5 && !memcmp(q, "base:", 5);
		if ((exact || (!set && ns)) && !found) {
			meta_reply(c, opt);
			found = true;
		}
	}
	if (!set && nq == 0) {
		meta_reply(c, opt);
		found = true;
	}
	if (set) {
		c->meta_alloc = found;
		free(c->meta_export);
		c->meta_export = TAKE_PTR(name);
	}
	opt_ack(c, opt);
}

static void handle_option(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		opt_export_name(c, data, len);
		break;
	case NBD_OPT_ABORT:
		opt_ack(c, opt);
		c->state = NBD_ST_CLOSING;
		c->why = "client aborted";
		break;
	case NBD_OPT_LIST:
		opt_list(c, len);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		opt_info_go(c, opt, data, len);
		break;
	case NBD_OPT_STRUCTURED_REPLY:
		if (len) {
			opt_error(c, opt, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
			break;
		}
		c->structured = true;
		opt_ack(c, opt);
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		opt_meta(c, opt, data, len);
		break;
	case NBD_OPT_STARTTLS:
		opt_error(c, opt, NBD_REP_ERR_UNSUP, "TLS is not offered; use the unix socket");
		break;
	default:
		opt_error(c, opt, NBD_REP_ERR_UNSUP, "option %u is not supported", opt);
		break;
	}
}

size_t nbd_handshake_step(struct nbd_conn *c, const uint8_t *buf, size_t len)
{
	if (c->state == NBD_ST_CLIENT_FLAGS) {
		if (len < 4)
			return 0;
		uint32_t flags = get32(buf);
		if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
			nbd_conn_drop(c, "unknown client flags");
			return 4;
		}
		c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
		c->state = NBD_ST_OPTIONS;
		return 4;
	}

	if (len < NBD_OPT_HEADER_SIZE)
		return 0;
	if (get64(buf) != NBD_IHAVEOPT) {
		nbd_conn_drop(c, "bad option magic");
		return len;
	}
	uint32_t opt = get32(buf + 8), optlen = get32(buf + 12);
	if (optlen > NBD_MAX_OPTION) {
		nbd_conn_drop(c, "option data too long");
		return len;
	}
	if (len - NBD_OPT_HEADER_SIZE < optlen)
		return 0;
	handle_option(c, opt, buf + NBD_OPT_HEADER_SIZE, optlen);
	return NBD_OPT_HEADER_SIZE + optlen;
}

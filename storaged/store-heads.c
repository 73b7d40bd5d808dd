/*
 * Heads: an append-only, checksummed journal of name -> (root, size,
 * generation, read-only, parent). A record is a batch of changes applied
 * atomically (a rename is a delete and a put). Replay keeps every whole
 * record and drops a torn or corrupt tail.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define HEADS_MAGIC 0x44485448u		/* "HTHD" */
#define ENT_FIXED (8 + 24 + NODE_REF_SIZE)
#define REC_MAX (64u << 20)

static void put16(uint8_t **p, uint16_t v) { *(*p)++ = (uint8_t)v; *(*p)++ = (uint8_t)(v >> 8); }
static void put32(uint8_t **p, uint32_t v) { for (int i = 0; i < 4; i++) *(*p)++ = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t **p, uint64_t v) { put32(p, (uint32_t)v); put32(p, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t **p) { uint16_t v = (uint16_t)((*p)[0] | (*p)[1] << 8); *p += 2; return v; }
static uint32_t get32(const uint8_t **p) { uint32_t v = 0; for (int i = 0; i < 4; i++) v |= (uint32_t)*(*p)++ << (8 * i); return v; }
static uint64_t get64(const uint8_t **p) { uint64_t lo = get32(p); return lo | (uint64_t)get32(p) << 32; }

struct head *head_find(struct store *s, const char *name)
{
	for (size_t i = 0; i < s->nheads; i++)
		if (strcmp(s->heads[i].name, name) == 0)
			return &s->heads[i];
	return NULL;
}

static int apply(struct store *s, const struct head_change *c)
{
	struct head *h = head_find(s, c->h.name);

	if (c->op == HEAD_DEL) {
		if (h) {
			*h = s->heads[s->nheads - 1];
			s->nheads--;
		}
		return 0;
	}
	if (!h) {
		if (s->nheads == s->heads_cap) {
			size_t cap = s->heads_cap ? s->heads_cap * 2 : 64;
			struct head *n = realloc(s->heads, cap * sizeof *n);
			if (!n)
				return -ENOMEM;
			s->heads = n;
			s->heads_cap = cap;
		}
		h = &s->heads[s->nheads++];
	}
	*h = c->h;
	h->live = true;
	if (h->gen >= s->next_gen)
		s->next_gen = h->gen + 1;
	return 0;
}

static uint8_t *encode(struct store *s, const struct head_change *c, unsigned n, size_t *len)
{
	size_t total = 24 + 4;
	uint8_t *buf, *p;

	for (unsigned i = 0; i < n; i++)
		total += ENT_FIXED + strlen(c[i].h.name) + strlen(c[i].h.parent);
	buf = malloc(total);
	if (!buf)
		return NULL;
	p = buf;
	put32(&p, HEADS_MAGIC);
	put32(&p, (uint32_t)total);
	put64(&p, ++s->heads_seq);
	put32(&p, n);
	put32(&p, 0);
	for (unsigned i = 0; i < n; i++) {
		const struct head *h = &c[i].h;
		uint16_t nl = (uint16_t)strlen(h->name), pl = (uint16_t)strlen(h->parent);
		*p++ = (uint8_t)c[i].op;
		*p++ = h->ro;
		put16(&p, nl);
		put16(&p, pl);
		put16(&p, 0);
		put64(&p, h->size);
		put64(&p, h->gen);
		put64(&p, h->created);
		ref_encode(&h->root, p);
		p += NODE_REF_SIZE;
		memcpy(p, h->name, nl);
		p += nl;
		memcpy(p, h->parent, pl);
		p += pl;
	}
	put32(&p, XXH32(buf, total - 4, 0));
	*len = total;
	return buf;
}

/* Parses one record at buf (avail bytes). Returns its length, 0 if bad. */
static size_t parse(struct store *s, const uint8_t *buf, size_t avail, bool apply_it)
{
	const uint8_t *p = buf, *end;
	uint32_t total, n;

	if (avail < 28)
		return 0;
	if (get32(&p) != HEADS_MAGIC)
		return 0;
	total = get32(&p);
	if (total < 28 || total > avail || total > REC_MAX)
		return 0;
	p = buf + total - 4;
	if (get32(&p) != XXH32(buf, total - 4, 0))
		return 0;
	p = buf + 8;
	uint64_t seq = get64(&p);
	n = get32(&p);
	get32(&p);
	end = buf + total - 4;
	for (uint32_t i = 0; i < n; i++) {
		struct head_change c = { 0 };
		if (end - p < (long)ENT_FIXED)
			return 0;
		c.op = (enum head_op) * p++;
		c.h.ro = *p++;
		uint16_t nl = get16(&p), pl = get16(&p);
		get16(&p);
		c.h.size = get64(&p);
		c.h.gen = get64(&p);
		c.h.created = get64(&p);
		ref_decode(p, &c.h.root);
		p += NODE_REF_SIZE;
		if (nl == 0 || nl >= sizeof c.h.name || pl >= sizeof c.h.parent || end - p < nl + pl ||
		    (c.op != HEAD_PUT && c.op != HEAD_DEL))
			return 0;
		memcpy(c.h.name, p, nl);
		p += nl;
		memcpy(c.h.parent, p, pl);
		p += pl;
		if (apply_it && apply(s, &c) < 0)
			return 0;
	}
	if (apply_it && seq > s->heads_seq)
		s->heads_seq = seq;
	return total;
}

int heads_replay(struct store *s)
{
	char path[4200];
	_cleanup_free_ uint8_t *buf = NULL;
	struct stat st;
	size_t off = 0;
	int r;

	snprintf(path, sizeof path, "%s/heads", s->dir);
	s->heads_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->heads_fd < 0)
		return -errno;
	if (fstat(s->heads_fd, &st) < 0)
		return -errno;
	if (st.st_size > 0) {
		buf = malloc((size_t)st.st_size);
		if (!buf)
			return -ENOMEM;
		r = pread_all(s->heads_fd, buf, (size_t)st.st_size, 0);
		if (r < 0)
			return r;
	}
	while (off < (size_t)st.st_size) {
		/* Validate the whole batch before applying any of it. */
		size_t n = parse(s, buf + off, (size_t)st.st_size - off, false);
		if (n == 0)
			break;
		parse(s, buf + off, n, true);
		off += n;
	}
	if (off < (size_t)st.st_size) {
		log_warn("heads journal %s: dropped %llu bytes after offset %zu (a torn or corrupt "
			 "tail); keeping the %zu images and snapshots recorded before it",
			 path, (unsigned long long)st.st_size - off, off, s->nheads);
		if (ftruncate(s->heads_fd, (off_t)off) < 0 || fsync(s->heads_fd) < 0)
			return -errno;
	}
	s->heads_size = off;
	return 0;
}

int heads_commit(struct store *s, const struct head_change *c, unsigned n)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	int r;

	buf = encode(s, c, n, &len);
	if (!buf)
		return -ENOMEM;
	r = pwrite_all(s->heads_fd, buf, len, s->heads_size);
	if (r == 0 && fdatasync(s->heads_fd) < 0)
		r = -errno;
	if (r < 0) {
		/* Nothing half-written may stay: the next record must follow a whole one. */
		if (ftruncate(s->heads_fd, (off_t)s->heads_size) < 0)
			log_warn("heads journal: cannot cut back a failed append: %s", strerror(errno));
		s->heads_seq--;
		return r;
	}
	s->heads_size += len;
	for (unsigned i = 0; i < n; i++)
		apply(s, &c[i]);
	if (s->heads_size > (1u << 20) && s->heads_size > 16 * (s->nheads + 1) * 600)
		heads_compact(s);
	return 0;
}

int heads_compact(struct store *s)
{
	_cleanup_free_ struct head_change *c = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	int fd, r;

	c = calloc(s->nheads + 1, sizeof *c);
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < s->nheads; i++) {
		c[i].op = HEAD_PUT;
		c[i].h = s->heads[i];
	}
	buf = encode(s, c, (unsigned)s->nheads, &len);
	if (!buf)
		return -ENOMEM;
	r = file_replace(s->dir_fd, "heads", buf, len, &fd);
	if (r < 0)
		return r;
	close(s->heads_fd);
	s->heads_fd = fd;
	s->heads_size = len;
	return 0;
}

struct head *heads_copy(struct store *s, size_t *n)
{
	struct head *copy;

	pthread_mutex_lock(&s->lock);
	*n = s->nheads;
	copy = malloc((s->nheads + 1) * sizeof *copy);
	if (copy && s->nheads)
		memcpy(copy, s->heads, s->nheads * sizeof *copy);
	pthread_mutex_unlock(&s->lock);
	return copy;
}

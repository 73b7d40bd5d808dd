/*
 * In-memory exports. Holes are found by looking for all-zero 4 KiB blocks,
 * so base:allocation answers like a sparse store would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanup.h"
#include "nbd-mem.h"
#include "nbd-proto.h"

#define MEM_BLOCK 4096u
#define MEM_MAX_EXPORTS 16

struct mem_export {
	char name[256];
	uint64_t size;
	bool readonly;
	uint8_t *data;
	const char *hold;	/* the server's, or NULL */
};

struct nbd_mem {
	struct mem_export ex[MEM_MAX_EXPORTS];
	unsigned n;
	char *hold;
};

struct nbd_mem *nbd_mem_new(void)
{
	return calloc(1, sizeof(struct nbd_mem));
}

int nbd_mem_add(struct nbd_mem *m, const char *name, uint64_t size, bool readonly)
{
	if (m->n == MEM_MAX_EXPORTS || strlen(name) >= sizeof(m->ex[0].name) || size == 0)
		return -EINVAL;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	struct mem_export *e = &m->ex[m->n++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->size = size;
	e->readonly = readonly;
	e->data = p;
	e->hold = m->hold;
	return 0;
}

int nbd_mem_hold_writes(struct nbd_mem *m, const char *path)
{
	free(m->hold);
	if (!(m->hold = strdup(path)))
		return -ENOMEM;
	for (unsigned i = 0; i < m->n; i++)
		m->ex[i].hold = m->hold;
	return 0;
}

void nbd_mem_free(struct nbd_mem *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		munmap(m->ex[i].data, m->ex[i].size);
	free(m->hold);
	free(m);
}

static int mem_open(void *opaque, const char *name, const struct ucred *peer, void **handle,
		    struct nbd_export_info *info)
{
	struct nbd_mem *m = opaque;
	for (unsigned i = 0; i < m->n; i++) {
		struct mem_export *e = &m->ex[i];
		if (strcmp(e->name, name))
			continue;
		*info = (struct nbd_export_info){
			.size = e->size, .readonly = e->readonly,
			.can_flush = true, .can_fua = true, .can_trim = true, .can_zero = true,
			.can_fast_zero = true, .can_cache = true, .can_extents = true,
			.can_multi_conn = true, .pref_block = MEM_BLOCK,
		};
		snprintf(info->description, sizeof(info->description), "in-memory export of %llu bytes",
			 (unsigned long long)e->size);
		*handle = e;
		return 0;
	}
	return -ENOENT;
}

static void mem_close(void *handle)
{
}

static int mem_list(void *opaque, const struct ucred *peer, nbd_list_fn fn, void *ctx)
{
	struct nbd_mem *m = opaque;
	for (unsigned i = 0; i < m->n; i++)
		if (fn(ctx, m->ex[i].name, m->ex[i].readonly ? "read-only in-memory export" :
			      "in-memory export"))
			break;
	return 0;
}

static int mem_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
	struct mem_export *e = h;
	if (off > e->size || len > e->size - off)
		return -EINVAL;
	memcpy(buf, e->data + off, len);
	return 0;
}

static int mem_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, unsigned flags)
{
	struct mem_export *e = h;
	if (e->readonly)
		return -EROFS;
	if (off > e->size || len > e->size - off)
		return -ENOSPC;
	/* a minute at most: a test that forgets its file still ends */
	for (int i = 0; e->hold && i < 6000 && access(e->hold, F_OK) == 0; i++)
		usleep(10000);
	memcpy(e->data + off, buf, len);
	return 0;
}

static int mem_zero(void *h, uint32_t len, uint64_t off, unsigned flags)
{
	struct mem_export *e = h;
	if (e->readonly)
		return -EROFS;
	if (off > e->size || len > e->size - off)
		return -ENOSPC;
	uint64_t end = off + len;
	uint64_t a = (off + MEM_BLOCK - 1) / MEM_BLOCK * MEM_BLOCK, b = end / MEM_BLOCK * MEM_BLOCK;
	if (a < b) {
		/* whole pages go back to the kernel and read as zero */
		memset(e->data + off, 0, a - off);
		madvise(e->data + a, b - a, MADV_DONTNEED);
		memset(e->data + b, 0, end - b);
	} else {
		memset(e->data + off, 0, len);
	}
	return 0;
}

static int mem_flush(void *h)
{
	return 0;
}

static bool block_is_zero(const uint8_t *p, size_t n)
{
	return p[0] == 0 && !memcmp(p, p + 1, n - 1);
}

static int mem_extents(void *h, uint32_t len, uint64_t off, nbd_extent_fn fn, void *ctx)
{
	struct mem_export *e = h;
	uint64_t end = MIN(off + len, e->size);
	while (off < end) {
		uint64_t bstart = off / MEM_BLOCK * MEM_BLOCK;
		uint64_t bend = MIN(bstart + MEM_BLOCK, e->size);
		uint32_t flags = block_is_zero(e->data + bstart, bend - bstart) ?
			NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
		if (fn(ctx, off, bend - off, flags))
			break;
		off = bend;
	}
	return 0;
}

void nbd_mem_backend(struct nbd_mem *m, struct nbd_backend *be)
{
	*be = (struct nbd_backend){
		.opaque = m,
		.open = mem_open,
		.close = mem_close,
		.list = mem_list,
		.pread = mem_pread,
		.pwrite = mem_pwrite,
		.zero = mem_zero,
		.trim = mem_zero,
		.flush = mem_flush,
		.extents = mem_extents,
	};
}

/*
 * The write log: what an image took since its last flush, in the kernel's
 * page cache, so a hutch-storaged that is killed or crashes loses no
 * acknowledged write while the VMs above it run on.
 *
 * Between flushes an image's writes live in hutch-storaged's memory (dirty
 * chunk buffers, a tree not yet written). Each write, zeroing and resize is
 * also appended here, under the image's write lock, before it is
 * acknowledged: the bytes of partial chunks, the refs of whole chunks
 * (already stored in a pack). No sync: a host crash takes the VMs too, and
 * a client that needs durability sends FLUSH, which writes the image out.
 *
 * A flush switches to a new file (under the write lock, with the tree it
 * writes) and removes the old ones once the image's head is committed. File
 * numbers are the store's, never reused, so the files of an image removed
 * and one created under its name never mix. A
 * store opened after an unclean stop replays what is left, in order, onto
 * the committed heads, then flushes. Replaying a write the head already has
 * changes nothing, so a crash between commit and removal is harmless. A
 * record cut by the crash ends its file (that write was not acknowledged).
 *
 * Files: wlog/NAME.GEN in the store, GEN in hex, one per image and flush.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xxhash.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define WLOG_MAGIC 0x474c5748u	/* "HWLG" */
#define WLOG_DIR "wlog"

enum wlog_kind { WLOG_WRITE = 1, WLOG_ZERO = 2, WLOG_RESIZE = 3 };

/* A record: this header, nrefs refs (h0, h1, slot as 3 x u64), then the data. */
struct wlog_hdr {
	uint32_t magic;
	uint32_t kind;
	uint64_t off;
	uint64_t len;		/* bytes covered; the new size for WLOG_RESIZE */
	uint64_t pre_first;	/* first whole chunk given as a ref */
	uint32_t nrefs;
	uint32_t data;		/* bytes of data after the refs */
	uint64_t body_hash;	/* XXH3-64 of the refs and the data */
	uint64_t hdr_hash;	/* XXH3-64 of the header up to here */
};
_Static_assert(sizeof(struct wlog_hdr) == 56, "wlog header layout");

static int wlog_path(const struct store *s, const char *name, uint64_t gen, char *buf, size_t sz)
{
	int n = snprintf(buf, sz, "%s/" WLOG_DIR "/%s.%016llx", s->dir, name, (unsigned long long)gen);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

int wlog_init(struct store *s)
{
	if (mkdirat(s->dir_fd, WLOG_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

void wlog_image_init(struct image *img)
{
	img->wlog_fd = img->wlog_prev_fd = -1;
	img->wlog_gen = atomic_fetch_add(&img->s->wlog_next, 1);
	img->wlog_end = 0;
	pthread_mutex_init(&img->wlog_lock, NULL);
}

void wlog_image_free(struct image *img)
{
	if (img->wlog_fd >= 0)
		close(img->wlog_fd);
	wlog_close_prev(img);
	free(img->wlog_files);
	pthread_mutex_destroy(&img->wlog_lock);
}

/* Appends one record. Image write-locked. */
static int wlog_append(struct image *img, enum wlog_kind kind, const uint8_t *buf, uint64_t off, uint64_t len,
		       const struct ref *pre, uint64_t pre_first, uint64_t npre, uint64_t *data_at)
{
	const uint64_t cs = img->s->chunk_size;
	struct wlog_hdr h = { .magic = WLOG_MAGIC, .kind = kind, .off = off, .len = len,
			      .pre_first = pre_first, .nrefs = (uint32_t)npre };
	_cleanup_free_ uint64_t *refs = NULL;
	struct iovec iov[4];
	int n = 1;

	if (img->ro || img->wlog_off)
		return 0;
	if (img->wlog_fd < 0) {
		char path[4400];

		if (wlog_path(img->s, img->name, img->wlog_gen, path, sizeof path) < 0)
			return -ENAMETOOLONG;
		pthread_mutex_lock(&img->wlog_lock);
		uint64_t *f = realloc(img->wlog_files, (img->wlog_nfiles + 1) * sizeof *f);
		if (f) {
			img->wlog_files = f;
			f[img->wlog_nfiles++] = img->wlog_gen;
		}
		pthread_mutex_unlock(&img->wlog_lock);
		if (!f)
			return -ENOMEM;
		/* Read too: dirty buffers leave the blocks of whole-block writes here. */
		img->wlog_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (img->wlog_fd < 0)
			return -errno;
		img->wlog_end = 0;
	}
	if (npre) {
		refs = malloc(npre * 3 * sizeof *refs);
		if (!refs)
			return -ENOMEM;
		for (uint64_t i = 0; i < npre; i++) {
			refs[3 * i] = pre[i].h0;
			refs[3 * i + 1] = pre[i].h1;
			refs[3 * i + 2] = pre[i].slot;
		}
		iov[n++] = (struct iovec){ refs, npre * 3 * sizeof *refs };
	}
	if (kind == WLOG_WRITE && npre) {
		/* The bytes before and after the whole chunks. */
		uint64_t head = pre_first * cs - off, tail_at = (pre_first + npre) * cs;
		iov[n++] = (struct iovec){ (void *)buf, head };
		iov[n++] = (struct iovec){ (void *)(buf + (tail_at - off)), off + len - tail_at };
		h.data = (uint32_t)(head + off + len - tail_at);
	} else if (kind == WLOG_WRITE) {
		iov[n++] = (struct iovec){ (void *)buf, len };
		h.data = (uint32_t)len;
	}
	for (int i = 1; i < n; i++)
		h.body_hash = XXH3_64bits_withSeed(iov[i].iov_base, iov[i].iov_len, h.body_hash);
	h.hdr_hash = XXH3_64bits(&h, offsetof(struct wlog_hdr, hdr_hash));
	iov[0] = (struct iovec){ &h, sizeof h };

	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	ssize_t w = pwritev(img->wlog_fd, iov, n, (off_t)img->wlog_end);
	if (w < 0 || (size_t)w != total) {
		int err = w < 0 ? -errno : -ENOSPC;

		/* Whole records only: the next append starts where this one did. */
		if (ftruncate(img->wlog_fd, (off_t)img->wlog_end) < 0)
			log_warn("image %s: cannot cut back a failed write log append: %s", img->name, strerror(errno));
		return err;
	}
	if (data_at)
		*data_at = img->wlog_end + total - h.data;
	img->wlog_end += total;
	return 0;
}

int wlog_write(struct image *img, const uint8_t *buf, uint64_t off, uint64_t len, const struct ref *pre,
	       uint64_t pre_first, uint64_t *data_at)
{
	uint64_t npre = 0;

	*data_at = 0;
	if (pre) {
		const uint64_t cs = img->s->chunk_size;
		npre = (off + len) / cs - pre_first;
	}
	return wlog_append(img, buf ? WLOG_WRITE : WLOG_ZERO, buf, off, len, pre, pre_first, npre,
			   buf ? data_at : NULL);
}

int wlog_resize(struct image *img, uint64_t size)
{
	return wlog_append(img, WLOG_RESIZE, NULL, 0, size, NULL, 0, 0, NULL);
}

uint64_t wlog_rotate(struct image *img)
{
	uint64_t gen = img->wlog_gen;

	wlog_close_prev(img);
	img->wlog_prev_fd = img->wlog_fd;
	img->wlog_fd = -1;
	img->wlog_gen = atomic_fetch_add(&img->s->wlog_next, 1);
	img->wlog_rotations++;
	return gen;
}

unsigned wlog_tag(const struct image *img)
{
	return img->wlog_rotations & 1;
}

int wlog_fd_of(const struct image *img, unsigned tag)
{
	return tag == wlog_tag(img) ? img->wlog_fd : img->wlog_prev_fd;
}

void wlog_close_prev(struct image *img)
{
	if (img->wlog_prev_fd >= 0)
		close(img->wlog_prev_fd);
	img->wlog_prev_fd = -1;
}

void wlog_drop(struct image *img, uint64_t upto)
{
	char path[4400];
	size_t kept = 0;

	pthread_mutex_lock(&img->wlog_lock);
	for (size_t i = 0; i < img->wlog_nfiles; i++) {
		if (img->wlog_files[i] > upto) {
			img->wlog_files[kept++] = img->wlog_files[i];
			continue;
		}
		if (wlog_path(img->s, img->name, img->wlog_files[i], path, sizeof path) == 0 && unlink(path) < 0 &&
		    errno != ENOENT)
			log_warn("cannot remove write log %s: %s", path, strerror(errno));
	}
	img->wlog_nfiles = kept;
	pthread_mutex_unlock(&img->wlog_lock);
}

/* The image's write lock is taken so no append is half done, its flush
 * lock so no write-out is reading the files. */
void wlog_forget(struct image *img)
{
	uint64_t gen;

	pthread_mutex_lock(&img->flush_lock);
	pthread_rwlock_wrlock(&img->lock);
	img->wlog_off = true;
	gen = wlog_rotate(img);
	pthread_rwlock_unlock(&img->lock);
	pthread_mutex_unlock(&img->flush_lock);
	wlog_drop(img, gen);
}

/* ---- replay at store open ---- */

struct wlog_file {
	char name[2 * 128 + 2];
	uint64_t gen;
};

static int file_cmp(const void *a, const void *b)
{
	const struct wlog_file *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* The hash wlog_append made, over the same parts. */
static uint64_t body_hash(const struct wlog_hdr *h, const uint8_t *body, uint64_t cs)
{
	uint64_t refs = (uint64_t)h->nrefs * 24, v = 0;

	if (h->nrefs)
		v = XXH3_64bits_withSeed(body, refs, v);
	if (h->kind == WLOG_WRITE && h->nrefs) {
		uint64_t head = h->pre_first * cs - h->off;

		if (head > h->data)
			return ~h->body_hash;	/* no match */
		v = XXH3_64bits_withSeed(body + refs, head, v);
		v = XXH3_64bits_withSeed(body + refs + head, h->data - head, v);
	} else if (h->kind == WLOG_WRITE) {
		v = XXH3_64bits_withSeed(body + refs, h->data, v);
	}
	return v;
}

/* Applies one file's records; *count gets how many. Stops at a cut record. */
static int replay_file(struct image *img, int fd, const char *path, struct refmap *unresolved, unsigned *count,
		       uint64_t *bytes)
{
	const uint64_t cs = img->s->chunk_size;
	struct stat st;
	uint64_t at = 0;
	int r = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	while (at + sizeof(struct wlog_hdr) <= (uint64_t)st.st_size) {
		struct wlog_hdr h;
		_cleanup_free_ uint8_t *body = NULL, *buf = NULL;
		_cleanup_free_ struct ref *pre = NULL;

		if (pread_all(fd, &h, sizeof h, at) < 0 || h.magic != WLOG_MAGIC ||
		    h.hdr_hash != XXH3_64bits(&h, offsetof(struct wlog_hdr, hdr_hash)) ||
		    h.kind < WLOG_WRITE || h.kind > WLOG_RESIZE || h.data > WLOG_MAX_DATA ||
		    h.nrefs > WLOG_MAX_DATA / cs + 1)
			break;
		uint64_t blen = (uint64_t)h.nrefs * 24 + h.data;
		if (at + sizeof h + blen > (uint64_t)st.st_size)
			break;
		body = malloc(blen ? blen : 1);
		if (!body)
			return -ENOMEM;
		if (pread_all(fd, body, blen, at + sizeof h) < 0 || body_hash(&h, body, cs) != h.body_hash)
			break;
		if (h.kind == WLOG_RESIZE) {
			r = image_replay_resize(img, h.len);
		} else {
			/* The whole chunks come as refs, the rest as bytes. */
			uint64_t npre = h.nrefs, head = npre ? h.pre_first * cs - h.off : h.len;
			if ((h.kind == WLOG_WRITE && h.len > WLOG_MAX_DATA) || (h.kind == WLOG_WRITE && npre &&
			    (h.pre_first != DIV_ROUND_UP(h.off, cs) || h.pre_first + npre != (h.off + h.len) / cs ||
			     h.data != h.len - npre * cs)) || (h.kind == WLOG_WRITE && !npre && h.data != h.len))
				break;
			if (npre && !(pre = calloc(npre, sizeof *pre)))
				return -ENOMEM;
			for (uint64_t i = 0; i < npre; i++) {
				memcpy(&pre[i].h0, body + 24 * i, 8);
				memcpy(&pre[i].h1, body + 24 * i + 8, 8);
				uint64_t slot;
				memcpy(&slot, body + 24 * i + 16, 8);
				pre[i].slot = (uint32_t)slot;
			}
			if (h.kind == WLOG_WRITE) {
				const uint8_t *data = body + 24 * npre;

				buf = malloc(h.len ? h.len : 1);
				if (!buf)
					return -ENOMEM;
				memcpy(buf, data, head);
				if (npre)
					memcpy(buf + (h.pre_first + npre) * cs - h.off, data + head, h.data - head);
			}
			r = image_replay_write(img, buf, h.off, h.len, pre, h.pre_first, unresolved);
		}
		if (r < 0) {
			log_error("write log %s: record at %llu cannot be applied: %s", path, (unsigned long long)at,
				  strerror(-r));
			return r;
		}
		at += sizeof h + blen;
		(*count)++;
		*bytes += h.kind == WLOG_RESIZE ? 0 : h.len;
	}
	if (at < (uint64_t)st.st_size)
		log_warn("write log %s: %llu bytes after its last whole record ignored (a write cut by the stop, "
			 "never acknowledged)", path, (unsigned long long)((uint64_t)st.st_size - at));
	return 0;
}

/* Kept for a look by hand, never overwritten by the image's next log. */
static void keep_aside(struct store *s, const struct wlog_file *f, size_t n, int err)
{
	char path[4400], kept[4500];

	for (size_t i = 0; i < n; i++) {
		wlog_path(s, f[i].name, f[i].gen, path, sizeof path);
		snprintf(kept, sizeof kept, "%s.unreplayed", path);
		rename(path, kept);
	}
	log_error("image %s: its write log could not be replayed (%s); the image is as it was last flushed, "
		  "the log is kept as %s/" WLOG_DIR "/%s.*.unreplayed; run `hutch store verify`",
		  f->name, strerror(-err), s->dir, f->name);
}

static void remove_files(struct store *s, const struct wlog_file *f, size_t n)
{
	char path[4400];

	for (size_t i = 0; i < n; i++)
		if (wlog_path(s, f[i].name, f[i].gen, path, sizeof path) == 0)
			unlink(path);
}

/* Replays the files of one image, flushes it, removes them. */
static void replay_image(struct store *s, const struct wlog_file *f, size_t n)
{
	char path[4400];
	struct image *img;
	struct refmap unresolved;
	unsigned count = 0;
	uint64_t bytes = 0;
	int r = image_get(s, f[0].name, true, &img);

	if (r == -ENOENT || r == -EROFS) {
		/* Removed, renamed or made a snapshot before the stop: nothing to apply to. */
		remove_files(s, f, n);
		return;
	}
	if (r == 0 && (r = refmap_init(&unresolved)) < 0)
		image_close(img);
	if (r < 0) {
		keep_aside(s, f, n, r);
		return;
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		wlog_path(s, f[i].name, f[i].gen, path, sizeof path);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

		r = fd < 0 ? -errno : replay_file(img, fd, path, &unresolved, &count, &bytes);
	}
	/* A logged chunk missing from the store that no later write replaced:
	 * damage, not recycling. */
	uint64_t missing = 0, first = 0;
	for (uint64_t i = 0; r == 0 && i < unresolved.cap; i++)
		if (unresolved.tab[i].used && unresolved.tab[i].v && !missing++)
			first = unresolved.tab[i].r.h0;
	refmap_free(&unresolved);
	if (missing) {
		log_error("image %s: its write log names chunks missing from the store (%llu, chunk %llu among them)",
			  img->name, (unsigned long long)missing, (unsigned long long)first);
		r = -ENOENT;
	}
	if (r == 0)
		r = image_flush(img);
	if (r == 0) {
		remove_files(s, f, n);
		if (count)
			log_warn("image %s: %u writes (%llu bytes) after its last flush replayed from its write log "
				 "(hutch-storaged stopped uncleanly)", img->name, count, (unsigned long long)bytes);
	} else {
		keep_aside(s, f, n, r);
		/* What was applied before the failure must not reach the head
		 * through the flush of the last close: the image is dropped. */
		atomic_store(&img->gone, true);
	}
	image_close(img);
}

int wlog_replay(struct store *s)
{
	char path[4200];
	_cleanup_free_ struct wlog_file *f = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof path, "%s/" WLOG_DIR, s->dir);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char *dot = strrchr(de->d_name, '.');
		unsigned long long gen;
		char tail;

		if (de->d_name[0] == '.' || !dot || sscanf(dot + 1, "%16llx%c", &gen, &tail) != 1 ||
		    (size_t)(dot - de->d_name) >= sizeof f->name)
			continue;
		if (n == cap) {
			struct wlog_file *g = realloc(f, (cap = cap ? 2 * cap : 16) * sizeof *f);
			if (!g) {
				closedir(d);
				return -ENOMEM;
			}
			f = g;
		}
		snprintf(f[n].name, sizeof f[n].name, "%.*s", (int)(dot - de->d_name), de->d_name);
		f[n++].gen = gen;
		if (gen >= atomic_load(&s->wlog_next))
			atomic_store(&s->wlog_next, gen + 1);
	}
	closedir(d);
	if (n)
		qsort(f, n, sizeof *f, file_cmp);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && strcmp(f[j].name, f[i].name) == 0; j++)
			;
		if (name_is_valid(f[i].name))
			replay_image(s, f + i, j - i);
	}
	return 0;
}

/*
 * The store: opening and closing it, and the image namespace (create,
 * remove, rename, resize, snapshot, fork, clone_range, list, stats).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "store-internal.h"
#include "util.h"

#define INDEX_SAVE_EVERY (1ull << 30)	/* bytes appended to packs */

void store_options_default(struct store_options *o)
{
	o->dirty_limit = 1ull << 30;
	o->pack_size = 1ull << 30;
}

uint32_t store_chunk_size(const struct store *s) { return s->chunk_size; }
const char *store_dir(const struct store *s) { return s->dir; }

void store_retire(struct store *s, void *p)
{
	void **n = realloc(s->retired, sizeof *n * (s->nretired + 1));

	if (!n)
		return;	/* leak rather than free what a reader may hold */
	s->retired = n;
	s->retired[s->nretired++] = p;
}

int file_replace(int dir_fd, const char *name, const void *buf, size_t len, int *fd_out)
{
	char tmp[300];
	int fd, r;

	snprintf(tmp, sizeof tmp, "%s.tmp", name);
	fd = openat(dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = write_all(fd, buf, len);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
		r = -errno;
	if (r == 0 && fsync(dir_fd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dir_fd, tmp, 0);
		close(fd);
		return r;
	}
	if (fd_out)
		*fd_out = fd;
	else
		close(fd);
	return 0;
}

int store_init(const char *dir, uint32_t chunk_size)
{
	uint8_t secret[STORE_SECRET_SIZE];
	char path[4200], meta[128];
	_cleanup_close_ int dfd = -1;
	int r;

	if (chunk_size < STORE_MIN_CHUNK_SIZE || chunk_size > STORE_MAX_CHUNK_SIZE ||
	    (chunk_size & (chunk_size - 1)))
		return -EINVAL;
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	snprintf(path, sizeof path, "%s/packs", dir);
	r = mkdir_p(path, 0700);
	if (r < 0)
		return r;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (faccessat(dfd, "meta", F_OK, 0) == 0)
		return -EEXIST;
	if (getrandom(secret, sizeof secret, 0) != (ssize_t)sizeof secret)
		return -EIO;
	r = file_replace(dfd, "secret", secret, sizeof secret, NULL);
	if (r < 0)
		return r;
	/* meta last: a store without it was never finished. */
	int n = snprintf(meta, sizeof meta, "hutch-store\nversion %d\nchunk_size %u\n",
			 STORE_FORMAT_VERSION, chunk_size);
	return file_replace(dfd, "meta", meta, (size_t)n, NULL);
}

static int read_meta(struct store *s)
{
	char buf[256] = { 0 };
	unsigned version = 0, cs = 0;
	int fd, r;

	fd = openat(s->dir_fd, "meta", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	r = (int)read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r < 0)
		return -errno;
	if (sscanf(buf, "hutch-store\nversion %u\nchunk_size %u", &version, &cs) != 2 ||
	    version != STORE_FORMAT_VERSION || cs < STORE_MIN_CHUNK_SIZE ||
	    cs > STORE_MAX_CHUNK_SIZE || (cs & (cs - 1)))
		return -EBADMSG;
	s->chunk_size = cs;

	fd = openat(s->dir_fd, "secret", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = pread_all(fd, s->secret, sizeof s->secret, 0);
	close(fd);
	return r < 0 ? -EBADMSG : 0;
}

struct scan_ctx {
	struct store *s;
	uint32_t pack;
	uint64_t added;
};

static int scan_add(void *opaque, uint64_t off, const struct rec_hdr *h, bool payload_ok)
{
	struct scan_ctx *c = opaque;
	struct idx_ent e = { .h0 = h->h0, .h1 = h->h1, .slot = h->slot, .pack = c->pack,
			     .off = off, .len = h->len, .type = h->type };
	struct ref r = { h->h0, h->h1, h->slot };
	int ret = 0;

	if (!payload_ok) {
		char id[64];
		ref_format(&r, id, sizeof id);
		log_warn("pack %08x offset %llu: chunk %s fails its checksum; reads of it will fail "
			 "(run `hutch store verify`)", c->pack, (unsigned long long)off, id);
	}
	pthread_rwlock_wrlock(&c->s->index.lock);
	/* The first copy found wins: a later one is a gc copy of the same bytes. */
	if (!index_find_locked(&c->s->index, &r))
		ret = index_put_locked(&c->s->index, &e);
	pthread_rwlock_unlock(&c->s->index.lock);
	c->added++;
	return ret;
}

static int load_packs(struct store *s)
{
	char path[4200];
	_cleanup_free_ uint64_t *covered = NULL;
	DIR *d;
	struct dirent *de;
	uint32_t max_id = 0;
	int r;

	snprintf(path, sizeof path, "%s/packs", s->dir);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		unsigned id;
		char tail[8];
		if (sscanf(de->d_name, "%8x.pac%1s", &id, tail) == 2 && id > max_id)
			max_id = id;
	}
	s->npacks = max_id + 1;
	s->packs = calloc(s->npacks, sizeof *s->packs);
	if (!s->packs) {
		closedir(d);
		return -ENOMEM;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		unsigned id;
		char tail[8];
		if (sscanf(de->d_name, "%8x.pac%1s", &id, tail) != 2 || strcmp(tail, "k"))
			continue;
		r = pack_open(s, id, false, &s->packs[id]);
		if (r < 0) {
			closedir(d);
			return r;
		}
	}
	closedir(d);

	covered = calloc(s->npacks, sizeof *covered);
	if (!covered)
		return -ENOMEM;
	r = index_load(s, covered);
	if (r == -EBADMSG)
		log_warn("the index of %s is damaged; rebuilding it from the packs", s->dir);
	else if (r < 0 && r != -ENOENT)
		return r;
	if (r < 0)
		memset(covered, 0, s->npacks * sizeof *covered);

	for (uint32_t id = 1; id < s->npacks; id++) {
		struct pack *p = s->packs[id];
		struct scan_ctx c = { s, id, 0 };
		uint64_t good_end;

		if (!p || covered[id] >= p->size)
			continue;
		r = pack_scan(p->fd, covered[id], p->size, true, scan_add, &c, &good_end);
		if (r < 0)
			return r;
		if (good_end < p->size) {
			log_warn("pack %08x: dropped %llu bytes of a torn or corrupt tail at offset %llu "
				 "(never acknowledged: a flush makes data durable before it is used)",
				 id, (unsigned long long)(p->size - good_end), (unsigned long long)good_end);
			if (ftruncate(p->fd, (off_t)good_end) < 0)
				return -errno;
			p->size = good_end;
		}
		p->synced = p->size;
		if (c.added)
			log_debug("pack %08x: %llu records indexed by scanning", id,
				  (unsigned long long)c.added);
	}
	for (uint32_t id = s->npacks; id-- > 1;) {
		if (s->packs[id]) {
			if (s->packs[id]->size < s->opts.pack_size)
				s->active = s->packs[id];
			break;
		}
	}
	return 0;
}

int store_open(const char *dir, const struct store_options *opts, struct store **out)
{
	struct store *s;
	char path[4200];
	int r;

	s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->dir_fd = s->lock_fd = s->heads_fd = -1;
	snprintf(s->dir, sizeof s->dir, "%s", dir);
	if (opts)
		s->opts = *opts;
	else
		store_options_default(&s->opts);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->put_lock, NULL);
	pthread_mutex_init(&s->gc_lock, NULL);
	pthread_mutex_init(&s->flusher_lock, NULL);
	pthread_cond_init(&s->flusher_cond, NULL);
	s->next_gen = 1;

	s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		r = errno == ENOENT ? -ENOENT : -errno;
		goto fail;
	}
	snprintf(path, sizeof path, "%s/lock", dir);
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0) {
		r = -errno;
		goto fail;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	r = read_meta(s);
	if (r < 0)
		goto fail;
	r = index_init(&s->index, 1 << 16);
	if (r < 0)
		goto fail;
	uring_pool_init(s);
	hdr_cache_init(s);
	r = load_packs(s);
	if (r < 0)
		goto fail;
	r = heads_replay(s);
	if (r < 0)
		goto fail;
	r = wlog_init(s);
	if (r == 0)
		r = wlog_replay(s);
	if (r == 0)
		r = flusher_start(s);
	if (r < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_close(s);
	return r;
}

static void image_free(struct image *img)
{
	wlog_image_free(img);
	tree_free(img);
	pthread_rwlock_destroy(&img->lock);
	pthread_mutex_destroy(&img->load_lock);
	pthread_mutex_destroy(&img->flush_lock);
	free(img);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	flusher_stop(s);
	if (s->index.tab) {
		store_flush_all(s);
		if (packs_sync(s) == 0) {
			pthread_mutex_lock(&s->put_lock);
			int r = index_save(s);
			pthread_mutex_unlock(&s->put_lock);
			if (r < 0)
				log_warn("cannot save the index (%s); the next start rescans the packs",
					 strerror(-r));
		}
	}
	while (s->open_images) {
		struct image *img = s->open_images;
		s->open_images = img->next;
		image_free(img);
	}
	for (uint32_t i = 0; i < s->npacks; i++)
		if (s->packs[i] && !s->packs[i]->removed)	/* removed ones are zombies */
			pack_free(s->packs[i]);
	free(s->packs);
	for (size_t i = 0; i < s->nzombies; i++)
		pack_free(s->zombies[i]);
	free(s->zombies);
	for (size_t i = 0; i < s->nretired; i++)
		free(s->retired[i]);
	free(s->retired);
	if (s->index.tab)
		index_destroy(&s->index);
	uring_pool_free(s);
	hdr_cache_free(s);
	recycled_free(s);
	free(s->heads);
	if (s->heads_fd >= 0)
		close(s->heads_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->put_lock);
	pthread_mutex_destroy(&s->gc_lock);
	pthread_mutex_destroy(&s->flusher_lock);
	pthread_cond_destroy(&s->flusher_cond);
	free(s);
}

/* ---- open images ---- */

static struct image *find_open(struct store *s, const char *name)
{
	for (struct image *i = s->open_images; i; i = i->next)
		if (strcmp(i->name, name) == 0 && !atomic_load(&i->gone))
			return i;
	return NULL;
}

int image_get(struct store *s, const char *name, bool writable, struct image **out)
{
	struct image *img;
	struct head *h;
	int r;

	pthread_mutex_lock(&s->lock);
	img = find_open(s, name);
	if (img) {
		img->opens++;
		goto found;
	}
	h = head_find(s, name);
	if (!h) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	img = calloc(1, sizeof *img);
	if (!img) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	img->s = s;
	img->opens = 1;
	snprintf(img->name, sizeof img->name, "%s", name);
	pthread_rwlock_init(&img->lock, NULL);
	pthread_mutex_init(&img->load_lock, NULL);
	pthread_mutex_init(&img->flush_lock, NULL);
	wlog_image_init(img);
	img->ro = h->ro;
	img->flushed_root = h->root;
	img->flushed_size = h->size;
	img->epoch = epoch_next(s);
	r = tree_load(img, &h->root, h->size);
	if (r < 0) {
		pthread_mutex_unlock(&s->lock);
		image_free(img);
		return r;
	}
	img->next = s->open_images;
	s->open_images = img;
found:
	pthread_mutex_unlock(&s->lock);
	if (writable && img->ro) {
		image_close(img);
		return -EROFS;
	}
	*out = img;
	return 0;
}

int store_image_open(struct store *s, const char *ref, struct image **out)
{
	if (!ref_is_valid(ref))
		return -EINVAL;
	return image_get(s, ref, false, out);
}

void image_close(struct image *img)
{
	struct store *s;

	if (!img)
		return;
	s = img->s;
	pthread_mutex_lock(&s->lock);
	if (--img->opens > 0) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	img->closing++;
	pthread_mutex_unlock(&s->lock);

	/* Last close: make its data reach the head. It stays findable meanwhile,
	 * so an open racing with this shares it instead of reading a stale head. */
	int r = image_flush(img);
	if (r == -ESHUTDOWN)
		r = 0;	/* removed or renamed: nothing to keep */
	if (r < 0)
		log_error("image %s: flushing on close failed: %s", img->name, strerror(-r));

	pthread_mutex_lock(&s->lock);
	/* Reopened meanwhile, another last close still flushing (it frees it),
	 * or unflushed data we must not drop: keep it. */
	if (--img->closing > 0 || img->opens > 0 || (r < 0 && !atomic_load(&img->gone))) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	for (struct image **p = &s->open_images; *p; p = &(*p)->next) {
		if (*p == img) {
			*p = img->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	image_free(img);
}

int store_flush_all(struct store *s)
{
	int ret = 0;

	for (;;) {
		struct image *list[64];
		size_t n = 0;

		/* Take references so images can be flushed without store.lock. */
		pthread_mutex_lock(&s->lock);
		for (struct image *i = s->open_images; i && n < ARRAY_SIZE(list); i = i->next) {
			i->opens++;
			list[n++] = i;
		}
		pthread_mutex_unlock(&s->lock);
		for (size_t i = 0; i < n; i++) {
			int r = image_flush(list[i]);
			if (r < 0 && r != -ESHUTDOWN && !ret)
				ret = r;
		}
		for (size_t i = 0; i < n; i++)
			image_close(list[i]);	/* frees it if it was the last */
		if (n < ARRAY_SIZE(list))
			break;
		/* More than 64 open images: the flushed ones are clean now, go round again. */
		bool more = false;
		pthread_mutex_lock(&s->lock);
		for (struct image *i = s->open_images; i; i = i->next)
			if (i->tree_dirty || i->dirty_n)
				more = true;
		pthread_mutex_unlock(&s->lock);
		if (!more)
			break;
	}
	/* Keep the saved index close to the packs, so a restart after a crash
	 * scans little. Everything flushed above is synced. */
	if (ret == 0 && s->appended_since_save > INDEX_SAVE_EVERY) {
		pthread_mutex_lock(&s->put_lock);
		int r = index_save(s);
		pthread_mutex_unlock(&s->put_lock);
		if (r < 0)
			log_warn("cannot save the index: %s", strerror(-r));
	}
	return ret;
}

/* Flushes NAME if it is open, so its head is current. */
static int flush_if_open(struct store *s, const char *name)
{
	struct image *img;
	int r;

	pthread_mutex_lock(&s->lock);
	img = find_open(s, name);
	if (img)
		img->opens++;
	pthread_mutex_unlock(&s->lock);
	if (!img)
		return 0;
	r = image_flush(img);
	image_close(img);
	return r;
}

/* ---- namespace ---- */

static bool is_snapshot_of(const char *head, const char *name)
{
	size_t n = strlen(name);

	return strncmp(head, name, n) == 0 && head[n] == '@';
}

/* A head born now (create, snapshot, fork). store.lock held. */
static int commit_new_head(struct store *s, struct head_change *c)
{
	c->h.gen = s->next_gen;
	c->h.created = (uint64_t)time(NULL);
	return heads_commit(s, c, 1);
}

int store_image_create(struct store *s, const char *name, uint64_t size)
{
	struct head_change c = { .op = HEAD_PUT };
	int r;

	if (!name_is_valid(name))
		return -EINVAL;
	if (size > STORE_MAX_IMAGE_SIZE)
		return -EFBIG;
	pthread_mutex_lock(&s->lock);
	if (head_find(s, name)) {
		r = -EEXIST;
		goto out;
	}
	snprintf(c.h.name, sizeof c.h.name, "%s", name);
	c.h.size = size;
	r = commit_new_head(s, &c);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Open images under any of these names stop serving. store.lock held.
 * *retired gets them, each opened once more, for retired_forget. */
static void retire_open(struct store *s, const char *name, bool with_snaps, struct image ***retired, size_t *n)
{
	for (struct image *i = s->open_images; i; i = i->next) {
		if (strcmp(i->name, name) != 0 && !(with_snaps && is_snapshot_of(i->name, name)))
			continue;
		atomic_store(&i->gone, true);
		struct image **r = realloc(*retired, (*n + 1) * sizeof *r);
		if (r) {
			*retired = r;
			r[(*n)++] = i;
			i->opens++;
		}
	}
}

/* What retired images logged is void; their log files go (this takes each
 * image's lock, so it runs after store.lock is released). */
static void retired_forget(struct image **retired, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		wlog_forget(retired[i]);
		image_close(retired[i]);
	}
	free(retired);
}

int store_image_remove(struct store *s, const char *ref)
{
	_cleanup_free_ struct head_change *c = NULL;
	bool snap = strchr(ref, '@') != NULL;
	struct image **retired = NULL;
	size_t nretired = 0;
	unsigned n = 0;
	int r;

	if (!ref_is_valid(ref))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	if (!head_find(s, ref)) {
		r = -ENOENT;
		goto out;
	}
	c = calloc(s->nheads, sizeof *c);
	if (!c) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < s->nheads; i++) {
		const char *hn = s->heads[i].name;
		if (strcmp(hn, ref) == 0 || (!snap && is_snapshot_of(hn, ref))) {
			c[n].op = HEAD_DEL;
			snprintf(c[n].h.name, sizeof c[n].h.name, "%s", hn);
			n++;
		}
	}
	r = heads_commit(s, c, n);
	if (r == 0)
		retire_open(s, ref, !snap, &retired, &nretired);
out:
	pthread_mutex_unlock(&s->lock);
	retired_forget(retired, nretired);
	return r;
}

int store_image_rename(struct store *s, const char *old_name, const char *new_name)
{
	_cleanup_free_ struct head_change *c = NULL;
	struct image **retired = NULL;
	size_t nretired = 0;
	unsigned n = 0;
	int r;

	if (!name_is_valid(old_name) || !name_is_valid(new_name))
		return -EINVAL;
	if (strcmp(old_name, new_name) == 0)
		return 0;
	r = flush_if_open(s, old_name);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	if (!head_find(s, old_name)) {
		r = -ENOENT;
		goto out;
	}
	if (head_find(s, new_name)) {
		r = -EEXIST;
		goto out;
	}
	c = calloc(2 * s->nheads, sizeof *c);
	if (!c) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < s->nheads; i++) {
		const struct head *h = &s->heads[i];
		if (strcmp(h->name, old_name) != 0 && !is_snapshot_of(h->name, old_name))
			continue;
		c[n].op = HEAD_DEL;
		snprintf(c[n].h.name, sizeof c[n].h.name, "%s", h->name);
		n++;
		c[n].op = HEAD_PUT;
		c[n].h = *h;
		snprintf(c[n].h.name, sizeof c[n].h.name, "%s%s", new_name, h->name + strlen(old_name));
		if (is_snapshot_of(h->name, old_name))
			snprintf(c[n].h.parent, sizeof c[n].h.parent, "%s", new_name);
		n++;
	}
	retire_open(s, old_name, true, &retired, &nretired);
	r = heads_commit(s, c, n);
out:
	pthread_mutex_unlock(&s->lock);
	retired_forget(retired, nretired);
	return r;
}

int store_image_resize(struct store *s, const char *name, uint64_t size)
{
	struct image *img;
	int r;

	if (!name_is_valid(name))
		return -EINVAL;
	if (size > STORE_MAX_IMAGE_SIZE)
		return -EFBIG;
	r = image_get(s, name, true, &img);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&img->lock);
	if (size < img->size && size % s->chunk_size) {
		/* Bytes past the new end must read as zeroes if it grows again. */
		uint64_t end = MIN(img->size, (size / s->chunk_size + 1) * (uint64_t)s->chunk_size);
		pthread_rwlock_unlock(&img->lock);
		r = image_zero(img, size, end - size, 0);
		pthread_rwlock_wrlock(&img->lock);
	}
	if (r == 0)
		r = tree_resize(img, size);
	if (r == 0)
		r = wlog_resize(img, size);
	pthread_rwlock_unlock(&img->lock);
	if (r == 0)
		r = image_flush(img);
	image_close(img);
	return r;
}

static int copy_head(struct store *s, const char *src, const char *dst, bool ro)
{
	struct head_change c = { .op = HEAD_PUT };
	struct head *h;
	char base[HUTCH_NAME_MAX + 2];
	const char *snap;
	int r;

	r = flush_if_open(s, src);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	h = head_find(s, src);
	if (!h) {
		r = -ENOENT;
		goto out;
	}
	if (head_find(s, dst)) {
		r = -EEXIST;
		goto out;
	}
	c.h = *h;
	snprintf(c.h.name, sizeof c.h.name, "%s", dst);
	/* A snapshot's parent is its image; a fork's parent is what it came from. */
	if (ro && ref_split(dst, base, sizeof base, &snap))
		snprintf(c.h.parent, sizeof c.h.parent, "%s", base);
	else
		snprintf(c.h.parent, sizeof c.h.parent, "%s", src);
	c.h.ro = ro;
	r = commit_new_head(s, &c);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

int store_image_snapshot(struct store *s, const char *name, const char *snap)
{
	char ref[2 * HUTCH_NAME_MAX + 2];
	struct head *h;
	bool ro;

	if (!name_is_valid(name) || !name_is_valid(snap))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	h = head_find(s, name);
	ro = h && h->ro;
	pthread_mutex_unlock(&s->lock);
	if (!h)
		return -ENOENT;
	if (ro)
		return -EROFS;
	snprintf(ref, sizeof ref, "%s@%s", name, snap);
	return copy_head(s, name, ref, true);
}

int store_image_fork(struct store *s, const char *src, const char *dst)
{
	if (!ref_is_valid(src) || !name_is_valid(dst))
		return -EINVAL;
	return copy_head(s, src, dst, false);
}

/* ---- clone_range ---- */

struct clone_piece {
	uint64_t dst_chunk;
	bool whole_leaf;		/* ref is a level-1 node ref for 256 chunks */
	struct ref ref;
};

int store_image_clone_range(struct store *s, const char *src, uint64_t src_off, const char *dst,
			    uint64_t dst_off, uint64_t len)
{
	const uint32_t cs = s->chunk_size;
	_cleanup_free_ struct clone_piece *pc = NULL;
	struct image *si = NULL, *di = NULL;
	uint64_t n = 0, sc, dc, nchunks;
	int r;

	if (!ref_is_valid(src) || !name_is_valid(dst))
		return -EINVAL;
	if (src_off % cs || dst_off % cs)
		return -EINVAL;
	r = image_get(s, src, false, &si);
	if (r < 0)
		return r;
	r = image_get(s, dst, true, &di);
	if (r < 0)
		goto out;
	r = -EINVAL;
	if (src_off > si->size || len > si->size - src_off || dst_off > di->size ||
	    len > di->size - dst_off)
		goto out;
	if (len % cs && !(src_off + len == si->size && dst_off + len == di->size))
		goto out;
	if (si == di && len) {
		r = -EINVAL;	/* overlapping clones within one image are not needed by anyone */
		goto out;
	}
	nchunks = DIV_ROUND_UP(len, cs);
	pc = malloc((nchunks + 1) * sizeof *pc);
	if (!pc) {
		r = -ENOMEM;
		goto out;
	}

	/* Collect the source refs from its flushed state. */
	pthread_rwlock_wrlock(&si->lock);
	/* Current refs in the leaves and level 1; the destination's flush syncs them. */
	struct ref root;
	r = atomic_load(&si->gone) ? -ESHUTDOWN : si->ro ? 0 : image_prepare_flush(si, &root);
	/* Its chunks are the destination's too from now on: none is recycled. */
	atomic_store(&si->epoch, epoch_next(s));
	sc = src_off / cs;
	dc = dst_off / cs;
	for (uint64_t i = 0; r == 0 && i < nchunks;) {
		uint64_t c = sc + i, d = dc + i;
		if (c % NODE_FANOUT == 0 && d % NODE_FANOUT == 0 && nchunks - i >= NODE_FANOUT) {
			pc[n++] = (struct clone_piece){ d, true, si->lv[1][c / NODE_FANOUT] };
			i += NODE_FANOUT;
			continue;
		}
		struct leaf *l = tree_leaf(si, c / NODE_FANOUT, &r);
		if (!l)
			break;
		pc[n++] = (struct clone_piece){ d, false, l->refs[c % NODE_FANOUT] };
		i++;
	}
	pthread_rwlock_unlock(&si->lock);
	if (r < 0)
		goto out;

	/* Point the destination at them. */
	pthread_rwlock_wrlock(&di->lock);
	r = atomic_load(&di->gone) ? -ESHUTDOWN : 0;
	for (uint64_t i = 0; r == 0 && i < n; i++) {
		uint64_t d = pc[i].dst_chunk, li = d / NODE_FANOUT;
		if (pc[i].whole_leaf) {
			struct leaf *l = di->leaves[li];
			if (l) {
				/* Its dirty chunks are overwritten: drop them unwritten. */
				for (unsigned j = 0; j < NODE_FANOUT; j++) {
					if (l->dirty[j]) {
						free(l->dirty[j]);
						atomic_fetch_sub(&s->dirty_bytes, cs);
					}
				}
				free(l);
				di->leaves[li] = NULL;
			}
			di->lv[1][li] = pc[i].ref;
			di->dirty_lv[1][li / 8] &= (uint8_t)~(1u << (li % 8));
			/* Level 1 is current; have the levels above rebuilt. */
			if (di->g.depth >= 2)
				di->dirty_lv[2][li / NODE_FANOUT / 8] |=
					(uint8_t)(1u << (li / NODE_FANOUT % 8));
			di->tree_dirty = true;
			continue;
		}
		struct leaf *l = tree_leaf(di, li, &r);
		if (!l)
			break;
		unsigned j = d % NODE_FANOUT;
		if (l->dirty[j]) {
			free(l->dirty[j]);
			l->dirty[j] = NULL;
			atomic_fetch_sub(&s->dirty_bytes, cs);
		}
		l->refs[j] = pc[i].ref;
		tree_mark_chunk(di, d);
	}
	pthread_rwlock_unlock(&di->lock);
out:
	image_close(di);
	image_close(si);
	return r;
}

/*
 * Description: the store engine through its public interface: data round
 * trips across reopen, snapshots and forks, clone_range, resize, zeroes and
 * extents, gc, verify of a damaged pack, torn tails, the store lock, and
 * many writers at once. Run with a test name; see main().
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "store-test.h"

#define MiB (1024ull * 1024)

/* Closes the store (saving its index) and removes its directory. */
static void finish(struct store *s)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", store_dir(s));
	store_close(s);
	rm_rf(dir);
}

static struct store *open_store(const char *dir)
{
	struct store *s;
	CHECK_OK(store_open(dir, NULL, &s));
	return s;
}

static struct store *fresh_store(const char *name)
{
	char *dir = test_dir(name);
	CHECK_OK(store_init(dir, STORE_DEFAULT_CHUNK_SIZE));
	return open_store(dir);
}

static void write_pattern(struct image *img, uint64_t seed, uint64_t off, uint32_t len)
{
	uint8_t *b = malloc(len);
	pattern(b, len, seed, off);
	CHECK_OK(image_write(img, b, off, len, 0));
	free(b);
}

static void expect_pattern(struct image *img, uint64_t seed, uint64_t off, uint32_t len)
{
	uint8_t *b = malloc(len), *want = malloc(len);
	pattern(want, len, seed, off);
	CHECK_OK(image_read(img, b, off, len));
	if (memcmp(b, want, len) != 0) {
		fprintf(stderr, "%s: data at %llu+%u differs from pattern %llu\n", image_name(img),
			(unsigned long long)off, len, (unsigned long long)seed);
		exit(1);
	}
	free(b);
	free(want);
}

static void expect_zero(struct image *img, uint64_t off, uint32_t len)
{
	uint8_t *b = malloc(len);
	CHECK_OK(image_read(img, b, off, len));
	for (uint32_t i = 0; i < len; i++)
		CHECK(b[i] == 0);
	free(b);
}

static char *reopen(struct store **s)
{
	static char dir[4096];
	snprintf(dir, sizeof dir, "%s", store_dir(*s));
	store_close(*s);
	*s = open_store(dir);
	return dir;
}

/* Writes at awkward offsets survive a close and reopen. */
static void test_roundtrip(void)
{
	struct store *s = fresh_store("roundtrip");
	struct image *img;

	CHECK_OK(store_image_create(s, "disk", 64 * MiB + 1000));
	CHECK_OK(store_image_open(s, "disk", &img));
	CHECK(image_size(img) == 64 * MiB + 1000);
	write_pattern(img, 1, 0, 4096);			/* partial chunk */
	write_pattern(img, 2, 65536, 65536);		/* whole chunk */
	write_pattern(img, 3, 100000, 300000);		/* straddles chunks */
	write_pattern(img, 4, 64 * MiB, 1000);		/* the partial last chunk */
	write_pattern(img, 5, 10 * MiB + 7, 1);		/* one byte */
	expect_pattern(img, 3, 100000, 300000);
	image_close(img);
	reopen(&s);
	CHECK_OK(store_image_open(s, "disk", &img));
	expect_pattern(img, 1, 0, 4096);
	expect_pattern(img, 2, 65536, 34464);
	expect_pattern(img, 3, 100000, 300000);
	expect_pattern(img, 4, 64 * MiB, 1000);
	expect_pattern(img, 5, 10 * MiB + 7, 1);
	expect_zero(img, 20 * MiB, 1 * MiB);
	uint8_t b[16];
	CHECK_ERR(image_read(img, b, 64 * MiB + 999, 2), -EINVAL);
	CHECK_ERR(image_write(img, b, UINT64_MAX - 4, 8, 0), -EINVAL);
	image_close(img);
	finish(s);
}

static int count_extent(void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
	uint64_t *acc = opaque;	/* [0] data bytes, [1] hole bytes, [2] extents */
	acc[(flags & EXTENT_HOLE) ? 1 : 0] += len;
	acc[2]++;
	return 0;
}

/* Whole 4 KiB blocks written into stored chunks, mixed with unaligned
 * writes, zeroes, reads and extents, under a dirty limit small enough that
 * buffers holding only some blocks are written out all the time: every read
 * matches a copy kept here, before and after a reopen. */
static void test_partial_blocks(void)
{
	const uint64_t size = 4 * MiB;
	char *dir = test_dir("partial");
	struct store_options o;
	struct store *s;
	struct image *img;
	uint8_t *want = malloc(size), *got = malloc(size), buf[3 * 4096];
	uint64_t x = 88172645463325252ull;

	CHECK_OK(store_init(dir, STORE_DEFAULT_CHUNK_SIZE));
	store_options_default(&o);
	o.dirty_limit = 8 * 65536;
	CHECK_OK(store_open(dir, &o, &s));
	CHECK_OK(store_image_create(s, "p", size));
	CHECK_OK(store_image_open(s, "p", &img));
	pattern(want, size, 21, 0);
	CHECK_OK(image_write(img, want, 0, (uint32_t)size, 0));
	CHECK_OK(image_flush(img));
	for (int i = 0; i < 3000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t off = x % size;
		uint32_t len = (uint32_t)(x >> 40) % sizeof buf + 1;
		unsigned kind = (unsigned)(x >> 60) % 4;

		if (kind < 2) {	/* whole blocks: nothing read */
			off &= ~4095ull;
			len = ((len + 4095) & ~4095u);
		}
		len = (uint32_t)MIN((uint64_t)len, size - off);
		pattern(buf, len, (uint64_t)i, off);
		if (kind == 3) {
			memset(buf, 0, len);
			CHECK_OK(image_zero(img, off, len, 0));
		} else {
			CHECK_OK(image_write(img, buf, off, len, 0));
		}
		memcpy(want + off, buf, len);
		if (i % 7 == 0) {
			uint64_t r = (x >> 20) % size, rl = MIN((uint64_t)sizeof buf, size - r);
			CHECK_OK(image_read(img, buf, r, (uint32_t)rl));
			CHECK(memcmp(buf, want + r, rl) == 0);
		}
		if (i % 500 == 0) {
			uint64_t acc[3] = { 0 };
			CHECK_OK(image_extents(img, 0, size, count_extent, acc));
		}
	}
	CHECK_OK(image_read(img, got, 0, (uint32_t)size));
	CHECK(memcmp(got, want, size) == 0);
	image_close(img);
	reopen(&s);
	CHECK_OK(store_image_open(s, "p", &img));
	CHECK_OK(image_read(img, got, 0, (uint32_t)size));
	CHECK(memcmp(got, want, size) == 0);
	image_close(img);
	free(want);
	free(got);
	finish(s);
}

/* Whole zeroed chunks become holes; extents report what was written. */
static void test_zero_extents(void)
{
	struct store *s = fresh_store("zero");
	struct image *img;
	uint64_t acc[3] = { 0 };

	CHECK_OK(store_image_create(s, "z", 16 * MiB));
	CHECK_OK(store_image_open(s, "z", &img));
	write_pattern(img, 9, 0, 4 * MiB);
	CHECK_OK(image_flush(img));
	CHECK_OK(image_extents(img, 0, 16 * MiB, count_extent, acc));
	CHECK(acc[0] == 4 * MiB && acc[1] == 12 * MiB);
	CHECK_OK(image_zero(img, 1 * MiB, 1 * MiB, 0));
	CHECK_OK(image_trim(img, 3 * MiB + 512, 4096, 0));
	expect_zero(img, 1 * MiB, 1 * MiB);
	expect_zero(img, 3 * MiB + 512, 4096);
	expect_pattern(img, 9, 3 * MiB, 512);
	expect_pattern(img, 9, 3 * MiB + 4608, 4096);
	memset(acc, 0, sizeof acc);
	CHECK_OK(image_flush(img));
	CHECK_OK(image_extents(img, 0, 16 * MiB, count_extent, acc));
	CHECK(acc[0] == 3 * MiB && acc[1] == 13 * MiB);
	/* A range that starts mid-chunk starts the first extent there. */
	memset(acc, 0, sizeof acc);
	CHECK_OK(image_extents(img, 100, 200, count_extent, acc));
	CHECK(acc[0] >= 200 && acc[2] == 1);
	image_close(img);
	finish(s);
}

/* Snapshots keep their content; forks start equal then diverge. */
static void test_snapshot_fork(void)
{
	struct store *s = fresh_store("snap");
	struct image *img, *snap, *fork;
	struct store_image_info info;

	CHECK_OK(store_image_create(s, "base", 8 * MiB));
	CHECK_OK(store_image_open(s, "base", &img));
	write_pattern(img, 1, 0, 8 * MiB);
	CHECK_OK(store_image_snapshot(s, "base", "s1"));	/* flushes the open image */
	write_pattern(img, 2, 1 * MiB, 4096);
	CHECK_OK(store_image_open(s, "base@s1", &snap));
	CHECK(image_readonly(snap));
	expect_pattern(snap, 1, 1 * MiB, 4096);
	CHECK_ERR(image_write(snap, "x", 0, 1, 0), -EROFS);
	CHECK_ERR(store_image_snapshot(s, "base", "s1"), -EEXIST);
	CHECK_ERR(store_image_snapshot(s, "base@s1", "s2"), -EINVAL);
	CHECK_ERR(store_image_resize(s, "base@s1", 1 * MiB), -EINVAL);

	CHECK_OK(store_image_fork(s, "base@s1", "child"));
	CHECK_OK(store_image_open(s, "child", &fork));
	expect_pattern(fork, 1, 0, 8 * MiB);
	write_pattern(fork, 3, 0, 4096);
	expect_pattern(snap, 1, 0, 4096);
	expect_pattern(img, 1, 0, 4096);
	expect_pattern(img, 2, 1 * MiB, 4096);
	image_close(fork);
	image_close(snap);
	image_close(img);

	CHECK_OK(store_image_info(s, "child", true, &info));
	CHECK(strcmp(info.parent, "base@s1") == 0);
	CHECK(info.allocated == 8 * MiB);
	CHECK(info.unique == 64 * 1024);	/* the one chunk it rewrote */
	CHECK(info.shared == 8 * MiB - 64 * 1024);
	CHECK_OK(store_image_info(s, "base@s1", true, &info));
	CHECK(info.readonly && strcmp(info.parent, "base") == 0);

	/* Rename carries snapshots along; rm takes them too. */
	CHECK_OK(store_image_rename(s, "base", "renamed"));
	CHECK_ERR(store_image_open(s, "base@s1", &snap), -ENOENT);
	CHECK_OK(store_image_open(s, "renamed@s1", &snap));
	expect_pattern(snap, 1, 0, 8 * MiB);
	image_close(snap);
	CHECK_ERR(store_image_rename(s, "renamed", "child"), -EEXIST);
	CHECK_OK(store_image_remove(s, "renamed"));
	CHECK_ERR(store_image_info(s, "renamed@s1", false, &info), -ENOENT);
	CHECK_OK(store_image_open(s, "child", &fork));
	expect_pattern(fork, 3, 0, 4096);
	expect_pattern(fork, 1, 4096, 8 * MiB - 4096);
	image_close(fork);
	finish(s);
}

static void test_names(void)
{
	struct store *s = fresh_store("names");
	const char *bad[] = { "", "a/b", "a@b", ".hidden", "-x", "x.snap", "sp ace", "new\nline" };
	char longname[300];

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK_ERR(store_image_create(s, bad[i], MiB), -EINVAL);
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	CHECK_ERR(store_image_create(s, longname, MiB), -EINVAL);
	CHECK_ERR(store_image_create(s, "huge", UINT64_MAX), -EFBIG);
	CHECK_OK(store_image_create(s, "ok-name_1.2+3", MiB));
	CHECK_ERR(store_image_create(s, "ok-name_1.2+3", MiB), -EEXIST);
	CHECK_ERR(store_image_fork(s, "missing", "x"), -ENOENT);
	CHECK_ERR(store_image_remove(s, "missing"), -ENOENT);
	finish(s);
}

static void test_resize(void)
{
	struct store *s = fresh_store("resize");
	struct image *img;

	CHECK_OK(store_image_create(s, "r", 4 * MiB));
	CHECK_OK(store_image_open(s, "r", &img));
	write_pattern(img, 7, 0, 4 * MiB);
	image_close(img);
	CHECK_OK(store_image_resize(s, "r", 1 * MiB + 100));
	CHECK_OK(store_image_resize(s, "r", 40 * MiB));	/* deeper tree than before */
	CHECK_OK(store_image_open(s, "r", &img));
	CHECK(image_size(img) == 40 * MiB);
	expect_pattern(img, 7, 0, 1 * MiB + 100);
	expect_zero(img, 1 * MiB + 100, 3 * MiB);
	write_pattern(img, 8, 39 * MiB, 1 * MiB);
	image_close(img);
	reopen(&s);
	CHECK_OK(store_image_open(s, "r", &img));
	expect_pattern(img, 7, 0, 1 * MiB + 100);
	expect_pattern(img, 8, 39 * MiB, 1 * MiB);
	image_close(img);
	CHECK_OK(store_image_resize(s, "r", 0));
	CHECK_OK(store_image_resize(s, "r", 2 * MiB));
	CHECK_OK(store_image_open(s, "r", &img));
	expect_zero(img, 0, 2 * MiB);
	image_close(img);
	finish(s);
}

static void test_clone_range(void)
{
	struct store *s = fresh_store("clone");
	struct image *a, *b;
	const uint64_t size = 40 * MiB + 5000;	/* more than one leaf, a partial tail */

	CHECK_OK(store_image_create(s, "a", size));
	CHECK_OK(store_image_create(s, "b", size));
	CHECK_OK(store_image_open(s, "a", &a));
	for (uint64_t off = 0; off < size; off += 4 * MiB)
		write_pattern(a, 11, off, (uint32_t)(size - off < 4 * MiB ? size - off : 4 * MiB));
	CHECK_OK(store_image_open(s, "b", &b));
	write_pattern(b, 12, 0, 1 * MiB);	/* dirty data the clone replaces */
	CHECK_ERR(store_image_clone_range(s, "a", 100, "b", 0, 65536), -EINVAL);
	CHECK_ERR(store_image_clone_range(s, "a", 0, "b", 0, 1000), -EINVAL);
	CHECK_OK(store_image_clone_range(s, "a", 0, "b", 0, size));
	expect_pattern(b, 11, 0, (uint32_t)size);
	write_pattern(b, 13, 20 * MiB, 4096);
	expect_pattern(a, 11, 20 * MiB, 4096);
	image_close(a);
	image_close(b);
	reopen(&s);
	CHECK_OK(store_image_open(s, "b", &b));
	expect_pattern(b, 11, 0, 20 * MiB);
	expect_pattern(b, 13, 20 * MiB, 4096);
	image_close(b);
	finish(s);
}

static uint64_t dir_bytes(const char *dir)
{
	char cmd[600];
	unsigned long long kb = 0;
	snprintf(cmd, sizeof cmd, "du -sk '%s'", dir);
	FILE *f = popen(cmd, "r");
	CHECK(f && fscanf(f, "%llu", &kb) == 1);
	pclose(f);
	return kb * 1024;
}

/* The numbers: 20 forks of a written 1 GiB image, 64 MiB each of
 * their own; growth within 5 %; rm and gc give the space back. */
static void test_fork_growth(void)
{
	struct store *s = fresh_store("growth");
	struct store_stats before, after, final;
	struct store_gc_result gc;
	struct image *img;
	char name[32];
	uint8_t *buf = malloc(4 * MiB);

	CHECK_OK(store_image_create(s, "golden", 1024 * MiB));
	CHECK_OK(store_image_open(s, "golden", &img));
	for (uint64_t off = 0; off < 1024 * MiB; off += 4 * MiB) {
		pattern(buf, 4 * MiB, 100, off);
		CHECK_OK(image_write(img, buf, off, 4 * MiB, 0));
	}
	image_close(img);
	CHECK_OK(store_stats(s, &before));
	uint64_t du_before = dir_bytes(store_dir(s));
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "fork%d", i);
		CHECK_OK(store_image_fork(s, "golden", name));
		CHECK_OK(store_image_open(s, name, &img));
		for (uint64_t off = 0; off < 64 * MiB; off += 4 * MiB) {
			pattern(buf, 4 * MiB, 1000 + (uint64_t)i, off);
			CHECK_OK(image_write(img, buf, (uint64_t)i * 32 * MiB + off, 4 * MiB, 0));
		}
		image_close(img);
	}
	CHECK_OK(store_stats(s, &after));
	uint64_t du_after = dir_bytes(store_dir(s));
	double growth = (double)(after.physical - before.physical);
	double limit = 1.05 * 20 * 64 * MiB;
	printf("physical growth %.1f MiB (stats), %.1f MiB (du), limit %.1f MiB, dedup ratio %.2f\n",
	       growth / MiB, (double)(du_after - du_before) / MiB, limit / MiB, after.dedup_ratio);
	CHECK(growth <= limit);
	CHECK((double)(du_after - du_before) <= limit);
	CHECK(after.logical == 21 * 1024 * MiB);

	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "fork%d", i);
		CHECK_OK(store_image_remove(s, name));
	}
	CHECK_OK(store_gc(s, NULL, NULL, &gc));
	CHECK_OK(store_stats(s, &final));
	uint64_t du_final = dir_bytes(store_dir(s));
	printf("after rm and gc: %.1f MiB (du) vs %.1f MiB before the forks; %llu packs removed, "
	       "%llu compacted\n", (double)du_final / MiB, (double)du_before / MiB,
	       (unsigned long long)gc.packs_removed, (unsigned long long)gc.packs_compacted);
	CHECK((double)du_final <= 1.10 * (double)du_before);
	CHECK_OK(store_image_open(s, "golden", &img));
	for (uint64_t off = 0; off < 1024 * MiB; off += 64 * MiB)
		expect_pattern(img, 100, off, 4 * MiB);
	image_close(img);
	uint64_t bad = 1;
	CHECK_OK(store_verify(s, NULL, NULL, NULL, &bad));
	CHECK(bad == 0);
	free(buf);
	finish(s);
}

static void flip_byte(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	CHECK(fd >= 0);
	CHECK(pread(fd, &b, 1, (off_t)off) == 1);
	b ^= 0x5a;
	CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
	close(fd);
}

struct seen_bad {
	int n;
	char image[300];
	uint64_t offset;
};

static void on_bad(void *opaque, const struct store_verify_error *e)
{
	struct seen_bad *sb = opaque;
	printf("bad chunk %s in %s at %llu: image %s offset %llu: %s\n", e->chunk, e->pack,
	       (unsigned long long)e->pack_offset, e->image, (unsigned long long)e->image_offset,
	       e->what);
	sb->n++;
	snprintf(sb->image, sizeof sb->image, "%s", e->image);
	sb->offset = e->image_offset;
}

/* A flipped byte: verify names the chunk, images and offsets; reads fail with EIO. */
static void test_verify_corrupt(void)
{
	struct store *s = fresh_store("corrupt");
	struct image *img;
	struct seen_bad sb = { 0 };
	char pack[4200];
	uint64_t bad = 0;
	uint8_t b[4096];

	CHECK_OK(store_image_create(s, "victim", 4 * MiB));
	CHECK_OK(store_image_open(s, "victim", &img));
	write_pattern(img, 21, 0, 4 * MiB);
	image_close(img);
	CHECK_OK(store_image_fork(s, "victim", "sibling"));
	/* The first record of the first pack is the first data chunk written:
	 * offset 0 of the image. Flip a byte in its payload. */
	snprintf(pack, sizeof pack, "%s/packs/00000001.pack", store_dir(s));
	char *dir = reopen(&s);
	flip_byte(pack, 48 + 16 * 4 + 5000);
	store_close(s);
	s = open_store(dir);

	CHECK_OK(store_verify(s, on_bad, NULL, &sb, &bad));
	CHECK(bad == 1);
	CHECK(sb.n == 2);	/* both images that use it */
	CHECK(sb.offset == 0);
	CHECK_OK(store_image_open(s, "sibling", &img));
	CHECK_ERR(image_read(img, b, 4096, 4096), -EIO);
	CHECK_OK(image_read(img, b, 0, 4096));	/* other sub-blocks still check out */
	expect_pattern(img, 21, 65536, 65536);
	/* Writing the same bytes again stores a good copy under another slot. */
	write_pattern(img, 21, 0, 65536);
	expect_pattern(img, 21, 0, 65536);
	image_close(img);
	finish(s);
}

static void append_garbage(const char *path, size_t n, int truncate_by)
{
	int fd = open(path, O_RDWR);
	struct stat st;
	uint8_t junk[4096];
	CHECK(fd >= 0 && fstat(fd, &st) == 0);
	if (truncate_by) {
		CHECK(ftruncate(fd, st.st_size - truncate_by) == 0);
	} else {
		for (size_t i = 0; i < sizeof junk; i++)
			junk[i] = (uint8_t)(i * 7 + 3);
		CHECK(pwrite(fd, junk, n, st.st_size) == (ssize_t)n);
	}
	close(fd);
}

/* Torn and corrupt tails of the heads journal and of a pack. */
static void test_torn_tails(void)
{
	struct store *s = fresh_store("torn");
	struct image *img;
	char path[4200];

	CHECK_OK(store_image_create(s, "keep", 4 * MiB));
	CHECK_OK(store_image_open(s, "keep", &img));
	write_pattern(img, 31, 0, 4 * MiB);
	image_close(img);
	char *dir = reopen(&s);
	store_close(s);

	snprintf(path, sizeof path, "%s/heads", dir);
	append_garbage(path, 100, 0);
	snprintf(path, sizeof path, "%s/packs/00000001.pack", dir);
	append_garbage(path, 3000, 0);
	s = open_store(dir);
	CHECK_OK(store_image_open(s, "keep", &img));
	expect_pattern(img, 31, 0, 4 * MiB);
	write_pattern(img, 32, 0, 1 * MiB);	/* appends after the repaired tail */
	image_close(img);
	store_close(s);

	/* A half-written last record, and no index to lean on. */
	snprintf(path, sizeof path, "%s/packs/00000001.pack", dir);
	append_garbage(path, 0, 1000);
	snprintf(path, sizeof path, "%s/index", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/heads", dir);
	append_garbage(path, 0, 3);	/* the last journal record is torn */
	s = open_store(dir);
	CHECK_OK(store_image_open(s, "keep", &img));
	/* The torn journal record was the last flush: the state before it stays. */
	expect_pattern(img, 31, 0, 4 * MiB);
	image_close(img);
	finish(s);
}

static void test_lock(void)
{
	struct store *s = fresh_store("lock"), *t;
	CHECK_ERR(store_open(store_dir(s), NULL, &t), -EBUSY);
	CHECK_ERR(store_init(store_dir(s), STORE_DEFAULT_CHUNK_SIZE), -EEXIST);
	CHECK_ERR(store_open("/nonexistent/hutch", NULL, &t), -ENOENT);
	finish(s);
}

struct writer {
	struct store *s;
	int id;
};

static void *writer_thread(void *p)
{
	struct writer *w = p;
	struct image *img;
	uint8_t buf[12288];

	CHECK_OK(store_image_open(w->s, "shared", &img));
	for (int i = 0; i < 200; i++) {
		uint64_t off = ((uint64_t)w->id * 8 + (uint64_t)(i % 8)) * MiB + (uint64_t)(i * 4096) % MiB;
		pattern(buf, sizeof buf, (uint64_t)w->id, off);
		CHECK_OK(image_write(img, buf, off, sizeof buf, i % 17 == 0 ? IMAGE_FUA : 0));
		if (i % 13 == 0)
			CHECK_OK(image_flush(img));
		expect_pattern(img, (uint64_t)w->id, off, sizeof buf);
	}
	image_close(img);
	return NULL;
}

/* Several handles on one image (NBD multi-conn) writing and flushing at once. */
static void test_concurrent(void)
{
	struct store *s = fresh_store("concurrent");
	pthread_t t[4];
	struct writer w[4];
	struct store_gc_result gc;

	CHECK_OK(store_image_create(s, "shared", 32 * MiB));
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ s, i };
		CHECK(pthread_create(&t[i], NULL, writer_thread, &w[i]) == 0);
	}
	CHECK_OK(store_gc(s, NULL, NULL, &gc));	/* online, while they write */
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	CHECK_OK(store_gc(s, NULL, NULL, &gc));
	reopen(&s);
	struct image *img;
	CHECK_OK(store_image_open(s, "shared", &img));
	for (int id = 0; id < 4; id++)
		for (int i = 0; i < 200; i++) {
			uint64_t off = ((uint64_t)id * 8 + (uint64_t)(i % 8)) * MiB + (uint64_t)(i * 4096) % MiB;
			/* Later writes of the same thread may overlap earlier ones; check the last. */
			bool last = true;
			for (int j = i + 1; j < 200; j++) {
				uint64_t o2 = ((uint64_t)id * 8 + (uint64_t)(j % 8)) * MiB + (uint64_t)(j * 4096) % MiB;
				if (o2 < off + 12288 && off < o2 + 12288)
					last = false;
			}
			if (last)
				expect_pattern(img, (uint64_t)id, off, 12288);
		}
	image_close(img);
	uint64_t bad = 1;
	CHECK_OK(store_verify(s, NULL, NULL, NULL, &bad));
	CHECK(bad == 0);
	finish(s);
}

static void *open_close_thread(void *p)
{
	struct writer *w = p;
	uint8_t buf[4096];

	for (int i = 0; i < 300; i++) {
		struct image *img;
		uint64_t off = ((uint64_t)w->id * 300 + (uint64_t)i) * 4096;
		CHECK_OK(store_image_open(w->s, "churn", &img));
		pattern(buf, sizeof buf, 7, off);
		CHECK_OK(image_write(img, buf, off, sizeof buf, 0));
		image_close(img);	/* often the last close, racing other opens */
	}
	return NULL;
}

/* Opens and last closes of one image racing each other (NBD clients that
 * connect and go): the shared image is freed once, and nothing is lost. */
static void test_open_close_race(void)
{
	struct store *s = fresh_store("churn");
	pthread_t t[4];
	struct writer w[4];
	struct image *img;

	CHECK_OK(store_image_create(s, "churn", 8 * MiB));
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ s, i };
		CHECK(pthread_create(&t[i], NULL, open_close_thread, &w[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	reopen(&s);
	CHECK_OK(store_image_open(s, "churn", &img));
	expect_pattern(img, 7, 0, 4 * 300 * 4096);
	image_close(img);
	finish(s);
}

/* Chunks whose hashes collide (a weak-hash build makes them common) never
 * read each other's bytes. */
static void test_collisions(void)
{
	struct store *s = fresh_store("collide");
	struct image *a, *b;

	CHECK_OK(store_image_create(s, "a", 16 * MiB));
	CHECK_OK(store_image_create(s, "b", 16 * MiB));
	CHECK_OK(store_image_open(s, "a", &a));
	CHECK_OK(store_image_open(s, "b", &b));
	for (uint64_t off = 0; off < 16 * MiB; off += 1 * MiB) {
		write_pattern(a, 41, off, 1 * MiB);
		write_pattern(b, 42, off, 1 * MiB);
	}
	image_close(a);
	image_close(b);
	reopen(&s);
	CHECK_OK(store_image_open(s, "a", &a));
	CHECK_OK(store_image_open(s, "b", &b));
	expect_pattern(a, 41, 0, 16 * MiB);
	expect_pattern(b, 42, 0, 16 * MiB);
	/* Same bytes again: deduplicated, not stored twice. */
	struct store_stats st1, st2;
	CHECK_OK(store_stats(s, &st1));
	write_pattern(b, 41, 0, 4 * MiB);
	CHECK_OK(image_flush(b));
	CHECK_OK(store_stats(s, &st2));
	CHECK(st2.pack_bytes - st1.pack_bytes < 64 * 1024);	/* new map nodes only */
	CHECK(st2.unique_data == st1.unique_data - 4 * MiB);	/* b's old bytes are garbage now */
	expect_pattern(b, 41, 0, 4 * MiB);
	expect_pattern(a, 41, 0, 16 * MiB);
	image_close(a);
	image_close(b);
	uint64_t bad = 1;
	CHECK_OK(store_verify(s, NULL, NULL, NULL, &bad));
	CHECK(bad == 0);
	finish(s);
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "roundtrip", test_roundtrip },
	{ "partial-blocks", test_partial_blocks },
	{ "zero-extents", test_zero_extents },
	{ "snapshot-fork", test_snapshot_fork },
	{ "names", test_names },
	{ "resize", test_resize },
	{ "clone-range", test_clone_range },
	{ "fork-growth", test_fork_growth },
	{ "verify-corrupt", test_verify_corrupt },
	{ "torn-tails", test_torn_tails },
	{ "lock", test_lock },
	{ "concurrent", test_concurrent },
	{ "open-close-race", test_open_close_race },
	{ "collisions", test_collisions },
};

int main(int argc, char **argv)
{
	for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
		if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
			continue;
		printf("== %s\n", tests[i].name);
		fflush(stdout);
		tests[i].fn();
	}
	return 0;
}

/*
 * The store engine's own throughput, without NBD: sequential 1 MiB and
 * random 4 KiB writes and reads on one image, one thread, synchronous
 * calls; writes end with a flush (like fio's end_fsync). bench/store.sh
 * runs it next to fio on a plain file of the same file system.
 *
 *   hutch-store-bench DIR SIZE_MIB SECONDS
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "util.h"

static double secs(void)
{
	return (double)now_ns() / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "hutch-store-bench: %s: %s\n", what, strerror(-r));
	exit(1);
}

int main(int argc, char **argv)
{
	struct store *s;
	struct image *img;
	uint64_t size, seed = 88172645463325252ull, ops;
	double t0, t, limit;
	uint8_t *buf;
	int r;

	if (argc != 4) {
		fprintf(stderr, "usage: hutch-store-bench DIR SIZE_MIB SECONDS\n");
		return 2;
	}
	size = strtoull(argv[2], NULL, 10) << 20;
	limit = atof(argv[3]);
	r = store_init(argv[1], STORE_DEFAULT_CHUNK_SIZE);
	if (r < 0 && r != -EEXIST)
		die("init", r);
	if ((r = store_open(argv[1], NULL, &s)) < 0)
		die("open", r);
	store_image_remove(s, "bench");
	if ((r = store_image_create(s, "bench", size)) < 0)
		die("create", r);
	if ((r = store_image_open(s, "bench", &img)) < 0)
		die("open image", r);
	buf = malloc(1 << 20);
	/* Data that neither dedups nor is zero. */
	for (size_t i = 0; i < (1 << 20) / 8; i++)
		((uint64_t *)buf)[i] = rnd(&seed);

	t0 = secs();
	for (uint64_t off = 0; off < size; off += 1 << 20) {
		((uint64_t *)buf)[0] = off;
		for (size_t i = 0; i < (1 << 20); i += 65536)
			((uint64_t *)buf)[i / 8] = rnd(&seed);
		if ((r = image_write(img, buf, off, 1 << 20, 0)) < 0)
			die("write", r);
	}
	if ((r = image_flush(img)) < 0)
		die("flush", r);
	t = secs() - t0;
	printf("seq-write-1M %.1f MiB/s\n", (double)size / (1 << 20) / t);

	t0 = secs();
	for (uint64_t off = 0; off < size; off += 1 << 20)
		if ((r = image_read(img, buf, off, 1 << 20)) < 0)
			die("read", r);
	t = secs() - t0;
	printf("seq-read-1M %.1f MiB/s\n", (double)size / (1 << 20) / t);

	t0 = secs();
	for (ops = 0; (ops & 1023) || secs() - t0 < limit; ops++) {
		uint64_t off = rnd(&seed) % (size / 4096) * 4096;
		if ((r = image_read(img, buf, off, 4096)) < 0)
			die("read", r);
	}
	t = secs() - t0;
	printf("rand-read-4k %.0f IOPS\n", (double)ops / t);

	t0 = secs();
	for (ops = 0; (ops & 1023) || secs() - t0 < limit; ops++) {
		uint64_t off = rnd(&seed) % (size / 4096) * 4096;
		((uint64_t *)buf)[0] = rnd(&seed);
		if ((r = image_write(img, buf, off, 4096, 0)) < 0)
			die("write", r);
	}
	if ((r = image_flush(img)) < 0)
		die("flush", r);
	t = secs() - t0;
	printf("rand-write-4k %.0f IOPS\n", (double)ops / t);

	image_close(img);
	store_image_remove(s, "bench");
	store_close(s);
	free(buf);
	return 0;
}

/* Helpers for the store engine's C tests: a fresh store directory per
 * test, assertions that print where and why, deterministic patterns. */
#ifndef HUTCH_STORE_TEST_H
#define HUTCH_STORE_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

#define CHECK_OK(expr)                                                                   \
	do {                                                                             \
		int _r = (expr);                                                         \
		if (_r < 0) {                                                            \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, \
				strerror(-_r));                                          \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

#define CHECK_ERR(expr, err)                                                             \
	do {                                                                             \
		int _r = (expr);                                                         \
		if (_r != (err)) {                                                       \
			fprintf(stderr, "%s:%d: %s gave %d (%s), wanted %s\n", __FILE__,  \
				__LINE__, #expr, _r, strerror(-_r), #err);               \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

/* Fills buf with bytes derived from (seed, offset): any 512-byte block tells
 * where it came from. */
static inline void pattern(void *buf, size_t len, uint64_t seed, uint64_t off)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++) {
		uint64_t x = (off + i) / 8 * 0x9e3779b97f4a7c15ull ^ seed * 0xbf58476d1ce4e5b9ull;
		x ^= x >> 31;
		p[i] = (uint8_t)(x >> (8 * ((off + i) % 8)));
	}
}

static inline char *test_dir(const char *name)
{
	static char dir[512];
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof dir, "%s/hutch-%s-XXXXXX", base, name);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	return dir;
}

static inline void rm_rf(const char *dir)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

#endif

/* Chunk addresses: XXH3-128 keyed with the store's secret. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>
#ifdef HUTCH_XXH_DISPATCH
#include <xxh_x86dispatch.h>	/* XXH3_* become their AVX2/AVX-512 dispatching twins */
#endif

#include "store-internal.h"

void chunk_hash(const uint8_t *secret, const void *buf, size_t len, struct ref *out)
{
	XXH128_hash_t h = XXH3_128bits_withSecret(buf, len, secret, STORE_SECRET_SIZE);

#ifdef HUTCH_WEAK_HASH
	/* Test build: 16 distinct hashes, so unrelated chunks collide all the
	 * time and verify-on-match is what keeps images apart. */
	h.low64 &= 0xf;
	h.high64 = 0;
#endif
	out->h0 = h.low64;
	out->h1 = h.high64;
	out->slot = 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

void ref_encode(const struct ref *r, uint8_t out[NODE_REF_SIZE])
{
	put_le64(out, r->h0);
	put_le64(out + 8, r->h1);
	put_le32(out + 16, r->slot);
}

void ref_decode(const uint8_t in[NODE_REF_SIZE], struct ref *r)
{
	r->h0 = get_le64(in);
	r->h1 = get_le64(in + 8);
	r->slot = get_le32(in + 16);
}

void ref_format(const struct ref *r, char *buf, size_t sz)
{
	snprintf(buf, sz, "%016llx%016llx#%u", (unsigned long long)r->h1,
		 (unsigned long long)r->h0, r->slot);
}

uint32_t sub_csum(const void *buf, size_t len)
{
	return (uint32_t)XXH3_64bits(buf, len);
}

bool buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Compare the buffer with itself shifted: memcmp is vectorised. */
	if (len == 0)
		return true;
	if (len < 16) {
		for (size_t i = 0; i < len; i++)
			if (p[i])
				return false;
		return true;
	}
	for (size_t i = 0; i < 16; i++)
		if (p[i])
			return false;
	return memcmp(p, p + 16, len - 16) == 0;
}

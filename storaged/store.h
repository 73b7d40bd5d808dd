/*
 * The store engine: deduplicated, content-addressed images with O(1)
 * snapshot and fork. This is the whole interface other parts of
 * hutch-storaged (control socket, NBD backend) use; store-internal.h is
 * private to the engine.
 *
 * Errors are negative errno values. All functions are thread-safe unless
 * noted. The locking model is in docs/storaged-threading.md.
 */
#ifndef HUTCH_STORE_H
#define HUTCH_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct store;
struct image;

#define STORE_DEFAULT_CHUNK_SIZE (64u * 1024)
#define STORE_MIN_CHUNK_SIZE (4u * 1024)
#define STORE_MAX_CHUNK_SIZE (4u * 1024 * 1024)
#define STORE_MAX_IMAGE_SIZE (1ull << 46)	/* 64 TiB */

struct store_options {
	uint64_t dirty_limit;		/* bytes of unflushed chunk data kept in memory */
	uint64_t pack_size;		/* a pack is sealed once it passes this size */
};
void store_options_default(struct store_options *o);

/* Create an empty store in DIR (made if missing). -EEXIST if one is there. */
int store_init(const char *dir, uint32_t chunk_size);
/* Open DIR, taking an exclusive lock: -EBUSY if another process holds it.
 * Replays the heads journal and the index, repairs torn tails and logs
 * what was dropped. */
int store_open(const char *dir, const struct store_options *opts, struct store **out);
/* Flush every image, persist the index, release the lock. NULL is fine. */
void store_close(struct store *s);

uint32_t store_chunk_size(const struct store *s);
const char *store_dir(const struct store *s);

/* ---- image namespace (control plane) ---------------------------------
 * Names are checked with name_is_valid()/ref_is_valid() from common/util.h;
 * invalid ones give -EINVAL. Snapshots are named "NAME@SNAP", read-only. */

int store_image_create(struct store *s, const char *name, uint64_t size);
/* Removes NAME and all NAME@* snapshots; or a single NAME@SNAP. */
int store_image_remove(struct store *s, const char *ref);
/* Renames NAME and its snapshots together. -EEXIST if NEW exists. */
int store_image_rename(struct store *s, const char *old_name, const char *new_name);
int store_image_resize(struct store *s, const char *name, uint64_t size);
/* O(1): NAME's current root becomes NAME@SNAP (after flushing NAME). */
int store_image_snapshot(struct store *s, const char *name, const char *snap);
/* O(1): SRC (NAME or NAME@SNAP) becomes a new writable DST. */
int store_image_fork(struct store *s, const char *src, const char *dst);

/* Makes DST's [dst_off, dst_off+len) share SRC's chunks: no data is copied.
 * Offsets must be chunk-aligned, and len too unless the range ends at the
 * end of both images. DST must be writable and large enough. */
int store_image_clone_range(struct store *s, const char *src, uint64_t src_off, const char *dst,
			    uint64_t dst_off, uint64_t len);

struct store_image_info {
	char name[2 * 128 + 2];
	char parent[2 * 128 + 2];	/* fork source or "" */
	uint64_t size;			/* logical size */
	uint64_t allocated;		/* bytes in non-zero chunks */
	uint64_t unique;		/* allocated bytes no other head uses */
	uint64_t shared;		/* allocated bytes other heads use too */
	uint64_t generation;
	uint64_t created;		/* unix seconds */
	bool readonly;
	unsigned open_count;		/* open handles (NBD connections, ...) */
};
/* Fills info for every head (images and snapshots), sorted by name.
 * With usage false, allocated/unique/shared are left 0 (cheap). Caller frees *out. */
int store_image_list(struct store *s, bool usage, struct store_image_info **out, size_t *n);
int store_image_info(struct store *s, const char *ref, bool usage, struct store_image_info *out);

struct store_stats {
	uint32_t chunk_size;
	uint64_t images, snapshots;
	uint64_t provisioned;		/* sum of image sizes */
	uint64_t logical;		/* sum over heads of allocated bytes */
	uint64_t unique_data;		/* bytes of distinct live data chunks */
	uint64_t physical;		/* bytes the store's files take on disk */
	uint64_t packs, pack_bytes, dead_bytes;
	uint64_t chunks;		/* records in the index */
	double dedup_ratio;		/* logical / physical */
};
int store_stats(struct store *s, struct store_stats *out);

/* Progress callback for long operations; may be NULL. */
typedef void (*store_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct store_gc_result {
	uint64_t live_chunks, dead_chunks;
	uint64_t packs_removed, packs_compacted;
	uint64_t bytes_before, bytes_after;
};
/* Online: images stay open and writable while it runs. */
int store_gc(struct store *s, store_progress_fn fn, void *opaque, struct store_gc_result *out);

struct store_verify_error {
	char chunk[48];		/* hex hash#slot */
	char pack[32];
	uint64_t pack_offset;
	char image[2 * 128 + 2];	/* one image that uses it, and where */
	uint64_t image_offset;
	char what[64];
};
typedef void (*store_verify_fn)(void *opaque, const struct store_verify_error *e);
/* Re-hash every reachable chunk. Each bad chunk is reported once per
 * (image, offset) that uses it. *bad counts bad chunks. */
int store_verify(struct store *s, store_verify_fn report, store_progress_fn progress,
		 void *opaque, uint64_t *bad);

/* ---- data plane -------------------------------------------------------
 * An open image is shared by all openers of the same name (refcounted),
 * so a flush through one handle covers writes made through every other
 * handle: what NBD multi-conn needs. */

int store_image_open(struct store *s, const char *ref, struct image **out);
void image_close(struct image *img);

uint64_t image_size(struct image *img);
bool image_readonly(struct image *img);
const char *image_name(struct image *img);
/* True once the head was removed or renamed while open; I/O then fails with -ESHUTDOWN. */
bool image_is_gone(struct image *img);

/* Offsets and lengths must lie inside the image: -EINVAL otherwise.
 * Reads of corrupt data fail with -EIO, never return wrong bytes. */
int image_read(struct image *img, void *buf, uint64_t off, uint32_t len);
#define IMAGE_FUA 1u		/* durable before returning */
int image_write(struct image *img, const void *buf, uint64_t off, uint32_t len, unsigned flags);
/* Zeroes a range; whole chunks become holes (nothing stored). */
int image_zero(struct image *img, uint64_t off, uint64_t len, unsigned flags);
/* Same as zero for this store: trimmed space reads back as zeroes. */
int image_trim(struct image *img, uint64_t off, uint64_t len, unsigned flags);
/* Everything written to this image before the call survives a crash. */
int image_flush(struct image *img);

#define EXTENT_HOLE 1u		/* NBD_STATE_HOLE */
#define EXTENT_ZERO 2u		/* NBD_STATE_ZERO */
/* Calls fn for consecutive extents covering [off, off+len) (it may stop
 * early by returning non-zero; the last extent may go beyond len, clipped
 * to the image end). Unwritten and zero chunks are HOLE|ZERO. */
typedef int (*image_extent_fn)(void *opaque, uint64_t off, uint64_t len, uint32_t flags);
int image_extents(struct image *img, uint64_t off, uint64_t len, image_extent_fn fn, void *opaque);

/* Flush every open image (timer and shutdown). */
int store_flush_all(struct store *s);

#endif

/*
 * Private to the store engine. See docs/store-format.md for the on-disk
 * formats and docs/storaged-threading.md for the locks.
 *
 * Lock order (outer first): image.flush_lock > image.lock > store.lock > image.load_lock >
 * store.put_lock > index.lock. Pack reads take no store lock.
 */
#ifndef HUTCH_STORE_INTERNAL_H
#define HUTCH_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "store.h"

#define STORE_FORMAT_VERSION 1
#define STORE_SECRET_SIZE 192		/* >= XXH3_SECRET_SIZE_MIN */
#define NODE_FANOUT 256u
#define NODE_REF_SIZE 20u		/* hash 16 + slot 4, on disk */
#define NODE_HDR_SIZE 4u		/* level u8, 3 reserved */
#define NODE_SIZE (NODE_HDR_SIZE + NODE_FANOUT * NODE_REF_SIZE)
#define SUB_BLOCK 4096u			/* granularity of payload checksums */
#define MAX_DEPTH 8

/* ---- chunk references (store-hash.c) ---- */

/* A chunk's address: keyed XXH3-128 of its bytes, plus a slot that tells
 * apart chunks whose hashes collide (verify-on-match). slot 0 = a hole. */
struct ref {
	uint64_t h0, h1;
	uint32_t slot;
};

static inline bool ref_is_hole(const struct ref *r) { return r->slot == 0; }
static inline bool ref_eq(const struct ref *a, const struct ref *b)
{
	return a->h0 == b->h0 && a->h1 == b->h1 && a->slot == b->slot;
}
void chunk_hash(const uint8_t *secret, const void *buf, size_t len, struct ref *out);
void ref_encode(const struct ref *r, uint8_t out[NODE_REF_SIZE]);
void ref_decode(const uint8_t in[NODE_REF_SIZE], struct ref *r);
/* "hhhh…#slot" */
void ref_format(const struct ref *r, char *buf, size_t sz);
uint32_t sub_csum(const void *buf, size_t len);
bool buf_is_zero(const void *buf, size_t len);

/* ---- packs (store-pack.c) ---- */

enum rec_type { REC_DATA = 1, REC_NODE = 2 };

#define PACK_MAGIC 0x4b505448u		/* "HTPK" */
#define PACK_HDR_SIZE 48u
struct rec_hdr {
	uint8_t type;
	uint32_t len;
	uint32_t slot;
	uint64_t h0, h1;
	uint32_t nsub;
};
static inline uint64_t rec_size(uint32_t len)
{
	return PACK_HDR_SIZE + 4ull * ((len + SUB_BLOCK - 1) / SUB_BLOCK) + len;
}

struct pack {
	uint32_t id;
	int fd;
	uint64_t size;			/* bytes of whole records */
	uint64_t synced;		/* everything below it is on disk (fdatasync) */
	uint64_t indexed;		/* what the saved index may cover: never recycled */
	uint64_t rewrites;		/* records written over (recycled) so far */
	bool removed;			/* unlinked by gc; fd kept until the next gc */
};

int pack_path(const struct store *s, uint32_t id, char *buf, size_t sz);
int pack_open(struct store *s, uint32_t id, bool create, struct pack **out);
void pack_free(struct pack *p);
/* The pack to append need bytes to, starting a new one when the active
 * one is full. Caller holds put_lock. */
int pack_for_append(struct store *s, uint64_t need, struct pack **out);
/* Appends one record at p->size. On error the pack is cut back to its old size. */
/* SUBS: the payload's sub-block checksums (pack_sub_csums), or NULL to compute them. */
void pack_sub_csums(const struct rec_hdr *h, const void *payload, uint32_t *subs);
int pack_append(struct pack *p, const struct rec_hdr *h, const void *payload, const uint32_t *subs,
		uint64_t *off);
/* Writes one record over a recycled one of the same size at off. */
int pack_overwrite(struct pack *p, const struct rec_hdr *h, const void *payload, const uint32_t *subs,
		   uint64_t off);
/* Reads and checks a record header (and its sub checksums into subs, which holds nsub). */
int pack_read_hdr(int fd, uint64_t off, struct rec_hdr *h, uint32_t *subs, uint32_t max_subs);
/* Reads payload bytes [from, from+len) of the record at off, verifying each
 * sub-block touched. -EIO on a checksum mismatch. */
int pack_read_payload(int fd, uint64_t off, const struct rec_hdr *h, const uint32_t *subs,
		      uint32_t from, uint32_t len, void *buf);
/* The sub-blocks a read of [from, from+len) of a payload touches. */
struct span {
	uint32_t first, last;		/* sub-block indexes */
	uint32_t start, end;		/* byte range of the payload they cover */
	uint8_t *buf;			/* where they are read to */
	uint8_t *tmp;			/* owned bounce buffer, or NULL */
};
int span_init(struct span *sp, uint32_t from, uint32_t len, uint32_t plen, void *buf);
int span_finish(struct span *sp, const uint32_t *subs, uint32_t plen, uint32_t from,
		uint32_t len, void *buf);

/* Walks records from `from`, calling fn for each whole one. A damaged
 * record followed by good ones is skipped; *good_end is where the good
 * records end (a torn or damaged tail starts there). With check_payload
 * the last record's payload is verified too. */
typedef int (*pack_scan_fn)(void *opaque, uint64_t off, const struct rec_hdr *h, bool payload_ok);
int pack_scan(int fd, uint64_t from, uint64_t file_size, bool check_payload,
	      pack_scan_fn fn, void *opaque, uint64_t *good_end);

/* ---- index (store-index.c) ---- */

struct idx_ent {
	uint64_t h0, h1;
	uint32_t slot;
	uint32_t pack;
	uint64_t off;
	uint64_t owner;			/* see chunk_put_owned; under put_lock */
	uint32_t len;
	uint8_t type;
	uint8_t used;
	_Atomic uint8_t gc;		/* GC_MARK | GC_VISIT while gc runs */
	uint8_t unlogged;		/* stored by a write-out: no write log names it */
};
#define GC_MARK 1u	/* used by a write while gc runs */
#define GC_VISIT 2u	/* reached from a head */

struct index {
	pthread_rwlock_t lock;
	struct idx_ent *tab;		/* open addressing, linear probing */
	uint64_t cap, count;
};

int index_init(struct index *ix, uint64_t cap);
void index_destroy(struct index *ix);
/* Copies the entry for r into *out. -ENOENT when absent. Takes the read lock. */
int index_lookup(struct index *ix, const struct ref *r, struct idx_ent *out);
/* Caller holds the write lock. Replaces an existing entry with the same key. */
int index_put_locked(struct index *ix, const struct idx_ent *e);
struct idx_ent *index_find_locked(struct index *ix, const struct ref *r);
/* Caller holds the write lock. */
void index_remove_locked(struct index *ix, struct idx_ent *e);
/* Keeps only entries for which keep() is true (rehashes). Write lock held by caller. */
int index_filter_locked(struct index *ix, bool (*keep)(void *, struct idx_ent *), void *opaque);
int index_save(struct store *s);
/* Loads the saved index; covered[id] gets how much of each pack it covers
 * (the rest is scanned). -ENOENT or -EBADMSG: nothing loaded, scan everything. */
int index_load(struct store *s, uint64_t *covered);

/* ---- batched record reads (store-pack.c, store-uring.c) ---- */

/* One read of part of a record, split so a batch of them can go through
 * io_uring: prepare, do its nops reads (op[i]: iovcnt iovecs read at off),
 * finish with the result. The header comes from the header cache when it
 * can, and then only the data is read. */
struct rec_op {
	struct iovec *iov;
	int iovcnt;
	uint64_t off;
	size_t len;
};
struct rec_read {
	struct idx_ent e;
	int fd;
	uint32_t from, len;
	void *out;
	struct span sp;
	size_t hlen;
	bool hdr_cached;
	unsigned nops;
	struct rec_op op[2];
	struct iovec iov[2];		/* header, data */
	uint8_t hdr[PACK_HDR_SIZE + 4 * (STORE_MAX_CHUNK_SIZE / SUB_BLOCK)];
};
int rec_read_prepare(struct store *s, struct rec_read *rr, int fd, const struct idx_ent *e,
		     uint32_t from, uint32_t len, void *buf);
/* res: 0 when the reads got every byte, else a negative errno. */
int rec_read_finish(struct store *s, struct rec_read *rr, int res);
/* store-hdrcache.c */
void hdr_cache_init(struct store *s);
void hdr_cache_free(struct store *s);
bool hdr_cache_get(struct store *s, const struct idx_ent *e, uint8_t *hdr, size_t len);
void hdr_cache_put(struct store *s, const struct idx_ent *e, const uint8_t *hdr, size_t len);
/* A record was written over at e's place. */
void hdr_cache_drop(struct store *s, const struct idx_ent *e);
/* Does the reads of n prepared rec_reads, through one of the store's
 * io_urings when one is free; res[k] gets each one's result for rec_read_finish. */
int rec_read_batch(struct store *s, struct rec_read *rr, unsigned n, int *res);
void uring_pool_init(struct store *s);
void uring_pool_free(struct store *s);
/* This thread's CHUNK_READ_BATCH rec_reads (freed when the thread ends). */
struct rec_read *rec_read_scratch(void);

/* ---- heads journal (store-heads.c) ---- */

struct head {
	char name[2 * 128 + 2];
	char parent[2 * 128 + 2];
	struct ref root;
	uint64_t size;
	uint64_t gen;
	uint64_t created;
	bool ro;
	bool live;
};

enum head_op { HEAD_PUT = 1, HEAD_DEL = 2 };
struct head_change {
	enum head_op op;
	struct head h;			/* for DEL only h.name counts */
};

int heads_replay(struct store *s);
/* Appends one atomic batch and fsyncs it, then applies it in memory.
 * Caller holds store.lock. */
int heads_commit(struct store *s, const struct head_change *c, unsigned n);
struct head *head_find(struct store *s, const char *name);
/* A copy of every head, taken under store.lock; caller frees. NULL on ENOMEM. */
struct head *heads_copy(struct store *s, size_t *n);
int heads_compact(struct store *s);

/* ---- the store ---- */

struct store {
	char dir[4096];
	int dir_fd;
	int lock_fd;
	uint32_t chunk_size;
	uint8_t secret[STORE_SECRET_SIZE];
	struct store_options opts;

	/* Protects heads, open images, heads journal appends. */
	pthread_mutex_t lock;
	struct head *heads;
	size_t nheads, heads_cap;
	int heads_fd;
	uint64_t heads_size, heads_seq, next_gen;
	struct image *open_images;	/* list, by next */

	/* Serialises chunk puts: lookup, verify-on-match, append, index insert. */
	pthread_mutex_t put_lock;
	struct pack **packs;		/* by id; NULL where none; protected by put_lock */
	uint32_t npacks;		/* array length */
	struct pack *active;
	atomic_bool gc_running;
	atomic_uint_fast64_t wlog_next;	/* write log file numbers: never reused */
	pthread_mutex_t gc_lock;	/* one gc or verify at a time */
	struct pack **zombies;		/* removed packs whose fds stay open until the next gc */
	size_t nzombies;
	void **retired;			/* replaced pack arrays readers may still hold; freed at close */
	size_t nretired;

	struct index index;
	struct uring_pool *rings;	/* store-uring.c */
	struct hdr_cache *hdr_cache;	/* store-hdrcache.c */
	_Atomic uint64_t dirty_bytes;
	uint64_t appended_since_save;	/* bytes added to packs since the index was saved; put_lock */
	_Atomic uint64_t next_epoch;	/* write epochs of images (store-recycle.c) */
	struct recycled *recycled;	/* record places free for reuse; put_lock */
	size_t nrecycled, recycled_head, recycled_cap;

	/* store-flusher.c */
	pthread_t flusher;
	bool flusher_started, flusher_quit, flusher_pending;	/* flusher_lock */
	pthread_mutex_t flusher_lock;
	pthread_cond_t flusher_cond;
};

/* Looks a pack up by id without locking: packs are only added to the array
 * (under put_lock), and removed ones stay as zombies until the next gc. */
struct pack *store_pack(struct store *s, uint32_t id);
/* Replaces DIR_FD/NAME with buf atomically and durably (tmp, fdatasync,
 * rename, fsync of the directory). *fd_out keeps the new file open. */
int file_replace(int dir_fd, const char *name, const void *buf, size_t len, int *fd_out);
/* Keeps an allocation that lock-free readers may still use until close. */
void store_retire(struct store *s, void *p);

/* ---- chunks (store-pack.c) ---- */

/* Stores a chunk (dedup with verify-on-match; all-zero data chunks become
 * holes) and returns its ref. */
int chunk_put(struct store *s, enum rec_type type, const void *buf, uint32_t len, struct ref *out);
/* The same for a data chunk one image's write stores in its epoch OWNER
 * (image.epoch; UNLOGGED for a write-out, which no write log names): a new
 * record stays that image's alone until a dedup hit or the epoch's end, and
 * may be recycled once the image replaces it (chunk_release). */
int chunk_put_owned(struct store *s, const void *buf, uint64_t owner, bool unlogged, struct ref *out);
/* Reads [from, from+len) of a chunk. Holes read as zeroes. */
int chunk_read(struct store *s, const struct ref *r, uint32_t from, uint32_t len, void *buf);
/* Up to CHUNK_READ_BATCH chunk reads at once (one io_uring submission). */
#define CHUNK_READ_BATCH 32
struct chunk_req {
	struct ref r;
	uint32_t from, len;
	void *buf;
};
int chunk_read_many(struct store *s, const struct chunk_req *req, unsigned n);
/* fdatasync every pack written since its last sync. */
int packs_sync(struct store *s);

/* ---- recycling records no flushed tree ever named (store-recycle.c) ---- */

/* A new write epoch: flushed trees never hold chunks stored in it. */
uint64_t epoch_next(struct store *s);
/* The image replaced OLD (n refs) in its epoch OWNER; BY_LOGGED_WRITE when
 * the replacement is in the write log already. Each record that image alone
 * holds, stored in that epoch, and (unless the replacing write is logged)
 * named by no write log, leaves the index and its place is reused. */
void chunk_release(struct store *s, const struct ref *old, size_t n, uint64_t owner, bool by_logged_write);
/* Caller holds put_lock: a place for a new data chunk record, if one is free. */
struct pack *recycled_take(struct store *s, uint64_t *off);
/* gc moves and removes packs: the places kept are forgotten. put_lock held. */
void recycled_forget(struct store *s);
void recycled_free(struct store *s);

/* ---- background flushes (store-flusher.c) ---- */

int flusher_start(struct store *s);
void flusher_stop(struct store *s);
/* Has img flushed soon on the store's flusher thread. */
void flusher_request(struct image *img);

/* ---- map trees (store-map.c) ---- */

struct leaf {
	struct ref refs[NODE_FANOUT];
	uint8_t *dirty[NODE_FANOUT];	/* unflushed chunk bytes, or NULL */
};

struct geometry {
	uint64_t nchunks;
	unsigned depth;			/* 0 for an empty image */
	uint64_t count[MAX_DEPTH + 1];	/* nodes per level; count[0] = chunks */
};
void geometry_for(uint64_t size, uint32_t chunk_size, struct geometry *g);

struct image {
	struct store *s;
	struct image *next;		/* store.open_images; store.lock */
	unsigned opens;			/* store.lock */
	unsigned closing;		/* last closes still flushing; store.lock */
	char name[2 * 128 + 2];

	pthread_rwlock_t lock;		/* everything below */
	pthread_mutex_t load_lock;	/* lazy leaf loads under a read lock */
	pthread_mutex_t flush_lock;	/* one flush of this image at a time */
	uint64_t size;
	bool ro;
	atomic_bool gone;
	struct geometry g;
	struct ref *lv[MAX_DEPTH + 1];	/* lv[k][i]: ref of node i at level k (k >= 1) */
	uint8_t *dirty_lv[MAX_DEPTH + 1];	/* bitmap per level: node needs rewriting */
	struct leaf **leaves;		/* count[1] entries, NULL until loaded */
	uint64_t *dirty_q;		/* chunk indexes with dirty buffers, in order */
	size_t dirty_n, dirty_cap, dirty_head;
	uint64_t dirty_ids, dirty_seq;	/* numbers of dirty buffers and of their changes */
	bool writing_out;		/* a flush reads the bases it copied: nothing is released */
	bool tree_dirty;		/* some node needs writing */
	struct ref flushed_root;
	uint64_t flushed_size;
	_Atomic uint64_t epoch;		/* since the last flush; new at each (epoch_next) */
	atomic_bool flush_wanted;	/* store-flusher.c */

	/* The write log (store-wlog.c): the file being appended, under lock,
	 * and the one before it, read by a flush's write-out until it ends. */
	int wlog_fd, wlog_prev_fd;
	uint64_t wlog_gen, wlog_end;
	unsigned wlog_rotations;
	bool wlog_off;			/* removed or renamed: log nothing more */
	pthread_mutex_t wlog_lock;	/* the list below */
	uint64_t *wlog_files;		/* numbers of the files made, not yet removed */
	size_t wlog_nfiles;
};

/* Loads the upper levels of a tree from root (leaves stay lazy). */
int tree_load(struct image *img, const struct ref *root, uint64_t size);
void tree_free(struct image *img);
struct leaf *tree_leaf(struct image *img, uint64_t leaf_idx, int *err);
void tree_mark_chunk(struct image *img, uint64_t chunk);
/* Writes dirty nodes bottom-up; *root gets the new root. Image write-locked. */
int tree_write(struct image *img, struct ref *root);
int tree_resize(struct image *img, uint64_t new_size);
/* Reads a node chunk into refs[NODE_FANOUT]; checks its level. */
int node_read(struct store *s, const struct ref *r, unsigned level, struct ref *refs);
/* Calls fn for every non-hole ref in the tree, nodes before their children.
 * fn returns 1 to skip a node's children, <0 to stop. A node that cannot be
 * read is passed again with WALK_UNREADABLE or'ed into level. */
#define WALK_UNREADABLE 0x100u
typedef int (*tree_walk_fn)(void *opaque, const struct ref *r, unsigned level, uint64_t first_chunk);
int tree_walk(struct store *s, const struct ref *root, uint64_t size, tree_walk_fn fn, void *opaque);

/* ---- ref sets and maps (store-refmap.c) ---- */

struct refmap {
	struct { struct ref r; uint64_t v; bool used; } *tab;
	uint64_t cap, count;
};
int refmap_init(struct refmap *m);
void refmap_free(struct refmap *m);
/* The value slot for r, inserted as 0 when absent (*added set); NULL on ENOMEM. */
uint64_t *refmap_get(struct refmap *m, const struct ref *r, bool *added);
uint64_t *refmap_find(struct refmap *m, const struct ref *r);

/* ---- images (store-image.c) ---- */
/* Writes dirty chunks and nodes (no sync, no head). Image write-locked. */
int image_prepare_flush(struct image *img, struct ref *root);
/* Opens an image for the engine's own use (resize, clone). */
int image_get(struct store *s, const char *name, bool writable, struct image **out);
/* A logged write or resize applied again (store-wlog.c). */
/* UNRESOLVED: chunk indexes whose logged ref was recycled, awaiting a later
 * whole write of the chunk (store-wlog.c). */
int image_replay_write(struct image *img, const uint8_t *buf, uint64_t off, uint64_t len, const struct ref *pre,
		       uint64_t pre_first, struct refmap *unresolved);
int image_replay_resize(struct image *img, uint64_t size);

/* ---- write log (store-wlog.c) ---- */

/* Larger logged writes than any client sends are taken as damage. */
#define WLOG_MAX_DATA (64u << 20)
int wlog_init(struct store *s);
void wlog_image_init(struct image *img);
void wlog_image_free(struct image *img);
/* Image write-locked; buf NULL for zeroes; pre as for write_range.
 * *data_at: where the record's data starts in file wlog_gen, 0 if not logged. */
int wlog_write(struct image *img, const uint8_t *buf, uint64_t off, uint64_t len, const struct ref *pre,
	       uint64_t pre_first, uint64_t *data_at);
int wlog_resize(struct image *img, uint64_t size);
/* Image write-locked: later records go to a new file, the current one is
 * kept open as the one before; returns its number. */
uint64_t wlog_rotate(struct image *img);
/* Dirty buffers name a log file by one bit: the current one or the one
 * before. Image locked. */
unsigned wlog_tag(const struct image *img);
/* Image locked: the file of that tag, or -1 if it is closed. */
int wlog_fd_of(const struct image *img, unsigned tag);
/* Image write-locked: no dirty buffer names the file before any more. */
void wlog_close_prev(struct image *img);
/* The files up to UPTO are in the committed head: removed. */
void wlog_drop(struct image *img, uint64_t upto);
/* The image stops serving: its log is void. Takes the image's locks. */
void wlog_forget(struct image *img);
/* At store open, after the heads: what unclean stops left. */
int wlog_replay(struct store *s);

#endif

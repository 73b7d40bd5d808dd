/*
 * hutch-fuse internals, one section per file. The threading model and
 * lock order are in docs/hutch-fuse.md; in short: FUSE worker threads
 * call the ops concurrently; fs.lock (fuse-node.c) guards the node table
 * and every node's name; each pool has its own lock (fuse-pool.c); a
 * node's grow_lock serialises resizes of one image. Order:
 * node->grow_lock, then fs.lock, then pool->lock. No lock is held across
 * a network round trip except grow_lock.
 */
#ifndef HUTCH_FUSE_INTERNAL_H
#define HUTCH_FUSE_INTERNAL_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>
#include <libnbd.h>

#include "util.h"

#define REF_MAX (2 * HUTCH_NAME_MAX + 2)
#define FUSE_MAX_WRITE (1u << 20)
#define SNAPDIR_SUFFIX ".snap"

/* ---- fuse-main.c ----------------------------------------------------- */
struct fs_config {
	char home[4096];
	char mountpoint[4096];
	char nbd_socket[4096];
	char control_socket[4096];
	unsigned connections;		/* NBD connections per image, at most */
	double attr_timeout;		/* seconds the kernel may cache names and sizes */
	uid_t uid;
	gid_t gid;
};
extern struct fs_config fs_cfg;

/* ---- fuse-ctl.c: control socket client (docs/control.md) ------------- */
/* Sends REQ (consumed) and waits for the final reply. Returns 0 and sets
 * *reply on {"ok":true}; a negative errno from the reply's "errno"
 * otherwise (-EIO when storaged cannot be reached). */
int fctl_call(json_object *req, json_object **reply);
/* Convenience: {"op":OP, k1:v1, ...} built by the caller. */
json_object *fctl_req(const char *op);

struct fctl_image {
	uint64_t size;
	uint64_t created;
	bool readonly;
};
int fctl_image_info(const char *ref, struct fctl_image *out);
int fctl_image_create(const char *name, uint64_t size);
int fctl_image_rm(const char *ref);
int fctl_image_rename(const char *old_name, const char *new_name);
int fctl_image_resize(const char *name, uint64_t size);
int fctl_image_snapshot(const char *name, const char *snap);
int fctl_image_clone_range(const char *src, uint64_t src_off, const char *dst,
			  uint64_t dst_off, uint64_t len);
/* Every head name, sorted (NAME and NAME@SNAP). Caller frees with names_free. */
int fctl_image_names(char ***names, size_t *n);
void names_free(char **names, size_t n);
/* Chunk size of the store, cached after the first success. */
int fctl_chunk_size(uint32_t *out);

/* ---- fuse-pool.c: per-image NBD connection pool ---------------------- */
struct pool;
struct conn {
	struct nbd_handle *h;
	uint64_t gen;
};
struct pool *pool_new(const char *export_name);
void pool_free(struct pool *p);
/* Borrow a connected handle (connecting if none is idle and the pool is
 * below its limit; else waits). -EIO if storaged cannot be reached,
 * -ENOENT if the export does not exist, -ENOMEM for a NULL pool (so
 * callers may pass node_pool() straight in). */
int pool_get(struct pool *p, struct conn *c);
/* Give it back; a handle that died (server gone) or is of an older
 * generation is closed instead of kept. */
void pool_put(struct pool *p, struct conn *c);
/* Rename the export and/or drop every connection (after a resize the
 * handshake size is stale). Borrowed handles are closed when put back. */
void pool_reset(struct pool *p, const char *new_export);
/* The image is gone: every later pool_get fails with -ESTALE. */
void pool_kill(struct pool *p);
/* Map the last libnbd error of this thread to a negative errno. */
int pool_errno(void);

/* ---- fuse-node.c: the inode table ------------------------------------ */
enum node_kind { NODE_ROOT, NODE_IMAGES, NODE_IMAGE, NODE_SNAPDIR, NODE_SNAP };

struct node {
	fuse_ino_t ino;
	enum node_kind kind;
	char ref[REF_MAX];		/* NAME, NAME@SNAP; snapdir: NAME. protected by fs.lock */
	bool dead;			/* removed through the mount; protected by fs.lock */
	bool pending;			/* created, still 0 bytes: not in the store yet
					 * (an image has at least one byte); protected by fs.lock */
	struct pool *pool;		/* images and snapshots; created lazily */
	pthread_mutex_t grow_lock;	/* serialises resizes of this image */
	uint64_t size;			/* last size seen or set here; protected by grow_lock */
	bool size_known;		/* protected by grow_lock */
};

#define INO_ROOT FUSE_ROOT_ID
#define INO_IMAGES 2

void node_table_init(void);
void node_table_free(void);
/* The node for (kind, ref), made if new. Never NULL except on ENOMEM. */
struct node *node_get(enum node_kind kind, const char *ref);
struct node *node_by_ino(fuse_ino_t ino);
/* Copy the node's current ref (it changes on rename). */
void node_ref(struct node *n, char *buf, size_t sz);
struct pool *node_pool(struct node *n);
/* After a rename of image OLD to NEW: move the image, its .snap folder and
 * its snapshots, and point their pools at the new export names. */
void node_rename_image(const char *old_name, const char *new_name);
/* After a remove: forget the names so a new image of that name gets a new inode. */
void node_forget_ref(enum node_kind kind, const char *ref);
void node_forget_image(const char *name);
bool node_is_pending(struct node *n);
void node_set_pending(struct node *n, bool pending);
/* The pending image NAME, or NULL. */
struct node *node_find_pending(const char *name);
/* Names of pending images, for readdir. Caller frees with names_free. */
int node_pending_names(char ***names, size_t *n);
/* Make a pending image real with WANT bytes, or grow a real one to at
 * least WANT, and drop connections whose handshake size is stale. With
 * TRUST the size remembered from the last resize made here is believed
 * (copy_file_range, which would otherwise reconnect on every extent);
 * without, the size is asked afresh. *size_out (may be NULL) is the size after. */
int node_grow(struct node *n, uint64_t want, bool trust, uint64_t *size_out);
/* Forget the remembered size (after a resize made elsewhere shows up). */
void node_forget_size(struct node *n);

/* ---- fuse-attr.c: attributes ----------------------------------------- */
/* Fill st for node N (asks storaged for images and snapshots). */
int node_stat(struct node *n, struct stat *st);
/* The same with the image.info reply already at hand (KNOWN may be NULL). */
int node_stat_with(struct node *n, const struct fctl_image *known, struct stat *st);
void reply_entry_with(fuse_req_t req, struct node *n, const struct fctl_image *known);
/* Allocated bytes from NBD block status (base:allocation). */
int node_allocated(struct node *n, uint64_t size, uint64_t *out);
void reply_entry(fuse_req_t req, struct node *n);

/* ---- fuse-file.c: data operations and their helpers ------------------ */
struct fhandle {
	struct node *n;
	struct fhandle *prev, *next;	/* protected by fh_lock (fuse-file.c) */
};
/* A buffer of at least SIZE bytes owned by the calling thread. */
char *thread_buf(size_t size);
bool is_zero(const char *p, size_t len);
/* Size from a pooled connection's handshake (0 for a pending image). */
int node_size_nbd(struct node *n, uint64_t *size);
/* Write LEN bytes at OFF (BUF NULL: zeroes), growing the image if needed. */
int write_range(struct node *n, const void *buf, uint64_t len, uint64_t off);

/* ---- fuse-copy.c ------------------------------------------------------ */
void fs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			struct fuse_file_info *fi_out, size_t len, int flags);

/* ---- fuse-dir.c / fuse-file.c: the operations ------------------------ */
void fs_dir_ops(struct fuse_lowlevel_ops *ops);
void fs_file_ops(struct fuse_lowlevel_ops *ops);
/* Frees the handles still open at exit. */
void fs_file_cleanup(void);

/* Create image NAME (size 0) under PARENT; the errno rules of docs/hutch-fuse.md. */
int dir_create_image(fuse_ino_t parent, const char *name, mode_t mode, struct node **out);

/* Split "NAME.snap" into NAME; false if the suffix is missing. */
bool snapdir_name(const char *entry, char *name, size_t sz);

#endif

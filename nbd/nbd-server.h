/*
 * An NBD server library that knows nothing of the store: the server calls
 * a backend through the table of operations below (in the manner of
 * nbdkit's plugins). Protocol coverage, threading model and lock order are
 * in docs/nbd.md.
 *
 * Backend calls are made from the server's worker threads, synchronously,
 * possibly from several workers at once (on different handles or the same
 * export opened twice); a backend must be thread-safe across handles.
 * Errors are negative errno values; the server maps them to NBD errors.
 */
#ifndef HUTCH_NBD_SERVER_H
#define HUTCH_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define NBD_DEFAULT_MAX_REQUEST (32u * 1024 * 1024)
#define NBD_DEFAULT_MAX_INFLIGHT 64u
#define NBD_MAX_WORKERS 64u

/* What an opened export is and can do; filled by the backend's open. */
struct nbd_export_info {
	uint64_t size;
	bool readonly;
	bool can_flush, can_fua, can_trim, can_zero, can_fast_zero;
	bool can_cache, can_extents, can_multi_conn;
	uint32_t pref_block;		/* preferred I/O size; 0 = 4096 */
	char description[256];		/* may be "" */
};

#define NBD_BE_FUA	 (1u << 0)	/* durable before the call returns */
#define NBD_BE_FAST_ZERO (1u << 1)	/* fail with -ENOTSUP rather than be slow */

typedef int (*nbd_list_fn)(void *ctx, const char *name, const char *description);
/* One extent of [off, off+len); flags are NBD_STATE_HOLE|NBD_STATE_ZERO.
 * Return non-zero to stop. */
typedef int (*nbd_extent_fn)(void *ctx, uint64_t off, uint64_t len, uint32_t flags);

struct nbd_backend {
	void *opaque;
	/* Open export NAME for a client whose credentials are PEER (a unix
	 * socket peer; uid/gid -1 for TCP). -ENOENT: no such export;
	 * -EACCES: not for this peer. */
	int (*open)(void *opaque, const char *name, const struct ucred *peer,
		    void **handle, struct nbd_export_info *info);
	void (*close)(void *handle);
	/* Calls fn once per export the peer may see. */
	int (*list)(void *opaque, const struct ucred *peer, nbd_list_fn fn, void *ctx);

	int (*pread)(void *handle, void *buf, uint32_t len, uint64_t off);
	int (*pwrite)(void *handle, const void *buf, uint32_t len, uint64_t off, unsigned flags);
	int (*zero)(void *handle, uint32_t len, uint64_t off, unsigned flags);
	int (*trim)(void *handle, uint32_t len, uint64_t off, unsigned flags);
	int (*flush)(void *handle);
	/* Calls fn for consecutive extents starting at off; may stop early
	 * (the server asks again) and may go past off+len (the server clips). */
	int (*extents)(void *handle, uint32_t len, uint64_t off, nbd_extent_fn fn, void *ctx);
	/* Optional: prefetch. NULL means CACHE succeeds doing nothing. */
	int (*cache)(void *handle, uint32_t len, uint64_t off);
};

struct nbd_server_config {
	char unix_path[108];		/* "" = no unix socket */
	char tcp_listen[256];		/* "" = no TCP; "ADDR:PORT", "[V6]:PORT" or "PORT" (loopback) */
	unsigned workers;		/* 0 = one per CPU */
	uint32_t max_request;		/* bytes of payload in one request */
	unsigned max_inflight;		/* replies queued per connection before we stop reading */
	uint32_t inline_max;		/* smaller data requests are not handed to executors */
	uint32_t send_buffer;		/* SO_SNDBUF of unix connections; 0 = the kernel's */
};
void nbd_server_config_default(struct nbd_server_config *c);

struct nbd_server;

/* Binds the sockets and starts the workers. The backend table must
 * outlive the server. */
int nbd_server_start(const struct nbd_server_config *cfg, const struct nbd_backend *be,
		     struct nbd_server **out);
/* Stops accepting, lets the requests being executed finish, closes every
 * connection (and backend handle), joins the workers. NULL is fine. */
void nbd_server_stop(struct nbd_server *srv);

struct nbd_server_stats {
	uint64_t accepted, active, dropped;	/* dropped: for protocol violations */
	uint64_t requests;
};
void nbd_server_get_stats(struct nbd_server *srv, struct nbd_server_stats *out);

#endif

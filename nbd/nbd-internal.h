/* Private to nbd/: the protocol engine shared by the event loop and the fuzz target. */
#ifndef HUTCH_NBD_INTERNAL_H
#define HUTCH_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "nbd-server.h"

/* Largest option payload we accept; the spec caps strings at 4096 bytes. */
#define NBD_MAX_OPTION 65536u
/* Receive buffer for headers and small payloads. */
#define NBD_INBUF_SIZE (128u * 1024)
/* Descriptors in one BLOCK_STATUS reply. */
#define NBD_MAX_EXTENTS 2048u
#define NBD_META_BASE_ALLOCATION 1u	/* our context id */
/* Longest silence allowed from a client before it has chosen an export. */
#define NBD_HANDSHAKE_TIMEOUT_S 30

/* ---- nbd-conn.c: one connection's protocol state, without I/O ----
 * The event loop (or the fuzzer) asks where to put received bytes,
 * reports how many arrived, and drains the queued output. */

enum nbd_conn_state {
	NBD_ST_CLIENT_FLAGS,	/* waiting for the client's 32-bit flags */
	NBD_ST_OPTIONS,		/* option haggling */
	NBD_ST_TRANSMISSION,	/* request headers */
	NBD_ST_PAYLOAD,		/* a WRITE's data, straight into its buffer */
	NBD_ST_CLOSING,		/* send what is queued, then close */
	NBD_ST_DEAD,		/* close now */
};

struct nbd_out {
	struct nbd_out *next;
	uint32_t hdr_len;
	uint8_t hdr[32];
	uint8_t *data;		/* owned; freed with nbd_buf_put */
	size_t data_len;
};

struct nbd_request {
	uint16_t flags, type;
	uint64_t cookie, offset;
	uint32_t len;
};

/* A request that calls the backend, possibly on an executor thread. */
struct nbd_job {
	struct nbd_job *next;
	struct nbd_conn *c;
	void *owner;		/* the event loop's connection */
	struct nbd_request req;
	uint8_t *payload;	/* WRITE data (owned) */
	struct nbd_out *o;	/* READ / BLOCK_STATUS reply being filled */
	int err;
	bool submitted;		/* went to an executor: counted in c->inflight */
	size_t bytes;		/* counted in c->job_bytes */
};

/* A worker's spare data buffers (nbd-buf.c). */
#define NBD_POOL_BUFS 32
#define NBD_POOL_BYTES (32u * 1024 * 1024)
struct nbd_buf_pool {
	void *buf[NBD_POOL_BUFS];
	unsigned n;
	size_t bytes;		/* at most NBD_POOL_BYTES */
};

struct nbd_conn {
	const struct nbd_backend *be;
	uint32_t max_request;
	unsigned max_inflight;
	uint32_t inline_max;	/* data requests this small run on the worker */
	struct ucred peer;
	enum nbd_conn_state state;
	const char *why;	/* why the connection is dead or closing */

	/* negotiation */
	bool no_zeroes, structured, meta_alloc;
	char *meta_export;	/* export the meta context was set for */
	void *handle;		/* backend handle once an export is open */
	struct nbd_export_info info;
	uint16_t tflags;	/* transmission flags sent */

	/* input */
	uint8_t *in;
	size_t in_len;
	struct nbd_request wreq;	/* the WRITE whose payload is arriving */
	uint8_t *payload;
	uint32_t payload_got;
	int wreq_err;		/* validation result, applied once the payload is in */

	/* output */
	struct nbd_out *out_head, *out_tail;
	size_t out_sent;	/* bytes of out_head already sent */
	unsigned out_count;
	size_t out_bytes;

	struct nbd_buf_pool *pool;	/* the worker's; NULL: plain malloc (the fuzzer) */

	uint64_t requests;

	/* jobs parsed in this batch, and jobs out on executors */
	struct nbd_job *batch, *batch_tail;
	unsigned nbatch;
	unsigned inflight;
	size_t job_bytes;	/* data buffers held by batched and outstanding jobs */
	/* NULL: run every job inline (the fuzzer) */
	void (*submit)(void *opaque, struct nbd_job *j);
	void *submit_opaque;
	/* Called with submit_opaque: true when the client has sent bytes not
	 * yet read. NULL: unknown, taken as no. */
	bool (*peer_sending)(void *opaque);
};

struct nbd_conn *nbd_conn_new(const struct nbd_backend *be, uint32_t max_request,
			      unsigned max_inflight, const struct ucred *peer);
void nbd_conn_free(struct nbd_conn *c);
/* Where the next received bytes go. len 0: do not receive now. */
void nbd_conn_recv_buf(struct nbd_conn *c, void **buf, size_t *len);
/* n bytes arrived at the place recv_buf gave; parses and executes. */
void nbd_conn_received(struct nbd_conn *c, size_t n);
/* Executes requests already buffered (after back-pressure eased). */
void nbd_conn_process(struct nbd_conn *c);
bool nbd_conn_want_recv(const struct nbd_conn *c);
/* True when the fd should be closed now (dead, or closing with nothing left to send). */
bool nbd_conn_finished(const struct nbd_conn *c);
int nbd_conn_out_iov(struct nbd_conn *c, struct iovec *iov, int max);
void nbd_conn_sent(struct nbd_conn *c, size_t n);
static inline bool nbd_conn_has_output(const struct nbd_conn *c) { return c->out_head != NULL; }

/* internal to the engine */
void nbd_conn_drop(struct nbd_conn *c, const char *why);
void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o);
struct nbd_out *nbd_out_new(struct nbd_conn *c, size_t data_len);
void *nbd_buf_get(struct nbd_conn *c, size_t len);
void nbd_buf_put(struct nbd_conn *c, void *p);
void nbd_buf_pool_free(struct nbd_buf_pool *p);

/* big-endian helpers */
static inline void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static inline void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, v); }
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static inline uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

/* ---- nbd-handshake.c ---- */
void nbd_handshake_greet(struct nbd_conn *c);
/* Consumes one client-flags word or one option from buf; returns bytes
 * consumed, or 0 when more bytes are needed. */
size_t nbd_handshake_step(struct nbd_conn *c, const uint8_t *buf, size_t len);

/* ---- nbd-request.c ---- */
/* Consumes one request (header, and payload when it is in buf); returns
 * bytes consumed, or 0 when more bytes are needed. */
size_t nbd_request_step(struct nbd_conn *c, const uint8_t *buf, size_t len);
/* The payload of c->wreq has fully arrived in c->payload. */
void nbd_request_payload_done(struct nbd_conn *c);
int nbd_errno(int err);
void nbd_job_run(struct nbd_job *j);
void nbd_job_done(struct nbd_job *j);
void nbd_conn_flush_batch(struct nbd_conn *c);

/* ---- nbd-server.c / nbd-loop.c: sockets, workers, io_uring ---- */
#include <pthread.h>
#include <liburing.h>

struct nbd_server;

struct nbd_lconn {
	struct nbd_lconn *next, *prev;
	struct nbd_worker *w;
	struct nbd_conn *c;
	int fd;
	bool recv_pending, send_pending, cancel_sent;
	struct msghdr msg;
	struct iovec iov[64];
};

struct nbd_worker {
	struct nbd_server *srv;
	unsigned index;
	pthread_t thread;
	struct io_uring ring;
	int efd;			/* wakes the worker: new fds or stop */
	uint64_t efd_val;
	pthread_mutex_t lock;
	int *pending_fds;		/* protected by lock */
	size_t npending, cap_pending;	/* protected by lock */
	struct nbd_job *done;		/* protected by lock: jobs back from executors */
	struct nbd_lconn *conns;	/* owned by the worker thread */
	struct nbd_buf_pool pool;	/* its connections' spare buffers */
	unsigned nconns;
	unsigned accepts_pending;
	bool stopping;
};

struct nbd_server {
	struct nbd_server_config cfg;
	const struct nbd_backend *be;
	int listen_fd[2];
	bool listen_tcp[2];
	unsigned nlisten;
	unsigned nworkers;
	struct nbd_worker *workers;
	unsigned next_worker;		/* round-robin; only worker 0 accepts */
	bool warned_send_buffer;	/* the kernel capped SO_SNDBUF: said once */
	bool stopping;			/* atomic */
	uint64_t accepted, dropped, requests, active;	/* atomic */

	/* executors: run backend calls of queued jobs */
	pthread_mutex_t jlock;
	pthread_cond_t jcond;
	struct nbd_job *jhead, *jtail;	/* protected by jlock */
	bool jstop;			/* protected by jlock */
	pthread_t *executors;
	unsigned nexecutors;
};

void *nbd_worker_main(void *arg);
/* Hands a connected socket to worker w (any thread). */
void nbd_worker_give(struct nbd_worker *w, int fd);
void nbd_worker_wake(struct nbd_worker *w);
void *nbd_executor_main(void *arg);

#endif

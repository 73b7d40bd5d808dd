/*
 * The event loop: one io_uring per worker thread. Every socket operation
 * (accept, recv, sendmsg) goes through the ring; backend calls run
 * synchronously on the worker between ring waits. A connection belongs to
 * one worker for its whole life, so its state needs no lock. Worker 0
 * accepts and deals connections round-robin; the others learn of theirs
 * through a locked queue and an eventfd read kept pending in their ring.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "nbd-internal.h"

enum {
	TAG_RECV, TAG_SEND, TAG_ACCEPT0, TAG_ACCEPT1, TAG_EVENT, TAG_CANCEL,
	TAG_MASK = 7,
};

static struct io_uring_sqe *get_sqe(struct nbd_worker *w)
{
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&w->ring)))
		io_uring_submit(&w->ring);
	return sqe;
}

static void arm_accept(struct nbd_worker *w, unsigned i)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_accept(sqe, w->srv->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, (uintptr_t)w | (TAG_ACCEPT0 + i));
	w->accepts_pending++;
}

static void arm_event(struct nbd_worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
	io_uring_sqe_set_data64(sqe, (uintptr_t)w | TAG_EVENT);
}

void nbd_worker_wake(struct nbd_worker *w)
{
	uint64_t one = 1;
	if (write(w->efd, &one, sizeof(one)) < 0)
		log_debug("nbd: waking worker %u: %m", w->index);
}

void nbd_worker_give(struct nbd_worker *w, int fd)
{
	pthread_mutex_lock(&w->lock);
	if (w->npending == w->cap_pending) {
		size_t cap = w->cap_pending ? 2 * w->cap_pending : 16;
		int *p = realloc(w->pending_fds, cap * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&w->lock);
			close(fd);
			return;
		}
		w->pending_fds = p;
		w->cap_pending = cap;
	}
	w->pending_fds[w->npending++] = fd;
	pthread_mutex_unlock(&w->lock);
	nbd_worker_wake(w);
}

/* Called by the engine, on the connection's worker: hand a job to the executors. */
static void submit_job(void *opaque, struct nbd_job *j)
{
	struct nbd_lconn *lc = opaque;
	struct nbd_server *srv = lc->w->srv;

	j->owner = lc;
	j->next = NULL;
	pthread_mutex_lock(&srv->jlock);
	if (srv->jtail)
		srv->jtail->next = j;
	else
		srv->jhead = j;
	srv->jtail = j;
	pthread_cond_signal(&srv->jcond);
	pthread_mutex_unlock(&srv->jlock);
}

/* An executor: runs jobs' backend calls and gives each back to the worker that owns its connection. */
void *nbd_executor_main(void *arg)
{
	struct nbd_server *srv = arg;

	pthread_mutex_lock(&srv->jlock);
	for (;;) {
		while (!srv->jhead && !srv->jstop)
			pthread_cond_wait(&srv->jcond, &srv->jlock);
		if (!srv->jhead)
			break;
		struct nbd_job *j = srv->jhead;
		srv->jhead = j->next;
		if (!srv->jhead)
			srv->jtail = NULL;
		pthread_mutex_unlock(&srv->jlock);

		nbd_job_run(j);
		struct nbd_worker *w = ((struct nbd_lconn *)j->owner)->w;
		pthread_mutex_lock(&w->lock);
		bool was_empty = !w->done;
		j->next = w->done;
		w->done = j;
		pthread_mutex_unlock(&w->lock);
		if (was_empty)
			nbd_worker_wake(w);

		pthread_mutex_lock(&srv->jlock);
	}
	pthread_mutex_unlock(&srv->jlock);
	return NULL;
}

static bool peer_sending(void *opaque)
{
	struct nbd_lconn *lc = opaque;
	int n = 0;

	return ioctl(lc->fd, FIONREAD, &n) == 0 && n > 0;
}

static void free_conn(struct nbd_lconn *lc)
{
	struct nbd_worker *w = lc->w;
	struct nbd_server *srv = w->srv;
	struct nbd_conn *c = lc->c;

	if (c->state == NBD_ST_DEAD && c->why) {
		__atomic_fetch_add(&srv->dropped, 1, __ATOMIC_RELAXED);
		log_debug("nbd: dropped client pid %d: %s", (int)c->peer.pid, c->why);
	}
	__atomic_fetch_add(&srv->requests, c->requests, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&srv->active, 1, __ATOMIC_RELAXED);
	close(lc->fd);
	nbd_conn_free(c);
	if (lc->prev)
		lc->prev->next = lc->next;
	else
		w->conns = lc->next;
	if (lc->next)
		lc->next->prev = lc->prev;
	w->nconns--;
	free(lc);
}

/* Frees the connection once the ring holds no operation on it. */
static void close_conn(struct nbd_lconn *lc)
{
	if (!lc->recv_pending && !lc->send_pending && !lc->c->inflight) {
		free_conn(lc);
		return;
	}
	if (lc->cancel_sent || (!lc->recv_pending && !lc->send_pending))
		return;	/* jobs still out: their return calls us again */
	shutdown(lc->fd, SHUT_RDWR);
	struct io_uring_sqe *sqe = get_sqe(lc->w);
	io_uring_prep_cancel_fd(sqe, lc->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, TAG_CANCEL);
	lc->cancel_sent = true;
}

/* Issues whatever the connection's state calls for next. */
static void kick(struct nbd_lconn *lc)
{
	struct nbd_conn *c = lc->c;

	if (nbd_conn_finished(c) || lc->w->stopping) {
		close_conn(lc);
		return;
	}
	if (nbd_conn_has_output(c) && !lc->send_pending) {
		int n = nbd_conn_out_iov(c, lc->iov, ARRAY_SIZE(lc->iov));
		lc->msg = (struct msghdr){ .msg_iov = lc->iov, .msg_iovlen = n };
		struct io_uring_sqe *sqe = get_sqe(lc->w);
		io_uring_prep_sendmsg(sqe, lc->fd, &lc->msg, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, (uintptr_t)lc | TAG_SEND);
		lc->send_pending = true;
	}
	if (!lc->recv_pending) {
		void *buf;
		size_t len;
		nbd_conn_recv_buf(c, &buf, &len);
		if (len) {
			/* A client silent that long mid-handshake is dropped: idle
			 * half-open connections would otherwise pin descriptors. */
			static struct __kernel_timespec handshake_timeout = {
				.tv_sec = NBD_HANDSHAKE_TIMEOUT_S };
			bool handshake = c->state == NBD_ST_CLIENT_FLAGS || c->state == NBD_ST_OPTIONS;
			struct io_uring_sqe *sqe;
			/* the recv and its linked timeout must be adjacent in the ring */
			if (handshake && io_uring_sq_space_left(&lc->w->ring) < 2)
				io_uring_submit(&lc->w->ring);
			sqe = get_sqe(lc->w);
			/* A payload is wanted whole: let the kernel gather it. */
			io_uring_prep_recv(sqe, lc->fd, buf, len,
					   c->state == NBD_ST_PAYLOAD ? MSG_WAITALL : 0);
			io_uring_sqe_set_data64(sqe, (uintptr_t)lc | TAG_RECV);
			if (handshake) {
				io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
				sqe = get_sqe(lc->w);
				io_uring_prep_link_timeout(sqe, &handshake_timeout, 0);
				io_uring_sqe_set_data64(sqe, TAG_CANCEL);
			}
			lc->recv_pending = true;
		}
	}
}

/*
 * A unix socket's send buffer is what a reply can put in flight before the
 * worker has to wait for the client to read: with the default (208 KiB) a
 * 1 MiB read goes out in five sends, each waiting on a wake-up of the
 * client and then of the worker. The kernel caps it at net.core.wmem_max.
 */
static void set_send_buffer(struct nbd_server *srv, int fd)
{
	int want = (int)srv->cfg.send_buffer, got = 0;	/* at most 64 MiB: the config checks */
	socklen_t gl = sizeof(got);

	if (want == 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want)) < 0)
		return;
	/* Linux reports twice what it grants (the other half is its bookkeeping). */
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &gl) == 0 && got / 2 < want &&
	    !__atomic_exchange_n(&srv->warned_send_buffer, true, __ATOMIC_RELAXED))
		log_warn("nbd: send buffer %d KiB instead of [nbd] send_buffer %d KiB: the kernel caps it at "
			 "net.core.wmem_max; large reads take more round trips (raise it with sysctl)",
			 got / 2 / 1024, want / 1024);
}

static void adopt(struct nbd_worker *w, int fd)
{
	struct nbd_server *srv = w->srv;
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t cl = sizeof(cred);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
			cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		set_send_buffer(srv, fd);
	}

	struct nbd_lconn *lc = calloc(1, sizeof(*lc));
	if (!lc) {
		close(fd);
		return;
	}
	lc->c = nbd_conn_new(srv->be, srv->cfg.max_request, srv->cfg.max_inflight, &cred);
	if (!lc->c) {
		free(lc);
		close(fd);
		return;
	}
	lc->w = w;
	lc->fd = fd;
	lc->c->pool = &w->pool;
	if (srv->nexecutors) {
		lc->c->submit = submit_job;
		lc->c->submit_opaque = lc;
		lc->c->peer_sending = peer_sending;
		lc->c->inline_max = srv->cfg.inline_max;
	}
	lc->next = w->conns;
	if (w->conns)
		w->conns->prev = lc;
	w->conns = lc;
	w->nconns++;
	__atomic_fetch_add(&srv->accepted, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&srv->active, 1, __ATOMIC_RELAXED);
	kick(lc);
}

static void begin_stop(struct nbd_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	if (w->accepts_pending) {
		for (unsigned i = 0; i < w->srv->nlisten; i++) {
			struct io_uring_sqe *sqe = get_sqe(w);
			io_uring_prep_cancel64(sqe, (uintptr_t)w | (TAG_ACCEPT0 + i), 0);
			io_uring_sqe_set_data64(sqe, TAG_CANCEL);
		}
	}
	for (struct nbd_lconn *lc = w->conns, *next; lc; lc = next) {
		next = lc->next;
		nbd_conn_drop(lc->c, NULL);
		close_conn(lc);
	}
}

static void on_accept(struct nbd_worker *w, unsigned i, int res)
{
	struct nbd_server *srv = w->srv;

	w->accepts_pending--;
	if (res >= 0) {
		if (w->stopping) {
			close(res);
			return;
		}
		struct nbd_worker *t = &srv->workers[srv->next_worker++ % srv->nworkers];
		if (t == w)
			adopt(w, res);
		else
			nbd_worker_give(t, res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		/* Out of descriptors: back off a little rather than spin. */
		log_debug("nbd: accept: %s", strerror(-res));
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	if (!w->stopping && res != -ECANCELED)
		arm_accept(w, i);
}

static void on_event(struct nbd_worker *w, int res)
{
	pthread_mutex_lock(&w->lock);
	int *fds = w->pending_fds;
	size_t n = w->npending;
	w->pending_fds = NULL;
	w->npending = w->cap_pending = 0;
	struct nbd_job *done = w->done;
	w->done = NULL;
	pthread_mutex_unlock(&w->lock);

	/* Replies of finished jobs, oldest first. A connection is freed only
	 * once none of its jobs is out, so a later job's owner is still alive. */
	struct nbd_job *rev = NULL;
	while (done) {
		struct nbd_job *j = done;
		done = j->next;
		j->next = rev;
		rev = j;
	}
	while (rev) {
		struct nbd_job *j = rev;
		rev = j->next;
		struct nbd_lconn *lc = j->owner;
		nbd_job_done(j);
		if (!nbd_conn_finished(lc->c) && !w->stopping)
			nbd_conn_process(lc->c);	/* requests held back by back-pressure */
		kick(lc);
	}

	bool stop = __atomic_load_n(&w->srv->stopping, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n; i++) {
		if (stop)
			close(fds[i]);
		else
			adopt(w, fds[i]);
	}
	free(fds);
	if (stop)
		begin_stop(w);
	/* kept armed while stopping too: jobs still out come back through it */
	arm_event(w);
}

static void on_cqe(struct nbd_worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned tag = ud & TAG_MASK;
	struct nbd_lconn *lc = (struct nbd_lconn *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
	int res = cqe->res;

	switch (tag) {
	case TAG_RECV:
		lc->recv_pending = false;
		if (nbd_conn_finished(lc->c) || w->stopping)
			break;
		if (res <= 0)
			nbd_conn_drop(lc->c, NULL);	/* hung up, or the socket failed */
		else
			nbd_conn_received(lc->c, (size_t)res);
		break;
	case TAG_SEND:
		lc->send_pending = false;
		if (nbd_conn_finished(lc->c) || w->stopping)
			break;
		if (res < 0) {
			nbd_conn_drop(lc->c, NULL);
		} else {
			nbd_conn_sent(lc->c, (size_t)res);
			nbd_conn_process(lc->c);	/* requests held back by back-pressure */
		}
		break;
	case TAG_ACCEPT0:
	case TAG_ACCEPT1:
		on_accept(w, tag - TAG_ACCEPT0, res);
		return;
	case TAG_EVENT:
		on_event(w, res);
		return;
	default:
		return;
	}
	kick(lc);
}

void *nbd_worker_main(void *arg)
{
	struct nbd_worker *w = arg;

	if (w->index == 0)
		for (unsigned i = 0; i < w->srv->nlisten; i++)
			arm_accept(w, i);
	arm_event(w);

	while (!w->stopping || w->nconns || w->accepts_pending) {
		int r = io_uring_submit_and_wait(&w->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			log_error("nbd: worker %u: io_uring: %s", w->index, strerror(-r));
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			on_cqe(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
	}
	return NULL;
}

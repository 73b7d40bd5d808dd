/* Server lifecycle: listening sockets, worker threads, start and stop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "nbd-internal.h"

void nbd_server_config_default(struct nbd_server_config *c)
{
	memset(c, 0, sizeof(*c));
	c->max_request = NBD_DEFAULT_MAX_REQUEST;
	c->max_inflight = NBD_DEFAULT_MAX_INFLIGHT;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);

	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	/* A socket left by a previous run; the store lock already guarantees we are alone. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	chmod(path, 0660);
	if (listen(fd, 128) < 0)
		return -errno;
	return TAKE_FD(fd);
}

/* "PORT" (loopback), "ADDR:PORT" or "[V6ADDR]:PORT". */
static int listen_tcp(const char *spec)
{
	char host[256] = "127.0.0.1";
	const char *port = spec;
	const char *colon = strrchr(spec, ':');

	if (colon) {
		size_t hl = (size_t)(colon - spec);
		const char *h = spec;
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl == 0 || hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, h, hl);
		host[hl] = 0;
		port = colon + 1;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
	struct addrinfo *ai;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EINVAL;
	_cleanup_close_ int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	int r = 0;
	if (fd < 0)
		r = -errno;
	else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		 bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
		r = -errno;
	freeaddrinfo(ai);
	return r < 0 ? r : TAKE_FD(fd);
}

static void stop_executors(struct nbd_server *srv)
{
	pthread_mutex_lock(&srv->jlock);
	srv->jstop = true;
	pthread_cond_broadcast(&srv->jcond);
	pthread_mutex_unlock(&srv->jlock);
	for (unsigned i = 0; i < srv->nexecutors; i++)
		pthread_join(srv->executors[i], NULL);
	srv->nexecutors = 0;
}

static void server_free(struct nbd_server *srv)
{
	stop_executors(srv);
	free(srv->executors);
	pthread_mutex_destroy(&srv->jlock);
	pthread_cond_destroy(&srv->jcond);
	for (unsigned i = 0; i < srv->nworkers; i++) {
		struct nbd_worker *w = &srv->workers[i];
		io_uring_queue_exit(&w->ring);
		close(w->efd);
		pthread_mutex_destroy(&w->lock);
		for (size_t j = 0; j < w->npending; j++)
			close(w->pending_fds[j]);
		free(w->pending_fds);
		nbd_buf_pool_free(&w->pool);
	}
	for (unsigned i = 0; i < srv->nlisten; i++)
		close(srv->listen_fd[i]);
	if (srv->cfg.unix_path[0] && srv->nlisten)
		unlink(srv->cfg.unix_path);
	free(srv->workers);
	free(srv);
}

int nbd_server_start(const struct nbd_server_config *cfg, const struct nbd_backend *be,
		     struct nbd_server **out)
{
	struct nbd_server *srv = calloc(1, sizeof(*srv));
	int r = -ENOMEM;

	if (!srv)
		return -ENOMEM;
	srv->cfg = *cfg;
	srv->be = be;
	if (!srv->cfg.max_request || srv->cfg.max_request > NBD_DEFAULT_MAX_REQUEST)
		srv->cfg.max_request = NBD_DEFAULT_MAX_REQUEST;
	if (!srv->cfg.max_inflight)
		srv->cfg.max_inflight = NBD_DEFAULT_MAX_INFLIGHT;
	unsigned nw = cfg->workers;
	if (!nw) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		nw = n > 0 ? (unsigned)n : 1;
	}
	srv->nworkers = MIN(nw, NBD_MAX_WORKERS);
	pthread_mutex_init(&srv->jlock, NULL);
	pthread_cond_init(&srv->jcond, NULL);

	if (cfg->unix_path[0]) {
		r = listen_unix(cfg->unix_path);
		if (r < 0) {
			log_debug("nbd: cannot listen on %s: %s", cfg->unix_path, strerror(-r));
			free(srv);
			return r;
		}
		srv->listen_fd[srv->nlisten++] = r;
	}
	if (cfg->tcp_listen[0]) {
		r = listen_tcp(cfg->tcp_listen);
		if (r < 0) {
			log_debug("nbd: cannot listen on TCP %s: %s", cfg->tcp_listen, strerror(-r));
			srv->nworkers = 0;
			server_free(srv);
			return r;
		}
		srv->listen_tcp[srv->nlisten] = true;
		srv->listen_fd[srv->nlisten++] = r;
	}

	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	if (!srv->workers) {
		srv->nworkers = 0;
		server_free(srv);
		return -ENOMEM;
	}
	unsigned made = 0;
	for (; made < srv->nworkers; made++) {
		struct nbd_worker *w = &srv->workers[made];
		w->srv = srv;
		w->index = made;
		w->efd = eventfd(0, EFD_CLOEXEC);
		if (w->efd < 0) {
			r = -errno;
			break;
		}
		r = io_uring_queue_init(256, &w->ring, 0);
		if (r < 0) {
			close(w->efd);
			break;
		}
		pthread_mutex_init(&w->lock, NULL);
	}
	if (made < srv->nworkers) {
		srv->nworkers = made;
		server_free(srv);
		return r;
	}
	/* As many executors as workers: with the worker running each batch's
	 * last request itself, one connection can keep every core busy. */
	srv->executors = calloc(srv->nworkers, sizeof(*srv->executors));
	if (!srv->executors) {
		server_free(srv);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < srv->nworkers; i++) {
		r = -pthread_create(&srv->executors[i], NULL, nbd_executor_main, srv);
		if (r < 0) {
			server_free(srv);
			return r;
		}
		srv->nexecutors++;
	}
	for (unsigned i = 0; i < srv->nworkers; i++) {
		r = -pthread_create(&srv->workers[i].thread, NULL, nbd_worker_main, &srv->workers[i]);
		if (r < 0) {
			/* stop the ones already running */
			__atomic_store_n(&srv->stopping, true, __ATOMIC_RELEASE);
			for (unsigned j = 0; j < i; j++)
				nbd_worker_wake(&srv->workers[j]);
			for (unsigned j = 0; j < i; j++)
				pthread_join(srv->workers[j].thread, NULL);
			server_free(srv);
			return r;
		}
	}
	*out = srv;
	return 0;
}

void nbd_server_stop(struct nbd_server *srv)
{
	if (!srv)
		return;
	__atomic_store_n(&srv->stopping, true, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < srv->nworkers; i++)
		nbd_worker_wake(&srv->workers[i]);
	for (unsigned i = 0; i < srv->nworkers; i++)
		pthread_join(srv->workers[i].thread, NULL);
	server_free(srv);
}

void nbd_server_get_stats(struct nbd_server *srv, struct nbd_server_stats *out)
{
	out->accepted = __atomic_load_n(&srv->accepted, __ATOMIC_RELAXED);
	out->active = __atomic_load_n(&srv->active, __ATOMIC_RELAXED);
	out->dropped = __atomic_load_n(&srv->dropped, __ATOMIC_RELAXED);
	out->requests = __atomic_load_n(&srv->requests, __ATOMIC_RELAXED);
}

/*
 * nbd-testserver: the NBD server over in-memory exports, for exercising
 * the protocol layer on its own (tests/nbd). Not installed.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "nbd-mem.h"
#include "nbd-server.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nbd-testserver --socket PATH [--tcp [ADDR:]PORT] [--workers N]\n"
		"                      [--max-inflight N] [--hold-writes FILE] --export NAME:SIZE[:ro]...\n"
		"Serves in-memory exports over NBD until SIGTERM or SIGINT, then prints\n"
		"'accepted=N active=N dropped=N requests=N' on stdout. With --hold-writes,\n"
		"writes wait while FILE exists (a minute at most).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "tcp", required_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "max-inflight", required_argument, NULL, 'i' },
		{ "export", required_argument, NULL, 'e' },
		{ "hold-writes", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct nbd_server_config cfg;
	struct nbd_mem *m = nbd_mem_new();
	int c, r;

	log_init("nbd-testserver", getenv("HUTCH_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	nbd_server_config_default(&cfg);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			snprintf(cfg.unix_path, sizeof(cfg.unix_path), "%s", optarg);
			break;
		case 't':
			snprintf(cfg.tcp_listen, sizeof(cfg.tcp_listen), "%s", optarg);
			break;
		case 'w':
			cfg.workers = (unsigned)atoi(optarg);
			break;
		case 'i':
			cfg.max_inflight = (unsigned)atoi(optarg);
			break;
		case 'e': {
			char name[256];
			char *colon = strchr(optarg, ':');
			uint64_t size;
			if (!colon || (size_t)(colon - optarg) >= sizeof(name)) {
				fprintf(stderr, "nbd-testserver: --export wants NAME:SIZE[:ro]\n");
				return 2;
			}
			memcpy(name, optarg, (size_t)(colon - optarg));
			name[colon - optarg] = 0;
			char *sz = strdup(colon + 1);
			char *ro = strchr(sz, ':');
			if (ro)
				*ro++ = 0;
			if (parse_size(sz, &size) < 0) {
				fprintf(stderr, "nbd-testserver: bad size in '%s'\n", optarg);
				return 2;
			}
			r = nbd_mem_add(m, name, size, ro && !strcmp(ro, "ro"));
			free(sz);
			if (r < 0) {
				fprintf(stderr, "nbd-testserver: cannot add export: %s\n", strerror(-r));
				return 1;
			}
			break;
		}
		case 'H':
			if (nbd_mem_hold_writes(m, optarg) < 0) {
				fprintf(stderr, "nbd-testserver: out of memory\n");
				return 1;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!cfg.unix_path[0] && !cfg.tcp_listen[0]) {
		usage(stderr);
		return 2;
	}

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	struct nbd_backend be;
	nbd_mem_backend(m, &be);
	struct nbd_server *srv;
	r = nbd_server_start(&cfg, &be, &srv);
	if (r < 0) {
		fprintf(stderr, "nbd-testserver: cannot start: %s\n", strerror(-r));
		return 1;
	}
	int sig;
	sigwait(&set, &sig);
	struct nbd_server_stats st;
	nbd_server_get_stats(srv, &st);
	nbd_server_stop(srv);
	printf("accepted=%llu active=%llu dropped=%llu requests=%llu\n",
	       (unsigned long long)st.accepted, (unsigned long long)st.active,
	       (unsigned long long)st.dropped, (unsigned long long)st.requests);
	nbd_mem_free(m);
	return 0;
}

/*
 * hutch-storaged: owns the store, serves its images over NBD and its
 * namespace over the control socket.
 *
 * Threads: main (signals and the flush timer, through one poll loop), the
 * control server's threads (storaged-control.c) and the NBD server's
 * (storaged-nbd.c). SIGTERM/SIGINT are blocked in every thread and read
 * by main from a signalfd.
 */
#include "storaged-control.h"
#ifdef HAVE_STORAGED_NBD
#include "storaged-nbd.h"
#endif
#include "store.h"

#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "util.h"
#include "hutch-version.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: hutch-storaged [OPTION]...\n"
		"Serve hutch's deduplicated image store: images over NBD, image operations\n"
		"over a control socket. Runs in the foreground and logs to stderr.\n"
		"\n"
		"  --home DIR        state directory (default: $HUTCH_HOME, else /var/lib/hutch);\n"
		"                    uses DIR/store, DIR/run/control.sock, DIR/run/nbd.sock,\n"
		"                    DIR/run/storaged.pid and reads DIR/hutch.conf if present\n"
		"  --config FILE     read FILE instead of DIR/hutch.conf (must exist)\n"
		"  --check-config    load the configuration, report errors, and exit\n"
		"  --help-config     print every configuration key with its default and meaning\n"
		"  --version         print the version\n"
		"  --help            this help\n"
		"\n"
		"A store is created in DIR/store on first start (chunk size from [store]\n"
		"chunk_size). SIGTERM or SIGINT stops the daemon cleanly: everything\n"
		"acknowledged is on disk. Talk to it with `hutch`, see hutch(1).\n");
}

/* Reads the pid of the daemon holding the store, for the message; 0 if unknown. */
static long read_pidfile(const char *path)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	long pid = 0;

	if (f && fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	return pid;
}

static int write_pidfile(const char *path)
{
	char tmp[PATH_MAX + 8], buf[32];
	_cleanup_close_ int fd = -1;
	int n, r;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
	r = write_all(fd, buf, (size_t)n);
	if (r < 0)
		return r;
	if (rename(tmp, path) < 0)
		return -errno;
	return 0;
}

static enum log_level parse_level(const char *s)
{
	if (strcmp(s, "debug") == 0)
		return LOG_LVL_DEBUG;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	if (strcmp(s, "error") == 0)
		return LOG_LVL_ERROR;
	return LOG_LVL_INFO;
}

int main(int argc, char **argv)
{
	enum { OPT_HOME = 256, OPT_CONFIG, OPT_HELP_CONFIG, OPT_CHECK_CONFIG, OPT_VERSION };
	static const struct option longopts[] = {
		{ "home", required_argument, NULL, OPT_HOME },
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "help-config", no_argument, NULL, OPT_HELP_CONFIG },
		{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *home = NULL, *config_path = NULL;
	bool check_only = false;
	struct hutch_config cfg;
	char err[1024];
	char store_path[PATH_MAX], run_path[PATH_MAX], ctl_path[PATH_MAX], pid_path[PATH_MAX];
	struct store_options opts;
	struct store *store = NULL;
	struct storaged_control *ctl = NULL;
#ifdef HAVE_STORAGED_NBD
	struct nbd_server *nbd = NULL;
#endif
	_cleanup_close_ int sfd = -1;
	_cleanup_close_ int tfd = -1;
	struct itimerspec its = { 0 };
	sigset_t mask;
	int c, r, status = 1;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_HOME: home = optarg; break;
		case OPT_CONFIG: config_path = optarg; break;
		case OPT_CHECK_CONFIG: check_only = true; break;
		case OPT_HELP_CONFIG: config_print_reference(stdout); return 0;
		case OPT_VERSION: printf("hutch-storaged %s\n", HUTCH_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default:
			fprintf(stderr, "Try 'hutch-storaged --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hutch-storaged: unexpected argument '%s'\nTry 'hutch-storaged --help'.\n",
			argv[optind]);
		return 2;
	}
	if (!home)
		home = hutch_home();

	if (config_load(home, config_path, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "hutch-storaged: %s\n", err);
		fprintf(stderr, "hutch-storaged: fix the file, or see `hutch-storaged --help-config`.\n");
		return 1;
	}
	if (check_only) {
		printf("%s: OK\n", cfg.path[0] ? cfg.path : "(no config file; defaults)");
		return 0;
	}
	log_init("hutch-storaged", parse_level(cfg.storaged.log_level));
	signal(SIGPIPE, SIG_IGN);
	/* Block the stop signals before any thread starts (the store starts
	 * some in store_open), so every thread inherits the mask and only the
	 * signalfd sees them; otherwise a signal could land on a thread that
	 * does not block it and kill the process uncleanly. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	if (hutch_path(store_path, sizeof store_path, home, "store") < 0 ||
	    hutch_path(run_path, sizeof run_path, home, "run") < 0 ||
	    hutch_path(ctl_path, sizeof ctl_path, home, "run/control.sock") < 0 ||
	    hutch_path(pid_path, sizeof pid_path, home, "run/storaged.pid") < 0) {
		log_error("--home %s: path too long", home);
		return 1;
	}
	r = mkdir_p(run_path, 0755);
	if (r < 0) {
		log_error("cannot create %s: %s (is --home writable?)", run_path, strerror(-r));
		return 1;
	}

	/* First start: make the store, so a newcomer needs no setup step. */
	r = store_init(store_path, cfg.store.chunk_size);
	if (r == 0)
		log_info("created a new store in %s (chunk size %" PRIu32 ")", store_path,
			 cfg.store.chunk_size);
	else if (r != -EEXIST) {
		log_error("cannot create the store in %s: %s", store_path, strerror(-r));
		return 1;
	}

	store_options_default(&opts);
	opts.dirty_limit = cfg.store.dirty_limit;
	opts.pack_size = cfg.store.pack_size;
	r = store_open(store_path, &opts, &store);
	if (r == -EBUSY) {
		long pid = read_pidfile(pid_path);

		if (pid > 0)
			log_error("the store %s is in use by another hutch-storaged (pid %ld); "
				  "stop it first (kill %ld) or use another --home", store_path, pid, pid);
		else
			log_error("the store %s is in use by another process; "
				  "stop it first or use another --home", store_path);
		return 1;
	}
	if (r < 0) {
		log_error("cannot open the store %s: %s", store_path, strerror(-r));
		return 1;
	}
	log_info("store %s open (chunk size %" PRIu32 ")", store_path, store_chunk_size(store));

	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (sfd < 0 || tfd < 0) {
		log_error("cannot set up signals and timer: %s", strerror(errno));
		goto out_close_store;
	}
	its.it_interval.tv_sec = cfg.store.flush_interval_ms / 1000;
	its.it_interval.tv_nsec = (long)(cfg.store.flush_interval_ms % 1000) * 1000000;
	its.it_value = its.it_interval;
	timerfd_settime(tfd, 0, &its, NULL);

	r = storaged_control_start(store, ctl_path, &ctl);
	if (r < 0) {
		log_error("cannot listen on %s: %s", ctl_path, strerror(-r));
		goto out_close_store;
	}
#ifdef HAVE_STORAGED_NBD
	r = storaged_nbd_start(store, &cfg, home, &nbd);
	if (r < 0) {
		log_error("cannot start the NBD server: %s", strerror(-r));
		goto out_stop_control;
	}
#endif
	r = write_pidfile(pid_path);
	if (r < 0)
		log_warn("cannot write %s: %s", pid_path, strerror(-r));
	log_info("ready: control %s, pid %d", ctl_path, (int)getpid());

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = sfd, .events = POLLIN },
			{ .fd = tfd, .events = POLLIN },
		};

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
				if (si.ssi_signo == SIGHUP) {
					log_info("SIGHUP ignored (restart to apply configuration changes)");
					continue;
				}
				log_info("%s received, stopping", strsignal((int)si.ssi_signo));
				status = 0;
				break;
			}
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t ticks;

			if (read(tfd, &ticks, sizeof ticks) < 0)
				continue;
			r = store_flush_all(store);
			if (r < 0)
				log_warn("periodic flush failed: %s", strerror(-r));
		}
	}

	unlink(pid_path);
#ifdef HAVE_STORAGED_NBD
	storaged_nbd_stop(nbd);
out_stop_control:
#endif
	storaged_control_stop(ctl);
out_close_store:
	r = store_flush_all(store);
	if (r < 0) {
		log_error("final flush failed: %s", strerror(-r));
		status = 1;
	}
	store_close(store);
	if (status == 0)
		log_info("stopped; store closed cleanly");
	return status;
}

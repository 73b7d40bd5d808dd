/*
 * hutch-fuse: mounts the store as files. Options, mount, the
 * multi-threaded FUSE loop and a clean exit on SIGTERM or
 * `fusermount3 -u`.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hutch-version.h"
#include "cleanup.h"
#include "log.h"
#include "fuse-internal.h"

struct fs_config fs_cfg;

static void usage(FILE *out)
{
	fprintf(out,
"Usage: hutch-fuse [OPTIONS] [MOUNTPOINT]\n"
"\n"
"Mount the hutch store as files (default MOUNTPOINT: $HUTCH_HOME/fs):\n"
"  images/NAME              an image as a regular file (size = image size)\n"
"  images/NAME.snap/SNAP    its read-only snapshots\n"
"\n"
"  ln images/NAME images/NAME.snap/SNAP   snapshot\n"
"  cp images/SRC images/NEW               fork: whole chunks are shared, not copied\n"
"  rm, mv, truncate -s                    delete, rename, create or resize\n"
"\n"
"Data goes over NBD to hutch-storaged, names over its control socket;\n"
"hutch-storaged must be running (the mount waits out its restarts).\n"
"Unmount with `fusermount3 -u MOUNTPOINT` or SIGTERM.\n"
"\n"
"Options:\n"
"  -H, --home DIR            state directory (default $HUTCH_HOME or /var/lib/hutch)\n"
"      --nbd-socket PATH     default DIR/run/nbd.sock\n"
"      --control-socket PATH default DIR/run/control.sock\n"
"  -C, --connections N       NBD connections per open image (default 8, 1..64)\n"
"  -T, --threads N           at most N FUSE worker threads (default 16)\n"
"      --attr-timeout SECS   how long the kernel caches names and sizes (default 1)\n"
"  -o OPT[,OPT...]           extra FUSE mount options (allow_other, ...)\n"
"  -v, --verbose             log debug messages\n"
"      --fuse-debug          log every FUSE request (very verbose)\n"
"  -h, --help                this text\n"
"  -V, --version             print the version\n"
"\n"
"See docs/hutch-fuse.md for the semantics, errnos and threading model.\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->max_write = FUSE_MAX_WRITE;
	/* O_TRUNC reaches open(), which refuses to truncate a non-empty image. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Reads may run in parallel; each takes its own NBD connection. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void fs_destroy(void *userdata)
{
	fs_file_cleanup();
	node_table_free();
}

int main(int argc, char **argv)
{
	enum { OPT_NBD = 256, OPT_CTL, OPT_ATTR, OPT_FUSE_DEBUG };
	static const struct option longopts[] = {
		{ "home", required_argument, NULL, 'H' },
		{ "nbd-socket", required_argument, NULL, OPT_NBD },
		{ "control-socket", required_argument, NULL, OPT_CTL },
		{ "connections", required_argument, NULL, 'C' },
		{ "threads", required_argument, NULL, 'T' },
		{ "attr-timeout", required_argument, NULL, OPT_ATTR },
		{ "verbose", no_argument, NULL, 'v' },
		{ "fuse-debug", no_argument, NULL, OPT_FUSE_DEBUG },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char mount_opts[4096] = "fsname=hutch,subtype=hutch,default_permissions";
	const char *home = hutch_home();
	const char *nbd_sock = NULL, *ctl_sock = NULL;
	unsigned threads = 16;
	bool verbose = false, fuse_debug = false;
	int c, ret = 1;

	fs_cfg.connections = 8;
	fs_cfg.attr_timeout = 1.0;
	while ((c = getopt_long(argc, argv, "H:C:T:o:vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'H':
			home = optarg;
			break;
		case OPT_NBD:
			nbd_sock = optarg;
			break;
		case OPT_CTL:
			ctl_sock = optarg;
			break;
		case 'C':
			if (parse_uint(optarg, 1, 64, &fs_cfg.connections) < 0) {
				fprintf(stderr, "hutch-fuse: --connections wants 1..64, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'T':
			if (parse_uint(optarg, 1, 1024, &threads) < 0) {
				fprintf(stderr, "hutch-fuse: --threads wants 1..1024, not '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_ATTR: {
			char *end;
			fs_cfg.attr_timeout = strtod(optarg, &end);
			if (*end || end == optarg || fs_cfg.attr_timeout < 0 || fs_cfg.attr_timeout > 3600) {
				fprintf(stderr, "hutch-fuse: --attr-timeout wants seconds (0..3600), not '%s'\n", optarg);
				return 2;
			}
			break;
		}
		case 'o':
			if (strlen(mount_opts) + strlen(optarg) + 2 > sizeof(mount_opts)) {
				fprintf(stderr, "hutch-fuse: -o options too long\n");
				return 2;
			}
			strcat(mount_opts, ",");
			strcat(mount_opts, optarg);
			break;
		case 'v':
			verbose = true;
			break;
		case OPT_FUSE_DEBUG:
			fuse_debug = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("hutch-fuse %s\n", HUTCH_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'hutch-fuse --help'.\n");
			return 2;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr, "hutch-fuse: one mount point at most; try 'hutch-fuse --help'.\n");
		return 2;
	}

	log_init("hutch-fuse", verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	snprintf(fs_cfg.home, sizeof(fs_cfg.home), "%s", home);
	if ((optind < argc ? snprintf(fs_cfg.mountpoint, sizeof(fs_cfg.mountpoint), "%s", argv[optind]) < 0
			   : hutch_path(fs_cfg.mountpoint, sizeof(fs_cfg.mountpoint), home, "fs") < 0) ||
	    (nbd_sock ? snprintf(fs_cfg.nbd_socket, sizeof(fs_cfg.nbd_socket), "%s", nbd_sock) < 0
		      : hutch_path(fs_cfg.nbd_socket, sizeof(fs_cfg.nbd_socket), home, "run/nbd.sock") < 0) ||
	    (ctl_sock ? snprintf(fs_cfg.control_socket, sizeof(fs_cfg.control_socket), "%s", ctl_sock) < 0
		      : hutch_path(fs_cfg.control_socket, sizeof(fs_cfg.control_socket), home, "run/control.sock") < 0)) {
		log_error("paths under %s are too long", home);
		return 1;
	}
	fs_cfg.uid = geteuid();
	fs_cfg.gid = getegid();
	if (geteuid() == 0 && !strstr(mount_opts, "allow_other"))
		strcat(mount_opts, ",allow_other");	/* root mounts for the host's admins */

	if (optind >= argc) {
		int r = mkdir_p(fs_cfg.mountpoint, 0755);
		if (r < 0) {
			log_error("cannot create %s: %s", fs_cfg.mountpoint, strerror(-r));
			return 1;
		}
	}
	json_object *pong;
	if (fctl_call(fctl_req("ping"), &pong) < 0)
		log_warn("hutch-storaged does not answer on %s yet; I/O fails with EIO until it does",
			 fs_cfg.control_socket);
	else
		json_object_put(pong);

	node_table_init();
	struct fuse_lowlevel_ops ops = { .init = fs_init, .destroy = fs_destroy };
	fs_dir_ops(&ops);
	fs_file_ops(&ops);

	char *fargv[] = { argv[0], (char *)"-o", mount_opts, (char *)"-d", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(fuse_debug ? 4 : 3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se) {
		log_error("cannot set up the FUSE session (mount options: %s)", mount_opts);
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, fs_cfg.mountpoint) != 0) {
		log_error("cannot mount %s: is /dev/fuse there and the folder empty and not mounted?",
			  fs_cfg.mountpoint);
		goto out_signals;
	}
	log_info("mounted %s (storaged at %s)", fs_cfg.mountpoint, fs_cfg.nbd_socket);

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	if (!lc)
		goto out_unmount;
	fuse_loop_cfg_set_max_threads(lc, threads);
	/* As many idle threads as workers: libfuse 3.14 otherwise ends a
	 * thread after each burst and starts another for the next. */
	fuse_loop_cfg_set_idle_threads(lc, threads);
	fuse_loop_cfg_set_clone_fd(lc, 0);
	int lr = fuse_session_loop_mt(se, lc);
	/* libfuse returns the signal that ended the loop: a clean stop. */
	ret = lr == 0 || lr == SIGTERM || lr == SIGINT || lr == SIGHUP ? 0 : 1;
	fuse_loop_cfg_destroy(lc);
	log_info("unmounting %s", fs_cfg.mountpoint);

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	fuse_opt_free_args(&args);
	return ret;
}

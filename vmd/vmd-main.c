/*
 * hutch-vmd: keeps VM records, runs one QEMU per VM, answers the control
 * socket $HUTCH_HOME/run/vmd.sock. Threads and locks: see vmd.h and
 * docs/hutch-vmd.md. QEMUs are daemonized and outlive hutch-vmd; a new
 * hutch-vmd re-adopts them.
 */
#include "vmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"
#include "cleanup.h"
#include "ctl.h"
#include "hutch-version.h"
#include "log.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: hutch-vmd [OPTION]...\n"
		"Run hutch's VMs: one QEMU per VM, its disk served by hutch-storaged over NBD.\n"
		"Runs in the foreground and logs to stderr. Start hutch-storaged first.\n"
		"\n"
		"  --home DIR        state directory (default: $HUTCH_HOME, else /var/lib/hutch);\n"
		"                    uses DIR/vms, DIR/templates, DIR/run/vmd.sock, DIR/vmd/admin_key,\n"
		"                    DIR/nbd-acl and reads DIR/hutch.conf if present\n"
		"  --config FILE     read FILE instead of DIR/hutch.conf\n"
		"  --help-config     print every configuration key with its default and meaning\n"
		"  --version         print the version\n"
		"  --help            this help\n"
		"\n"
		"Stopping hutch-vmd (SIGTERM) leaves the VMs running; the next hutch-vmd\n"
		"re-adopts them. Each VM's QEMU runs as its own uid ([vmd] uid_base) when\n"
		"hutch-vmd runs as root. Use `hutch vm ...` and `hutch template ...` to drive it.\n");
}

struct conn {
	struct vmd *d;
	int fd;
};

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct ctl_reader rd;

	ctl_reader_init(&rd, c->fd);
	for (;;) {
		char *line, why[256];
		size_t len;
		json_object *req;
		const char *op;
		int r = ctl_read_line(&rd, &line, &len);

		if (r == -E2BIG) {
			if (ctl_reply_error(c->fd, EINVAL, "request longer than %u bytes", CTL_MAX_LINE) < 0)
				break;
			continue;
		}
		if (r <= 0)
			break;
		if (len == 0)
			continue;
		if (ctl_parse_request(line, len, &req, &op, why, sizeof why) < 0) {
			if (ctl_reply_error(c->fd, EINVAL, "%s", why) < 0)
				break;
			continue;
		}
		if (strcmp(op, "ping") == 0) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "version", json_object_new_string(HUTCH_VERSION));
			json_object_object_add(o, "pid", json_object_new_int(getpid()));
			json_object_object_add(o, "accel", json_object_new_string(c->d->accel[0] ? c->d->accel : "not probed yet"));
			json_object_object_add(o, "accel_reason", json_object_new_string(c->d->accel_why));
			r = ctl_reply_ok(c->fd, o);
		} else {
			audit_control(c->d->home, "hutch-vmd", c->fd, op, req);
			r = vmd_op(c->d, c->fd, op, req);
		}
		json_object_put(req);
		if (r < 0)
			break;
	}
	ctl_reader_free(&rd);
	close(c->fd);
	free(c);
	return NULL;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	int probe;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	/* A live daemon answers on the socket; a stale file is replaced. */
	probe = ctl_connect(path);
	if (probe >= 0) {
		close(probe);
		return -EADDRINUSE;
	}
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 64) < 0)
		return -errno;
	return TAKE_FD(fd);
}

/* The key `hutch vm ssh` uses; its public half goes into every guest. */
static int ensure_admin_key(struct vmd *d)
{
	char pub[VMD_PATH_MAX + 8];
	int status;
	pid_t pid;

	xsnprintf(pub, sizeof pub, "%s.pub", d->admin_key);
	if (access(d->admin_key, R_OK) == 0 && access(pub, R_OK) == 0)
		return 0;
	unlink(d->admin_key);
	unlink(pub);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(nul, 1);
		execlp("ssh-keygen", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hutch-admin",
		       "-f", d->admin_key, (char *)NULL);
		fprintf(stderr, "cannot run ssh-keygen: %s\n", strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -EIO;
	return 0;
}

static int make_dirs(struct vmd *d)
{
	static const char *const dirs[] = { "", "run", "vms", "templates", "vmd", "cache" };
	char path[VMD_PATH_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int r = hutch_path(path, sizeof path, d->home, dirs[i]);

		if (r == 0)
			r = mkdir_p(path, strcmp(dirs[i], "vmd") == 0 ? 0700 : 0755);
		if (r < 0) {
			log_error("cannot make %s: %s", path, strerror(-r));
			return r;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "home", required_argument, NULL, 'H' },
		{ "config", required_argument, NULL, 'c' },
		{ "help-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct vmd d;
	const char *config_path = NULL;
	char path[VMD_PATH_MAX], err[512];
	pthread_t monitor;
	sigset_t mask;
	int c, r, lfd, sfd;

	d.home = hutch_home();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'H': d.home = optarg; break;
		case 'c': config_path = optarg; break;
		case 'C': config_print_reference(stdout); return 0;
		case 'V': printf("hutch-vmd %s\n", HUTCH_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "hutch-vmd: unexpected argument '%s' (see --help)\n", argv[optind]);
		return 2;
	}
	log_init("hutch-vmd", LOG_LVL_INFO);
	config_defaults(&d.cfg);
	if (config_load(d.home, config_path, &d.cfg, err, sizeof err) < 0) {
		log_error("%s", err);
		return 1;
	}
	if (strcmp(d.cfg.vmd.log_level, "debug") == 0)
		log_set_level(LOG_LVL_DEBUG);
	else if (strcmp(d.cfg.vmd.log_level, "warning") == 0)
		log_set_level(LOG_LVL_WARN);
	else if (strcmp(d.cfg.vmd.log_level, "error") == 0)
		log_set_level(LOG_LVL_ERROR);

	if (make_dirs(&d) < 0)
		return 1;
	if (hutch_path(d.vms_dir, sizeof d.vms_dir, d.home, "vms") < 0 ||
	    hutch_path(d.templates_dir, sizeof d.templates_dir, d.home, "templates") < 0 ||
	    hutch_path(d.storaged_sock, sizeof d.storaged_sock, d.home, "run/control.sock") < 0 ||
	    hutch_path(d.nbd_sock, sizeof d.nbd_sock, d.home, "run/nbd.sock") < 0 ||
	    hutch_path(d.admin_key, sizeof d.admin_key, d.home, "vmd/admin_key") < 0 ||
	    hutch_path(path, sizeof path, d.home, "run/vmd.sock") < 0) {
		log_error("--home %s is too long a path", d.home);
		return 1;
	}
	pthread_mutex_init(&d.lock, NULL);
	d.monitor_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);

	lfd = listen_unix(path);
	if (lfd == -EADDRINUSE) {
		log_error("another hutch-vmd already listens on %s; stop it first", path);
		return 1;
	}
	if (lfd < 0) {
		log_error("cannot listen on %s: %s", path, strerror(-lfd));
		return 1;
	}
	r = ensure_admin_key(&d);
	if (r < 0) {
		log_error("cannot make the admin SSH key %s with ssh-keygen (install openssh-client)",
			  d.admin_key);
		return 1;
	}
	if (geteuid() != 0)
		log_warn("not running as root: every VM's QEMU runs as this user, so the NBD "
			 "export ACL cannot keep VMs apart");
	r = vmd_load_all(&d);
	if (r < 0) {
		log_error("cannot read %s: %s", d.vms_dir, strerror(-r));
		return 1;
	}
	vmd_acl_write(&d);
	if (pthread_create(&monitor, NULL, vmd_monitor_thread, &d) != 0) {
		log_error("cannot start the monitor thread");
		return 1;
	}
	pthread_detach(monitor);
	if (pthread_create(&monitor, NULL, vmd_idle_thread, &d) == 0)
		pthread_detach(monitor);
	else
		log_warn("cannot start the idle policy thread: idle VMs stay awake");
	{
		char pidpath[VMD_PATH_MAX], pid[32];
		int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());

		if (hutch_path(pidpath, sizeof pidpath, d.home, "run/vmd.pid") == 0)
			write_file_atomic(pidpath, pid, (size_t)n, 0644);
	}
	/* "ready: " is what scripts wait for, as with hutch-storaged. */
	log_info("hutch-vmd %s ready: control %s, pid %d", HUTCH_VERSION, path, (int)getpid());

	for (;;) {
		struct pollfd pf[2] = { { .fd = lfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents)
			break;
		if (pf[0].revents) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			struct conn *cn;
			pthread_t t;

			if (fd < 0)
				continue;
			cn = malloc(sizeof *cn);
			if (!cn) {
				close(fd);
				continue;
			}
			cn->d = &d;
			cn->fd = fd;
			if (pthread_create(&t, NULL, conn_main, cn) != 0) {
				close(fd);
				free(cn);
				continue;
			}
			pthread_detach(t);
		}
	}
	/* VMs keep running: the next hutch-vmd re-adopts them. */
	log_info("hutch-vmd stopping; VMs keep running");
	unlink(path);
	if (hutch_path(path, sizeof path, d.home, "run/vmd.pid") == 0)
		unlink(path);
	close(lfd);
	return 0;
}

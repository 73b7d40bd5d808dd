/* QEMU processes: the accelerator probe, the command line, start and readiness. */
#include "vmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"

#define QEMU_START_TIMEOUT_MS 30000

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int pidfd_wait(int pidfd, unsigned timeout_ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		uint64_t now = now_ns();
		int r = poll(&p, 1, now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1);

		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r == 0 && now_ns() >= deadline)
			return -ETIMEDOUT;
	}
}

/* Runs ARGV with stdout/stderr into OUTFD; waits at most timeout_ms, then
 * kills it. Returns the exit status, 128+signal, or -errno. */
static int run_wait(char *const argv[], int outfd, unsigned timeout_ms, uid_t uid)
{
	pid_t pid = fork();
	int status;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		setsid();
		if (nul >= 0)
			dup2(nul, 0);
		if (outfd >= 0) {
			dup2(outfd, 1);
			dup2(outfd, 2);
		}
		(void)uid;
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	/* Woken the moment it exits (QEMU's -daemonize parent once the guest is
	 * set up): a VM's start waits on this. */
	_cleanup_close_ int pidfd = pidfd_open_(pid);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return -errno;
		uint64_t now = now_ns();
		if (now >= deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -ETIMEDOUT;
		}
		if (pidfd < 0 || pidfd_wait(pidfd, (unsigned)((deadline - now) / 1000000u) + 1) < 0) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/*
 * KVM only when a guest really runs under it: boot KERNEL under KVM with no
 * root device, so it panics at once (panic=-1, -no-reboot: QEMU exits) once
 * it got through long mode, MSRs, APIC and timers. A /dev/kvm that cannot
 * run ordinary guests (nested setups without vmx/svm) fails or hangs
 * instead. Decided at the first VM start, and remembered in
 * run/accel-probe until the host reboots (a hung probe costs 15 s).
 */
static void boot_id(char *out, size_t sz)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	if (!f || !fgets(out, (int)sz, f))
		xsnprintf(out, sz, "unknown");
	out[strcspn(out, "\n")] = '\0';
}

static bool probe_cached(struct vmd *d, const char *path, const char *boot)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[512], b[64], acc[8];
	int off = 0;

	if (!f || !fgets(line, sizeof line, f))
		return false;
	line[strcspn(line, "\n")] = '\0';
	if (sscanf(line, "%63s %7s %n", b, acc, &off) != 2 || off == 0 || strcmp(b, boot) != 0 ||
	    (strcmp(acc, "kvm") != 0 && strcmp(acc, "tcg") != 0))
		return false;
	xsnprintf(d->accel, sizeof d->accel, "%s", acc);
	xsnprintf(d->accel_why, sizeof d->accel_why, "%s", line + off);
	return true;
}

void vmd_probe_accel(struct vmd *d, const char *kernel)
{
	static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
	char out[VMD_PATH_MAX], cache[VMD_PATH_MAX], buf[65536], boot[64], line[512];
	_cleanup_close_ int fd = -1;
	ssize_t n;
	int r;

	pthread_mutex_lock(&probe_lock);
	if (d->accel[0])
		goto out;
	if (strcmp(d->cfg.vmd.accel, "tcg") == 0 || strcmp(d->cfg.vmd.accel, "kvm") == 0) {
		xsnprintf(d->accel, sizeof d->accel, "%s", d->cfg.vmd.accel);
		xsnprintf(d->accel_why, sizeof d->accel_why, "set by [vmd] accel");
		goto out;
	}
	boot_id(boot, sizeof boot);
	if (hutch_path(cache, sizeof cache, d->home, "run/accel-probe") < 0)
		cache[0] = '\0';
	if (cache[0] && probe_cached(d, cache, boot)) {
		log_info("accelerator: %s (%s; probed earlier since this boot)", d->accel, d->accel_why);
		goto out;
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		xsnprintf(d->accel_why, sizeof d->accel_why, "no usable /dev/kvm (%s)", strerror(errno));
		goto tcg;
	}
	if (hutch_path(out, sizeof out, d->home, "run/kvm-probe.log") < 0)
		goto tcg;
	fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto tcg;
	char *argv[] = {
		d->cfg.vmd.qemu, (char *)"-machine", (char *)"q35,accel=kvm", (char *)"-cpu",
		(char *)"host", (char *)"-m", (char *)"128", (char *)"-nodefaults", (char *)"-display",
		(char *)"none", (char *)"-no-reboot", (char *)"-serial", (char *)"stdio",
		(char *)"-kernel", (char *)kernel, (char *)"-append",
		(char *)"console=ttyS0 quiet panic=-1 root=/dev/hutch-kvm-probe", NULL,
	};
	log_info("probing KVM: booting %s under it", kernel);
	r = run_wait(argv, fd, 15000, 0);
	n = pread(fd, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	unlink(out);
	if (r == 0 && strstr(buf, "Kernel panic")) {
		xsnprintf(d->accel, sizeof d->accel, "kvm");
		xsnprintf(d->accel_why, sizeof d->accel_why, "a probe kernel booted under KVM");
		log_info("accelerator: kvm (%s)", d->accel_why);
		goto remember;
	}
	xsnprintf(d->accel_why, sizeof d->accel_why, "/dev/kvm is there but a probe kernel %s under KVM",
		  r == -ETIMEDOUT ? "hung" : "failed");
tcg:
	xsnprintf(d->accel, sizeof d->accel, "tcg");
	log_info("accelerator: tcg (%s)", d->accel_why);
remember:
	if (cache[0]) {
		int len = xsnprintf(line, sizeof line, "%s %s %s\n", boot, d->accel, d->accel_why);

		write_file_atomic(cache, line, (size_t)MIN(len, (int)sizeof line - 1), 0644);
	}
out:
	pthread_mutex_unlock(&probe_lock);
}

int vm_qmp_path(const struct vmd *d, const struct vm *vm, char *buf, size_t sz)
{
	return vm_dir(d, vm->name, "run/qmp.sock", buf, sz);
}

/* A loopback port nobody listens on now (racy but retried by the caller). */
static int pick_port(unsigned *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof sa;
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	*port = ntohs(sa.sin_port);
	return 0;
}

static int random_hex(char *out, size_t nbytes)
{
	unsigned char b[64];
	_cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || nbytes > sizeof b)
		return -EIO;
	if (pread_all(fd, b, nbytes, 0) < 0 && read(fd, b, nbytes) != (ssize_t)nbytes)
		return -EIO;
	for (size_t i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	return 0;
}

/* Small growable argv. */
struct args {
	char **v;
	size_t n, cap;
};

static void args_add(struct args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void args_add(struct args *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 64;
		a->v = realloc(a->v, a->cap * sizeof *a->v);
		if (!a->v)
			abort();
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void args_free(struct args *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

static int write_small(const char *dir, const char *name, const char *text)
{
	char path[VMD_PATH_MAX];

	if ((size_t)xsnprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
		return -ENAMETOOLONG;
	return write_file_atomic(path, text, strlen(text), 0600);
}

static int read_pidfile(const char *path, pid_t *pid)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	int v;

	if (!f)
		return -errno;
	if (fscanf(f, "%d", &v) != 1 || v <= 0)
		return -EBADMSG;
	*pid = v;
	return 0;
}

/* The last lines QEMU wrote to its log since OFFSET, as one line. */
static void read_log_tail(const char *path, off_t offset, char *err, size_t errsz)
{
	char buf[2048];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 || lseek(fd, offset, SEEK_SET) < 0)
		return;
	n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	xsnprintf(err, errsz, "%s", buf);
}

int vm_qemu_start(struct vmd *d, struct vm *vm, char *err, size_t errsz)
{
	char run[VMD_PATH_MAX], path[VMD_PATH_MAX], logpath[VMD_PATH_MAX], seed[129];
	char kernel[VMD_PATH_MAX], initrd[VMD_PATH_MAX], pub[VMD_PATH_MAX + 8];
	struct args a = { 0 };
	struct stat st;
	_cleanup_close_ int logfd = -1;
	off_t logoff;
	unsigned port = 0;
	pid_t pid = 0;
	int r;

	if (vm_dir(d, vm->name, "run", run, sizeof run) < 0 ||
	    vm_dir(d, vm->name, "qemu.log", logpath, sizeof logpath) < 0 ||
	    vm_dir(d, vm->name, "vmlinuz", kernel, sizeof kernel) < 0 ||
	    vm_dir(d, vm->name, "initrd.img", initrd, sizeof initrd) < 0)
		return -ENAMETOOLONG;
	if (mkdir(run, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		xsnprintf(err, errsz, "cannot make %s: %s", run, strerror(-r));
		return r;
	}
	/* Leftovers of an earlier QEMU would make it fail to bind. */
	xsnprintf(path, sizeof path, "%s/qmp.sock", run);
	unlink(path);
	xsnprintf(path, sizeof path, "%s/console.sock", run);
	unlink(path);
	xsnprintf(path, sizeof path, "%s/qemu.pid", run);
	unlink(path);
	xsnprintf(path, sizeof path, "%s/agent.sock", run);
	unlink(path);
	if (!vm->incoming) {
		/* A cold boot starts from empty RAM, not an earlier run's file. */
		xsnprintf(path, sizeof path, "%s/ram", run);
		unlink(path);
	}

	/* Identity, read by the guest from fw_cfg at every boot. A fresh seed each boot. */
	if (random_hex(seed, 64) < 0)
		return -EIO;
	xsnprintf(pub, sizeof pub, "%s.pub", d->admin_key);
	{
		_cleanup_free_ char *key = NULL;
		size_t ksz = 0;
		_cleanup_fclose_ FILE *f = fopen(pub, "re");

		if (!f || getline(&key, &ksz, f) < 0) {
			xsnprintf(err, errsz, "cannot read the admin key %s", pub);
			return -ENOENT;
		}
		if ((r = write_small(run, "admin-key", key)) < 0 ||
		    (r = write_small(run, "hostname", vm->name)) < 0 ||
		    (r = write_small(run, "machine-id", vm->machine_id)) < 0 ||
		    (r = write_small(run, "seed", seed)) < 0) {
			xsnprintf(err, errsz, "cannot write the VM's identity into %s: %s", run, strerror(-r));
			return r;
		}
	}

	vmd_probe_accel(d, kernel);
	r = pick_port(&port);
	if (r < 0) {
		xsnprintf(err, errsz, "no free loopback port for SSH: %s", strerror(-r));
		return r;
	}

	logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	logoff = fstat(logfd, &st) == 0 ? st.st_size : 0;

	args_add(&a, "%s", d->cfg.vmd.qemu);
	args_add(&a, "-name");
	args_add(&a, "%s,debug-threads=on", vm->name);
	/* Guest RAM in a shared file: hibernation saves it page-aligned into the
	 * store and a resumed QEMU maps it back (vmd-sleep.c). */
	args_add(&a, "-object");
	if (vm->warm_from[0])
		/* A warm fork: the template's RAM, private copy-on-write (vmd-warm.c). */
		args_add(&a, "memory-backend-file,id=ram0,size=%" PRIu64 "M,mem-path=%s/%s/warm.ram,share=off",
			 vm->memory >> 20, d->templates_dir, vm->warm_from);
	else
		args_add(&a, "memory-backend-file,id=ram0,size=%" PRIu64 "M,mem-path=%s/ram,share=on",
			 vm->memory >> 20, run);
	args_add(&a, "-machine");
	args_add(&a, "q35,memory-backend=ram0");
	args_add(&a, "-accel");
	if (strcmp(d->accel, "tcg") == 0 && d->cfg.vmd.tcg_tb_size)
		args_add(&a, "tcg,tb-size=%u", d->cfg.vmd.tcg_tb_size);
	else
		args_add(&a, "%s", d->accel);
	args_add(&a, "-cpu");
	args_add(&a, "%s", strcmp(d->accel, "kvm") == 0 ? "host" : "max");
	args_add(&a, "-smp");
	args_add(&a, "%u", vm->cpus);
	args_add(&a, "-m");
	args_add(&a, "%" PRIu64 "M", vm->memory >> 20);
	args_add(&a, "-nodefaults");
	args_add(&a, "-no-user-config");
	args_add(&a, "-display");
	args_add(&a, "none");
	args_add(&a, "-no-reboot");
	args_add(&a, "-kernel");
	args_add(&a, "%s", kernel);
	args_add(&a, "-initrd");
	args_add(&a, "%s", initrd);
	args_add(&a, "-append");
	/* Freed guest pages are zeroed, so hibernation skips them (zero pages
	 * are never stored) instead of storing stale data unique to each VM. */
	args_add(&a, "%s%s", vm->cmdline, strstr(vm->cmdline, "init_on_free=") ? "" : " init_on_free=1");
	args_add(&a, "-blockdev");
	args_add(&a, "driver=nbd,node-name=disk0,server.type=unix,server.path=%s,export=%s,"
		 "reconnect-delay=%u", d->nbd_sock, vm->disk, d->cfg.vmd.reconnect_delay);
	args_add(&a, "-device");
	args_add(&a, "virtio-blk-pci,drive=disk0");
	args_add(&a, "-netdev");
	args_add(&a, "user,id=net0,hostname=%s,hostfwd=tcp:127.0.0.1:%u-:22", vm->name, port);
	args_add(&a, "-device");
	args_add(&a, "virtio-net-pci,netdev=net0,mac=%s", vm->mac);
	args_add(&a, "-object");
	args_add(&a, "rng-random,id=rng0,filename=/dev/urandom");
	args_add(&a, "-device");
	args_add(&a, "virtio-rng-pci,rng=rng0");
	/* The guest hands memory it frees back to the host: about 30 MiB less
	 * resident per idle 256 MiB VM. */
	args_add(&a, "-device");
	args_add(&a, "virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on");
	static const char *const fw[] = { "hostname", "machine-id", "seed", "admin-key" };
	for (size_t i = 0; i < ARRAY_SIZE(fw); i++) {
		args_add(&a, "-fw_cfg");
		args_add(&a, "name=opt/hutch/%s,file=%s/%s", fw[i], run, fw[i]);
	}
	args_add(&a, "-chardev");
	args_add(&a, "socket,id=ser0,path=%s/console.sock,server=on,wait=off,logfile=%s/../console.log,logappend=on",
		 run, run);
	args_add(&a, "-serial");
	args_add(&a, "chardev:ser0");
	if (vm->agent) {
		/* The guest's agent (vmd-agent.c): one virtio port, its host side a socket. */
		args_add(&a, "-device");
		args_add(&a, "virtio-serial-pci,id=vser0");
		args_add(&a, "-chardev");
		args_add(&a, "socket,id=agent0,path=%s/agent.sock,server=on,wait=off", run);
		args_add(&a, "-device");
		args_add(&a, "virtserialport,bus=vser0.0,chardev=agent0,name=org.hutch.agent");
	}
	args_add(&a, "-chardev");
	args_add(&a, "socket,id=qmp0,path=%s/qmp.sock,server=on,wait=off", run);
	args_add(&a, "-mon");
	args_add(&a, "chardev=qmp0,mode=control");
	args_add(&a, "-pidfile");
	args_add(&a, "%s/qemu.pid", run);
	/* Guest code cannot reach beyond QEMU, and QEMU (once set up) only as its own uid. */
	args_add(&a, "-sandbox");
	args_add(&a, "on,obsolete=deny,resourcecontrol=deny");
	if (vm->uid) {
		args_add(&a, "-runas");
		args_add(&a, "%u:%u", vm->uid, vm->uid);
	}
	if (vm->incoming) {
		/* Resume: wait for the device state, stay stopped until vmd says cont. */
		args_add(&a, "-incoming");
		args_add(&a, "defer");
		args_add(&a, "-S");
	}
	args_add(&a, "-daemonize");

	{
		char line[512];
		int n = xsnprintf(line, sizeof line, "---- starting QEMU for %s (%s, port %u)\n",
				 vm->name, d->accel, port);
		(void)write_all(logfd, line, (size_t)MIN((size_t)n, sizeof line - 1));
		logoff += n;
	}
	r = run_wait(a.v, logfd, QEMU_START_TIMEOUT_MS, 0);
	args_free(&a);
	if (r != 0) {
		char msg[1024] = "";

		read_log_tail(logpath, logoff, msg, sizeof msg);
		xsnprintf(err, errsz, "QEMU failed to start%s%s", msg[0] ? ": " : "",
			 msg[0] ? msg : r == -ETIMEDOUT ? " in time" : "");
		return r > 0 ? -EIO : r;
	}
	xsnprintf(path, sizeof path, "%s/qemu.pid", run);
	r = read_pidfile(path, &pid);
	if (r < 0) {
		xsnprintf(err, errsz, "QEMU started but wrote no pid file %s", path);
		return r;
	}
	int pfd = pidfd_open_(pid);
	if (pfd < 0) {
		r = -errno;
		xsnprintf(err, errsz, "QEMU (pid %d) is already gone; see %s", pid, logpath);
		return r;
	}
	pthread_mutex_lock(&d->lock);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm->pidfd = pfd;
	vm->pid = pid;
	vm->ssh_port = port;
	vm->started = (uint64_t)time(NULL);
	xsnprintf(vm->accel, sizeof vm->accel, "%s", d->accel);
	pthread_mutex_unlock(&d->lock);
	/* Before a resumed state loads, so its agent finds the port as it was saved. */
	vm_agent_connect(d, vm);
	return 0;
}

bool vm_qemu_is_ours(struct vmd *d, struct vm *vm, pid_t pid)
{
	char path[64], qmp[VMD_PATH_MAX], buf[65536];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	if (pid <= 0 || vm_qmp_path(d, vm, qmp, sizeof qmp) < 0)
		return false;
	xsnprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	return memmem(buf, (size_t)n, qmp, strlen(qmp)) != NULL;
}

int vm_wait_ssh(struct vmd *d, struct vm *vm, unsigned timeout_ms, bool per_connection)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	unsigned port = 0;

	pthread_mutex_lock(&d->lock);
	port = vm->ssh_port;
	pthread_mutex_unlock(&d->lock);

	/* Short waits first: a connection that lost its way during a restart of
	 * the guest's server is cheaper to replace than to wait out. Longer
	 * ones later: a guest starved of CPU may take seconds to answer. A
	 * server started per connection (busybox nc execs dropbear) is never
	 * restarted, and replacing its connection only starts a second one:
	 * its first banner, a fresh exec in a fresh QEMU, takes 300 ms.
	 * Otherwise at most 1 s: during a boot, a connection made before the
	 * guest's network is up waits on slirp's SYN retries (seconds), while a
	 * new one gets through as soon as the server listens. */
	const int max_ms = per_connection ? 4000 : 1000;
	int banner_ms = per_connection ? 4000 : 250;

	while (now_ns() < deadline) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		bool alive;

		/* The monitor thread notices a QEMU that exits and changes the state. */
		pthread_mutex_lock(&d->lock);
		alive = vm->state == VM_RUNNING;
		pthread_mutex_unlock(&d->lock);
		if (!alive)
			return -ESRCH;
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
			/* slirp accepts at once; only the guest's server sends a banner. */
			struct pollfd p = { .fd = fd, .events = POLLIN };
			char banner[8];
			int waited = banner_ms, pr = poll(&p, 1, banner_ms);

			banner_ms = MIN(banner_ms * 2, max_ms);
			if (pr > 0 && read(fd, banner, 4) == 4 && memcmp(banner, "SSH-", 4) == 0) {
				pthread_mutex_lock(&d->lock);
				vm->ssh_ready = true;
				pthread_mutex_unlock(&d->lock);
				return 0;
			}
			if (pr == 0) {
				log_info("VM %s: no SSH banner on a connection in %d ms; trying a new one",
					 vm->name, waited);
				continue;	/* it waited already */
			}
		}
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

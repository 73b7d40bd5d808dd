/*
 * Sleep tiers: pause (QMP stop/cont), hibernate into the store, resume.
 *
 * Guest RAM is a shared file (run/ram, see vmd-qemu.c). Hibernate stops the
 * guest, saves only the device state (migration with x-ignore-shared, about
 * 1 MB) and copies RAM and state into store images vm.NAME.ram.GEN and
 * vm.NAME.state.GEN: page-aligned RAM dedups against the last hibernation
 * and other VMs of the same template, and zero pages are never stored.
 *
 * Crash safety rests on the record: it says "hibernated, generation GEN"
 * only once both images of GEN are complete; a hutch-vmd killed before that
 * leaves a running (maybe stopped) QEMU, which vm_sleep_recover() continues.
 * Resume starts QEMU with -S: the guest runs no instruction before the
 * record says "running" again, so a resume killed half-way can start over
 * from the same images with the disk untouched.
 */
#include "vmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "hutch-version.h"
#include "log.h"
#include "vmd-qmp.h"

#define ERRSZ 1024
#define QMP_TIMEOUT_MS 10000
#define MIGRATE_TIMEOUT_MS 120000
#define COPY_TIMEOUT_MS 600000

const char *vm_tier_name(enum vm_tier t)
{
	switch (t) {
	case TIER_AWAKE: return "awake";
	case TIER_PAUSED: return "paused";
	case TIER_HIBERNATED: return "hibernated";
	}
	return "?";
}

enum vm_tier vm_tier_from_name(const char *s)
{
	if (strcmp(s, "paused") == 0)
		return TIER_PAUSED;
	if (strcmp(s, "hibernated") == 0)
		return TIER_HIBERNATED;
	return TIER_AWAKE;
}

/* ---- helpers ------------------------------------------------------------ */

/* Runs ARGV, output into OUT (one line), killed with us (PDEATHSIG) or after
 * timeout_ms. Returns its exit status, or -errno. */
int run_cmd(char *const argv[], char *out, size_t outsz, unsigned timeout_ms)
{
	int pfd[2], status = 0;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	size_t len = 0;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -errno;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		/* A copy must not outlive a killed hutch-vmd and race its recovery. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (nul >= 0)
			dup2(nul, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	if (out && outsz)
		out[0] = '\0';
	for (;;) {
		char buf[1024];
		ssize_t n = read(pfd[0], buf, sizeof buf);

		if (n > 0) {
			if (out && len + 1 < outsz) {
				size_t k = MIN((size_t)n, outsz - 1 - len);

				memcpy(out + len, buf, k);
				len += k;
				out[len] = '\0';
			}
			continue;
		}
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (now_ns() >= deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			close(pfd[0]);
			return -ETIMEDOUT;
		}
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	close(pfd[0]);
	for (char *p = out; p && *p; p++)
		if (*p == '\n')
			*p = ' ';
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

pid_t guest_ssh_start(struct vmd *d, struct vm *vm, const char *known_hosts, unsigned connect_timeout_s,
		      const char *command, int in_fd, bool merge_err, int *out_fd)
{
	char port[16], kh[VMD_PATH_MAX + 32], ct[32];
	int out[2];
	pid_t pid;

	pthread_mutex_lock(&d->lock);
	xsnprintf(port, sizeof port, "%u", vm->ssh_port);
	pthread_mutex_unlock(&d->lock);
	xsnprintf(kh, sizeof kh, "UserKnownHostsFile=%s", known_hosts ? known_hosts : "/dev/null");
	xsnprintf(ct, sizeof ct, "ConnectTimeout=%u", connect_timeout_s);
	char *argv[] = { (char *)"ssh", (char *)"-q", (char *)"-i", d->admin_key, (char *)"-p", port,
			 (char *)"-o", kh,
			 (char *)"-o", (char *)(known_hosts ? "StrictHostKeyChecking=accept-new"
							    : "StrictHostKeyChecking=no"),
			 (char *)"-o", (char *)"IdentitiesOnly=yes", (char *)"-o", (char *)"BatchMode=yes",
			 (char *)"-o", ct, (char *)"-o", (char *)"LogLevel=ERROR",
			 (char *)"root@127.0.0.1", (char *)command, NULL };
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		/* It must not outlive a killed hutch-vmd. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in_fd, 0);
		dup2(out[1], 1);
		if (merge_err)
			dup2(out[1], 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	if (pid < 0) {
		int r = -errno;

		close(out[0]);
		return r;
	}
	*out_fd = out[0];
	return pid;
}

void vmd_helper_path(const char *name, char *buf, size_t sz)
{
	char exe[VMD_PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

	if (n > 0) {
		exe[n] = '\0';
		xsnprintf(buf, sz, "%s/%s", dirname(exe), name);
		if (access(buf, R_OK) == 0)
			return;
	}
	xsnprintf(buf, sz, "%s/%s", HUTCH_LIBEXECDIR, name);
}

static int image_name(const struct vm *vm, const char *what, unsigned gen, char *buf, size_t sz)
{
	int n = xsnprintf(buf, sz, "vm.%s.%s.%u", vm->name, what, gen);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

static int image_create(struct vmd *d, const char *name, uint64_t size, char *err, size_t errsz)
{
	json_object *req = json_object_new_object(), *reply = NULL;
	int r;

	json_object_object_add(req, "op", json_object_new_string("image.create"));
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "size", json_object_new_uint64(size));
	r = vmd_storaged_call(d, req, &reply, err, errsz);
	json_object_put(req);
	json_object_put(reply);
	return r;
}

static void image_rm_quiet(struct vmd *d, const char *name)
{
	char err[ERRSZ];
	int r = vmd_image_rm(d, name, err, sizeof err);

	if (r < 0 && r != -ENOENT)
		log_warn("cannot remove store image %s: %s", name, err);
}

static void rm_gen(struct vmd *d, struct vm *vm, unsigned gen)
{
	char img[HUTCH_NAME_MAX + 64];

	if (!gen)
		return;
	if (image_name(vm, "ram", gen, img, sizeof img) == 0)
		image_rm_quiet(d, img);
	if (image_name(vm, "state", gen, img, sizeof img) == 0)
		image_rm_quiet(d, img);
}

/* Removes every hibernation image of VM but generation KEEP (0: all), also
 * ones a killed hutch-vmd left behind. */
static void sweep_gens(struct vmd *d, struct vm *vm, unsigned keep)
{
	json_object *req = json_object_new_object(), *reply = NULL, *imgs;
	char err[ERRSZ], prefix[HUTCH_NAME_MAX + 8];
	size_t plen;

	json_object_object_add(req, "op", json_object_new_string("image.list"));
	json_object_object_add(req, "usage", json_object_new_boolean(false));
	if (vmd_storaged_call(d, req, &reply, err, sizeof err) < 0 ||
	    !json_object_object_get_ex(reply, "images", &imgs)) {
		json_object_put(req);
		json_object_put(reply);
		rm_gen(d, vm, keep + 1);
		return;
	}
	json_object_put(req);
	plen = (size_t)xsnprintf(prefix, sizeof prefix, "vm.%s.", vm->name);
	for (size_t i = 0; i < json_object_array_length(imgs); i++) {
		json_object *v;
		const char *name, *rest;
		char *end;

		if (!json_object_object_get_ex(json_object_array_get_idx(imgs, i), "name", &v))
			continue;
		name = json_object_get_string(v);
		if (strncmp(name, prefix, plen) != 0)
			continue;
		rest = name + plen;
		if (strncmp(rest, "ram.", 4) == 0)
			rest += 4;
		else if (strncmp(rest, "state.", 6) == 0)
			rest += 6;
		else
			continue;
		unsigned long g = strtoul(rest, &end, 10);
		if (*end || end == rest || g == keep)
			continue;
		/* vm.a.ram.5 may also be the disk of a VM named "a.ram.5". */
		struct vm *other = vmd_find(d, name + 3);
		if (other) {
			vm_put(d, other);
			continue;
		}
		image_rm_quiet(d, name);
	}
	json_object_put(reply);
}

static void nbd_uri(struct vmd *d, const char *image, char *buf, size_t sz)
{
	xsnprintf(buf, sz, "nbd+unix:///%s?socket=%s", image, d->nbd_sock);
}

/* Copies local FILE into the new store image IMAGE, skipping holes and zero blocks. */
int file_to_image(struct vmd *d, const char *file, const char *image, uint64_t size,
			 char *err, size_t errsz)
{
	char uri[VMD_PATH_MAX + 300], out[1024];
	int r;

	image_rm_quiet(d, image);
	r = image_create(d, image, size, err, errsz);
	if (r < 0)
		return r;
	nbd_uri(d, image, uri, sizeof uri);
	char *argv[] = { (char *)"nbdcopy", (char *)"--destination-is-zero", (char *)file, uri, NULL };
	r = run_cmd(argv, out, sizeof out, COPY_TIMEOUT_MS);
	if (r != 0) {
		xsnprintf(err, errsz, "copying %s into the store image %s failed: %s", file, image,
			 r < 0 ? strerror(-r) : out);
		return -EIO;
	}
	return 0;
}

/* Copies store image IMAGE into a new sparse local FILE, cut to SIZE bytes. */
static int image_to_file(struct vmd *d, const char *image, const char *file, uint64_t size,
			 char *err, size_t errsz)
{
	char uri[VMD_PATH_MAX + 300], out[1024];
	int r;

	unlink(file);
	nbd_uri(d, image, uri, sizeof uri);
	char *argv[] = { (char *)"qemu-img", (char *)"convert", (char *)"-f", (char *)"raw",
			 (char *)"-O", (char *)"raw", uri, (char *)file, NULL };
	r = run_cmd(argv, out, sizeof out, COPY_TIMEOUT_MS);
	if (r != 0) {
		xsnprintf(err, errsz, "copying the store image %s to %s failed: %s", image, file,
			 r < 0 ? strerror(-r) : out);
		return -EIO;
	}
	if (truncate(file, (off_t)size) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot size %s: %s", file, strerror(-r));
		return r;
	}
	return 0;
}

int vm_qmp(struct vmd *d, struct vm *vm, struct qmp **q, char *err, size_t errsz)
{
	char path[VMD_PATH_MAX];
	int r;

	if (vm_qmp_path(d, vm, path, sizeof path) < 0)
		return -ENAMETOOLONG;
	r = qmp_connect(path, QMP_TIMEOUT_MS, q);
	if (r < 0)
		xsnprintf(err, errsz, "cannot reach QEMU's monitor %s: %s", path, strerror(-r));
	return r;
}

/* QEMU's run state: "running", "paused", "postmigrate", "finish-migrate", ... */
static int qmp_status(struct qmp *q, char *status, size_t sz)
{
	json_object *ret = NULL, *v;
	int r = qmp_execute(q, "query-status", NULL, QMP_TIMEOUT_MS, &ret, NULL, 0);

	if (r == 0 && json_object_object_get_ex(ret, "status", &v))
		xsnprintf(status, sz, "%s", json_object_get_string(v));
	else if (r == 0)
		r = -EBADMSG;
	json_object_put(ret);
	return r;
}

int set_ignore_shared(struct qmp *q, char *err, size_t errsz)
{
	json_object *args = json_object_new_object(), *caps = json_object_new_array();
	json_object *cap = json_object_new_object();
	int r;

	json_object_object_add(cap, "capability", json_object_new_string("x-ignore-shared"));
	json_object_object_add(cap, "state", json_object_new_boolean(true));
	json_object_array_add(caps, cap);
	json_object_object_add(args, "capabilities", caps);
	r = qmp_execute(q, "migrate-set-capabilities", args, QMP_TIMEOUT_MS, NULL, err, errsz);
	json_object_put(args);
	return r;
}

int qmp_uri_cmd(struct qmp *q, const char *cmd, const char *uri, char *err, size_t errsz)
{
	json_object *args = json_object_new_object();
	int r;

	json_object_object_add(args, "uri", json_object_new_string(uri));
	r = qmp_execute(q, cmd, args, QMP_TIMEOUT_MS, NULL, err, errsz);
	json_object_put(args);
	return r;
}

/* Polls query-migrate until the migration completed or failed. */
int wait_migration(struct qmp *q, char *err, size_t errsz)
{
	uint64_t deadline = now_ns() + (uint64_t)MIGRATE_TIMEOUT_MS * 1000000u;

	while (now_ns() < deadline) {
		json_object *ret = NULL, *v;
		char status[64] = "";
		int r = qmp_execute(q, "query-migrate", NULL, QMP_TIMEOUT_MS, &ret, err, errsz);

		if (r < 0)
			return r;
		if (json_object_object_get_ex(ret, "status", &v))
			xsnprintf(status, sizeof status, "%s", json_object_get_string(v));
		if (strcmp(status, "completed") == 0) {
			json_object_put(ret);
			return 0;
		}
		if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
			xsnprintf(err, errsz, "QEMU's migration %s: %s", status,
				 json_object_object_get_ex(ret, "error-desc", &v) ?
				 json_object_get_string(v) : "no reason given");
			json_object_put(ret);
			return -EIO;
		}
		json_object_put(ret);
		struct timespec ts = { 0, 2 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	xsnprintf(err, errsz, "QEMU's migration did not complete in %d s", MIGRATE_TIMEOUT_MS / 1000);
	return -ETIMEDOUT;
}

/*
 * Stops the guest and saves its device state into STATE: everything but the
 * RAM of its own file, which x-ignore-shared leaves out. A warm fork has no
 * file of its own (RAM_WARM_PRIVATE): QEMU sends its RAM in the stream and
 * hutch-vmstate-split takes it out into SPLIT_RAM, page-aligned like a RAM
 * file, so the state is the same as for any other VM.
 */
int vm_save_state(struct qmp *q, const char *state, const char *split_ram, char *err, size_t errsz)
{
	char uri[3 * VMD_PATH_MAX + 32], helper[VMD_PATH_MAX];
	int r;

	unlink(state);
	if (split_ram) {
		unlink(split_ram);
		vmd_helper_path("hutch-vmstate-split", helper, sizeof helper);
		xsnprintf(uri, sizeof uri, "exec:'%s' ram0 '%s' > '%s'", helper, split_ram, state);
	} else {
		xsnprintf(uri, sizeof uri, "exec:cat > '%s'", state);
	}
	if ((r = qmp_execute(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err, errsz)) < 0 ||
	    (r = set_ignore_shared(q, err, errsz)) < 0 ||
	    (r = qmp_uri_cmd(q, "migrate", uri, err, errsz)) < 0)
		return r;
	return wait_migration(q, err, errsz);
}

enum ram_kind vm_ram_kind(const struct vm *vm)
{
	char path[64], buf[65536];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	xsnprintf(path, sizeof path, "/proc/%d/cmdline", vm->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return RAM_ANONYMOUS;
	n = read(fd, buf, sizeof buf);
	if (n <= 0 || !memmem(buf, (size_t)n, "memory-backend-file", 19))
		return RAM_ANONYMOUS;
	return memmem(buf, (size_t)n, "share=off", 9) ? RAM_WARM_PRIVATE : RAM_OWN_FILE;
}

/*
 * Where QEMU's device state goes: QEMU runs `cat` for it after dropping to
 * the VM's uid, which cannot enter the VM's own directory; so a directory
 * of that uid's own under $HOME/run/sleep.
 */
int state_path(struct vmd *d, struct vm *vm, char *buf, size_t sz)
{
	char dir[VMD_PATH_MAX], name[HUTCH_NAME_MAX + 16];

	xsnprintf(name, sizeof name, "run/sleep/%s", vm->name);
	if (hutch_path(dir, sizeof dir, d->home, "run/sleep") < 0)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0711) < 0 && errno != EEXIST)
		return -errno;
	if (hutch_path(dir, sizeof dir, d->home, name) < 0)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (vm->uid && chown(dir, vm->uid, vm->uid) < 0)
		return -errno;
	if ((size_t)xsnprintf(buf, sz, "%s/state", dir) >= sz)
		return -ENAMETOOLONG;
	return 0;
}

/* Where a warm fork's RAM is split out to while it hibernates: beside its state. */
static int split_ram_path(struct vmd *d, struct vm *vm, char *buf, size_t sz)
{
	int r = state_path(d, vm, buf, sz);
	char *slash = r < 0 ? NULL : strrchr(buf, '/');

	if (!slash || (size_t)(slash - buf) + sizeof "/ram" > sz)
		return r < 0 ? r : -ENAMETOOLONG;
	strcpy(slash, "/ram");
	return 0;
}

static void set_tier(struct vmd *d, struct vm *vm, enum vm_tier t)
{
	vm->tier = t;
	vm->tier_since = (uint64_t)time(NULL);
	vm->idle.busy_ns = now_ns();	/* a fresh idle period starts at every change */
}

static void unlink_local(struct vmd *d, struct vm *vm)
{
	char path[VMD_PATH_MAX];

	if (vm_dir(d, vm->name, "run/ram", path, sizeof path) == 0)
		unlink(path);
	if (state_path(d, vm, path, sizeof path) == 0)
		unlink(path);
	if (split_ram_path(d, vm, path, sizeof path) == 0)
		unlink(path);
}

/* ---- the guest's clock ------------------------------------------------- */

/*
 * A guest that slept has lost the time it slept. Set it over SSH with the
 * platform's key: the session prints a line when ready, and only then the
 * host time is sent (rounded), so the SSH handshake adds no error.
 */
static int set_guest_clock(struct vmd *d, struct vm *vm)
{
	char khf[VMD_PATH_MAX];
	int in[2], outfd = -1, status;
	pid_t pid;

	if (vm->agent_fd >= 0) {
		/* The agent answers within milliseconds: no handshake to wait out. */
		struct timespec ts;
		char cmd[64];

		clock_gettime(CLOCK_REALTIME, &ts);
		xsnprintf(cmd, sizeof cmd, "date -u -s @%lld >/dev/null",
			  (long long)ts.tv_sec + (ts.tv_nsec >= 500000000));
		if (vm_agent_run(vm, cmd, NULL, 0, 10000) == 0)
			return 0;
	}

	if (vm_dir(d, vm->name, "known_hosts", khf, sizeof khf) < 0)
		return -ENAMETOOLONG;
	if (pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	pid = guest_ssh_start(d, vm, khf, 20, "echo ready; read t; date -u -s \"@$t\" >/dev/null && echo set",
			      in[0], false, &outfd);
	close(in[0]);
	FILE *f = pid > 0 ? fdopen(outfd, "r") : NULL;
	char line[64] = "";
	int r = -EIO;

	if (f && fgets(line, sizeof line, f) && strncmp(line, "ready", 5) == 0) {
		struct timespec ts;
		char t[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		int n = xsnprintf(t, sizeof t, "%lld\n", (long long)ts.tv_sec + (ts.tv_nsec >= 500000000));
		if (write_all(in[1], t, (size_t)n) == 0 && fgets(line, sizeof line, f) &&
		    strncmp(line, "set", 3) == 0)
			r = 0;
	}
	close(in[1]);
	if (f)
		fclose(f);
	else if (pid > 0)
		close(outfd);
	if (pid > 0)
		waitpid(pid, &status, 0);
	return r;
}

struct clock_job {
	struct vmd *d;
	struct vm *vm;
};

static void *clock_thread(void *arg)
{
	struct clock_job *j = arg;

	if ((j->vm->agent_fd >= 0 || vm_wait_ssh(j->d, j->vm, 60000, false) == 0) && set_guest_clock(j->d, j->vm) == 0)
		log_info("VM %s: guest clock set", j->vm->name);
	else
		log_warn("VM %s: could not set the guest's clock after its sleep", j->vm->name);
	vm_put(j->d, j->vm);
	free(j);
	return NULL;
}

/* Corrects the guest's clock now (WAIT) or in the background. */
static void fix_clock(struct vmd *d, struct vm *vm, bool wait)
{
	struct clock_job *j = malloc(sizeof *j);
	pthread_t t;

	if (!j)
		return;
	pthread_mutex_lock(&d->lock);
	vm->refs++;
	pthread_mutex_unlock(&d->lock);
	*j = (struct clock_job){ d, vm };
	if (wait) {
		clock_thread(j);
		return;
	}
	if (pthread_create(&t, NULL, clock_thread, j) != 0) {
		vm_put(d, vm);
		free(j);
		return;
	}
	pthread_detach(t);
}

/* ---- pause ---------------------------------------------------------------- */

int vm_pause_locked(struct vmd *d, struct vm *vm, char *err, size_t errsz)
{
	struct qmp *q = NULL;
	bool running;
	int r;

	pthread_mutex_lock(&d->lock);
	running = vm->state == VM_RUNNING;
	pthread_mutex_unlock(&d->lock);
	if (vm->tier != TIER_AWAKE)
		return 0;
	if (!running) {
		xsnprintf(err, errsz, "VM '%s' is not running; only a running VM can be paused", vm->name);
		return -EINVAL;
	}
	r = vm_qmp(d, vm, &q, err, errsz);
	if (r < 0)
		return r;
	uint64_t t0 = now_ns();
	r = qmp_execute(q, "stop", NULL, QMP_TIMEOUT_MS, NULL, err, errsz);
	uint64_t t1 = now_ns();
	qmp_close(q);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	set_tier(d, vm, TIER_PAUSED);
	vm_record_save(d, vm);
	pthread_mutex_unlock(&d->lock);
	log_info("VM %s paused (QMP stop took %" PRIu64 " us)", vm->name, (t1 - t0) / 1000);
	return 0;
}

/* ---- hibernate ------------------------------------------------------------ */

int vm_hibernate_locked(struct vmd *d, struct vm *vm, char *err, size_t errsz)
{
	char ram[VMD_PATH_MAX], state[VMD_PATH_MAX], status[32] = "";
	char ram_img[HUTCH_NAME_MAX + 64], state_img[HUTCH_NAME_MAX + 64];
	unsigned gen = vm->hib_gen + 1, old_gen = vm->hib_gen;
	struct qmp *q = NULL;
	struct stat st;
	bool running;
	pid_t pid;
	int r, pidfd;
	uint64_t t0 = now_ns();

	if (vm->tier == TIER_HIBERNATED)
		return 0;
	pthread_mutex_lock(&d->lock);
	running = vm->state == VM_RUNNING;
	pid = vm->pid;
	pthread_mutex_unlock(&d->lock);
	if (!running) {
		xsnprintf(err, errsz, "VM '%s' is not running; only a running VM can hibernate", vm->name);
		return -EINVAL;
	}
	enum ram_kind kind = vm_ram_kind(vm);
	if (kind == RAM_ANONYMOUS) {
		xsnprintf(err, errsz, "VM '%s' was started without a RAM file (an older hutch-vmd); "
			 "restart it once (`hutch vm restart %s`) to be able to hibernate it", vm->name, vm->name);
		return -EOPNOTSUPP;
	}
	if (image_name(vm, "state", gen, state_img, sizeof state_img) < 0 ||
	    image_name(vm, "ram", gen, ram_img, sizeof ram_img) < 0 || strlen(ram_img) > HUTCH_NAME_MAX ||
	    strlen(state_img) > HUTCH_NAME_MAX) {
		xsnprintf(err, errsz, "VM name '%s' is too long for its hibernation images", vm->name);
		return -ENAMETOOLONG;
	}
	if ((r = state_path(d, vm, state, sizeof state)) < 0) {
		xsnprintf(err, errsz, "cannot make the directory for %s's device state: %s", vm->name,
			 strerror(-r));
		return r;
	}
	if ((kind == RAM_OWN_FILE ? vm_dir(d, vm->name, "run/ram", ram, sizeof ram)
				  : split_ram_path(d, vm, ram, sizeof ram)) < 0)
		return -ENAMETOOLONG;

	r = vm_qmp(d, vm, &q, err, errsz);
	if (r < 0)
		return r;
	/* The guest stops here; everything until the record may still be undone with cont. */
	if ((r = vm_save_state(q, state, kind == RAM_WARM_PRIVATE ? ram : NULL, err, errsz)) < 0)
		goto undo;
	/* Migration completed: QEMU drained and flushed its disk to hutch-storaged. */
	if (stat(state, &st) < 0 || st.st_size == 0) {
		r = -EIO;
		xsnprintf(err, errsz, "QEMU wrote no device state into %s", state);
		goto undo;
	}
	uint64_t t1 = now_ns();
	if ((r = file_to_image(d, ram, ram_img, vm->memory, err, errsz)) < 0 ||
	    (r = file_to_image(d, state, state_img, ((uint64_t)st.st_size + 4095) & ~4095ull, err, errsz)) < 0)
		goto undo;
	uint64_t t2 = now_ns();

	/* Both images complete: this record is the commit point. */
	pthread_mutex_lock(&d->lock);
	vm->hib_gen = gen;
	vm->hib_state_size = (uint64_t)st.st_size;
	vm->state = VM_STOPPED;
	vm->stop_requested = true;
	vm->ssh_ready = false;
	set_tier(d, vm, TIER_HIBERNATED);
	r = vm_record_save(d, vm);
	if (r < 0) {
		vm->hib_gen = old_gen;
		vm->state = VM_RUNNING;
		vm->tier = TIER_AWAKE;
		pthread_mutex_unlock(&d->lock);
		xsnprintf(err, errsz, "cannot write the record of VM '%s': %s", vm->name, strerror(-r));
		goto undo;
	}
	pidfd = vm->pidfd;
	vm->pidfd = -1;
	vm->pid = 0;
	pthread_mutex_unlock(&d->lock);
	vmd_monitor_kick(d);

	qmp_execute(q, "quit", NULL, 2000, NULL, NULL, 0);
	qmp_close(q);
	if (pidfd >= 0) {
		if (pidfd_wait(pidfd, 5000) < 0) {
			syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
			pidfd_wait(pidfd, 5000);
		}
		close(pidfd);
	}
	unlink_local(d, vm);
	rm_gen(d, vm, old_gen);
	log_info("VM %s hibernated (pid %d gone; device state %lld bytes; stop+save %" PRIu64
		 " ms, into the store %" PRIu64 " ms)", vm->name, pid, (long long)st.st_size,
		 (t1 - t0) / 1000000, (t2 - t1) / 1000000);
	return 0;

undo:
	/* Back to where it was: the guest carries on, the half-written images go. */
	if (q) {
		if (qmp_status(q, status, sizeof status) == 0 &&
		    (strcmp(status, "paused") == 0 || strcmp(status, "postmigrate") == 0))
			qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, NULL, 0);
		qmp_close(q);
	}
	rm_gen(d, vm, gen);
	unlink(state);
	if (kind == RAM_WARM_PRIVATE)
		unlink(ram);
	log_warn("VM %s: hibernate failed, the VM keeps running: %s", vm->name, err);
	return r;
}

/* ---- wake ------------------------------------------------------------------- */

static int resume_locked(struct vmd *d, struct vm *vm, bool wait, char *err, size_t errsz)
{
	char ram[VMD_PATH_MAX], state[VMD_PATH_MAX], uri[VMD_PATH_MAX + 16], qerr[256];
	char ram_img[HUTCH_NAME_MAX + 64], state_img[HUTCH_NAME_MAX + 64];
	struct qmp *q = NULL;
	uint64_t t0 = now_ns(), t1, t2;
	int r;

	if (image_name(vm, "ram", vm->hib_gen, ram_img, sizeof ram_img) < 0 ||
	    image_name(vm, "state", vm->hib_gen, state_img, sizeof state_img) < 0 ||
	    vm_dir(d, vm->name, "run/ram", ram, sizeof ram) < 0)
		return -ENAMETOOLONG;
	if ((r = state_path(d, vm, state, sizeof state)) < 0) {
		xsnprintf(err, errsz, "cannot make the directory for %s's device state: %s", vm->name,
			 strerror(-r));
		return r;
	}
	if (vm_dir(d, vm->name, "run", uri, sizeof uri) == 0)
		mkdir(uri, 0700);
	if ((r = image_to_file(d, ram_img, ram, vm->memory, err, errsz)) < 0 ||
	    (r = image_to_file(d, state_img, state, vm->hib_state_size, err, errsz)) < 0)
		goto fail;
	if (vm->uid && chown(state, vm->uid, vm->uid) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot hand %s to the VM's uid: %s", state, strerror(-r));
		goto fail;
	}
	t1 = now_ns();

	pthread_mutex_lock(&d->lock);
	vm->state = VM_STARTING;
	vm->stop_requested = false;
	vm->ssh_ready = false;
	vm->error[0] = '\0';
	vm->incoming = true;
	pthread_mutex_unlock(&d->lock);
	r = vm_qemu_start(d, vm, err, errsz);
	vm->incoming = false;
	if (r < 0)
		goto fail;
	if ((r = vm_qmp(d, vm, &q, err, errsz)) < 0 || (r = set_ignore_shared(q, err, errsz)) < 0)
		goto kill;
	xsnprintf(uri, sizeof uri, "exec:cat '%s'", state);
	if ((r = qmp_uri_cmd(q, "migrate-incoming", uri, err, errsz)) < 0 ||
	    (r = wait_migration(q, err, errsz)) < 0)
		goto kill;

	/* The guest has not run yet: from here on it does, so record it first. */
	pthread_mutex_lock(&d->lock);
	vm->state = VM_RUNNING;
	set_tier(d, vm, TIER_AWAKE);
	r = vm_record_save(d, vm);
	pthread_mutex_unlock(&d->lock);
	if (r < 0) {
		xsnprintf(err, errsz, "cannot write the record of VM '%s': %s", vm->name, strerror(-r));
		goto kill;
	}
	vmd_monitor_kick(d);
	r = qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, qerr, sizeof qerr);
	qmp_close(q);
	t2 = now_ns();
	if (r < 0)
		log_warn("VM %s: cont after resume: %s", vm->name, qerr);
	unlink(state);
	log_info("VM %s resumed from the store (pid %d; from the store %" PRIu64 " ms, QEMU %" PRIu64
		 " ms)", vm->name, vm->pid, (t1 - t0) / 1000000, (t2 - t1) / 1000000);
	fix_clock(d, vm, wait);
	return 0;

kill:
	if (q)
		qmp_close(q);
	pthread_mutex_lock(&d->lock);
	vm->stop_requested = true;
	int pidfd = vm->pidfd;
	vm->pidfd = -1;
	vm->pid = 0;
	pthread_mutex_unlock(&d->lock);
	if (pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		pidfd_wait(pidfd, 5000);
		close(pidfd);
	}
fail:
	pthread_mutex_lock(&d->lock);
	vm->state = VM_STOPPED;
	xsnprintf(vm->error, sizeof vm->error, "resume failed (still hibernated): %s", err);
	pthread_mutex_unlock(&d->lock);
	unlink_local(d, vm);
	log_warn("VM %s: resume failed, it stays hibernated: %s", vm->name, err);
	return r;
}

int vm_wake_locked(struct vmd *d, struct vm *vm, bool wait, char *err, size_t errsz)
{
	struct qmp *q = NULL;
	int r;

	if (vm->tier == TIER_AWAKE)
		return 0;
	if (vm->tier == TIER_HIBERNATED) {
		r = resume_locked(d, vm, wait, err, errsz);
		return r < 0 ? r : 1;
	}
	r = vm_qmp(d, vm, &q, err, errsz);
	if (r < 0)
		return r;
	uint64_t t0 = now_ns();
	r = qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err, errsz);
	uint64_t t1 = now_ns();
	qmp_close(q);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	uint64_t slept = (uint64_t)time(NULL) - vm->tier_since;
	set_tier(d, vm, TIER_AWAKE);
	vm_record_save(d, vm);
	pthread_mutex_unlock(&d->lock);
	log_info("VM %s continued (QMP cont took %" PRIu64 " us)", vm->name, (t1 - t0) / 1000);
	if (slept >= 1)
		fix_clock(d, vm, false);
	return 1;
}

void vm_sleep_before_stop(struct vmd *d, struct vm *vm, bool force)
{
	char err[ERRSZ];

	if (vm->tier == TIER_PAUSED) {
		if (vm_wake_locked(d, vm, false, err, sizeof err) < 0)
			log_warn("VM %s: cannot continue it before stopping: %s", vm->name, err);
	} else if (vm->tier == TIER_HIBERNATED) {
		/* A clean stop resumes it first, so the guest shuts down properly. */
		if (!force && vm_wake_locked(d, vm, false, err, sizeof err) >= 0)
			return;
		pthread_mutex_lock(&d->lock);
		set_tier(d, vm, TIER_AWAKE);
		vm_record_save(d, vm);
		pthread_mutex_unlock(&d->lock);
		unlink_local(d, vm);
		log_info("VM %s: its hibernated memory is dropped", vm->name);
	}
}

void vm_sleep_forget(struct vmd *d, struct vm *vm)
{
	sweep_gens(d, vm, 0);
}

/* ---- recovery at start-up --------------------------------------------------- */

/* Kills every QEMU of VM's, found by its command line (its pid file may
 * not exist yet), and waits until each is gone. */
void vm_kill_leftover_qemus(struct vmd *d, struct vm *vm, const char *why)
{
	DIR *proc = opendir("/proc");
	struct dirent *de;

	while (proc && (de = readdir(proc))) {
		pid_t pid = (pid_t)atoi(de->d_name);

		if (pid <= 0 || !vm_qemu_is_ours(d, vm, pid))
			continue;
		log_info("VM %s: %s; stopping its leftover QEMU (pid %d)", vm->name, why, pid);
		kill(pid, SIGKILL);
		for (int i = 0; i < 500 && kill(pid, 0) == 0; i++) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	if (proc)
		closedir(proc);
}

void vm_sleep_recover(struct vmd *d, struct vm *vm)
{
	char err[ERRSZ] = "", status[32] = "", path[VMD_PATH_MAX];
	struct qmp *q = NULL;

	/* Images of a generation that never got into the record, or of one
	 * replaced when hutch-vmd was killed before removing it, are garbage. */
	sweep_gens(d, vm, vm->hib_gen);
	if (vm->tier == TIER_HIBERNATED) {
		/* A QEMU still there was quitting, or resuming but never ran the guest. */
		vm_kill_leftover_qemus(d, vm, "hibernated");
		vm->state = VM_STOPPED;
		vm->pid = 0;
		unlink_local(d, vm);
		return;
	}
	if (vm->state != VM_RUNNING || !vm_qemu_is_ours(d, vm, vm->pid))
		return;
	/* Running: a hibernate may have stopped the guest (or still be saving it). */
	if (vm_qmp(d, vm, &q, err, sizeof err) < 0) {
		log_warn("VM %s: %s", vm->name, err);
		return;
	}
	for (int i = 0; i < 600; i++) {
		if (qmp_status(q, status, sizeof status) < 0 || strcmp(status, "finish-migrate") != 0)
			break;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (strcmp(status, "postmigrate") == 0 || strcmp(status, "prelaunch") == 0 ||
	    (strcmp(status, "paused") == 0 && vm->tier != TIER_PAUSED)) {
		/* A save still running would fail cont; cancel it first. */
		qmp_execute(q, "migrate_cancel", NULL, QMP_TIMEOUT_MS, NULL, NULL, 0);
		if (qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err, sizeof err) == 0)
			log_info("VM %s: continued its guest, left %s by an interrupted hibernate or resume",
				 vm->name, status);
		else
			log_warn("VM %s: cannot continue its guest (%s): %s", vm->name, status, err);
	}
	qmp_close(q);
	if (state_path(d, vm, path, sizeof path) == 0)
		unlink(path);
}

/* ---- control operations ----------------------------------------------------- */

static int reply_vm(struct vmd *d, int fd, struct vm *vm, uint64_t took_us)
{
	json_object *o = json_object_new_object();

	pthread_mutex_lock(&d->lock);
	json_object_object_add(o, "vm", vm_to_json(d, vm, true));
	pthread_mutex_unlock(&d->lock);
	json_object_object_add(o, "took_us", json_object_new_uint64(took_us));
	return ctl_reply_ok(fd, o);
}

int vmd_sleep_op(struct vmd *d, int fd, const char *op, json_object *req)
{
	char why[256], err[ERRSZ] = "";
	const char *name;
	json_object *v;
	struct vm *vm;
	bool wait = true;
	int r = 0;

	if (ctl_arg_string(req, "name", &name, why, sizeof why) < 0)
		return ctl_reply_error(fd, EINVAL, "%s", why);
	if (json_object_object_get_ex(req, "wait", &v) && json_object_is_type(v, json_type_boolean))
		wait = json_object_get_boolean(v);
	vm = vmd_find(d, name);
	if (!vm)
		return ctl_reply_error(fd, ENOENT, "no VM named '%s' (see `hutch vm list`)", name);
	uint64_t t0 = now_ns();
	if (strcmp(op, "vm.session") == 0) {
		const char *action = "";

		if (json_object_object_get_ex(req, "action", &v) && json_object_is_type(v, json_type_string))
			action = json_object_get_string(v);
		if (strcmp(action, "begin") == 0) {
			pthread_mutex_lock(&vm->op_lock);
			pthread_mutex_lock(&d->lock);
			vm->sessions++;
			vm->idle.busy_ns = now_ns();
			pthread_mutex_unlock(&d->lock);
			r = vm_wake_locked(d, vm, wait, err, sizeof err);
			if (r < 0) {
				/* Not begun: the caller will not end it. */
				pthread_mutex_lock(&d->lock);
				vm->sessions--;
				pthread_mutex_unlock(&d->lock);
			}
			pthread_mutex_unlock(&vm->op_lock);
		} else if (strcmp(action, "end") == 0) {
			pthread_mutex_lock(&d->lock);
			if (vm->sessions)
				vm->sessions--;
			vm->idle.busy_ns = now_ns();
			pthread_mutex_unlock(&d->lock);
		} else {
			r = -EINVAL;
			xsnprintf(err, sizeof err, "action must be begin or end");
		}
	} else {
		pthread_mutex_lock(&vm->op_lock);
		if (vm->removed) {
			r = -ENOENT;
			xsnprintf(err, sizeof err, "VM '%s' was just removed", name);
		} else if (strcmp(op, "vm.pause") == 0) {
			r = vm_pause_locked(d, vm, err, sizeof err);
		} else if (strcmp(op, "vm.hibernate") == 0) {
			r = vm_hibernate_locked(d, vm, err, sizeof err);
		} else {
			r = vm_wake_locked(d, vm, wait, err, sizeof err);
		}
		pthread_mutex_unlock(&vm->op_lock);
	}
	uint64_t t1 = now_ns();
	if (r < 0)
		r = ctl_reply_error(fd, r, "%s", err);
	else
		r = reply_vm(d, fd, vm, (t1 - t0) / 1000);
	vm_put(d, vm);
	return r;
}

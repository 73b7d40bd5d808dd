/* VM lifecycle: create, start, stop, rm, fork; re-adoption and the monitor thread. */
#include "vmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "log.h"
#include "vmd-qmp.h"

#define ERRSZ 1024
#define VM_MAX_CPUS 512
#define KILL_WAIT_MS 5000

/* ---- helpers ------------------------------------------------------------ */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_rf(const char *path)
{
	if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static uint64_t host_memory(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	unsigned long long kb;

	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			return kb * 1024;
	return 0;
}

static int random_bytes(void *buf, size_t n)
{
	_cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, buf, n) != (ssize_t)n)
		return -EIO;
	return 0;
}

static int new_identity(struct vm *vm)
{
	unsigned char b[19];

	if (random_bytes(b, sizeof b) < 0)
		return -EIO;
	for (int i = 0; i < 16; i++)
		sprintf(vm->machine_id + 2 * i, "%02x", b[i]);
	/* QEMU's locally administered prefix. */
	xsnprintf(vm->mac, sizeof vm->mac, "52:54:00:%02x:%02x:%02x", b[16], b[17], b[18]);
	return 0;
}

/* Lowest free uid in [uid_base, uid_base+uid_count); 0 when vmd is not root.
 * Caller holds d->lock (and links the VM before dropping it). */
static int alloc_uid(struct vmd *d, unsigned *uid)
{
	if (geteuid() != 0) {
		*uid = 0;
		return 0;
	}
	for (unsigned i = 0; i < d->cfg.vmd.uid_count; i++) {
		unsigned u = d->cfg.vmd.uid_base + i;
		bool used = false;

		for (struct vm *vm = d->vms; vm && !used; vm = vm->next)
			used = vm->uid == u;
		if (!used) {
			*uid = u;
			return 0;
		}
	}
	return -ENOSPC;
}

/* Keeps the list sorted by name. Caller holds d->lock. */
static void vm_link(struct vmd *d, struct vm *vm)
{
	struct vm **p = &d->vms;

	while (*p && strcmp((*p)->name, vm->name) < 0)
		p = &(*p)->next;
	vm->next = *p;
	*p = vm;
}

static void vm_unlink(struct vmd *d, struct vm *vm)
{
	pthread_mutex_lock(&d->lock);
	for (struct vm **p = &d->vms; *p; p = &(*p)->next)
		if (*p == vm) {
			*p = vm->next;
			vm->removed = true;
			vm->refs--;	/* the list's reference; the caller still holds one */
			break;
		}
	pthread_mutex_unlock(&d->lock);
}

static int copy_or_link(const char *src, const char *dst)
{
	return link(src, dst) == 0 ? 0 : copy_file(src, dst);
}

/* ---- start / stop --------------------------------------------------------- */

/* Caller holds vm->op_lock. */
static int vm_start_locked(struct vmd *d, struct vm *vm, bool wait, char *err, size_t errsz)
{
	int r;

	/* A sleeping VM wakes instead: resumed from the store, or continued. */
	r = vm_wake_locked(d, vm, wait, err, errsz);
	if (r != 0)
		return r < 0 ? r : 0;
	pthread_mutex_lock(&d->lock);
	if (vm->state == VM_RUNNING) {
		pthread_mutex_unlock(&d->lock);
		xsnprintf(err, errsz, "VM '%s' is already running", vm->name);
		return -EALREADY;
	}
	vm->state = VM_STARTING;
	vm->stop_requested = false;
	vm->ssh_ready = false;
	vm->error[0] = '\0';
	pthread_mutex_unlock(&d->lock);

	bool fork_resume = vm->warm_from[0] || vm->live_fork;

	/* The first start of a warm or live fork resumes saved memory (vmd-warm.c). */
	r = fork_resume ? vm_warm_start(d, vm, err, errsz) : vm_qemu_start(d, vm, err, errsz);
	vm->warm_from[0] = '\0';
	vm->live_fork = false;
	pthread_mutex_lock(&d->lock);
	if (r < 0) {
		vm->state = VM_STOPPED;
		vm->pid = 0;
		xsnprintf(vm->error, sizeof vm->error, "%s", err);
	} else {
		vm->state = VM_RUNNING;
	}
	vm_record_save(d, vm);
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		return r;
	log_info("VM %s started (pid %d, %s, ssh on 127.0.0.1:%u)", vm->name, vm->pid, vm->accel,
		 vm->ssh_port);
	vmd_monitor_kick(d);
	if (!wait && !fork_resume)
		return 0;
	/* A fork must not keep its source's identity: given before anyone logs in,
	 * through the agent the moment it runs, else over SSH once that answers. */
	if (fork_resume && vm->agent_fd >= 0)
		r = vm_warm_reidentify(d, vm, err, errsz);
	else if ((r = vm_wait_ssh(d, vm, d->cfg.vmd.boot_timeout_ms, false)) == 0 && fork_resume)
		r = vm_warm_reidentify(d, vm, err, errsz);
	if (fork_resume && r < 0 && r != -ESRCH && r != -ETIMEDOUT)
		return r;
	if (r == -ESRCH) {
		char log[VMD_PATH_MAX];

		vm_dir(d, vm->name, "console.log", log, sizeof log);
		xsnprintf(err, errsz, "VM '%s' stopped while booting; see %s", vm->name, log);
	} else if (r < 0) {
		xsnprintf(err, errsz, "VM '%s' runs but its SSH server did not answer within %u s; "
			 "see `hutch vm console %s`", vm->name, d->cfg.vmd.boot_timeout_ms / 1000, vm->name);
	}
	return r;
}

/* Caller holds vm->op_lock. */
static int vm_stop_locked(struct vmd *d, struct vm *vm, bool force, char *err, size_t errsz)
{
	char qmp_path[VMD_PATH_MAX], qerr[256] = "";
	struct qmp *q = NULL;
	pid_t pid;
	int pidfd, r = -ETIMEDOUT;

	vm_sleep_before_stop(d, vm, force);
	pthread_mutex_lock(&d->lock);
	if (vm->state != VM_RUNNING) {
		/* Stopping a crashed VM acknowledges it. */
		if (vm->state == VM_CRASHED)
			vm->state = VM_STOPPED;
		vm_record_save(d, vm);
		pthread_mutex_unlock(&d->lock);
		return 0;
	}
	vm->state = VM_STOPPING;
	vm->stop_requested = true;
	pid = vm->pid;
	pidfd = vm->pidfd;
	pthread_mutex_unlock(&d->lock);

	if (!force && vm_qmp_path(d, vm, qmp_path, sizeof qmp_path) == 0 &&
	    qmp_connect(qmp_path, 5000, &q) == 0) {
		if (qmp_execute(q, "system_powerdown", NULL, 5000, NULL, qerr, sizeof qerr) == 0)
			r = pidfd_wait(pidfd, d->cfg.vmd.stop_timeout_ms);
		if (r < 0) {
			log_warn("VM %s did not power off within %u ms; stopping QEMU", vm->name,
				 d->cfg.vmd.stop_timeout_ms);
			qmp_execute(q, "quit", NULL, 2000, NULL, NULL, 0);
			r = pidfd_wait(pidfd, 2000);
		}
		qmp_close(q);
	}
	if (r < 0) {
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		r = pidfd_wait(pidfd, KILL_WAIT_MS);
	}
	pthread_mutex_lock(&d->lock);
	if (r < 0) {
		vm->state = VM_RUNNING;
		vm->stop_requested = false;
		pthread_mutex_unlock(&d->lock);
		xsnprintf(err, errsz, "QEMU of VM '%s' (pid %d) did not exit, even after SIGKILL", vm->name, pid);
		return r;
	}
	vm->state = VM_STOPPED;
	vm->pid = 0;
	vm->ssh_ready = false;
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm->pidfd = -1;
	vm_record_save(d, vm);
	pthread_mutex_unlock(&d->lock);
	vmd_monitor_kick(d);
	log_info("VM %s stopped", vm->name);
	return 0;
}

/* ---- the monitor: notices QEMUs that exit on their own ------------------ */

void vmd_monitor_kick(struct vmd *d)
{
	uint64_t one = 1;

	if (write(d->monitor_wake, &one, sizeof one) < 0)
		log_debug("monitor wake: %s", strerror(errno));
}

static bool console_says_power_down(struct vmd *d, struct vm *vm)
{
	char path[VMD_PATH_MAX], buf[4096];
	_cleanup_close_ int fd = -1;
	struct stat st;
	ssize_t n;

	if (vm_dir(d, vm->name, "console.log", path, sizeof path) < 0)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return false;
	n = pread(fd, buf, sizeof buf - 1, st.st_size > (off_t)sizeof buf - 1 ?
		  st.st_size - (off_t)sizeof buf + 1 : 0);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strstr(buf, "reboot: Power down") || strstr(buf, "reboot: Restarting system");
}

/* Caller holds d->lock; VM's QEMU is gone without anyone asking. */
static void vm_exited(struct vmd *d, struct vm *vm)
{
	if (console_says_power_down(d, vm)) {
		vm->state = VM_STOPPED;
		xsnprintf(vm->error, sizeof vm->error, "the guest powered itself off");
		log_info("VM %s: the guest powered off (QEMU pid %d exited)", vm->name, vm->pid);
	} else {
		vm->state = VM_CRASHED;
		xsnprintf(vm->error, sizeof vm->error,
			 "QEMU (pid %d) exited unexpectedly; see qemu.log and console.log in %s/%s",
			 vm->pid, d->vms_dir, vm->name);
		log_error("VM %s: QEMU (pid %d) exited unexpectedly", vm->name, vm->pid);
	}
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm->pidfd = -1;
	vm->pid = 0;
	vm->ssh_ready = false;
	vm_record_save(d, vm);
}

void *vmd_monitor_thread(void *arg)
{
	struct vmd *d = arg;

	for (;;) {
		struct pollfd pf[1 + 1024];
		struct vm *who[1 + 1024];
		size_t n = 1;
		int r;

		pf[0] = (struct pollfd){ .fd = d->monitor_wake, .events = POLLIN };
		pthread_mutex_lock(&d->lock);
		for (struct vm *vm = d->vms; vm && n < ARRAY_SIZE(pf); vm = vm->next)
			if (vm->state == VM_RUNNING && vm->pidfd >= 0) {
				pf[n] = (struct pollfd){ .fd = vm->pidfd, .events = POLLIN };
				who[n++] = vm;
				vm->refs++;
			}
		pthread_mutex_unlock(&d->lock);

		r = poll(pf, n, 5000);
		if (r > 0 && (pf[0].revents & POLLIN)) {
			uint64_t v;

			if (read(d->monitor_wake, &v, sizeof v) < 0)
				log_debug("monitor: %s", strerror(errno));
		}
		pthread_mutex_lock(&d->lock);
		for (size_t i = 1; i < n; i++) {
			struct vm *vm = who[i];

			/* Only a VM nobody is stopping right now counts as crashed. */
			if (r > 0 && pf[i].revents && vm->state == VM_RUNNING && !vm->removed &&
			    vm->pidfd == pf[i].fd)
				vm_exited(d, vm);
		}
		pthread_mutex_unlock(&d->lock);
		for (size_t i = 1; i < n; i++)
			vm_put(d, who[i]);
	}
	return NULL;
}

/* ---- start-up: load records, re-adopt running QEMUs ---------------------- */

int vmd_load_all(struct vmd *d)
{
	struct dirent *de;
	DIR *dir = opendir(d->vms_dir);

	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		struct vm *vm;
		int r;

		if (strncmp(de->d_name, ".warm-", 6) == 0 && name_is_valid(de->d_name + 6)) {
			template_warm_reap(d, de->d_name);
			continue;
		}
		if (de->d_name[0] == '.' || !name_is_valid(de->d_name))
			continue;
		r = vm_record_load(d, de->d_name, &vm);
		if (r < 0) {
			log_warn("ignoring %s/%s: no readable vm.json (%s)", d->vms_dir, de->d_name,
				 strerror(-r));
			continue;
		}
		vm_sleep_recover(d, vm);
		if (vm->state == VM_RUNNING) {
			int pfd = vm_qemu_is_ours(d, vm, vm->pid) ?
				  (int)syscall(SYS_pidfd_open, vm->pid, 0) : -1;

			if (pfd >= 0) {
				vm->pidfd = pfd;
				vm->ssh_ready = true;
				vm_agent_connect(d, vm);
				log_info("VM %s: re-adopted its running QEMU (pid %d)", vm->name, vm->pid);
			} else {
				vm->state = VM_CRASHED;
				xsnprintf(vm->error, sizeof vm->error,
					 "QEMU (pid %d) exited while hutch-vmd was not running", vm->pid);
				log_warn("VM %s: %s", vm->name, vm->error);
				vm->pid = 0;
				vm_record_save(d, vm);
			}
		}
		pthread_mutex_lock(&d->lock);
		vm_link(d, vm);
		pthread_mutex_unlock(&d->lock);
	}
	closedir(dir);
	return 0;
}

/* ---- control operations --------------------------------------------------- */

#define ARG_STR(req, key, var)                                                    \
	do {                                                                      \
		if (ctl_arg_string(req, key, &(var), why, sizeof why) < 0)        \
			return ctl_reply_error(fd, EINVAL, "%s", why);            \
	} while (0)

static bool arg_bool(json_object *req, const char *key, bool def)
{
	json_object *v;

	if (json_object_object_get_ex(req, key, &v) && json_object_is_type(v, json_type_boolean))
		return json_object_get_boolean(v);
	return def;
}

static uint64_t arg_u64(json_object *req, const char *key, uint64_t def)
{
	json_object *v;

	if (json_object_object_get_ex(req, key, &v) && json_object_is_type(v, json_type_int))
		return (uint64_t)json_object_get_int64(v);
	return def;
}

static int reply_vm(struct vmd *d, int fd, struct vm *vm)
{
	json_object *o = json_object_new_object();

	pthread_mutex_lock(&d->lock);
	json_object_object_add(o, "vm", vm_to_json(d, vm, true));
	pthread_mutex_unlock(&d->lock);
	return ctl_reply_ok(fd, o);
}

/* Undo everything create/fork made for VM (it is in the list). */
static void vm_destroy(struct vmd *d, struct vm *vm, bool image)
{
	char path[VMD_PATH_MAX], err[ERRSZ];

	vm_unlink(d, vm);
	if (image && vmd_image_rm(d, vm->disk, err, sizeof err) < 0)
		log_warn("VM %s: cannot remove its image %s: %s", vm->name, vm->disk, err);
	if (vm_dir(d, vm->name, NULL, path, sizeof path) == 0)
		rm_rf(path);
	vmd_acl_write(d);
}

/* What a new VM is made of: its disk's source, boot files and machine. */
struct vm_spec {
	const char *src_image, *tmpl_name, *kernel, *initrd, *cmdline;
	unsigned cpus;
	uint64_t memory;
	bool agent;		/* its guest serves hutch's agent (vmd-agent.c) */
	const char *warm_from;	/* resume this warm template's memory */
	bool live;		/* resume a live fork's saved state */
};

/*
 * Makes a new VM named NAME whose disk is a fork of SPEC's source image, with kernel,
 * initrd and the rest from SPEC (a template's or the source VM's).
 */
static int vm_make(struct vmd *d, int fd, const char *name, const struct vm_spec *spec, bool start, bool wait)
{
	const char *src_image = spec->src_image, *kernel = spec->kernel, *initrd = spec->initrd;
	unsigned cpus = spec->cpus;
	uint64_t memory = spec->memory;
	char err[ERRSZ] = "", path[VMD_PATH_MAX], mem[32], host[32];
	uint64_t hostmem = host_memory();
	struct vm *vm, *other;
	int r;

	if (cpus == 0 || cpus > VM_MAX_CPUS)
		return ctl_reply_error(fd, EINVAL, "cpus must be 1..%d", VM_MAX_CPUS);
	if (memory < (32u << 20))
		return ctl_reply_error(fd, EINVAL, "memory must be at least 32M");
	if (hostmem && memory > hostmem)
		return ctl_reply_error(fd, ENOMEM, "memory %s is more than this host has (%s); "
				       "ask for less with --memory", format_size(memory, mem, sizeof mem),
				       format_size(hostmem, host, sizeof host));
	other = vmd_find(d, name);
	if (other) {
		vm_put(d, other);
		return ctl_reply_error(fd, EEXIST, "a VM named '%s' already exists (see `hutch vm list`)", name);
	}
	vm = vm_new();
	if (!vm)
		return ctl_reply_error(fd, ENOMEM, "out of memory");
	xsnprintf(vm->name, sizeof vm->name, "%s", name);
	xsnprintf(vm->template_name, sizeof vm->template_name, "%s", spec->tmpl_name);
	xsnprintf(vm->disk, sizeof vm->disk, "vm.%s", name);
	xsnprintf(vm->cmdline, sizeof vm->cmdline, "%s", spec->cmdline);
	vm->cpus = cpus;
	vm->memory = memory;
	vm->agent = spec->agent;
	vm->created = (uint64_t)time(NULL);
	xsnprintf(vm->warm_from, sizeof vm->warm_from, "%s", spec->warm_from ? spec->warm_from : "");
	vm->live_fork = spec->live;
	if (new_identity(vm) < 0) {
		free(vm);
		return ctl_reply_error(fd, EIO, "cannot read /dev/urandom");
	}
	if (vm_dir(d, name, NULL, path, sizeof path) < 0 || mkdir(path, 0700) < 0) {
		r = -errno;
		free(vm);
		return ctl_reply_error(fd, r == -EEXIST ? EEXIST : -r,
				       r == -EEXIST ? "%s exists but is no VM hutch-vmd knows; remove it"
						    : "cannot make %s: %s", path, strerror(-r));
	}
	/* The uid is taken and the VM linked under one lock: concurrent creates
	 * never share a uid. (A concurrent create of the same name lost at mkdir.) */
	pthread_mutex_lock(&d->lock);
	r = alloc_uid(d, &vm->uid);
	if (r == 0) {
		vm_link(d, vm);
		vm->refs++;	/* ours, besides the list's */
	}
	pthread_mutex_unlock(&d->lock);
	if (r < 0) {
		rmdir(path);
		free(vm);
		return ctl_reply_error(fd, ENOSPC, "no free VM uid left (raise [vmd] uid_count)");
	}
	pthread_mutex_lock(&vm->op_lock);

	r = vmd_image_fork(d, src_image, vm->disk, err, sizeof err);
	if (r < 0) {
		vm_destroy(d, vm, false);
		r = ctl_reply_error(fd, r, "cannot fork the disk %s for VM '%s': %s", src_image, name, err);
		goto out;
	}
	char dst[VMD_PATH_MAX];
	if (vm_dir(d, name, "vmlinuz", dst, sizeof dst) < 0 || (r = copy_or_link(kernel, dst)) < 0 ||
	    vm_dir(d, name, "initrd.img", dst, sizeof dst) < 0 || (r = copy_or_link(initrd, dst)) < 0) {
		vm_destroy(d, vm, true);
		r = ctl_reply_error(fd, EIO, "cannot copy the kernel and initrd for VM '%s': %s", name,
				    strerror(r < 0 ? -r : EIO));
		goto out;
	}
	r = vm_record_save(d, vm);
	if (r == 0)
		r = vmd_acl_write(d);
	if (r < 0) {
		vm_destroy(d, vm, true);
		r = ctl_reply_error(fd, r, "cannot write the record of VM '%s': %s", name, strerror(-r));
		goto out;
	}
	log_info("VM %s created from %s (uid %u)", name, src_image, vm->uid);
	if (start) {
		r = vm_start_locked(d, vm, wait, err, sizeof err);
		if (r < 0 && r != -ETIMEDOUT) {
			/* No half-created VM: a create that cannot start leaves nothing behind. */
			vm_stop_locked(d, vm, true, path, sizeof path);
			vm_destroy(d, vm, true);
			r = ctl_reply_error(fd, r, "%s", err);
			goto out;
		}
		if (r < 0) {
			r = ctl_reply_error(fd, r, "%s", err);
			goto out;
		}
	}
	r = reply_vm(d, fd, vm);
out:
	pthread_mutex_unlock(&vm->op_lock);
	vm_put(d, vm);
	return r;
}

static int op_create(struct vmd *d, int fd, json_object *req)
{
	char why[256], tdir[VMD_PATH_MAX], kernel[VMD_PATH_MAX], initrd[VMD_PATH_MAX];
	const char *name, *tmpl = "default";
	json_object *t, *v;
	int r;

	ARG_STR(req, "name", name);
	if (json_object_object_get_ex(req, "template", &v) && json_object_is_type(v, json_type_string))
		tmpl = json_object_get_string(v);
	if (!name_is_valid(name))
		return ctl_reply_error(fd, EINVAL, "invalid VM name '%s': use letters, digits, '.', '_', "
				       "'+' or '-', not starting with '.' or '-'", name);
	r = template_load(d, tmpl, &t);
	if (r < 0)
		return ctl_reply_error(fd, ENOENT, "no template named '%s' (see `hutch template list`; "
				       "make one with `hutch template build %s`)", tmpl, tmpl);
	xsnprintf(tdir, sizeof tdir, "%s/%s", d->templates_dir, tmpl);
	xsnprintf(kernel, sizeof kernel, "%s/vmlinuz", tdir);
	xsnprintf(initrd, sizeof initrd, "%s/initrd.img", tdir);
	unsigned cpus = (unsigned)arg_u64(req, "cpus",
		json_object_object_get_ex(t, "cpus", &v) ? (uint64_t)json_object_get_int64(v) : 1);
	uint64_t memory = arg_u64(req, "memory",
		json_object_object_get_ex(t, "memory", &v) ? (uint64_t)json_object_get_int64(v) : 256u << 20);
	const char *disk = json_object_object_get_ex(t, "disk", &v) ? json_object_get_string(v) : "";
	const char *cmdline = json_object_object_get_ex(t, "cmdline", &v) ? json_object_get_string(v) : "";
	char warm_disk[HUTCH_NAME_MAX + 1];
	unsigned wcpus;
	uint64_t wmem;
	bool warm = !arg_bool(req, "cold", false) && arg_bool(req, "start", true) &&
		    template_warm_get(d, tmpl, &wcpus, &wmem, warm_disk, sizeof warm_disk) == 0;

	if (warm) {
		/* Resumed memory needs the machine it was saved on. */
		if (cpus != wcpus || memory != wmem) {
			json_object_put(t);
			return ctl_reply_error(fd, EINVAL, "template '%s' is warm with %u CPUs and %" PRIu64
					       " MiB; create the VM with those, or boot it cold (--cold)",
					       tmpl, wcpus, wmem >> 20);
		}
		disk = warm_disk;
	}
	struct vm_spec spec = {
		.src_image = disk, .tmpl_name = tmpl, .kernel = kernel, .initrd = initrd, .cmdline = cmdline,
		.cpus = cpus, .memory = memory, .warm_from = warm ? tmpl : NULL,
		.agent = json_object_object_get_ex(t, "agent", &v) && json_object_get_boolean(v),
	};
	r = vm_make(d, fd, name, &spec, arg_bool(req, "start", true), arg_bool(req, "wait", true));
	json_object_put(t);
	return r;
}

static int op_fork(struct vmd *d, int fd, json_object *req)
{
	char why[256], kernel[VMD_PATH_MAX], initrd[VMD_PATH_MAX];
	const char *src, *dst;
	struct vm *s;
	int r;

	ARG_STR(req, "src", src);
	ARG_STR(req, "dst", dst);
	if (!name_is_valid(dst))
		return ctl_reply_error(fd, EINVAL, "invalid VM name '%s'", dst);
	s = vmd_find(d, src);
	if (!s)
		return ctl_reply_error(fd, ENOENT, "no VM named '%s' (see `hutch vm list`)", src);
	/* Hold SRC's op_lock so it cannot start while its disk is forked. */
	pthread_mutex_lock(&s->op_lock);
	pthread_mutex_lock(&d->lock);
	bool running = s->state == VM_RUNNING || s->state == VM_STARTING || s->state == VM_STOPPING;
	pthread_mutex_unlock(&d->lock);
	if (arg_bool(req, "live", false)) {
		char err[ERRSZ] = "", tmp[HUTCH_NAME_MAX + 32];
		struct vm *other = vmd_find(d, dst);

		if (other) {
			vm_put(d, other);
			r = ctl_reply_error(fd, EEXIST, "a VM named '%s' already exists (see `hutch vm list`)", dst);
		} else if ((r = vm_live_fork_save(d, s, dst, tmp, sizeof tmp, err, sizeof err)) < 0) {
			r = ctl_reply_error(fd, r, "%s", err);
		} else {
			/* SRC runs on: only the moment of the save needed it. */
			char disk_tmpl[HUTCH_NAME_MAX + 1], cmdline[sizeof s->cmdline];
			struct vm_spec spec = {
				.src_image = tmp, .tmpl_name = disk_tmpl, .kernel = kernel, .initrd = initrd,
				.cmdline = cmdline, .cpus = s->cpus, .memory = s->memory, .agent = s->agent,
				.live = true,
			};

			xsnprintf(disk_tmpl, sizeof disk_tmpl, "%s", s->template_name);
			xsnprintf(cmdline, sizeof cmdline, "%s", s->cmdline);
			vm_dir(d, src, "vmlinuz", kernel, sizeof kernel);
			vm_dir(d, src, "initrd.img", initrd, sizeof initrd);
			pthread_mutex_unlock(&s->op_lock);
			r = vm_make(d, fd, dst, &spec, true, true);
			if (vmd_image_rm(d, tmp, err, sizeof err) < 0)
				log_warn("cannot remove the store image %s: %s", tmp, err);
			vm_put(d, s);
			return r;
		}
	} else if (running) {
		r = ctl_reply_error(fd, EBUSY, "VM '%s' is running; stop it first (`hutch vm stop %s`) "
				    "so its disk is consistent, or fork it with its memory (--live)", src, src);
	} else {
		vm_dir(d, src, "vmlinuz", kernel, sizeof kernel);
		vm_dir(d, src, "initrd.img", initrd, sizeof initrd);
		struct vm_spec spec = {
			.src_image = s->disk, .tmpl_name = s->template_name, .kernel = kernel, .initrd = initrd,
			.cmdline = s->cmdline, .cpus = (unsigned)arg_u64(req, "cpus", s->cpus),
			.memory = arg_u64(req, "memory", s->memory), .agent = s->agent,
		};
		r = vm_make(d, fd, dst, &spec, arg_bool(req, "start", true), arg_bool(req, "wait", true));
	}
	pthread_mutex_unlock(&s->op_lock);
	vm_put(d, s);
	return r;
}

static int op_simple(struct vmd *d, int fd, const char *op, json_object *req)
{
	char why[256], err[ERRSZ] = "";
	const char *name;
	struct vm *vm;
	int r = 0;

	ARG_STR(req, "name", name);
	vm = vmd_find(d, name);
	if (!vm)
		return ctl_reply_error(fd, ENOENT, "no VM named '%s' (see `hutch vm list`)", name);
	if (strcmp(op, "vm.info") == 0) {
		r = reply_vm(d, fd, vm);
		vm_put(d, vm);
		return r;
	}
	pthread_mutex_lock(&vm->op_lock);
	if (vm->removed) {
		r = -ENOENT;
		xsnprintf(err, sizeof err, "VM '%s' was just removed", name);
	} else if (strcmp(op, "vm.start") == 0) {
		r = vm_start_locked(d, vm, arg_bool(req, "wait", true), err, sizeof err);
	} else if (strcmp(op, "vm.stop") == 0) {
		r = vm_stop_locked(d, vm, arg_bool(req, "force", false), err, sizeof err);
	} else if (strcmp(op, "vm.restart") == 0) {
		r = vm_stop_locked(d, vm, arg_bool(req, "force", false), err, sizeof err);
		if (r == 0)
			r = vm_start_locked(d, vm, arg_bool(req, "wait", true), err, sizeof err);
	} else if (strcmp(op, "vm.rm") == 0) {
		r = vm_stop_locked(d, vm, true, err, sizeof err);
		if (r == 0) {
			r = vmd_image_rm(d, vm->disk, err, sizeof err);
			if (r == -ENOENT)
				r = 0;	/* already gone: still remove the record */
			if (r == 0) {
				vm_sleep_forget(d, vm);
				vm_destroy(d, vm, false);
				log_info("VM %s removed", name);
			}
		}
	}
	pthread_mutex_unlock(&vm->op_lock);
	if (r < 0)
		r = ctl_reply_error(fd, r, "%s", err);
	else if (strcmp(op, "vm.rm") == 0)
		r = ctl_reply_ok(fd, NULL);
	else
		r = reply_vm(d, fd, vm);
	vm_put(d, vm);
	return r;
}

static int op_list(struct vmd *d, int fd)
{
	json_object *arr = json_object_new_array();
	json_object *o = json_object_new_object();

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		json_object_array_add(arr, vm_to_json(d, vm, false));
	pthread_mutex_unlock(&d->lock);
	json_object_object_add(o, "vms", arr);
	return ctl_reply_ok(fd, o);
}

int vmd_op(struct vmd *d, int fd, const char *op, json_object *req)
{
	if (strcmp(op, "vm.create") == 0)
		return op_create(d, fd, req);
	if (strcmp(op, "vm.fork") == 0)
		return op_fork(d, fd, req);
	if (strcmp(op, "vm.list") == 0)
		return op_list(d, fd);
	if (strcmp(op, "vm.info") == 0 || strcmp(op, "vm.start") == 0 || strcmp(op, "vm.stop") == 0 ||
	    strcmp(op, "vm.restart") == 0 || strcmp(op, "vm.rm") == 0)
		return op_simple(d, fd, op, req);
	if (strcmp(op, "vm.pause") == 0 || strcmp(op, "vm.hibernate") == 0 ||
	    strcmp(op, "vm.resume") == 0 || strcmp(op, "vm.session") == 0)
		return vmd_sleep_op(d, fd, op, req);
	if (strcmp(op, "template.warm") == 0)
		return vmd_warm_op(d, fd, op, req);
	if (strncmp(op, "template.", 9) == 0)
		return vmd_template_op(d, fd, op, req);
	return ctl_reply_error(fd, EOPNOTSUPP, "unknown op '%s' (see docs/hutch-vmd.md)", op);
}

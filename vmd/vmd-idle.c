/*
 * The idle policy ([idle] in hutch.conf): once per window, every running
 * VM's activity over the window is measured; a VM with an open session, or
 * with CPU, disk or network above the thresholds, is busy. One idle for
 * pause_after is paused, for hibernate_after hibernated.
 *
 * Activity comes from outside the guest, so a guest cannot be made to lie:
 * CPU its QEMU used or waited for (schedstat), disk bytes (QMP query-blockstats),
 * and network as QEMU's other I/O bytes (/proc/PID/io minus the disk's),
 * since user-mode networking has no counters of its own.
 */
#include "vmd.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "vmd-qmp.h"

#define ERRSZ 1024

/*
 * CPU demand of all QEMU's threads in ns: time run plus time spent waiting
 * for a CPU (/proc/PID/task/TID/schedstat), so a busy guest on a crowded
 * host still counts as busy.
 */
static int read_cpu_ns(pid_t pid, uint64_t *ns)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	uint64_t sum = 0;

	xsnprintf(path, sizeof path, "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		char p[128];
		unsigned long long run, wait;
		_cleanup_fclose_ FILE *f = NULL;

		if (de->d_name[0] == '.')
			continue;
		xsnprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, de->d_name);
		f = fopen(p, "re");
		if (f && fscanf(f, "%llu %llu", &run, &wait) == 2)
			sum += run + wait;
	}
	closedir(dir);
	*ns = sum;
	return 0;
}

static int read_io_bytes(pid_t pid, uint64_t *bytes)
{
	char path[64], line[128];
	_cleanup_fclose_ FILE *f = NULL;
	unsigned long long v, sum = 0;

	xsnprintf(path, sizeof path, "/proc/%d/io", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "rchar: %llu", &v) == 1 || sscanf(line, "wchar: %llu", &v) == 1)
			sum += v;
	*bytes = sum;
	return 0;
}

/* Bytes read and written on all of the VM's block devices. */
static int read_disk_bytes(struct vmd *d, struct vm *vm, uint64_t *bytes)
{
	char path[VMD_PATH_MAX];
	struct qmp *q = NULL;
	json_object *ret = NULL;
	uint64_t sum = 0;
	int r;

	if (vm_qmp_path(d, vm, path, sizeof path) < 0)
		return -ENAMETOOLONG;
	r = qmp_connect(path, 2000, &q);
	if (r < 0)
		return r;
	r = qmp_execute(q, "query-blockstats", NULL, 2000, &ret, NULL, 0);
	qmp_close(q);
	if (r < 0)
		return r;
	for (size_t i = 0; json_object_is_type(ret, json_type_array) && i < json_object_array_length(ret); i++) {
		json_object *dev = json_object_array_get_idx(ret, i), *stats, *v;

		if (!json_object_object_get_ex(dev, "stats", &stats))
			continue;
		if (json_object_object_get_ex(stats, "rd_bytes", &v))
			sum += (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(stats, "wr_bytes", &v))
			sum += (uint64_t)json_object_get_int64(v);
	}
	json_object_put(ret);
	*bytes = sum;
	return 0;
}

/* Samples VM (its op_lock held) and acts on the policy. */
static void idle_check(struct vmd *d, struct vm *vm, uint64_t now)
{
	const struct hutch_config *c = &d->cfg;
	uint64_t cpu_ns = 0, io = 0, disk = 0;
	char err[ERRSZ] = "";
	bool running, fresh;
	unsigned sessions;
	pid_t pid;

	pthread_mutex_lock(&d->lock);
	running = vm->state == VM_RUNNING;
	pid = vm->pid;
	sessions = vm->sessions;
	pthread_mutex_unlock(&d->lock);
	if (!running || pid <= 0 || vm->tier == TIER_HIBERNATED)
		return;
	if (read_cpu_ns(pid, &cpu_ns) < 0 || read_io_bytes(pid, &io) < 0 ||
	    read_disk_bytes(d, vm, &disk) < 0)
		return;

	pthread_mutex_lock(&d->lock);
	struct vm_idle *s = &vm->idle;
	fresh = s->pid != pid || s->sample_ns == 0;
	if (!fresh) {
		double secs = (double)(now - s->sample_ns) / 1e9;
		double cpu = (double)(cpu_ns - s->cpu_ns) / 1e7 / secs;
		double dsk = (double)(disk - s->disk_bytes) / secs;
		double other = (double)(io - s->io_bytes) / secs - dsk;
		bool busy = sessions > 0 || cpu > c->idle.cpu_percent || dsk > (double)c->idle.disk_rate ||
			    other > (double)c->idle.net_rate;

		log_debug("VM %s: cpu %.1f%%, disk %.0f B/s, net %.0f B/s, %u sessions: %s", vm->name,
			  cpu, dsk, other, sessions, busy ? "busy" : "idle");
		if (busy)
			s->busy_ns = now;
	} else if (!s->busy_ns || s->pid != pid) {
		s->busy_ns = now;	/* a VM just started or adopted gets a whole period */
	}
	s->pid = pid;
	s->sample_ns = now;
	s->cpu_ns = cpu_ns;
	s->io_bytes = io;
	s->disk_bytes = disk;
	uint64_t idle_ms = (now - s->busy_ns) / 1000000u;
	pthread_mutex_unlock(&d->lock);

	if (fresh)
		return;
	if (c->idle.hibernate_after_ms && idle_ms >= c->idle.hibernate_after_ms) {
		log_info("VM %s idle for %" PRIu64 " s: hibernating it", vm->name, idle_ms / 1000);
		if (vm_hibernate_locked(d, vm, err, sizeof err) < 0)
			log_warn("VM %s: idle hibernate failed: %s", vm->name, err);
	} else if (c->idle.pause_after_ms && idle_ms >= c->idle.pause_after_ms && vm->tier == TIER_AWAKE) {
		log_info("VM %s idle for %" PRIu64 " s: pausing it", vm->name, idle_ms / 1000);
		if (vm_pause_locked(d, vm, err, sizeof err) < 0)
			log_warn("VM %s: idle pause failed: %s", vm->name, err);
	}
}

void *vmd_idle_thread(void *arg)
{
	struct vmd *d = arg;

	if (!d->cfg.idle.enabled)
		return NULL;
	log_info("idle policy: window %u ms, cpu %u%%, disk %" PRIu64 " B/s, net %" PRIu64
		 " B/s, pause after %u ms, hibernate after %u ms", d->cfg.idle.window_ms,
		 d->cfg.idle.cpu_percent, d->cfg.idle.disk_rate, d->cfg.idle.net_rate,
		 d->cfg.idle.pause_after_ms, d->cfg.idle.hibernate_after_ms);
	for (;;) {
		struct timespec ts = { d->cfg.idle.window_ms / 1000,
				       (long)(d->cfg.idle.window_ms % 1000) * 1000000L };
		struct vm *list[1024];
		size_t n = 0;

		nanosleep(&ts, NULL);
		pthread_mutex_lock(&d->lock);
		for (struct vm *vm = d->vms; vm && n < ARRAY_SIZE(list); vm = vm->next)
			if (vm->state == VM_RUNNING && !vm->removed) {
				vm->refs++;
				list[n++] = vm;
			}
		pthread_mutex_unlock(&d->lock);
		for (size_t i = 0; i < n; i++) {
			/* A VM busy with a lifecycle operation is skipped this round. */
			if (pthread_mutex_trylock(&list[i]->op_lock) == 0) {
				if (!list[i]->removed)
					idle_check(d, list[i], now_ns());
				pthread_mutex_unlock(&list[i]->op_lock);
			}
			vm_put(d, list[i]);
		}
	}
	return NULL;
}

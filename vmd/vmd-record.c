/* VM records: $HUTCH_HOME/vms/NAME/vm.json, written atomically. */
#include "vmd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

int xsnprintf(char *buf, size_t sz, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sz, fmt, ap);
	va_end(ap);
	return n;
}

int vm_dir(const struct vmd *d, const char *name, const char *file, char *buf, size_t sz)
{
	int n = file ? xsnprintf(buf, sz, "%s/%s/%s", d->vms_dir, name, file)
		     : xsnprintf(buf, sz, "%s/%s", d->vms_dir, name);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[VMD_PATH_MAX + 8];
	_cleanup_close_ int fd = -1;
	int r;

	if ((size_t)xsnprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	r = write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_STOPPED: return "stopped";
	case VM_STARTING: return "starting";
	case VM_RUNNING: return "running";
	case VM_STOPPING: return "stopping";
	case VM_CRASHED: return "crashed";
	}
	return "?";
}

static enum vm_state state_from_name(const char *s)
{
	if (strcmp(s, "running") == 0 || strcmp(s, "starting") == 0 || strcmp(s, "stopping") == 0)
		return VM_RUNNING;
	if (strcmp(s, "crashed") == 0)
		return VM_CRASHED;
	return VM_STOPPED;
}

json_object *vm_to_json(const struct vmd *d, struct vm *vm, bool detail)
{
	json_object *o = json_object_new_object();
	char path[VMD_PATH_MAX];

	json_object_object_add(o, "name", json_object_new_string(vm->name));
	json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm->state)));
	json_object_object_add(o, "template", json_object_new_string(vm->template_name));
	json_object_object_add(o, "disk", json_object_new_string(vm->disk));
	json_object_object_add(o, "cpus", json_object_new_int(vm->cpus));
	json_object_object_add(o, "memory", json_object_new_uint64(vm->memory));
	json_object_object_add(o, "uid", json_object_new_int64(vm->uid));
	json_object_object_add(o, "machine_id", json_object_new_string(vm->machine_id));
	json_object_object_add(o, "mac", json_object_new_string(vm->mac));
	json_object_object_add(o, "created", json_object_new_uint64(vm->created));
	json_object_object_add(o, "pid", json_object_new_int(vm->pid));
	json_object_object_add(o, "ssh_port", json_object_new_int(vm->ssh_port));
	json_object_object_add(o, "accel", json_object_new_string(vm->accel));
	json_object_object_add(o, "error", json_object_new_string(vm->error));
	json_object_object_add(o, "tier", json_object_new_string(vm_tier_name(vm->tier)));
	json_object_object_add(o, "tier_since", json_object_new_uint64(vm->tier_since));
	json_object_object_add(o, "sessions", json_object_new_int((int)vm->sessions));
	if (!detail)
		return o;
	json_object_object_add(o, "cmdline", json_object_new_string(vm->cmdline));
	json_object_object_add(o, "started", json_object_new_uint64(vm->started));
	json_object_object_add(o, "ssh_ready", json_object_new_boolean(vm->ssh_ready));
	json_object_object_add(o, "accel_reason", json_object_new_string(d->accel_why));
	json_object_object_add(o, "admin_key", json_object_new_string(d->admin_key));
	if (vm_dir(d, vm->name, "run/console.sock", path, sizeof path) == 0)
		json_object_object_add(o, "console_socket", json_object_new_string(path));
	if (vm_dir(d, vm->name, "console.log", path, sizeof path) == 0)
		json_object_object_add(o, "console_log", json_object_new_string(path));
	if (vm_dir(d, vm->name, "known_hosts", path, sizeof path) == 0)
		json_object_object_add(o, "known_hosts", json_object_new_string(path));
	if (vm_dir(d, vm->name, "qemu.log", path, sizeof path) == 0)
		json_object_object_add(o, "qemu_log", json_object_new_string(path));
	return o;
}

/* Caller holds op_lock (record fields) and may hold vmd->lock. */
int vm_record_save(const struct vmd *d, struct vm *vm)
{
	char path[VMD_PATH_MAX];
	json_object *o = json_object_new_object();
	const char *s;
	int r;

	json_object_object_add(o, "name", json_object_new_string(vm->name));
	json_object_object_add(o, "template", json_object_new_string(vm->template_name));
	json_object_object_add(o, "disk", json_object_new_string(vm->disk));
	json_object_object_add(o, "cmdline", json_object_new_string(vm->cmdline));
	json_object_object_add(o, "machine_id", json_object_new_string(vm->machine_id));
	json_object_object_add(o, "mac", json_object_new_string(vm->mac));
	json_object_object_add(o, "cpus", json_object_new_int(vm->cpus));
	json_object_object_add(o, "memory", json_object_new_uint64(vm->memory));
	json_object_object_add(o, "agent", json_object_new_boolean(vm->agent));
	json_object_object_add(o, "uid", json_object_new_int64(vm->uid));
	json_object_object_add(o, "created", json_object_new_uint64(vm->created));
	/* Runtime state too, so a restarted hutch-vmd knows what to re-adopt. */
	json_object_object_add(o, "state", json_object_new_string(vm_state_name(vm->state)));
	json_object_object_add(o, "pid", json_object_new_int(vm->pid));
	json_object_object_add(o, "ssh_port", json_object_new_int(vm->ssh_port));
	json_object_object_add(o, "accel", json_object_new_string(vm->accel));
	json_object_object_add(o, "started", json_object_new_uint64(vm->started));
	json_object_object_add(o, "error", json_object_new_string(vm->error));
	json_object_object_add(o, "tier", json_object_new_string(vm_tier_name(vm->tier)));
	json_object_object_add(o, "tier_since", json_object_new_uint64(vm->tier_since));
	json_object_object_add(o, "hib_gen", json_object_new_int64(vm->hib_gen));
	json_object_object_add(o, "hib_state_size", json_object_new_uint64(vm->hib_state_size));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = vm_dir(d, vm->name, "vm.json", path, sizeof path);
	if (r == 0)
		r = write_file_atomic(path, s, strlen(s), 0600);
	json_object_put(o);
	return r;
}

static void copy_str(json_object *o, const char *key, char *dst, size_t sz)
{
	json_object *v;

	if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		xsnprintf(dst, sz, "%s", json_object_get_string(v));
}

static int64_t get_i64(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

struct vm *vm_new(void)
{
	struct vm *vm = calloc(1, sizeof *vm);

	if (!vm)
		return NULL;
	pthread_mutex_init(&vm->op_lock, NULL);
	pthread_mutex_init(&vm->agent_lock, NULL);
	vm->pidfd = -1;
	vm->agent_fd = -1;
	vm->refs = 1;
	return vm;
}

int vm_record_load(const struct vmd *d, const char *name, struct vm **out)
{
	char path[VMD_PATH_MAX];
	char state[32] = "stopped", tier[32] = "awake";
	json_object *o;
	struct vm *vm;
	int r;

	r = vm_dir(d, name, "vm.json", path, sizeof path);
	if (r < 0)
		return r;
	o = json_object_from_file(path);
	if (!o)
		return access(path, F_OK) == 0 ? -EBADMSG : -ENOENT;
	vm = vm_new();
	if (!vm) {
		json_object_put(o);
		return -ENOMEM;
	}
	copy_str(o, "name", vm->name, sizeof vm->name);
	copy_str(o, "template", vm->template_name, sizeof vm->template_name);
	copy_str(o, "disk", vm->disk, sizeof vm->disk);
	copy_str(o, "cmdline", vm->cmdline, sizeof vm->cmdline);
	copy_str(o, "machine_id", vm->machine_id, sizeof vm->machine_id);
	copy_str(o, "mac", vm->mac, sizeof vm->mac);
	copy_str(o, "state", state, sizeof state);
	copy_str(o, "accel", vm->accel, sizeof vm->accel);
	copy_str(o, "error", vm->error, sizeof vm->error);
	copy_str(o, "tier", tier, sizeof tier);
	vm->tier = vm_tier_from_name(tier);
	vm->tier_since = (uint64_t)get_i64(o, "tier_since");
	vm->hib_gen = (unsigned)get_i64(o, "hib_gen");
	vm->hib_state_size = (uint64_t)get_i64(o, "hib_state_size");
	vm->cpus = (unsigned)get_i64(o, "cpus");
	vm->memory = (uint64_t)get_i64(o, "memory");
	vm->agent = get_i64(o, "agent") != 0;
	vm->uid = (unsigned)get_i64(o, "uid");
	vm->created = (uint64_t)get_i64(o, "created");
	vm->pid = (pid_t)get_i64(o, "pid");
	vm->ssh_port = (unsigned)get_i64(o, "ssh_port");
	vm->started = (uint64_t)get_i64(o, "started");
	vm->state = state_from_name(state);
	json_object_put(o);
	if (strcmp(vm->name, name) != 0 || !vm->disk[0]) {
		free(vm);
		return -EBADMSG;
	}
	*out = vm;
	return 0;
}

struct vm *vmd_find(struct vmd *d, const char *name)
{
	struct vm *found = NULL;

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		if (strcmp(vm->name, name) == 0) {
			found = vm;
			found->refs++;
			break;
		}
	pthread_mutex_unlock(&d->lock);
	return found;
}

void vm_put(struct vmd *d, struct vm *vm)
{
	bool last;

	if (!vm)
		return;
	pthread_mutex_lock(&d->lock);
	last = --vm->refs == 0;
	pthread_mutex_unlock(&d->lock);
	if (last) {
		if (vm->pidfd >= 0)
			close(vm->pidfd);
		vm_agent_close(vm);
		pthread_mutex_destroy(&vm->agent_lock);
		pthread_mutex_destroy(&vm->op_lock);
		free(vm);
	}
}

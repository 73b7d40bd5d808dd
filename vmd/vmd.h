/*
 * hutch-vmd internals, one section per file.
 *
 * Threading (see docs/hutch-vmd.md): an acceptor thread, one thread per
 * control connection, and one monitor thread that watches every running
 * QEMU through a pidfd. Lock order: vm->op_lock, then vmd->lock. op_lock
 * serializes the slow lifecycle operations of one VM (start waits for a
 * boot, stop for a shutdown) without blocking list/info of the others;
 * vmd->lock guards the VM list and every VM's runtime fields, and is
 * never held across a wait.
 */
#ifndef HUTCH_VMD_H
#define HUTCH_VMD_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "util.h"

#define VMD_PATH_MAX 4096

enum vm_state { VM_STOPPED, VM_STARTING, VM_RUNNING, VM_STOPPING, VM_CRASHED };

/* Sleep tier (vmd-sleep.c): paused = vCPUs stopped (state running);
 * hibernated = memory and device state in the store, no QEMU (state stopped). */
enum vm_tier { TIER_AWAKE, TIER_PAUSED, TIER_HIBERNATED };

/* Idle policy bookkeeping of one VM (vmd-idle.c), under vmd->lock. */
struct vm_idle {
	pid_t pid;			/* the QEMU the counters below belong to */
	uint64_t sample_ns, cpu_ns, io_bytes, disk_bytes;
	uint64_t busy_ns;		/* last time it was found busy (or woken) */
};

struct vm {
	/* The record (vms/NAME/vm.json); changed only under op_lock. */
	char name[HUTCH_NAME_MAX + 1];
	char template_name[HUTCH_NAME_MAX + 1];
	char disk[HUTCH_NAME_MAX + 1];	/* the store image holding its disk */
	char cmdline[1024];
	char machine_id[33];
	char mac[18];
	unsigned cpus;
	uint64_t memory;
	unsigned uid;			/* QEMU's uid; 0 = same as hutch-vmd */
	uint64_t created;
	enum vm_tier tier;
	uint64_t tier_since;		/* unix seconds */
	unsigned hib_gen;		/* store images vm.NAME.ram.GEN / .state.GEN; 0 = none */
	uint64_t hib_state_size;	/* bytes of the device state stream */

	pthread_mutex_t op_lock;

	/* Runtime, protected by vmd->lock. */
	enum vm_state state;
	pid_t pid;
	int pidfd;
	unsigned ssh_port;
	bool stop_requested;
	bool ssh_ready;
	uint64_t started;		/* unix seconds */
	char accel[8];
	char error[1024];		/* why it crashed or failed to start */
	bool removed;			/* unlinked from the list; freed at the last ref */
	unsigned refs;
	bool incoming;			/* next QEMU waits for a migration stream (resume) */
	char warm_from[HUTCH_NAME_MAX + 1];	/* first start resumes this warm template (vmd-warm.c) */
	bool live_fork;			/* first start resumes a live fork's saved state (vmd-warm.c) */
	bool agent;			/* the guest serves hutch's agent on a virtio port (vmd-agent.c) */
	int agent_fd;			/* hutch-vmd's end of that port while QEMU runs, or -1 */
	pthread_mutex_t agent_lock;	/* one agent run at a time; guards agent_fd */
	unsigned sessions;		/* open sessions (vm.session), keep it awake */
	struct vm_idle idle;
	struct vm *next;
};

struct vmd {
	const char *home;
	struct hutch_config cfg;
	char vms_dir[VMD_PATH_MAX];
	char templates_dir[VMD_PATH_MAX];
	char storaged_sock[VMD_PATH_MAX];
	char nbd_sock[VMD_PATH_MAX];
	char admin_key[VMD_PATH_MAX];	/* private key; .pub beside it */
	char accel[8];			/* what VMs use: kvm or tcg; "" until probed */
	char accel_why[256];		/* how that was decided */

	pthread_mutex_t lock;
	struct vm *vms;			/* protected by lock */
	int monitor_wake;		/* eventfd: the set of running VMs changed */
};

/* vmd-record.c: VM records and paths */
/* vsnprintf under another name: truncation is checked by callers that care,
 * and the rest (messages) may be cut short on purpose. */
int xsnprintf(char *buf, size_t sz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vm_dir(const struct vmd *d, const char *name, const char *file, char *buf, size_t sz);
int vm_record_save(const struct vmd *d, struct vm *vm);
int vm_record_load(const struct vmd *d, const char *name, struct vm **out);
const char *vm_state_name(enum vm_state s);
json_object *vm_to_json(const struct vmd *d, struct vm *vm, bool detail);
/* Lookup with a reference (vm_put drops it). Caller holds no lock. */
struct vm *vmd_find(struct vmd *d, const char *name);
void vm_put(struct vmd *d, struct vm *vm);
struct vm *vm_new(void);
int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* vmd-storaged.c: requests to hutch-storaged */
int vmd_storaged_call(struct vmd *d, json_object *req, json_object **reply, char *err, size_t errsz);
int vmd_image_fork(struct vmd *d, const char *src, const char *dst, char *err, size_t errsz);
int vmd_image_rm(struct vmd *d, const char *name, char *err, size_t errsz);
/* Rewrites $HOME/nbd-acl: which uid may open which export (storaged reads it). */
int vmd_acl_write(struct vmd *d);

/* vmd-qemu.c: QEMU processes */
/* Decides d->accel once, by booting KERNEL under KVM (see [vmd] accel). */
void vmd_probe_accel(struct vmd *d, const char *kernel);
/* Starts VM's QEMU (daemonized) and fills pid/pidfd/ssh_port. On failure
 * err has QEMU's own message. */
int vm_qemu_start(struct vmd *d, struct vm *vm, char *err, size_t errsz);
/* Waits until the guest's SSH server sends its banner. */
int vm_wait_ssh(struct vmd *d, struct vm *vm, unsigned timeout_ms, bool per_connection);
/* Waits until pidfd says the process is gone; -ETIMEDOUT otherwise. */
int pidfd_wait(int pidfd, unsigned timeout_ms);
/* True when PID is this VM's QEMU (checked through its command line). */
bool vm_qemu_is_ours(struct vmd *d, struct vm *vm, pid_t pid);
int vm_qmp_path(const struct vmd *d, const struct vm *vm, char *buf, size_t sz);

/* vmd-vm.c: lifecycle */
int vmd_load_all(struct vmd *d);
void *vmd_monitor_thread(void *arg);
void vmd_monitor_kick(struct vmd *d);
int vmd_op(struct vmd *d, int fd, const char *op, json_object *req);

/* vmd-sleep.c: pause, hibernate, resume. Callers hold vm->op_lock. */
const char *vm_tier_name(enum vm_tier t);
enum vm_tier vm_tier_from_name(const char *s);
int vm_pause_locked(struct vmd *d, struct vm *vm, char *err, size_t errsz);
int vm_hibernate_locked(struct vmd *d, struct vm *vm, char *err, size_t errsz);
/* Wakes a paused or hibernated VM: 1 when it slept, 0 when it was awake. */
int vm_wake_locked(struct vmd *d, struct vm *vm, bool wait, char *err, size_t errsz);
/* Before a stop: a paused guest is continued (so it sees the power button),
 * a hibernated one resumed, or with FORCE its saved memory dropped. */
void vm_sleep_before_stop(struct vmd *d, struct vm *vm, bool force);
/* Removes the VM's hibernation images (vm rm). */
void vm_sleep_forget(struct vmd *d, struct vm *vm);
/* At start-up, before the VM is linked: finishes or undoes a hibernate or
 * resume that a killed hutch-vmd left half done. */
void vm_sleep_recover(struct vmd *d, struct vm *vm);
void vm_kill_leftover_qemus(struct vmd *d, struct vm *vm, const char *why);
int vmd_sleep_op(struct vmd *d, int fd, const char *op, json_object *req);
/* Shared with vmd-warm.c: the migration steps and copies of hibernate/resume. */
struct qmp;
int run_cmd(char *const argv[], char *out, size_t outsz, unsigned timeout_ms);
/* Starts COMMAND in VM's guest over SSH with the platform's key. KNOWN_HOSTS:
 * the file its host key is learnt into, or NULL for none (a fork's key is
 * about to change). Its stdin is IN_FD; its stdout (and stderr if MERGE_ERR)
 * come out of *OUT_FD. Returns the ssh process, or -errno. */
pid_t guest_ssh_start(struct vmd *d, struct vm *vm, const char *known_hosts, unsigned connect_timeout_s,
		      const char *command, int in_fd, bool merge_err, int *out_fd);
/* vmd-agent.c: the guest agent on the virtio port org.hutch.agent. */
int vm_agent_connect(struct vmd *d, struct vm *vm);
void vm_agent_close(struct vm *vm);
int vm_agent_run(struct vm *vm, const char *script, char *out, size_t outsz, unsigned timeout_ms);
/* Where hutch's helper program NAME is: beside hutch-vmd (build tree), else libexecdir. */
void vmd_helper_path(const char *name, char *buf, size_t sz);
int file_to_image(struct vmd *d, const char *file, const char *image, uint64_t size, char *err, size_t errsz);
int vm_qmp(struct vmd *d, struct vm *vm, struct qmp **q, char *err, size_t errsz);
int set_ignore_shared(struct qmp *q, char *err, size_t errsz);
int qmp_uri_cmd(struct qmp *q, const char *cmd, const char *uri, char *err, size_t errsz);
int wait_migration(struct qmp *q, char *err, size_t errsz);
int state_path(struct vmd *d, struct vm *vm, char *buf, size_t sz);
/* How the running QEMU holds the guest's RAM, from its command line. */
enum ram_kind {
	RAM_ANONYMOUS,		/* started by an older hutch-vmd: cannot be saved */
	RAM_OWN_FILE,		/* run/ram, share=on: x-ignore-shared leaves it out */
	RAM_WARM_PRIVATE,	/* a warm fork's private map of its template's RAM */
};
enum ram_kind vm_ram_kind(const struct vm *vm);
int vm_save_state(struct qmp *q, const char *state, const char *split_ram, char *err, size_t errsz);

/* vmd-warm.c: warm templates and live forks */
int vmd_warm_op(struct vmd *d, int fd, const char *op, json_object *req);
/* Adds "warm" (and its details) to a template object from template_load(). */
void template_warm_annotate(struct vmd *d, const char *name, json_object *t);
/* The warm state's CPUs and memory; -ENOENT when TMPL is not warm. */
int template_warm_get(struct vmd *d, const char *tmpl, unsigned *cpus, uint64_t *memory, char *disk, size_t disksz);
/* Removes a template's warm images and files (template rm). */
void template_warm_forget(struct vmd *d, const char *name);
/* At start-up: what a hutch-vmd killed during `template warm` left (DIR is .warm-NAME). */
void template_warm_reap(struct vmd *d, const char *dir);
/* Starts VM's QEMU from a warm template or a live fork's saved state, and continues its guest. */
int vm_warm_start(struct vmd *d, struct vm *vm, char *err, size_t errsz);
/* After the first SSH banner of a warm or live fork: new identity, RNG reseed, clock. */
int vm_warm_reidentify(struct vmd *d, struct vm *vm, char *err, size_t errsz);
/* Live fork, SRC's op_lock held: saves SRC's state for DST and forks its disk into TMP_IMAGE. */
int vm_live_fork_save(struct vmd *d, struct vm *src, const char *dst, char *tmp_image, size_t tmpsz,
		      char *err, size_t errsz);

/* vmd-idle.c: the idle policy thread */
void *vmd_idle_thread(void *arg);

/* vmd-template.c */
int vmd_template_op(struct vmd *d, int fd, const char *op, json_object *req);
int template_load(struct vmd *d, const char *name, json_object **out);

#endif

/*
 * Warm templates and live forks: new VMs resumed from a booted guest's
 * memory instead of booted.
 *
 * `template warm` boots the template once (a VM of its own, never in the
 * list), waits for its SSH banner, stops it and saves, with the migration
 * of vmd-sleep.c (x-ignore-shared), only its device state; its RAM stays in
 * the shared file QEMU ran on, which becomes templates/NAME/warm.ram (and a
 * copy in the store image template.NAME.ram, page-aligned). The disk it ran
 * on, template.NAME.warm, is consistent with that RAM: the migration
 * flushed it.
 *
 * A VM created from it maps warm.ram with share=off (MAP_PRIVATE): all VMs
 * share the page cache of one file and get private copies only of the pages
 * they write. Its QEMU starts with -incoming defer, loads the device state
 * and continues: the guest carries on from the moment of the save. Then,
 * over SSH with the platform's key, it gets its own identity: hostname,
 * machine-id, SSH host keys, MAC, the clock, and a kernel RNG reseeded with
 * host entropy that is credited (hutch-guest-reseed: RNDADDENTROPY and
 * RNDRESEEDCRNG, as the guest kernel has no vmgenid driver).
 *
 * A live fork saves a running VM the same way, copies its RAM file while it
 * is stopped, forks its disk, and lets it run on; the new VM resumes from
 * the copy and is re-identified like a warm one.
 */
#include "vmd.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
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

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define ERRSZ 1024
#define QMP_TIMEOUT_MS 10000
#define COPY_TIMEOUT_MS 600000

static pthread_mutex_t warm_lock = PTHREAD_MUTEX_INITIALIZER;

static int tdir_file(struct vmd *d, const char *tmpl, const char *file, char *buf, size_t sz)
{
	int n = xsnprintf(buf, sz, "%s/%s/%s", d->templates_dir, tmpl, file);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

/* Staging files of a live fork, before DST's directory has its run/. */
static int live_file(struct vmd *d, const char *dst, const char *file, char *buf, size_t sz)
{
	char rel[HUTCH_NAME_MAX + 64];

	xsnprintf(rel, sizeof rel, "run/live/%s", dst);
	if (hutch_path(buf, sz, d->home, "run/live") < 0)
		return -ENAMETOOLONG;
	/* Traversable: SRC's QEMU writes the state as its own uid (see below). */
	mkdir(buf, 0711);
	if (hutch_path(buf, sz, d->home, rel) < 0)
		return -ENAMETOOLONG;
	mkdir(buf, 0700);
	if (!file)
		return 0;
	size_t len = strlen(buf);
	return (size_t)xsnprintf(buf + len, sz - len, "/%s", file) >= sz - len ? -ENAMETOOLONG : 0;
}

static int copy_sparse(const char *src, const char *dst, char *err, size_t errsz)
{
	char out[512];
	char *argv[] = { (char *)"cp", (char *)"--sparse=always", (char *)"--reflink=auto", (char *)src,
			 (char *)dst, NULL };
	int r = run_cmd(argv, out, sizeof out, COPY_TIMEOUT_MS);

	if (r != 0) {
		xsnprintf(err, errsz, "cannot copy %s to %s: %s", src, dst, r < 0 ? strerror(-r) : out);
		return -EIO;
	}
	return 0;
}

static void rm_quiet(struct vmd *d, const char *image)
{
	char err[ERRSZ];
	int r = vmd_image_rm(d, image, err, sizeof err);

	if (r < 0 && r != -ENOENT)
		log_warn("cannot remove store image %s: %s", image, err);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? 0 : 0;
}

/* ---- template warm ---------------------------------------------------------- */

void template_warm_annotate(struct vmd *d, const char *name, json_object *t)
{
	char path[VMD_PATH_MAX];
	json_object *w;

	if (tdir_file(d, name, "warm.json", path, sizeof path) < 0 || !(w = json_object_from_file(path))) {
		json_object_object_add(t, "warm", json_object_new_boolean(false));
		return;
	}
	json_object_object_add(t, "warm", json_object_new_boolean(true));
	json_object_object_add(t, "warm_state", w);
}

int template_warm_get(struct vmd *d, const char *tmpl, unsigned *cpus, uint64_t *memory, char *disk,
		      size_t disksz)
{
	char path[VMD_PATH_MAX];
	json_object *w, *v;

	if (tdir_file(d, tmpl, "warm.json", path, sizeof path) < 0 || !(w = json_object_from_file(path)))
		return -ENOENT;
	*cpus = json_object_object_get_ex(w, "cpus", &v) ? (unsigned)json_object_get_int64(v) : 1;
	*memory = json_object_object_get_ex(w, "memory", &v) ? (uint64_t)json_object_get_int64(v) : 0;
	xsnprintf(disk, disksz, "%s", json_object_object_get_ex(w, "disk", &v) ? json_object_get_string(v) : "");
	json_object_put(w);
	if (tdir_file(d, tmpl, "warm.ram", path, sizeof path) < 0 || access(path, R_OK) < 0)
		return -ENOENT;
	return 0;
}

void template_warm_forget(struct vmd *d, const char *name)
{
	static const char *const suffix[] = { "warm", "ram", "state" };
	char img[HUTCH_NAME_MAX + 32], path[VMD_PATH_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(suffix); i++) {
		xsnprintf(img, sizeof img, "template.%s.%s", name, suffix[i]);
		rm_quiet(d, img);
	}
	if (tdir_file(d, name, "warm.json", path, sizeof path) == 0)
		unlink(path);
}

static int warm_locked(struct vmd *d, const char *name, json_object *t, char *err, size_t errsz)
{
	char wname[HUTCH_NAME_MAX + 16], tdir[VMD_PATH_MAX], src[VMD_PATH_MAX], dst[VMD_PATH_MAX];
	char state[VMD_PATH_MAX], ram[VMD_PATH_MAX], img[HUTCH_NAME_MAX + 32], vdir[VMD_PATH_MAX];
	unsigned char rnd[22];
	struct qmp *q = NULL;
	struct stat st;
	json_object *v;
	struct vm *vm;
	int r;
	uint64_t t0 = now_ns(), t1, t2;

	vm = vm_new();
	if (!vm)
		return -ENOMEM;
	/* A VM of its own, under a name no listed VM can have ('.' first). */
	xsnprintf(wname, sizeof wname, ".warm-%s", name);
	xsnprintf(vm->name, sizeof vm->name, "%s", wname);
	xsnprintf(vm->template_name, sizeof vm->template_name, "%s", name);
	xsnprintf(vm->disk, sizeof vm->disk, "template.%s.warm", name);
	xsnprintf(vm->cmdline, sizeof vm->cmdline, "%s",
		  json_object_object_get_ex(t, "cmdline", &v) ? json_object_get_string(v) : "");
	vm->cpus = json_object_object_get_ex(t, "cpus", &v) ? (unsigned)json_object_get_int64(v) : 1;
	vm->memory = json_object_object_get_ex(t, "memory", &v) ? (uint64_t)json_object_get_int64(v) : 256u << 20;
	vm->agent = json_object_object_get_ex(t, "agent", &v) && json_object_get_boolean(v);
	{
		_cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
			free(vm);
			return -EIO;
		}
	}
	for (int i = 0; i < 16; i++)
		sprintf(vm->machine_id + 2 * i, "%02x", rnd[i]);
	xsnprintf(vm->mac, sizeof vm->mac, "52:54:00:%02x:%02x:%02x", rnd[16], rnd[17], rnd[18]);

	xsnprintf(tdir, sizeof tdir, "%s/%s", d->templates_dir, name);
	if (vm_dir(d, wname, NULL, vdir, sizeof vdir) < 0 || tdir_file(d, name, "warm.state", state, sizeof state) < 0 ||
	    tdir_file(d, name, "warm.ram", ram, sizeof ram) < 0) {
		free(vm);
		return -ENAMETOOLONG;
	}
	nftw(vdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	template_warm_forget(d, name);
	if (mkdir(vdir, 0700) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot make %s: %s", vdir, strerror(-r));
		goto out;
	}
	for (int i = 0; i < 2; i++) {
		const char *f = i ? "initrd.img" : "vmlinuz";

		xsnprintf(src, sizeof src, "%s/%s", tdir, f);
		vm_dir(d, wname, f, dst, sizeof dst);
		if (link(src, dst) < 0 && (r = copy_sparse(src, dst, err, errsz)) < 0)
			goto out;
	}
	const char *disk = json_object_object_get_ex(t, "disk", &v) ? json_object_get_string(v) : "";
	if ((r = vmd_image_fork(d, disk, vm->disk, err, errsz)) < 0)
		goto out;

	vm->state = VM_STARTING;
	if ((r = vm_qemu_start(d, vm, err, errsz)) < 0)
		goto out;
	vm->state = VM_RUNNING;
	log_info("template %s: warming (QEMU pid %d), waiting for its SSH server", name, vm->pid);
	if ((r = vm_wait_ssh(d, vm, d->cfg.vmd.boot_timeout_ms, false)) < 0) {
		xsnprintf(err, errsz, "the template's guest did not answer SSH within %u s; see %s/console.log",
			 d->cfg.vmd.boot_timeout_ms / 1000, vdir);
		goto out;
	}
	/* Its agent waiting in read() on the connected port is what the forks resume. */
	if (vm->agent && (r = vm_agent_run(vm, "true", NULL, 0, 30000)) != 0) {
		xsnprintf(err, errsz, "the template's guest agent does not answer (%s); see %s/console.log",
			 r < 0 ? strerror(-r) : "exit status", vdir);
		r = -EIO;
		goto out;
	}
	t1 = now_ns();
	xsnprintf(dst, sizeof dst, "%s.tmp", state);
	if ((r = vm_qmp(d, vm, &q, err, errsz)) < 0 || (r = vm_save_state(q, dst, NULL, err, errsz)) < 0)
		goto out;
	qmp_execute(q, "quit", NULL, 2000, NULL, NULL, 0);
	if (pidfd_wait(vm->pidfd, 10000) < 0)
		syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
	pidfd_wait(vm->pidfd, 5000);
	if (stat(dst, &st) < 0 || st.st_size == 0) {
		r = -EIO;
		xsnprintf(err, errsz, "QEMU wrote no device state into %s", dst);
		goto out;
	}
	if (rename(dst, state) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot rename %s: %s", dst, strerror(-r));
		goto out;
	}
	chmod(state, 0644);
	vm_dir(d, wname, "run/ram", src, sizeof src);
	if (rename(src, ram) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot move the template's RAM %s to %s: %s", src, ram, strerror(-r));
		goto out;
	}
	/* The store keeps it too, page-aligned (dedups with hibernations of its VMs). */
	xsnprintf(img, sizeof img, "template.%s.ram", name);
	if ((r = file_to_image(d, ram, img, vm->memory, err, errsz)) < 0)
		goto out;
	xsnprintf(img, sizeof img, "template.%s.state", name);
	if ((r = file_to_image(d, state, img, ((uint64_t)st.st_size + 4095) & ~4095ull, err, errsz)) < 0)
		goto out;
	t2 = now_ns();

	json_object *w = json_object_new_object();
	json_object_object_add(w, "disk", json_object_new_string(vm->disk));
	json_object_object_add(w, "cpus", json_object_new_int64(vm->cpus));
	json_object_object_add(w, "memory", json_object_new_int64((int64_t)vm->memory));
	json_object_object_add(w, "state_size", json_object_new_int64(st.st_size));
	json_object_object_add(w, "created", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(w, "boot_ms", json_object_new_int64((int64_t)((t1 - t0) / 1000000)));
	json_object_object_add(w, "save_ms", json_object_new_int64((int64_t)((t2 - t1) / 1000000)));
	tdir_file(d, name, "warm.json", dst, sizeof dst);
	const char *js = json_object_to_json_string_ext(w, JSON_C_TO_STRING_PRETTY);
	r = write_file_atomic(dst, js, strlen(js), 0644);
	json_object_put(w);
	if (r < 0) {
		xsnprintf(err, errsz, "cannot write %s: %s", dst, strerror(-r));
		goto out;
	}
	log_info("template %s is warm (booted in %" PRIu64 " ms, saved in %" PRIu64 " ms, device state %lld bytes)",
		 name, (t1 - t0) / 1000000, (t2 - t1) / 1000000, (long long)st.st_size);
out:
	if (q)
		qmp_close(q);
	if (vm->pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
		pidfd_wait(vm->pidfd, 5000);
		close(vm->pidfd);
	}
	vm_agent_close(vm);
	nftw(vdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	if (r < 0) {
		template_warm_forget(d, name);
		unlink(ram);
		unlink(state);
	}
	pthread_mutex_destroy(&vm->agent_lock);
	pthread_mutex_destroy(&vm->op_lock);
	free(vm);
	return r;
}

void template_warm_reap(struct vmd *d, const char *dir)
{
	char path[VMD_PATH_MAX];
	struct vm *vm = vm_new();

	if (!vm)
		return;
	xsnprintf(vm->name, sizeof vm->name, "%s", dir);
	/* The template stays cold (its warm state was forgotten first); warm it again. */
	vm_kill_leftover_qemus(d, vm, "a template warm that did not finish");
	if (vm_dir(d, dir, NULL, path, sizeof path) == 0)
		nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	vm_put(d, vm);
}

int vmd_warm_op(struct vmd *d, int fd, const char *op, json_object *req)
{
	char why[256], err[ERRSZ] = "";
	const char *name;
	json_object *t, *o;
	int r;

	if (ctl_arg_string(req, "name", &name, why, sizeof why) < 0)
		return ctl_reply_error(fd, EINVAL, "%s", why);
	if (template_load(d, name, &t) < 0)
		return ctl_reply_error(fd, ENOENT, "no template named '%s' (see `hutch template list`)", name);
	pthread_mutex_lock(&warm_lock);
	r = warm_locked(d, name, t, err, sizeof err);
	pthread_mutex_unlock(&warm_lock);
	json_object_put(t);
	if (r < 0)
		return ctl_reply_error(fd, r, "cannot warm template '%s': %s", name, err[0] ? err : strerror(-r));
	if (template_load(d, name, &t) < 0)
		return ctl_reply_error(fd, ENOENT, "template '%s' was removed meanwhile", name);
	o = json_object_new_object();
	json_object_object_add(o, "template", t);
	return ctl_reply_ok(fd, o);
}

/* ---- starting a warm or live fork ------------------------------------------- */

int vm_warm_start(struct vmd *d, struct vm *vm, char *err, size_t errsz)
{
	char state[VMD_PATH_MAX], src[VMD_PATH_MAX], dst[VMD_PATH_MAX], uri[VMD_PATH_MAX + 16];
	struct qmp *q = NULL;
	uint64_t t0 = now_ns(), t1;
	int r;

	if ((r = state_path(d, vm, state, sizeof state)) < 0) {
		xsnprintf(err, errsz, "cannot make the directory for %s's device state: %s", vm->name,
			 strerror(-r));
		return r;
	}
	if (vm_dir(d, vm->name, "run", dst, sizeof dst) == 0)
		mkdir(dst, 0700);
	if (vm->live_fork) {
		/* The copy of SRC's RAM becomes this VM's own shared RAM file. */
		live_file(d, vm->name, "ram", src, sizeof src);
		vm_dir(d, vm->name, "run/ram", dst, sizeof dst);
		if (rename(src, dst) < 0) {
			r = -errno;
			xsnprintf(err, errsz, "cannot move the forked RAM %s: %s", src, strerror(-r));
			return r;
		}
		live_file(d, vm->name, "state", src, sizeof src);
	} else {
		tdir_file(d, vm->warm_from, "warm.state", src, sizeof src);
	}
	unlink(state);
	if ((r = copy_sparse(src, state, err, errsz)) < 0)
		return r;
	if (vm->uid && chown(state, vm->uid, vm->uid) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot hand %s to the VM's uid: %s", state, strerror(-r));
		return r;
	}
	vm->incoming = true;
	r = vm_qemu_start(d, vm, err, errsz);
	vm->incoming = false;
	if (r < 0)
		return r;
	xsnprintf(uri, sizeof uri, "exec:cat '%s'", state);
	if ((r = vm_qmp(d, vm, &q, err, errsz)) < 0 || (r = set_ignore_shared(q, err, errsz)) < 0 ||
	    (r = qmp_uri_cmd(q, "migrate-incoming", uri, err, errsz)) < 0 ||
	    (r = wait_migration(q, err, errsz)) < 0 ||
	    (r = qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, err, errsz)) < 0) {
		if (q)
			qmp_close(q);
		pthread_mutex_lock(&d->lock);
		int pidfd = vm->pidfd;
		vm->pidfd = -1;
		vm->pid = 0;
		pthread_mutex_unlock(&d->lock);
		if (pidfd >= 0) {
			syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
			pidfd_wait(pidfd, 5000);
			close(pidfd);
		}
		return r;
	}
	qmp_close(q);
	t1 = now_ns();
	unlink(state);
	if (vm->live_fork) {
		live_file(d, vm->name, NULL, src, sizeof src);
		nftw(src, rm_cb, 4, FTW_DEPTH | FTW_PHYS);
	}
	log_info("VM %s resumed from %s %s: guest running %" PRIu64 " ms after the start",
		 vm->name, vm->live_fork ? "a live fork" : "warm template", vm->live_fork ? "" : vm->warm_from,
		 (t1 - t0) / 1000000);
	return 0;
}

/*
 * A new SSH host key. Over the agent it is made here and written by the
 * shell's printf (dropbear's format: the name, then the 32-byte seed and
 * the public key): a guest under TCG takes 150 ms for dropbearkey.
 */
static int host_key_by_printf(char *buf, size_t sz)
{
	unsigned char key[4 + 11 + 4 + 64] = { 0, 0, 0, 11, 's', 's', 'h', '-', 'e', 'd', '2', '5', '5', '1', '9',
					       0, 0, 0, 64 };
	size_t seed = 32, pub = 32;
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	int ok = k && EVP_PKEY_get_raw_private_key(k, key + 19, &seed) == 1 &&
		 EVP_PKEY_get_raw_public_key(k, key + 19 + 32, &pub) == 1 && seed == 32 && pub == 32;
	size_t len;

	EVP_PKEY_free(k);
	if (!ok)
		return -EIO;
	len = (size_t)xsnprintf(buf, sz, "printf '");
	for (size_t i = 0; i < sizeof key && len + 5 < sz; i++)
		len += (size_t)snprintf(buf + len, sz - len, "\\%03o", key[i]);
	OPENSSL_cleanse(key, sizeof key);
	if ((size_t)xsnprintf(buf + len, sz - len, "' >/etc/dropbear/dropbear_ed25519_host_key || exit 4;") >= sz - len)
		return -E2BIG;
	return 0;
}

/*
 * Guests of `hutch template build` run the SSH server once per connection
 * (busybox nc execs dropbear -i), each reading the key and seeding its
 * random state afresh: nothing to restart. Other guests run a listener
 * whose random state came from the template's memory too: it is killed
 * (init's child; a session's own server process, over SSH, stays), and the
 * script waits for init to start it again with the new key.
 */
static const char restart_server[] =
	"[ -e /etc/hutch/ssh-per-connection ] ||"
	" { l() { for p in $(pidof dropbear sshd); do [ \"$(cut -d' ' -f4 /proc/$p/stat)\" = 1 ] && echo $p; done; };"
	" old=$(l); [ -z \"$old\" ] || { kill -9 $old;"
	" i=0; while [ $i -lt 200 ]; do n=$(l); [ -n \"$n\" ] && [ \"$n\" != \"$old\" ] && break;"
	" usleep 10000; i=$((i+1)); done; }; };";
static const char key_by_dropbearkey[] =
	"rm -f /etc/dropbear/*_host_key; dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1 || exit 4;";

int vm_warm_reidentify(struct vmd *d, struct vm *vm, char *err, size_t errsz)
{
	char helper[VMD_PATH_MAX], script[3072], hex[129], out[1024] = "", key[512], reseed[384];
	unsigned char rnd[64];
	struct timespec ts;
	int outfd = -1, status = 0, r;
	pid_t pid;
	uint64_t t0 = now_ns();
	bool agent = vm->agent_fd >= 0;

	vmd_helper_path("hutch-guest-reseed", helper, sizeof helper);
	_cleanup_close_ int hfd = agent ? -1 : open(helper, O_RDONLY | O_CLOEXEC);
	if (!agent && hfd < 0) {
		xsnprintf(err, errsz, "cannot open %s (installed with hutch-vmd): %s", helper, strerror(errno));
		return -ENOENT;
	}
	{
		_cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd)
			return -EIO;
	}
	for (size_t i = 0; i < sizeof rnd; i++)
		sprintf(hex + 2 * i, "%02x", rnd[i]);
	if (agent && host_key_by_printf(key, sizeof key) < 0) {
		xsnprintf(err, errsz, "cannot make an SSH host key for VM '%s'", vm->name);
		return -EIO;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	/* The entropy goes in on stdin, never on a command line other guest users
	 * could read: through a private file over the agent (a pipe would cost
	 * the shell a process), through a pipe after the program over SSH. */
	if (agent)
		xsnprintf(reseed, sizeof reseed, "umask 077; echo %s %lld >/run/hutch-seed;"
			  " /usr/lib/hutch/guest-reseed </run/hutch-seed; r=$?; : >/run/hutch-seed; [ $r = 0 ]",
			  hex, (long long)ts.tv_sec);
	else
		xsnprintf(reseed, sizeof reseed, "cat >/run/hutch-reseed && chmod 700 /run/hutch-reseed &&"
			  " echo %s %lld | /run/hutch-reseed; r=$?; rm -f /run/hutch-reseed; [ $r = 0 ]",
			  hex, (long long)ts.tv_sec);
	/* Names, hex and the MAC are checked or made here: safe in a shell line.
	 * A guest with the agent has the reseed helper (template build put it
	 * there); over SSH it comes as the session's input. The new MAC is
	 * announced (arp_notify: a gratuitous ARP): QEMU's user network keeps
	 * sending to the template's MAC, which the NIC now drops; without it
	 * the first SSH connection never got in, only a later one. */
	xsnprintf(script, sizeof script,
		  "%s || { echo 'hutch: RNG reseed or clock failed' >&2; exit 3; };"
		  " echo %s >/proc/sys/kernel/hostname; echo %s >/etc/hostname;"
		  " printf '127.0.0.1 localhost\\n127.0.1.1 %%s\\n' %s >/etc/hosts;"
		  " echo %s >/etc/machine-id;"
		  " echo 1 >/proc/sys/net/ipv4/conf/eth0/arp_notify; ip link set eth0 address %s || { ip link set eth0 down; ip link set eth0 address %s;"
		  " ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2; };"
		  " %s %s"
		  " [ -e /etc/hutch/ssh-per-connection ] && echo hutch-ssh-per-connection; echo hutch-reidentified",
		  reseed, vm->name, vm->name, vm->name, vm->machine_id, vm->mac, vm->mac,
		  agent ? key : key_by_dropbearkey, restart_server);
	if (agent) {
		r = vm_agent_run(vm, script, out, sizeof out, 30000);
		/* The script carried the private host key. */
		OPENSSL_cleanse(key, sizeof key);
		OPENSSL_cleanse(script, sizeof script);
		if (r != 0 || !strstr(out, "hutch-reidentified")) {
			out[strcspn(out, "\n")] = '\0';
			xsnprintf(err, errsz, "VM '%s' could not be given its own identity after the fork "
				 "(agent: %s): %s", vm->name, r < 0 ? strerror(-r) : "exit status", out);
			return -EIO;
		}
		goto done;
	}
	/* No known hosts: the host key is about to change. */
	pid = guest_ssh_start(d, vm, NULL, 30, script, hfd, true, &outfd);
	if (pid < 0)
		return pid;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(outfd, out + len, sizeof out - 1 - len);

		if (n <= 0 || (len += (size_t)n) >= sizeof out - 1)
			break;
	}
	out[len] = '\0';
	close(outfd);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !strstr(out, "hutch-reidentified")) {
		out[strcspn(out, "\n")] = '\0';
		xsnprintf(err, errsz, "VM '%s' could not be given its own identity after the fork (ssh exit %d): %s",
			 vm->name, WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
		return -EIO;
	}
done:
	log_info("VM %s re-identified after the fork in %" PRIu64 " ms (%s)", vm->name,
		 (now_ns() - t0) / 1000000, agent ? "agent" : "SSH");
	/* The SSH server runs again with the new host key: wait for its banner. */
	return vm_wait_ssh(d, vm, d->cfg.vmd.boot_timeout_ms, strstr(out, "hutch-ssh-per-connection") != NULL);
}

/* ---- live fork ------------------------------------------------------------------ */

int vm_live_fork_save(struct vmd *d, struct vm *src, const char *dst, char *tmp_image, size_t tmpsz,
		      char *err, size_t errsz)
{
	char state[VMD_PATH_MAX], ram[VMD_PATH_MAX], sram[VMD_PATH_MAX], status[64] = "";
	struct qmp *q = NULL;
	bool running;
	json_object *ret = NULL, *v;
	int r;
	uint64_t t0 = now_ns(), t1;

	pthread_mutex_lock(&d->lock);
	running = src->state == VM_RUNNING && src->tier == TIER_AWAKE;
	pthread_mutex_unlock(&d->lock);
	if (!running) {
		xsnprintf(err, errsz, "VM '%s' is not running awake; a live fork needs a running VM "
			 "(`hutch vm resume %s` first, or fork it stopped without --live)", src->name, src->name);
		return -EINVAL;
	}
	if (vm_dir(d, src->name, "run/ram", sram, sizeof sram) < 0 ||
	    live_file(d, dst, "state", state, sizeof state) < 0 || live_file(d, dst, "ram", ram, sizeof ram) < 0)
		return -ENAMETOOLONG;
	enum ram_kind kind = vm_ram_kind(src);
	if (kind == RAM_ANONYMOUS) {
		xsnprintf(err, errsz, "VM '%s' has no RAM file (started by an older hutch-vmd); restart it "
			 "once (`hutch vm restart %s`) to fork it live", src->name, src->name);
		return -EOPNOTSUPP;
	}
	/* QEMU runs `cat` for the state as SRC's uid. */
	live_file(d, dst, NULL, ram, sizeof ram);
	if (src->uid && chown(ram, src->uid, src->uid) < 0) {
		r = -errno;
		xsnprintf(err, errsz, "cannot hand %s to VM '%s''s uid: %s", ram, src->name, strerror(-r));
		return r;
	}
	live_file(d, dst, "ram", ram, sizeof ram);
	xsnprintf(tmp_image, tmpsz, "vm.%s.live-fork", dst);
	if ((r = vm_qmp(d, src, &q, err, errsz)) < 0)
		return r;
	/* A warm SRC's RAM comes out of the stream straight into DST's file. */
	if ((r = vm_save_state(q, state, kind == RAM_WARM_PRIVATE ? ram : NULL, err, errsz)) < 0)
		goto cont;
	/* Stopped, disk flushed: RAM and disk now belong together. */
	if (kind == RAM_OWN_FILE && (r = copy_sparse(sram, ram, err, errsz)) < 0)
		goto cont;
	rm_quiet(d, tmp_image);
	r = vmd_image_fork(d, src->disk, tmp_image, err, errsz);
cont:
	if (qmp_execute(q, "query-status", NULL, QMP_TIMEOUT_MS, &ret, NULL, 0) == 0 &&
	    json_object_object_get_ex(ret, "status", &v))
		xsnprintf(status, sizeof status, "%s", json_object_get_string(v));
	json_object_put(ret);
	if (strcmp(status, "running") != 0)
		qmp_execute(q, "cont", NULL, QMP_TIMEOUT_MS, NULL, NULL, 0);
	qmp_close(q);
	t1 = now_ns();
	if (r < 0) {
		live_file(d, dst, NULL, ram, sizeof ram);
		nftw(ram, rm_cb, 4, FTW_DEPTH | FTW_PHYS);
		return r;
	}
	log_info("VM %s: live fork to %s saved; %s was stopped for %" PRIu64 " ms", src->name, dst,
		 src->name, (t1 - t0) / 1000000);
	return 0;
}

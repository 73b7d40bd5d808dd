/*
 * Templates: $HUTCH_HOME/templates/NAME/{template.json,vmlinuz,initrd.img}
 * plus the store image "template.NAME" holding the disk.
 */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "log.h"

#define ERRSZ 1024

static pthread_mutex_t template_lock = PTHREAD_MUTEX_INITIALIZER;	/* one import/rm at a time */

int template_load(struct vmd *d, const char *name, json_object **out)
{
	char path[VMD_PATH_MAX];
	json_object *o;

	if (!name_is_valid(name))
		return -EINVAL;
	if ((size_t)xsnprintf(path, sizeof path, "%s/%s/template.json", d->templates_dir, name) >= sizeof path)
		return -ENAMETOOLONG;
	o = json_object_from_file(path);
	if (!o)
		return -ENOENT;
	template_warm_annotate(d, name, o);
	*out = o;
	return 0;
}

/* Runs ARGV, collecting stdout+stderr (at most outsz-1 bytes) into OUT. */
static int run_capture(char *const argv[], char *out, size_t outsz)
{
	int p[2], status;
	size_t len = 0;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		if (nul >= 0)
			dup2(nul, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		char buf[4096];
		ssize_t n = read(p[0], buf, sizeof buf);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (len + 1 < outsz) {
			size_t take = MIN((size_t)n, outsz - 1 - len);

			memcpy(out + len, buf, take);
			len += take;
		}
	}
	close(p[0]);
	if (outsz)
		out[len] = '\0';
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void one_line(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
	for (char *p = s; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Copies FILE (raw or qcow2, whatever qemu-img detects) into a new store image. */
static int import_disk(struct vmd *d, const char *file, const char *image, uint64_t *size,
		       char *err, size_t errsz)
{
	char out[8192], uri[VMD_PATH_MAX + 300], fmt[32] = "raw";
	json_object *info, *v, *req, *reply = NULL;
	int r;

	char *info_argv[] = { (char *)"qemu-img", (char *)"info", (char *)"--output=json",
			      (char *)file, NULL };
	r = run_capture(info_argv, out, sizeof out);
	if (r != 0) {
		one_line(out);
		xsnprintf(err, errsz, "qemu-img cannot read %s: %s", file, out);
		return -EINVAL;
	}
	info = json_tokener_parse(out);
	if (!info || !json_object_object_get_ex(info, "virtual-size", &v)) {
		json_object_put(info);
		xsnprintf(err, errsz, "qemu-img info gave no size for %s", file);
		return -EINVAL;
	}
	*size = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(info, "format", &v))
		xsnprintf(fmt, sizeof fmt, "%s", json_object_get_string(v));
	json_object_put(info);
	if (strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0) {
		xsnprintf(err, errsz, "%s is a %s image; import raw or qcow2 (convert with qemu-img convert)",
			 file, fmt);
		return -EINVAL;
	}

	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("image.create"));
	json_object_object_add(req, "name", json_object_new_string(image));
	json_object_object_add(req, "size", json_object_new_uint64(*size));
	r = vmd_storaged_call(d, req, &reply, err, errsz);
	json_object_put(req);
	json_object_put(reply);
	if (r < 0)
		return r;

	xsnprintf(uri, sizeof uri, "nbd+unix:///%s?socket=%s", image, d->nbd_sock);
	/* A new image reads as zeroes: skip the holes instead of writing them. */
	char *conv_argv[] = { (char *)"qemu-img", (char *)"convert", (char *)"-n",
			      (char *)"--target-is-zero", (char *)"-f", fmt, (char *)"-O",
			      (char *)"raw", (char *)file, uri, NULL };
	r = run_capture(conv_argv, out, sizeof out);
	if (r != 0) {
		one_line(out);
		xsnprintf(err, errsz, "copying %s into the store failed: %s", file, out);
		vmd_image_rm(d, image, out, sizeof out);
		return -EIO;
	}
	return 0;
}

static int op_import(struct vmd *d, int fd, json_object *req)
{
	char why[256], err[ERRSZ] = "", dir[VMD_PATH_MAX], path[VMD_PATH_MAX], image[HUTCH_NAME_MAX + 1];
	const char *name, *disk, *kernel, *initrd, *cmdline = "console=ttyS0 root=/dev/vda rw";
	json_object *v, *t, *o;
	uint64_t size, cpus = 1, memory = 256u << 20;
	int r;

	if (ctl_arg_string(req, "name", &name, why, sizeof why) < 0 ||
	    ctl_arg_string(req, "disk", &disk, why, sizeof why) < 0 ||
	    ctl_arg_string(req, "kernel", &kernel, why, sizeof why) < 0 ||
	    ctl_arg_string(req, "initrd", &initrd, why, sizeof why) < 0)
		return ctl_reply_error(fd, EINVAL, "%s", why);
	if (json_object_object_get_ex(req, "cmdline", &v) && json_object_is_type(v, json_type_string))
		cmdline = json_object_get_string(v);
	if (json_object_object_get_ex(req, "cpus", &v) && json_object_is_type(v, json_type_int))
		cpus = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(req, "memory", &v) && json_object_is_type(v, json_type_int))
		memory = (uint64_t)json_object_get_int64(v);
	if (!name_is_valid(name) || strlen(name) + 9 > HUTCH_NAME_MAX)
		return ctl_reply_error(fd, EINVAL, "invalid template name '%s'", name);
	if (cpus == 0 || cpus > 512 || memory < (32u << 20))
		return ctl_reply_error(fd, EINVAL, "cpus must be 1..512 and memory at least 32M");
	if (disk[0] != '/' || kernel[0] != '/' || initrd[0] != '/')
		return ctl_reply_error(fd, EINVAL, "disk, kernel and initrd must be absolute paths");
	if (access(kernel, R_OK) < 0 || access(initrd, R_OK) < 0)
		return ctl_reply_error(fd, ENOENT, "cannot read the kernel %s or the initrd %s", kernel, initrd);
	xsnprintf(image, sizeof image, "template.%s", name);
	xsnprintf(dir, sizeof dir, "%s/%s", d->templates_dir, name);

	pthread_mutex_lock(&template_lock);
	if (template_load(d, name, &t) == 0) {
		json_object_put(t);
		r = ctl_reply_error(fd, EEXIST, "a template named '%s' already exists; "
				    "remove it first (`hutch template rm %s`)", name, name);
		goto out;
	}
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	if (mkdir(dir, 0755) < 0) {
		r = ctl_reply_error(fd, errno, "cannot make %s: %s", dir, strerror(errno));
		goto out;
	}
	r = import_disk(d, disk, image, &size, err, sizeof err);
	if (r == 0) {
		xsnprintf(path, sizeof path, "%s/vmlinuz", dir);
		r = copy_file(kernel, path);
		if (r == 0) {
			xsnprintf(path, sizeof path, "%s/initrd.img", dir);
			r = copy_file(initrd, path);
		}
		if (r < 0) {
			xsnprintf(err, sizeof err, "cannot copy the kernel and initrd: %s", strerror(-r));
			vmd_image_rm(d, image, why, sizeof why);
		}
	}
	if (r < 0) {
		nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		r = ctl_reply_error(fd, r, "%s", err);
		goto out;
	}
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "disk", json_object_new_string(image));
	json_object_object_add(o, "size", json_object_new_uint64(size));
	json_object_object_add(o, "cmdline", json_object_new_string(cmdline));
	json_object_object_add(o, "cpus", json_object_new_uint64(cpus));
	json_object_object_add(o, "memory", json_object_new_uint64(memory));
	/* The guest serves hutch's agent: its VMs get the virtio port (vmd-agent.c). */
	json_object_object_add(o, "agent", json_object_new_boolean(json_object_object_get_ex(req, "agent", &v) &&
								    json_object_get_boolean(v)));
	json_object_object_add(o, "created", json_object_new_uint64((uint64_t)time(NULL)));
	json_object_object_add(o, "source", json_object_new_string(disk));
	xsnprintf(path, sizeof path, "%s/template.json", dir);
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	r = write_file_atomic(path, s, strlen(s), 0644);
	if (r < 0) {
		json_object_put(o);
		vmd_image_rm(d, image, why, sizeof why);
		nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		r = ctl_reply_error(fd, r, "cannot write %s: %s", path, strerror(-r));
		goto out;
	}
	log_info("template %s imported from %s", name, disk);
	v = json_object_new_object();
	json_object_object_add(v, "template", o);
	r = ctl_reply_ok(fd, v);
out:
	pthread_mutex_unlock(&template_lock);
	return r;
}

static int by_name(const void *a, const void *b)
{
	json_object *const *x = a, *const *y = b;
	json_object *nx, *ny;

	json_object_object_get_ex(*x, "name", &nx);
	json_object_object_get_ex(*y, "name", &ny);
	return strcmp(json_object_get_string(nx), json_object_get_string(ny));
}

static int op_list(struct vmd *d, int fd)
{
	json_object *arr = json_object_new_array(), *o = json_object_new_object(), *t;
	DIR *dir = opendir(d->templates_dir);
	struct dirent *de;

	while (dir && (de = readdir(dir)))
		if (de->d_name[0] != '.' && template_load(d, de->d_name, &t) == 0)
			json_object_array_add(arr, t);
	if (dir)
		closedir(dir);
	json_object_array_sort(arr, by_name);
	json_object_object_add(o, "templates", arr);
	return ctl_reply_ok(fd, o);
}

static int op_rm(struct vmd *d, int fd, json_object *req)
{
	char why[256], err[ERRSZ], dir[VMD_PATH_MAX];
	const char *name, *image;
	json_object *t, *v;
	int r;

	if (ctl_arg_string(req, "name", &name, why, sizeof why) < 0)
		return ctl_reply_error(fd, EINVAL, "%s", why);
	pthread_mutex_lock(&template_lock);
	if (template_load(d, name, &t) < 0) {
		r = ctl_reply_error(fd, ENOENT, "no template named '%s' (see `hutch template list`)", name);
		goto out;
	}
	image = json_object_object_get_ex(t, "disk", &v) ? json_object_get_string(v) : "";
	/* VMs keep their own disk forks and kernel copies: removing a template never breaks them. */
	r = vmd_image_rm(d, image, err, sizeof err);
	if (r < 0 && r != -ENOENT) {
		json_object_put(t);
		r = ctl_reply_error(fd, r, "cannot remove the template's image %s: %s", image, err);
		goto out;
	}
	json_object_put(t);
	template_warm_forget(d, name);
	xsnprintf(dir, sizeof dir, "%s/%s", d->templates_dir, name);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	log_info("template %s removed", name);
	r = ctl_reply_ok(fd, NULL);
out:
	pthread_mutex_unlock(&template_lock);
	return r;
}

int vmd_template_op(struct vmd *d, int fd, const char *op, json_object *req)
{
	if (strcmp(op, "template.import") == 0)
		return op_import(d, fd, req);
	if (strcmp(op, "template.list") == 0)
		return op_list(d, fd);
	if (strcmp(op, "template.rm") == 0)
		return op_rm(d, fd, req);
	return ctl_reply_error(fd, EOPNOTSUPP, "unknown op '%s' (see docs/hutch-vmd.md)", op);
}

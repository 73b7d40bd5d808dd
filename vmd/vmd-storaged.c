/* Requests to hutch-storaged's control socket, and the NBD export ACL. */
#include "vmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"

int vmd_storaged_call(struct vmd *d, json_object *req, json_object **reply, char *err, size_t errsz)
{
	_cleanup_close_ int fd = ctl_connect(d->storaged_sock);
	int r;

	if (fd < 0) {
		xsnprintf(err, errsz, "hutch-storaged is not running (no %s): start it first", d->storaged_sock);
		return fd;
	}
	r = ctl_call(fd, req, reply, NULL, NULL, err, errsz);
	return r;
}

static int call2(struct vmd *d, const char *op, const char *k1, const char *v1, const char *k2,
		 const char *v2, char *err, size_t errsz)
{
	json_object *req = json_object_new_object();
	json_object *reply = NULL;
	int r;

	json_object_object_add(req, "op", json_object_new_string(op));
	json_object_object_add(req, k1, json_object_new_string(v1));
	if (k2)
		json_object_object_add(req, k2, json_object_new_string(v2));
	r = vmd_storaged_call(d, req, &reply, err, errsz);
	json_object_put(req);
	json_object_put(reply);
	return r;
}

int vmd_image_fork(struct vmd *d, const char *src, const char *dst, char *err, size_t errsz)
{
	return call2(d, "image.fork", "src", src, "dst", dst, err, errsz);
}

int vmd_image_rm(struct vmd *d, const char *name, char *err, size_t errsz)
{
	return call2(d, "image.rm", "name", name, NULL, NULL, err, errsz);
}

/*
 * $HOME/nbd-acl, one "UID EXPORT" per line: hutch-storaged lets a
 * connection whose SO_PEERCRED uid is not root (nor its own) open only the
 * exports listed for that uid. A file rather than storaged memory so that
 * it holds across storaged restarts, when QEMUs reconnect as their uid.
 */
int vmd_acl_write(struct vmd *d)
{
	char path[VMD_PATH_MAX];
	size_t cap = 4096, len = 0;
	_cleanup_free_ char *buf = malloc(cap);
	int r;

	if (!buf)
		return -ENOMEM;
	len = (size_t)xsnprintf(buf, cap, "# uid export (written by hutch-vmd)\n");
	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next) {
		if (!vm->uid)
			continue;
		if (len + HUTCH_NAME_MAX + 32 > cap) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				pthread_mutex_unlock(&d->lock);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		len += (size_t)xsnprintf(buf + len, cap - len, "%u %s\n", vm->uid, vm->disk);
	}
	pthread_mutex_unlock(&d->lock);
	r = hutch_path(path, sizeof path, d->home, "nbd-acl");
	if (r == 0)
		r = write_file_atomic(path, buf, len, 0644);
	return r;
}

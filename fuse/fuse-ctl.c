/*
 * Control socket calls, over common/ctl.h (docs/control.md).
 * A fresh connection per call keeps this stateless: a storaged restart
 * needs no reconnect logic here, and a unix connect costs microseconds
 * next to the operation itself.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "log.h"
#include "fuse-internal.h"

json_object *fctl_req(const char *op)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "op", json_object_new_string(op));
	return o;
}

int fctl_call(json_object *req, json_object **reply)
{
	char err[256] = "";
	int r, fd = ctl_connect(fs_cfg.control_socket);

	if (fd < 0) {
		log_debug("control socket %s: %s", fs_cfg.control_socket, strerror(-fd));
		json_object_put(req);
		return -EIO;
	}
	json_object *rep = NULL;
	r = ctl_call(fd, req, &rep, NULL, NULL, err, sizeof(err));
	close(fd);
	json_object_put(req);
	if (r == 0 && reply)
		*reply = rep;
	else if (r == 0)
		json_object_put(rep);
	if (r < 0)
		log_debug("control: %s", err);
	/* A transport failure means storaged went away mid-call. */
	if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
		r = -EIO;
	return r;
}

static uint64_t get_u64(json_object *o, const char *key)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	return (uint64_t)json_object_get_int64(v);
}

int fctl_image_info(const char *ref, struct fctl_image *out)
{
	json_object *req = fctl_req("image.info"), *reply, *img;
	json_object_object_add(req, "name", json_object_new_string(ref));
	json_object_object_add(req, "usage", json_object_new_boolean(0));
	int r = fctl_call(req, &reply);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(reply, "image", &img)) {
		json_object_put(reply);
		return -EIO;
	}
	out->size = get_u64(img, "size");
	out->created = get_u64(img, "created");
	json_object *ro;
	out->readonly = json_object_object_get_ex(img, "readonly", &ro) &&
			json_object_get_boolean(ro);
	json_object_put(reply);
	return 0;
}

static int simple2(const char *op, const char *k1, const char *v1, const char *k2,
		   const char *v2, const char *k3, uint64_t v3)
{
	json_object *req = fctl_req(op);
	json_object_object_add(req, k1, json_object_new_string(v1));
	if (k2)
		json_object_object_add(req, k2, json_object_new_string(v2));
	if (k3)
		json_object_object_add(req, k3, json_object_new_int64((int64_t)v3));
	return fctl_call(req, NULL);
}

int fctl_image_create(const char *name, uint64_t size)
{
	return simple2("image.create", "name", name, NULL, NULL, "size", size);
}

int fctl_image_rm(const char *ref)
{
	return simple2("image.rm", "name", ref, NULL, NULL, NULL, 0);
}

int fctl_image_rename(const char *old_name, const char *new_name)
{
	return simple2("image.rename", "old", old_name, "new", new_name, NULL, 0);
}

int fctl_image_resize(const char *name, uint64_t size)
{
	return simple2("image.resize", "name", name, NULL, NULL, "size", size);
}

int fctl_image_snapshot(const char *name, const char *snap)
{
	return simple2("image.snapshot", "name", name, "snap", snap, NULL, 0);
}

int fctl_image_clone_range(const char *src, uint64_t src_off, const char *dst,
			  uint64_t dst_off, uint64_t len)
{
	json_object *req = fctl_req("image.clone_range");
	json_object_object_add(req, "src", json_object_new_string(src));
	json_object_object_add(req, "src_offset", json_object_new_int64((int64_t)src_off));
	json_object_object_add(req, "dst", json_object_new_string(dst));
	json_object_object_add(req, "dst_offset", json_object_new_int64((int64_t)dst_off));
	json_object_object_add(req, "length", json_object_new_int64((int64_t)len));
	return fctl_call(req, NULL);
}

void names_free(char **names, size_t n)
{
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
}

int fctl_image_names(char ***names, size_t *n)
{
	json_object *req = fctl_req("image.list"), *reply, *arr;
	json_object_object_add(req, "usage", json_object_new_boolean(0));
	int r = fctl_call(req, &reply);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(reply, "images", &arr) ||
	    !json_object_is_type(arr, json_type_array)) {
		json_object_put(reply);
		return -EIO;
	}
	size_t cnt = json_object_array_length(arr), k = 0;
	char **v = calloc(cnt + 1, sizeof(*v));
	if (!v) {
		json_object_put(reply);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cnt; i++) {
		json_object *name;
		if (json_object_object_get_ex(json_object_array_get_idx(arr, i), "name", &name) &&
		    (v[k] = strdup(json_object_get_string(name))))
			k++;
	}
	json_object_put(reply);
	*names = v;
	*n = k;
	return 0;
}

int fctl_chunk_size(uint32_t *out)
{
	static uint32_t cached;	/* a store's chunk size never changes */
	json_object *reply, *stats;

	if (__atomic_load_n(&cached, __ATOMIC_RELAXED)) {
		*out = cached;
		return 0;
	}
	int r = fctl_call(fctl_req("store.stats"), &reply);
	if (r < 0)
		return r;
	uint64_t cs = 0;
	if (json_object_object_get_ex(reply, "stats", &stats))
		cs = get_u64(stats, "chunk_size");
	json_object_put(reply);
	if (cs == 0 || cs > UINT32_MAX || (cs & (cs - 1)))
		return -EIO;
	__atomic_store_n(&cached, (uint32_t)cs, __ATOMIC_RELAXED);
	*out = (uint32_t)cs;
	return 0;
}

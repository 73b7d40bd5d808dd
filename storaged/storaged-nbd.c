/*
 * hutch-storaged's NBD service: the nbd/ library's backend operations
 * mapped onto the store. Every head is an export named like it; NAME@SNAP
 * heads are read-only. The store shares one open image per name, so a
 * flush on any connection covers writes acknowledged on all of them: that
 * is what lets us advertise multi-conn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "nbd-server.h"
#include "storaged-acl.h"
#include "storaged-nbd.h"
#include "store.h"
#include "util.h"

/* $HUTCH_HOME/nbd-acl: which VM uid may open which export (storaged-acl.h). */
static char acl_path[4096];

static int be_open(void *opaque, const char *name, const struct ucred *peer, void **handle,
		   struct nbd_export_info *info)
{
	struct store *s = opaque;
	struct image *img;

	if (!ref_is_valid(name))
		return -ENOENT;
	if (!storaged_acl_allows(acl_path, peer, name))
		return -EACCES;
	int r = store_image_open(s, name, &img);
	if (r < 0)
		return r;
	bool ro = image_readonly(img);
	char sz[32];
	*info = (struct nbd_export_info){
		.size = image_size(img),
		.readonly = ro,
		.can_flush = true, .can_fua = true, .can_trim = true, .can_zero = true,
		.can_fast_zero = true, .can_cache = true, .can_extents = true,
		.can_multi_conn = true,
		.pref_block = 4096,
	};
	snprintf(info->description, sizeof(info->description), "%s%s, %s",
		 ro ? "read-only snapshot " : "image ", name,
		 format_size(info->size, sz, sizeof(sz)));
	*handle = img;
	return 0;
}

static void be_close(void *handle)
{
	image_close(handle);	/* the last close flushes the image */
}

static int be_list(void *opaque, const struct ucred *peer, nbd_list_fn fn, void *ctx)
{
	struct store_image_info *v = NULL;
	size_t n = 0;
	int r = store_image_list(opaque, false, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char desc[512], sz[32];
		if (!storaged_acl_allows(acl_path, peer, v[i].name))
			continue;
		format_size(v[i].size, sz, sizeof(sz));
		if (v[i].readonly)
			snprintf(desc, sizeof(desc), "read-only snapshot, %s", sz);
		else if (v[i].parent[0])
			snprintf(desc, sizeof(desc), "image, %s, forked from %s", sz, v[i].parent);
		else
			snprintf(desc, sizeof(desc), "image, %s", sz);
		if (fn(ctx, v[i].name, desc))
			break;
	}
	free(v);
	return 0;
}

static unsigned img_flags(unsigned be_flags)
{
	return (be_flags & NBD_BE_FUA) ? IMAGE_FUA : 0;
}

static int be_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
	return image_read(h, buf, off, len);
}

static int be_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, unsigned flags)
{
	return image_write(h, buf, off, len, img_flags(flags));
}

/* Zeroing is always fast in the store (whole chunks become holes), so FAST_ZERO needs nothing. */
static int be_zero(void *h, uint32_t len, uint64_t off, unsigned flags)
{
	return image_zero(h, off, len, img_flags(flags));
}

static int be_trim(void *h, uint32_t len, uint64_t off, unsigned flags)
{
	return image_trim(h, off, len, img_flags(flags));
}

static int be_flush(void *h)
{
	return image_flush(h);
}

static int be_extents(void *h, uint32_t len, uint64_t off, nbd_extent_fn fn, void *ctx)
{
	/* EXTENT_HOLE/EXTENT_ZERO have the values of NBD_STATE_HOLE/NBD_STATE_ZERO. */
	return image_extents(h, off, len, fn, ctx);
}

/* One storaged per process, so one backend table. */
static struct nbd_backend store_backend = {
	.open = be_open,
	.close = be_close,
	.list = be_list,
	.pread = be_pread,
	.pwrite = be_pwrite,
	.zero = be_zero,
	.trim = be_trim,
	.flush = be_flush,
	.extents = be_extents,
};

int storaged_nbd_start(struct store *s, const struct hutch_config *cfg, const char *home,
		       struct nbd_server **out)
{
	struct nbd_server_config nc;
	char run[4096];
	int r;

	nbd_server_config_default(&nc);
	r = hutch_path(run, sizeof(run), home, "run");
	if (r < 0)
		return r;
	r = mkdir_p(run, 0755);
	if (r < 0)
		return r;
	r = hutch_path(nc.unix_path, sizeof(nc.unix_path), home, "run/nbd.sock");
	if (r < 0) {
		log_error("NBD socket path under %s is too long for a unix socket", home);
		return r;
	}
	snprintf(nc.tcp_listen, sizeof(nc.tcp_listen), "%s", cfg->nbd.tcp_listen);
	nc.workers = cfg->nbd.workers;
	nc.max_request = cfg->nbd.max_request;
	nc.max_inflight = cfg->nbd.max_inflight;
	nc.inline_max = cfg->nbd.inline_max;
	nc.send_buffer = cfg->nbd.send_buffer;

	r = hutch_path(acl_path, sizeof(acl_path), home, "nbd-acl");
	if (r < 0)
		return r;

	store_backend.opaque = s;
	r = nbd_server_start(&nc, &store_backend, out);
	if (r < 0) {
		log_error("NBD server on %s%s%s: %s", nc.unix_path, nc.tcp_listen[0] ? " and TCP " : "",
			  nc.tcp_listen, strerror(-r));
		return r;
	}
	/* Every export is guarded by the uid ACL (storaged-acl.h), so any local
	 * user may connect: VMs' QEMUs reconnect as their own uids. */
	if (chmod(nc.unix_path, 0666) < 0)
		log_warn("cannot open %s to VM uids: %s", nc.unix_path, strerror(errno));
	log_info("NBD: serving images on %s%s%s (%u workers)", nc.unix_path,
		 nc.tcp_listen[0] ? " and TCP " : "", nc.tcp_listen, nc.workers);
	return 0;
}

void storaged_nbd_stop(struct nbd_server *srv)
{
	nbd_server_stop(srv);
}

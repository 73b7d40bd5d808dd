/*
 * Namespace operations: the two-level tree images/NAME and
 * images/NAME.snap/SNAP, mapped onto storaged's control operations.
 * Every op replies exactly once; a refused op leaves the store as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <linux/fs.h>

#include "cleanup.h"
#include "log.h"
#include "fuse-internal.h"

/* Look a name up before making a node for it, so that probing for
 * names that do not exist does not grow the table. */
static void lookup_ref(fuse_req_t req, enum node_kind kind, const char *ref)
{
	struct fctl_image info;
	int r = fctl_image_info(ref, &info);
	struct node *n;
	if (r == -ENOENT && kind == NODE_IMAGE && (n = node_find_pending(ref))) {
		reply_entry(req, n);
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, -r == ESHUTDOWN ? ENOENT : -r);
		return;
	}
	n = node_get(kind, ref);
	if (!n) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_entry_with(req, n, &info);	/* one image.info per lookup, not two */
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = node_by_ino(parent);
	char base[REF_MAX], ref[REF_MAX];

	if (!p) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (p->kind) {
	case NODE_ROOT:
		if (strcmp(name, "images") == 0)
			reply_entry(req, node_by_ino(INO_IMAGES));
		else
			fuse_reply_err(req, ENOENT);
		return;
	case NODE_IMAGES:
		if (snapdir_name(name, base, sizeof(base)) && name_is_valid(base))
			lookup_ref(req, NODE_SNAPDIR, base);
		else if (name_is_valid(name))
			lookup_ref(req, NODE_IMAGE, name);
		else
			fuse_reply_err(req, ENOENT);
		return;
	case NODE_SNAPDIR:
		node_ref(p, base, sizeof(base));
		if (!name_is_valid(name)) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		if (snprintf(ref, sizeof(ref), "%s@%s", base, name) >= (int)sizeof(ref))
			fuse_reply_err(req, ENAMETOOLONG);
		else
			lookup_ref(req, NODE_SNAP, ref);
		return;
	default:
		fuse_reply_err(req, ENOTDIR);
	}
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_by_ino(ino);
	struct stat st;
	int r = n ? node_stat(n, &st) : -ENOENT;

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs_cfg.attr_timeout);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct node *n = node_by_ino(ino);
	char ref[REF_MAX];
	struct stat st;
	int r = 0;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (n->kind == NODE_SNAP) {
			fuse_reply_err(req, EROFS);
			return;
		}
		if (n->kind != NODE_IMAGE) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		if (attr->st_size < 0) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		pthread_mutex_lock(&n->grow_lock);
		node_ref(n, ref, sizeof(ref));
		if (node_is_pending(n)) {
			/* The first size makes the image real. */
			r = attr->st_size ? fctl_image_create(ref, (uint64_t)attr->st_size) : 0;
			if (r == 0 && attr->st_size)
				node_set_pending(n, false);
		} else {
			r = fctl_image_resize(ref, (uint64_t)attr->st_size);
			if (r == 0)
				pool_reset(node_pool(n), NULL);	/* handshake sizes are stale */
		}
		n->size = (uint64_t)attr->st_size;
		n->size_known = r == 0 && attr->st_size;
		pthread_mutex_unlock(&n->grow_lock);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	/* Modes, owners and times are not stored; accepting them keeps
	 * cp -p, touch and rsync working. */
	r = node_stat(n, &st);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs_cfg.attr_timeout);
}

/* ---- readdir: the listing is taken at opendir and served by offset ---- */

struct dirent_ent {
	char *name;
	fuse_ino_t ino;
	mode_t mode;
};
struct dirlist {
	struct dirent_ent *v;
	size_t n, cap;
};

static int dirlist_add(struct dirlist *d, const char *name, fuse_ino_t ino, mode_t mode)
{
	if (d->n == d->cap) {
		size_t ncap = d->cap ? d->cap * 2 : 32;
		struct dirent_ent *nv = realloc(d->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		d->v = nv;
		d->cap = ncap;
	}
	d->v[d->n].name = strdup(name);
	if (!d->v[d->n].name)
		return -ENOMEM;
	d->v[d->n].ino = ino;
	d->v[d->n].mode = mode;
	d->n++;
	return 0;
}

static void dirlist_free(struct dirlist *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

static int add_node(struct dirlist *d, const char *entry, enum node_kind kind, const char *ref)
{
	struct node *n = node_get(kind, ref);
	if (!n)
		return -ENOMEM;
	return dirlist_add(d, entry, n->ino, kind == NODE_SNAPDIR ? S_IFDIR : S_IFREG);
}

/* images/: every image, and NAME.snap for those that have snapshots. */
static int list_images(struct dirlist *d, char **names, size_t n)
{
	char base[REF_MAX], prev[REF_MAX] = "";
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++) {
		const char *snap;
		if (!ref_split(names[i], base, sizeof(base), &snap)) {
			r = add_node(d, names[i], NODE_IMAGE, names[i]);
		} else if (strcmp(prev, base) != 0) {
			char entry[REF_MAX + 8];
			snprintf(prev, sizeof(prev), "%s", base);
			snprintf(entry, sizeof(entry), "%s" SNAPDIR_SUFFIX, base);
			r = add_node(d, entry, NODE_SNAPDIR, base);
		}
	}
	return r;
}

static int list_snaps(struct dirlist *d, const char *image, char **names, size_t n)
{
	char base[REF_MAX];
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++) {
		const char *snap;
		if (ref_split(names[i], base, sizeof(base), &snap) && strcmp(base, image) == 0)
			r = add_node(d, snap, NODE_SNAP, names[i]);
	}
	return r;
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_by_ino(ino);
	struct dirlist *d = calloc(1, sizeof(*d));
	char **names = NULL;
	size_t nn = 0;
	char ref[REF_MAX];
	int r;

	if (!n || !d) {
		free(d);
		fuse_reply_err(req, n ? ENOMEM : ENOENT);
		return;
	}
	r = dirlist_add(d, ".", ino, S_IFDIR);
	if (r == 0)
		r = dirlist_add(d, "..", n->kind == NODE_SNAPDIR ? INO_IMAGES : INO_ROOT, S_IFDIR);
	if (r == 0 && n->kind == NODE_ROOT)
		r = dirlist_add(d, "images", INO_IMAGES, S_IFDIR);
	if (r == 0 && (n->kind == NODE_IMAGES || n->kind == NODE_SNAPDIR))
		r = fctl_image_names(&names, &nn);
	if (r == 0 && n->kind == NODE_IMAGES)
		r = list_images(d, names, nn);
	if (r == 0 && n->kind == NODE_IMAGES) {
		names_free(names, nn);
		names = NULL;
		r = node_pending_names(&names, &nn);
		if (r == 0)
			r = list_images(d, names, nn);
	}
	if (r == 0 && n->kind == NODE_SNAPDIR) {
		node_ref(n, ref, sizeof(ref));
		r = list_snaps(d, ref, names, nn);
	}
	names_free(names, nn);
	if (r < 0) {
		dirlist_free(d);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dirlist *d = (struct dirlist *)(uintptr_t)fi->fh;
	_cleanup_free_ char *buf = malloc(size);
	size_t used = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = (size_t)off; i < d->n; i++) {
		struct stat st = { .st_ino = d->v[i].ino, .st_mode = d->v[i].mode };
		size_t need = fuse_add_direntry(req, buf + used, size - used, d->v[i].name,
						&st, (off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	dirlist_free((struct dirlist *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- making and removing names ---------------------------------------- */

int dir_create_image(fuse_ino_t parent, const char *name, mode_t mode, struct node **out)
{
	struct node *p = node_by_ino(parent);

	if (!p)
		return -ENOENT;
	if (p->kind == NODE_SNAPDIR)
		return -EROFS;		/* snapshots are made with ln */
	if (p->kind != NODE_IMAGES)
		return -EPERM;
	if (!S_ISREG(mode))
		return -EPERM;
	if (strlen(name) > HUTCH_NAME_MAX)
		return -ENAMETOOLONG;
	if (!name_is_valid(name))
		return -EINVAL;
	/* The store has no empty images: a new file stays pending (shown
	 * with size 0) until its first write or truncate gives it a size. */
	struct fctl_image info;
	int r = fctl_image_info(name, &info);
	if (r == 0 || node_find_pending(name))
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	node_forget_ref(NODE_IMAGE, name);	/* a fresh inode for a fresh image */
	struct node *n = node_get(NODE_IMAGE, name);
	if (!n)
		return -ENOMEM;
	node_set_pending(n, true);
	*out = n;
	return 0;
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	struct node *n;
	int r = dir_create_image(parent, name, mode, &n);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, n);
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	/* The tree's shape is fixed: images are files, snapshot folders
	 * appear with their first snapshot. */
	fuse_reply_err(req, EPERM);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EPERM);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = node_by_ino(parent);
	char base[REF_MAX], ref[REF_MAX];
	int r;

	if (!p || p->kind == NODE_ROOT) {
		fuse_reply_err(req, p ? EPERM : ENOENT);
		return;
	}
	if (!name_is_valid(name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (p->kind == NODE_IMAGES) {
		r = fctl_image_rm(name);
		if (r == -ENOENT && node_find_pending(name))
			r = 0;
		if (r == 0)
			node_forget_image(name);
	} else if (p->kind == NODE_SNAPDIR) {
		node_ref(p, base, sizeof(base));
		if (snprintf(ref, sizeof(ref), "%s@%s", base, name) >= (int)sizeof(ref))
			r = -ENAMETOOLONG;
		else
			r = fctl_image_rm(ref);
		if (r == 0)
			node_forget_ref(NODE_SNAP, ref);
	} else {
		r = -ENOTDIR;
	}
	fuse_reply_err(req, -r);
}

static bool image_has_snapshots(const char *image, int *err)
{
	char **names = NULL, base[REF_MAX];
	size_t n = 0;
	bool found = false;

	*err = fctl_image_names(&names, &n);
	for (size_t i = 0; i < n && !found; i++) {
		const char *snap;
		found = ref_split(names[i], base, sizeof(base), &snap) && strcmp(base, image) == 0;
	}
	names_free(names, n);
	return found;
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = node_by_ino(parent);
	char base[REF_MAX];
	int err;

	if (!p || p->kind != NODE_IMAGES || !snapdir_name(name, base, sizeof(base))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/* An empty NAME.snap is not listed anyway, so removing it is a
	 * no-op that lets `rm -r images/NAME.snap` finish cleanly. */
	bool has = image_has_snapshots(base, &err);
	fuse_reply_err(req, err < 0 ? -err : has ? ENOTEMPTY : 0);
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct node *p = node_by_ino(parent), *np = node_by_ino(newparent);
	char base[REF_MAX];

	if (!p || !np) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (flags & (RENAME_EXCHANGE | RENAME_WHITEOUT)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* Only whole images are renamed; their snapshots move with them. */
	if (p->kind != NODE_IMAGES || np->kind != NODE_IMAGES ||
	    snapdir_name(name, base, sizeof(base))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!name_is_valid(name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!name_is_valid(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	int r = fctl_image_rename(name, newname);
	if (r == 0)
		node_rename_image(name, newname);
	fuse_reply_err(req, -r);
}

/* ln images/NAME images/NAME.snap/SNAP takes a snapshot. */
static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct node *n = node_by_ino(ino), *np = node_by_ino(newparent);
	char src[REF_MAX], dir[REF_MAX], ref[REF_MAX];

	if (!n || !np) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != NODE_IMAGE || np->kind != NODE_SNAPDIR) {
		fuse_reply_err(req, EPERM);
		return;
	}
	node_ref(n, src, sizeof(src));
	node_ref(np, dir, sizeof(dir));
	if (strcmp(src, dir) != 0) {
		/* A snapshot belongs to its own image's folder. */
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!name_is_valid(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	int r = fctl_image_snapshot(src, newname);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (snprintf(ref, sizeof(ref), "%s@%s", src, newname) >= (int)sizeof(ref)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	node_forget_ref(NODE_SNAP, ref);
	struct node *s = node_get(NODE_SNAP, ref);
	if (!s)
		fuse_reply_err(req, ENOMEM);
	else
		reply_entry(req, s);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	char dir[4200];
	struct statvfs sv;

	snprintf(dir, sizeof(dir), "%s/store", fs_cfg.home);
	if (statvfs(dir, &sv) < 0 && statvfs(fs_cfg.home, &sv) < 0)
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = HUTCH_NAME_MAX + sizeof(SNAPDIR_SUFFIX);
	fuse_reply_statfs(req, &sv);
}

void fs_dir_ops(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = fs_lookup;
	ops->getattr = fs_getattr;
	ops->setattr = fs_setattr;
	ops->opendir = fs_opendir;
	ops->readdir = fs_readdir;
	ops->releasedir = fs_releasedir;
	ops->mknod = fs_mknod;
	ops->mkdir = fs_mkdir;
	ops->symlink = fs_symlink;
	ops->unlink = fs_unlink;
	ops->rmdir = fs_rmdir;
	ops->rename = fs_rename;
	ops->link = fs_link;
	ops->statfs = fs_statfs;
}

/* hutch image create|list|info|rm|resize|rename|snapshot|fork (import/export: cli-transfer.c) */
#include "cli.h"

#include "util.h"
#ifdef HAVE_CLI_TRANSFER
#include "cli-transfer.h"
#endif

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NAME_RULES "names use letters, digits, '.', '_', '+' and '-' (at most 128), " \
		   "do not start with '.' or '-' and do not end in '.snap'"

static int check_name(const char *what, const char *name)
{
	if (name_is_valid(name))
		return 0;
	if (strchr(name, '@'))
		return cli_usage("%s '%s' must be a plain NAME, not a snapshot NAME@SNAP", what, name);
	return cli_usage("invalid %s '%s': %s", what, name, NAME_RULES);
}

static int check_ref(const char *what, const char *ref)
{
	if (ref_is_valid(ref))
		return 0;
	return cli_usage("invalid %s '%s': NAME or NAME@SNAP, where %s", what, ref, NAME_RULES);
}

static json_object *request(const char *op)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(op));
	return o;
}

static void add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

/* After a change, --json prints the resulting image as `image info` would. */
static int print_result(const char *ref, const char *human_fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int print_result(const char *ref, const char *human_fmt, ...)
{
	if (cli.json) {
		json_object *req = request("image.info"), *reply, *img;

		add_str(req, "name", ref);
		if (cli_storaged_call(req, &reply, NULL, NULL))
			return 1;
		json_object_object_get_ex(reply, "image", &img);
		cli_print_json(img);
		json_object_put(reply);
	} else {
		va_list ap;

		va_start(ap, human_fmt);
		vprintf(human_fmt, ap);
		va_end(ap);
		putchar('\n');
	}
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	json_object *req;
	uint64_t size;
	int r = cli_want_operands(argc, argv, 2);

	if (r || (r = check_name("image name", argv[1])) ||
	    (r = cli_parse_size("SIZE", argv[2], &size)))
		return r;
	req = request("image.create");
	add_str(req, "name", argv[1]);
	json_object_object_add(req, "size", json_object_new_uint64(size));
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	return print_result(argv[1], "created image %s (%s)", argv[1], cli_size(size));
}

static int cmd_list(int argc, char **argv)
{
	static const char *const headers[] = { "NAME", "SIZE", "ALLOCATED", "UNIQUE", "SHARED", "PARENT" };
	static const bool right[] = { false, true, true, true, true, false };
	json_object *reply, *imgs;
	struct cli_table *t;
	size_t n;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	if (cli_storaged_call(request("image.list"), &reply, NULL, NULL))
		return 1;
	json_object_object_get_ex(reply, "images", &imgs);
	if (cli.json) {
		cli_print_json(imgs);
		json_object_put(reply);
		return 0;
	}
	n = json_object_array_length(imgs);
	if (n == 0) {
		printf("no images yet; create one with `hutch image create NAME SIZE`\n");
		json_object_put(reply);
		return 0;
	}
	t = cli_table_new(6, headers, right);
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(imgs, i);
		const char *parent = cli_get_str(o, "parent");
		const char *cells[6] = {
			cli_get_str(o, "name"),
			cli_size(cli_get_u64(o, "size")),
			cli_size(cli_get_u64(o, "allocated")),
			cli_size(cli_get_u64(o, "unique")),
			cli_size(cli_get_u64(o, "shared")),
			*parent ? parent : "-",
		};

		cli_table_add(t, cells);
	}
	cli_table_print(t);
	cli_table_free(t);
	json_object_put(reply);
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	json_object *req, *reply, *o;
	char when[64], uri[4200];
	const char *parent;
	time_t created;
	struct tm tm;
	int r = cli_want_operands(argc, argv, 1);

	if (r || (r = check_ref("image", argv[1])))
		return r;
	req = request("image.info");
	add_str(req, "name", argv[1]);
	if (cli_storaged_call(req, &reply, NULL, NULL))
		return 1;
	json_object_object_get_ex(reply, "image", &o);
	if (cli.json) {
		cli_print_json(o);
		json_object_put(reply);
		return 0;
	}
	created = (time_t)cli_get_u64(o, "created");
	gmtime_r(&created, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
	parent = cli_get_str(o, "parent");
	snprintf(uri, sizeof uri, "nbd+unix:///%s?socket=%s/run/nbd.sock", cli_get_str(o, "name"),
		 cli.home);
	printf("name        %s\n", cli_get_str(o, "name"));
	printf("type        %s\n", cli_get_bool(o, "readonly") ? "snapshot (read-only)" : "image (writable)");
	printf("size        %s (%" PRIu64 " bytes)\n", cli_size(cli_get_u64(o, "size")),
	       cli_get_u64(o, "size"));
	printf("allocated   %s\n", cli_size(cli_get_u64(o, "allocated")));
	printf("unique      %s  (freed if this image is removed)\n", cli_size(cli_get_u64(o, "unique")));
	printf("shared      %s  (also used by other images or snapshots)\n",
	       cli_size(cli_get_u64(o, "shared")));
	printf("parent      %s\n", *parent ? parent : "-");
	printf("generation  %" PRIu64 "\n", cli_get_u64(o, "generation"));
	printf("created     %s\n", when);
	printf("open        %" PRIu64 "\n", cli_get_u64(o, "open"));
	printf("nbd         %s\n", uri);
	json_object_put(reply);
	return 0;
}

static int cmd_rm(int argc, char **argv)
{
	json_object *req;
	int r = cli_want_operands(argc, argv, 1);

	if (r || (r = check_ref("image", argv[1])))
		return r;
	req = request("image.rm");
	add_str(req, "name", argv[1]);
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	if (cli.json) {
		json_object *o = json_object_new_object();

		add_str(o, "removed", argv[1]);
		cli_print_json(o);
		json_object_put(o);
	} else {
		printf("removed %s%s\n", argv[1],
		       strchr(argv[1], '@') ? "" : " and its snapshots");
	}
	return 0;
}

static int cmd_resize(int argc, char **argv)
{
	json_object *req;
	uint64_t size;
	int r = cli_want_operands(argc, argv, 2);

	if (r)
		return r;
	if (strchr(argv[1], '@') && ref_is_valid(argv[1]))
		return cli_error("%s is a read-only snapshot and cannot be resized; fork it first "
				 "(hutch image fork %s NEW)", argv[1], argv[1]);
	if ((r = check_name("image name", argv[1])) || (r = cli_parse_size("SIZE", argv[2], &size)))
		return r;
	req = request("image.resize");
	add_str(req, "name", argv[1]);
	json_object_object_add(req, "size", json_object_new_uint64(size));
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	return print_result(argv[1], "resized %s to %s", argv[1], cli_size(size));
}

static int cmd_rename(int argc, char **argv)
{
	json_object *req;
	int r = cli_want_operands(argc, argv, 2);

	if (r || (r = check_name("image name", argv[1])) || (r = check_name("new name", argv[2])))
		return r;
	req = request("image.rename");
	add_str(req, "old", argv[1]);
	add_str(req, "new", argv[2]);
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	return print_result(argv[2], "renamed %s to %s", argv[1], argv[2]);
}

static int cmd_snapshot(int argc, char **argv)
{
	char ref[2 * HUTCH_NAME_MAX + 2];
	json_object *req;
	int r = cli_want_operands(argc, argv, 2);

	if (r || (r = check_name("image name", argv[1])) ||
	    (r = check_name("snapshot name", argv[2])))
		return r;
	req = request("image.snapshot");
	add_str(req, "name", argv[1]);
	add_str(req, "snap", argv[2]);
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	snprintf(ref, sizeof ref, "%s@%s", argv[1], argv[2]);
	return print_result(ref, "snapshot %s taken (read-only)", ref);
}

static int cmd_fork(int argc, char **argv)
{
	json_object *req;
	int r = cli_want_operands(argc, argv, 2);

	if (r || (r = check_ref("source", argv[1])) || (r = check_name("new image name", argv[2])))
		return r;
	req = request("image.fork");
	add_str(req, "src", argv[1]);
	add_str(req, "dst", argv[2]);
	if (cli_storaged_call(req, NULL, NULL, NULL))
		return 1;
	return print_result(argv[2], "forked %s to %s", argv[1], argv[2]);
}

static const struct cli_cmd image_cmds[] = {
	{ "create", "NAME SIZE", "create an empty (all-zero) image",
	  "SIZE takes K, M, G, T suffixes (binary): 10G is 10 GiB. Nothing is stored\n"
	  "until data is written.\n", cmd_create },
	{ "list", NULL, "list images and snapshots with their size and usage",
	  "ALLOCATED: bytes in non-zero chunks. UNIQUE: bytes no other image or snapshot\n"
	  "uses (what removing it frees). SHARED: allocated bytes others use too.\n", cmd_list },
	{ "info", "NAME", "details of an image or snapshot (NAME or NAME@SNAP)", NULL, cmd_info },
	{ "rm", "NAME", "remove an image and its snapshots, or one snapshot NAME@SNAP",
	  "Space comes back with `hutch store gc`.\n", cmd_rm },
	{ "resize", "NAME SIZE", "grow or shrink an image",
	  "Shrinking drops the data past SIZE. Snapshots cannot be resized.\n", cmd_resize },
	{ "rename", "OLD NEW", "rename an image together with its snapshots", NULL, cmd_rename },
	{ "snapshot", "NAME SNAP", "take a read-only snapshot NAME@SNAP (O(1))", NULL, cmd_snapshot },
	{ "fork", "SRC DST", "make a writable copy DST of SRC (NAME or NAME@SNAP) in O(1)",
	  "DST shares every chunk with SRC until either is written.\n", cmd_fork },
#ifdef HAVE_CLI_TRANSFER
	{ "import", "[OPTION]... FILE NAME",
	  "copy a raw or qcow2 file into a new image (sparse-aware)",
	  "  --format F   the file's format (default: detected)\n"
	  "Zero ranges are skipped. Progress on stderr when it is a terminal.\n",
	  cmd_image_import },
	{ "export", "[OPTION]... NAME FILE",
	  "copy an image or snapshot out to a file (sparse-aware)",
	  "  --format F   raw or qcow2 (default: qcow2 when FILE ends in .qcow2, else raw)\n"
	  "  --force      overwrite FILE if it exists\n"
	  "Holes in the image stay holes in FILE. Progress on stderr when it is a terminal.\n",
	  cmd_image_export },
#endif
	{ NULL, NULL, NULL, NULL, NULL },
};

const struct cli_group cli_group_image = {
	.name = "image",
	.summary = "disk images: create, list, info, rm, resize, rename, snapshot, fork, import, export",
	.cmds = image_cmds,
};

/* hutch store init|stats|gc|verify */
#include "cli.h"

#include "config.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* init runs the engine directly: it needs no daemon, and there is nothing
 * for a daemon to serve before it. */
static int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "chunk-size", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	struct hutch_config cfg;
	char dir[4096], err[1024];
	uint64_t chunk = 0;
	int c, r;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:c:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			r = cli_parse_size("chunk size", optarg, &chunk);
			if (r)
				return r;
			if (chunk < STORE_MIN_CHUNK_SIZE || chunk > STORE_MAX_CHUNK_SIZE ||
			    (chunk & (chunk - 1)))
				return cli_usage("chunk size must be a power of two from 4K to 4M");
			break;
		case ':':
			return cli_usage("option '%s' needs a value", argv[optind - 1]);
		default:
			return cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage("unexpected operand '%s'", argv[optind]);

	/* Without --chunk-size, the config file's [store] chunk_size decides. */
	if (config_load(cli.home, NULL, &cfg, err, sizeof err) < 0)
		return cli_error("%s", err);
	if (!chunk)
		chunk = cfg.store.chunk_size;
	if (hutch_path(dir, sizeof dir, cli.home, "store") < 0)
		return cli_error("--home %s: path too long", cli.home);
	r = mkdir_p(cli.home, 0755);
	if (r < 0)
		return cli_error("cannot create %s: %s", cli.home, strerror(-r));
	r = store_init(dir, (uint32_t)chunk);
	if (r == -EEXIST)
		return cli_error("a store already exists in %s (remove the directory to start over)", dir);
	if (r < 0)
		return cli_error("cannot create a store in %s: %s", dir, strerror(-r));
	if (cli.json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "store", json_object_new_string(dir));
		json_object_object_add(o, "chunk_size", json_object_new_uint64(chunk));
		cli_print_json(o);
		json_object_put(o);
	} else {
		printf("created a store in %s (chunk size %s)\n", dir, cli_size(chunk));
	}
	return 0;
}

static json_object *op(const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(name));
	return o;
}

static int cmd_stats(int argc, char **argv)
{
	json_object *reply, *s;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	if (cli_storaged_call(op("store.stats"), &reply, NULL, NULL))
		return 1;
	json_object_object_get_ex(reply, "stats", &s);
	if (cli.json) {
		cli_print_json(s);
	} else {
		double ratio = json_object_get_double(json_object_object_get(s, "dedup_ratio"));

		printf("chunk size   %s\n", cli_size(cli_get_u64(s, "chunk_size")));
		printf("images       %" PRIu64 " (plus %" PRIu64 " snapshot%s)\n",
		       cli_get_u64(s, "images"), cli_get_u64(s, "snapshots"),
		       cli_get_u64(s, "snapshots") == 1 ? "" : "s");
		printf("provisioned  %s\n", cli_size(cli_get_u64(s, "provisioned")));
		printf("logical      %s  (written data, summed over images and snapshots)\n",
		       cli_size(cli_get_u64(s, "logical")));
		printf("unique data  %s\n", cli_size(cli_get_u64(s, "unique_data")));
		printf("physical     %s  (on disk)\n", cli_size(cli_get_u64(s, "physical")));
		printf("dedup ratio  %.2fx\n", ratio);
		printf("packs        %" PRIu64 " (%s, %s reclaimable by `hutch store gc`)\n",
		       cli_get_u64(s, "packs"), cli_size(cli_get_u64(s, "pack_bytes")),
		       cli_size(cli_get_u64(s, "dead_bytes")));
		printf("chunks       %" PRIu64 "\n", cli_get_u64(s, "chunks"));
	}
	json_object_put(reply);
	return 0;
}

struct long_op {
	const char *what;
	json_object *bad;	/* verify: bad chunks, for --json */
};

static void on_event(void *opaque, json_object *ev)
{
	struct long_op *l = opaque;
	json_object *v;

	if (json_object_object_get_ex(ev, "progress", &v)) {
		if (!cli.json)
			cli_progress(l->what, cli_get_u64(v, "done"), cli_get_u64(v, "total"));
		return;
	}
	if (json_object_object_get_ex(ev, "bad_chunk", &v)) {
		if (cli.json) {
			json_object_array_add(l->bad, json_object_get(v));
			return;
		}
		cli_progress_end();
		printf("bad chunk %s in pack %s at offset %" PRIu64 ": %s; used by %s at offset %"
		       PRIu64 "\n", cli_get_str(v, "chunk"), cli_get_str(v, "pack"),
		       cli_get_u64(v, "pack_offset"), cli_get_str(v, "what"), cli_get_str(v, "image"),
		       cli_get_u64(v, "image_offset"));
	}
}

static int cmd_gc(int argc, char **argv)
{
	struct long_op l = { .what = "gc" };
	json_object *reply, *g;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	if (cli_storaged_call(op("store.gc"), &reply, on_event, &l))
		return 1;
	json_object_object_get_ex(reply, "gc", &g);
	if (cli.json) {
		cli_print_json(g);
	} else {
		uint64_t before = cli_get_u64(g, "bytes_before"), after = cli_get_u64(g, "bytes_after");

		printf("gc: %" PRIu64 " live chunks, %" PRIu64 " dead; %" PRIu64 " packs removed, %"
		       PRIu64 " compacted\n", cli_get_u64(g, "live_chunks"),
		       cli_get_u64(g, "dead_chunks"), cli_get_u64(g, "packs_removed"),
		       cli_get_u64(g, "packs_compacted"));
		printf("gc: store %s -> %s (%s freed)\n", cli_size(before), cli_size(after),
		       cli_size(before > after ? before - after : 0));
	}
	json_object_put(reply);
	return 0;
}

static int cmd_verify(int argc, char **argv)
{
	struct long_op l = { .what = "verify" };
	json_object *reply;
	uint64_t bad;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	l.bad = json_object_new_array();
	if (cli_storaged_call(op("store.verify"), &reply, on_event, &l)) {
		json_object_put(l.bad);
		return 1;
	}
	bad = cli_get_u64(reply, "bad");
	if (cli.json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "bad", json_object_new_uint64(bad));
		json_object_object_add(o, "bad_chunks", json_object_get(l.bad));
		cli_print_json(o);
		json_object_put(o);
	} else if (bad) {
		printf("verify: %" PRIu64 " bad chunk%s; reads of the ranges above fail with EIO.\n"
		       "Restore the affected images from a backup or re-import them.\n",
		       bad, bad == 1 ? "" : "s");
	} else {
		printf("verify: every reachable chunk is intact\n");
	}
	json_object_put(l.bad);
	json_object_put(reply);
	return bad ? 1 : 0;
}

static const struct cli_cmd store_cmds[] = {
	{ "init", "[--chunk-size N]", "create an empty store in $HUTCH_HOME/store (no daemon needed)",
	  "  --chunk-size N   chunk size, a power of two from 4K to 4M (default: [store]\n"
	  "                   chunk_size of hutch.conf, 64K). Fixed for the store's life.\n"
	  "hutch-storaged also creates the store on its first start, so this is only\n"
	  "needed to choose a chunk size up front.\n", cmd_init },
	{ "stats", NULL, "logical and physical bytes, dedup ratio, packs",
	  "logical: data written, summed over every image and snapshot (what the store\n"
	  "would take without deduplication). physical: bytes the store's files take on\n"
	  "disk. dedup ratio: logical / physical.\n", cmd_stats },
	{ "gc", NULL, "reclaim the space of deleted images (online)",
	  "Marks every chunk reachable from an image or snapshot and compacts packs\n"
	  "holding dead chunks. Images stay usable. Progress on stderr when it is a terminal.\n",
	  cmd_gc },
	{ "verify", NULL, "re-hash every reachable chunk; exit 1 if any is bad",
	  "Prints each bad chunk with the pack and offset that hold it and an image and\n"
	  "offset that use it. Progress on stderr when it is a terminal.\n", cmd_verify },
	{ NULL, NULL, NULL, NULL, NULL },
};

const struct cli_group cli_group_store = {
	.name = "store",
	.summary = "the image store: init, stats, gc, verify",
	.cmds = store_cmds,
};

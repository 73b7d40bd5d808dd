/*
 * hutch.conf: one INI file for all of hutch.
 *
 * Every key lives in exactly one table below, one table per section, with
 * its type, default and doc line. Defaults are applied by parsing the
 * default strings through the same code as the file, so what
 * `--help-config` prints is what the program uses.
 *
 * To add a section: add its struct to config.h, a `static const struct
 * cfg_key NAME_keys[]` table here, and one line in `sections[]`.
 */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cfg_type {
	CFG_SIZE32,	/* byte count with optional K/M/G suffix, into uint32_t */
	CFG_SIZE64,	/* same, into uint64_t */
	CFG_UINT,	/* plain unsigned integer, into unsigned */
	CFG_MS,		/* duration "500ms", "5s", "2m", "1h" (bare number: seconds), into unsigned ms */
	CFG_STRING,	/* into a char array of the field's size */
	CFG_BOOL,	/* true/false/yes/no/on/off/1/0, into bool */
};

struct cfg_key {
	const char *name;
	enum cfg_type type;
	size_t offset;		/* into struct hutch_config */
	size_t size;		/* of the field (strings) */
	const char *def;	/* default, parsed like a value from the file */
	uint64_t min, max;	/* for numbers; max 0 = type's limit */
	/* Extra check on the parsed text; returns an explanation or NULL. */
	const char *(*check)(const char *value);
	const char *doc;
};

#define FIELD(f) offsetof(struct hutch_config, f), sizeof(((struct hutch_config *)0)->f)

static const char *check_pow2(const char *value)
{
	uint64_t v;

	if (parse_size(value, &v) == 0 && (v & (v - 1)) == 0)
		return NULL;
	return "must be a power of two";
}

static const char *check_log_level(const char *value)
{
	static const char *const ok[] = { "debug", "info", "warning", "error" };

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (strcmp(value, ok[i]) == 0)
			return NULL;
	return "must be one of debug, info, warning, error";
}

static const char *check_listen(const char *value)
{
	const char *colon = strrchr(value, ':');
	char *end;
	unsigned long port;

	if (!*value)
		return NULL;
	if (!colon || colon == value)
		return "must be ADDR:PORT (for example 127.0.0.1:10809), or empty";
	port = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port == 0 || port > 65535)
		return "port must be 1..65535";
	return NULL;
}

static const struct cfg_key store_keys[] = {
	{ "chunk_size", CFG_SIZE32, FIELD(store.chunk_size), "64K", 4096, 4u << 20, check_pow2,
	  "Chunk size of a store created on first start (power of two, 4K..4M). "
	  "An existing store keeps the size it was created with." },
	{ "dirty_limit", CFG_SIZE64, FIELD(store.dirty_limit), "1G", 1u << 20, 0, NULL,
	  "Unflushed chunk data held back (a write-back cache merging partial writes to a chunk, 4K blocks in the write log); past it, the oldest dirty chunks are stored." },
	{ "pack_size", CFG_SIZE64, FIELD(store.pack_size), "256M", 1u << 20, 1ull << 40, NULL,
	  "A pack file is sealed and a new one started once it passes this size." },
	{ "flush_interval", CFG_MS, FIELD(store.flush_interval_ms), "30s", 10, 3600000, NULL,
	  "Dirty images are flushed to disk at least this often, even without a client FLUSH." },
};

static const struct cfg_key storaged_keys[] = {
	{ "log_level", CFG_STRING, FIELD(storaged.log_level), "info", 0, 0, check_log_level,
	  "Least severe messages hutch-storaged logs to stderr: debug, info, warning, error." },
};

static const struct cfg_key nbd_keys[] = {
	{ "tcp_listen", CFG_STRING, FIELD(nbd.tcp_listen), "", 0, 0, check_listen,
	  "Also serve NBD on this TCP ADDR:PORT (no authentication: bind to a trusted network). "
	  "Empty: unix socket $HUTCH_HOME/run/nbd.sock only." },
	{ "workers", CFG_UINT, FIELD(nbd.workers), "2", 1, 64, NULL,
	  "Threads serving NBD requests." },
	{ "max_request", CFG_SIZE32, FIELD(nbd.max_request), "32M", 4096, 1u << 30, NULL,
	  "Largest READ or WRITE accepted, in bytes (advertised as the maximum block size)." },
	{ "max_inflight", CFG_UINT, FIELD(nbd.max_inflight), "64", 1, 4096, NULL,
	  "Requests in flight per connection before the server stops reading more." },
	{ "inline_max", CFG_SIZE32, FIELD(nbd.inline_max), "64K", 0, 1u << 30, NULL,
	  "Data requests up to this size run on the worker that read them, larger ones on executors "
	  "(0: all do, but the last of a batch when the client has sent nothing more)." },
	{ "send_buffer", CFG_SIZE32, FIELD(nbd.send_buffer), "2M", 0, 64u << 20, NULL,
	  "Socket send buffer of unix-socket clients: a large read goes out in one send "
	  "(capped by net.core.wmem_max; 0: the kernel's default)." },
};

static const char *check_accel(const char *value)
{
	if (strcmp(value, "auto") == 0 || strcmp(value, "kvm") == 0 || strcmp(value, "tcg") == 0)
		return NULL;
	return "must be auto, kvm or tcg";
}

static const struct cfg_key vmd_keys[] = {
	{ "log_level", CFG_STRING, FIELD(vmd.log_level), "info", 0, 0, check_log_level,
	  "Least severe messages hutch-vmd logs to stderr: debug, info, warning, error." },
	{ "qemu", CFG_STRING, FIELD(vmd.qemu), "qemu-system-x86_64", 0, 0, NULL,
	  "The QEMU system emulator each VM runs in (a path, or a name looked up in PATH)." },
	{ "accel", CFG_STRING, FIELD(vmd.accel), "auto", 0, 0, check_accel,
	  "auto: use KVM when a probe guest runs under it, else TCG; or force kvm or tcg." },
	{ "stop_timeout", CFG_MS, FIELD(vmd.stop_timeout_ms), "30s", 100, 3600000, NULL,
	  "`vm stop` asks the guest to power off (ACPI), then kills QEMU after this long." },
	{ "boot_timeout", CFG_MS, FIELD(vmd.boot_timeout_ms), "120s", 1000, 3600000, NULL,
	  "How long `vm start` waits for the guest's SSH server to answer." },
	{ "reconnect_delay", CFG_UINT, FIELD(vmd.reconnect_delay), "30", 0, 3600, NULL,
	  "Seconds QEMU keeps retrying its NBD disk while hutch-storaged is away "
	  "(guest I/O stalls meanwhile instead of failing)." },
	{ "uid_base", CFG_UINT, FIELD(vmd.uid_base), "64000", 1000, 4000000000u, NULL,
	  "When hutch-vmd runs as root, each VM's QEMU runs as its own uid uid_base+N, "
	  "and hutch-storaged lets that uid open only the VM's own disk." },
	{ "uid_count", CFG_UINT, FIELD(vmd.uid_count), "1000", 1, 1000000, NULL,
	  "Number of uids from uid_base reserved for VMs (the most VMs one host can hold)." },
	{ "tcg_tb_size", CFG_UINT, FIELD(vmd.tcg_tb_size), "32", 0, 4096, NULL,
	  "MiB of translated code each VM's QEMU keeps under TCG (QEMU's own default, 0, is "
	  "1 GiB: about 60 MiB more resident per idle VM, for no faster boot)." },
};

struct cfg_section {
	const char *name;
	const struct cfg_key *keys;
	size_t nkeys;
	const char *doc;
};

#define SECTION(n, k, d) { n, k, sizeof(k) / sizeof((k)[0]), d }

static const struct cfg_key idle_keys[] = {
	{ "enabled", CFG_BOOL, FIELD(idle.enabled), "true", 0, 0, NULL,
	  "hutch-vmd pauses, then hibernates, VMs that stay idle (no open session, and CPU, "
	  "disk and network below the thresholds for a whole window)." },
	{ "window", CFG_MS, FIELD(idle.window_ms), "60s", 200, 3600000, NULL,
	  "Activity is measured over windows this long; a VM is idle after a whole quiet window." },
	{ "cpu_percent", CFG_UINT, FIELD(idle.cpu_percent), "10", 0, 100000, NULL,
	  "CPU the VM's QEMU used or waited for, in percent of one host CPU, above which the VM is busy." },
	{ "disk_rate", CFG_SIZE64, FIELD(idle.disk_rate), "64K", 0, 0, NULL,
	  "Disk bytes per second (read plus written) above which the VM is busy." },
	{ "net_rate", CFG_SIZE64, FIELD(idle.net_rate), "16K", 0, 0, NULL,
	  "Network bytes per second above which the VM is busy (QEMU's other I/O, "
	  "its disk traffic not counted)." },
	{ "pause_after", CFG_MS, FIELD(idle.pause_after_ms), "10m", 0, 4000000000u, NULL,
	  "An idle VM is paused (vCPUs stopped, memory resident) after this long; 0 = never." },
	{ "hibernate_after", CFG_MS, FIELD(idle.hibernate_after_ms), "30m", 0, 4000000000u, NULL,
	  "An idle VM is hibernated (memory into the store, QEMU gone) after this long; 0 = never." },
};

static const struct cfg_section sections[] = {
	SECTION("store", store_keys, "The image store (used by hutch-storaged)."),
	SECTION("storaged", storaged_keys, "The hutch-storaged daemon."),
	SECTION("nbd", nbd_keys, "hutch-storaged's NBD server."),
	SECTION("vmd", vmd_keys, "hutch-vmd: VMs and templates."),
	SECTION("idle", idle_keys, "hutch-vmd's idle policy: when VMs go to sleep."),
};

static const struct cfg_section *find_section(const char *name)
{
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		if (strcmp(sections[i].name, name) == 0)
			return &sections[i];
	return NULL;
}

static int parse_ms(const char *s, uint64_t *out)
{
	char *end;
	double v, mult;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	if (!*end || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else
		return -EINVAL;
	v *= mult;
	if (v > 1e15)
		return -ERANGE;
	*out = (uint64_t)v;
	return 0;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* Parses VALUE for KEY into C. On error returns -EINVAL with an explanation. */
static int set_key(struct hutch_config *c, const struct cfg_key *k, const char *value,
		   char *why, size_t whysz)
{
	char *field = (char *)c + k->offset;
	const char *msg;
	uint64_t v = 0, max = k->max;

	switch (k->type) {
	case CFG_SIZE32:
	case CFG_SIZE64:
		if (parse_size(value, &v) < 0) {
			snprintf(why, whysz, "'%s' is not a size (use bytes or a K/M/G/T suffix)", value);
			return -EINVAL;
		}
		break;
	case CFG_UINT: {
		char *end;

		errno = 0;
		v = strtoull(value, &end, 10);
		if (!*value || *value == '-' || *end || errno) {
			snprintf(why, whysz, "'%s' is not a whole number", value);
			return -EINVAL;
		}
		break;
	}
	case CFG_MS:
		if (parse_ms(value, &v) < 0) {
			snprintf(why, whysz, "'%s' is not a duration (e.g. 500ms, 5s, 2m, 1h)", value);
			return -EINVAL;
		}
		break;
	case CFG_STRING:
		if (strlen(value) >= k->size) {
			snprintf(why, whysz, "value is longer than %zu characters", k->size - 1);
			return -EINVAL;
		}
		break;
	case CFG_BOOL:
		if (!parse_bool(value, (bool *)field)) {
			snprintf(why, whysz, "'%s' is not a boolean (true or false)", value);
			return -EINVAL;
		}
		return 0;
	}

	if (k->check && (msg = k->check(value))) {
		snprintf(why, whysz, "'%s': %s", value, msg);
		return -EINVAL;
	}

	switch (k->type) {
	case CFG_SIZE32:
	case CFG_UINT:
	case CFG_MS:
		if (!max || max > UINT32_MAX)
			max = UINT32_MAX;
		break;
	case CFG_SIZE64:
		if (!max)
			max = UINT64_MAX;
		break;
	default:
		break;
	}
	if (k->type != CFG_STRING && (v < k->min || v > max)) {
		snprintf(why, whysz, "'%s' is out of range (%" PRIu64 "..%" PRIu64 "%s)", value,
			 k->min, max, k->type == CFG_MS ? " ms" : "");
		return -EINVAL;
	}

	switch (k->type) {
	case CFG_SIZE32:
		*(uint32_t *)field = (uint32_t)v;
		break;
	case CFG_SIZE64:
		*(uint64_t *)field = v;
		break;
	case CFG_UINT:
	case CFG_MS:
		*(unsigned *)field = (unsigned)v;
		break;
	case CFG_STRING:
		memcpy(field, value, strlen(value) + 1);
		break;
	case CFG_BOOL:
		break;
	}
	return 0;
}

void config_defaults(struct hutch_config *c)
{
	char why[256];

	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		for (size_t j = 0; j < sections[i].nkeys; j++)
			if (set_key(c, &sections[i].keys[j], sections[i].keys[j].def, why, sizeof why) < 0)
				abort();	/* a bad default is a programming error */
}

struct load_ctx {
	struct hutch_config *c;
	FILE *f;
	unsigned line;		/* of the line inih is handling */
	bool partial;		/* the last read ended mid-line */
	bool comment;		/* the line being read is a comment */
	unsigned err_line;
	char err[512];
};

/* inih's handler has no line number: count lines as they are read. Lines
 * longer than the buffer come in pieces; count only complete ones. */
static char *reader(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	char *r = fgets(str, num, ctx->f);
	bool first = !ctx->partial;	/* the start of a line, not the rest of a long one */
	const char *p = str;

	if (!r)
		return NULL;
	if (first) {
		if (ctx->line == 0 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
			p += 3;	/* a UTF-8 byte-order mark, which inih skips too */
		p += strspn(p, " \t");
		ctx->line++;
		ctx->comment = *p == '#' || *p == ';';
	}
	ctx->partial = !strchr(str, '\n') && !feof(ctx->f);
	if (ctx->err_line)
		return r;

	/* inih would cut the line and drop the rest: refuse it, unless a comment. */
	if (ctx->partial && !ctx->comment) {
		ctx->err_line = ctx->line;
		snprintf(ctx->err, sizeof ctx->err, "line longer than %d characters", num - 2);
		return r;
	}

	/* An unknown section is an error even when it has no keys. */
	if (first && *p == '[') {
		const char *end = strchr(p, ']');
		size_t n = end ? (size_t)(end - p - 1) : 0;
		char name[64];

		if (end) {
			/* No section has a name this long: keep a prefix for the message. */
			n = n < sizeof name ? n : sizeof name - 1;
			memcpy(name, p + 1, n);
			name[n] = '\0';
			if ((size_t)(end - p - 1) >= sizeof name || !find_section(name)) {
				ctx->err_line = ctx->line;
				snprintf(ctx->err, sizeof ctx->err, "unknown section [%s]", name);
			}
		}
	}
	return r;
}

static void list_sections(char *buf, size_t sz)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sizeof sections / sizeof sections[0] && used < sz; i++)
		used += (size_t)snprintf(buf + used, sz - used, "%s[%s]", i ? " " : "",
					 sections[i].name);
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *ctx = user;
	const struct cfg_section *sec;
	char why[256];

	if (ctx->err_line)
		return 1;	/* keep the first error only */
	if (!*section) {
		ctx->err_line = ctx->line;
		snprintf(ctx->err, sizeof ctx->err, "key '%s' outside any section", name);
		return 0;
	}
	sec = find_section(section);
	if (!sec) {
		ctx->err_line = ctx->line;
		snprintf(ctx->err, sizeof ctx->err, "unknown section [%.64s]", section);
		return 0;
	}
	for (size_t j = 0; j < sec->nkeys; j++) {
		if (strcmp(sec->keys[j].name, name) != 0)
			continue;
		if (set_key(ctx->c, &sec->keys[j], value, why, sizeof why) < 0) {
			ctx->err_line = ctx->line;
			snprintf(ctx->err, sizeof ctx->err, "[%s] %s: %s", section, name, why);
			return 0;
		}
		return 1;
	}
	ctx->err_line = ctx->line;
	snprintf(ctx->err, sizeof ctx->err,
		 "unknown key '%s' in [%s] (see `hutch-storaged --help-config` for every key)",
		 name, section);
	return 0;
}

int config_load(const char *home_dir, const char *path, struct hutch_config *c,
		char *err, size_t errsz)
{
	struct load_ctx ctx = { .c = c };
	char def[4096];
	int r;

	config_defaults(c);
	if (!path) {
		if (hutch_path(def, sizeof def, home_dir, "hutch.conf") < 0) {
			snprintf(err, errsz, "%s/hutch.conf: path too long", home_dir);
			return -EINVAL;
		}
		ctx.f = fopen(def, "re");
		if (!ctx.f) {
			if (errno == ENOENT)
				return 0;	/* the file is optional */
			snprintf(err, errsz, "%s: cannot open: %s", def, strerror(errno));
			return -EINVAL;
		}
		path = def;
	} else {
		ctx.f = fopen(path, "re");
		if (!ctx.f) {
			snprintf(err, errsz, "%s: cannot open: %s", path, strerror(errno));
			return -EINVAL;
		}
	}

	r = ini_parse_stream(reader, &ctx, handler, &ctx);
	fclose(ctx.f);
	if (ctx.err_line) {
		snprintf(err, errsz, "%s:%u: %s", path, ctx.err_line, ctx.err);
		return -EINVAL;
	}
	if (r != 0) {
		char secs[256];

		list_sections(secs, sizeof secs);
		/* inih's own syntax errors: r is the line. */
		snprintf(err, errsz, "%s:%d: syntax error (expected [section] or key = value; sections: %s)",
			 path, r, secs);
		return -EINVAL;
	}
	snprintf(c->path, sizeof c->path, "%s", path);
	return 0;
}

static const char *type_hint(enum cfg_type t)
{
	switch (t) {
	case CFG_SIZE32:
	case CFG_SIZE64: return "size";
	case CFG_UINT: return "number";
	case CFG_MS: return "duration";
	case CFG_STRING: return "text";
	case CFG_BOOL: return "boolean";
	}
	return "";
}

void config_print_reference(FILE *out)
{
	fprintf(out,
		"# hutch.conf: $HUTCH_HOME/hutch.conf (optional). Every key with its default.\n"
		"# Sizes take K/M/G/T suffixes (binary); durations take ms/s/m/h (bare number: seconds).\n");
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
		const struct cfg_section *s = &sections[i];

		fprintf(out, "\n# %s\n[%s]\n", s->doc, s->name);
		for (size_t j = 0; j < s->nkeys; j++) {
			const struct cfg_key *k = &s->keys[j];

			fprintf(out, "# %s (%s)\n%s = %s\n", k->doc, type_hint(k->type), k->name, k->def);
		}
	}
}

/* hutch audit [--user U] [--vm V] [--since T] | audit verify: reads $HUTCH_HOME/audit. */
#include "cli.h"

#include "audit.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct filter {
	const char *user, *vm, *type;
	char since[40];		/* ISO time; records at or after it */
	json_object *out;	/* --json: the records */
	unsigned shown;
};

static const char *str(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return "";
	return json_object_get_string(v);
}

/* The VM a record is about: a session's vm, or a control op's name/src/dst. */
static bool about_vm(json_object *rec, const char *vm)
{
	json_object *args;
	char disk[HUTCH_NAME_MAX + 8];

	if (strcmp(str(rec, "vm"), vm) == 0)
		return true;
	if (!json_object_object_get_ex(rec, "args", &args))
		return false;
	snprintf(disk, sizeof disk, "vm.%s", vm);
	for (const char *const *k = (const char *const[]){ "name", "src", "dst", NULL }; *k; k++) {
		const char *v = str(args, *k);

		if (strcmp(v, vm) == 0 || strcmp(v, disk) == 0)
			return true;
	}
	return false;
}

static int show(void *opaque, json_object *rec)
{
	struct filter *f = opaque;
	const char *type = str(rec, "type");
	json_object *v;

	if (f->user && strcmp(str(rec, "user"), f->user) != 0 && strcmp(str(rec, "unix_user"), f->user) != 0)
		return 0;
	if (f->vm && !about_vm(rec, f->vm))
		return 0;
	if (f->type && strcmp(type, f->type) != 0)
		return 0;
	if (f->since[0] && strcmp(str(rec, "time"), f->since) < 0)
		return 0;
	f->shown++;
	if (f->out) {
		json_object_array_add(f->out, json_object_get(rec));
		return 0;
	}
	printf("%6s %s %-8s", json_object_object_get_ex(rec, "seq", &v) ? json_object_get_string(v) : "?",
	       str(rec, "time"), type);
	if (strcmp(type, "session") == 0 || strcmp(type, "login") == 0) {
		json_object *st;

		printf(" user=%s vm=%s key=%s %s", str(rec, "user"), str(rec, "vm"), str(rec, "key"),
		       str(rec, "event"));
		if (strcmp(str(rec, "event"), "start") == 0)
			printf(" cmd=%s", str(rec, "command"));
		if (strcmp(str(rec, "event"), "end") == 0) {
			json_object_object_get_ex(rec, "exit", &st);
			printf(" exit=%s in=%s out=%s", st ? json_object_get_string(st) : "?",
			       json_object_object_get_ex(rec, "bytes_in", &v) ? json_object_get_string(v) : "0",
			       json_object_object_get_ex(rec, "bytes_out", &v) ? json_object_get_string(v) : "0");
			if (*str(rec, "cast"))
				printf(" cast=%s", str(rec, "cast"));
		}
		if (*str(rec, "error"))
			printf(" error=\"%s\"", str(rec, "error"));
	} else {
		json_object *args;

		printf(" %s%s%s by %s(uid %s)", str(rec, "daemon"), *str(rec, "daemon") ? " " : "",
		       str(rec, "op"), *str(rec, "unix_user") ? str(rec, "unix_user") : "",
		       json_object_object_get_ex(rec, "uid", &v) ? json_object_get_string(v) : "?");
		if (*str(rec, "user"))
			printf(" user=%s", str(rec, "user"));
		if (json_object_object_get_ex(rec, "args", &args) && json_object_object_length(args) > 0)
			printf(" %s", json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN));
	}
	putchar('\n');
	return 0;
}

/* T: an ISO date or time (2026-01-31, 2026-01-31T12:00), unix seconds, or
 * an age (30s, 10m, 2h, 7d). */
static int parse_since(const char *t, char *iso, size_t sz)
{
	char *end;
	unsigned long long v;
	time_t when;
	struct tm tm;

	if (!*t)
		return -EINVAL;
	if (isdigit((unsigned char)t[0]) && strlen(t) >= 10 && t[4] == '-') {
		/* Compared as strings: records hold "YYYY-MM-DDTHH:MM:SS.mmmZ". */
		snprintf(iso, sz, "%s", t);
		for (char *p = iso; *p; p++)
			if (*p == ' ')
				*p = 'T';
		return 0;
	}
	v = strtoull(t, &end, 10);
	if (end == t)
		return -EINVAL;
	if (*end == '\0' && v > 100000000ULL) {
		when = (time_t)v;
	} else {
		unsigned long long mul = 0;

		if (strcmp(end, "s") == 0)
			mul = 1;
		else if (strcmp(end, "m") == 0)
			mul = 60;
		else if (strcmp(end, "h") == 0)
			mul = 3600;
		else if (strcmp(end, "d") == 0)
			mul = 86400;
		if (!mul)
			return -EINVAL;
		when = time(NULL) - (time_t)(v * mul);
	}
	gmtime_r(&when, &tm);
	strftime(iso, sz, "%Y-%m-%dT%H:%M:%S", &tm);
	return 0;
}

static int cmd_verify(int argc, char **argv)
{
	struct audit_verify_result res;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	r = audit_verify(cli.home, &res);
	if (r < 0)
		return cli_error("cannot read %s/audit/log.jsonl: %s", cli.home, strerror(-r));
	if (cli.json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "ok", json_object_new_boolean(res.bad == 0));
		json_object_object_add(o, "records", json_object_new_uint64(res.records));
		if (res.bad) {
			json_object_object_add(o, "bad_record", json_object_new_uint64(res.bad));
			json_object_object_add(o, "why", json_object_new_string(res.why));
		} else {
			json_object_object_add(o, "last_hash", json_object_new_string(res.last_hash));
		}
		cli_print_json(o);
		json_object_put(o);
	} else if (res.bad) {
		fprintf(stderr, "hutch: audit log BROKEN at record %" PRIu64 ": %s\n", res.bad, res.why);
		fprintf(stderr, "Records before that one are intact. Keep a copy of %s/audit for "
			"investigation; the log cannot be repaired in place.\n", cli.home);
	} else {
		printf("audit log OK: %" PRIu64 " records, chain intact; last record's SHA-256 %s\n"
		       "(keep that hash elsewhere: it pins everything up to now)\n", res.records,
		       res.last_hash);
	}
	return res.bad ? 1 : 0;
}

static int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "vm", required_argument, NULL, 'v' },
		{ "since", required_argument, NULL, 's' },
		{ "type", required_argument, NULL, 't' },
		{ 0 },
	};
	struct filter f = { 0 };
	int c, r;

	/* argv[0] is "show" (or the group name when called bare). */
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': f.user = optarg; break;
		case 'v': f.vm = optarg; break;
		case 't': f.type = optarg; break;
		case 's':
			if (parse_since(optarg, f.since, sizeof f.since) < 0)
				return cli_usage("--since '%s': give a date or time (2026-01-31, "
						 "2026-01-31T12:00), unix seconds, or an age (30m, 2h, 7d)", optarg);
			break;
		default:
			return 2;
		}
	}
	if (optind != argc)
		return cli_usage("unexpected operand '%s'", argv[optind]);
	if (cli.json)
		f.out = json_object_new_array();
	r = audit_foreach(cli.home, show, &f);
	if (r < 0) {
		json_object_put(f.out);
		return cli_error("cannot read %s/audit/log.jsonl: %s", cli.home, strerror(-r));
	}
	if (f.out) {
		cli_print_json(f.out);
		json_object_put(f.out);
	} else if (f.shown == 0) {
		fprintf(stderr, "no audit records%s\n", f.user || f.vm || f.since[0] || f.type ? " match" : " yet");
	}
	return 0;
}

/* `hutch audit --user U ...`: the dispatcher found the option as the command
 * name; hand the whole tail to show, with "audit" as its argv[0]. */
static int cmd_show_alias(int argc, char **argv)
{
	return cmd_show(argc + 1, argv - 1);
}

static const struct cli_cmd audit_cmds[] = {
	{ "show", "[--user U] [--vm V] [--since T] [--type TYPE]", "list audit records, oldest first",
	  "  --user U    records of hutch user U (sessions) or unix user U (control)\n"
	  "  --vm V      records about VM V (sessions, and control ops naming it)\n"
	  "  --since T   at or after T: a date or time (2026-01-31, 2026-01-31T12:00,\n"
	  "              UTC), unix seconds, or an age (30m, 2h, 7d)\n"
	  "  --type T    control, admin, session or login\n"
	  "`hutch audit --user U` is the same as `hutch audit show --user U`.\n"
	  "The log is $HUTCH_HOME/audit/log.jsonl (docs/hutch-shell.md).\n",
	  cmd_show },
	{ "verify", NULL, "check the hash chain; names the first broken record",
	  "Exits 0 when every record is linked to the one before and the last one\n"
	  "matches $HUTCH_HOME/audit/head; else 1, naming the first record that was\n"
	  "changed, removed, reordered or cut short.\n",
	  cmd_verify },
	{ "--user", "U [...]", "the same as `show --user U ...`", NULL, cmd_show_alias },
	{ "--vm", "V [...]", "the same as `show --vm V ...`", NULL, cmd_show_alias },
	{ "--since", "T [...]", "the same as `show --since T ...`", NULL, cmd_show_alias },
	{ 0 },
};

const struct cli_group cli_group_audit = {
	.name = "audit",
	.summary = "the audit log: sessions and control operations, and its verification",
	.cmds = audit_cmds,
};

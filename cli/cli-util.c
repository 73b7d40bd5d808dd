/* Helpers every `hutch` command group uses: errors, daemon calls, output. */
#include "cli.h"

#include "cleanup.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cli_state cli;

int cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("hutch: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

int cli_usage(const char *fmt, ...)
{
	const char *g = cli.group ? cli.group->name : "";
	const char *c = cli.cmd ? cli.cmd->name : "";
	va_list ap;

	fprintf(stderr, "hutch %s %s: ", g, c);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nUsage: hutch %s %s %s\nTry 'hutch %s %s --help'.\n", g, c,
		cli.cmd && cli.cmd->args ? cli.cmd->args : "", g, c);
	return 2;
}

int cli_want_operands(int argc, char **argv, int n)
{
	int operands = 0;
	bool dashdash = false;

	for (int i = 1; i < argc; i++) {
		if (!dashdash && strcmp(argv[i], "--") == 0) {
			dashdash = true;
			continue;
		}
		if (!dashdash && argv[i][0] == '-' && argv[i][1])
			return cli_usage("unknown option '%s'", argv[i]);
		operands++;
	}
	if (operands < n)
		return cli_usage("missing operand");
	if (operands > n)
		return cli_usage("too many operands");
	/* Drop a "--" so that callers can take argv[1..n]. */
	if (dashdash) {
		int j = 1;

		for (int i = 1; i < argc; i++)
			if (strcmp(argv[i], "--") != 0)
				argv[j++] = argv[i];
	}
	return 0;
}

int cli_daemon_call(const char *sock_rel, const char *daemon, const char *start_hint,
		    json_object *req, json_object **reply, ctl_event_fn event, void *opaque)
{
	char sock[4096], err[1024];
	_cleanup_close_ int fd = -1;
	json_object *rep = NULL;
	int r;

	if (hutch_path(sock, sizeof sock, cli.home, sock_rel) < 0) {
		json_object_put(req);
		return cli_error("--home %s: path too long", cli.home);
	}
	fd = ctl_connect(sock);
	if (fd == -ENOENT || fd == -ECONNREFUSED) {
		json_object_put(req);
		cli_error("%s is not running (nothing listens on %s)", daemon, sock);
		fprintf(stderr, "Start it with:  %s --home %s &%s%s\n", daemon, cli.home,
			*start_hint ? "   " : "", start_hint);
		return 1;
	}
	if (fd == -EACCES) {
		json_object_put(req);
		return cli_error("no permission to use %s: run as root or as a member of group hutch",
				 sock);
	}
	if (fd < 0) {
		json_object_put(req);
		return cli_error("cannot connect to %s: %s", sock, strerror(-fd));
	}
	r = ctl_call(fd, req, &rep, event, opaque, err, sizeof err);
	json_object_put(req);
	cli_progress_end();
	if (r < 0)
		return cli_error("%s", err);
	if (reply)
		*reply = rep;
	else
		json_object_put(rep);
	return 0;
}

int cli_storaged_call(json_object *req, json_object **reply, ctl_event_fn event, void *opaque)
{
	return cli_daemon_call("run/control.sock", "hutch-storaged", "", req, reply, event, opaque);
}

void cli_print_json(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					       JSON_C_TO_STRING_SPACED |
					       JSON_C_TO_STRING_NOSLASHESCAPE));
}

uint64_t cli_get_u64(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

const char *cli_get_str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

bool cli_get_bool(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

const char *cli_size(uint64_t bytes)
{
	static char bufs[8][32];
	static unsigned next;
	char *b = bufs[next++ % 8];

	return format_size(bytes, b, sizeof bufs[0]);
}

int cli_parse_size(const char *what, const char *s, uint64_t *out)
{
	uint64_t v;

	if (parse_size(s, &v) < 0)
		return cli_usage("%s '%s' is not a size: use bytes or a K, M, G, T suffix (e.g. 10G)",
				 what, s);
	if (v == 0)
		return cli_usage("%s must be more than 0", what);
	*out = v;
	return 0;
}

/* ---- tables ------------------------------------------------------------ */

struct cli_table {
	unsigned ncols;
	const char *const *headers;
	const bool *right;
	char **cells;		/* rows * ncols */
	size_t rows;
};

struct cli_table *cli_table_new(unsigned ncols, const char *const *headers,
				const bool *right_align)
{
	struct cli_table *t = calloc(1, sizeof *t);

	if (!t)
		abort();
	t->ncols = ncols;
	t->headers = headers;
	t->right = right_align;
	return t;
}

void cli_table_add(struct cli_table *t, const char *const *cells)
{
	char **c = realloc(t->cells, (t->rows + 1) * t->ncols * sizeof *c);

	if (!c)
		abort();
	t->cells = c;
	for (unsigned i = 0; i < t->ncols; i++) {
		c[t->rows * t->ncols + i] = strdup(cells[i] ? cells[i] : "");
		if (!c[t->rows * t->ncols + i])
			abort();
	}
	t->rows++;
}

static void print_row(const struct cli_table *t, const char *const *cells, const size_t *w)
{
	for (unsigned i = 0; i < t->ncols; i++) {
		bool last = i + 1 == t->ncols;
		int width = (int)w[i];

		if (t->right && t->right[i])
			printf("%*s", width, cells[i]);
		else if (last)
			fputs(cells[i], stdout);	/* no trailing blanks */
		else
			printf("%-*s", width, cells[i]);
		if (last)
			break;
		fputs("  ", stdout);
	}
	putchar('\n');
}

void cli_table_print(struct cli_table *t)
{
	_cleanup_free_ size_t *w = calloc(t->ncols, sizeof *w);

	if (!w)
		abort();
	for (unsigned i = 0; i < t->ncols; i++)
		w[i] = strlen(t->headers[i]);
	for (size_t r = 0; r < t->rows; r++)
		for (unsigned i = 0; i < t->ncols; i++)
			w[i] = MAX(w[i], strlen(t->cells[r * t->ncols + i]));
	print_row(t, t->headers, w);
	for (size_t r = 0; r < t->rows; r++)
		print_row(t, (const char *const *)&t->cells[r * t->ncols], w);
}

void cli_table_free(struct cli_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->rows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

/* ---- progress ---------------------------------------------------------- */

static bool progress_shown;

void cli_progress(const char *what, uint64_t done, uint64_t total)
{
	if (!isatty(STDERR_FILENO))
		return;
	if (total)
		fprintf(stderr, "\r%s: %3u%% (%llu of %llu)\033[K", what,
			(unsigned)(done * 100 / total), (unsigned long long)done,
			(unsigned long long)total);
	else
		fprintf(stderr, "\r%s: %llu\033[K", what, (unsigned long long)done);
	progress_shown = true;
}

void cli_progress_end(void)
{
	if (progress_shown) {
		fputs("\r\033[K", stderr);
		progress_shown = false;
	}
}

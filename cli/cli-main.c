/* hutch: the admin CLI. Dispatches `hutch GROUP COMMAND ...` to the group tables. */
#include "cli.h"

#include "util.h"
#include "hutch-version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Register a command group here: one line each. */
static const struct cli_group *const groups[] = {
	&cli_group_store,
	&cli_group_image,
	&cli_group_vm,
	&cli_group_template,
	&cli_group_user,
	&cli_group_audit,
};

static void usage_top(FILE *out)
{
	fprintf(out,
		"Usage: hutch [--json] [--home DIR] GROUP COMMAND [ARG]...\n"
		"Administer a hutch host: its image store, images, VMs and templates.\n"
		"\n"
		"Global options (anywhere on the line):\n"
		"  --json       machine-readable output on stdout\n"
		"  --home DIR   state directory (default: $HUTCH_HOME, else /var/lib/hutch)\n"
		"  --help       help; `hutch GROUP --help`, `hutch GROUP COMMAND --help`\n"
		"  --version    print the version\n"
		"\n"
		"Groups:\n");
	for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
		fprintf(out, "  %-10s %s\n", groups[i]->name, groups[i]->summary);
	fprintf(out,
		"\n"
		"Most commands talk to hutch-storaged through $HUTCH_HOME/run/control.sock;\n"
		"start it with `hutch-storaged &`. See hutch(1) (docs/hutch.md).\n");
}

static void usage_group(FILE *out, const struct cli_group *g)
{
	size_t w = 0;

	fprintf(out, "Usage: hutch %s COMMAND [ARG]...\n%s\n\nCommands:\n", g->name, g->summary);
	for (const struct cli_cmd *c = g->cmds; c->name; c++) {
		size_t l = strlen(c->name) + (c->args ? strlen(c->args) + 1 : 0);

		w = l > w ? l : w;
	}
	for (const struct cli_cmd *c = g->cmds; c->name; c++) {
		char head[256];

		snprintf(head, sizeof head, "%s%s%s", c->name, c->args ? " " : "",
			 c->args ? c->args : "");
		fprintf(out, "  %-*s  %s\n", (int)w, head, c->summary);
	}
	fprintf(out, "\nGlobal options: --json, --home DIR. `hutch %s COMMAND --help` for more.\n",
		g->name);
}

static void usage_cmd(FILE *out, const struct cli_group *g, const struct cli_cmd *c)
{
	fprintf(out, "Usage: hutch %s %s%s%s\n%s\n", g->name, c->name, c->args ? " " : "",
		c->args ? c->args : "", c->summary);
	if (c->detail)
		fprintf(out, "\n%s", c->detail);
	fprintf(out, "\nGlobal options: --json (machine-readable output), --home DIR.\n");
}

static const struct cli_group *find_group(const char *name)
{
	for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
		if (strcmp(groups[i]->name, name) == 0)
			return groups[i];
	return NULL;
}

static bool is_help(const char *a)
{
	return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

int main(int argc, char **argv)
{
	const struct cli_group *g;
	const struct cli_cmd *c;
	const char *home = NULL;
	bool help = false, version = false;
	int n = 1;

	/* Take the global options out wherever they are (up to a "--"), so
	 * `hutch image list --json` and `hutch --json image list` both work. */
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			while (i < argc)
				argv[n++] = argv[i++];
			break;
		}
		if (strcmp(a, "--json") == 0) {
			cli.json = true;
		} else if (strcmp(a, "--home") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "hutch: --home needs a directory\n");
				return 2;
			}
			home = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			home = a + 7;
		} else if (is_help(a)) {
			help = true;
		} else if (strcmp(a, "--version") == 0 && n == 1) {
			version = true;
		} else {
			argv[n++] = a;
		}
	}
	argc = n;
	argv[argc] = NULL;

	if (home) {
		if (!*home) {
			fprintf(stderr, "hutch: --home needs a directory\n");
			return 2;
		}
		/* Helpers and child processes see the same home. */
		setenv("HUTCH_HOME", home, 1);
	}
	cli.home = hutch_home();

	if (version) {
		printf("hutch %s\n", HUTCH_VERSION);
		return 0;
	}
	if (argc < 2) {
		usage_top(help ? stdout : stderr);
		return help ? 0 : 2;
	}
	g = find_group(argv[1]);
	if (!g) {
		fprintf(stderr, "hutch: unknown command group '%s'\nTry 'hutch --help'.\n", argv[1]);
		return 2;
	}
	cli.group = g;
	if (argc < 3) {
		usage_group(help ? stdout : stderr, g);
		return help ? 0 : 2;
	}
	for (c = g->cmds; c->name; c++)
		if (strcmp(c->name, argv[2]) == 0)
			break;
	if (!c->name) {
		fprintf(stderr, "hutch %s: unknown command '%s'\nTry 'hutch %s --help'.\n", g->name,
			argv[2], g->name);
		return 2;
	}
	cli.cmd = c;
	if (help) {
		usage_cmd(stdout, g, c);
		return 0;
	}
	optind = 0;	/* a full getopt reset for the subcommand */
	return c->fn(argc - 2, argv + 2);
}

/*
 * The `hutch` CLI: shared declarations.
 *
 * A command group (store, image, vm, ...) is a `struct cli_group` with a
 * table of subcommands, defined in its own cli-GROUP.c and registered with
 * one line in the `groups[]` table of cli-main.c.
 *
 * A subcommand is called as fn(argc, argv) with argv[0] the subcommand's
 * name ("create") and its options and operands after it; getopt_long()
 * works as usual (the dispatcher resets it). The global options --json and
 * --home DIR are taken out of argv before the call, wherever they were;
 * `--help` anywhere is answered by the dispatcher from the table. fn
 * returns the exit status: 0 success, 1 failure, 2 usage error.
 */
#ifndef HUTCH_CLI_H
#define HUTCH_CLI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctl.h"

struct cli_cmd {
	const char *name;
	const char *args;	/* operands for the usage line, "NAME SIZE" */
	const char *summary;	/* one line */
	const char *detail;	/* more for `--help` (options, examples), or NULL */
	int (*fn)(int argc, char **argv);
};

struct cli_group {
	const char *name;
	const char *summary;
	const struct cli_cmd *cmds;	/* ends with an entry whose name is NULL */
};

extern const struct cli_group cli_group_store;
extern const struct cli_group cli_group_image;
extern const struct cli_group cli_group_vm;
extern const struct cli_group cli_group_template;
extern const struct cli_group cli_group_user;
extern const struct cli_group cli_group_audit;

struct cli_state {
	const char *home;	/* --home, else $HUTCH_HOME, else /var/lib/hutch */
	bool json;		/* --json: machine-readable output on stdout */
	const struct cli_group *group;	/* what is running, for messages */
	const struct cli_cmd *cmd;
};
extern struct cli_state cli;

/* "hutch: error: ..." on stderr; returns 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Usage error for the running subcommand; returns 2. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Checks that argv has exactly N operands and no options; else prints a
 * usage error and returns 2. */
int cli_want_operands(int argc, char **argv, int n);

/*
 * Sends REQ (consumed) to hutch-storaged and waits for the reply. On
 * failure prints what went wrong and what to do (start the daemon, ...)
 * and returns 1; on success stores the reply in *reply (caller puts it;
 * REPLY may be NULL) and returns 0.
 */
int cli_storaged_call(json_object *req, json_object **reply, ctl_event_fn event, void *opaque);
/* The same for any daemon: SOCK is relative to the home ("run/vmd.sock"),
 * DAEMON its program name for messages, START_HINT extra words for the
 * "Start it with" line ("" or e.g. "(after hutch-storaged)"). */
int cli_daemon_call(const char *sock, const char *daemon, const char *start_hint,
		    json_object *req, json_object **reply, ctl_event_fn event, void *opaque);

/* Like cli_storaged_call, to hutch-vmd ($HUTCH_HOME/run/vmd.sock); in cli-vm.c. */
int cli_vmd_call(json_object *req, json_object **reply);

/* Prints O as pretty JSON on stdout. */
void cli_print_json(json_object *o);
/* A member of an object, 0 / "" / false when missing. */
uint64_t cli_get_u64(json_object *o, const char *key);
const char *cli_get_str(json_object *o, const char *key);
bool cli_get_bool(json_object *o, const char *key);
/* format_size() into a static rotating buffer, for printf arguments. */
const char *cli_size(uint64_t bytes);
/* Parses a size operand ("10G"); on error prints why and returns 2. */
int cli_parse_size(const char *what, const char *s, uint64_t *out);

/* Aligned columns for people. Cells are copied. */
struct cli_table;
struct cli_table *cli_table_new(unsigned ncols, const char *const *headers,
				const bool *right_align);
void cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_print(struct cli_table *t);
void cli_table_free(struct cli_table *t);

/* Progress of a long operation on stderr, only when it is a terminal. */
void cli_progress(const char *what, uint64_t done, uint64_t total);
void cli_progress_end(void);

#endif

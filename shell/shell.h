/*
 * hutch-shell internals, one section per file.
 *
 * hutch-shell is the forced command of every key in the hutch system
 * user's authorized_keys. One process per SSH session, single-threaded:
 * it asks hutch-vmd to make the user's VM ready (shell-vm.c), then runs
 * the platform's ssh client to the guest's forwarded port and relays the
 * session through itself (shell-relay.c), counting bytes and recording
 * interactive sessions as asciicast v2 (shell-cast.c).
 */
#ifndef HUTCH_SHELL_H
#define HUTCH_SHELL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define SHELL_USER_MAX HUTCH_USER_MAX
/* Longest command a session may carry (SSH_ORIGINAL_COMMAND): dropbear
 * in the guest refuses commands over 9000 bytes. */
#define SHELL_CMD_MAX 8192u

/* What hutch-vmd told about the ready VM. */
struct shell_vm {
	char name[HUTCH_NAME_MAX + 1];
	unsigned ssh_port;
	char admin_key[4096];
	char known_hosts[4096];
	bool onboarded;		/* created by this login */
	bool woken;		/* was not running before this login */
	char was[32];		/* its state (or sleep tier) before */
	bool session;		/* hutch-vmd counts this session (vm.session begin) */
};

/* shell-vm.c */
/* [a-z][a-z0-9_-]{0,31} for users; [A-Za-z0-9][A-Za-z0-9_-]{0,31} for VM suffixes. */
bool shell_user_ok(const char *s);
bool shell_vm_suffix_ok(const char *s);
/*
 * Makes the VM NAME ready for a session: creates it from TEMPLATE when it
 * does not exist (at most MAX_VMS per USER), starts it when stopped or
 * crashed, and opens a session on it (vm.session begin: wakes it when
 * paused or hibernated, and keeps it awake until shell_vm_session_end),
 * then waits until its SSH server answers. With a hutch-vmd that has no
 * sleep tiers, the session is not counted. On failure ERR says what the
 * user should know.
 */
int shell_vm_ready(const char *home, const char *user, const char *name, const char *template_name,
		   unsigned max_vms, struct shell_vm *vm, char *err, size_t errsz);

void shell_vm_session_end(const char *home, const char *name);

/* shell-cast.c: asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/) */
struct shell_cast;
int shell_cast_open(const char *path, unsigned cols, unsigned rows, const char *title,
		    struct shell_cast **out);
void shell_cast_output(struct shell_cast *c, const char *data, size_t len);
void shell_cast_resize(struct shell_cast *c, unsigned cols, unsigned rows);
void shell_cast_close(struct shell_cast *c);

/* shell-relay.c */
struct shell_io {
	uint64_t bytes_in;	/* from the SSH client into the VM */
	uint64_t bytes_out;	/* from the VM to the client (stdout and stderr) */
	int status;		/* exit status to pass back */
};
/*
 * Runs ARGV (the ssh client to the guest) and relays stdin, stdout and
 * stderr through pipes; with PTY, through a pseudo-terminal whose window
 * size follows the client's, recording output into CAST (may be NULL).
 */
int shell_relay(char *const *argv, bool pty, struct shell_cast *cast, struct shell_io *io);

#endif

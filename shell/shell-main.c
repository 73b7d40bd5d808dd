/*
 * hutch-shell NAME: the forced command behind each of user NAME's keys.
 *
 * sshd has already authenticated the key; the authorized_keys line that
 * matched names the user (and the key's fingerprint, and maybe a default
 * VM). Nothing the client sends can change NAME: the client's command
 * (SSH_ORIGINAL_COMMAND) only picks a VM suffix and is otherwise run by the
 * guest's own shell, inside the user's VM, never by a shell on the host.
 */
#include "shell.h"

#include "audit.h"
#include "cleanup.h"
#include "ctl.h"
#include "util.h"
#include "hutch-version.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Exit status when the session never reached the VM (ssh's own is 255 too). */
#define EXIT_NO_VM 255
#define MAX_VMS_PER_USER 4
#define HOST_SFTP_SERVER "/usr/lib/openssh/sftp-server"
#define GUEST_SFTP_COPY "/tmp/.hutch/sftp-server"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: hutch-shell [--home DIR] [--key FINGERPRINT] [--vm VM] [--template T] NAME\n"
		"The forced command of user NAME's SSH keys: makes NAME's VM ready (forks it\n"
		"from the template at the first login, starts or wakes it) and carries the\n"
		"session into it. sshd runs it; people do not (see docs/hutch-shell.md).\n"
		"\n"
		"  --home DIR         state directory (default: $HUTCH_HOME, else /var/lib/hutch)\n"
		"  --key FINGERPRINT  the key that logged in, for the audit log\n"
		"  --vm VM            this key's default VM: NAME.VM instead of NAME\n"
		"  --template T       template for a user's first VM (default: default)\n"
		"  --version, --help\n"
		"\n"
		"The client picks a VM with `ssh hutch@HOST vm=VM [COMMAND]` or, for scp and\n"
		"sftp, `-o SetEnv=HUTCH_VM=VM` (sshd: AcceptEnv HUTCH_VM); the VM is always\n"
		"NAME.VM, one of NAME's own. Without a command: an interactive shell, recorded\n"
		"as asciicast v2 under $HUTCH_HOME/audit/casts. Every session is in the audit log.\n");
}

static bool fingerprint_ok(const char *s)
{
	if (strlen(s) > 80)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr("+/:=", *s)))
			return false;
	return true;
}

struct session {
	const char *home, *user, *key;
	char vm[HUTCH_NAME_MAX + 1];
	const char *command;	/* NULL: interactive shell */
	const char *mode;	/* shell, exec, sftp */
	bool pty;
	char id[96];
	char start[40];
	char client[128];
};

static json_object *session_record(const struct session *s, const char *event)
{
	json_object *r = json_object_new_object();

	json_object_object_add(r, "type", json_object_new_string("session"));
	json_object_object_add(r, "event", json_object_new_string(event));
	json_object_object_add(r, "session", json_object_new_string(s->id));
	json_object_object_add(r, "user", json_object_new_string(s->user));
	json_object_object_add(r, "key", json_object_new_string(s->key));
	json_object_object_add(r, "vm", json_object_new_string(s->vm));
	json_object_object_add(r, "mode", json_object_new_string(s->mode));
	json_object_object_add(r, "command",
			       s->command ? json_object_new_string_len(s->command, (int)strnlen(s->command, AUDIT_MAX_STRING))
					  : json_object_new_string("shell"));
	if (s->command && strlen(s->command) > AUDIT_MAX_STRING)
		json_object_object_add(r, "command_bytes", json_object_new_uint64(strlen(s->command)));
	json_object_object_add(r, "pty", json_object_new_boolean(s->pty));
	json_object_object_add(r, "client", json_object_new_string(s->client));
	json_object_object_add(r, "pid", json_object_new_int(getpid()));
	return r;
}

static void audit_or_warn(const struct session *s, json_object *rec)
{
	int r = audit_append(s->home, rec, NULL);

	/* The session goes on: a full disk must not lock everyone out; the
	 * admin sees this in sshd's log. */
	if (r < 0)
		fprintf(stderr, "hutch: warning: cannot write the audit log: %s\n", strerror(-r));
}

/* A login that did not reach the VM: tell the user, log it, exit. */
static int refuse(const struct session *s, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int refuse(const struct session *s, int status, const char *fmt, ...)
{
	char msg[1024];
	json_object *rec;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "hutch: %s\n", msg);
	rec = session_record(s, "refused");
	json_object_object_add(rec, "error", json_object_new_string(msg));
	audit_or_warn(s, rec);
	return status;
}

/* Runs ARGV with stdin from IN_FD (-1: /dev/null), its stdout into OUT. */
static int run_capture(char *const *argv, int in_fd, char *out, size_t outsz)
{
	int p[2], st;
	pid_t pid;
	size_t got = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(in_fd >= 0 ? in_fd : devnull, 0);
		dup2(p[1], 1);
		/* ssh -O exit says "Exit request sent."; nothing here is the user's. */
		dup2(open("/dev/null", O_WRONLY), 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], out + got, got + 1 < outsz ? outsz - got - 1 : 0);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 && got + 1 >= outsz) {
			char sink[256];

			if (read(p[0], sink, sizeof sink) > 0)
				continue;
		}
		break;
	}
	close(p[0]);
	if (outsz)
		out[got] = '\0';
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

/* The control socket of this session's master connection to the guest. */
static char master_sock[200];

/* argv for the platform's ssh client to the guest; the command goes last.
 * Once the master connection is up, sessions run over it (-S). */
static size_t guest_ssh_argv(const struct shell_vm *vm, bool tty, const char **a, char *port,
			     char *kh, char *key)
{
	size_t n = 0;

	snprintf(port, 16, "%u", vm->ssh_port);
	snprintf(kh, 4200, "UserKnownHostsFile=%s", vm->known_hosts);
	snprintf(key, 4096, "%s", vm->admin_key);
	a[n++] = "ssh";
	a[n++] = "-F";	/* no ssh_config of the host or of this account */
	a[n++] = "/dev/null";
	a[n++] = "-i";
	a[n++] = key;
	a[n++] = "-p";
	a[n++] = port;
	a[n++] = "-o";
	a[n++] = kh;
	a[n++] = "-o";
	a[n++] = "StrictHostKeyChecking=accept-new";
	/* Nothing of the host leaks to the user: no escape to ~C (which could
	 * open forwardings on the host), no agent, no X11, no forwardings. */
	for (const char *const *o = (const char *const[]){
		     "IdentitiesOnly=yes", "BatchMode=yes", "ConnectTimeout=20", "LogLevel=ERROR",
		     "EscapeChar=none", "ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes",
		     "PermitLocalCommand=no", "UpdateHostKeys=no",
		     "ServerAliveInterval=30", NULL };
	     *o; o++) {
		a[n++] = "-o";
		a[n++] = *o;
	}
	a[n++] = "-S";
	a[n++] = master_sock[0] ? master_sock : "none";
	a[n++] = tty ? "-tt" : "-T";
	a[n++] = "root@127.0.0.1";
	return n;
}

/*
 * Opens the master connection to the guest, retrying: a guest that has just
 * booted under TCG may close a connection before its key exchange (dropbear
 * limits unauthenticated connections per address). No byte of the user's
 * session is involved yet, so retrying is safe; the session then opens a
 * channel on this connection. `ssh -f` returns once authenticated.
 */
static int master_open(const char *home, const struct shell_vm *vm, char *err, size_t errsz)
{
	const char *a[64];
	char port[16], kh[4200], key[4096], path[sizeof master_sock];
	size_t n;
	int st = 255;

	if (hutch_path(path, sizeof path, home, "run/sessions") < 0 ||
	    (size_t)snprintf(path + strlen(path), sizeof path - strlen(path), "/ctl.%d", getpid()) >=
		    sizeof path - strlen(path) ||
	    strlen(path) >= 100) {
		/* A unix socket path must be short; go without a master. */
		return 0;
	}
	{
		char dir[sizeof path];

		snprintf(dir, sizeof dir, "%s", path);
		*strrchr(dir, '/') = '\0';
		mkdir_p(dir, 0755);
		if (access(dir, W_OK) < 0)
			return 0;	/* not writable for this account: no master */
	}
	unlink(path);
	n = guest_ssh_argv(vm, false, a, port, kh, key);
	/* ... -S none -T root@127.0.0.1  becomes  ... -M -S PATH -N -f ... */
	a[n - 4] = "-M";
	a[n - 3] = "-S";
	a[n - 2] = path;
	a[n - 1] = "-N";
	a[n++] = "-f";
	a[n++] = "-o";
	a[n++] = "ControlPersist=no";
	a[n++] = "root@127.0.0.1";
	a[n] = NULL;
	for (int attempt = 0; attempt < 6; attempt++) {
		pid_t pid;
		int ws;

		if (attempt)
			usleep(300000u * (unsigned)attempt);
		pid = fork();
		if (pid < 0)
			break;
		if (pid == 0) {
			int devnull = open("/dev/null", O_RDWR);

			/* The backgrounded master must not hold our pipes open. */
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
			execvp(a[0], (char *const *)a);
			_exit(127);
		}
		while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
			;
		st = WIFEXITED(ws) ? WEXITSTATUS(ws) : 255;
		if (st == 0) {
			snprintf(master_sock, sizeof master_sock, "%s", path);
			return 0;
		}
		if (st == 127)
			break;
	}
	snprintf(err, errsz, "the VM's SSH server did not let hutch in (ssh exit %d); "
		 "try again, or ask the host's admin (`hutch vm console %s --log`)", st, vm->name);
	return -ECONNREFUSED;
}

static void master_close(const struct shell_vm *vm)
{
	const char *a[64];
	char port[16], kh[4200], key[4096], out[64];
	size_t n;

	if (!master_sock[0])
		return;
	n = guest_ssh_argv(vm, false, a, port, kh, key);
	a[n - 2] = "-O";	/* replaces "-T" */
	a[n - 1] = "exit";
	a[n++] = "root@127.0.0.1";
	a[n] = NULL;
	run_capture((char *const *)a, -1, out, sizeof out);
	unlink(master_sock);
}

/*
 * The guest's SFTP server: the template's own when it has one, else a copy
 * of the host's (same Debian release, needs only libc) into the guest's
 * /tmp, made once per boot. Returns its path in the guest.
 */
static int guest_sftp_server(const struct shell_vm *vm, char *path, size_t sz)
{
	static const char probe[] =
		"for f in /usr/lib/openssh/sftp-server /usr/lib/sftp-server /usr/libexec/sftp-server "
		GUEST_SFTP_COPY "; do if [ -x $f ]; then echo $f; exit 0; fi; done; exit 3";
	static const char install[] =
		"mkdir -p /tmp/.hutch && cat > " GUEST_SFTP_COPY ".new && chmod 0755 " GUEST_SFTP_COPY
		".new && mv " GUEST_SFTP_COPY ".new " GUEST_SFTP_COPY;
	const char *a[64];
	char port[16], kh[4200], key[4096], out[512];
	_cleanup_close_ int bin = -1;
	size_t n = guest_ssh_argv(vm, false, a, port, kh, key);
	int r;

	a[n] = probe;
	a[n + 1] = NULL;
	r = run_capture((char *const *)a, -1, out, sizeof out);
	if (r == 0) {
		out[strcspn(out, "\n")] = '\0';
		snprintf(path, sz, "%s", out);
		return 0;
	}
	if (r != 3)
		return -EIO;
	bin = open(HOST_SFTP_SERVER, O_RDONLY | O_CLOEXEC);
	if (bin < 0)
		return -ENOENT;
	a[n] = install;
	r = run_capture((char *const *)a, bin, out, sizeof out);
	if (r != 0)
		return -EIO;
	snprintf(path, sz, "%s", GUEST_SFTP_COPY);
	return 0;
}

static bool is_sftp(const char *cmd)
{
	const char *base = strrchr(cmd, '/');

	base = base ? base + 1 : cmd;
	return strcmp(cmd, "internal-sftp") == 0 || strncmp(base, "sftp-server", 11) == 0;
}

/* A file held locked while the session is open: hutch's idle policy
 * treats a VM with a locked file in run/sessions as in use. */
static int session_mark(const char *home, const char *vm, char *path, size_t sz)
{
	char dir[4096];
	int fd;

	if (hutch_path(dir, sizeof dir, home, "run/sessions") < 0)
		return -ENAMETOOLONG;
	mkdir_p(dir, 0755);
	if ((size_t)snprintf(path, sz, "%s/%s.%d", dir, vm, getpid()) >= sz)
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	flock(fd, LOCK_EX | LOCK_NB);
	return fd;
}

static void file_sha256(const char *path, char *out, size_t sz)
{
	/* Reuses the audit writer's hash through a one-member record would be
	 * roundabout; sha256sum is in coreutils everywhere hutch runs. */
	const char *a[] = { "sha256sum", path, NULL };
	char buf[256];

	out[0] = '\0';
	if (run_capture((char *const *)a, -1, buf, sizeof buf) == 0 && strlen(buf) >= 64)
		snprintf(out, sz, "%.64s", buf);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "home", required_argument, NULL, 'H' },
		{ "key", required_argument, NULL, 'k' },
		{ "vm", required_argument, NULL, 'v' },
		{ "template", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct session s = { .key = "", .mode = "shell" };
	const char *key_vm = NULL, *template_name = "default", *env_vm, *cmd;
	char suffix[64] = "", err[1024], cast_path[4096] = "", cast_rel[512] = "", mark[4200];
	const char *a[80];
	char port[16], kh[4200], key[4096], sftp_path[512];
	struct shell_cast *cast = NULL;
	struct shell_io io = { 0 };
	struct shell_vm vm;
	json_object *rec;
	_cleanup_close_ int mark_fd = -1;
	size_t n;
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'H': s.home = optarg; break;
		case 'k': s.key = optarg; break;
		case 'v': key_vm = optarg; break;
		case 't': template_name = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("hutch-shell %s\n", HUTCH_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	s.user = argv[optind];
	if (!s.home)
		s.home = hutch_home();
	if (!shell_user_ok(s.user) || !fingerprint_ok(s.key) || (key_vm && !shell_vm_suffix_ok(key_vm)) ||
	    !name_is_valid(template_name)) {
		/* The authorized_keys line itself is wrong: only an admin can fix it. */
		fprintf(stderr, "hutch: this key's entry on the host is invalid; ask the host's admin "
			"to re-add it with `hutch user key add`\n");
		return EXIT_NO_VM;
	}

	{
		struct timespec ts;
		char when[40];

		clock_gettime(CLOCK_REALTIME, &ts);
		audit_time_now(s.start, sizeof s.start);
		strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", gmtime(&ts.tv_sec));
		snprintf(s.id, sizeof s.id, "%s-%s-%d", when, s.user, getpid());
	}
	{
		const char *conn = getenv("SSH_CONNECTION");	/* "CLIENT_IP PORT SERVER_IP PORT" */

		if (conn) {
			snprintf(s.client, sizeof s.client, "%s", conn);
			/* keep "IP PORT" */
			char *sp = strchr(s.client, ' ');
			if (sp && (sp = strchr(sp + 1, ' ')))
				*sp = '\0';
		}
	}

	/* Which VM: `vm=X` first in the command, else HUTCH_VM (AcceptEnv),
	 * else this key's default; always one of this user's own. */
	cmd = getenv("SSH_ORIGINAL_COMMAND");
	snprintf(s.vm, sizeof s.vm, "%s", s.user);
	if (cmd && strlen(cmd) > SHELL_CMD_MAX) {
		s.command = cmd;
		s.mode = "exec";
		return refuse(&s, EXIT_NO_VM, "the command is %zu bytes, more than the %u hutch carries; "
			      "copy a script into the VM (scp) and run that", strlen(cmd), SHELL_CMD_MAX);
	}
	while (cmd && (*cmd == ' ' || *cmd == '\t'))
		cmd++;
	if (cmd && strncmp(cmd, "vm=", 3) == 0) {
		size_t l = strcspn(cmd + 3, " \t");

		if (l >= sizeof suffix) {
			s.command = cmd;
			return refuse(&s, EXIT_NO_VM, "vm=...: a VM name has at most 32 characters");
		}
		memcpy(suffix, cmd + 3, l);
		suffix[l] = '\0';
		cmd += 3 + l;
		while (*cmd == ' ' || *cmd == '\t')
			cmd++;
	} else if ((env_vm = getenv("HUTCH_VM")) && *env_vm) {
		snprintf(suffix, sizeof suffix, "%.63s", env_vm);
	} else if (key_vm) {
		snprintf(suffix, sizeof suffix, "%s", key_vm);
	}
	s.command = cmd && *cmd ? cmd : NULL;
	if (s.command)
		s.mode = is_sftp(s.command) ? "sftp" : "exec";
	s.pty = isatty(0) && strcmp(s.mode, "sftp") != 0;
	if (suffix[0]) {
		if (!shell_vm_suffix_ok(suffix))
			return refuse(&s, EXIT_NO_VM, "'%.40s' is not a VM name you can choose: use letters, digits, "
				      "'_' or '-' (at most 32); your VMs are %s.NAME", suffix, s.user);
		snprintf(s.vm, sizeof s.vm, "%s.%s", s.user, suffix);
	}

	if (s.pty)
		fprintf(stderr, "hutch: getting VM %s ready...\r\n", s.vm);
	r = shell_vm_ready(s.home, s.user, s.vm, template_name, MAX_VMS_PER_USER, &vm, err, sizeof err);
	if (r < 0) {
		if (vm.session)
			shell_vm_session_end(s.home, s.vm);
		return refuse(&s, EXIT_NO_VM, "cannot reach VM %s: %s", s.vm, err);
	}

	mark_fd = session_mark(s.home, s.vm, mark, sizeof mark);
	r = master_open(s.home, &vm, err, sizeof err);
	n = guest_ssh_argv(&vm, s.pty, a, port, kh, key);
	if (r == 0 && strcmp(s.mode, "sftp") == 0) {
		r = guest_sftp_server(&vm, sftp_path, sizeof sftp_path);
		if (r < 0)
			snprintf(err, sizeof err, "it has no SFTP server and hutch could not install one (%s); "
				 "ask the admin to add openssh-sftp-server to the template", strerror(-r));
	}
	if (r < 0) {
		master_close(&vm);
		if (vm.session)
			shell_vm_session_end(s.home, s.vm);
		if (mark_fd >= 0)
			unlink(mark);
		return refuse(&s, EXIT_NO_VM, "cannot reach VM %s: %s", s.vm, err);
	}
	if (strcmp(s.mode, "sftp") == 0) {
		a[n++] = sftp_path;
	} else if (s.command) {
		/* One argument: the guest's shell parses it, as sshd's would. */
		a[n++] = s.command;
	}
	a[n] = NULL;

	if (s.pty) {
		struct winsize ws = { .ws_row = 24, .ws_col = 80 };
		char dir[4096];

		ioctl(0, TIOCGWINSZ, &ws);
		if (audit_mkdir(s.home) == 0 && audit_path(dir, sizeof dir, s.home, "casts") == 0 &&
		    (mkdir(dir, 0750) == 0 || errno == EEXIST)) {
			snprintf(cast_rel, sizeof cast_rel, "casts/%s.cast", s.id);
			if (audit_path(cast_path, sizeof cast_path, s.home, cast_rel) < 0 ||
			    shell_cast_open(cast_path, ws.ws_col, ws.ws_row, s.id, &cast) < 0)
				cast_rel[0] = cast_path[0] = '\0';
		}
		if (vm.onboarded)
			fprintf(stderr, "hutch: welcome, %s: your VM %s is new, forked from template %s\r\n",
				s.user, s.vm, template_name);
		else if (vm.woken)
			fprintf(stderr, "hutch: VM %s was %s; it is running again\r\n", s.vm, vm.was);
	}

	rec = session_record(&s, "start");
	json_object_object_add(rec, "vm_was", json_object_new_string(vm.was));
	json_object_object_add(rec, "onboarded", json_object_new_boolean(vm.onboarded));
	if (cast_rel[0])
		json_object_object_add(rec, "cast", json_object_new_string(cast_rel));
	audit_or_warn(&s, rec);

	r = shell_relay((char *const *)a, s.pty, cast, &io);
	shell_cast_close(cast);
	if (r < 0) {
		fprintf(stderr, "hutch: the session could not start: %s\n", strerror(-r));
		io.status = EXIT_NO_VM;
	}

	rec = session_record(&s, "end");
	{
		char end[40], sum[65];

		audit_time_now(end, sizeof end);
		json_object_object_add(rec, "start", json_object_new_string(s.start));
		json_object_object_add(rec, "end", json_object_new_string(end));
		json_object_object_add(rec, "exit", json_object_new_int(io.status));
		json_object_object_add(rec, "bytes_in", json_object_new_uint64(io.bytes_in));
		json_object_object_add(rec, "bytes_out", json_object_new_uint64(io.bytes_out));
		if (cast_rel[0]) {
			/* The recording's hash in the chain pins the recording too. */
			file_sha256(cast_path, sum, sizeof sum);
			json_object_object_add(rec, "cast", json_object_new_string(cast_rel));
			json_object_object_add(rec, "cast_sha256", json_object_new_string(sum));
		}
	}
	audit_or_warn(&s, rec);
	/* The client gets its exit status when this process exits: tidy up
	 * (close the master connection, end the session in hutch-vmd) in a
	 * detached child instead of making the client wait for it. */
	fflush(NULL);
	if (fork() == 0) {
		int devnull = open("/dev/null", O_RDWR);

		setsid();
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		master_close(&vm);
		if (vm.session)
			shell_vm_session_end(s.home, s.vm);
		if (mark_fd >= 0)
			unlink(mark);
		_exit(0);
	}
	return io.status;
}

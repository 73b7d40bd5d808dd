/* hutch vm create|start|stop|restart|rm|list|info|console|ssh|fork: talks to hutch-vmd. */
#include "cli.h"

#include "cleanup.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

int cli_vmd_call(json_object *req, json_object **reply)
{
	char sock[4096], err[2048];
	_cleanup_close_ int fd = -1;
	json_object *rep = NULL;
	int r;

	if (hutch_path(sock, sizeof sock, cli.home, "run/vmd.sock") < 0) {
		json_object_put(req);
		return cli_error("--home %s: path too long", cli.home);
	}
	fd = ctl_connect(sock);
	if (fd == -ENOENT || fd == -ECONNREFUSED) {
		json_object_put(req);
		cli_error("hutch-vmd is not running (nothing listens on %s)", sock);
		fprintf(stderr, "Start it with:  hutch-vmd --home %s &   (after hutch-storaged)\n", cli.home);
		return 1;
	}
	if (fd == -EACCES) {
		json_object_put(req);
		return cli_error("no permission to use %s: run as root", sock);
	}
	if (fd < 0) {
		json_object_put(req);
		return cli_error("cannot connect to %s: %s", sock, strerror(-fd));
	}
	r = ctl_call(fd, req, &rep, NULL, NULL, err, sizeof err);
	json_object_put(req);
	if (r < 0)
		return cli_error("%s", err);
	if (reply)
		*reply = rep;
	else
		json_object_put(rep);
	return 0;
}

static json_object *request(const char *op, const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(op));
	if (name)
		json_object_object_add(o, "name", json_object_new_string(name));
	return o;
}

static int check_name(const char *name)
{
	if (name_is_valid(name))
		return 0;
	return cli_usage("invalid VM name '%s': use letters, digits, '.', '_', '+' and '-' "
			 "(at most 128), not starting with '.' or '-'", name);
}

static void print_vm_line(json_object *vm, const char *verb)
{
	const char *state = cli_get_str(vm, "state");

	printf("VM %s %s", cli_get_str(vm, "name"), verb);
	if (strcmp(state, "running") == 0)
		printf(" (%s, ssh on 127.0.0.1:%" PRIu64 "); reach it with `hutch vm ssh %s`",
		       cli_get_str(vm, "accel"), cli_get_u64(vm, "ssh_port"), cli_get_str(vm, "name"));
	putchar('\n');
}

/* Sends REQ (consumed), prints the VM in the reply. */
static int vm_call_print(json_object *req, const char *verb)
{
	json_object *reply, *vm;

	if (cli_vmd_call(req, &reply))
		return 1;
	if (json_object_object_get_ex(reply, "vm", &vm)) {
		if (cli.json)
			cli_print_json(vm);
		else
			print_vm_line(vm, verb);
	}
	json_object_put(reply);
	return 0;
}

enum { OPT_NO_START = 256, OPT_NO_WAIT, OPT_FORCE, OPT_LOG, OPT_COLD, OPT_LIVE };

/* Options shared by create and fork. */
static int parse_vm_opts(int argc, char **argv, json_object *req, bool with_template)
{
	static const struct option opts[] = {
		{ "template", required_argument, NULL, 't' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "memory", required_argument, NULL, 'm' },
		{ "no-start", no_argument, NULL, OPT_NO_START },
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "cold", no_argument, NULL, OPT_COLD },
		{ "live", no_argument, NULL, OPT_LIVE },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		uint64_t v;
		char *end;

		switch (c) {
		case 't':
			if (!with_template)
				return cli_usage("--template only applies to `vm create`");
			json_object_object_add(req, "template", json_object_new_string(optarg));
			break;
		case 'c':
			v = strtoull(optarg, &end, 10);
			if (*end || v == 0 || v > 512)
				return cli_usage("--cpus must be a number 1..512, not '%s'", optarg);
			json_object_object_add(req, "cpus", json_object_new_uint64(v));
			break;
		case 'm':
			if (cli_parse_size("--memory", optarg, &v))
				return 2;
			json_object_object_add(req, "memory", json_object_new_uint64(v));
			break;
		case OPT_NO_START:
			json_object_object_add(req, "start", json_object_new_boolean(false));
			break;
		case OPT_NO_WAIT:
			json_object_object_add(req, "wait", json_object_new_boolean(false));
			break;
		case OPT_COLD:
			if (!with_template)
				return cli_usage("--cold only applies to `vm create`");
			json_object_object_add(req, "cold", json_object_new_boolean(true));
			break;
		case OPT_LIVE:
			if (with_template)
				return cli_usage("--live only applies to `vm fork`");
			json_object_object_add(req, "live", json_object_new_boolean(true));
			break;
		default:
			return 2;
		}
	}
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	json_object *req = request("vm.create", NULL);
	int r = parse_vm_opts(argc, argv, req, true);

	if (r || optind + 1 != argc || (r = check_name(argv[optind]))) {
		json_object_put(req);
		return r ? r : cli_usage("expected one operand, NAME");
	}
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	return vm_call_print(req, "created");
}

static int cmd_fork(int argc, char **argv)
{
	json_object *req = request("vm.fork", NULL);
	int r = parse_vm_opts(argc, argv, req, false);

	if (r || optind + 2 != argc || (r = check_name(argv[optind + 1]))) {
		json_object_put(req);
		return r ? r : cli_usage("expected two operands, SRC DST");
	}
	json_object_object_add(req, "src", json_object_new_string(argv[optind]));
	json_object_object_add(req, "dst", json_object_new_string(argv[optind + 1]));
	return vm_call_print(req, "forked");
}

static int simple(int argc, char **argv, const char *op, const char *verb)
{
	static const struct option opts[] = {
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ 0 },
	};
	json_object *req = request(op, NULL);
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_NO_WAIT)
			json_object_object_add(req, "wait", json_object_new_boolean(false));
		else if (c == OPT_FORCE)
			json_object_object_add(req, "force", json_object_new_boolean(true));
		else {
			json_object_put(req);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		json_object_put(req);
		return cli_usage("expected one operand, NAME");
	}
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	if (strcmp(op, "vm.rm") == 0) {
		if (cli_vmd_call(req, NULL))
			return 1;
		if (!cli.json)
			printf("VM %s removed\n", argv[optind]);
		return 0;
	}
	return vm_call_print(req, verb);
}

static int cmd_start(int argc, char **argv) { return simple(argc, argv, "vm.start", "started"); }
static int cmd_stop(int argc, char **argv) { return simple(argc, argv, "vm.stop", "stopped"); }
static int cmd_restart(int argc, char **argv) { return simple(argc, argv, "vm.restart", "restarted"); }
static int cmd_rm(int argc, char **argv) { return simple(argc, argv, "vm.rm", "removed"); }
static int cmd_pause(int argc, char **argv) { return simple(argc, argv, "vm.pause", "paused"); }
static int cmd_hibernate(int argc, char **argv) { return simple(argc, argv, "vm.hibernate", "hibernated"); }
static int cmd_resume(int argc, char **argv) { return simple(argc, argv, "vm.resume", "resumed"); }

static int cmd_list(int argc, char **argv)
{
	static const char *const headers[] = { "NAME", "STATE", "SINCE", "TEMPLATE", "CPUS", "MEMORY", "SSH", "PID", "NOTE" };
	static const bool right[] = { false, false, false, false, true, true, true, true, false };
	json_object *reply, *vms;
	struct cli_table *t;
	size_t n;
	int r = cli_want_operands(argc, argv, 0);

	if (r)
		return r;
	if (cli_vmd_call(request("vm.list", NULL), &reply))
		return 1;
	json_object_object_get_ex(reply, "vms", &vms);
	if (cli.json) {
		cli_print_json(vms);
		json_object_put(reply);
		return 0;
	}
	n = json_object_array_length(vms);
	if (n == 0) {
		printf("no VMs yet; make one with `hutch vm create NAME --template T`\n");
		json_object_put(reply);
		return 0;
	}
	t = cli_table_new(9, headers, right);
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(vms, i);
		char cpus[16], port[16], pid[16], since[32] = "-";
		const char *tier = cli_get_str(o, "tier");
		bool asleep = *tier && strcmp(tier, "awake") != 0;
		bool running = strcmp(cli_get_str(o, "state"), "running") == 0 && !asleep;
		time_t ts = (time_t)cli_get_u64(o, "tier_since");

		/* A sleeping VM shows its tier, and since when it sleeps. */
		if (asleep && ts)
			strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S", localtime(&ts));

		snprintf(cpus, sizeof cpus, "%" PRIu64, cli_get_u64(o, "cpus"));
		snprintf(port, sizeof port, "%" PRIu64, cli_get_u64(o, "ssh_port"));
		snprintf(pid, sizeof pid, "%" PRIu64, cli_get_u64(o, "pid"));
		const char *cells[9] = {
			cli_get_str(o, "name"), asleep ? tier : cli_get_str(o, "state"), since,
			cli_get_str(o, "template"),
			cpus, cli_size(cli_get_u64(o, "memory")), running ? port : "-",
			running ? pid : "-", cli_get_str(o, "error"),
		};
		cli_table_add(t, cells);
	}
	cli_table_print(t);
	cli_table_free(t);
	json_object_put(reply);
	return 0;
}

static int get_info(const char *name, json_object **reply, json_object **vm)
{
	json_object *req = request("vm.info", name);

	if (cli_vmd_call(req, reply))
		return 1;
	if (!json_object_object_get_ex(*reply, "vm", vm)) {
		json_object_put(*reply);
		return cli_error("hutch-vmd sent no VM record");
	}
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	json_object *reply, *vm;
	int r = cli_want_operands(argc, argv, 1);
	time_t created;
	char when[64];

	if (r)
		return r;
	if (get_info(argv[1], &reply, &vm))
		return 1;
	if (cli.json) {
		cli_print_json(vm);
		json_object_put(reply);
		return 0;
	}
	created = (time_t)cli_get_u64(vm, "created");
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", localtime(&created));
	printf("name:        %s\n", cli_get_str(vm, "name"));
	printf("state:       %s\n", cli_get_str(vm, "state"));
	if (*cli_get_str(vm, "tier") && strcmp(cli_get_str(vm, "tier"), "awake") != 0) {
		time_t since = (time_t)cli_get_u64(vm, "tier_since");
		char at[64];

		strftime(at, sizeof at, "%Y-%m-%d %H:%M:%S %Z", localtime(&since));
		printf("sleeping:    %s since %s\n", cli_get_str(vm, "tier"), at);
	}
	if (*cli_get_str(vm, "error"))
		printf("note:        %s\n", cli_get_str(vm, "error"));
	printf("template:    %s\n", cli_get_str(vm, "template"));
	printf("disk:        %s (store image)\n", cli_get_str(vm, "disk"));
	printf("cpus:        %" PRIu64 "\n", cli_get_u64(vm, "cpus"));
	printf("memory:      %s\n", cli_size(cli_get_u64(vm, "memory")));
	printf("accel:       %s%s%s%s\n", cli_get_str(vm, "accel"),
	       *cli_get_str(vm, "accel_reason") ? " (" : "", cli_get_str(vm, "accel_reason"),
	       *cli_get_str(vm, "accel_reason") ? ")" : "");
	printf("qemu uid:    %" PRIu64 "\n", cli_get_u64(vm, "uid"));
	printf("machine-id:  %s\n", cli_get_str(vm, "machine_id"));
	printf("mac:         %s\n", cli_get_str(vm, "mac"));
	printf("created:     %s\n", when);
	if (strcmp(cli_get_str(vm, "state"), "running") == 0) {
		printf("pid:         %" PRIu64 "\n", cli_get_u64(vm, "pid"));
		printf("ssh:         127.0.0.1:%" PRIu64 " (%s)\n", cli_get_u64(vm, "ssh_port"),
		       cli_get_bool(vm, "ssh_ready") ? "answering" : "not answering yet");
	}
	printf("console log: %s\n", cli_get_str(vm, "console_log"));
	printf("qemu log:    %s\n", cli_get_str(vm, "qemu_log"));
	json_object_put(reply);
	return 0;
}

static int cmd_ssh(int argc, char **argv)
{
	json_object *reply, *vm;
	char port[16], kh[4200];
	const char *args[64];
	int n = 0, first = 1;

	/* Everything after NAME belongs to the guest command, options included. */
	if (argc > 1 && strcmp(argv[1], "--") == 0)
		first = 2;
	if (argc <= first)
		return cli_usage("expected NAME [COMMAND...]");
	if (argc - first > 40)
		return cli_usage("too many command words; quote the command instead");
	/* A sleeping VM wakes first (a no-op for one awake or stopped). */
	{
		json_object *w = request("vm.resume", argv[first]);

		if (cli_vmd_call(w, NULL))
			return 1;
	}
	if (get_info(argv[first], &reply, &vm))
		return 1;
	if (strcmp(cli_get_str(vm, "state"), "running") != 0) {
		cli_error("VM %s is %s; start it with `hutch vm start %s`", argv[first],
			  cli_get_str(vm, "state"), argv[first]);
		json_object_put(reply);
		return 1;
	}
	snprintf(port, sizeof port, "%" PRIu64, cli_get_u64(vm, "ssh_port"));
	snprintf(kh, sizeof kh, "UserKnownHostsFile=%s", cli_get_str(vm, "known_hosts"));
	args[n++] = "ssh";
	args[n++] = "-q";
	args[n++] = "-i";
	args[n++] = strdup(cli_get_str(vm, "admin_key"));
	args[n++] = "-p";
	args[n++] = port;
	args[n++] = "-o";
	args[n++] = kh;
	/* The VM's own known_hosts: its key is learnt once, then checked. */
	args[n++] = "-o";
	args[n++] = "StrictHostKeyChecking=accept-new";
	args[n++] = "-o";
	args[n++] = "IdentitiesOnly=yes";
	args[n++] = "-o";
	args[n++] = "BatchMode=yes";
	args[n++] = "-o";
	args[n++] = "ConnectTimeout=20";
	args[n++] = "-o";
	args[n++] = "LogLevel=ERROR";
	args[n++] = "root@127.0.0.1";
	if (argc - first > 1)
		args[n++] = "--";
	for (int i = first + 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	json_object_put(reply);
	fflush(stdout);
	execvp("ssh", (char **)args);
	return cli_error("cannot run ssh: %s (install openssh-client)", strerror(errno));
}

static int relay_console(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct termios saved, raw;
	bool tty = isatty(0);
	bool in_open = true;

	if (fd < 0 || strlen(path) >= sizeof sa.sun_path)
		return cli_error("cannot open a socket for %s", path);
	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return cli_error("cannot reach the console at %s: %s (is the VM running?)", path,
				 strerror(errno));
	if (tty) {
		fprintf(stderr, "Connected to the serial console; press Ctrl-] to leave.\r\n");
		tcgetattr(0, &saved);
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(0, TCSANOW, &raw);
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
		char buf[4096];
		ssize_t n;

		if (poll(p, in_open ? 2 : 1, in_open ? -1 : 2000) <= 0)
			break;	/* stdin closed and the console went quiet */
		if (p[0].revents) {
			n = read(fd, buf, sizeof buf);
			if (n <= 0)
				break;
			if (write_all(1, buf, (size_t)n) < 0)
				break;
		}
		if (in_open && p[1].revents) {
			n = read(0, buf, sizeof buf);
			if (n <= 0) {
				in_open = false;
				continue;
			}
			if (tty && memchr(buf, 0x1d, (size_t)n))
				break;
			if (write_all(fd, buf, (size_t)n) < 0)
				break;
		}
	}
	if (tty) {
		tcsetattr(0, TCSANOW, &saved);
		fprintf(stderr, "\nDisconnected from the console.\n");
	}
	return 0;
}

static int cmd_console(int argc, char **argv)
{
	static const struct option opts[] = { { "log", no_argument, NULL, OPT_LOG }, { 0 } };
	json_object *reply, *vm;
	bool log = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != OPT_LOG)
			return 2;
		log = true;
	}
	if (optind + 1 != argc)
		return cli_usage("expected one operand, NAME");
	if (get_info(argv[optind], &reply, &vm))
		return 1;
	if (log) {
		_cleanup_fclose_ FILE *f = fopen(cli_get_str(vm, "console_log"), "re");
		char buf[65536];
		size_t n;

		if (!f) {
			json_object_put(reply);
			return cli_error("no console log yet for VM %s", argv[optind]);
		}
		while ((n = fread(buf, 1, sizeof buf, f)) > 0)
			fwrite(buf, 1, n, stdout);
		json_object_put(reply);
		return 0;
	}
	if (strcmp(cli_get_str(vm, "state"), "running") != 0) {
		cli_error("VM %s is %s; its last console output is in %s", argv[optind],
			  cli_get_str(vm, "state"), cli_get_str(vm, "console_log"));
		json_object_put(reply);
		return 1;
	}
	r = relay_console(cli_get_str(vm, "console_socket"));
	json_object_put(reply);
	return r;
}

static const struct cli_cmd vm_cmds[] = {
	{ "create", "NAME", "fork the template's disk into a new VM and boot it",
	  "Options:\n"
	  "  --template T   template to fork (default: \"default\"; see `hutch template list`)\n"
	  "  --cpus N       virtual CPUs (default: the template's)\n"
	  "  --memory SIZE  guest RAM, e.g. 512M (default: the template's)\n"
	  "  --no-start     only create it\n"
	  "  --no-wait      return once QEMU runs, before the guest's SSH answers\n"
	  "  --cold         boot it even when the template is warm\n"
	  "The disk is an O(1) fork in the store. A VM that cannot start is not kept.\n"
	  "From a warm template (`hutch template warm`) the VM resumes the template's\n"
	  "booted memory, shared copy-on-write, and gets its own identity at once.\n",
	  cmd_create },
	{ "start", "NAME", "boot a stopped VM and wait until its SSH answers",
	  "Options:\n  --no-wait   return once QEMU runs\n", cmd_start },
	{ "stop", "NAME", "power the guest off (ACPI), killing it after [vmd] stop_timeout",
	  "Options:\n  --force   kill QEMU at once (the guest's unwritten data is lost)\n", cmd_stop },
	{ "restart", "NAME", "stop, then start", NULL, cmd_restart },
	{ "rm", "NAME", "stop a VM and delete it with its disk", NULL, cmd_rm },
	{ "pause", "NAME", "stop the guest's CPUs, memory stays resident (resume: well under 1 ms)",
	  NULL, cmd_pause },
	{ "hibernate", "NAME", "save the guest's memory into the store and end its QEMU",
	  "The guest's processes and open files carry on after `hutch vm resume NAME`\n"
	  "(or `vm start`, `vm ssh`). Its memory dedups against other VMs and its last\n"
	  "hibernation in the store.\n", cmd_hibernate },
	{ "resume", "NAME", "wake a paused or hibernated VM (its clock is set right)",
	  "Options:\n  --no-wait   return once the guest runs, before its SSH answers\n", cmd_resume },
	{ "list", NULL, "VMs, their state (or sleep tier, and since when) and SSH port", NULL, cmd_list },
	{ "info", "NAME", "one VM in detail (accelerator, uid, identity, logs)", NULL, cmd_info },
	{ "console", "NAME", "attach to the serial console (Ctrl-] leaves)",
	  "Options:\n  --log   print the console output so far and exit\n", cmd_console },
	{ "ssh", "NAME [COMMAND...]", "a shell or COMMAND in the guest, as root",
	  "Uses the platform's admin key (injected into every VM at boot). The exit\n"
	  "status, stdout and stderr of COMMAND pass through.\n", cmd_ssh },
	{ "fork", "SRC DST", "a new VM forked from stopped SRC's disk, or from running SRC with --live",
	  "Options: --cpus N, --memory SIZE, --no-start, --no-wait (as for create).\n"
	  "  --live   fork running SRC with its memory: SRC stops only while its state\n"
	  "           is saved, then both run on; DST's processes carry on too\n"
	  "DST gets its own identity: hostname, machine-id, SSH host keys, RNG seed.\n",
	  cmd_fork },
	{ 0 },
};

const struct cli_group cli_group_vm = {
	.name = "vm",
	.summary = "virtual machines: create, start, stop, restart, rm, list, info, console, ssh, fork, pause, hibernate, resume",
	.cmds = vm_cmds,
};

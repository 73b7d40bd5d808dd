/* hutch template build|import|list|rm: golden images VMs are forked from. */
#include "cli.h"

#include "cleanup.h"
#include "util.h"
#include "hutch-version.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>



enum { OPT_CACHE = 256, OPT_SIZE, OPT_DISK, OPT_KERNEL, OPT_INITRD, OPT_CMDLINE, OPT_CPUS, OPT_MEMORY, OPT_AGENT };

static int abs_path(const char *what, const char *p, char *out, size_t sz)
{
	char *r = realpath(p, NULL);

	if (!r)
		return cli_error("%s %s: %s", what, p, strerror(errno));
	snprintf(out, sz, "%s", r);
	free(r);
	return 0;
}

static int print_template(json_object *reply, const char *verb)
{
	json_object *t;

	if (!json_object_object_get_ex(reply, "template", &t))
		return 0;
	if (cli.json)
		cli_print_json(t);
	else
		printf("template %s %s (disk %s, %s); make a VM with `hutch vm create NAME --template %s`\n",
		       cli_get_str(t, "name"), verb, cli_get_str(t, "disk"),
		       cli_size(cli_get_u64(t, "size")), cli_get_str(t, "name"));
	return 0;
}

/* Sends template.import for the files given. */
static int do_import(const char *name, const char *disk, const char *kernel, const char *initrd,
		     const char *cmdline, uint64_t cpus, uint64_t memory, bool agent, const char *verb)
{
	char d[PATH_MAX], k[PATH_MAX], i[PATH_MAX];
	json_object *req, *reply;
	int r;

	if ((r = abs_path("disk", disk, d, sizeof d)) || (r = abs_path("kernel", kernel, k, sizeof k)) ||
	    (r = abs_path("initrd", initrd, i, sizeof i)))
		return r;
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("template.import"));
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "disk", json_object_new_string(d));
	json_object_object_add(req, "kernel", json_object_new_string(k));
	json_object_object_add(req, "initrd", json_object_new_string(i));
	if (cmdline)
		json_object_object_add(req, "cmdline", json_object_new_string(cmdline));
	if (cpus)
		json_object_object_add(req, "cpus", json_object_new_uint64(cpus));
	if (memory)
		json_object_object_add(req, "memory", json_object_new_uint64(memory));
	if (agent)
		json_object_object_add(req, "agent", json_object_new_boolean(true));
	if (cli_vmd_call(req, &reply))
		return 1;
	print_template(reply, verb);
	json_object_put(reply);
	return 0;
}

/* The builder script: $HUTCH_TEMPLATE_BUILD, the build tree's copy, or the installed one. */
static void find_builder(char *out, size_t sz)
{
	const char *env = getenv("HUTCH_TEMPLATE_BUILD");
	char self[PATH_MAX - 64];
	ssize_t n;

	if (env && *env) {
		snprintf(out, sz, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(out, sz, "%s/../vmd/hutch-template-build", self);
			if (access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, sz, "%s/hutch-template-build", HUTCH_LIBEXECDIR);
}

static int cmd_build(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ 0 },
	};
	const char *cache = NULL, *size = NULL;
	char builder[PATH_MAX], out[4096], kernel[4200], initrd[4200], disk[4200], conf[4200];
	char cmdline[1280] = "";
	uint64_t cpus = 0, memory = 0;
	bool agent = false;
	int c, status;
	pid_t pid;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_CACHE)
			cache = optarg;
		else if (c == OPT_SIZE)
			size = optarg;
		else
			return 2;
	}
	if (optind + 1 != argc)
		return cli_usage("expected one operand, NAME");
	if (!name_is_valid(argv[optind]))
		return cli_usage("invalid template name '%s'", argv[optind]);
	find_builder(builder, sizeof builder);
	if (hutch_path(out, sizeof out, cli.home, "cache/build") < 0 || mkdir_p(out, 0755) < 0)
		return cli_error("cannot make %s/cache/build", cli.home);
	snprintf(out + strlen(out), sizeof out - strlen(out), "/%s", argv[optind]);

	pid = fork();
	if (pid < 0)
		return cli_error("fork: %s", strerror(errno));
	if (pid == 0) {
		const char *args[8];
		int n = 0;

		args[n++] = builder;
		if (cache) {
			args[n++] = "--cache";
			args[n++] = cache;
		}
		if (size) {
			args[n++] = "--size";
			args[n++] = size;
		}
		args[n++] = out;
		args[n] = NULL;
		if (cli.json)
			dup2(2, 1);	/* keep stdout for the JSON result */
		execv(builder, (char **)args);
		fprintf(stderr, "hutch: cannot run the template builder %s: %s\n", builder, strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return cli_error("building template %s failed (see the messages above)", argv[optind]);

	snprintf(kernel, sizeof kernel, "%s/vmlinuz", out);
	snprintf(initrd, sizeof initrd, "%s/initrd.img", out);
	snprintf(disk, sizeof disk, "%s/disk.raw", out);
	snprintf(conf, sizeof conf, "%s/template.conf", out);
	{
		_cleanup_fclose_ FILE *f = fopen(conf, "re");
		char line[1200];

		while (f && fgets(line, sizeof line, f)) {
			line[strcspn(line, "\n")] = '\0';
			if (strncmp(line, "cmdline=", 8) == 0)
				snprintf(cmdline, sizeof cmdline, "%s", line + 8);
			else if (strncmp(line, "cpus=", 5) == 0)
				cpus = strtoull(line + 5, NULL, 10);
			else if (strncmp(line, "memory=", 7) == 0)
				parse_size(line + 7, &memory);
			else if (strcmp(line, "agent=yes") == 0)
				agent = true;
		}
	}
	c = do_import(argv[optind], disk, kernel, initrd, cmdline[0] ? cmdline : NULL, cpus, memory,
		      agent, "built");
	if (c == 0)
		unlink(disk);	/* the store has it now */
	return c;
}

static int cmd_import(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "kernel", required_argument, NULL, OPT_KERNEL },
		{ "initrd", required_argument, NULL, OPT_INITRD },
		{ "cmdline", required_argument, NULL, OPT_CMDLINE },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "memory", required_argument, NULL, OPT_MEMORY },
		{ "agent", no_argument, NULL, OPT_AGENT },
		{ 0 },
	};
	const char *disk = NULL, *kernel = NULL, *initrd = NULL, *cmdline = NULL;
	uint64_t cpus = 0, memory = 0;
	bool agent = false;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DISK: disk = optarg; break;
		case OPT_KERNEL: kernel = optarg; break;
		case OPT_INITRD: initrd = optarg; break;
		case OPT_CMDLINE: cmdline = optarg; break;
		case OPT_CPUS: cpus = strtoull(optarg, NULL, 10); break;
		case OPT_MEMORY:
			if (cli_parse_size("--memory", optarg, &memory))
				return 2;
			break;
		case OPT_AGENT: agent = true; break;
		default: return 2;
		}
	}
	if (optind + 1 != argc)
		return cli_usage("expected one operand, NAME");
	if (!disk || !kernel || !initrd)
		return cli_usage("--disk, --kernel and --initrd are required (direct kernel boot)");
	return do_import(argv[optind], disk, kernel, initrd, cmdline, cpus, memory, agent, "imported");
}

static int cmd_list(int argc, char **argv)
{
	static const char *const headers[] = { "NAME", "DISK", "SIZE", "CPUS", "MEMORY", "WARM", "CMDLINE" };
	static const bool right[] = { false, false, true, true, true, false, false };
	json_object *req = json_object_new_object(), *reply, *ts;
	struct cli_table *t;
	size_t n;
	int r = cli_want_operands(argc, argv, 0);

	if (r) {
		json_object_put(req);
		return r;
	}
	json_object_object_add(req, "op", json_object_new_string("template.list"));
	if (cli_vmd_call(req, &reply))
		return 1;
	json_object_object_get_ex(reply, "templates", &ts);
	if (cli.json) {
		cli_print_json(ts);
		json_object_put(reply);
		return 0;
	}
	n = json_object_array_length(ts);
	if (n == 0) {
		printf("no templates yet; build one with `hutch template build default`\n");
		json_object_put(reply);
		return 0;
	}
	t = cli_table_new(7, headers, right);
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(ts, i);
		char cpus[16], mem[32];

		snprintf(cpus, sizeof cpus, "%" PRIu64, cli_get_u64(o, "cpus"));
		snprintf(mem, sizeof mem, "%s", cli_size(cli_get_u64(o, "memory")));
		const char *cells[7] = { cli_get_str(o, "name"), cli_get_str(o, "disk"),
					 cli_size(cli_get_u64(o, "size")), cpus, mem,
					 cli_get_bool(o, "warm") ? "yes" : "no", cli_get_str(o, "cmdline") };
		cli_table_add(t, cells);
	}
	cli_table_print(t);
	cli_table_free(t);
	json_object_put(reply);
	return 0;
}

static int cmd_rm(int argc, char **argv)
{
	json_object *req;
	int r = cli_want_operands(argc, argv, 1);

	if (r)
		return r;
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("template.rm"));
	json_object_object_add(req, "name", json_object_new_string(argv[1]));
	if (cli_vmd_call(req, NULL))
		return 1;
	if (!cli.json)
		printf("template %s removed (VMs made from it keep working)\n", argv[1]);
	return 0;
}

static int cmd_warm(int argc, char **argv)
{
	json_object *req, *reply;
	int r = cli_want_operands(argc, argv, 1);

	if (r)
		return r;
	req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string("template.warm"));
	json_object_object_add(req, "name", json_object_new_string(argv[1]));
	if (cli_vmd_call(req, &reply))
		return 1;
	r = print_template(reply, "is warm");
	json_object_put(reply);
	return r;
}

static const struct cli_cmd template_cmds[] = {
	{ "build", "NAME", "build a small bootable template from Debian packages and import it",
	  "Fetches the cloud kernel, busybox and dropbear with apt-get download (cached),\n"
	  "makes an initramfs and an ext4 root file system without mounting anything,\n"
	  "and imports them. The guest boots to SSH in seconds, even under TCG.\n"
	  "Options:\n"
	  "  --cache DIR   keep .deb files here (default $HUTCH_HOME/cache/debs)\n"
	  "  --size SIZE   disk size (default 1G)\n", cmd_build },
	{ "import", "NAME --disk FILE --kernel K --initrd I", "import a disk image (raw or qcow2) with its kernel",
	  "Options:\n"
	  "  --disk FILE     raw or qcow2 image (copied into the store, holes skipped)\n"
	  "  --kernel K      kernel for direct boot\n"
	  "  --initrd I      its initrd\n"
	  "  --cmdline C     kernel command line (default: console=ttyS0 root=/dev/vda rw)\n"
	  "  --cpus N        default CPUs of VMs made from it (1)\n"
	  "  --memory SIZE   default memory (256M)\n"
	  "  --agent         the guest runs hutch's agent on the virtio port\n"
	  "                  org.hutch.agent (as `template build`'s guests do)\n"
	  "The guest is expected to read its identity from fw_cfg opt/hutch/* (see\n"
	  "docs/hutch-vmd.md) as `template build`'s guests do.\n", cmd_import },
	{ "warm", "NAME", "boot the template once and keep its memory: VMs resume it instead of booting",
	  "Boots the template, waits until its SSH server answers, then saves its RAM\n"
	  "(page-aligned, also in the store), device state and disk. `hutch vm create`\n"
	  "then resumes that state in milliseconds, sharing the unchanged memory\n"
	  "between VMs, and gives each VM its own identity (`--cold` boots instead).\n"
	  "Warm again after changing the template.\n", cmd_warm },
	{ "list", NULL, "templates and their defaults", NULL, cmd_list },
	{ "rm", "NAME", "remove a template (VMs made from it keep working)", NULL, cmd_rm },
	{ 0 },
};

const struct cli_group cli_group_template = {
	.name = "template",
	.summary = "golden images VMs are forked from: build, import, list, rm",
	.cmds = template_cmds,
};

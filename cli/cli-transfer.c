/*
 * hutch image import|export: copies between a raw or qcow2 file and an
 * image, through hutch-storaged's NBD server, with the tools that do it
 * best: nbdcopy for raw (multi-conn, zero detection) and qemu-img convert
 * for qcow2. Both skip holes and zero blocks, so a sparse file stays
 * sparse on either side, and show progress when stderr is a terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "cli-transfer.h"
#include "cli.h"
#include "util.h"

extern char **environ;

/* Runs ARGV (searched in PATH); returns its exit status, or -errno if it could not start.
 * With OUT, its stdout is captured into OUT (NUL-terminated, truncated to OUTSZ). */
static int run(const char *const argv[], char *out, size_t outsz)
{
	posix_spawn_file_actions_t fa;
	int pfd[2] = { -1, -1 };
	pid_t pid;
	int r, status;

	posix_spawn_file_actions_init(&fa);
	if (out) {
		if (pipe2(pfd, O_CLOEXEC) < 0)
			return -errno;
		posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	}
	r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (out) {
		close(pfd[1]);
		size_t n = 0;
		ssize_t k;
		while (r == 0 && (k = read(pfd[0], out + n, outsz - 1 - n)) > 0)
			n += (size_t)k;
		out[n] = 0;
		close(pfd[0]);
	}
	if (r)
		return -r;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int nbd_uri(char *buf, size_t sz, const char *name)
{
	char sock[4096];
	struct stat st;

	if (hutch_path(sock, sizeof(sock), cli.home, "run/nbd.sock") < 0)
		return cli_error("state directory path too long: %s", cli.home);
	if (stat(sock, &st) < 0 || !S_ISSOCK(st.st_mode))
		return cli_error("no NBD socket at %s: is hutch-storaged running? Start it with "
				 "'hutch-storaged --home %s'", sock, cli.home);
	snprintf(buf, sz, "nbd+unix:///%s?socket=%s", name, sock);
	return 0;
}

static bool want_progress(void)
{
	return isatty(STDERR_FILENO) && !cli.json;
}

/* FILE's format and virtual size, as qemu-img sees them. */
static int probe(const char *file, const char *force_fmt, char *fmt, size_t fmtsz, uint64_t *size)
{
	char out[65536];
	const char *argv[] = { "qemu-img", "info", "--output=json", "-f", force_fmt, "--",
			 file, NULL };
	if (!force_fmt) {
		argv[3] = "--";
		argv[4] = file;
		argv[5] = NULL;
	}
	int r = run(argv, out, sizeof(out));
	if (r < 0)
		return cli_error("cannot run qemu-img (%s): install qemu-utils", strerror(-r));
	if (r != 0)
		return cli_error("cannot read %s as a disk image (qemu-img info failed, see above)", file);
	json_object *j = json_tokener_parse(out);
	if (!j)
		return cli_error("unexpected output from qemu-img info");
	snprintf(fmt, fmtsz, "%s", cli_get_str(j, "format"));
	*size = cli_get_u64(j, "virtual-size");
	json_object_put(j);
	if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
		return cli_error("%s is in format '%s'; import takes raw or qcow2 "
				 "(convert it first: qemu-img convert -O qcow2 %s out.qcow2)", file, fmt, file);
	if (*size == 0)
		return cli_error("%s is empty: nothing to import", file);
	return 0;
}

static int image_call(const char *op, const char *name, uint64_t size)
{
	json_object *req = json_object_new_object();
	json_object_object_add(req, "op", json_object_new_string(op));
	json_object_object_add(req, "name", json_object_new_string(name));
	if (size)
		json_object_object_add(req, "size", json_object_new_int64((int64_t)size));
	return cli_storaged_call(req, NULL, NULL, NULL);
}

static const struct option fmt_opts[] = {
	{ "format", required_argument, NULL, 'f' },
	{ "force", no_argument, NULL, 'F' },
	{ 0 },
};

int cmd_image_import(int argc, char **argv)
{
	const char *force_fmt = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "f:", fmt_opts, NULL)) != -1) {
		if (c == 'f')
			force_fmt = optarg;
		else
			return cli_usage("unknown option");
	}
	if (argc - optind != 2)
		return cli_usage("want FILE NAME");
	const char *file = argv[optind], *name = argv[optind + 1];
	if (!name_is_valid(name))
		return cli_error("'%s' is not a valid image name (letters, digits, . _ + -; "
				 "no '@', not starting with '.' or '-')", name);
	if (access(file, R_OK) < 0)
		return cli_error("cannot read %s: %s", file, strerror(errno));

	char fmt[32], uri[4400], sz[32];
	uint64_t size;
	if (probe(file, force_fmt, fmt, sizeof(fmt), &size) || nbd_uri(uri, sizeof(uri), name))
		return 1;
	if (image_call("image.create", name, size))
		return 1;

	uint64_t t0 = now_ns();
	int r;
	if (!strcmp(fmt, "raw")) {
		/* The new image reads as zeros: nbdcopy need not write any. */
		const char *av[] = { "nbdcopy", "--destination-is-zero", "--connections=4", "--requests=16",
			       want_progress() ? "--progress" : "--", "--", file, uri, NULL };
		if (!want_progress())
			memmove(&av[4], &av[5], 4 * sizeof(char *));
		r = run(av, NULL, 0);
	} else {
		const char *av[] = { "qemu-img", "convert", "-n", "--target-is-zero", "-W", "-m", "8",
			       "-f", fmt, "-O", "raw", want_progress() ? "-p" : "-q", "--",
			       file, uri, NULL };
		r = run(av, NULL, 0);
	}
	if (r != 0) {
		if (r < 0)
			cli_error("cannot run the copy tool: %s (install libnbd-bin and qemu-utils)",
				  strerror(-r));
		else
			cli_error("copying %s into image %s failed (see above)", file, name);
		/* Do not leave a half-filled image behind under the wanted name. */
		if (image_call("image.rm", name, 0) == 0)
			fprintf(stderr, "hutch: removed the partial image %s; fix the cause and retry\n",
				name);
		return 1;
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	if (cli.json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "format", json_object_new_string(fmt));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
		json_object_object_add(o, "seconds", json_object_new_double(secs));
		cli_print_json(o);
		json_object_put(o);
	} else {
		printf("imported %s (%s, %s) as image %s in %.1f s\n", file, fmt,
		       format_size(size, sz, sizeof(sz)), name, secs);
	}
	return 0;
}

int cmd_image_export(int argc, char **argv)
{
	const char *fmt = NULL;
	bool force = false;
	int c;

	while ((c = getopt_long(argc, argv, "f:", fmt_opts, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'F')
			force = true;
		else
			return cli_usage("unknown option");
	}
	if (argc - optind != 2)
		return cli_usage("want NAME FILE");
	const char *name = argv[optind], *file = argv[optind + 1];
	if (!ref_is_valid(name))
		return cli_error("'%s' is not a valid image or snapshot name", name);
	if (!fmt) {
		size_t l = strlen(file);
		fmt = l > 6 && !strcmp(file + l - 6, ".qcow2") ? "qcow2" : "raw";
	}
	if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
		return cli_usage("--format takes raw or qcow2");
	struct stat st;
	if (!force && stat(file, &st) == 0 && S_ISREG(st.st_mode))
		return cli_error("%s exists; remove it or pass --force to overwrite it", file);

	char uri[4400];
	if (nbd_uri(uri, sizeof(uri), name))
		return 1;
	/* Check the export first, so a typo gets a clear message. */
	char out[256];
	const char *probe_av[] = { "nbdinfo", "--size", uri, NULL };
	int r = run(probe_av, out, sizeof(out));
	if (r != 0)
		return cli_error("no image or snapshot named '%s' (see 'hutch image list')", name);
	uint64_t size = strtoull(out, NULL, 10);

	uint64_t t0 = now_ns();
	if (!strcmp(fmt, "raw")) {
		/* A new sparse file of the right size: nbdcopy then writes only data. */
		int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return cli_error("cannot create %s: %s", file, strerror(errno));
		if (S_ISREG(st.st_mode) || fstat(fd, &st) == 0) {
			if (S_ISREG(st.st_mode) && ftruncate(fd, (off_t)size) < 0) {
				close(fd);
				return cli_error("cannot size %s: %s", file, strerror(errno));
			}
		}
		close(fd);
		const char *av[] = { "nbdcopy", "--destination-is-zero", "--connections=4", "--requests=16",
			       want_progress() ? "--progress" : "--", "--", uri, file, NULL };
		if (!want_progress())
			memmove(&av[4], &av[5], 4 * sizeof(char *));
		r = run(av, NULL, 0);
	} else {
		const char *av[] = { "qemu-img", "convert", "-W", "-m", "8", "-f", "raw", "-O", "qcow2",
			       want_progress() ? "-p" : "-q", "--", uri, file, NULL };
		r = run(av, NULL, 0);
	}
	if (r != 0) {
		if (r < 0)
			return cli_error("cannot run the copy tool: %s (install libnbd-bin and qemu-utils)",
					 strerror(-r));
		return cli_error("exporting %s to %s failed (see above)", name, file);
	}
	char sz[32];
	double secs = (double)(now_ns() - t0) / 1e9;
	if (cli.json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "file", json_object_new_string(file));
		json_object_object_add(o, "format", json_object_new_string(fmt));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
		json_object_object_add(o, "seconds", json_object_new_double(secs));
		cli_print_json(o);
		json_object_put(o);
	} else {
		printf("exported %s (%s) to %s (%s) in %.1f s\n", name, format_size(size, sz, sizeof(sz)),
		       file, fmt, secs);
	}
	return 0;
}

/*
 * libFuzzer target for the two parsers that read untrusted text: control
 * socket lines (framing, JSON, argument checks) and hutch.conf.
 * Build: CC=clang meson setup -Dfuzz=true build-fuzz; run build-fuzz/common/common-fuzz.
 * The first byte picks the parser.
 */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_ctl(const uint8_t *data, size_t size)
{
	struct ctl_reader rd;
	int sv[2];
	char *line;
	size_t len;
	int r;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return;
	/* Inputs are small; the socket buffer holds them. */
	if (send(sv[0], data, size, MSG_NOSIGNAL) != (ssize_t)size) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	shutdown(sv[0], SHUT_WR);
	ctl_reader_init(&rd, sv[1]);
	rd.max = 64;	/* small, so the over-long path runs too */
	while ((r = ctl_read_line(&rd, &line, &len)) != 0) {
		json_object *req;
		const char *op, *s;
		uint64_t u;
		bool b;
		char why[256];

		if (r < 0) {
			if (r == -E2BIG)
				continue;
			break;
		}
		if (ctl_parse_request(line, len, &req, &op, why, sizeof why) < 0)
			continue;
		ctl_arg_string(req, "name", &s, why, sizeof why);
		ctl_arg_u64(req, "size", &u, why, sizeof why);
		ctl_arg_bool_opt(req, "usage", &b, why, sizeof why);
		ctl_errno_from_name(op);
		json_object_put(req);
	}
	ctl_reader_free(&rd);
	close(sv[0]);
	close(sv[1]);
}

static void fuzz_config(const uint8_t *data, size_t size)
{
	struct hutch_config c;
	char path[64], err[1024];
	int fd = memfd_create("hutch.conf", 0);

	if (fd < 0)
		return;
	if (write(fd, data, size) == (ssize_t)size) {
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		config_load("/nonexistent", path, &c, err, sizeof err);
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_config(data + 1, size - 1);
	else
		fuzz_ctl(data + 1, size - 1);
	return 0;
}

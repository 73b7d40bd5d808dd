/*
 * Description: the QMP client (vmd/vmd-qmp.c) against a real QEMU
 * (-machine none, no guest): greeting and capabilities, a command's
 * return value, a QMP error with its description, events queued while a
 * command runs and waited for by name, a timeout when no event comes, and
 * ECONNRESET once QEMU quits.
 *
 * Usage: vm-qmp-test   (its QMP socket goes in a fresh directory under /tmp)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmd-qmp.h"

#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "FAIL: vm-qmp-test: " __VA_ARGS__);       \
			fputc('\n', stderr);                                      \
			goto err;                                                 \
		}                                                                 \
	} while (0)

static unsigned events_seen;

static void on_event(void *opaque, const char *event, json_object *ev)
{
	events_seen++;
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/hutch-qmp-test.XXXXXX";
	char sock[4096], spec[4200], err[256];
	struct qmp *q = NULL;
	json_object *ret = NULL, *ev = NULL, *v;
	pid_t pid;
	int r, status;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof sock, "%s/qmp.sock", dir);
	snprintf(spec, sizeof spec, "unix:%s,server=on,wait=off", sock);
	unlink(sock);
	pid = fork();
	if (pid == 0) {
		execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
		       "-display", "none", "-qmp", spec, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}

	r = qmp_connect(sock, 5000, &q);
	CHECK(r == 0, "qmp_connect: %s", strerror(-r));
	qmp_set_event_handler(q, on_event, NULL);

	r = qmp_execute(q, "query-version", NULL, 5000, &ret, err, sizeof err);
	CHECK(r == 0, "query-version: %s", strerror(-r));
	CHECK(json_object_object_get_ex(ret, "qemu", &v), "query-version returned no 'qemu'");
	json_object_put(ret);
	ret = NULL;

	r = qmp_execute(q, "no-such-command", NULL, 5000, NULL, err, sizeof err);
	CHECK(r == -EIO, "an unknown command gave %d, not -EIO", r);
	CHECK(strstr(err, "no-such-command") != NULL, "error description '%s' does not name the command", err);

	/* `stop` makes QEMU emit STOP; it arrives around the reply and is queued. */
	r = qmp_execute(q, "stop", NULL, 5000, NULL, err, sizeof err);
	CHECK(r == 0, "stop: %s (%s)", strerror(-r), err);
	r = qmp_wait_event(q, "STOP", 5000, &ev);
	CHECK(r == 0, "no STOP event: %s", strerror(-r));
	CHECK(events_seen >= 1, "the event handler was not called");
	json_object_put(ev);
	ev = NULL;

	r = qmp_wait_event(q, "RESUME", 300, NULL);
	CHECK(r == -ETIMEDOUT, "waiting for an event that never comes gave %d, not -ETIMEDOUT", r);

	r = qmp_execute(q, "quit", NULL, 5000, NULL, err, sizeof err);
	CHECK(r == 0 || r == -ECONNRESET, "quit: %s", strerror(-r));
	r = qmp_execute(q, "query-status", NULL, 5000, NULL, err, sizeof err);
	CHECK(r == -ECONNRESET || r == -EPIPE, "a command after quit gave %d", r);
	qmp_close(q);
	waitpid(pid, &status, 0);
	unlink(sock);
	rmdir(dir);
	printf("vm-qmp-test: ok\n");
	return 0;

err:
	qmp_close(q);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	unlink(sock);
	rmdir(dir);
	return 1;
}

/*
 * hutch's guest agent, host side.
 *
 * Guests of `hutch template build` run /etc/hutch/agent on the virtio port
 * org.hutch.agent: it runs each line it reads with the shell and sends
 * back what that prints. QEMU puts the port's host side on run/agent.sock
 * in the VM's private directory, which only hutch-vmd reaches.
 *
 * hutch-vmd connects as soon as QEMU runs and stays connected while it
 * runs, so the agent waits in read(), never polls. A resumed QEMU (warm
 * fork, live fork, hibernation) is connected to before its state is
 * loaded: the port is connected as it was when the state was saved, the
 * guest sees no hang-up, and its agent answers the moment the vCPUs run.
 * That is how a fork gets its identity without waiting for an SSH server.
 */
#include "vmd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static void agent_close_locked(struct vm *vm)
{
	if (vm->agent_fd >= 0)
		close(vm->agent_fd);
	vm->agent_fd = -1;
}

void vm_agent_close(struct vm *vm)
{
	pthread_mutex_lock(&vm->agent_lock);
	agent_close_locked(vm);
	pthread_mutex_unlock(&vm->agent_lock);
}

int vm_agent_connect(struct vmd *d, struct vm *vm)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	vm_agent_close(vm);
	if (!vm->agent)
		return 0;
	if (vm_dir(d, vm->name, "run/agent.sock", sa.sun_path, sizeof sa.sun_path) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int r = -errno;

		close(fd);
		log_warn("VM %s: cannot reach its agent socket %s: %s", vm->name, sa.sun_path, strerror(-r));
		return r;
	}
	pthread_mutex_lock(&vm->agent_lock);
	agent_close_locked(vm);
	vm->agent_fd = fd;
	pthread_mutex_unlock(&vm->agent_lock);
	return 0;
}

static int agent_run_locked(struct vm *vm, const char *script, char *out, size_t outsz, unsigned timeout_ms)
{
	static unsigned seq;
	char cmd[4096], mark[48];
	size_t len = 0, marklen;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	char buf[8192];
	int n;

	if (vm->agent_fd < 0)
		return -EPIPE;
	/* A mark of its own: output a timed-out earlier run sends late is skipped. */
	marklen = (size_t)xsnprintf(mark, sizeof mark, "hutch-agent-done-%u ", __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	n = xsnprintf(cmd, sizeof cmd, "( %s ) </dev/null 2>&1; echo \"%s$?\"\n", script, mark);
	if ((size_t)n >= sizeof cmd)
		return -E2BIG;
	n = write_all(vm->agent_fd, cmd, (size_t)n);
	explicit_bzero(cmd, sizeof cmd);	/* it may carry a secret (a fork's host key) */
	if (n < 0)
		return n;
	for (;;) {
		struct pollfd p = { .fd = vm->agent_fd, .events = POLLIN };
		int64_t left = (int64_t)(deadline - now_ns()) / 1000000;
		ssize_t k;
		char *m;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		k = read(vm->agent_fd, buf + len, sizeof buf - 1 - len);
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		len += (size_t)k;
		buf[len] = '\0';
		m = strstr(buf, mark);
		if (m && strchr(m, '\n')) {
			int status = atoi(m + marklen);

			*m = '\0';
			if (out && outsz)
				xsnprintf(out, outsz, "%s", buf);
			return status;
		}
		if (len > sizeof buf / 2) {
			/* Keep the tail: the mark is at the end. */
			memmove(buf, buf + len - sizeof buf / 4, sizeof buf / 4);
			len = sizeof buf / 4;
		}
	}
}

/*
 * Runs SCRIPT (one line, no newline) in the guest; OUT gets the end of what
 * it printed. Returns its exit status, or -errno (-ETIMEDOUT, -EPIPE when
 * there is no agent connection). One run at a time per VM.
 */
int vm_agent_run(struct vm *vm, const char *script, char *out, size_t outsz, unsigned timeout_ms)
{
	pthread_mutex_lock(&vm->agent_lock);
	int r = agent_run_locked(vm, script, out, outsz, timeout_ms);
	pthread_mutex_unlock(&vm->agent_lock);
	return r;
}

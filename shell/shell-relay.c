/*
 * The session relay: hutch-shell stays between sshd and the ssh client it
 * runs to the guest, so it can count bytes each way, record interactive
 * output, and write the session's end to the audit log whatever happens.
 *
 * Without a pty: three pipes (stdin, stdout, stderr kept apart, so the
 * guest's stderr arrives as stderr). With a pty (the client asked for one,
 * so our stdin is a terminal): a new pseudo-terminal for the ssh client,
 * our terminal in raw mode, and SIGWINCH copies the client's window size
 * onto it; the ssh client then tells the guest.
 */
#include "shell.h"

#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define BUF_SIZE (64u << 10)

static int write_full(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = fd, .events = POLLOUT };

				poll(&p, 1, -1);
				continue;
			}
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int child_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 255;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

static int signals_fd(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, old);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* The connection to the client went away: end the guest side too. */
static void hang_up(pid_t pid)
{
	kill(pid, SIGHUP);
}

static int relay_pipes(char *const *argv, struct shell_io *io)
{
	int in[2], out[2], err[2];
	_cleanup_close_ int sfd = -1;
	_cleanup_free_ char *buf = malloc(BUF_SIZE);
	sigset_t old;
	pid_t pid;
	int to_child, from_out, from_err;
	bool stdin_open = true;

	if (!buf || pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
		return -errno;
	sfd = signals_fd(&old);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		execvp(argv[0], argv);
		fprintf(stderr, "hutch: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(255);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	to_child = in[1];
	from_out = out[0];
	from_err = err[0];

	while (from_out >= 0 || from_err >= 0) {
		struct pollfd p[4] = {
			{ .fd = stdin_open ? 0 : -1, .events = POLLIN },
			{ .fd = from_out, .events = POLLIN },
			{ .fd = from_err, .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
		};

		if (poll(p, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[3].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof si) == sizeof si)
				if (si.ssi_signo == SIGHUP || si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
					hang_up(pid);
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(0, buf, BUF_SIZE);

			if (n > 0) {
				io->bytes_in += (uint64_t)n;
				if (write_full(to_child, buf, (size_t)n) < 0)
					stdin_open = false;
			} else if (n == 0 || errno != EINTR) {
				stdin_open = false;
			}
			if (!stdin_open) {
				close(to_child);
				to_child = -1;
			}
		}
		for (int i = 1; i <= 2; i++) {
			int *fd = i == 1 ? &from_out : &from_err;
			ssize_t n;

			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(*fd, buf, BUF_SIZE);
			if (n > 0) {
				io->bytes_out += (uint64_t)n;
				if (write_full(i, buf, (size_t)n) < 0)
					hang_up(pid);
			} else if (n == 0 || errno != EINTR) {
				close(*fd);
				*fd = -1;
			}
		}
	}
	if (to_child >= 0)
		close(to_child);
	io->status = child_status(pid);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return 0;
}

static void copy_winsize(int from, int to, struct shell_cast *cast)
{
	struct winsize ws;

	if (ioctl(from, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
		ioctl(to, TIOCSWINSZ, &ws);
		shell_cast_resize(cast, ws.ws_col, ws.ws_row);
	}
}

static int relay_pty(char *const *argv, struct shell_cast *cast, struct shell_io *io)
{
	struct termios saved, raw;
	struct winsize ws = { .ws_col = 80, .ws_row = 24 };
	_cleanup_close_ int sfd = -1;
	_cleanup_free_ char *buf = malloc(BUF_SIZE);
	bool have_termios = tcgetattr(0, &saved) == 0;
	bool stdin_open = true;
	sigset_t old;
	int master;
	pid_t pid;

	if (!buf)
		return -ENOMEM;
	ioctl(0, TIOCGWINSZ, &ws);
	sfd = signals_fd(&old);
	pid = forkpty(&master, NULL, have_termios ? &saved : NULL, &ws);
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "hutch: cannot run %s: %s\r\n", argv[0], strerror(errno));
		_exit(255);
	}
	if (have_termios) {
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(0, TCSANOW, &raw);
	}

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = stdin_open ? 0 : -1, .events = POLLIN },
			{ .fd = master, .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
		};
		ssize_t n;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[2].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGWINCH)
					copy_winsize(0, master, cast);
				else if (si.ssi_signo != SIGCHLD)
					hang_up(pid);
			}
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(0, buf, BUF_SIZE);
			if (n > 0) {
				io->bytes_in += (uint64_t)n;
				write_full(master, buf, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				/* The client is gone: let the guest side end. */
				stdin_open = false;
				hang_up(pid);
			}
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(master, buf, BUF_SIZE);
			if (n > 0) {
				io->bytes_out += (uint64_t)n;
				shell_cast_output(cast, buf, (size_t)n);
				if (write_full(1, buf, (size_t)n) < 0)
					hang_up(pid);
			} else if (n == 0 || errno != EINTR) {
				break;	/* EIO: the ssh client closed the terminal */
			}
		}
	}
	if (have_termios)
		tcsetattr(0, TCSANOW, &saved);
	close(master);
	io->status = child_status(pid);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return 0;
}

int shell_relay(char *const *argv, bool pty, struct shell_cast *cast, struct shell_io *io)
{
	signal(SIGPIPE, SIG_IGN);
	return pty ? relay_pty(argv, cast, io) : relay_pipes(argv, io);
}

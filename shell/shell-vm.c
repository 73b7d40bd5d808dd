/*
 * Making the user's VM ready: the only place hutch-shell changes a VM's
 * state. Everything goes through hutch-vmd's control socket, so each step
 * is also in the audit log as a control operation by the hutch user.
 */
#include "shell.h"

#include "cleanup.h"
#include "ctl.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Longest a login waits for a VM to be created or to boot. */
#define READY_TIMEOUT_S 300

bool shell_user_ok(const char *s)
{
	return user_name_is_valid(s);
}

bool shell_vm_suffix_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

static void set_timeout(int fd, unsigned seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* One request; the reply in *reply. Error text for the user in ERR. */
static int call(int fd, json_object *req, unsigned timeout_s, json_object **reply, char *err, size_t errsz)
{
	int r;

	set_timeout(fd, timeout_s);
	r = ctl_call(fd, req, reply, NULL, NULL, err, errsz);
	json_object_put(req);
	if (r == -EAGAIN || r == -EWOULDBLOCK || r == -ETIMEDOUT)
		snprintf(err, errsz, "the VM service did not answer within %u s", timeout_s);
	return r;
}

/* True when something on 127.0.0.1:PORT sends an SSH banner within 2 s. */
static bool ssh_answers(unsigned port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char buf[8];
	ssize_t n;

	if (fd < 0)
		return false;
	set_timeout(fd, 2);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return false;
	n = recv(fd, buf, 4, MSG_WAITALL);
	return n == 4 && memcmp(buf, "SSH-", 4) == 0;
}

static json_object *req_name(const char *op, const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(op));
	if (name)
		json_object_object_add(o, "name", json_object_new_string(name));
	return o;
}

static const char *member_str(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static bool member_bool(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

/* How many VMs USER has: NAME and NAME.* */
static int count_user_vms(int fd, const char *user, char *err, size_t errsz)
{
	json_object *reply = NULL, *vms;
	size_t ulen = strlen(user);
	int r, n = 0;

	r = call(fd, req_name("vm.list", NULL), 30, &reply, err, errsz);
	if (r < 0)
		return r;
	if (json_object_object_get_ex(reply, "vms", &vms)) {
		for (size_t i = 0; i < json_object_array_length(vms); i++) {
			const char *nm = member_str(json_object_array_get_idx(vms, i), "name");

			if (strncmp(nm, user, ulen) == 0 && (nm[ulen] == '\0' || nm[ulen] == '.'))
				n++;
		}
	}
	json_object_put(reply);
	return n;
}

int shell_vm_ready(const char *home, const char *user, const char *name, const char *template_name,
		   unsigned max_vms, struct shell_vm *out, char *err, size_t errsz)
{
	char sock[4096];
	_cleanup_close_ int fd = -1;
	time_t deadline = time(NULL) + READY_TIMEOUT_S;
	bool sessions_supported = true;
	int r;

	memset(out, 0, sizeof *out);
	snprintf(out->name, sizeof out->name, "%s", name);
	if (hutch_path(sock, sizeof sock, home, "run/vmd.sock") < 0) {
		snprintf(err, errsz, "the state directory's path is too long");
		return -ENAMETOOLONG;
	}
	fd = ctl_connect(sock);
	if (fd < 0) {
		snprintf(err, errsz, "the VM service (hutch-vmd) is not running on this host (%s): "
			 "try again in a minute, or ask the host's admin to start it", strerror(-fd));
		return fd;
	}

	for (;;) {
		json_object *reply = NULL, *vm;
		char state[32], tier[32];
		bool asleep;

		if (time(NULL) > deadline) {
			snprintf(err, errsz, "VM %s was not ready after %u s; try again, or ask the host's admin "
				 "(`hutch vm info %s`)", name, READY_TIMEOUT_S, name);
			return -ETIMEDOUT;
		}
		r = call(fd, req_name("vm.info", name), 30, &reply, err, errsz);
		if (r == -ENOENT) {
			/* Onboarding: the first login forks the template. */
			json_object *req;
			int n = count_user_vms(fd, user, err, errsz);

			if (n < 0)
				return n;
			if ((unsigned)n >= max_vms) {
				snprintf(err, errsz, "you have %d VMs, the most a user may have; "
					 "use one of them (ssh ... vm=NAME), or ask an admin to remove one", n);
				return -EDQUOT;
			}
			req = req_name("vm.create", name);
			json_object_object_add(req, "template", json_object_new_string(template_name));
			json_object_object_add(req, "wait", json_object_new_boolean(true));
			r = call(fd, req, READY_TIMEOUT_S, &reply, err, errsz);
			if (r == -EEXIST)
				continue;	/* a concurrent first login made it */
			if (r < 0)
				return r;
			json_object_put(reply);
			out->onboarded = true;
			snprintf(out->was, sizeof out->was, "new");
			continue;
		}
		if (r < 0)
			return r;
		if (!json_object_object_get_ex(reply, "vm", &vm)) {
			json_object_put(reply);
			snprintf(err, errsz, "the VM service sent no VM record");
			return -EPROTO;
		}
		/* Copies: the reply is dropped before the state is looked at. */
		snprintf(state, sizeof state, "%s", member_str(vm, "state"));
		snprintf(tier, sizeof tier, "%s", member_str(vm, "tier"));	/* awake, paused, hibernated */
		if (!out->was[0])
			snprintf(out->was, sizeof out->was, "%s",
				 *tier && strcmp(tier, "awake") != 0 ? tier : state);
		asleep = *tier && strcmp(tier, "awake") != 0;	/* a hibernated VM is also "stopped" */
		if ((strcmp(state, "running") == 0 || asleep) && !out->session && sessions_supported) {
			/* One call wakes a sleeping VM and counts the session as
			 * activity, so the idle policy leaves it awake. */
			json_object *req = req_name("vm.session", name);

			json_object_put(reply);
			json_object_object_add(req, "action", json_object_new_string("begin"));
			json_object_object_add(req, "wait", json_object_new_boolean(true));
			r = call(fd, req, READY_TIMEOUT_S, &reply, err, errsz);
			if (r == -EOPNOTSUPP) {
				sessions_supported = false;	/* a hutch-vmd without sleep tiers */
				continue;
			}
			if (r < 0)
				return r;
			json_object_put(reply);
			out->session = true;
			out->woken = out->woken || asleep;
			continue;
		}
		if (asleep) {
			/* Asleep, and no vm.session to wake it: vm.resume. */
			json_object *req = req_name("vm.resume", name);

			json_object_put(reply);
			json_object_object_add(req, "wait", json_object_new_boolean(true));
			r = call(fd, req, READY_TIMEOUT_S, &reply, err, errsz);
			if (r < 0)
				return r;
			json_object_put(reply);
			out->woken = true;
			continue;
		}
		if (strcmp(state, "running") == 0) {
			json_object *v;

			out->ssh_port = json_object_object_get_ex(vm, "ssh_port", &v) ? (unsigned)json_object_get_int(v) : 0;
			snprintf(out->admin_key, sizeof out->admin_key, "%s", member_str(vm, "admin_key"));
			snprintf(out->known_hosts, sizeof out->known_hosts, "%s", member_str(vm, "known_hosts"));
			/* A VM started with --no-wait may not answer yet. */
			if (out->ssh_port && (member_bool(vm, "ssh_ready") || ssh_answers(out->ssh_port))) {
				json_object_put(reply);
				if (!out->admin_key[0]) {
					snprintf(err, errsz, "the VM service did not say how to reach VM %s", name);
					return -EPROTO;
				}
				return 0;
			}
			json_object_put(reply);
			usleep(500000);
			continue;
		}
		json_object_put(reply);

		if (strcmp(state, "stopped") == 0 || strcmp(state, "crashed") == 0) {
			/* vm.start with wait returns once the guest's SSH server answers. */
			json_object *req = req_name("vm.start", name);

			json_object_object_add(req, "wait", json_object_new_boolean(true));
			r = call(fd, req, READY_TIMEOUT_S, &reply, err, errsz);
			if (r < 0 && r != -EBUSY && r != -EALREADY)
				return r;
			if (r == 0)
				json_object_put(reply);
			out->woken = true;
			continue;
		}
		/* starting, stopping, resuming: wait for it to settle. */
		usleep(250000);
	}
}

void shell_vm_session_end(const char *home, const char *name)
{
	char sock[4096], err[256];
	_cleanup_close_ int fd = -1;
	json_object *req, *reply = NULL;

	if (hutch_path(sock, sizeof sock, home, "run/vmd.sock") < 0)
		return;
	fd = ctl_connect(sock);
	if (fd < 0)
		return;
	req = req_name("vm.session", name);
	json_object_object_add(req, "action", json_object_new_string("end"));
	if (call(fd, req, 30, &reply, err, sizeof err) == 0)
		json_object_put(reply);
}

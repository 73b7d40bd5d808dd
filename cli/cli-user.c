/*
 * hutch user add|rm|list|key add|key rm: who may `ssh hutch@host`.
 *
 * A user is a name and one or more SSH public keys, kept in
 * $HUTCH_HOME/users/NAME.keys, one line per key:
 *
 *     FINGERPRINT VM|- TYPE BASE64 [COMMENT]
 *
 * Every change rewrites $HUTCH_HOME/ssh/authorized_keys (atomically), the
 * file the host's sshd reads for the `hutch` system user, with one line per
 * key forced to hutch-shell:
 *
 *     restrict,pty,command="/usr/bin/hutch-shell --home H --key FP NAME" TYPE BASE64 NAME
 *
 * A plain file rather than an AuthorizedKeysCommand: sshd reads it with no
 * helper process per login, it keeps working when hutch itself is broken,
 * and the admin can read exactly what sshd will enforce. The identity is
 * the key's SHA-256 fingerprint; a key belongs to one user only.
 */
#include "cli.h"

#include "audit.h"
#include "cleanup.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define USER_NAME_MAX HUTCH_USER_MAX
#define KEY_LINE_MAX 16384

struct key {
	char fp[64];		/* SHA256:... */
	char vm[HUTCH_NAME_MAX + 1];	/* per-key default VM suffix, "" for none */
	char type[64];
	char *b64;
	char comment[128];
};

/* [a-z][a-z0-9_-]*: no '.', so the VM `NAME.X` can only be NAME's (hutch-shell). */
static bool user_name_ok(const char *s)
{
	return user_name_is_valid(s);
}

static bool vm_suffix_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

static const char *const key_types[] = {
	"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
	"ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
};

/* SHA256:base64(sha256(blob)) without padding, as ssh-keygen -l prints it. */
static int fingerprint(const char *b64, char *fp, size_t fpsz, const char *type)
{
	size_t n = strlen(b64), blen;
	_cleanup_free_ unsigned char *blob = NULL;
	unsigned char md[32], enc[64];
	unsigned mdlen = 0;
	int len, pad = 0;
	uint32_t tl;

	if (n == 0 || n % 4 || n > KEY_LINE_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)b64[i]) && b64[i] != '+' && b64[i] != '/' && b64[i] != '=')
			return -EINVAL;
	blob = malloc(n);
	if (!blob)
		return -ENOMEM;
	len = EVP_DecodeBlock(blob, (const unsigned char *)b64, (int)n);
	if (len < 0)
		return -EINVAL;
	if (b64[n - 1] == '=')
		pad++;
	if (n > 1 && b64[n - 2] == '=')
		pad++;
	blen = (size_t)len - (size_t)pad;
	/* The blob names its own type: string(type) first. */
	if (blen < 4)
		return -EINVAL;
	tl = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 | (uint32_t)blob[2] << 8 | blob[3];
	if (tl != strlen(type) || blen < 4 + tl || memcmp(blob + 4, type, tl) != 0)
		return -EINVAL;
	EVP_Digest(blob, blen, md, &mdlen, EVP_sha256(), NULL);
	len = EVP_EncodeBlock(enc, md, 32);
	while (len > 0 && enc[len - 1] == '=')
		len--;
	enc[len] = '\0';
	if ((size_t)snprintf(fp, fpsz, "SHA256:%.60s", (char *)enc) >= fpsz)
		return -ENAMETOOLONG;
	return 0;
}

/* Parses "TYPE BASE64 [COMMENT]" (options in front are refused). */
static int parse_key_line(char *line, struct key *k, char *why, size_t whysz)
{
	char *type, *b64, *comment, *save = NULL;
	size_t j = 0;
	bool known = false;

	memset(k, 0, sizeof *k);
	type = strtok_r(line, " \t", &save);
	b64 = strtok_r(NULL, " \t", &save);
	comment = strtok_r(NULL, "", &save);
	if (!type || !b64) {
		snprintf(why, whysz, "expected 'TYPE BASE64 [COMMENT]' (an OpenSSH public key, e.g. ~/.ssh/id_ed25519.pub)");
		return -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(key_types); i++)
		known = known || strcmp(type, key_types[i]) == 0;
	if (!known) {
		snprintf(why, whysz, "'%.40s' is not a public key type hutch accepts (ssh-ed25519, ssh-rsa, ecdsa-...); "
			 "give the .pub file, without authorized_keys options", type);
		return -EINVAL;
	}
	snprintf(k->type, sizeof k->type, "%s", type);
	if (fingerprint(b64, k->fp, sizeof k->fp, type) < 0) {
		snprintf(why, whysz, "the key data is not a valid %s public key", type);
		return -EINVAL;
	}
	k->b64 = strdup(b64);
	if (!k->b64)
		return -ENOMEM;
	/* Only harmless characters of the comment; it is informational. */
	for (const char *c = comment ? comment : ""; *c && j + 1 < sizeof k->comment; c++)
		if (isalnum((unsigned char)*c) || strchr("@._-+:", *c))
			k->comment[j++] = *c;
	k->comment[j] = '\0';
	return 0;
}

static int read_key_file(const char *path, struct key *k)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[KEY_LINE_MAX + 2], why[256];

	if (!f)
		return cli_error("cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		if (parse_key_line(line, k, why, sizeof why) < 0)
			return cli_error("%s: %s", path, why);
		return 0;
	}
	return cli_error("%s holds no public key; give the .pub file (ssh-keygen -y -f KEY > KEY.pub)", path);
}

/* ---- the user files --------------------------------------------------- */

struct user {
	char name[USER_NAME_MAX + 1];
	struct key *keys;
	size_t nkeys;
};

static void user_free(struct user *u)
{
	for (size_t i = 0; i < u->nkeys; i++)
		free(u->keys[i].b64);
	free(u->keys);
	u->keys = NULL;
	u->nkeys = 0;
}

static int users_path(char *buf, size_t sz, const char *name)
{
	char rel[128];

	snprintf(rel, sizeof rel, "users%s%s%s", name ? "/" : "", name ? name : "", name ? ".keys" : "");
	return hutch_path(buf, sz, cli.home, rel);
}

static int user_load(const char *name, struct user *u)
{
	char path[4096], line[KEY_LINE_MAX + 200];
	_cleanup_fclose_ FILE *f = NULL;

	memset(u, 0, sizeof *u);
	snprintf(u->name, sizeof u->name, "%s", name);
	if (users_path(path, sizeof path, name) < 0)
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof line, f)) {
		char fp[64], vm[HUTCH_NAME_MAX + 1], *rest, why[256];
		struct key k, *nk;
		int off = 0;

		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "%63s %128s %n", fp, vm, &off) != 2 || !off)
			continue;
		rest = line + off;
		if (parse_key_line(rest, &k, why, sizeof why) < 0)
			continue;
		snprintf(k.vm, sizeof k.vm, "%s", strcmp(vm, "-") == 0 ? "" : vm);
		nk = realloc(u->keys, (u->nkeys + 1) * sizeof *nk);
		if (!nk) {
			free(k.b64);
			return -ENOMEM;
		}
		u->keys = nk;
		u->keys[u->nkeys++] = k;
	}
	return 0;
}

static int user_save(const struct user *u)
{
	char path[4096], tmp[4200];
	_cleanup_fclose_ FILE *f = NULL;

	if (users_path(path, sizeof path, u->name) < 0)
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	for (size_t i = 0; i < u->nkeys; i++)
		fprintf(f, "%s %s %s %s %s\n", u->keys[i].fp, u->keys[i].vm[0] ? u->keys[i].vm : "-",
			u->keys[i].type, u->keys[i].b64, u->keys[i].comment);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		return -errno;
	if (rename(tmp, path) < 0)
		return -errno;
	return 0;
}

/* Names of all users, sorted. */
static int user_names(char ***out, size_t *n)
{
	char dir[4096];
	struct dirent **ents = NULL;
	int cnt;
	char **names;
	size_t k = 0;

	*out = NULL;
	*n = 0;
	if (users_path(dir, sizeof dir, NULL) < 0)
		return -ENAMETOOLONG;
	cnt = scandir(dir, &ents, NULL, alphasort);
	if (cnt < 0)
		return errno == ENOENT ? 0 : -errno;
	names = calloc((size_t)cnt + 1, sizeof *names);
	for (int i = 0; i < cnt; i++) {
		size_t l = strlen(ents[i]->d_name);

		if (names && l > 5 && strcmp(ents[i]->d_name + l - 5, ".keys") == 0) {
			ents[i]->d_name[l - 5] = '\0';
			if (user_name_ok(ents[i]->d_name))
				names[k++] = strdup(ents[i]->d_name);
		}
		free(ents[i]);
	}
	free(ents);
	if (!names)
		return -ENOMEM;
	*out = names;
	*n = k;
	return 0;
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* hutch-shell beside this hutch (installed), or in the build tree, else on PATH. */
static void shell_program(char *buf, size_t sz)
{
	char self[PATH_MAX], cand[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(cand, sizeof cand, "%s/hutch-shell", self);
			if (access(cand, X_OK) == 0) {
				if ((size_t)snprintf(buf, sz, "%s", cand) < sz)
					return;
			}
			snprintf(cand, sizeof cand, "%s/../shell/hutch-shell", self);
			if (access(cand, X_OK) == 0 && realpath(cand, self)) {
				snprintf(buf, sz, "%s", self);
				return;
			}
		}
	}
	snprintf(buf, sz, "hutch-shell");
}

/* Rewrites $HUTCH_HOME/ssh/authorized_keys from every user's keys. */
static int write_authorized_keys(void)
{
	char dir[4096], path[4200], tmp[4300], prog[PATH_MAX], home[PATH_MAX];
	_cleanup_fclose_ FILE *f = NULL;
	char **names;
	size_t n;
	int r;

	if (hutch_path(dir, sizeof dir, cli.home, "ssh") < 0)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof path, "%s/authorized_keys", dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	shell_program(prog, sizeof prog);
	if (!realpath(cli.home, home))
		snprintf(home, sizeof home, "%s", cli.home);
	/* The command string is between double quotes in the file: a home
	 * with a quote or backslash would break out of it. */
	if (strpbrk(home, "\"\\ \n") || strpbrk(prog, "\"\\ \n"))
		return -EINVAL;
	if ((r = user_names(&names, &n)) < 0)
		return r;
	f = fopen(tmp, "we");
	if (!f) {
		r = -errno;
		goto out_names;
	}
	fprintf(f, "# Written by `hutch user ...`; edits here are lost at the next change.\n");
	for (size_t i = 0; i < n; i++) {
		struct user u;

		if (user_load(names[i], &u) < 0)
			continue;
		for (size_t j = 0; j < u.nkeys; j++) {
			const struct key *k = &u.keys[j];

			fprintf(f, "restrict,pty,command=\"%s --home %s --key %s%s%s %s\" %s %s %s\n", prog,
				home, k->fp, k->vm[0] ? " --vm " : "", k->vm, u.name, k->type, k->b64,
				u.name);
		}
		user_free(&u);
	}
	if (fflush(f) != 0 || fchmod(fileno(f), 0644) < 0 || fsync(fileno(f)) < 0) {
		r = -errno;
		goto out_names;
	}
	r = rename(tmp, path) < 0 ? -errno : 0;
out_names:
	names_free(names, n);
	return r;
}

/* Serializes changes between concurrent `hutch user` runs. */
static int lock_users(void)
{
	char dir[4096], path[4200];
	int fd;

	if (users_path(dir, sizeof dir, NULL) < 0)
		return -ENAMETOOLONG;
	if (mkdir_p(dir, 0755) < 0)
		return -errno;
	snprintf(path, sizeof path, "%s/.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

/* Finds which user holds FP; returns 1 and the name, 0 when nobody. */
static int key_owner(const char *fp, char *owner, size_t sz)
{
	char **names;
	size_t n;
	int found = 0;

	if (user_names(&names, &n) < 0)
		return 0;
	for (size_t i = 0; i < n && !found; i++) {
		struct user u;

		if (user_load(names[i], &u) < 0)
			continue;
		for (size_t j = 0; j < u.nkeys; j++)
			if (strcmp(u.keys[j].fp, fp) == 0) {
				snprintf(owner, sz, "%s", u.name);
				found = 1;
			}
		user_free(&u);
	}
	names_free(names, n);
	return found;
}

static void audit_admin(const char *op, const char *user, const char *fp)
{
	json_object *rec = json_object_new_object();
	struct passwd *pw = getpwuid(getuid());
	int r;

	json_object_object_add(rec, "type", json_object_new_string("admin"));
	json_object_object_add(rec, "op", json_object_new_string(op));
	json_object_object_add(rec, "user", json_object_new_string(user));
	if (fp)
		json_object_object_add(rec, "key", json_object_new_string(fp));
	json_object_object_add(rec, "uid", json_object_new_int64(getuid()));
	if (pw)
		json_object_object_add(rec, "unix_user", json_object_new_string(pw->pw_name));
	r = audit_append(cli.home, rec, NULL);
	if (r < 0)
		fprintf(stderr, "hutch: warning: cannot write the audit log: %s\n", strerror(-r));
}

enum { OPT_KEY = 256, OPT_VM };

/* `user add NAME --key FILE [--vm VM]` and `user key add NAME FILE [--vm VM]`. */
static int add_key(const char *name, const char *file, const char *vm, bool new_user)
{
	_cleanup_close_ int lock = -1;
	char owner[USER_NAME_MAX + 1], path[4096];
	struct user u;
	struct key k;
	int r;

	if (!user_name_ok(name))
		return cli_usage("invalid user name '%s': use a lower-case letter, then lower-case letters, "
				 "digits, '_' or '-' (at most %d)", name, USER_NAME_MAX);
	if (vm && !vm_suffix_ok(vm))
		return cli_usage("invalid --vm '%s': letters, digits, '_' or '-' (at most 32); "
				 "the VM is then %s.%s", vm, name, vm);
	if (read_key_file(file, &k))
		return 1;
	if (vm)
		snprintf(k.vm, sizeof k.vm, "%s", vm);
	lock = lock_users();
	if (lock < 0) {
		free(k.b64);
		return cli_error("cannot lock %s/users: %s", cli.home, strerror(-lock));
	}
	r = user_load(name, &u);
	if (new_user && r == 0) {
		user_free(&u);
		free(k.b64);
		return cli_error("user %s exists; add a key with `hutch user key add %s FILE`", name, name);
	}
	if (!new_user && r < 0) {
		free(k.b64);
		return cli_error("no user %s; add one with `hutch user add %s --key FILE`", name, name);
	}
	if (key_owner(k.fp, owner, sizeof owner)) {
		user_free(&u);
		free(k.b64);
		return cli_error("key %s already belongs to user %s: a key is one identity; "
				 "remove it there first (`hutch user key rm %s %s`)", k.fp, owner, owner, k.fp);
	}
	if (new_user) {
		memset(&u, 0, sizeof u);
		snprintf(u.name, sizeof u.name, "%s", name);
	}
	{
		struct key *nk = realloc(u.keys, (u.nkeys + 1) * sizeof *nk);

		if (!nk) {
			user_free(&u);
			free(k.b64);
			return cli_error("out of memory");
		}
		u.keys = nk;
		u.keys[u.nkeys++] = k;
	}
	r = user_save(&u);
	user_free(&u);
	if (r < 0) {
		users_path(path, sizeof path, name);
		return cli_error("cannot write %s: %s", path, strerror(-r));
	}
	if ((r = write_authorized_keys()) < 0)
		return cli_error("cannot write %s/ssh/authorized_keys: %s", cli.home, strerror(-r));
	audit_admin(new_user ? "user.add" : "user.key.add", name, k.fp);
	if (cli.json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "user", json_object_new_string(name));
		json_object_object_add(o, "fingerprint", json_object_new_string(k.fp));
		cli_print_json(o);
		json_object_put(o);
	} else {
		printf("%s %s: key %s%s%s%s\n", new_user ? "added user" : "user", name, k.fp,
		       new_user ? "" : " added", vm ? "; its default VM is " : "", vm ? vm : "");
	}
	return 0;
}

static int cmd_add(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, OPT_KEY },
		{ "vm", required_argument, NULL, OPT_VM },
		{ 0 },
	};
	const char *key = NULL, *vm = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_KEY)
			key = optarg;
		else if (c == OPT_VM)
			vm = optarg;
		else
			return 2;
	}
	if (optind + 1 != argc)
		return cli_usage("expected one NAME");
	if (!key)
		return cli_usage("--key FILE is required (the user's public key, e.g. id_ed25519.pub)");
	return add_key(argv[optind], key, vm, true);
}

static int cmd_rm(int argc, char **argv)
{
	_cleanup_close_ int lock = -1;
	char path[4096];
	int r = cli_want_operands(argc, argv, 1);

	if (r)
		return r;
	if (!user_name_ok(argv[1]))
		return cli_usage("invalid user name '%s'", argv[1]);
	lock = lock_users();
	if (lock < 0)
		return cli_error("cannot lock %s/users: %s", cli.home, strerror(-lock));
	users_path(path, sizeof path, argv[1]);
	if (unlink(path) < 0)
		return errno == ENOENT ? cli_error("no user %s (see `hutch user list`)", argv[1])
				       : cli_error("cannot remove %s: %s", path, strerror(errno));
	if ((r = write_authorized_keys()) < 0)
		return cli_error("cannot write %s/ssh/authorized_keys: %s", cli.home, strerror(-r));
	audit_admin("user.rm", argv[1], NULL);
	if (!cli.json)
		printf("removed user %s; their keys no longer log in. Their VMs are kept: "
		       "`hutch vm list`, `hutch vm rm %s`\n", argv[1], argv[1]);
	return 0;
}

static int cmd_list(int argc, char **argv)
{
	json_object *arr = json_object_new_array();
	char **names;
	size_t n;
	int r = cli_want_operands(argc, argv, 0);

	if (r) {
		json_object_put(arr);
		return r;
	}
	if ((r = user_names(&names, &n)) < 0) {
		json_object_put(arr);
		return cli_error("cannot read %s/users: %s", cli.home, strerror(-r));
	}
	if (!cli.json && n == 0)
		printf("no users yet; add one with `hutch user add NAME --key FILE.pub`\n");
	else if (!cli.json)
		printf("%-16s %-52s %-10s %s\n", "USER", "KEY FINGERPRINT", "VM", "COMMENT");
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_new_object(), *keys = json_object_new_array();
		struct user u;

		if (user_load(names[i], &u) < 0) {
			json_object_put(o);
			json_object_put(keys);
			continue;
		}
		json_object_object_add(o, "name", json_object_new_string(u.name));
		for (size_t j = 0; j < u.nkeys; j++) {
			json_object *k = json_object_new_object();
			char vm[HUTCH_NAME_MAX + 40];

			snprintf(vm, sizeof vm, "%s%s%s", u.name, u.keys[j].vm[0] ? "." : "", u.keys[j].vm);
			json_object_object_add(k, "fingerprint", json_object_new_string(u.keys[j].fp));
			json_object_object_add(k, "type", json_object_new_string(u.keys[j].type));
			json_object_object_add(k, "vm", json_object_new_string(vm));
			json_object_object_add(k, "comment", json_object_new_string(u.keys[j].comment));
			json_object_array_add(keys, k);
			if (!cli.json)
				printf("%-16s %-52s %-10s %s\n", j ? "" : u.name, u.keys[j].fp, vm,
				       u.keys[j].comment);
		}
		if (!cli.json && u.nkeys == 0)
			printf("%-16s %s\n", u.name, "(no keys: cannot log in)");
		json_object_object_add(o, "keys", keys);
		json_object_array_add(arr, o);
		user_free(&u);
	}
	names_free(names, n);
	if (cli.json)
		cli_print_json(arr);
	json_object_put(arr);
	return 0;
}

static int cmd_key(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vm", required_argument, NULL, OPT_VM },
		{ 0 },
	};
	const char *vm = NULL;
	int c;

	/* argv: key add|rm NAME ARG [--vm VM] */
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_VM)
			vm = optarg;
		else
			return 2;
	}
	if (argc - optind != 3 || (strcmp(argv[optind], "add") != 0 && strcmp(argv[optind], "rm") != 0))
		return cli_usage("expected `key add NAME FILE` or `key rm NAME FINGERPRINT`");
	if (strcmp(argv[optind], "add") == 0)
		return add_key(argv[optind + 1], argv[optind + 2], vm, false);

	{
		const char *name = argv[optind + 1], *fp = argv[optind + 2];
		_cleanup_close_ int lock = -1;
		struct user u;
		size_t j, k = 0;
		bool found = false;
		int r;

		if (vm)
			return cli_usage("--vm only applies to `key add`");
		if (!user_name_ok(name))
			return cli_usage("invalid user name '%s'", name);
		lock = lock_users();
		if (lock < 0)
			return cli_error("cannot lock %s/users: %s", cli.home, strerror(-lock));
		if (user_load(name, &u) < 0)
			return cli_error("no user %s (see `hutch user list`)", name);
		for (j = 0; j < u.nkeys; j++) {
			/* "SHA256:..." or just the part after it. */
			const char *f = u.keys[j].fp;

			if (strcmp(f, fp) == 0 || strcmp(f + 7, fp) == 0) {
				free(u.keys[j].b64);
				found = true;
				continue;
			}
			u.keys[k++] = u.keys[j];
		}
		u.nkeys = k;
		if (!found) {
			user_free(&u);
			return cli_error("user %s has no key %s; `hutch user list` shows the fingerprints", name, fp);
		}
		r = user_save(&u);
		user_free(&u);
		if (r < 0)
			return cli_error("cannot save user %s: %s", name, strerror(-r));
		if ((r = write_authorized_keys()) < 0)
			return cli_error("cannot write %s/ssh/authorized_keys: %s", cli.home, strerror(-r));
		audit_admin("user.key.rm", name, fp);
		if (!cli.json)
			printf("user %s: key %s removed%s\n", name, fp,
			       k == 0 ? " (no keys left: the user cannot log in)" : "");
	}
	return 0;
}

static const struct cli_cmd user_cmds[] = {
	{ "add", "NAME --key FILE [--vm VM]", "add a user who logs in with the public key FILE",
	  "NAME: a lower-case letter, then lower-case letters, digits, '_' or '-'.\n"
	  "  --key FILE   an OpenSSH public key (id_ed25519.pub); its SHA-256 fingerprint\n"
	  "               is the identity\n"
	  "  --vm VM      this key lands in the VM NAME.VM instead of NAME\n"
	  "`ssh hutch@HOST` with the key lands in the user's VM, forked from the default\n"
	  "template at the first login. Writes $HUTCH_HOME/ssh/authorized_keys, the file\n"
	  "the host's sshd reads for the hutch system user (docs/hutch-shell.md).\n",
	  cmd_add },
	{ "rm", "NAME", "remove a user and all their keys (their VMs are kept)", NULL, cmd_rm },
	{ "list", NULL, "users with their key fingerprints and VMs", NULL, cmd_list },
	{ "key", "add NAME FILE [--vm VM] | rm NAME FINGERPRINT", "add or remove one of a user's keys",
	  "A user may have several keys; each is a way in. `rm` takes the fingerprint\n"
	  "`hutch user list` shows (with or without the SHA256: prefix).\n",
	  cmd_key },
	{ 0 },
};

const struct cli_group cli_group_user = {
	.name = "user",
	.summary = "who may ssh in: users and their SSH keys",
	.cmds = user_cmds,
};

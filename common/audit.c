/* The hash-chained audit log (see audit.h). */
#include "audit.h"

#include "cleanup.h"
#include "ctl.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
/* A record longer than this is refused (arguments are cut well before). */
#define MAX_RECORD (256u << 10)

int audit_path(char *buf, size_t sz, const char *home, const char *rel)
{
	int n = snprintf(buf, sz, "%s/audit%s%s", home, rel && *rel ? "/" : "", rel ? rel : "");

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

/* Name service lookups cost dozens of file probes each (files, then
 * systemd's userdb directories) and a daemon audits every state-changing
 * request: look the group up once per process, and remember the last
 * caller's user name. A group or user made later is seen after a restart. */
static pthread_once_t gid_once = PTHREAD_ONCE_INIT;
static gid_t cached_gid = (gid_t)-1;

static void lookup_gid(void)
{
	struct group gr, *grp = NULL;
	char buf[1024];

	if (getgrnam_r("hutch", &gr, buf, sizeof buf, &grp) == 0 && grp)
		cached_gid = grp->gr_gid;
}

static gid_t hutch_gid(void)
{
	pthread_once(&gid_once, lookup_gid);
	return cached_gid;
}

/* The user name of uid into name (empty when it has none). */
static void user_name(uid_t uid, char *name, size_t sz)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static uid_t last_uid = (uid_t)-1;
	static char last_name[64];
	struct passwd pw, *pwp = NULL;
	char buf[1024];

	pthread_mutex_lock(&lock);
	if (uid != last_uid) {
		last_name[0] = '\0';
		if (getpwuid_r(uid, &pw, buf, sizeof buf, &pwp) == 0 && pwp)
			snprintf(last_name, sizeof last_name, "%s", pwp->pw_name);
		last_uid = uid;
	}
	snprintf(name, sz, "%s", last_name);
	pthread_mutex_unlock(&lock);
}

int audit_mkdir(const char *home)
{
	char dir[4096];
	gid_t gid = hutch_gid();
	int r;

	if ((r = audit_path(dir, sizeof dir, home, NULL)) < 0)
		return r;
	if (mkdir(dir, 0700) == 0) {
		/* hutch-shell runs as the `hutch` user and appends its sessions. */
		if (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) == 0)
			chmod(dir, 02770);
	} else if (errno != EEXIST) {
		return -errno;
	}
	return 0;
}

void audit_time_now(char *buf, size_t sz)
{
	struct timespec ts;
	struct tm tm;
	char s[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, sz, "%s.%03ldZ", s, ts.tv_nsec / 1000000);
}

static void sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX + 1])
{
	unsigned char md[32];
	unsigned mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[AUDIT_HASH_HEX] = '\0';
}

/* The last complete line of FD (without its newline) into a malloc'd
 * buffer; *line = NULL for an empty file. */
static int read_last_line(int fd, char **line, size_t *len)
{
	struct stat st;
	uint64_t size;
	int r;

	*line = NULL;
	*len = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	if (size == 0)
		return 0;
	/* Records are a few hundred bytes: look at the tail, wider if needed. */
	for (size_t want = 8192;; want *= 4) {
		uint64_t start = size > want ? size - want : 0;
		size_t n = (size_t)(size - start), end, beg;
		_cleanup_free_ char *buf = malloc(n);

		if (!buf)
			return -ENOMEM;
		if ((r = pread_all(fd, buf, n, start)) < 0)
			return r;
		end = n;
		if (buf[end - 1] == '\n')
			end--;
		beg = end;
		while (beg > 0 && buf[beg - 1] != '\n')
			beg--;
		if (beg == 0 && start > 0) {
			if (want > MAX_RECORD)
				return -EBADMSG;	/* longer than any record we write */
			continue;
		}
		*len = end - beg;
		*line = strndup(buf + beg, end - beg);
		return *line ? 0 : -ENOMEM;
	}
}

static int write_head(const char *home, uint64_t seq, const char *hash)
{
	char path[4096], buf[128];
	_cleanup_close_ int fd = -1;
	int n, r;

	if ((r = audit_path(path, sizeof path, home, "head")) < 0)
		return r;
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0660);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof buf, "%" PRIu64 " %s\n", seq, hash);
	if ((r = pwrite_all(fd, buf, (size_t)n, 0)) < 0)
		return r;
	if (ftruncate(fd, n) < 0)
		return -errno;
	return 0;
}

int audit_append(const char *home, json_object *rec, uint64_t *seq_out)
{
	char path[4096], when[40], prev[AUDIT_HASH_HEX + 1], hash[AUDIT_HASH_HEX + 1];
	_cleanup_free_ char *last = NULL, *out = NULL;
	_cleanup_close_ int fd = -1;
	json_object *full = NULL;
	uint64_t seq = 1;
	const char *text;
	size_t last_len, len;
	int r;

	if (!rec || !json_object_is_type(rec, json_type_object)) {
		json_object_put(rec);
		return -EINVAL;
	}
	if ((r = audit_mkdir(home)) < 0 || (r = audit_path(path, sizeof path, home, "log.jsonl")) < 0)
		goto out_put;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0660);
	if (fd < 0) {
		r = -errno;
		goto out_put;
	}
	/* O_APPEND alone would order the lines, but prev must name the line
	 * written just before this one. */
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			r = -errno;
			goto out_put;
		}
	}
	{
		/* pread needs a readable fd; the lock is held on the writer. */
		_cleanup_close_ int rfd = open(path, O_RDONLY | O_CLOEXEC);

		if (rfd < 0) {
			r = -errno;
			goto out_put;
		}
		if ((r = read_last_line(rfd, &last, &last_len)) < 0)
			goto out_put;
	}
	if (last) {
		json_object *o = json_tokener_parse(last);
		json_object *s;

		sha256_hex(last, last_len, prev);
		if (o && json_object_object_get_ex(o, "seq", &s))
			seq = (uint64_t)json_object_get_int64(s) + 1;
		json_object_put(o);
	} else {
		strcpy(prev, ZERO_HASH);
	}

	/* seq and time first, then the caller's members, prev last. */
	full = json_object_new_object();
	audit_time_now(when, sizeof when);
	json_object_object_add(full, "seq", json_object_new_uint64(seq));
	json_object_object_add(full, "time", json_object_new_string(when));
	json_object_object_foreach(rec, k, v) {
		if (strcmp(k, "seq") == 0 || strcmp(k, "time") == 0 || strcmp(k, "prev") == 0)
			continue;
		json_object_object_add(full, k, json_object_get(v));
	}
	json_object_object_add(full, "prev", json_object_new_string(prev));
	text = json_object_to_json_string_ext(full, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(text);
	if (len > MAX_RECORD) {
		r = -E2BIG;
		goto out_put;
	}
	sha256_hex(text, len, hash);
	out = malloc(len + 1);
	if (!out) {
		r = -ENOMEM;
		goto out_put;
	}
	memcpy(out, text, len);
	out[len] = '\n';
	/* One write: a reader never sees half a record from a live writer. */
	if ((r = write_all(fd, out, len + 1)) < 0)
		goto out_put;
	if (fdatasync(fd) < 0) {
		r = -errno;
		goto out_put;
	}
	if ((r = write_head(home, seq, hash)) < 0)
		goto out_put;
	if (seq_out)
		*seq_out = seq;
	r = 0;
out_put:
	json_object_put(full);
	json_object_put(rec);
	return r;	/* closing fd drops the lock */
}

/* Queries change nothing; hutch-fuse and hutch-shell send many of them. */
static bool is_query(const char *op)
{
	size_t n = strlen(op);

	return strcmp(op, "ping") == 0 || strcmp(op, "store.stats") == 0 ||
	       (n > 5 && strcmp(op + n - 5, ".list") == 0) ||
	       (n > 5 && strcmp(op + n - 5, ".info") == 0);
}

/* Arguments bigger than this are summarised: a client must not be able to
 * make its request unrecordable by sending many members. */
#define MAX_ARGS_JSON 16384

/* A copy of the request without `op`, long strings cut. */
static json_object *args_of(json_object *req)
{
	json_object *a = json_object_new_object();
	size_t total;

	if (!req || !json_object_is_type(req, json_type_object))
		return a;
	json_object_object_foreach(req, k, v) {
		if (strcmp(k, "op") == 0)
			continue;
		if (json_object_is_type(v, json_type_string) &&
		    json_object_get_string_len(v) > AUDIT_MAX_STRING)
			json_object_object_add(a, k, json_object_new_string_len(json_object_get_string(v),
										 AUDIT_MAX_STRING));
		else
			json_object_object_add(a, k, json_object_get(v));
	}
	total = strlen(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
	if (total > MAX_ARGS_JSON) {
		json_object *small = json_object_new_object(), *val;

		for (const char *const *key = (const char *const[]){ "name", "src", "dst", "snap", "old",
								     "new", "template", NULL };
		     *key; key++)
			if (json_object_object_get_ex(a, *key, &val))
				json_object_object_add(small, *key, json_object_get(val));
		json_object_object_add(small, "args_json_bytes", json_object_new_uint64(total));
		json_object_put(a);
		a = small;
	}
	return a;
}

int audit_control(const char *home, const char *daemon, int fd, const char *op, json_object *req)
{
	json_object *rec;
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;

	if (!op || is_query(op))
		return 0;
	ctl_peer_creds(fd, &pid, &uid, &gid);
	rec = json_object_new_object();
	json_object_object_add(rec, "type", json_object_new_string("control"));
	json_object_object_add(rec, "daemon", json_object_new_string(daemon));
	json_object_object_add(rec, "op", json_object_new_string_len(op, (int)strnlen(op, 128)));
	json_object_object_add(rec, "args", args_of(req));
	json_object_object_add(rec, "uid", json_object_new_int64((int64_t)uid));
	char who[64];
	user_name(uid, who, sizeof who);
	if (who[0])
		json_object_object_add(rec, "unix_user", json_object_new_string(who));
	json_object_object_add(rec, "pid", json_object_new_int64(pid));
	return audit_append(home, rec, NULL);
}

int audit_control_sock(const char *sock_path, const char *daemon, int fd, const char *op,
		       json_object *req)
{
	char home[4096];
	char *slash;

	if (!op || is_query(op))
		return 0;
	if (snprintf(home, sizeof home, "%s", sock_path) >= (int)sizeof home)
		return -ENAMETOOLONG;
	/* HOME/run/NAME.sock -> HOME */
	for (int i = 0; i < 2; i++) {
		slash = strrchr(home, '/');
		if (!slash)
			return -EINVAL;
		*slash = '\0';
	}
	if (!*home)
		strcpy(home, "/");
	return audit_control(home, daemon, fd, op, req);
}

static int read_head(const char *home, uint64_t *seq, char hash[AUDIT_HASH_HEX + 1])
{
	char path[4096], buf[128];
	_cleanup_fclose_ FILE *f = NULL;
	int r;

	if ((r = audit_path(path, sizeof path, home, "head")) < 0)
		return r;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%" SCNu64 " %64s", seq, hash) != 2 ||
	    strlen(hash) != AUDIT_HASH_HEX)
		return -EBADMSG;
	return 0;
}

static void set_bad(struct audit_verify_result *res, uint64_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_bad(struct audit_verify_result *res, uint64_t n, const char *fmt, ...)
{
	va_list ap;

	res->bad = n;
	va_start(ap, fmt);
	vsnprintf(res->why, sizeof res->why, fmt, ap);
	va_end(ap);
}

int audit_verify(const char *home, struct audit_verify_result *res)
{
	char path[4096], prev_hash[AUDIT_HASH_HEX + 1] = ZERO_HASH, head_hash[AUDIT_HASH_HEX + 1];
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t head_seq = 0;
	int r, hr;

	memset(res, 0, sizeof *res);
	strcpy(res->last_hash, ZERO_HASH);
	if ((r = audit_path(path, sizeof path, home, "log.jsonl")) < 0)
		return r;
	f = fopen(path, "re");
	if (!f && errno != ENOENT)
		return -errno;
	hr = read_head(home, &head_seq, head_hash);
	if (!f) {
		if (hr == 0 && head_seq > 0)
			set_bad(res, 1, "the log is missing but its head names record %" PRIu64, head_seq);
		return 0;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		uint64_t lineno = res->records + 1;
		json_object *o, *v;
		const char *p;

		if (n == 0 || line[n - 1] != '\n') {
			set_bad(res, lineno, "record %" PRIu64 " is cut short (no end of line): the log was truncated",
				lineno);
			return 0;
		}
		line[--n] = '\0';
		o = json_tokener_parse(line);
		if (!o || !json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			set_bad(res, lineno, "record %" PRIu64 " is not a JSON object: it was edited or truncated",
				lineno);
			return 0;
		}
		if (!json_object_object_get_ex(o, "seq", &v) || (uint64_t)json_object_get_int64(v) != lineno) {
			set_bad(res, lineno, "line %" PRIu64 " carries seq %s: records were removed or reordered",
				lineno, v ? json_object_get_string(v) : "(none)");
			json_object_put(o);
			return 0;
		}
		p = json_object_object_get_ex(o, "prev", &v) ? json_object_get_string(v) : "";
		if (strcmp(p, prev_hash) != 0) {
			/* This record's link does not match the line before it: that
			 * line was changed (or this link was). */
			if (lineno == 1)
				set_bad(res, 1, "record 1 does not start the chain: earlier records were removed");
			else
				set_bad(res, lineno - 1,
					"record %" PRIu64 " does not match the hash record %" PRIu64
					" holds of it: record %" PRIu64 " was changed",
					lineno - 1, lineno, lineno - 1);
			json_object_put(o);
			return 0;
		}
		json_object_put(o);
		sha256_hex(line, (size_t)n, prev_hash);
		res->records = lineno;
	}
	if (ferror(f))
		return -EIO;
	strcpy(res->last_hash, prev_hash);
	if (hr == -ENOENT) {
		if (res->records > 0)
			set_bad(res, res->records, "the head file is missing (%s/audit/head)", home);
		return 0;
	}
	if (hr < 0) {
		set_bad(res, res->records ? res->records : 1, "the head file is unreadable: %s", strerror(-hr));
		return 0;
	}
	if (head_seq > res->records) {
		set_bad(res, res->records + 1,
			"the log ends at record %" PRIu64 " but its head names record %" PRIu64
			": records %" PRIu64 "..%" PRIu64 " were removed",
			res->records, head_seq, res->records + 1, head_seq);
		return 0;
	}
	/* A head behind the log is a writer stopped between its two writes;
	 * the chain still covers those records. */
	if (head_seq == res->records && head_seq > 0 && strcmp(head_hash, prev_hash) != 0)
		set_bad(res, res->records, "record %" PRIu64 " does not match the hash in the head: it was changed",
			res->records);
	return 0;
}

int audit_foreach(const char *home, audit_record_fn fn, void *opaque)
{
	char path[4096];
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	int r;

	if ((r = audit_path(path, sizeof path, home, "log.jsonl")) < 0)
		return r;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (getline(&line, &cap, f) >= 0) {
		json_object *o = json_tokener_parse(line);

		if (!o)
			continue;
		r = fn(opaque, o);
		json_object_put(o);
		if (r)
			return r;
	}
	return 0;
}

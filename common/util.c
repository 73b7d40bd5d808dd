#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static bool name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-' || c == '+';
}

bool name_is_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > HUTCH_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok(name[i]))
			return false;
	if (n >= 5 && strcmp(name + n - 5, ".snap") == 0)
		return false;
	return true;
}

bool user_name_is_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > HUTCH_USER_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= '0' && s[i] <= '9') && s[i] != '_' &&
		    s[i] != '-')
			return false;
	return true;
}

bool ref_split(const char *ref, char *name, size_t name_sz, const char **snap)
{
	const char *at = strchr(ref, '@');
	size_t n;

	if (!at)
		return false;
	n = (size_t)(at - ref);
	if (n >= name_sz)
		n = name_sz - 1;
	memcpy(name, ref, n);
	name[n] = '\0';
	*snap = at + 1;
	return true;
}

bool ref_is_valid(const char *ref)
{
	char name[HUTCH_NAME_MAX + 2];
	const char *snap;

	if (strlen(ref) > 2 * HUTCH_NAME_MAX + 1)
		return false;
	if (!ref_split(ref, name, sizeof name, &snap))
		return name_is_valid(ref);
	return strlen(name) <= HUTCH_NAME_MAX && name_is_valid(name) && name_is_valid(snap);
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	double mult = 1;
	double v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1024.0; end++; break;
	case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
	case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
	case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
	case 'p': case 'P': mult = 1024.0 * 1024 * 1024 * 1024 * 1024; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	v *= mult;
	if (v >= 18446744073709551615.0)
		return -ERANGE;
	if (v != (double)(uint64_t)v)
		return -EINVAL;	/* fractional bytes */
	*out = (uint64_t)v;
	return 0;
}

const char *format_size(uint64_t bytes, char *buf, size_t sz)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, sz, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, sz, "%.1f %s", v, units[u]);
	return buf;
}

const char *hutch_home(void)
{
	const char *h = getenv("HUTCH_HOME");

	return h && *h ? h : "/var/lib/hutch";
}

int hutch_path(char *buf, size_t sz, const char *home, const char *rel)
{
	int n = snprintf(buf, sz, "%s/%s", home, rel);

	return n < 0 || (size_t)n >= sz ? -ENAMETOOLONG : 0;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t r = pwrite(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ENODATA;	/* short file: a torn or truncated record */
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

int mkdir_p(const char *path, unsigned mode)
{
	char tmp[4096];
	size_t n = strlen(path);

	if (n >= sizeof tmp)
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int copy_file(const char *src, const char *dst)
{
	char buf[65536];
	ssize_t n;
	int in, out, r = 0;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		r = -errno;
		close(in);
		return r;
	}
	while ((n = read(in, buf, sizeof buf)) > 0)
		if ((r = write_all(out, buf, (size_t)n)) < 0)
			break;
	if (n < 0)
		r = -errno;
	close(in);
	close(out);
	return r;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

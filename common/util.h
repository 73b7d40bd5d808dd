/* Small helpers shared by the daemons and the CLI. */
#ifndef HUTCH_UTIL_H
#define HUTCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Image names: [A-Za-z0-9._+-], 1..HUTCH_NAME_MAX, not starting with '.' or '-',
 * not ending in ".snap" (the FUSE view uses NAME.snap/ for snapshots). */
#define HUTCH_NAME_MAX 128

bool name_is_valid(const char *name);
/* "NAME" or "NAME@SNAP" with both parts valid names. */
bool ref_is_valid(const char *ref);
/* Split "NAME@SNAP"; returns false when there is no '@'. */
bool ref_split(const char *ref, char *name, size_t name_sz, const char **snap);

/* hutch user names (SSH identities): [a-z][a-z0-9_-]*, at most
 * HUTCH_USER_MAX. No '.', so a VM named `USER.X` can only be USER's. */
#define HUTCH_USER_MAX 32
bool user_name_is_valid(const char *name);

/* "10G", "512M", "4096", "1.5T"; binary units. -EINVAL on garbage or overflow. */
int parse_size(const char *s, uint64_t *out);
/* "1.5 GiB" into buf. */
const char *format_size(uint64_t bytes, char *buf, size_t sz);

/* $HUTCH_HOME or the default /var/lib/hutch. */
const char *hutch_home(void);
/* snprintf into a path buffer under home; -ENAMETOOLONG when it does not fit. */
int hutch_path(char *buf, size_t sz, const char *home, const char *rel);

/* Write all / read all, retrying on EINTR and short counts. Negative errno on error. */
int write_all(int fd, const void *buf, size_t len);
int pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
int pread_all(int fd, void *buf, size_t len, uint64_t off);

int mkdir_p(const char *path, unsigned mode);
/* Copies src to a new or truncated dst (mode 0644). Negative errno. */
int copy_file(const char *src, const char *dst);
uint64_t now_ns(void);

#endif

/*
 * hutch-guest-reseed: runs inside a guest right after a warm fork. Reads up
 * to 256 bytes of host entropy from stdin, in hex (it comes in through a
 * shell line), adds them to the kernel's pool
 * with credit (RNDADDENTROPY) and forces a reseed of the kernel's CRNG
 * (RNDRESEEDCRNG), so forks of one memory image never produce the same
 * random bytes. The hex may be followed by a space and the host's time in
 * unix seconds, which sets the clock (the fork slept since its memory was
 * saved). hutch-vmd sends this program over SSH, or finds it in guests of
 * `hutch template build`: no libc, no dependencies on what the guest has.
 * Exit status 0 on success.
 */
#include <linux/random.h>
#include <stddef.h>

#define SYS_read 0
#define SYS_open 2
#define SYS_ioctl 16
#define SYS_exit 60
#define SYS_clock_settime 227
#define CLOCK_REALTIME 0

static long sys3(long n, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

/* struct rand_pool_info with room for its data (its buf[] is a flexible array). */
static char hex[2 * 256 + 2];

static int nibble(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static struct {
	int entropy_count;
	int buf_size;
	unsigned char buf[256];
} pool;
_Static_assert(offsetof(struct rand_pool_info, buf) == offsetof(__typeof__(pool), buf), "rand_pool_info layout");

void _start(void) __attribute__((noreturn));
void _start(void)
{
	long n = 0, r, fd;

	long len = 0;

	while (len < (long)sizeof hex) {
		r = sys3(SYS_read, 0, (long)(hex + len), (long)sizeof hex - len);
		if (r <= 0)
			break;
		len += r;
	}
	/* Only whole hex digit pairs count, and only what they carry is credited. */
	while (n < (long)sizeof pool.buf && 2 * n + 1 < len && nibble(hex[2 * n]) >= 0 &&
	       nibble(hex[2 * n + 1]) >= 0) {
		pool.buf[n] = (unsigned char)(nibble(hex[2 * n]) << 4 | nibble(hex[2 * n + 1]));
		n++;
	}
	fd = n >= 32 ? sys3(SYS_open, (long)"/dev/random", 2 /* O_RDWR */, 0) : -1;
	pool.buf_size = (int)n;
	pool.entropy_count = (int)(n * 8);
	r = fd < 0 ? 1 : sys3(SYS_ioctl, fd, (long)RNDADDENTROPY, (long)&pool) != 0 ? 2
	    : sys3(SYS_ioctl, fd, (long)RNDRESEEDCRNG, 0) != 0 ? 3 : 0;

	/* " SECONDS" after the hex: the clock. */
	long i = 2 * n, secs = 0, digits = 0;
	while (i < len && hex[i] == ' ')
		i++;
	while (i < len && hex[i] >= '0' && hex[i] <= '9' && digits < 18) {
		secs = secs * 10 + (hex[i++] - '0');
		digits++;
	}
	if (r == 0 && digits) {
		long ts[2] = { secs, 0 };	/* struct timespec */

		r = sys3(SYS_clock_settime, CLOCK_REALTIME, (long)ts, 0) != 0 ? 4 : 0;
	}
	sys3(SYS_exit, r, 0, 0);
	__builtin_unreachable();
}

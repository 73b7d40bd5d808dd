/*
 * hutch-guest-reseed: runs inside a guest right after a warm fork. Reads up
 * to 256 bytes of host entropy from stdin, adds them to the kernel's pool
 * with credit (RNDADDENTROPY) and forces a reseed of the kernel's CRNG
 * (RNDRESEEDCRNG), so forks of one memory image never produce the same
 * random bytes. hutch-vmd sends this program over SSH: no libc, no
 * dependencies on what the guest has. Exit status 0 on success.
 */
#include <linux/random.h>
#include <stddef.h>

#define SYS_read 0
#define SYS_open 2
#define SYS_ioctl 16
#define SYS_exit 60

static long sys3(long n, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static struct {
	struct rand_pool_info info;
	unsigned char buf[256];
} pool;

void _start(void) __attribute__((noreturn));
void _start(void)
{
	long n = 0, r, fd;

	while (n < (long)sizeof pool.buf) {
		r = sys3(SYS_read, 0, (long)(pool.buf + n), (long)sizeof pool.buf - n);
		if (r <= 0)
			break;
		n += r;
	}
	fd = n >= 32 ? sys3(SYS_open, (long)"/dev/random", 2 /* O_RDWR */, 0) : -1;
	pool.info.buf_size = (int)n;
	pool.info.entropy_count = (int)(n * 8);
	r = fd < 0 ? 1 : sys3(SYS_ioctl, fd, (long)RNDADDENTROPY, (long)&pool) != 0 ? 2
	    : sys3(SYS_ioctl, fd, (long)RNDRESEEDCRNG, 0) != 0 ? 3 : 0;
	sys3(SYS_exit, r, 0, 0);
	__builtin_unreachable();
}

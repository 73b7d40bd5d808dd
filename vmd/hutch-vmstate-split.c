/*
 * hutch-vmstate-split: splits a QEMU 7.2 migration stream into the pages of
 * one RAM block, written page-aligned into a sparse file, and the rest of
 * the stream with that block's pages left out.
 *
 * Why: a warm fork maps its template's RAM privately (share=off), so
 * x-ignore-shared cannot leave its RAM out of the device state as it does
 * for a VM with its own RAM file. hutch-vmd hibernates such a VM with
 * `migrate exec:hutch-vmstate-split ram0 RAMFILE > STATE`: RAMFILE then
 * holds the guest's RAM exactly like a shared RAM file would, and STATE is
 * the stream a source with x-ignore-shared would have sent, so the VM
 * resumes as an ordinary VM with its own RAM file (vmd-sleep.c).
 *
 * The stream (QEMU's migration/savevm.c and ram.c): magic, version, a
 * configuration section with subsections, then sections START/PART/END of
 * the iterative "ram" handler, each a list of be64 (page offset | flags)
 * entries ending in EOS, then FULL sections of device state, which are
 * copied as they are. Only what a precopy migration of x86 QEMU 7.2 with
 * x-ignore-shared sends is accepted; anything else fails loudly, and the
 * hibernation is undone by hutch-vmd (the VM keeps running).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
#define FLAGS_MASK (PAGE_SIZE - 1)

/* migration/savevm.c */
#define VM_FILE_MAGIC 0x5145564du
#define VM_FILE_VERSION 3u
#define VM_EOF 0x00
#define VM_SECTION_START 0x01
#define VM_SECTION_PART 0x02
#define VM_SECTION_END 0x03
#define VM_SECTION_FULL 0x04
#define VM_SUBSECTION 0x05
#define VM_CONFIGURATION 0x07
#define VM_SECTION_FOOTER 0x7e

/* migration/ram.c */
#define RAM_FLAG_ZERO 0x02
#define RAM_FLAG_MEM_SIZE 0x04
#define RAM_FLAG_PAGE 0x08
#define RAM_FLAG_EOS 0x10
#define RAM_FLAG_CONTINUE 0x20

struct split {
	FILE *in, *out;
	int ram_fd;
	const char *block;	/* the RAM block whose pages go to ram_fd */
	bool ignore_shared;	/* the setup lists each block's address too */
	bool in_block;		/* the last page entry was of that block */
	uint64_t ram_bytes;	/* pages written to ram_fd */
	/* Consecutive pages gathered into one pwrite. */
	unsigned char *run;
	uint64_t run_off;
	size_t run_len;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("hutch-vmstate-split: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void get(struct split *s, void *buf, size_t n)
{
	if (fread(buf, 1, n, s->in) != n)
		die(ferror(s->in) ? "reading the stream: %s" : "the stream ends too early%s",
		    ferror(s->in) ? strerror(errno) : "");
}

static void put(struct split *s, const void *buf, size_t n)
{
	if (fwrite(buf, 1, n, s->out) != n)
		die("writing the device state: %s", strerror(errno));
}

static unsigned get8(struct split *s)
{
	unsigned char b;

	get(s, &b, 1);
	return b;
}

static uint32_t get32(struct split *s)
{
	unsigned char b[4];

	get(s, b, 4);
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t get64(struct split *s)
{
	uint64_t hi = get32(s);

	return hi << 32 | get32(s);
}

static void put8(struct split *s, unsigned v)
{
	unsigned char b = (unsigned char)v;

	put(s, &b, 1);
}

static void put32(struct split *s, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
			       (unsigned char)v };

	put(s, b, 4);
}

static void put64(struct split *s, uint64_t v)
{
	put32(s, (uint32_t)(v >> 32));
	put32(s, (uint32_t)v);
}

/* A one-byte length and that many bytes: QEMU's idstr. Copied to the output if COPY. */
static void get_name(struct split *s, char name[256], bool copy)
{
	unsigned len = get8(s);

	get(s, name, len);
	name[len] = '\0';
	if (copy) {
		put8(s, len);
		put(s, name, len);
	}
}

static void copy_bytes(struct split *s, size_t n)
{
	unsigned char buf[256];

	while (n) {
		size_t k = n < sizeof buf ? n : sizeof buf;

		get(s, buf, k);
		put(s, buf, k);
		n -= k;
	}
}

/* ---- the RAM file --------------------------------------------------------- */

#define RUN_MAX (1u << 20)

static void flush_run(struct split *s)
{
	size_t done = 0;

	while (done < s->run_len) {
		ssize_t n = pwrite(s->ram_fd, s->run + done, s->run_len - done, (off_t)(s->run_off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("writing the RAM file: %s", n < 0 ? strerror(errno) : "short write");
		done += (size_t)n;
	}
	s->ram_bytes += s->run_len;
	s->run_len = 0;
}

static void ram_page(struct split *s, uint64_t off)
{
	if (s->run_len && (s->run_off + s->run_len != off || s->run_len == RUN_MAX))
		flush_run(s);
	if (!s->run_len)
		s->run_off = off;
	get(s, s->run + s->run_len, PAGE_SIZE);
	s->run_len += PAGE_SIZE;
}

/* ---- sections --------------------------------------------------------------- */

/* The setup entry of the "ram" START section: every block, its size, its address. */
static void ram_setup(struct split *s, uint64_t total)
{
	bool found = false;

	while (total) {
		char name[256];
		uint64_t len;

		get_name(s, name, true);
		len = get64(s);
		put64(s, len);
		if (s->ignore_shared)
			put64(s, get64(s));
		if (strcmp(name, s->block) == 0) {
			found = true;
			if (ftruncate(s->ram_fd, (off_t)len) < 0)
				die("cannot size the RAM file to %" PRIu64 " bytes: %s", len, strerror(errno));
		}
		if (len > total)
			die("RAM block %s is larger than the total RAM the stream announced", name);
		total -= len;
	}
	if (!found)
		die("the stream has no RAM block named %s", s->block);
}

/* Page entries up to EOS: the block's pages go to the RAM file, others through. */
static void ram_section(struct split *s)
{
	for (;;) {
		uint64_t v = get64(s), off = v & ~(uint64_t)FLAGS_MASK;
		unsigned flags = (unsigned)(v & FLAGS_MASK);
		char name[256];

		if (flags & RAM_FLAG_EOS) {
			put64(s, v);
			return;
		}
		if (flags & RAM_FLAG_MEM_SIZE) {
			put64(s, v);
			ram_setup(s, off);
			continue;
		}
		if (!(flags & (RAM_FLAG_ZERO | RAM_FLAG_PAGE)) ||
		    (flags & ~(unsigned)(RAM_FLAG_ZERO | RAM_FLAG_PAGE | RAM_FLAG_CONTINUE)))
			die("RAM entry with flags 0x%x is not supported (compression, xbzrle or "
			    "multifd must stay off)", flags);
		if (!(flags & RAM_FLAG_CONTINUE)) {
			get_name(s, name, false);
			s->in_block = strcmp(name, s->block) == 0;
		}
		if (s->in_block) {
			/* Left out: the file has zeroes where no page was written. */
			if (flags & RAM_FLAG_PAGE)
				ram_page(s, off);
			else if (get8(s) != 0)
				die("a ZERO entry filled with a non-zero byte");
			continue;
		}
		/* Another block (ROMs, video RAM): through as it came, with its name. */
		put64(s, v);
		if (!(flags & RAM_FLAG_CONTINUE)) {
			put8(s, (unsigned)strlen(name));
			put(s, name, strlen(name));
		}
		copy_bytes(s, flags & RAM_FLAG_PAGE ? PAGE_SIZE : 1);
	}
}

/* The configuration section: machine type and the subsections QEMU 7.2 sends. */
static void configuration(struct split *s)
{
	uint32_t len = get32(s);

	put32(s, len);
	copy_bytes(s, len);
	for (;;) {
		int c = getc(s->in);
		char name[256];

		if (c != VM_SUBSECTION) {
			if (c == EOF || ungetc(c, s->in) == EOF)
				die("the stream ends in its configuration section");
			return;
		}
		put8(s, (unsigned)c);
		get_name(s, name, true);
		put32(s, get32(s));	/* version */
		if (strcmp(name, "configuration/target-page-bits") == 0) {
			put32(s, get32(s));
		} else if (strcmp(name, "configuration/uuid") == 0) {
			copy_bytes(s, 16);
		} else if (strcmp(name, "configuration/capabilities") == 0) {
			uint32_t n = get32(s);

			put32(s, n);
			while (n--) {
				get_name(s, name, true);
				if (strcmp(name, "x-ignore-shared") == 0)
					s->ignore_shared = true;
			}
		} else {
			die("unknown configuration subsection %s (a QEMU other than 7.2?)", name);
		}
	}
}

static void split(struct split *s)
{
	uint32_t ram_id = UINT32_MAX;
	bool ram_done = false;

	if (get32(s) != VM_FILE_MAGIC)
		die("not a QEMU migration stream (bad magic)");
	if (get32(s) != VM_FILE_VERSION)
		die("unsupported QEMU migration stream version");
	put32(s, VM_FILE_MAGIC);
	put32(s, VM_FILE_VERSION);
	if (get8(s) != VM_CONFIGURATION)
		die("the stream has no configuration section");
	put8(s, VM_CONFIGURATION);
	configuration(s);

	while (!ram_done) {
		unsigned type = get8(s);
		uint32_t id = 0;
		char name[256];

		put8(s, type);
		switch (type) {
		case VM_SECTION_START:
		case VM_SECTION_FULL:
			id = get32(s);
			put32(s, id);
			get_name(s, name, true);
			put32(s, get32(s));	/* instance */
			put32(s, get32(s));	/* version */
			if (strcmp(name, "ram") != 0)
				/* Device state only comes after RAM's last section. */
				die("section %s comes before the end of RAM", name);
			ram_id = id;
			break;
		case VM_SECTION_PART:
		case VM_SECTION_END:
			id = get32(s);
			put32(s, id);
			if (id != ram_id)
				die("section %" PRIu32 " is not RAM's (%" PRIu32 ")", id, ram_id);
			ram_done = type == VM_SECTION_END;
			break;
		default:
			die("unexpected section type 0x%x before the end of RAM", type);
		}
		ram_section(s);
		if (get8(s) != VM_SECTION_FOOTER || get32(s) != id)
			die("RAM section %" PRIu32 " has no footer", id);
		put8(s, VM_SECTION_FOOTER);
		put32(s, id);
	}
	flush_run(s);

	/* The device state, then EOF and QEMU's JSON description: as they are. */
	unsigned char buf[65536];
	size_t n;

	while ((n = fread(buf, 1, sizeof buf, s->in)) > 0)
		put(s, buf, n);
	if (ferror(s->in))
		die("reading the stream: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	struct split s = { .in = stdin, .out = stdout };

	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: hutch-vmstate-split BLOCK RAMFILE < STREAM > STATE\n\n"
		       "Reads a QEMU 7.2 migration stream on stdin, writes the pages of RAM block\n"
		       "BLOCK page-aligned into the sparse file RAMFILE and the rest of the stream,\n"
		       "without those pages, to stdout. Run by hutch-vmd to hibernate a warm fork.\n");
		return 0;
	}
	if (argc != 3)
		die("usage: hutch-vmstate-split BLOCK RAMFILE < STREAM > STATE (see --help)");
	s.block = argv[1];
	s.ram_fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (s.ram_fd < 0)
		die("cannot create %s: %s", argv[2], strerror(errno));
	s.run = malloc(RUN_MAX);
	if (!s.run)
		die("out of memory");
	static char inbuf[1 << 20], outbuf[1 << 16];
	setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
	setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

	split(&s);
	if (fflush(stdout) != 0)
		die("writing the device state: %s", strerror(errno));
	if (close(s.ram_fd) < 0)
		die("closing the RAM file: %s", strerror(errno));
	fprintf(stderr, "hutch-vmstate-split: %" PRIu64 " MiB of %s split out\n", s.ram_bytes >> 20, s.block);
	return 0;
}

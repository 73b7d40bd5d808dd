/*
 * asciicast v2 recording of an interactive session: a JSON header line,
 * then one [seconds, "o", "text"] line per chunk of terminal output and
 * [seconds, "r", "COLSxROWS"] per window size change. `asciinema play`
 * replays it. Only output is recorded, never keystrokes (passwords typed
 * at prompts in the guest stay out of the log).
 *
 * Event text must be valid UTF-8: a multi-byte character split across two
 * reads is carried over to the next event, and bytes that are not UTF-8
 * become U+FFFD.
 */
#include "shell.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct shell_cast {
	FILE *f;
	struct timespec t0;
	unsigned char carry[4];	/* an incomplete UTF-8 sequence from the last chunk */
	size_t ncarry;
};

static double elapsed(const struct shell_cast *c)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - c->t0.tv_sec) + (double)(now.tv_nsec - c->t0.tv_nsec) / 1e9;
}

static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
}

int shell_cast_open(const char *path, unsigned cols, unsigned rows, const char *title,
		    struct shell_cast **out)
{
	struct shell_cast *c = calloc(1, sizeof *c);
	const char *term = getenv("TERM");

	if (!c)
		return -ENOMEM;
	c->f = fopen(path, "wxe");
	if (!c->f) {
		int e = -errno;

		free(c);
		return e;
	}
	clock_gettime(CLOCK_MONOTONIC, &c->t0);
	fprintf(c->f, "{\"version\":2,\"width\":%u,\"height\":%u,\"timestamp\":%lld,\"title\":\"",
		cols ? cols : 80, rows ? rows : 24, (long long)time(NULL));
	put_escaped(c->f, title);
	fprintf(c->f, "\",\"env\":{\"SHELL\":\"/bin/sh\",\"TERM\":\"");
	put_escaped(c->f, term ? term : "xterm");
	fprintf(c->f, "\"}}\n");
	*out = c;
	return 0;
}

/* Length of the UTF-8 sequence starting with byte B, 0 if B cannot start one. */
static size_t seq_len(unsigned char b)
{
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf)
		return 2;
	if (b >= 0xe0 && b <= 0xef)
		return 3;
	if (b >= 0xf0 && b <= 0xf4)
		return 4;
	return 0;
}

void shell_cast_output(struct shell_cast *c, const char *data, size_t len)
{
	unsigned char *buf;
	size_t n, i = 0;

	if (!c || !c->f || len == 0)
		return;
	n = c->ncarry + len;
	buf = malloc(n);
	if (!buf)
		return;
	memcpy(buf, c->carry, c->ncarry);
	memcpy(buf + c->ncarry, data, len);
	c->ncarry = 0;

	fprintf(c->f, "[%.6f,\"o\",\"", elapsed(c));
	while (i < n) {
		unsigned char b = buf[i];
		size_t l = seq_len(b), k;

		if (l == 1) {
			if (b == '"' || b == '\\')
				fprintf(c->f, "\\%c", b);
			else if (b < 0x20 || b == 0x7f)
				fprintf(c->f, "\\u%04x", b);
			else
				fputc(b, c->f);
			i++;
			continue;
		}
		if (l > 1 && i + l > n) {
			/* Possibly cut by the read: keep for the next chunk. */
			bool prefix_ok = true;

			for (k = 1; i + k < n; k++)
				prefix_ok = prefix_ok && (buf[i + k] & 0xc0) == 0x80;
			if (prefix_ok) {
				memcpy(c->carry, buf + i, n - i);
				c->ncarry = n - i;
				break;
			}
		}
		for (k = 1; l > 1 && k < l && i + k < n; k++)
			if ((buf[i + k] & 0xc0) != 0x80)
				break;
		if (l == 0 || k < l) {
			fputs("\xef\xbf\xbd", c->f);	/* U+FFFD */
			i++;
			continue;
		}
		fwrite(buf + i, 1, l, c->f);
		i += l;
	}
	fputs("\"]\n", c->f);
	free(buf);
}

void shell_cast_resize(struct shell_cast *c, unsigned cols, unsigned rows)
{
	if (c && c->f)
		fprintf(c->f, "[%.6f,\"r\",\"%ux%u\"]\n", elapsed(c), cols, rows);
}

void shell_cast_close(struct shell_cast *c)
{
	if (!c)
		return;
	if (c->f) {
		fflush(c->f);
		fsync(fileno(c->f));
		fclose(c->f);
	}
	free(c);
}

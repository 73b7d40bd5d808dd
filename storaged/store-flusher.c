/*
 * Flushes a writer asks for but need not wait for: an image whose write
 * log has reached [store] dirty_limit. The write that notices returns at
 * once (it runs on an NBD worker, which serves other connections too);
 * this thread flushes the image while writes go on into a new log file.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "store-internal.h"

/* Flushes each open image that asked, one at a time. */
static void flush_requested(struct store *s)
{
	for (;;) {
		struct image *img = NULL;

		pthread_mutex_lock(&s->lock);
		for (struct image *i = s->open_images; i && !img; i = i->next) {
			if (i->opens && atomic_exchange(&i->flush_wanted, false)) {
				img = i;
				img->opens++;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!img)
			return;
		int r = image_flush(img);
		if (r < 0 && r != -ESHUTDOWN)
			log_warn("image %s: flushing its full write log failed: %s; its writes stay logged",
				 img->name, strerror(-r));
		image_close(img);
	}
}

static void *flusher_main(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->flusher_lock);
	while (!s->flusher_quit) {
		if (!s->flusher_pending) {
			pthread_cond_wait(&s->flusher_cond, &s->flusher_lock);
			continue;
		}
		s->flusher_pending = false;
		pthread_mutex_unlock(&s->flusher_lock);
		flush_requested(s);
		pthread_mutex_lock(&s->flusher_lock);
	}
	pthread_mutex_unlock(&s->flusher_lock);
	return NULL;
}

int flusher_start(struct store *s)
{
	int r = pthread_create(&s->flusher, NULL, flusher_main, s);

	if (r != 0)
		return -r;
	s->flusher_started = true;
	return 0;
}

void flusher_stop(struct store *s)
{
	if (!s->flusher_started)
		return;
	pthread_mutex_lock(&s->flusher_lock);
	s->flusher_quit = true;
	pthread_cond_signal(&s->flusher_cond);
	pthread_mutex_unlock(&s->flusher_lock);
	pthread_join(s->flusher, NULL);
	s->flusher_started = false;
}

void flusher_request(struct image *img)
{
	struct store *s = img->s;

	if (atomic_exchange(&img->flush_wanted, true))
		return;	/* asked already */
	pthread_mutex_lock(&s->flusher_lock);
	s->flusher_pending = true;
	pthread_cond_signal(&s->flusher_cond);
	pthread_mutex_unlock(&s->flusher_lock);
}

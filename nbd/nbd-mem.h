/* An in-memory backend: for the fuzz target and the protocol tests' server. */
#ifndef HUTCH_NBD_MEM_H
#define HUTCH_NBD_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "nbd-server.h"

struct nbd_mem;

struct nbd_mem *nbd_mem_new(void);
/* Memory is reserved lazily (anonymous mapping): a large size is cheap until written. */
int nbd_mem_add(struct nbd_mem *m, const char *name, uint64_t size, bool readonly);
/* Writes wait while a file at path exists (at most a minute): lets a test
 * hold them in flight and see what the server does meanwhile. */
int nbd_mem_hold_writes(struct nbd_mem *m, const char *path);
/* Fills be with the operations; be->opaque is m. */
void nbd_mem_backend(struct nbd_mem *m, struct nbd_backend *be);
void nbd_mem_free(struct nbd_mem *m);

#endif

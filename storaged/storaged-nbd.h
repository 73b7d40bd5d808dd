/* hutch-storaged's NBD service: the store's images as NBD exports. */
#ifndef HUTCH_STORAGED_NBD_H
#define HUTCH_STORAGED_NBD_H

struct store;
struct hutch_config;
struct nbd_server;

/* Listens on $HOME/run/nbd.sock (and TCP when configured) and serves
 * every image as an export named like it. */
int storaged_nbd_start(struct store *s, const struct hutch_config *cfg, const char *home,
		       struct nbd_server **out);
/* Stops accepting, finishes in-flight requests, closes every connection. */
void storaged_nbd_stop(struct nbd_server *srv);

#endif

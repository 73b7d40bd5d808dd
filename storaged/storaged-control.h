/* hutch-storaged's control socket: the operations of docs/control.md on the store. */
#ifndef HUTCH_STORAGED_CONTROL_H
#define HUTCH_STORAGED_CONTROL_H

struct store;
struct storaged_control;

/*
 * Listens on PATH (a stale socket file is replaced: the caller already
 * holds the store's lock, so no other daemon uses it). Mode 0600, or 0660
 * with group "hutch" when that group exists. One thread accepts; each
 * connection gets its own thread.
 */
int storaged_control_start(struct store *s, const char *path, struct storaged_control **out);
/* Stops accepting, ends every connection (waiting for the operation each
 * one is running), removes the socket file. NULL is fine. */
void storaged_control_stop(struct storaged_control *c);

#endif

/*
 * One config file for all of hutch: $HUTCH_HOME/hutch.conf (INI, parsed
 * with inih). Optional; every key has a default and a doc line in the key
 * table in config.c, which `--help-config` prints. An unknown section or
 * key, or a bad value, is an error naming the file and line.
 *
 * Each component owns its section: add keys to the struct below and to
 * that section's table in config.c.
 */
#ifndef HUTCH_CONFIG_H
#define HUTCH_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct hutch_config {
	char path[4096];		/* the file read, or "" when there was none */

	struct {
		uint32_t chunk_size;	/* for a store created on first start */
		uint64_t dirty_limit;
		uint64_t pack_size;
		unsigned flush_interval_ms;
	} store;

	struct {
		char log_level[16];	/* debug, info, warning, error */
	} storaged;

	struct {
		char tcp_listen[256];	/* "" = unix socket only; else ADDR:PORT */
		unsigned workers;
		uint32_t max_request;
		unsigned max_inflight;	/* per connection, then back-pressure */
		uint32_t inline_max;	/* requests this small run on their worker */
		uint32_t send_buffer;	/* SO_SNDBUF of unix connections, 0 = kernel's */
	} nbd;

	struct {
		char log_level[16];
		char qemu[256];		/* the QEMU system emulator to run */
		char accel[8];		/* auto (probe KVM, else TCG), kvm, tcg */
		unsigned stop_timeout_ms;	/* ACPI shutdown, then kill */
		unsigned boot_timeout_ms;	/* start --wait: until the guest's SSH answers */
		unsigned reconnect_delay;	/* seconds QEMU retries NBD when storaged goes away */
		unsigned uid_base;	/* each VM's QEMU runs as uid_base + slot */
		unsigned uid_count;
		unsigned tcg_tb_size;	/* MiB of TCG translation cache per VM; 0 = QEMU's */
	} vmd;

	struct {
		bool enabled;		/* hutch-vmd puts idle VMs to sleep */
		unsigned window_ms;	/* activity is measured over this long */
		unsigned cpu_percent;	/* QEMU CPU time, percent of one host CPU */
		uint64_t disk_rate;	/* bytes/s read+written on the VM's disk */
		uint64_t net_rate;	/* bytes/s of other QEMU I/O (network) */
		unsigned pause_after_ms;	/* idle this long: paused */
		unsigned hibernate_after_ms;	/* idle this long: hibernated into the store */
	} idle;
};

void config_defaults(struct hutch_config *c);
/* Loads PATH, or $HOME_DIR/hutch.conf when PATH is NULL (a missing default
 * file is not an error). On error returns -EINVAL and writes
 * "FILE:LINE: what is wrong" into err. */
int config_load(const char *home_dir, const char *path, struct hutch_config *c,
		char *err, size_t errsz);
/* Every section and key with its default and meaning. */
void config_print_reference(FILE *out);

#endif

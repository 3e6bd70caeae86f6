/* Shared helpers of the `ploop` tool: argument checks, one-line errors, the command table. */
#ifndef PLOOP_CLI_H
#define PLOOP_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "../ploop.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
	bool listing;	/* what it prints is its result: output that cannot be written fails it */
};

extern const char *prog_cmd;

/* Prints "ploop CMD: message" on stderr and returns the error's status (the exit code). */
int report_error(const struct ploop_error *err);
__attribute__((format(printf, 2, 3)))
int fail(int status, const char *fmt, ...);
int usage_error(const char *msg);
int parse_size_arg(const char *s, uint64_t *sectors);
int parse_cluster_arg(const char *s, uint32_t *sectors);
/* Exactly @n positional arguments remain. */
int want_args(int argc, int n);

int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_grow(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_restore_descriptor(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_snapshot_list(int argc, char **argv);
int cmd_snapshot_merge(int argc, char **argv);
int cmd_snapshot_delete(int argc, char **argv);
int cmd_snapshot_switch(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_snapshot_mount(int argc, char **argv);
int cmd_snapshot_umount(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_compact(int argc, char **argv);

#endif

/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/*
 * The livesnap CLI's subcommands. main() in cli/livesnap.c dispatches on argv[1] and calls the verb
 * with argc/argv shifted so that argv[0] is the verb's name; each verb parses its own options with
 * getopt_long() and returns the process exit status.
 *
 * Exit statuses (documented in livesnap(1)):
 *   0  success
 *   1  the operation failed (dump refused or failed, I/O error, ...)
 *   2  bad usage (unknown option, missing or malformed argument)
 *   3  the image is invalid: corrupt, truncated, not an image, unsupported version
 *   4  cat: some byte of the range is not in the image (not mapped, discarded, or not saved)
 *
 *   livesnap dump PID [-o FILE] [--buffer SIZE] [--rate SIZE] [--compress[=LEVEL]] [--json]
 *   livesnap info FILE [--json]
 *   livesnap verify FILE [--json]
 *   livesnap cat FILE ADDR LEN          ADDR and LEN decimal or 0x-hex; raw bytes on stdout
 *
 * Through livesnapd: checkpoint PID [--label L] [--wait] [--json], list [--json], show ID [--json],
 * delete ID, jobs [--json], cancel JOB.
 */

enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,
        EXIT_USAGE = 2,
        EXIT_BAD_IMAGE = 3,
        EXIT_NOT_IN_IMAGE = 4,
};

int verb_dump(int argc, char *argv[]);
int verb_info(int argc, char *argv[]);
int verb_verify(int argc, char *argv[]);
int verb_cat(int argc, char *argv[]);
int verb_export(int argc, char *argv[]);

/* Through livesnapd (cli/client.c). */
int verb_checkpoint(int argc, char *argv[]);
int verb_list(int argc, char *argv[]);
int verb_show(int argc, char *argv[]);
int verb_delete(int argc, char *argv[]);
int verb_jobs(int argc, char *argv[]);
int verb_cancel(int argc, char *argv[]);

/* Options of a verb that takes n_args arguments, --help (prints usage, returns -1) and, if ret_json is
 * non-NULL, --json. Returns EXIT_OK, or EXIT_USAGE after saying what is wrong. */
int parse_verb_args(int argc, char *argv[], const char *usage, int n_args, bool *ret_json);

/* getopt_long() that complains in our form, one line on stderr ("livesnap: dump: unknown option
 * '--bogus' (see 'livesnap dump --help')"), rather than in getopt's, which names only the verb. argv[0]
 * is the verb. Returns what getopt_long() returns: '?' after a complaint. */
struct option;
int verb_getopt(int argc, char *argv[], const char *shortopts, const struct option *longopts);

/* "livesnap: " prefix, message, newline, on stderr. */
void log_error(const char *fmt, ...) __attribute__((__format__(printf, 1, 2)));

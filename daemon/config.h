/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * livesnapd's configuration: /etc/livesnap/livesnap.json by default. Every key is optional; an unknown
 * key, a value of the wrong type or out of range, or a syntax error is refused with the file, the line
 * and the reason, so a typo never silently falls back to a default. See livesnap.json(5).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH "/etc/livesnap/livesnap.json"

typedef struct Config {
        char *store_dir;                  /* "store_dir", default /var/lib/livesnap */
        uint64_t buffer_size;             /* "buffer_size", bytes or "64M"; default 64 MiB */
        uint64_t rate_limit;              /* "rate_limit", bytes/s or "100M"; 0: unlimited */
        int compress_level;               /* "compress_level", 0 (none) .. 19 */
        unsigned max_jobs;                /* "max_jobs", in total; default 4 */
        unsigned max_jobs_per_user;       /* "max_jobs_per_user"; default 2 */
        unsigned max_checkpoints_per_user; /* "retention": {"max_checkpoints_per_user"}; 0: unlimited */
        uint64_t max_age_sec;             /* "retention": {"max_age_hours"}; 0: forever */
} Config;

void config_init(Config *c);
void config_done(Config *c);

/* Parses text (the contents of the file named path, used in messages). On error returns -EINVAL (or
 * -ENOMEM) and writes "PATH:LINE: reason" into err. */
int config_parse(Config *c, const char *path, const char *text, size_t len, char *err, size_t errlen);

/* Reads and parses path. A missing file is not an error when missing_ok (the defaults apply). */
int config_load(Config *c, const char *path, bool missing_ok, char *err, size_t errlen);

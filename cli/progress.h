/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A one-line progress bar on stderr, drawn only when stderr is a terminal (and not with --json). */

#include <stdbool.h>
#include <stdint.h>

typedef struct ProgressBar ProgressBar;

/* label: e.g. "Saving" or "Verifying". enabled=false makes every call a no-op. */
ProgressBar *progress_new(const char *label, bool enabled);
/* Redraws at most ~10 times a second: "Saving  [#####     ]  45%  1.2 GiB / 2.6 GiB  310 MiB/s". */
void progress_update(ProgressBar *p, uint64_t done, uint64_t total);
/* Clears the line. Returns NULL. Accepts NULL. */
ProgressBar *progress_free(ProgressBar *p);

/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The options of org.livesnap1.Manager.Checkpoint and CheckpointUnit: an a{sv} whose keys are
 *
 *   label           s  at most STORE_LABEL_MAX bytes of UTF-8, no control characters, no '/'
 *   buffer_size     t  bytes of saved pages in flight, 4 MiB to 64 GiB
 *   rate_limit      t  background copy rate in bytes per second (0: unlimited)
 *   compress_level  u  zstd level, 0 (none) to 19
 *
 * Any other key, a value of another type or out of range is the caller's mistake: it is refused with
 * org.livesnap1.Error.InvalidArgument naming the option. A key given twice takes its last value.
 * Kept apart from livesnapd.c so that a fuzz target (tests/fuzz/fuzz-options.c) can drive it.
 */

#include <systemd/sd-bus.h>

#include "livesnap.h"

#define OPTIONS_ERROR_INVALID "org.livesnap1.Error.InvalidArgument"
#define OPTIONS_BUFFER_MIN    (4ULL << 20)
#define OPTIONS_BUFFER_MAX    (64ULL << 30)
#define OPTIONS_COMPRESS_MAX  19

/* Reads the a{sv} at msg's read position. opts holds the defaults and *label the current label (may be
 * NULL); on success both are updated with what the caller gave (the old *label freed) and msg is past the
 * array. Returns 0 on success; -EINVAL with error set to InvalidArgument if the caller got an option
 * wrong; another negative errno (error not set) if msg is not at an a{sv} or memory ran out. On failure
 * neither opts nor *label is touched. */
int checkpoint_options_read(sd_bus_message *msg, LivesnapDumpOptions *opts, char **label,
                            sd_bus_error *error);

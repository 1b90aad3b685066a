/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Export of an image as an ELF core file, in the layout gdb's gcore writes: PT_NOTE first (NT_PRPSINFO;
 * per thread NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE, NT_SIGINFO, main thread first; NT_AUXV; NT_FILE),
 * then one PT_LOAD per run of a mapping. Runs the image does not hold as data (discarded or unsaved
 * pages, file-backed pages left to NT_FILE, special mappings) get p_filesz 0: never written as zeros.
 */

#include <stddef.h>
#include <stdint.h>

#include "image.h"

typedef struct CorePlan {
        size_t n_segments;     /* PT_LOADs */
        uint64_t bytes;        /* memory bytes written into the file */
        size_t n_threads;
} CorePlan;

/* What an export of r would contain, without writing anything. */
int core_plan(ImageReader *r, CorePlan *ret);

/* Writes the core to fd (positioned at 0, regular file or pipe: written sequentially). progress may be
 * NULL. Returns 0 or a negative errno; err gets a message. */
int core_write(ImageReader *r, int fd, void (*progress)(void *userdata, uint64_t done, uint64_t total),
               void *userdata, char *err, size_t errlen);

/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * liblivesnap: live, point-in-time memory checkpoints of running processes.
 *
 * The public API of the shared library. Everything else in lib/ is internal.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIVESNAP_DEFAULT_BUFFER_SIZE (64ULL << 20)

typedef enum LivesnapPhase {
        LIVESNAP_PHASE_ATTACHING, /* seizing threads */
        LIVESNAP_PHASE_FROZEN,    /* every thread stopped, memory protected, not yet resumed */
        LIVESNAP_PHASE_COPYING,   /* target resumed, pages being saved */
        LIVESNAP_PHASE_FINISHING, /* all pages saved; writing index, syncing */
        LIVESNAP_PHASE_PREPARING, /* target running, its memory being protected ahead of the freeze
                                   * (comes between ATTACHING and FROZEN) */
        _LIVESNAP_PHASE_MAX,
} LivesnapPhase;

typedef struct LivesnapDumpOptions {
        uint64_t buffer_size;  /* bytes of copied pages in flight; 0: LIVESNAP_DEFAULT_BUFFER_SIZE */
        uint64_t rate_limit;   /* background copy rate in bytes/s; 0: unlimited (faults never wait) */
        int compress_level;    /* 0: none; 1..19: zstd */
        bool no_sync;          /* do not fsync the image (tests) */

        /* Called from the dumping thread; may be NULL. */
        void (*progress)(void *userdata, uint64_t bytes_done, uint64_t bytes_total);
        void (*phase)(void *userdata, LivesnapPhase phase);
        void *userdata;
} LivesnapDumpOptions;

typedef struct LivesnapDumpResult {
        uint64_t freeze_us;         /* from the first thread stopped to the last resumed */
        uint64_t elapsed_ms;        /* whole dump */
        uint64_t pages_saved;       /* pages stored as data */
        uint64_t pages_zero;        /* pages that were zero at the instant (not stored) */
        uint64_t pages_discarded;   /* discarded by the target before they could be saved */
        uint64_t pages_unsaved;     /* pages the engine could not save (marked so in the image) */
        uint64_t pages_faulted;     /* pages saved on the target's write faults */
        uint64_t faults;            /* write faults served */
        uint64_t threads;           /* threads at the instant */
        uint64_t image_bytes;       /* size of the image file */
        uint64_t peak_buffer_bytes; /* most bytes of copied pages held at once */
        uint64_t throttle_us;       /* total time faults waited for buffer space */
        char error[512];            /* on failure: one line saying what went wrong */
        uint64_t prepare_us;        /* protecting memory before the freeze, target running (0: none) */
        uint64_t prepare_passes;    /* passes re-protecting pages the target wrote meanwhile */
        uint64_t pages_reprotected; /* of which in the freeze itself */
        uint64_t private_pages_early;  /* private pages of file mappings copied before the freeze, unchanged */
        uint64_t private_pages_frozen; /* private pages of file mappings copied inside the freeze */
} LivesnapDumpResult;

/* Takes a checkpoint of process pid into the image file path. On failure returns a negative errno and
 * sets result->error; the target is left running and unprotected, and nothing is left at path. Known
 * refusals: -ESRCH (no such process), -EPERM (may not ptrace it), -EINVAL (the caller itself, a kernel
 * thread), -ECHILD (a zombie), -EBUSY (already traced), -EOPNOTSUPP (seccomp filter that cannot be
 * suspended, or a kernel lacking a feature). */
int livesnap_dump(pid_t pid, const char *path, const LivesnapDumpOptions *opts, LivesnapDumpResult *result);

const char *livesnap_phase_to_string(LivesnapPhase phase);

#ifdef __cplusplus
}
#endif

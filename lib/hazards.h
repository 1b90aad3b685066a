/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Memory that uffd write-protect cannot make point-in-time, found from /proc.
 *
 * Pinned ranges: pages pinned long-term before the freeze (io_uring fixed buffers) are written by the
 * kernel through the pin, without a write fault, so the engine must copy them while the target is
 * stopped. io_uring is the only pinner that says what it pinned (in the ring's fdinfo, "UserBufs:");
 * RDMA memory regions, VFIO DMA mappings and in-flight O_DIRECT are not visible from /proc.
 *
 * Shared elsewhere: write-protect works on the target's page tables only; a shared mapping (MAP_SHARED
 * file, memfd, /dev/shm, SysV shm, MAP_SHARED|MAP_ANONYMOUS inherited by fork) that another process
 * maps, or holds open for writing, can change under the snapshot without any fault.
 *
 * Each /proc reader has a parser beside it that takes the file's text, for the unit tests
 * (tests/test-hazards.c).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "procfs.h"

/* ---- pinned ranges ---- */

typedef struct HazardRange {
        uint64_t start, end; /* [start, end), page aligned */
        char *reason;        /* e.g. "io_uring fixed buffer (fd 5)"; several joined by "; " after a merge */
} HazardRange;

void hazard_ranges_free(HazardRange *r, size_t n);

/* One registered buffer as the ring's fdinfo lists it: [addr, addr + len), not page aligned. */
typedef struct HazardBuf {
        uint64_t addr, len;
} HazardBuf;

/* Parses the text of /proc/PID/fdinfo/N of an io_uring fd: the "UserBufs:\tN" line and the N lines
 * after it ("%5u: 0x%llx/%u", or "%5u: <none>" for an empty slot of a sparse table), indices 0..N-1 in
 * order. Empty slots and zero-length buffers are left out. Returns:
 *   0          *ret (malloc'ed, may be NULL when *ret_n is 0) and *ret_n set;
 *   -EAGAIN    no "UserBufs:" line, or fewer entries than announced: the kernel prints them only when it
 *              gets the ring's lock without waiting; read again;
 *   -EBADMSG   anything malformed (a buffer that wraps around, an entry out of order, junk). */
int hazards_iouring_fdinfo_parse(const char *text, HazardBuf **ret, size_t *ret_n);

/* Sorts ranges, widens each to page boundaries, merges overlapping and adjacent ones (joining distinct
 * reasons) and drops empty ones, in place; frees the reasons of merged entries. */
int hazard_ranges_normalize(HazardRange *r, size_t *n);

/* Every range of pid's address space that livesnap can tell is pinned: the fixed buffers of each
 * io_uring fd pid holds, clipped to pid's mappings (a ring passed from another process may list another
 * mm's addresses), page aligned and merged. Returns 0 with *ret and *ret_n (possibly 0 ranges), -ESRCH if
 * pid is gone, -EAGAIN if a ring's fdinfo stayed incomplete after a few reads (its lock was busy), or
 * another negative errno. */
int hazards_pinned_ranges(pid_t pid, HazardRange **ret, size_t *ret_n);

/* The image's form of the ranges, for the engine's META section ("pinned"): a JSON array of
 * {"start": N, "end": N, "reason": "..."} (addresses as numbers, like the mappings' in `info --json`).
 * Returns 0 or -ENOMEM. */
int hazards_pinned_to_json(const HazardRange *r, size_t n, json_object **ret);

/* ---- shared with other processes ---- */

#define HAZARD_SHARED_PIDS_MAX 8

typedef struct HazardShared {
        uint32_t dev_major, dev_minor;
        uint64_t inode;
        size_t n_pids;                      /* other processes that map it or hold it open for writing */
        pid_t pids[HAZARD_SHARED_PIDS_MAX]; /* the first of them (up to HAZARD_SHARED_PIDS_MAX), sorted */
        bool self_fd;                       /* the target itself holds a writable fd: its own write(2)s
                                             * change the mapping without a fault too */
} HazardShared;

/* Reads one /proc/N/maps and /proc/N/fd of every other process and reports, for each distinct
 * (dev, inode) of maps[] that is shared ('s'), the processes other than pid that map it shared or hold
 * it open for writing. Only objects used by at least one other process are returned (self_fd alone
 * does not make an entry). maps is pid's own maps (proc_maps_read). Processes that vanish or cannot
 * be read are skipped. Returns 0 with *ret (sorted by dev, inode) and *ret_n, or a negative errno. */
int hazards_shared_elsewhere(pid_t pid, const ProcMap *maps, size_t n_maps, HazardShared **ret,
                             size_t *ret_n);

/* The image's form, for META ("shared_elsewhere"): a JSON array of {"dev": "00:01", "inode": N,
 * "pids": [...], "n_pids": N, "self_fd": bool}. Returns 0 or -ENOMEM. */
int hazards_shared_to_json(const HazardShared *s, size_t n, json_object **ret);

/* Parses the open flags of an fdinfo text ("flags:\t0100002", octal). Returns 0 or -EBADMSG. */
int hazards_fdinfo_flags_parse(const char *text, int *ret_flags);

/* The entry for a mapping, or NULL: for the engine, to set IMAGE_VMA_NOT_PIT on each matching VMA. */
const HazardShared *hazards_shared_find(const HazardShared *s, size_t n, const ProcMap *m);

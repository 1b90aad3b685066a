/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The snapshot engine.
 *
 * Prepare (the target runs): a userfaultfd is created inside the target by syscall injection and pulled
 * out with pidfd_getfd(), with UFFD_FEATURE_WP_UNPOPULATED, so protecting a range protects its empty
 * pages too. A walker thread registers every mapping and write-protects it in slices of
 * PREPARE_SLICE, recording after each slice which pages are present (PAGEMAP_SCAN: protect first, so a
 * page populated in between faults), while the fault handler serves the target's faults. A write fault
 * in this phase saves nothing: the page is released (un-protected), marked PG_DIRTY and PENDING, and
 * queued on Engine.dirty; one in the slice being covered waits for its step (see walker_thread). Then
 * passes re-protect the dirty pages until few are left (DIRTY_LEFT) or passes stop paying, and a last one
 * runs right before the freeze. Events move the bookkeeping as usual; MADV_DONTNEED drops the pages and
 * their protection, so a REMOVE marks its range dirty too. Threads reaching their exit stay in their exit
 * stop until after the instant (the kernel's last writes must not meet a page re-protected behind them).
 *
 * Freeze (the instant T): every thread is stopped with ptrace and the handler parked; the map is read
 * again; mappings or parts of mappings the prepare phase did not cover (new, grown) are registered,
 * protected and scanned now; the dirty pages are re-protected. So the freeze costs what changed during
 * the prepare phase, not what the target holds. Mappings that cannot be registered (private file
 * mappings: .data, .got, relro) have their private pages copied while the target is stopped, except
 * what a second uffd, with WP_ASYNC, tracked since the prepare phase: there, the pages copied early
 * stand unless the target wrote them since (see "private file mappings").
 * Registers, auxv and the map are captured. Resume. Without WP_UNPOPULATED (older kernels), all of
 * this happens inside the freeze, as the prepare phase would leave empty pages unprotected.
 *
 * Copy: three threads besides the caller's.
 *   - the fault handler reads the uffd: a write fault saves the surrounding chunk (16 KiB, growing
 *     to 64 KiB along a sequential writer, or the whole 2 MiB of a huge page) and un-protects it,
 *     which wakes the writer; events move or drop the
 *     bookkeeping (REMAP, UNMAP) or are pre-empted (REMOVE: the madvise range is saved before the event
 *     is read, because reading it lets the kernel zap the pages);
 *   - the copier, at a lower priority (COPIER_NICE), walks every page still pending in 2 MiB windows
 *     and leaves them protected: a window it saved is un-protected whole by the first fault in it,
 *     from the target's CPU (see "page-table work beside the target"); when no page is left it
 *     unregisters the ranges slice by slice (release_saved), so the close has nothing to undo;
 *   - the image writer drains the bounded buffer to disk.
 * Protection changes (the prepare walk, un-protecting for faults, the release) run on the CPU the
 * target last ran on: see "page-table work beside the target".
 * The caller's thread is the ptrace supervisor (ptrace is per tracer thread): it passes signals on,
 * attaches new threads, and saves and un-protects an exiting thread's tid word and robust futexes
 * before the kernel writes them (a write there on a protected page would be silently dropped).
 *
 * Page states, under Engine.lock: PENDING (present at T, not yet saved), BUSY (claimed by a saver),
 * NONE (saved, or nothing to save). A saver claims a window (waiting for other savers' BUSY pages in
 * it), copies outside the lock, then commits under the lock: only if no address-space event was read
 * since the claim (Engine.epoch) and the un-protect ioctl succeeds (it fails with EAGAIN while an event
 * is in flight) is the copy known to come from the pages the bookkeeping names; otherwise the claim is
 * reverted and the data dropped. The handler, after reading an event, bumps the epoch, waits for every
 * BUSY page to be committed or reverted, and blocks new claims until it has updated the bookkeeping.
 *
 * The throttle: copied pages sit in a buffer of at most opts->buffer_size bytes until the writer has
 * written them; a saver waits for room before copying, so a target writing faster than the disk waits
 * in its write fault, and the engine's memory stays bounded whatever the target's size.
 *
 * Failure: the target is never left protected or stopped. Closing the uffd (the target holds no copy)
 * clears every write-protect bit and wakes every blocked thread; detaching ptrace resumes the threads.
 * The kernel does both if this process is killed.
 *
 * Without pidfds: valgrind 3.19 fails pidfd_open() and pidfd_getfd() with ENOSYS, and the engine runs
 * under it all the same (tests/integration/valgrind-engine.sh). Without pidfd_open() the Target has no
 * pidfd, and engine_fail_mm_gone() tells an exit from an exec by the leader turning zombie (or leaving
 * /proc). Without pidfd_getfd() (probed once: EBADF for fd -1 where it exists) the injector has the
 * target send the uffd as SCM_RIGHTS to an abstract AF_UNIX socket bound before the fork, and the engine
 * accepts it only if SO_PASSCRED names the target as sender and the fd is a userfaultfd; a target in
 * another network namespace cannot reach the address and is refused. The /dev/userfaultfd path pulls
 * its socketpair end out the same way. Only ENOSYS takes these paths; any other error fails as before.
 *
 * Environment, for tests and comparisons: LIVESNAP_NO_PREPARE does everything inside the freeze, as on
 * kernels without WP_UNPOPULATED; LIVESNAP_NO_ASYNC copies private file mappings whole inside the freeze,
 * as without WP_ASYNC (or without pidfd_getfd(), or for a target that needs /dev/userfaultfd: the second
 * uffd is only made where it is cheap); LIVESNAP_NO_PIDFD_GETFD=1 takes the path without pidfd_getfd()
 * as if it were missing (tests/integration/no-pidfd-getfd.sh); LIVESNAP_INDEX_MEMORY=BYTES makes the
 * image writer spill its index to disk early (tests/integration/sweep.sh, bus.sh).
 */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "compat.h"
#include "hazards.h"
#include "image.h"
#include "livesnap.h"
#include "procfs.h"
#include "ptrace.h"
#include "util.h"

/*
 * A write fault saves the window around the faulting page: FAULT_WINDOW_MIN where the target writes here
 * and there (a Redis SET dirties a page or two at random: saving more around them only fills the buffer
 * ahead of the disk, and the target then waits for room), doubled up to FAULT_WINDOW_MAX while each fault
 * lands where the last one's window ended (a sequential writer would otherwise fault once per small
 * window). See bench/README.md, "The fault window".
 */
#ifndef FAULT_WINDOW_MIN_KB
#define FAULT_WINDOW_MIN_KB 16
#endif
#ifndef FAULT_WINDOW_MAX_KB
#define FAULT_WINDOW_MAX_KB 64
#endif
/*
 * A benchmark's knob, 0 in every build we ship: each write fault's handler first spins this many
 * microseconds, which makes the round trip that much dearer (make CFLAGS="-O2 -g -DFAULT_EXTRA_US=15"). It
 * shows what the fault's cost does to the target's load: bench/README.md, "What the fault's cost does to
 * the load".
 */
#ifndef FAULT_EXTRA_US
#define FAULT_EXTRA_US 0
#endif
#define FAULT_WINDOW_MIN ((uint64_t)FAULT_WINDOW_MIN_KB << 10)
#define FAULT_WINDOW_MAX ((uint64_t)FAULT_WINDOW_MAX_KB << 10)
#define COPY_WINDOW HPAGE_SIZE_2M
#define FOLLOW_EVERY_US 10000 /* how often the fault handler moves to where the target runs */
#define FREEZE_PREFAULT (4UL << 20)
#define UFFD_MSG_BATCH 64
#define ROBUST_LIST_LIMIT 2048

enum {
        PG_NONE = 0,
        PG_PENDING = 1,
        PG_BUSY = 2,
        PG_STATE_MASK = 0x0f,
        PG_DIRTY = 0x40, /* before the instant: released by a fault, not protected until re-protected */
        PG_HUGE = 0x80,  /* part of a huge page: saved and un-protected 2 MiB at a time */
        PG_FLAGS = PG_DIRTY | PG_HUGE,
};

/* Pages the engine tracks, at their current address [start, end). After an mremap the pages move
 * but keep the address they had at the snapshot instant, image_start: that is where the image puts them. */
typedef struct Range {
        uint64_t start, end;
        uint64_t image_start;
        uint8_t *pages; /* one byte per 4 KiB page */
} Range;

static uint64_t range_image_addr(const Range *rg, uint64_t addr)
{
        return rg->image_start + (addr - rg->start);
}

/* Pages copied as one span; keep[i] says whether page i is data of the snapshot (a span may cover pages
 * that were not present at T or were saved before: those are not written). */
typedef struct Chunk {
        struct Chunk *next;
        uint64_t vaddr;
        size_t npages;
        uint8_t *keep;
        uint8_t *data;  /* in Engine.pool, at page index data_page */
        size_t data_page;
} Chunk;

/* A private file mapping tracked since the prepare phase by the second, WP_ASYNC uffd: its private
 * pages were protected, then copied into held chunks; at the instant only what the target wrote since is
 * copied again. */
typedef struct PrivTrack {
        uint64_t start, end, pgoff, inode;
        unsigned dev_major, dev_minor;
        bool watched;            /* protected whole with no private page: every private page is written since */
        Chunk *held, *held_tail; /* in address order, in the buffer but not handed to the writer */
} PrivTrack;

/* A mapping of a kind the sync uffd does not take (UFFDIO_REGISTER said EINVAL in the prepare phase: a
 * private file mapping, say), as /proc/PID/maps showed it. */
typedef struct Unregistrable {
        uint64_t start, end, pgoff, inode;
        unsigned dev_major, dev_minor;
        uint32_t prot;
} Unregistrable;

/* What a fault's save did, for LIVESNAP_DEBUG's counts. */
typedef enum FaultKind {
        FAULT_SAVED,        /* saved pages of its window */
        FAULT_WINDOW_FREED, /* nothing to save: un-protected a 2 MiB window the copier had saved */
        FAULT_OTHER,        /* neither (not a page we track, overtaken by an event, ...) */
        _FAULT_KIND_MAX,
} FaultKind;

typedef struct Spans {
        uint64_t (*v)[2];
        size_t n, allocated;
} Spans;

typedef struct Engine {
        Target *target;
        int uffd;
        int async_uffd; /* WP_ASYNC: tracks writes to private file mappings, or -1 */
        ImageWriter *writer;
        const LivesnapDumpOptions *opts;
        const char *path; /* the image's name, for messages */
        uint64_t probe_addr;
        int pagemap_fd;
        uint64_t hugetlb_size;
        bool prepare; /* the kernel has WP_UNPOPULATED: protect before the freeze */
        bool follow;  /* long runs of protection changes move to the target's CPU (see follow_target) */
        _Atomic pid_t fault_tid; /* the thread of the last fault read (UFFD_FEATURE_THREAD_ID), or 0 */
        cpu_set_t cpus; /* the CPUs this process may use, to go back to */
        int handler_fd; /* eventfd: wakes the fault handler (park requests) */

        /* The prepare phase, under lock. */
        bool pre;             /* before the instant: faults release pages rather than save them */
        bool park, parked;    /* the freeze asks the handler to stand still; it says it does */
        bool idle;            /* the handler is in (or entering) poll(): it parks when it wakes */
        uint64_t *dirty;      /* pages marked PG_DIRTY, in no order; may hold stale addresses */
        size_t n_dirty, n_dirty_allocated;
        bool dirty_lost;      /* the list could not grow: rebuild it from the flags */
        ProcMap *pre_maps;    /* the map the walk follows */
        size_t n_pre_maps, pre_next_map;
        uint64_t pre_next_addr; /* 0: the next mapping is not registered yet */
        bool pre_hugetlb, pre_walked, pre_rewalked, pass_active, pass_final;
        unsigned pass_enoent;  /* re-protects in a row that met a mapping gone (see prepare_work) */
        uint64_t pass_start, settle_until;
        size_t last_dirty;
        atomic_bool pre_ready; /* the walker has protected everything and converged */
        pthread_t walker;      /* runs prepare_work() while the handler serves faults (see walker_thread) */
        bool walking;          /* under lock: a step of prepare_work() is under way; events wait for it */
        uint64_t step_lo, step_hi; /* under lock: what the step is covering; faults there wait for it */
        bool step_deferred;    /* under lock: a fault waited for the step, wake the handler after it */
        PrivTrack *priv;       /* private file mappings tracked by async_uffd */
        size_t n_priv;
        Unregistrable *unreg;  /* mappings the sync uffd does not take, in address order: the freeze does not try */
        size_t n_unreg;
        uint64_t priv_held_pages, priv_held_max;
        uint64_t priv_early;                  /* held pages whose early copy stood at the instant */
        uint64_t priv_refreshed, priv_copied; /* in the freeze: held pages read again, others copied */
        unsigned pre_passes;
        uint64_t pre_faults, pages_reprotected;

        /* Bookkeeping. */
        pthread_mutex_t lock;
        pthread_cond_t cond; /* BUSY pages resolved, event processing done */
        Range *ranges;
        size_t n_ranges;
        uint64_t epoch;
        bool in_event;
        uint64_t pages_pending;
        uint64_t pages_busy; /* claimed by a saver, not yet committed or reverted */
        _Atomic FaultKind fault_kind; /* what the last SAVE_FAULT did (the supervisor saves too, rarely) */
        struct { uint64_t n, us, over100, over500, max; } fault_stats[_FAULT_KIND_MAX]; /* LIVESNAP_DEBUG */
        uint64_t fault_run_end, fault_run_window; /* the last fault's window: where it ended, its size */
        ImageHole *holes;
        size_t n_holes, n_holes_allocated;

        /* The buffer between savers and the writer. */
        pthread_mutex_t buf_lock;
        pthread_cond_t buf_cond;
        pthread_cond_t writer_cond; /* the writer waits here for chunks */
        uint64_t queued_bytes;      /* in chunks pushed since the writer last took the queue */
        Chunk *head, *tail;
        uint64_t buf_used, buf_peak, buf_limit;
        bool writer_stop;

        /* Figures. */
        atomic_uint_fast64_t bytes_done, bytes_total;
        atomic_uint_fast64_t faults, pages_faulted, pages_discarded, pages_unsaved, pages_zero_at_t;
        atomic_uint_fast64_t throttle_us;

        /* Stopping. */
        atomic_bool stop;
        atomic_int error;
        pthread_mutex_t err_lock;
        char errmsg[256];
        int stop_fd;  /* eventfd: written once on stop, never read: stays readable */
        int super_fd; /* eventfd: wakes the supervisor (copier done) */
        atomic_bool copier_done;

        /* Where chunks keep their pages (see "buffer"), under buf_lock. */
        uint8_t *pool;                /* pool_pages pages */
        size_t pool_pages, pool_next; /* size, and where the next search starts */
        uint64_t *pool_map;           /* one bit per page, set when in use */

        /* Memory uffd-wp cannot make point-in-time (hazards.h). */
        Spans holed;         /* registered at the instant with holes left in them (see holes) */
        HazardRange *pinned; /* copied while stopped */
        size_t n_pinned;
        int pinned_error;     /* finding them failed (negative errno): the image says so */
        HazardShared *shared; /* shared with other processes: flagged not point-in-time */
        size_t n_shared;
        int shared_error;
} Engine;

static void engine_fail(Engine *e, int r, const char *fmt, ...) _printf_(3, 4);
static void debug_step(const char *what, uint64_t *last);
static void debug(const char *fmt, ...) _printf_(1, 2);
static bool debug_enabled(void);
static int pre_release(Engine *e, uint64_t addr);
static void page_release(Engine *e, Range *rg, uint64_t a);
static void dirty_push(Engine *e, uint64_t addr);
static int prepare_work(Engine *e);
static void follow_target(Engine *e);
static void unfollow_target(Engine *e);

static void engine_fail(Engine *e, int r, const char *fmt, ...)
{
        int expected = 0;
        va_list ap;

        pthread_mutex_lock(&e->err_lock);
        if (atomic_compare_exchange_strong(&e->error, &expected, r < 0 ? r : -EIO)) {
                va_start(ap, fmt);
                vsnprintf(e->errmsg, sizeof(e->errmsg), fmt, ap);
                va_end(ap);
        }
        pthread_mutex_unlock(&e->err_lock);

        atomic_store(&e->stop, true);
        pthread_mutex_lock(&e->buf_lock);
        pthread_cond_broadcast(&e->buf_cond);
        pthread_mutex_unlock(&e->buf_lock);
        pthread_mutex_lock(&e->lock);
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        (void)eventfd_write(e->stop_fd, 1);
}

#define MM_GONE_WAIT_MS 500

/* Without a pidfd (pidfd_open() missing): has pid become a zombie, or left /proc, within timeout_ms?
 * The traced group leader stays a zombie until its tracer has waited for it; a process that exec'd is
 * never one (the exec'ing thread has taken the leader's place before the old mm is dropped). */
static bool pid_exits_within(pid_t pid, int timeout_ms)
{
        for (int i = 0; i < timeout_ms; i += 5) {
                ProcStatus st;
                int r = proc_status_read(pid, 0, &st);

                if (r == -ENOENT || r == -ESRCH || (r >= 0 && (st.state == 'Z' || st.state == 'X')))
                        return true;
                usleep(5000);
        }
        return false;
}

/* The uffd's mm is gone (ESRCH from an ioctl): the target replaced or ended its address space. */
static void engine_fail_mm_gone(Engine *e)
{
        pid_t pid = e->target ? e->target->pid : 0;
        struct pollfd p = { .fd = e->target ? e->target->pidfd : -1, .events = POLLIN };
        bool exited;

        /* A pidfd polls readable once the process has exited (an exiting one gets there within moments);
         * otherwise it must have exec'd. */
        if (p.fd >= 0)
                exited = poll(&p, 1, MM_GONE_WAIT_MS) != 0;
        else
                exited = pid <= 0 || pid_exits_within(pid, MM_GONE_WAIT_MS);
        if (exited)
                engine_fail(e, -ESRCH, "PID %d exited during the snapshot", (int)pid);
        else
                engine_fail(e, -ECANCELED, "PID %d called execve during the snapshot", (int)pid);
}

/* ---- uffd helpers ---- */

static int uffd_writeprotect(int uffd, uint64_t start, uint64_t len, bool protect)
{
        struct uffdio_writeprotect wp = {
                .range = { .start = start, .len = len },
                .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
        };

        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
                return -errno;
        return 0;
}

static int uffd_wp(Engine *e, uint64_t start, uint64_t len, bool protect)
{
        return uffd_writeprotect(e->uffd, start, len, protect);
}

static void uffd_wake(Engine *e, uint64_t start, uint64_t len)
{
        struct uffdio_range r = { .start = start, .len = len };

        (void)ioctl(e->uffd, UFFDIO_WAKE, &r);
}

/* True if an address-space event (REMAP, UNMAP, REMOVE) is in flight: the kernel then refuses
 * UFFDIO_WRITEPROTECT with EAGAIN. The probe range holds no registered mapping, so it changes nothing. */
static bool uffd_event_in_flight(Engine *e)
{
        return uffd_wp(e, e->probe_addr, PAGE_SIZE_4K, true) == -EAGAIN;
}

/* ---- ranges ---- */

static Range *range_find(Engine *e, uint64_t addr)
{
        size_t lo = 0, hi = e->n_ranges;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                Range *r = &e->ranges[mid];

                if (addr < r->start)
                        hi = mid;
                else if (addr >= r->end)
                        lo = mid + 1;
                else
                        return r;
        }
        return NULL;
}

static int hole_add(Engine *e, uint64_t start, uint64_t end, ImageHoleReason reason)
{
        if (e->n_holes > 0) {
                ImageHole *last = &e->holes[e->n_holes - 1];
                if (last->end == start && last->reason == (uint32_t)reason) {
                        last->end = end;
                        return 0;
                }
        }
        if (e->n_holes == e->n_holes_allocated) {
                size_t n = MAX(e->n_holes_allocated * 2, (size_t)16);
                ImageHole *p = realloc(e->holes, n * sizeof(ImageHole));
                if (!p)
                        return -ENOMEM;
                e->holes = p;
                e->n_holes_allocated = n;
        }
        e->holes[e->n_holes++] = (ImageHole){ .start = start, .end = end, .reason = (uint32_t)reason };
        return 0;
}

static int range_insert(Engine *e, const Range *r)
{
        size_t i;
        Range *p;

        p = realloc(e->ranges, (e->n_ranges + 1) * sizeof(Range));
        if (!p)
                return -ENOMEM;
        e->ranges = p;
        for (i = 0; i < e->n_ranges && e->ranges[i].start < r->start; i++)
                ;
        memmove(&e->ranges[i + 1], &e->ranges[i], (e->n_ranges - i) * sizeof(Range));
        e->ranges[i] = *r;
        e->n_ranges++;
        return 0;
}

/* Splits ranges so that addr is a boundary. */
static int range_split_at(Engine *e, uint64_t addr)
{
        Range *r = range_find(e, addr);
        Range tail;
        size_t head_pages, tail_pages;
        uint8_t *head_map, *tail_map;

        if (!r || r->start == addr)
                return 0;

        head_pages = (addr - r->start) >> PAGE_SHIFT_4K;
        tail_pages = (r->end - addr) >> PAGE_SHIFT_4K;
        tail_map = malloc(tail_pages);
        if (!tail_map)
                return -ENOMEM;
        memcpy(tail_map, r->pages + head_pages, tail_pages);
        head_map = realloc(r->pages, head_pages);
        if (head_map)
                r->pages = head_map;

        tail = (Range){ .start = addr, .end = r->end, .image_start = range_image_addr(r, addr), .pages = tail_map };
        r->end = addr;
        return range_insert(e, &tail);
}

/* Removes the bookkeeping of [start, end); pages still pending are dropped, and with count_discarded
 * recorded as discarded (a hole). If
 * ret_taken is non-NULL the removed ranges are handed over (for REMAP) instead of freed. */
static int ranges_cut(Engine *e, uint64_t start, uint64_t end, bool count_discarded, Range **ret_taken,
                      size_t *ret_n)
{
        Range *taken = NULL;
        size_t n_taken = 0, i;
        int r;

        r = range_split_at(e, start);
        if (r < 0)
                return r;
        r = range_split_at(e, end);
        if (r < 0)
                return r;

        for (i = 0; i < e->n_ranges;) {
                Range *rg = &e->ranges[i];

                if (rg->start >= end || rg->end <= start) {
                        i++;
                        continue;
                }

                if (!ret_taken) {
                        /* Pages still pending are forgotten; after the instant they were data, lost. */
                        size_t n = (rg->end - rg->start) >> PAGE_SHIFT_4K;
                        for (size_t p = 0; p < n; p++) {
                                uint8_t s = rg->pages[p] & PG_STATE_MASK;
                                if (s == PG_PENDING || s == PG_BUSY) {
                                        uint64_t a = rg->image_start + (p << PAGE_SHIFT_4K);
                                        if (s == PG_BUSY)
                                                e->pages_busy--;
                                        rg->pages[p] = PG_NONE;
                                        e->pages_pending--;
                                        if (count_discarded) {
                                                atomic_fetch_add(&e->pages_discarded, 1);
                                                (void)hole_add(e, a, a + PAGE_SIZE_4K, IMAGE_HOLE_DISCARDED);
                                        }
                                }
                        }
                }

                if (ret_taken) {
                        Range *p = realloc(taken, (n_taken + 1) * sizeof(Range));
                        if (!p) {
                                free(taken);
                                return -ENOMEM;
                        }
                        taken = p;
                        taken[n_taken++] = *rg;
                } else
                        free(rg->pages);

                memmove(&e->ranges[i], &e->ranges[i + 1], (e->n_ranges - i - 1) * sizeof(Range));
                e->n_ranges--;
        }

        if (ret_taken) {
                *ret_taken = taken;
                *ret_n = n_taken;
        }
        return 0;
}

/* ---- buffer ---- */

/*
 * Chunks keep their pages in one region mapped at the start, the pool: the buffer's limit plus one
 * largest chunk, so that any chunk fits in an empty buffer. Not the heap: malloc's per-thread arenas
 * kept up to twice the buffer resident (an 8 GiB Redis under load: 107 MiB of RSS for a 64 MiB
 * buffer). Pages are handed out next-fit, one bit each; since the writer frees them in about the order
 * they were taken, a search is short. The pool is touched before the freeze (as much as the target
 * could fill, and at least FREEZE_PREFAULT bytes), which finds it empty and so copies into memory that
 * does not fault while the target waits (fresh memory cost a third of the 1.5 ms Redis's 1.1 MB of
 * private library pages took).
 */
static bool pool_bit(const Engine *e, size_t i)
{
        return e->pool_map[i / 64] & (1ULL << (i % 64));
}

static void pool_set(Engine *e, size_t first, size_t n, bool used)
{
        for (size_t i = first; i < first + n; i++) {
                if (used)
                        e->pool_map[i / 64] |= 1ULL << (i % 64);
                else
                        e->pool_map[i / 64] &= ~(1ULL << (i % 64));
        }
}

/* The first run of n free pages at or after pool_next, wrapping once; SIZE_MAX if none. buf_lock held. */
static size_t pool_find(Engine *e, size_t n)
{
        size_t run = 0, start = 0;

        for (size_t k = 0; k < e->pool_pages + n; k++) {
                size_t i = (e->pool_next + k) % e->pool_pages;

                if (i == 0)
                        run = 0; /* a run does not wrap around the end */
                if (run == 0 && i % 64 == 0 && e->pool_map[i / 64] == UINT64_MAX && i + 64 <= e->pool_pages) {
                        k += 63; /* a full word */
                        continue;
                }
                if (pool_bit(e, i)) {
                        run = 0;
                        continue;
                }
                if (run++ == 0)
                        start = i;
                if (run == n)
                        return start;
        }
        return SIZE_MAX;
}

/* Bytes of the target's memory in RAM (/proc/PID/statm), or 0 if unknown. */
static uint64_t target_resident(pid_t pid)
{
        _cleanup_free_ char *text = NULL;
        unsigned long long size, resident;
        char p[64];

        snprintf(p, sizeof(p), "/proc/%d/statm", (int)pid);
        if (read_full_file(p, &text, NULL) < 0 || sscanf(text, "%llu %llu", &size, &resident) != 2)
                return 0;
        return (uint64_t)resident << PAGE_SHIFT_4K;
}

/*
 * The page states (a byte per 4 KiB page tracked, about one and a half with their bookkeeping) grow
 * with the target while the rest of the dump's own memory does not: the buffer pays for them, so that
 * the dump stays within the buffer plus a constant at any size (until the states alone fill all but
 * STATES_FLOOR of it, past 160 GiB with the default buffer). They are made as the walk goes, after the
 * pool exists: estimated from the memory the target holds now.
 */
#define STATES_FLOOR (4ULL << 20)
static void buffer_charge_states(Engine *e, uint64_t resident)
{
        uint64_t states = (resident >> PAGE_SHIFT_4K) * 3 / 2;

        if (e->buf_limit > STATES_FLOOR)
                e->buf_limit = ALIGN_DOWN(MAX(e->buf_limit - MIN(states, e->buf_limit), STATES_FLOOR),
                                          (uint64_t)PAGE_SIZE_4K);
        debug("buffer: %" PRIu64 " MiB for pages, %" PRIu64 " MiB left to the page states", e->buf_limit >> 20,
              states >> 20);
}

static int pool_init(Engine *e, pid_t pid)
{
        uint64_t resident = target_resident(pid);
        size_t len, populate;
        uint8_t *m;

        buffer_charge_states(e, resident);
        /* As large as the buffer, and never smaller than one largest chunk (which an empty buffer takes
         * whatever its limit): the pool is the buffer's memory, all of it touched as the ring turns. */
        e->pool_pages = MAX((size_t)(e->buf_limit >> PAGE_SHIFT_4K), (size_t)IMAGE_CHUNK_MAX_PAGES);
        e->pool_map = calloc((e->pool_pages + 63) / 64, sizeof(uint64_t));
        if (!e->pool_map)
                return -ENOMEM;
        /* Of 4 KiB pages, populated below. Huge pages would take a few dozen faults rather than one per
         * 4 KiB, but a guest that hands its free memory back to the host (virtio-balloon free page
         * reporting, as here) has the host fault in every fresh 2 MiB block: 64 MiB took 260-380 ms with
         * huge pages a few seconds after the last dump, 30-40 ms without (bench/README.md, "The freeze's
         * library mappings"). The population is what matters: the handler never takes our faults. */
        len = e->pool_pages << PAGE_SHIFT_4K;
        m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
                return -errno;
        e->pool = m;
        (void)madvise(e->pool, len, MADV_NOHUGEPAGE);
        /* Best effort: touched now, while the target runs, so that neither the freeze's copies nor the
         * first faults after it take our page faults. Only as much as the target could fill: a small
         * target does not make for a large resident buffer. */
        populate = (size_t)MIN((uint64_t)len, ALIGN_UP(resident, HPAGE_SIZE_2M) + HPAGE_SIZE_2M);
        (void)madvise(e->pool, MAX(populate, MIN((size_t)FREEZE_PREFAULT, len)), MADV_POPULATE_WRITE);
        return 0;
}

static void pool_free(Engine *e)
{
        if (e->pool)
                (void)munmap(e->pool, e->pool_pages << PAGE_SHIFT_4K);
        free(e->pool_map);
}

/* A fault may fill the whole buffer, anyone else only three quarters of it: when the disk falls behind,
 * the room left goes to the target's writes, which are what the target feels. */
static uint64_t buffer_limit(const Engine *e, bool is_fault)
{
        return is_fault ? e->buf_limit : e->buf_limit - e->buf_limit / 4;
}

/*
 * Waits until the copier's next window would fit under its limit, before it claims the window's pages:
 * a fault in a window the copier has claimed waits for the copier to commit it, and so does every
 * fault after it (one handler), so the copier must not then sit waiting for the disk.
 */
static void buffer_wait_room(Engine *e, uint64_t bytes)
{
        uint64_t limit = buffer_limit(e, false);

        pthread_mutex_lock(&e->buf_lock);
        while (!atomic_load(&e->stop) && e->buf_used > 0 && e->buf_used + bytes > limit)
                pthread_cond_wait(&e->buf_cond, &e->buf_lock);
        pthread_mutex_unlock(&e->buf_lock);
}

static Chunk *buffer_get_from(Engine *e, uint64_t vaddr, size_t npages, bool is_fault)
{
        size_t bytes = npages << PAGE_SHIFT_4K, first = SIZE_MAX;
        uint64_t t0 = 0, limit = buffer_limit(e, is_fault);
        Chunk *c;

        c = malloc(sizeof(Chunk) + npages);
        if (!c)
                return NULL;

        pthread_mutex_lock(&e->buf_lock);
        for (;;) {
                if (atomic_load(&e->stop))
                        break;
                if (e->buf_used == 0 || e->buf_used + bytes <= limit) {
                        first = pool_find(e, npages);
                        if (first != SIZE_MAX)
                                break;
                }
                if (!t0)
                        t0 = now_usec();
                pthread_cond_wait(&e->buf_cond, &e->buf_lock);
        }
        if (first == SIZE_MAX) {
                pthread_mutex_unlock(&e->buf_lock);
                free(c);
                return NULL;
        }
        pool_set(e, first, npages, true);
        e->pool_next = (first + npages) % e->pool_pages;
        e->buf_used += bytes;
        if (e->buf_used > e->buf_peak)
                e->buf_peak = e->buf_used;
        pthread_mutex_unlock(&e->buf_lock);
        /* The throttle is what the target feels: the time its faults waited for room. */
        if (t0 && is_fault)
                atomic_fetch_add(&e->throttle_us, now_usec() - t0);

        c->next = NULL;
        c->vaddr = vaddr;
        c->npages = npages;
        c->keep = (uint8_t *)(c + 1);
        c->data_page = first;
        c->data = e->pool + (first << PAGE_SHIFT_4K);
        memset(c->keep, 1, npages);
        return c;
}

static Chunk *buffer_get(Engine *e, uint64_t vaddr, size_t npages, bool is_fault)
{
        return buffer_get_from(e, vaddr, npages, is_fault);
}

static void buffer_put_back(Engine *e, Chunk *c)
{
        pthread_mutex_lock(&e->buf_lock);
        e->buf_used -= c->npages << PAGE_SHIFT_4K;
        pool_set(e, c->data_page, c->npages, false);
        pthread_cond_broadcast(&e->buf_cond);
        pthread_mutex_unlock(&e->buf_lock);
        free(c);
}

/* Hands a chunk to the writer. A fault's chunk (a few pages) does not wake it: the writer comes by every
 * WRITER_TICK_MS anyway, and waking it for each fault cost the fault handler, on the target's CPU, a
 * futex wake and the writer's run beside the target, tens of thousands of times a dump. */
#define WRITER_WAKE_BYTES (1ULL << 20)
#define WRITER_TICK_MS 2
static void buffer_push(Engine *e, Chunk *c)
{
        pthread_mutex_lock(&e->buf_lock);
        if (e->tail)
                e->tail->next = c;
        else
                e->head = c;
        e->tail = c;
        e->queued_bytes += c->npages << PAGE_SHIFT_4K;
        if (e->queued_bytes >= WRITER_WAKE_BYTES) {
                e->queued_bytes = 0;
                pthread_cond_signal(&e->writer_cond);
        }
        pthread_mutex_unlock(&e->buf_lock);
}

static void *writer_thread(void *userdata)
{
        Engine *e = userdata;

        pthread_setname_np(pthread_self(), "livesnap-write");

        for (;;) {
                Chunk *c;
                int r = 0;

                pthread_mutex_lock(&e->buf_lock);
                while (!e->head && !e->writer_stop) {
                        struct timespec ts;

                        clock_gettime(CLOCK_MONOTONIC, &ts);
                        ts.tv_nsec += WRITER_TICK_MS * 1000000L;
                        if (ts.tv_nsec >= 1000000000L) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000L;
                        }
                        (void)pthread_cond_timedwait(&e->writer_cond, &e->buf_lock, &ts);
                }
                e->queued_bytes = 0;
                c = e->head;
                if (!c) {
                        pthread_mutex_unlock(&e->buf_lock);
                        break;
                }
                e->head = c->next;
                if (!e->head)
                        e->tail = NULL;
                pthread_mutex_unlock(&e->buf_lock);

                for (size_t i = 0; i < c->npages && r >= 0 && atomic_load(&e->error) == 0;) {
                        size_t n = 0;

                        if (!c->keep[i]) {
                                i++;
                                continue;
                        }
                        while (i + n < c->npages && c->keep[i + n] && n < IMAGE_CHUNK_MAX_PAGES)
                                n++;
                        r = image_writer_add_pages(e->writer, c->vaddr + (i << PAGE_SHIFT_4K),
                                                   c->data + (i << PAGE_SHIFT_4K), n);
                        i += n;
                }
                if (r < 0)
                        engine_fail(e, r, "writing %s failed: %s", e->path, strerror(-r));

                buffer_put_back(e, c);
        }
        return NULL;
}

/* ---- saving ---- */

typedef enum SaveMode {
        SAVE_FAULT,   /* a write fault: window around addr; waits for others' BUSY pages */
        SAVE_COPY,    /* background copier: 2 MiB window */
        SAVE_REMOVE,  /* before a REMOVE event is read: no un-protect (it would fail with EAGAIN) */
} SaveMode;

/* The window of a fault at addr: twice the last one's if it continues it (lands in the first
 * FAULT_WINDOW_MIN after its end), else the smallest. */
static uint64_t fault_window(const Engine *e, uint64_t addr)
{
        if (e->fault_run_end > 0 && addr >= e->fault_run_end && addr - e->fault_run_end < FAULT_WINDOW_MIN)
                return MIN(e->fault_run_window * 2, FAULT_WINDOW_MAX);
        return FAULT_WINDOW_MIN;
}

static void window_for(Engine *e, Range *rg, uint64_t addr, SaveMode mode, uint64_t *ret_start, uint64_t *ret_end)
{
        size_t idx = (addr - rg->start) >> PAGE_SHIFT_4K;
        uint64_t w = mode == SAVE_COPY || (rg->pages[idx] & PG_HUGE) ? COPY_WINDOW :
                     mode == SAVE_FAULT                                ? fault_window(e, addr) :
                                                                         FAULT_WINDOW_MAX;

        *ret_start = MAX(ALIGN_DOWN(addr, w), rg->start);
        *ret_end = MIN(ALIGN_DOWN(addr, w) + w, rg->end);
}

/*
 * Saves the pending pages of the window around addr (clipped to [lo, hi) for SAVE_REMOVE) and
 * un-protects the window. Returns 2 if it un-protected the window, which wakes any thread waiting in
 * it; 1 if it saved or found nothing left to save otherwise (addr is in no range, or SAVE_REMOVE); 0 if
 * the attempt was overtaken by an address-space event and must be retried after the handler has read
 * it; or a negative errno.
 */
static int engine_save(Engine *e, uint64_t addr, SaveMode mode, uint64_t lo, uint64_t hi)
{
        uint64_t ws, we, epoch, run_start = 0;
        size_t npages = 0, claimed = 0;
        Chunk *c = NULL;
        Range *rg;
        int r;

        addr = ALIGN_DOWN(addr, PAGE_SIZE_4K);
        if (mode == SAVE_COPY)
                buffer_wait_room(e, COPY_WINDOW);

        pthread_mutex_lock(&e->lock);
        for (;;) {
                bool busy = false;

                if (atomic_load(&e->stop)) {
                        pthread_mutex_unlock(&e->lock);
                        return -ECANCELED;
                }
                if (e->in_event) {
                        pthread_cond_wait(&e->cond, &e->lock);
                        continue;
                }
                rg = range_find(e, addr);
                if (!rg) {
                        pthread_mutex_unlock(&e->lock);
                        return 1;
                }
                window_for(e, rg, addr, mode, &ws, &we);
                if (mode == SAVE_REMOVE) {
                        ws = MAX(ws, lo);
                        we = MIN(we, hi);
                }
                for (uint64_t a = ws; a < we; a += PAGE_SIZE_4K)
                        if ((rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] & PG_STATE_MASK) == PG_BUSY) {
                                busy = true;
                                break;
                        }
                if (!busy)
                        break;
                pthread_cond_wait(&e->cond, &e->lock);
        }

        if (mode == SAVE_FAULT) {
                /* Only the handler saves for faults, so this is the run it continues next time. */
                e->fault_run_window = MAX(we - ws, FAULT_WINDOW_MIN);
                e->fault_run_end = we;
        }

        /* A fault in a window with nothing left to save (the copier saved it, leaving it protected)
         * un-protects the whole copy window around it, if nothing in that is pending or being saved:
         * one fault, not one per FAULT_WINDOW, makes it writable again. */
        if (mode == SAVE_FAULT && we - ws < COPY_WINDOW) {
                uint64_t cs = MAX(ALIGN_DOWN(addr, COPY_WINDOW), rg->start);
                uint64_t ce = MIN(ALIGN_DOWN(addr, COPY_WINDOW) + COPY_WINDOW, rg->end);
                bool all_saved = true;

                for (uint64_t a = cs; a < ce && all_saved; a += PAGE_SIZE_4K)
                        all_saved = (rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] & PG_STATE_MASK) == PG_NONE;
                if (all_saved) {
                        ws = cs;
                        we = ce;
                }
        }

        /* Claim: the span from the first to the last pending page, copied as one piece. */
        for (uint64_t a = ws; a < we; a += PAGE_SIZE_4K) {
                uint8_t *p = &rg->pages[(a - rg->start) >> PAGE_SHIFT_4K];
                if ((*p & PG_STATE_MASK) == PG_PENDING) {
                        if (!claimed)
                                run_start = a;
                        npages = ((a - run_start) >> PAGE_SHIFT_4K) + 1;
                        claimed++;
                        *p = (uint8_t)((*p & PG_FLAGS) | PG_BUSY);
                }
        }
        e->pages_busy += claimed;
        if (mode == SAVE_FAULT)
                e->fault_kind = claimed > 0 ? FAULT_SAVED : we - ws == COPY_WINDOW ? FAULT_WINDOW_FREED : FAULT_OTHER;
        epoch = e->epoch;
        pthread_mutex_unlock(&e->lock);

        if (claimed > 0) {
                c = buffer_get(e, range_image_addr(rg, run_start), npages, mode == SAVE_FAULT);
                if (!c) {
                        r = atomic_load(&e->stop) ? -ECANCELED : -ENOMEM;
                        goto revert;
                }
                /* Only the pages we claimed are data; the rest of the span is read but not kept. */
                pthread_mutex_lock(&e->lock);
                for (size_t i = 0; i < npages; i++)
                        c->keep[i] = (rg->pages[((run_start - rg->start) >> PAGE_SHIFT_4K) + i] & PG_STATE_MASK) ==
                                     PG_BUSY;
                pthread_mutex_unlock(&e->lock);
                /* Read only the claimed pages: reading a gap would populate it (a zero page), changing the
                 * target's memory map for nothing. */
                r = 0;
                for (size_t i = 0; i < npages && r >= 0;) {
                        size_t n = 0;

                        if (!c->keep[i]) {
                                i++;
                                continue;
                        }
                        while (i + n < npages && c->keep[i + n])
                                n++;
                        r = target_read_memory(e->target, run_start + (i << PAGE_SHIFT_4K),
                                               c->data + (i << PAGE_SHIFT_4K), n << PAGE_SHIFT_4K);
                        i += n;
                }
                if (r < 0) {
                        /* Unreadable now: either unmapped under us (an event will say so) or truly
                         * unreadable. Decide under the lock below. */
                        buffer_put_back(e, c);
                        c = NULL;
                }
        }

        pthread_mutex_lock(&e->lock);
        if (e->epoch != epoch) {
                r = 0;
                goto revert_locked;
        }
        bool unprotected = false;
        if (mode == SAVE_COPY) {
                /* The copier leaves the window protected (see "page-table work beside the target"):
                 * the checks the un-protect makes, that no event is in flight and that the target's
                 * memory is still there, are made alone, on the probe range. */
                r = uffd_wp(e, e->probe_addr, PAGE_SIZE_4K, true);
                if (r == -EAGAIN) {
                        r = 0;
                        goto revert_locked;
                }
                if (r == -ESRCH) {
                        pthread_mutex_unlock(&e->lock);
                        engine_fail_mm_gone(e);
                        goto revert;
                }
        } else if (mode == SAVE_FAULT) {
                r = uffd_wp(e, ws, we - ws, false);
                unprotected = r == 0;
                if (r == -EAGAIN) {
                        r = 0;
                        goto revert_locked;
                }
                if (r == -ESRCH) {
                        pthread_mutex_unlock(&e->lock);
                        engine_fail_mm_gone(e);
                        goto revert;
                }
                if (r == -ENOENT && c) {
                        /* Part of the window is no longer a registered mapping, yet no event says so:
                         * where the copy came from is unknown. Never pass it off as data. */
                        buffer_put_back(e, c);
                        c = NULL;
                } else if (r < 0 && r != -ENOENT) {
                        pthread_mutex_unlock(&e->lock);
                        engine_fail(e, r, "un-protecting 0x%" PRIx64 "-0x%" PRIx64 " failed: %s", ws, we,
                                    strerror(-r));
                        goto revert;
                }
        }

        /* Commit. Pages we claimed but could not read are marked unsaved. */
        for (uint64_t a = ws; a < we; a += PAGE_SIZE_4K) {
                uint8_t *p = &rg->pages[(a - rg->start) >> PAGE_SHIFT_4K];
                if ((*p & PG_STATE_MASK) != PG_BUSY)
                        continue;
                *p &= PG_FLAGS;
                e->pages_pending--;
                e->pages_busy--;
                if (!c) {
                        uint64_t ia = range_image_addr(rg, a);
                        atomic_fetch_add(&e->pages_unsaved, 1);
                        (void)hole_add(e, ia, ia + PAGE_SIZE_4K, IMAGE_HOLE_UNSAVED);
                }
        }
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);

        if (c) {
                atomic_fetch_add(&e->bytes_done, claimed << PAGE_SHIFT_4K);
                if (mode == SAVE_FAULT)
                        atomic_fetch_add(&e->pages_faulted, claimed);
                buffer_push(e, c);
        }
        return unprotected ? 2 : 1;

revert:
        pthread_mutex_lock(&e->lock);
revert_locked:
        /* Nobody changed the bookkeeping of BUSY pages (the handler waits for them), so they are where
         * we left them. */
        for (uint64_t a = ws; claimed > 0 && a < we; a += PAGE_SIZE_4K) {
                Range *cur = range_find(e, a);
                if (!cur)
                        continue;
                uint8_t *p = &cur->pages[(a - cur->start) >> PAGE_SHIFT_4K];
                if ((*p & PG_STATE_MASK) == PG_BUSY) {
                        *p = (uint8_t)((*p & PG_FLAGS) | PG_PENDING);
                        e->pages_busy--;
                }
        }
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        if (c)
                buffer_put_back(e, c);
        return r;
}

/* ---- events ---- */

/* Waits, with the lock held and in_event set, until no page is BUSY. */
static void wait_no_busy(Engine *e)
{
        while (e->pages_busy > 0 && !atomic_load(&e->stop))
                pthread_cond_wait(&e->cond, &e->lock);
}

static int handle_event(Engine *e, const struct uffd_msg *msg)
{
        int r = 0;

        switch (msg->event) {
        case UFFD_EVENT_REMAP: {
                uint64_t from = msg->arg.remap.from, to = msg->arg.remap.to, len = msg->arg.remap.len;
                Range *moved = NULL;
                size_t n_moved = 0;

                r = ranges_cut(e, from, from + len, false, &moved, &n_moved);
                if (r < 0)
                        return r;
                /* Whatever the destination held is gone (the kernel unmapped it). */
                r = ranges_cut(e, to, to + len, !e->pre, NULL, NULL);
                for (size_t i = 0; i < n_moved; i++) {
                        moved[i].start = moved[i].start - from + to;
                        moved[i].end = moved[i].end - from + to;
                        if (e->pre) {
                                /* Before the instant the pages belong where they are going; the dirty list
                                 * names addresses, so list the moved dirty pages anew. */
                                moved[i].image_start = moved[i].start;
                                for (uint64_t a = moved[i].start; a < moved[i].end; a += PAGE_SIZE_4K)
                                        if (moved[i].pages[(a - moved[i].start) >> PAGE_SHIFT_4K] & PG_DIRTY)
                                                dirty_push(e, a);
                        }
                        if (r >= 0)
                                r = range_insert(e, &moved[i]);
                        else
                                free(moved[i].pages);
                }
                free(moved);
                return r;
        }
        case UFFD_EVENT_UNMAP:
                return ranges_cut(e, msg->arg.remove.start, msg->arg.remove.end, !e->pre, NULL, NULL);
        case UFFD_EVENT_REMOVE: {
                /* The pages were saved before this event was read (presave_removes); anything still
                 * pending lost the race and is gone now. MADV_FREE keeps pages but may lose them at any
                 * time, so they are treated the same. */
                uint64_t start = msg->arg.remove.start, end = msg->arg.remove.end;

                for (uint64_t a = start; a < end;) {
                        Range *rg = range_find(e, a);
                        if (!rg) {
                                size_t j;
                                uint64_t next = end;
                                for (j = 0; j < e->n_ranges; j++)
                                        if (e->ranges[j].start > a) {
                                                next = MIN(next, e->ranges[j].start);
                                                break;
                                        }
                                a = next;
                                continue;
                        }
                        uint8_t *p = &rg->pages[(a - rg->start) >> PAGE_SHIFT_4K];
                        if (e->pre) {
                                /* The zap drops the pages and their protection, and nothing faults on the
                                 * next write: dirty, so the next pass (or the freeze) protects them. */
                                page_release(e, rg, a);
                        } else if ((*p & PG_STATE_MASK) == PG_PENDING) {
                                uint64_t ia = range_image_addr(rg, a);
                                *p &= PG_FLAGS;
                                e->pages_pending--;
                                atomic_fetch_add(&e->pages_discarded, 1);
                                (void)hole_add(e, ia, ia + PAGE_SIZE_4K, IMAGE_HOLE_DISCARDED);
                        }
                        a += PAGE_SIZE_4K;
                }
                return 0;
        }
        default:
                return 0;
        }
}

/* An event is in flight. If it is a madvise that will zap pages, the blocked thread's syscall says
 * which range; save it now, while the pages are still intact. */
static void presave_removes(Engine *e)
{
        Target *t = e->target;
        pid_t *tids = NULL;
        size_t n = 0;

        if (proc_task_list(t->pid, &tids, &n) < 0)
                return;

        for (size_t i = 0; i < n; i++) {
                uint64_t args[6];
                long nr;

                if (proc_syscall_read(t->pid, tids[i], &nr, args) < 0 || nr != SYS_madvise)
                        continue;
                if (args[2] != MADV_DONTNEED && args[2] != MADV_FREE && args[2] != MADV_REMOVE &&
                    args[2] != 24 /* MADV_DONTNEED_LOCKED */)
                        continue;

                uint64_t start = ALIGN_DOWN(args[0], PAGE_SIZE_4K);
                uint64_t end = ALIGN_UP(args[0] + args[1], PAGE_SIZE_4K);
                for (uint64_t a = start; a < end && !atomic_load(&e->stop);) {
                        Range *rg;
                        uint64_t ws, we;

                        pthread_mutex_lock(&e->lock);
                        rg = range_find(e, a);
                        if (rg) {
                                window_for(e, rg, a, SAVE_REMOVE, &ws, &we);
                                we = MIN(we, end);
                        } else
                                we = a + PAGE_SIZE_4K;
                        pthread_mutex_unlock(&e->lock);
                        if (rg)
                                (void)engine_save(e, a, SAVE_REMOVE, start, end);
                        a = we;
                }
        }
        free(tids);
}

typedef struct Deferred {
        uint64_t *addrs;
        size_t n, allocated;
} Deferred;

static void deferred_add(Deferred *d, uint64_t addr)
{
        if (d->n == d->allocated) {
                size_t n = MAX(d->allocated * 2, (size_t)64);
                uint64_t *p = realloc(d->addrs, n * sizeof(uint64_t));
                if (!p)
                        return;
                d->addrs = p;
                d->allocated = n;
        }
        d->addrs[d->n++] = addr;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Sorts the list and drops repeats: a thread whose fault is interrupted (a signal pending while it
 * faults in kernel mode, e.g. on its rseq area) faults again at once, and each fault is a message. */
static void deferred_unique(Deferred *d)
{
        size_t n = 0;

        if (d->n < 2)
                return;
        qsort(d->addrs, d->n, sizeof(uint64_t), cmp_u64);
        for (size_t i = 0; i < d->n; i++)
                if (n == 0 || d->addrs[i] != d->addrs[n - 1])
                        d->addrs[n++] = d->addrs[i];
        d->n = n;
}

/* Returns true if the fault was deferred because an address-space event is in flight. */
static bool serve_fault(Engine *e, uint64_t addr, Deferred *retry)
{
        int r;

        if (e->pre) {
                /* Before the instant (only this thread and a parked freeze change e->pre). */
                r = pre_release(e, addr);
                if (r == 0 || r == 2) {
                        deferred_add(retry, addr);
                        return r == 0;
                }
                if (r == -ESRCH)
                        engine_fail_mm_gone(e);
                else if (r < 0)
                        engine_fail(e, r, "releasing the page at 0x%" PRIx64 " failed: %s", addr, strerror(-r));
                return false;
        }

        bool timed = debug_enabled();
        uint64_t t0 = timed ? now_usec() : 0;
        if (FAULT_EXTRA_US > 0)
                for (uint64_t until = now_usec() + FAULT_EXTRA_US; now_usec() < until;)
                        ;
        e->fault_kind = FAULT_OTHER;
        r = engine_save(e, addr, SAVE_FAULT, 0, 0);
        if (timed) {
                uint64_t us = now_usec() - t0;
                typeof(e->fault_stats[0]) *fs = &e->fault_stats[e->fault_kind];
                fs->n++;
                fs->us += us;
                fs->over100 += us > 100;
                fs->over500 += us > 500;
                fs->max = MAX(fs->max, us);
        }
        if (r == 0) {
                deferred_add(retry, addr);
                return true;
        }
        if (r < 0) {
                if (r != -ECANCELED)
                        engine_fail(e, r, "saving the page at 0x%" PRIx64 " failed: %s", addr, strerror(-r));
                return false;
        }
        if (r == 2)
                return false; /* the window, faulting page included, is writable and its threads awake */
        /* Not a page we track: make sure it is writable and its thread awake. */
        r = uffd_wp(e, ALIGN_DOWN(addr, PAGE_SIZE_4K), PAGE_SIZE_4K, false);
        if (r == -EAGAIN) {
                deferred_add(retry, addr);
                return true;
        }
        uffd_wake(e, ALIGN_DOWN(addr, PAGE_SIZE_4K), PAGE_SIZE_4K);
        return false;
}

/* Where the handler may stand still for the freeze: every message it has read so far is handled.
 * Entering poll() it says it is idle; a freeze that finds it so parks it without waking it, and it
 * stops here when poll() returns, before reading anything. Otherwise the freeze wakes it (handler_fd)
 * and waits until it gets here. */
static void handler_park_point(Engine *e, bool entering_poll)
{
        pthread_mutex_lock(&e->lock);
        e->idle = entering_poll;
        if (!entering_poll && e->park) {
                e->parked = true;
                pthread_cond_broadcast(&e->cond);
                while (e->park && !atomic_load(&e->stop))
                        pthread_cond_wait(&e->cond, &e->lock);
                e->parked = false;
        }
        pthread_mutex_unlock(&e->lock);
}

static void *handler_thread(void *userdata)
{
        Engine *e = userdata;
        Deferred pending = {}, retry = {};
        struct uffd_msg msgs[UFFD_MSG_BATCH];
        uint64_t follow_at = 0;
        bool blocked;

        pthread_setname_np(pthread_self(), "livesnap-fault");

        while (!atomic_load(&e->stop)) {
                struct pollfd p[3] = {
                        { .fd = e->uffd, .events = POLLIN },
                        { .fd = e->stop_fd, .events = POLLIN },
                        { .fd = e->handler_fd, .events = POLLIN },
                };
                ssize_t n;

                handler_park_point(e, false);

                /* What the handler does is un-protect for faults; a thread waiting on one is not
                 * running, so its CPU is free. */
                if (now_usec() >= follow_at) {
                        follow_target(e);
                        follow_at = now_usec() + FOLLOW_EVERY_US;
                }

                handler_park_point(e, true);
                int k = poll(p, 3, pending.n > 0 ? 1 : 100);
                handler_park_point(e, false);
                if (k < 0 && errno != EINTR) {
                        engine_fail(e, -errno, "poll on userfaultfd failed: %m");
                        break;
                }
                if ((p[1].revents & POLLIN) || atomic_load(&e->stop))
                        break;
                if (p[2].revents & POLLIN) {
                        eventfd_t v;
                        (void)eventfd_read(e->handler_fd, &v);
                }

                /* Faults overtaken by an event: retry now that it may have been read. While one is
                 * still in flight every retry would fail the same way, so after the first that does the
                 * rest wait, untried: until the event is read, the handler's time is best spent reading. */
                blocked = false;
                if (pending.n > 0) {
                        Deferred again = pending;
                        pending = retry;
                        retry = again;
                        pending.n = 0;
                        deferred_unique(&retry);
                        for (size_t i = 0; i < retry.n; i++) {
                                if (blocked)
                                        deferred_add(&pending, retry.addrs[i]);
                                else
                                        blocked = serve_fault(e, retry.addrs[i], &pending);
                        }
                        retry.n = 0;
                }

                if (!(p[0].revents & POLLIN))
                        continue;

                if (!e->pre && uffd_event_in_flight(e))
                        presave_removes(e);

                /* Read under the lock, and bump the epoch before letting it go: reading an UNMAP or REMAP
                 * event lets the target's munmap or mremap return, after which the target may map
                 * something else at the same address. A saver whose copy raced with that reads the new
                 * mapping's bytes; it commits under this lock, so it must see the epoch changed. */
                pthread_mutex_lock(&e->lock);
                n = read(e->uffd, msgs, sizeof(msgs));
                if (n < 0) {
                        int err = errno;

                        pthread_mutex_unlock(&e->lock);
                        if (err == EAGAIN || err == EINTR)
                                continue;
                        engine_fail(e, -err, "reading the userfaultfd failed: %s", strerror(err));
                        break;
                }

                size_t count = (size_t)n / sizeof(struct uffd_msg);
                bool events = false;

                for (size_t i = 0; i < count; i++)
                        if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                                events = true;

                if (!events)
                        pthread_mutex_unlock(&e->lock);
                else {
                        /* Bookkeeping changes: make every saver in flight revert (epoch), wait for them,
                         * and keep new claims out until done. Before the instant, the walker's step
                         * finishes first, and no step starts until done (see walker_thread). */
                        while (e->walking && !atomic_load(&e->stop))
                                pthread_cond_wait(&e->cond, &e->lock);
                        e->epoch++;
                        e->in_event = true;
                        wait_no_busy(e);
                        for (size_t i = 0; i < count; i++) {
                                int r;
                                if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                                        continue;
                                r = handle_event(e, &msgs[i]);
                                if (r < 0) {
                                        e->in_event = false;
                                        pthread_mutex_unlock(&e->lock);
                                        engine_fail(e, r, "tracking an address-space change failed: %s",
                                                    strerror(-r));
                                        goto out;
                                }
                        }
                        e->in_event = false;
                        pthread_cond_broadcast(&e->cond);
                        pthread_mutex_unlock(&e->lock);
                }

                if (events)
                        blocked = false;
                for (size_t i = 0; i < count; i++) {
                        uint64_t addr = msgs[i].arg.pagefault.address;

                        if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                                continue;
                        atomic_fetch_add(&e->faults, 1);
                        atomic_store(&e->fault_tid, (pid_t)msgs[i].arg.pagefault.feat.ptid);
                        if (blocked)
                                deferred_add(&pending, addr);
                        else
                                blocked = serve_fault(e, addr, &pending);
                }
        }
out:
        free(pending.addrs);
        free(retry.addrs);
        return NULL;
}

/* ---- background copier ---- */

#define RELEASE_SLICE (4ULL << 20)
#ifndef COPIER_NICE
#define COPIER_NICE 10 /* the copier's nice value: it takes the CPU time the target leaves */
#endif

/*
 * Every page is saved: give the target its memory back before the finish. Closing the uffd would do
 * it, but in one pass over every mapping, while the target runs on another CPU (on the test VM, 3.5-5
 * s for a 4 GiB Redis, serving slowly all along). Unregistering the ranges slice by slice from the
 * target's CPU does the same work ~20x faster. The handler still runs meanwhile: a fault in a range
 * not yet released is served as before (nothing left to save: it un-protects). A slice the kernel
 * refuses (a hugetlb page straddling its end, the map changed under us) is left to the close.
 */
static void release_saved(Engine *e)
{
        _cleanup_free_ struct { uint64_t start, end; } *spans = NULL;
        uint64_t t0 = now_usec(), bytes = 0;
        unsigned slices = 0, refused = 0;
        size_t n;

        pthread_mutex_lock(&e->lock);
        n = e->n_ranges;
        spans = calloc(MAX(n, (size_t)1), sizeof(*spans));
        for (size_t i = 0; spans && i < n; i++) {
                spans[i].start = e->ranges[i].start;
                spans[i].end = e->ranges[i].end;
        }
        pthread_mutex_unlock(&e->lock);
        if (!spans)
                return;

        for (size_t i = 0; i < n && !atomic_load(&e->stop); i++)
                for (uint64_t a = spans[i].start, end = spans[i].end; a < end;) {
                        /* Cut at 2 MiB boundaries: a cut elsewhere would split a transparent huge page. */
                        uint64_t t = ALIGN_DOWN(a + RELEASE_SLICE, HPAGE_SIZE_2M);
                        struct uffdio_range range;

                        t = MIN(end, t > a ? t : a + RELEASE_SLICE);
                        range = (struct uffdio_range){ .start = a, .len = t - a };
                        follow_target(e);
                        if (ioctl(e->uffd, UFFDIO_UNREGISTER, &range) < 0)
                                refused++;
                        else
                                bytes += t - a;
                        slices++;
                        a = t;
                }
        /* The holes of mappings that have them (see holes), in one go each: nothing is protected there. */
        for (size_t i = 0; i < e->holed.n && !atomic_load(&e->stop); i++) {
                struct uffdio_range range = { .start = e->holed.v[i][0], .len = e->holed.v[i][1] - e->holed.v[i][0] };

                follow_target(e);
                if (ioctl(e->uffd, UFFDIO_UNREGISTER, &range) < 0)
                        refused++;
                slices++;
        }
        unfollow_target(e);
        debug("released %" PRIu64 " MiB in %u slices (%u refused, left to the close) in %.1f ms", bytes >> 20,
              slices, refused, (now_usec() - t0) / 1000.0);
}

static void *copier_thread(void *userdata)
{
        Engine *e = userdata;
        uint64_t cursor = 0, copied = 0, t0 = now_usec();
        uint64_t rate = e->opts->rate_limit;

        pthread_setname_np(pthread_self(), "livesnap-copy");

        {
                /* Background work: it yields to the target (and to the handler, which serves it). Never
                 * raised above where it already is. */
                const char *v = getenv("LIVESNAP_COPIER_NICE");
                int want = v ? atoi(v) : COPIER_NICE, now;

                errno = 0;
                now = getpriority(PRIO_PROCESS, (id_t)gettid());
                if (errno == 0 && want > now)
                        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), want);
        }

        while (!atomic_load(&e->stop)) {
                uint64_t addr = 0;
                bool found = false, none_left;

                pthread_mutex_lock(&e->lock);
                while (e->in_event && !atomic_load(&e->stop))
                        pthread_cond_wait(&e->cond, &e->lock);
                none_left = e->pages_pending == 0;
                for (int pass = 0; pass < 2 && !found && !none_left; pass++) {
                        for (size_t i = 0; i < e->n_ranges && !found; i++) {
                                Range *rg = &e->ranges[i];
                                uint64_t a;

                                if (rg->end <= cursor)
                                        continue;
                                for (a = MAX(rg->start, cursor); a < rg->end; a += PAGE_SIZE_4K)
                                        if ((rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] & PG_STATE_MASK) ==
                                            PG_PENDING) {
                                                addr = a;
                                                found = true;
                                                break;
                                        }
                        }
                        if (!found)
                                cursor = 0; /* wrap: pages reverted or moved behind us */
                }
                if (!found && !none_left) {
                        /* Everything left is BUSY with another saver: wait for it. */
                        pthread_cond_wait(&e->cond, &e->lock);
                        pthread_mutex_unlock(&e->lock);
                        continue;
                }
                pthread_mutex_unlock(&e->lock);

                if (none_left) {
                        release_saved(e);
                        break;
                }

                uint64_t before = atomic_load(&e->bytes_done);
                int r = engine_save(e, addr, SAVE_COPY, 0, 0);
                if (r < 0) {
                        if (r != -ECANCELED)
                                engine_fail(e, r, "copying 0x%" PRIx64 " failed: %s", addr, strerror(-r));
                        break;
                }
                if (r == 0)
                        /* Overtaken by an event; let the handler read it before trying again. */
                        usleep(200);
                else
                        cursor = ALIGN_DOWN(addr, COPY_WINDOW) + COPY_WINDOW;

                if (rate > 0) {
                        copied += atomic_load(&e->bytes_done) - before;
                        uint64_t due = t0 + copied * 1000000ULL / rate, now = now_usec();
                        while (now < due && !atomic_load(&e->stop)) {
                                usleep((useconds_t)MIN(due - now, (uint64_t)50000));
                                now = now_usec();
                        }
                }
        }

        atomic_store(&e->copier_done, true);
        (void)eventfd_write(e->super_fd, 1);
        return NULL;
}

/* ---- the freeze ---- */

/*
 * With WP_UNPOPULATED a protected empty page holds a uffd-wp PTE marker, and PAGEMAP_SCAN reports a
 * marker as PAGE_IS_SWAPPED, as it does a page in swap. Taken for data, every empty page of the
 * target's heap was read (as zeros) by its first dump, which mapped the zero page into all of them
 * (55k pages, a fifth more to copy, for a freshly filled 1 GiB Redis; tests/integration/holes.sh).
 * /proc/PID/pagemap tells them apart: a uffd-wp marker shows as a swap entry with PM_UFFD_WP, of type
 * 31 (the kernel's SWP_PTE_MARKER, (1 << MAX_SWAPFILES_SHIFT) - 1, where swap files, migration and
 * device entries have lower types) and offset PTE_MARKER_UFFD_WP (bit 0). Markers can be ours or those
 * of the target's own userfaultfd; neither holds data. Without CAP_SYS_ADMIN the type and offset read
 * as 0 and such pages count as swapped, as before.
 */
#define PM_UFFD_WP (1ULL << 57)
#define PM_SWAP (1ULL << 62)
#define PM_SWAP_TYPE(e) ((e) & 0x1fULL)
#define PM_SWAP_OFFSET(e) (((e) & ((1ULL << 55) - 1)) >> 5)
#define SWP_TYPE_PTE_MARKER 31
#define PTE_MARKER_UFFD_WP 1ULL

static bool pagemap_is_marker(uint64_t entry)
{
        return (entry & (PM_SWAP | PM_UFFD_WP)) == (PM_SWAP | PM_UFFD_WP) &&
               PM_SWAP_TYPE(entry) == SWP_TYPE_PTE_MARKER && (PM_SWAP_OFFSET(entry) & PTE_MARKER_UFFD_WP);
}

typedef int (*ScanFunc)(void *userdata, uint64_t start, uint64_t end, uint64_t categories);

/* A region PAGEMAP_SCAN called swapped and not present: hands cb the runs of it that are not PTE markers.
 * If the pagemap cannot be read, the whole region, as before. */
static int scan_unmarked(int pagemap_fd, uint64_t start, uint64_t end, uint64_t categories, ScanFunc cb,
                         void *userdata)
{
        uint64_t pm[512], run = start;

        for (uint64_t a = start; a < end;) {
                size_t n = (size_t)MIN((end - a) >> PAGE_SHIFT_4K, (uint64_t)ELEMENTSOF(pm));
                ssize_t k = pread(pagemap_fd, pm, n * sizeof(uint64_t), (off_t)((a >> PAGE_SHIFT_4K) * sizeof(uint64_t)));

                if (k <= 0)
                        break;
                n = (size_t)k / sizeof(uint64_t);
                for (size_t i = 0; i < n; i++, a += PAGE_SIZE_4K) {
                        if (!pagemap_is_marker(pm[i]))
                                continue;
                        if (run < a) {
                                int r = cb(userdata, run, a, categories);
                                if (r < 0)
                                        return r;
                        }
                        run = a + PAGE_SIZE_4K;
                }
        }
        return run < end ? cb(userdata, run, end, categories) : 0;
}

/* PAGEMAP_SCAN over [start, end), cb called for each region found. A scan for the pages that hold data
 * (anyof has PAGE_IS_SWAPPED) never hands cb a uffd-wp PTE marker (an empty page, see above); a scan for
 * what a protect covered (not written) must see them, and does. */
static int pagemap_scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t inverted, uint64_t mask,
                        uint64_t anyof, uint64_t ret_mask, ScanFunc cb, void *userdata)
{
        /* Zeroed, though the kernel fills what it returns: valgrind does not know this ioctl writes
         * through arg.vec, and would take every region read from it as uninitialised. */
        struct page_region regions[512] = {};
        bool data = anyof & PAGE_IS_SWAPPED;

        while (start < end) {
                struct pm_scan_arg arg = {
                        .size = sizeof(arg),
                        .start = start,
                        .end = end,
                        .vec = (uint64_t)(uintptr_t)regions,
                        .vec_len = ELEMENTSOF(regions),
                        .category_inverted = inverted,
                        .category_mask = mask,
                        .category_anyof_mask = anyof,
                        /* to see which regions may hold markers */
                        .return_mask = ret_mask | (data ? PAGE_IS_PRESENT | PAGE_IS_SWAPPED : 0),
                };
                long n;

                n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
                if (n < 0)
                        return -errno;
                for (long i = 0; i < n; i++) {
                        const struct page_region *pr = &regions[i];
                        int r;

                        if (data && (pr->categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED)) == PAGE_IS_SWAPPED)
                                r = scan_unmarked(pagemap_fd, pr->start, pr->end, pr->categories & ret_mask, cb,
                                                  userdata);
                        else
                                r = cb(userdata, pr->start, pr->end, pr->categories & ret_mask);
                        if (r < 0)
                                return r;
                }
                if (arg.walk_end <= start)
                        break;
                start = arg.walk_end;
        }
        return 0;
}

static int mark_present(void *userdata, uint64_t start, uint64_t end, uint64_t cat)
{
        Engine *e = userdata;
        Range *rg;

        /* Under the lock: in the prepare phase the handler releases pages of other ranges meanwhile,
         * counting pages_pending too. */
        pthread_mutex_lock(&e->lock);
        rg = range_find(e, start);
        if (!rg) {
                pthread_mutex_unlock(&e->lock);
                return 0;
        }
        end = MIN(end, rg->end);
        for (uint64_t a = start; a < end; a += PAGE_SIZE_4K) {
                uint8_t *p = &rg->pages[(a - rg->start) >> PAGE_SHIFT_4K];

                if (cat & PAGE_IS_HUGE)
                        *p |= PG_HUGE;
                if (cat & PAGE_IS_PFNZERO) {
                        if (!e->pre)
                                atomic_fetch_add(&e->pages_zero_at_t, 1);
                        continue;
                }
                if ((*p & PG_STATE_MASK) != PG_PENDING) {
                        *p = (uint8_t)((*p & PG_FLAGS) | PG_PENDING);
                        e->pages_pending++;
                }
        }
        pthread_mutex_unlock(&e->lock);
        return 0;
}

/* shmem: pages not mapped by this process may still hold data; ask the file where its data is. Only
 * [start, end) of mapping m is marked. */
static int mark_shmem(Engine *e, const ProcMap *m, uint64_t start, uint64_t end)
{
        _cleanup_close_ int fd = -EBADF;
        char path[128];
        uint64_t off = m->offset + (start - m->start), end_off = m->offset + (end - m->start);

        snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)e->target->pid, m->start,
                 m->end);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return mark_present(e, start, end, 0);

        while (off < end_off) {
                off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;
                if (data < 0)
                        break;
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0)
                        hole = (off_t)end_off;
                if ((uint64_t)data >= end_off)
                        break;
                uint64_t s = m->start + ALIGN_DOWN((uint64_t)data, PAGE_SIZE_4K) - m->offset;
                uint64_t t = m->start + MIN(ALIGN_UP((uint64_t)hole, PAGE_SIZE_4K), end_off) - m->offset;
                (void)mark_present(e, MAX(s, start), MIN(t, end), 0);
                off = (uint64_t)hole;
        }
        return 0;
}

/* Hands the writer a chunk copied outside the page bookkeeping (while frozen): counted as done and as
 * part of the total at once. */
static void push_frozen(Engine *e, Chunk *c)
{
        atomic_fetch_add(&e->bytes_done, c->npages << PAGE_SHIFT_4K);
        atomic_fetch_add(&e->bytes_total, c->npages << PAGE_SHIFT_4K);
        buffer_push(e, c);
}

static int copy_frozen(void *userdata, uint64_t start, uint64_t end, uint64_t cat)
{
        Engine *e = userdata;

        for (uint64_t a = start; a < end;) {
                size_t n = MIN((end - a) >> PAGE_SHIFT_4K, (uint64_t)IMAGE_CHUNK_MAX_PAGES);
                Chunk *c = buffer_get(e, a, n, false);
                int r;

                if (!c)
                        return atomic_load(&e->stop) ? -ECANCELED : -ENOMEM;
                r = target_read_memory(e->target, a, c->data, n << PAGE_SHIFT_4K);
                if (r < 0) {
                        buffer_put_back(e, c);
                        atomic_fetch_add(&e->pages_unsaved, n);
                        (void)hole_add(e, a, a + (n << PAGE_SHIFT_4K), IMAGE_HOLE_UNSAVED);
                } else
                        push_frozen(e, c);
                a += n << PAGE_SHIFT_4K;
        }
        return 0;
}

static bool name_is_shmem(const char *name)
{
        return name && (startswith(name, "/memfd:") || startswith(name, "/dev/shm/") ||
                        startswith(name, "/SYSV") || startswith(name, "/dev/zero"));
}

/* ---- page-table work beside the target ---- */

/*
 * Changing the protection of the target's pages rewrites their page-table entries and flushes the TLB
 * of every CPU the target runs on. From another CPU while the target runs, each flush interrupts it;
 * under a hypervisor that shadows guest page tables it costs far more: on the project's 2-vCPU test
 * VM, protecting a 4 GiB Redis under load took 2.0-3.0 s from the other CPU against 0.2 s from
 * Redis's own, and Redis all but stopped meanwhile; the final release (close of the uffd, which
 * rewrites every entry once more) took 3.5-5 s against 0.3 s. So the threads that change protections
 * run on the CPU the target last ran on (the thread of the last fault, else the main thread; in a
 * Redis they are the same): the walker before each step of the prepare phase, the fault handler (whose
 * work is un-protecting for faults) every FOLLOW_EVERY_US; the copier before each slice of the
 * release. Copying and writing stay where the scheduler puts them, and the copier
 * un-protects nothing: un-protecting each 2 MiB window it saved, from its own CPU, made it the worst
 * of these remote writers (a 4 GiB Redis under load served 1.7-4.7k SET/s instead of 11-14k once
 * the copier no longer waited for a slow image writer). The target loses a share of its CPU while
 * the work runs instead of being slowed by it from afar; the copier's nice value (COPIER_NICE) lets
 * the target have that CPU first, so the release mostly runs while the target waits for work.
 * LIVESNAP_NO_FOLLOW=1 turns following off.
 */
static void follow_target(Engine *e)
{
        pid_t pid = e->target->pid, tid = atomic_load(&e->fault_tid);
        cpu_set_t one;
        unsigned cpu;

        if (!e->follow)
                return;
        /* The thread that faulted last is the one using the memory; ptid is as the target's pid
         * namespace numbers it, so outside ours it may name no thread of the target: then the main
         * thread it is. */
        if ((tid <= 0 || proc_stat_cpu_read(pid, tid, &cpu) < 0) && proc_stat_cpu_read(pid, pid, &cpu) < 0)
                return;
        if (!CPU_ISSET(cpu, &e->cpus))
                return;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        (void)sched_setaffinity(0, sizeof(one), &one);
}

static void unfollow_target(Engine *e)
{
        if (e->follow)
                (void)sched_setaffinity(0, sizeof(e->cpus), &e->cpus);
}

/* ---- covering mappings: register, protect, record what is present ---- */

#define PREPARE_SLICE (32ULL << 20) /* protected and scanned between two looks at the uffd */
#define REPROTECT_GAP (16 * PAGE_SIZE_4K) /* dirty pages this close share one ioctl */
#define REPROTECT_RUNS 512                /* ioctls per step of a pass, between two looks at the uffd */
#define DIRTY_LEFT 512                    /* few enough dirty pages to re-protect inside the freeze */
#define PREPARE_PASSES 8
#define PASS_ENOENT_RETRIES 100 /* steps, about 1 ms apart, for the handler to apply an event */

static bool vma_is_special(const ProcMap *m)
{
        return m->name && m->name[0] == '[' && !streq(m->name, "[heap]") && !startswith(m->name, "[stack") &&
               !startswith(m->name, "[anon");
}

static bool vma_is_shmem(const ProcMap *m)
{
        return m->shared || name_is_shmem(m->name);
}

/* hugetlb pages are protected and un-protected whole only. */
static bool vma_is_hugetlb(Engine *e, const ProcMap *m)
{
        struct statfs sfs;
        char path[128];

        if (!m->name)
                return false;
        if (startswith(m->name, "/anon_hugepage"))
                return true;
        if (!m->shared || m->inode == 0 || m->name[0] != '/')
                return false;
        snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)e->target->pid, m->start,
                 m->end);
        return statfs(path, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC;
}

static int register_vma(Engine *e, const ProcMap *m)
{
        struct uffdio_register reg = {
                .range = { .start = m->start, .len = m->end - m->start },
                .mode = UFFDIO_REGISTER_MODE_WP,
        };

        /* Registering again with the same uffd is a no-op; the whole VMA, so that it is not split. */
        return ioctl(e->uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

/* The index of the first of the n elements at v (size bytes each, in order of the uint64_t at offset off
 * in each: an address) whose address is at least addr; n if none. */
static size_t lower_bound_addr(const void *v, size_t n, size_t size, size_t off, uint64_t addr)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                uint64_t a;

                memcpy(&a, (const uint8_t *)v + mid * size + off, sizeof(a));
                if (a < addr)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

/* The first range starting at or after addr, or NULL. */
static Range *range_next(Engine *e, uint64_t addr)
{
        size_t i = lower_bound_addr(e->ranges, e->n_ranges, sizeof(Range), offsetof(Range, start), addr);

        return i < e->n_ranges ? &e->ranges[i] : NULL;
}

/* Whether ranges cover any of [start, end), and whether they leave any of it uncovered. */
static void coverage(Engine *e, uint64_t start, uint64_t end, bool *ret_any, bool *ret_gaps)
{
        uint64_t a = start;

        *ret_any = *ret_gaps = false;
        while (a < end) {
                Range *rg = range_find(e, a);
                if (rg) {
                        *ret_any = true;
                        a = rg->end;
                        continue;
                }
                *ret_gaps = true;
                rg = range_next(e, a);
                if (!rg || rg->start >= end)
                        return;
                a = rg->start;
        }
}

static int spans_add(void *userdata, uint64_t start, uint64_t end, uint64_t categories)
{
        Spans *s = userdata;

        if (s->n > 0 && s->v[s->n - 1][1] == start) {
                s->v[s->n - 1][1] = end;
                return 0;
        }
        if (s->n == s->allocated) {
                size_t n = MAX(s->allocated * 2, (size_t)8);
                void *p = realloc(s->v, n * sizeof(*s->v));
                if (!p)
                        return -ENOMEM;
                s->v = p;
                s->allocated = n;
        }
        s->v[s->n][0] = start;
        s->v[s->n][1] = end;
        s->n++;
        return 0;
}

/* Adds a range for [start, end) and records the pages present in it. */
static int track_span(Engine *e, const ProcMap *m, uint64_t start, uint64_t end, bool hugetlb)
{
        Range rg = { .start = start, .end = end, .image_start = start };
        size_t npages = (end - start) >> PAGE_SHIFT_4K;
        int r;

        rg.pages = calloc(npages, 1);
        if (!rg.pages)
                return -ENOMEM;
        if (hugetlb)
                memset(rg.pages, PG_HUGE, npages);
        pthread_mutex_lock(&e->lock);
        r = range_insert(e, &rg);
        pthread_mutex_unlock(&e->lock);
        if (r < 0) {
                free(rg.pages);
                return r;
        }

        if (vma_is_shmem(m))
                return mark_shmem(e, m, start, end);
        return pagemap_scan(e->pagemap_fd, start, end, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                            PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_HUGE, mark_present, e);
}

/*
 * Starts tracking [start, end) of the registered mapping m: protects it, adds its range, then records
 * the pages present. Protect first: the target may be running, and a page it populates after the
 * protect faults, so it is dirty before the scan can miss it. Returns 1 if covered, 0 if (some of) it
 * must be tried again later (an event is in flight, or the mapping changed under us), or a negative
 * errno.
 *
 * While the target runs, m may be stale: the kernel registers and protects whatever mappings lie in the
 * range now and silently skips holes, and a mapping made later in such a hole is neither registered nor
 * announced by any event. So a range must never cover what was not protected: with WP_UNPOPULATED every
 * page of a protected mapping carries the uffd-wp bit (or a marker), and PAGEMAP_SCAN reports exactly
 * those (not "written"); only they get ranges. The rest is left uncovered, for a later walk or the
 * freeze to cover.
 */
static int cover_span(Engine *e, const ProcMap *m, uint64_t start, uint64_t end, bool hugetlb)
{
        Spans spans = {};
        uint64_t covered = 0;
        int r;

        r = uffd_wp(e, start, end - start, true);
        if (r == -EAGAIN || r == -ENOENT)
                return 0;
        if (r < 0)
                return r;

        if (!e->prepare)
                /* Only the freeze covers (the target is stopped and m is fresh), and empty pages carry no
                 * bit to find. */
                r = track_span(e, m, start, end, hugetlb);
        else {
                r = pagemap_scan(e->pagemap_fd, start, end, PAGE_IS_WRITTEN, PAGE_IS_WRITTEN, 0, 0, spans_add,
                                 &spans);
                for (size_t i = 0; i < spans.n && r >= 0; i++) {
                        r = track_span(e, m, spans.v[i][0], spans.v[i][1], hugetlb);
                        covered += spans.v[i][1] - spans.v[i][0];
                }
                free(spans.v);
        }
        if (r < 0)
                return r;
        return !e->prepare || covered == end - start;
}

/*
 * Holes. With WP_UNPOPULATED a protect puts a marker in every empty page, and a marker needs a page
 * table: protecting a sparse mapping whole (an AddressSanitizer shadow of terabytes, a heap reserved
 * with MAP_NORESERVE) grew the target's page tables by 2 MiB for every GiB it spans (a 64 GiB mapping
 * holding 64 MiB: 128 MiB of page tables, kept until the target exits) and took seconds to minutes. So
 * in a private anonymous mapping, runs of HOLE_MIN or more without a page are neither protected nor
 * tracked. An empty page there reads as zero at the instant, whatever the target does with it later.
 * One the target fills before the instant carries no marker and faults nothing: the freeze finds it,
 * since it covers every part of a registered mapping that no range covers, and there covers what holds
 * pages. Private anonymous memory only: an empty page of shared memory may still hold data in its file,
 * and hugetlb keeps markers of its own.
 */
#define HOLE_MIN PREPARE_SLICE

static bool vma_may_have_holes(const ProcMap *m, bool hugetlb)
{
        return !hugetlb && !m->shared && m->inode == 0 && m->end - m->start >= HOLE_MIN;
}

/* The start of the first page in [start, end) holding data or a marker, or end. The walk stops there. */
static int first_populated(Engine *e, uint64_t start, uint64_t end, uint64_t *ret_first)
{
        while (start < end) {
                struct page_region region = {};
                struct pm_scan_arg arg = {
                        .size = sizeof(arg),
                        .start = start,
                        .end = end,
                        .vec = (uint64_t)(uintptr_t)&region,
                        .vec_len = 1,
                        .max_pages = 1,
                        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                };
                long n = ioctl(e->pagemap_fd, PAGEMAP_SCAN, &arg);

                if (n < 0)
                        return -errno;
                if (n > 0) {
                        *ret_first = region.start;
                        return 0;
                }
                if (arg.walk_end <= start)
                        break;
                start = arg.walk_end;
        }
        *ret_first = end;
        return 0;
}

/* The parts of [start, end) to protect, appended to *blocks: every run of pages holding data or a marker,
 * widened to 2 MiB blocks and joined with its neighbours, and with the ends of [start, end), across less
 * than HOLE_MIN. */
static int populated_blocks(Engine *e, uint64_t start, uint64_t end, Spans *blocks)
{
        struct page_region regions[256] = {};
        size_t first = blocks->n;
        uint64_t a = start;

        while (a < end) {
                /* return_mask 0: runs of pages of any such kind come as one region */
                struct pm_scan_arg arg = {
                        .size = sizeof(arg),
                        .start = a,
                        .end = end,
                        .vec = (uint64_t)(uintptr_t)regions,
                        .vec_len = ELEMENTSOF(regions),
                        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                };
                long n = ioctl(e->pagemap_fd, PAGEMAP_SCAN, &arg);

                if (n < 0)
                        return -errno;
                for (long i = 0; i < n; i++) {
                        uint64_t s = MAX(ALIGN_DOWN(regions[i].start, HPAGE_SIZE_2M), start);
                        uint64_t t = MIN(ALIGN_UP(regions[i].end, HPAGE_SIZE_2M), end);

                        if (blocks->n == first && s - start < HOLE_MIN)
                                s = start;
                        if (blocks->n > first && s - blocks->v[blocks->n - 1][1] < HOLE_MIN)
                                s = blocks->v[blocks->n - 1][1];
                        if (blocks->n > first && s <= blocks->v[blocks->n - 1][1])
                                blocks->v[blocks->n - 1][1] = MAX(blocks->v[blocks->n - 1][1], t);
                        else if (spans_add(blocks, s, t, 0) < 0)
                                return -ENOMEM;
                }
                if (arg.walk_end <= a)
                        break;
                a = arg.walk_end;
        }
        if (blocks->n == first)
                return end - start < HOLE_MIN ? spans_add(blocks, start, end, 0) : 0;
        if (end - blocks->v[blocks->n - 1][1] < HOLE_MIN)
                blocks->v[blocks->n - 1][1] = end;
        return 0;
}

/*
 * Covers [start, end) of the registered mapping m, which no range covers yet: all of it, or in a mapping
 * that may have holes only what populated_blocks() finds. A part no longer than HOLE_MIN holds no hole:
 * that is a step of the walk, which steps over holes itself. Returns as cover_span().
 */
static int cover_part(Engine *e, const ProcMap *m, uint64_t start, uint64_t end, bool hugetlb)
{
        Spans blocks = {};
        int r, covered = 1;

        if (!vma_may_have_holes(m, hugetlb) || end - start <= HOLE_MIN)
                return cover_span(e, m, start, end, hugetlb);
        r = populated_blocks(e, start, end, &blocks);
        for (size_t i = 0; i < blocks.n && r >= 0; i++) {
                r = cover_span(e, m, blocks.v[i][0], blocks.v[i][1], hugetlb);
                if (r == 0)
                        covered = 0;
        }
        free(blocks.v);
        return r < 0 ? r : covered;
}

/* cover_part() on every part of [start, end) that no range covers yet. *ret_retry says some part
 * could not be covered now. */
static int cover_gaps(Engine *e, const ProcMap *m, uint64_t start, uint64_t end, bool hugetlb, bool *ret_retry)
{
        uint64_t a = start;

        while (a < end) {
                Range *rg = range_find(e, a);
                uint64_t b;
                int r;

                if (rg) {
                        a = rg->end;
                        continue;
                }
                rg = range_next(e, a);
                b = rg ? MIN(rg->start, end) : end;
                r = cover_part(e, m, a, b, hugetlb);
                if (r < 0)
                        return r;
                if (r == 0)
                        *ret_retry = true;
                a = b;
        }
        return 0;
}

/* ---- private file mappings: written pages found with a WP_ASYNC uffd ---- */

/*
 * The sync uffd cannot register private file mappings (.data, .got, relro), so without more their
 * private pages would all be copied inside the freeze. A second uffd with WP_ASYNC can: a write to a
 * page it protects is resolved by the kernel, which only clears the page's bit, and PAGEMAP_SCAN reports
 * the page as written. So the prepare phase protects such a mapping's private pages and copies them into
 * chunks it holds; the freeze copies again only what the target wrote since (or dropped), and copies
 * the private pages that appeared meanwhile. The target never waits on this uffd.
 */
#define PRIV_HELD_MAX (16ULL << 20) /* private file pages held from the prepare phase, at most */

static bool vma_is_private_file(const ProcMap *m)
{
        return !m->shared && m->inode != 0 && m->name && m->name[0] == '/' && !name_is_shmem(m->name);
}

/* e->priv is in address order, without overlaps: the first entry that ends above addr. */
static size_t priv_lower_bound(const Engine *e, uint64_t addr)
{
        return lower_bound_addr(e->priv, e->n_priv, sizeof(PrivTrack), offsetof(PrivTrack, end), addr + 1);
}

/* The tracked mapping overlapping [start, end), or NULL. */
static PrivTrack *priv_find(Engine *e, uint64_t start, uint64_t end)
{
        size_t i = priv_lower_bound(e, start);

        return i < e->n_priv && e->priv[i].start < end ? &e->priv[i] : NULL;
}

/* The tracked mapping that is m, unchanged since it was tracked, or NULL. */
static PrivTrack *priv_match(Engine *e, const ProcMap *m)
{
        PrivTrack *pt = priv_find(e, m->start, m->end);

        if (pt && pt->start == m->start && pt->end == m->end && pt->pgoff == m->offset && pt->inode == m->inode &&
            pt->dev_major == m->dev_major && pt->dev_minor == m->dev_minor)
                return pt;
        return NULL;
}

/* The first entry of e->unreg (in address order) starting at or after start. */
static size_t unreg_lower_bound(const Engine *e, uint64_t start)
{
        return lower_bound_addr(e->unreg, e->n_unreg, sizeof(Unregistrable), offsetof(Unregistrable, start), start);
}

static bool unreg_is(const Unregistrable *u, const ProcMap *m)
{
        return u->start == m->start && u->end == m->end && u->pgoff == m->offset && u->inode == m->inode &&
               u->dev_major == m->dev_major && u->dev_minor == m->dev_minor && u->prot == m->prot;
}

/*
 * Whether m is a mapping the prepare phase could not register, unchanged since. The freeze then goes
 * straight to copying what the file does not hold: a failed UFFDIO_REGISTER takes the map's lock for
 * writing, and a Redis has ~90 such mappings (its libraries), 0.2-0.3 ms of the freeze. Copying what the
 * file does not hold is right for any mapping, registrable or not: a stale answer costs time, never
 * correctness.
 */
static bool unreg_known(const Engine *e, const ProcMap *m)
{
        size_t i = unreg_lower_bound(e, m->start);

        return i < e->n_unreg && unreg_is(&e->unreg[i], m);
}

/* Remembers that m could not be registered, in address order (the walk goes up the map, so this appends
 * but for mappings the second walk finds). Best effort: forgetting only costs the freeze a try. */
static void unreg_add(Engine *e, const ProcMap *m)
{
        size_t i = unreg_lower_bound(e, m->start);
        Unregistrable *u;

        if (i < e->n_unreg && unreg_is(&e->unreg[i], m))
                return;
        u = reallocarray(e->unreg, e->n_unreg + 1, sizeof(Unregistrable));
        if (!u)
                return;
        e->unreg = u;
        memmove(&u[i + 1], &u[i], (e->n_unreg - i) * sizeof(Unregistrable));
        u[i] = (Unregistrable){ .start = m->start, .end = m->end, .pgoff = m->offset, .inode = m->inode,
                                .dev_major = m->dev_major, .dev_minor = m->dev_minor, .prot = m->prot };
        e->n_unreg++;
}

static void priv_drop_held(Engine *e, PrivTrack *pt)
{
        while (pt->held) {
                Chunk *c = pt->held;

                pt->held = c->next;
                e->priv_held_pages -= c->npages;
                buffer_put_back(e, c);
        }
        pt->held_tail = NULL;
}

/*
 * A private file mapping this size or smaller is protected whole when tracked, not only its private pages:
 * one with none of them then costs the freeze a scan for written pages only, which, unlike a scan for the
 * private pages, does not look up each present page of the file (a library's text). Protecting puts a
 * marker in each empty page, hence page tables, so larger mappings keep to their private pages. Building
 * with -DPRIV_WATCH_MAX=0 protects none whole (bench/README.md, "Library mappings protected whole").
 */
#ifndef PRIV_WATCH_MAX
#define PRIV_WATCH_MAX (32ULL << 20)
#endif

/* Adds [start, end), the private pages of m, to what pt holds. */
static int priv_hold(Engine *e, PrivTrack *pt, uint64_t start, uint64_t end)
{
        for (uint64_t a = start; a < end;) {
                size_t n = MIN((end - a) >> PAGE_SHIFT_4K, (uint64_t)IMAGE_CHUNK_MAX_PAGES);
                Chunk *c = buffer_get(e, a, n, false);

                if (!c)
                        return -ENOMEM;
                if (target_read_memory(e->target, a, c->data, n << PAGE_SHIFT_4K) < 0)
                        buffer_put_back(e, c); /* not held: the freeze copies these */
                else {
                        if (pt->held_tail)
                                pt->held_tail->next = c;
                        else
                                pt->held = c;
                        pt->held_tail = c;
                        e->priv_held_pages += n;
                }
                a += n << PAGE_SHIFT_4K;
        }
        return 0;
}

/* The private pages of the mapping [start, end) into spans; returns how many, or a negative errno. */
static int64_t private_spans(Engine *e, uint64_t start, uint64_t end, Spans *spans)
{
        uint64_t pages = 0;
        int r = pagemap_scan(e->pagemap_fd, start, end, PAGE_IS_FILE, PAGE_IS_FILE, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                             PAGE_IS_PRESENT, spans_add, spans);

        if (r < 0)
                return r;
        for (size_t i = 0; i < spans->n; i++)
                pages += (spans->v[i][1] - spans->v[i][0]) >> PAGE_SHIFT_4K;
        return (int64_t)pages;
}

/*
 * Prepare phase, handler thread, the target running: starts tracking the private file mapping m, which
 * the sync uffd refused. Protect first, then copy: a page written after its protect is written again at
 * the instant as far as the scan is concerned, so the copy of a page still protected then is what the page
 * holds then. A mapping of PRIV_WATCH_MAX or less is protected whole, then looked at: with no private page
 * it is watched (any private page at the instant was written since); a larger one is tracked only if it
 * has private pages, and only they are protected. Best effort: a mapping not tracked is copied whole by
 * the freeze, as without this uffd.
 */
static void priv_track(Engine *e, const ProcMap *m)
{
        struct uffdio_register reg = {
                .range = { .start = m->start, .len = m->end - m->start },
                .mode = UFFDIO_REGISTER_MODE_WP,
        };
        bool whole = m->end - m->start <= PRIV_WATCH_MAX;
        Spans spans = {};
        int64_t pages = 0;
        PrivTrack *pt;
        size_t idx;

        if (e->async_uffd < 0 || !vma_is_private_file(m) || priv_find(e, m->start, m->end))
                return;
        if (!whole) {
                pages = private_spans(e, m->start, m->end, &spans);
                /* A mapping without private pages costs the freeze one scan: nothing to gain. */
                if (pages <= 0 || e->priv_held_pages + (uint64_t)pages > e->priv_held_max)
                        goto out;
        }
        if (ioctl(e->async_uffd, UFFDIO_REGISTER, &reg) < 0)
                goto out; /* the map changed under us, or the target's own uffd holds it */
        pt = reallocarray(e->priv, e->n_priv + 1, sizeof(PrivTrack));
        if (!pt)
                goto out;
        e->priv = pt;
        idx = priv_lower_bound(e, m->start);
        memmove(&e->priv[idx + 1], &e->priv[idx], (e->n_priv - idx) * sizeof(PrivTrack));
        e->n_priv++;
        pt = &e->priv[idx];
        *pt = (PrivTrack){ .start = m->start, .end = m->end, .pgoff = m->offset, .inode = m->inode,
                           .dev_major = m->dev_major, .dev_minor = m->dev_minor };

        if (whole) {
                if (uffd_writeprotect(e->async_uffd, m->start, m->end - m->start, true) < 0)
                        goto untrack;
                pages = private_spans(e, m->start, m->end, &spans);
                if (pages < 0)
                        goto untrack;
                pt->watched = pages == 0;
                if (e->priv_held_pages + (uint64_t)pages > e->priv_held_max)
                        goto out; /* tracked, nothing held: the freeze copies its private pages */
        } else
                for (size_t i = 0; i < spans.n; i++)
                        if (uffd_writeprotect(e->async_uffd, spans.v[i][0], spans.v[i][1] - spans.v[i][0], true) < 0)
                                goto untrack;
        for (size_t i = 0; i < spans.n; i++)
                if (priv_hold(e, pt, spans.v[i][0], spans.v[i][1]) < 0)
                        break;
        goto out;
untrack:
        /* Forgotten (nothing held yet): the freeze copies its private pages as if never tracked. */
        memmove(&e->priv[idx], &e->priv[idx + 1], (e->n_priv - idx - 1) * sizeof(PrivTrack));
        e->n_priv--;
out:
        free(spans.v);
}

/* copy_frozen() for a private file mapping not tracked: counted as copied in the freeze. */
static int copy_frozen_private(void *userdata, uint64_t start, uint64_t end, uint64_t cat)
{
        Engine *e = userdata;

        e->priv_copied += (end - start) >> PAGE_SHIFT_4K;
        return copy_frozen(e, start, end, cat);
}

/* The first span of s (sorted, disjoint) that ends above addr. */
static size_t spans_lower_bound(const Spans *s, uint64_t addr)
{
        return lower_bound_addr(s->v, s->n, sizeof(*s->v), sizeof(uint64_t), addr + 1);
}

static bool spans_contain(const Spans *s, uint64_t addr)
{
        size_t i = spans_lower_bound(s, addr);

        return i < s->n && s->v[i][0] <= addr;
}

/* Calls cb for each span of s clipped to [start, end). */
static int spans_each_in(const Spans *s, uint64_t start, uint64_t end, ScanFunc cb, void *userdata)
{
        for (size_t i = spans_lower_bound(s, start); i < s->n && s->v[i][0] < end; i++) {
                int r = cb(userdata, MAX(s->v[i][0], start), MIN(s->v[i][1], end), 0);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct PrivCopy {
        Engine *e;
        const Chunk *c; /* the first held chunk not wholly below the spans seen so far */
} PrivCopy;

static uint64_t chunk_end(const Chunk *c)
{
        return c->vaddr + ((uint64_t)c->npages << PAGE_SHIFT_4K);
}

/* A span of private pages at the instant: copies what no held chunk holds. */
static int priv_copy_unheld(void *userdata, uint64_t start, uint64_t end, uint64_t cat)
{
        PrivCopy *pc = userdata;

        for (uint64_t a = start; a < end;) {
                uint64_t b;

                while (pc->c && chunk_end(pc->c) <= a)
                        pc->c = pc->c->next;
                b = pc->c ? MIN(MAX(pc->c->vaddr, a), end) : end;
                if (b == a) {
                        a = MIN(chunk_end(pc->c), end); /* held */
                        continue;
                }
                int r = copy_frozen(pc->e, a, b, cat);
                if (r < 0)
                        return r;
                pc->e->priv_copied += (b - a) >> PAGE_SHIFT_4K;
                a = b;
        }
        return 0;
}

/* The private pages of mappings at the instant: all of them, and those present and not written since
 * the prepare phase protected them (in a tracked mapping, what a held copy of them still holds). */
typedef struct PrivScan {
        Spans all, clean;
} PrivScan;

static int priv_scan_add(void *userdata, uint64_t start, uint64_t end, uint64_t cat)
{
        PrivScan *ps = userdata;
        int r = spans_add(&ps->all, start, end, cat);

        if (r >= 0 && (cat & (PAGE_IS_PRESENT | PAGE_IS_WRITTEN)) == PAGE_IS_PRESENT)
                r = spans_add(&ps->clean, start, end, cat);
        return r;
}

/*
 * The freeze, for the tracked mapping pt (unchanged, so what the prepare phase held is of this mapping),
 * ps a scan covering it: held pages no longer present, private and protected were written or dropped
 * since their copy, and are read again; private pages not held are copied; then everything goes to the
 * writer.
 */
static int priv_freeze(Engine *e, PrivTrack *pt, const PrivScan *ps)
{
        PrivCopy pc = { .e = e, .c = pt->held };
        int r = 0;

        for (Chunk *c = pt->held; r >= 0 && c; c = c->next)
                for (size_t i = 0; r >= 0 && i < c->npages; i++) {
                        uint64_t a = c->vaddr + ((uint64_t)i << PAGE_SHIFT_4K);

                        if (spans_contain(&ps->clean, a)) {
                                e->priv_early++;
                                continue;
                        }
                        r = target_read_memory(e->target, a, c->data + (i << PAGE_SHIFT_4K), PAGE_SIZE_4K);
                        e->priv_refreshed++;
                }
        if (r >= 0)
                r = spans_each_in(&ps->all, pt->start, pt->end, priv_copy_unheld, &pc);
        if (r < 0) {
                priv_drop_held(e, pt);
                return r;
        }
        while (pt->held) {
                Chunk *c = pt->held;

                pt->held = c->next;
                c->next = NULL;
                e->priv_held_pages -= c->npages;
                push_frozen(e, c);
        }
        pt->held_tail = NULL;
        return 0;
}

/* The tracked mapping that is m, unchanged since, if it is watched (see priv_track()). */
static bool priv_watched(Engine *e, const ProcMap *m)
{
        PrivTrack *pt = priv_match(e, m);

        return pt && pt->watched;
}

/*
 * The freeze, for the private file mappings maps[first, first + n), which the sync uffd does not take,
 * next to each other in the map (a library is four or five of them): one scan for all those of one kind
 * next to each other (each scan costs the freeze ~3 us; 91 of them took 0.3 ms of a Redis's freeze).
 * Watched ones: what was written since they were protected is all they have of their own. Others: their
 * private pages, then each is copied on its own, a tracked one from what the prepare phase held.
 */
static int priv_freeze_run(Engine *e, const ProcMap *maps, size_t first, size_t n, char *err, size_t errlen)
{
        size_t end = first + n;
        int r = 0;

        for (size_t i = first, j; r >= 0 && i < end; i = j) {
                bool watched = priv_watched(e, &maps[i]);
                const ProcMap *m = &maps[i];
                PrivScan ps = {};

                for (j = i + 1; j < end && priv_watched(e, &maps[j]) == watched;)
                        j++;
                if (watched)
                        r = pagemap_scan(e->pagemap_fd, m->start, maps[j - 1].end, 0, PAGE_IS_WRITTEN,
                                         PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT, copy_frozen_private, e);
                else
                        r = pagemap_scan(e->pagemap_fd, m->start, maps[j - 1].end, PAGE_IS_FILE, PAGE_IS_FILE,
                                         PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_WRITTEN,
                                         priv_scan_add, &ps);
                if (r < 0)
                        snprintf(err, errlen, "copying 0x%" PRIx64 "-0x%" PRIx64 " (%s and %zu more) failed: %s",
                                 m->start, maps[j - 1].end, m->name ?: "?", j - i - 1, strerror(-r));
                for (size_t k = i; !watched && r >= 0 && k < j; k++) {
                        PrivTrack *pt;

                        m = &maps[k];
                        pt = priv_match(e, m);
                        r = pt ? priv_freeze(e, pt, &ps) : spans_each_in(&ps.all, m->start, m->end, copy_frozen_private, e);
                        if (r < 0)
                                snprintf(err, errlen, "copying 0x%" PRIx64 "-0x%" PRIx64 " (%s) failed: %s", m->start,
                                         m->end, m->name ?: "?", strerror(-r));
                }
                free(ps.all.v);
                free(ps.clean.v);
        }
        return r;
}

/* ---- the prepare phase: the handler's work between two looks at the uffd ---- */

static void dirty_push(Engine *e, uint64_t addr)
{
        if (e->n_dirty == e->n_dirty_allocated) {
                size_t n = MAX(e->n_dirty_allocated * 2, (size_t)1024);
                uint64_t *p = realloc(e->dirty, n * sizeof(uint64_t));
                if (!p) {
                        e->dirty_lost = true; /* the flags are the truth; the list is rebuilt from them */
                        return;
                }
                e->dirty = p;
                e->n_dirty_allocated = n;
        }
        e->dirty[e->n_dirty++] = addr;
}

/* The page at a, in rg, was released (or lost its protection): dirty, and pending since it is present
 * now, or may be at the instant. Lock held. */
static void page_release(Engine *e, Range *rg, uint64_t a)
{
        uint8_t *p = &rg->pages[(a - rg->start) >> PAGE_SHIFT_4K];

        if ((*p & PG_STATE_MASK) == PG_NONE) {
                *p = (uint8_t)((*p & PG_FLAGS) | PG_PENDING);
                e->pages_pending++;
        }
        if (!(*p & PG_DIRTY)) {
                *p |= PG_DIRTY;
                dirty_push(e, a);
        }
}

static void page_span(const Range *rg, uint64_t addr, uint64_t *ret_start, uint64_t *ret_end)
{
        uint64_t a = ALIGN_DOWN(addr, PAGE_SIZE_4K);

        if (rg && (rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] & PG_HUGE)) {
                *ret_start = MAX(ALIGN_DOWN(a, HPAGE_SIZE_2M), rg->start);
                *ret_end = MIN(ALIGN_DOWN(a, HPAGE_SIZE_2M) + HPAGE_SIZE_2M, rg->end);
        } else {
                *ret_start = a;
                *ret_end = a + PAGE_SIZE_4K;
        }
}

/* A write fault before the instant: nothing to save yet; release the page (or its huge page). Returns 1
 * when done, 0 to retry after the event in flight has been read, 2 to retry after the walker's step, or
 * a negative errno. */
static int pre_release(Engine *e, uint64_t addr)
{
        uint64_t s, t;
        Range *rg;
        int r;

        pthread_mutex_lock(&e->lock);
        rg = range_find(e, addr);
        page_span(rg, addr, &s, &t);
        if (e->walking && s < e->step_hi && e->step_lo < t) {
                /* The walker is protecting and scanning this part: its pages get their states when the
                 * step is done, and a release now would race with that. */
                e->step_deferred = true;
                pthread_mutex_unlock(&e->lock);
                return 2;
        }
        r = uffd_wp(e, s, t - s, false);
        if (r == -EAGAIN) {
                pthread_mutex_unlock(&e->lock);
                return 0;
        }
        for (uint64_t a = s; rg && a < t; a += PAGE_SIZE_4K)
                page_release(e, rg, a);
        e->pre_faults++;
        pthread_mutex_unlock(&e->lock);
        if (r == -ESRCH || (r < 0 && rg))
                return r;
        return 1; /* not a page we track (gone, or not covered yet): the freeze will see to it */
}

/*
 * Re-protects dirty pages, coalescing neighbours into one ioctl each, at most max_runs ioctls. What is
 * left stays on the list. Returns 1 if pages are left, 0 if none, -EAGAIN if an event is in flight (the
 * run that failed is dirty again), or another negative errno. *ret_pages counts pages protected.
 */
static int reprotect_dirty(Engine *e, size_t max_runs, uint64_t *ret_pages)
{
        uint64_t *list, run_s = 0, run_e = 0;
        Range *run_rg = NULL;
        size_t n, i, runs = 0;
        int r = 0;

        pthread_mutex_lock(&e->lock);
        if (e->dirty_lost) {
                e->dirty_lost = false;
                e->n_dirty = 0;
                for (size_t k = 0; k < e->n_ranges; k++)
                        for (uint64_t a = e->ranges[k].start; a < e->ranges[k].end; a += PAGE_SIZE_4K)
                                if (e->ranges[k].pages[(a - e->ranges[k].start) >> PAGE_SHIFT_4K] & PG_DIRTY)
                                        dirty_push(e, a);
        }
        list = e->dirty;
        n = e->n_dirty;
        e->dirty = NULL;
        e->n_dirty = e->n_dirty_allocated = 0;
        if (n > 1)
                qsort(list, n, sizeof(uint64_t), cmp_u64);

        for (i = 0; i <= n; i++) {
                Range *rg = NULL;
                uint64_t a = 0;

                if (i < n) {
                        a = list[i];
                        rg = range_find(e, a);
                        if (!rg || !(rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] & PG_DIRTY))
                                continue; /* stale, or listed twice */
                        if (rg == run_rg && a >= run_e && a - run_e <= REPROTECT_GAP) {
                                run_e = a + PAGE_SIZE_4K;
                                rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] &= (uint8_t)~PG_DIRTY;
                                continue;
                        }
                        if (runs == max_runs) {
                                /* Enough for this step: flush the open run, leave the rest listed. */
                                break;
                        }
                }
                if (run_rg) {
                        r = uffd_wp(e, run_s, run_e - run_s, true);
                        if (r < 0) {
                                for (uint64_t b = run_s; b < run_e; b += PAGE_SIZE_4K)
                                        page_release(e, run_rg, b);
                                run_rg = NULL;
                                break;
                        }
                        *ret_pages += (run_e - run_s) >> PAGE_SHIFT_4K;
                        runs++;
                        run_rg = NULL;
                }
                if (i == n)
                        break;
                run_rg = rg;
                run_s = a;
                run_e = a + PAGE_SIZE_4K;
                rg->pages[(a - rg->start) >> PAGE_SHIFT_4K] &= (uint8_t)~PG_DIRTY;
        }
        if (run_rg) {
                /* Stopped at max_runs with a run open: flush it. */
                int q = uffd_wp(e, run_s, run_e - run_s, true);
                if (q < 0) {
                        for (uint64_t b = run_s; b < run_e; b += PAGE_SIZE_4K)
                                page_release(e, run_rg, b);
                        r = q;
                } else
                        *ret_pages += (run_e - run_s) >> PAGE_SHIFT_4K;
        }
        /* Whatever is left and still dirty goes back on the list. */
        for (; i < n; i++) {
                Range *rg = range_find(e, list[i]);
                if (rg && (rg->pages[(list[i] - rg->start) >> PAGE_SHIFT_4K] & PG_DIRTY))
                        dirty_push(e, list[i]);
        }
        if (r >= 0)
                r = e->n_dirty > 0;
        pthread_mutex_unlock(&e->lock);
        free(list);
        return r;
}

/* One slice of the walk over the map: registers the next mapping (whole, once) and covers up to
 * PREPARE_SLICE of it. Returns 1 if there is more to walk, 0 when done, or a negative errno. */
static int prepare_walk_step(Engine *e)
{
        while (e->pre_next_map < e->n_pre_maps) {
                const ProcMap *m = &e->pre_maps[e->pre_next_map];
                uint64_t s, t;
                bool retry = false, any, gaps;
                int r;

                if (e->pre_next_addr == 0) {
                        /* Mappings already tracked (the walk runs twice) are not registered again. */
                        coverage(e, m->start, m->end, &any, &gaps);
                        if (vma_is_special(m) || !gaps) {
                                e->pre_next_map++;
                                continue;
                        }
                        r = register_vma(e, m);
                        if (r < 0) {
                                /* The freeze copies or flags what cannot be registered, but a private file
                                 * mapping the async uffd tracks costs it only what the target wrote since.
                                 * EINVAL: of a kind the uffd does not take (any other error may pass). */
                                if (r == -EINVAL)
                                        unreg_add(e, m);
                                priv_track(e, m);
                                e->pre_next_map++;
                                continue;
                        }
                        e->pre_next_addr = m->start;
                        e->pre_hugetlb = vma_is_hugetlb(e, m);
                }
                s = e->pre_next_addr;
                if (vma_may_have_holes(m, e->pre_hugetlb)) {
                        /* Straight over a hole (see holes above): one scan, however large. */
                        uint64_t first = m->end;

                        r = first_populated(e, s, m->end, &first);
                        if (r < 0)
                                return r;
                        if (first >= m->end && m->end - s >= HOLE_MIN) {
                                e->pre_next_map++;
                                e->pre_next_addr = 0;
                                continue;
                        }
                        if (first - s >= HOLE_MIN)
                                s = ALIGN_DOWN(first, HPAGE_SIZE_2M);
                }
                t = MIN(m->end, s + PREPARE_SLICE);
                pthread_mutex_lock(&e->lock);
                e->step_lo = s;
                e->step_hi = t;
                pthread_mutex_unlock(&e->lock);
                r = cover_gaps(e, m, s, t, e->pre_hugetlb, &retry);
                if (r < 0)
                        return r;
                /* A part not covered now (the map changed) is the freeze's to cover. */
                if (t == m->end) {
                        e->pre_next_map++;
                        e->pre_next_addr = 0;
                } else
                        e->pre_next_addr = t;
                return 1;
        }
        return 0;
}

/*
 * The walker's work, one step at a time (see walker_thread): walk the map,
 * protecting it; walk a fresh map once more (mappings made meanwhile); then passes re-protecting what
 * the target wrote, each followed by a pause as long as the pass, until the dirty pages are few, stop
 * shrinking, or PREPARE_PASSES is reached; then a last pass with no pause after it. Then pre_ready wakes
 * the supervisor, which freezes.
 * Returns the poll timeout the handler should use next (ms), or a negative errno.
 */
static int prepare_work(Engine *e)
{
        uint64_t now = now_usec(), pages = 0;
        int r;

        if (atomic_load(&e->pre_ready))
                return 100;

        if (!e->pre_walked) {
                follow_target(e);
                r = prepare_walk_step(e);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
                if (!e->pre_rewalked) {
                        proc_maps_free(e->pre_maps, e->n_pre_maps);
                        e->pre_maps = NULL;
                        e->n_pre_maps = e->pre_next_map = 0;
                        r = proc_maps_read(e->target->pid, &e->pre_maps, &e->n_pre_maps);
                        if (r < 0)
                                return r;
                        e->pre_rewalked = true;
                        return 0;
                }
                e->pre_walked = true;
                debug("walk done, %" PRIu64 " pre-faults so far", e->pre_faults);
                e->pass_start = now;
                e->pass_active = true;
        }

        if (e->pass_active) {
                follow_target(e);
                r = reprotect_dirty(e, REPROTECT_RUNS, &pages);
                if (r == -EAGAIN)
                        return 1; /* an event is in flight: read it first */
                if (r == -ENOENT && ++e->pass_enoent <= PASS_ENOENT_RETRIES)
                        /* A run's mapping went away: the handler has read the event (else EAGAIN) and waits
                         * for this step to end to apply it, which drops the run's pages from the list. */
                        return 1;
                if (r < 0)
                        return r;
                e->pass_enoent = 0;
                if (r > 0)
                        return 0;
                e->pass_active = false;
                e->pre_passes++;
                debug("pass %u done, %" PRIu64 " pages, %" PRIu64 " pre-faults so far", e->pre_passes, pages, e->pre_faults);
                if (e->pass_final) {
                        unfollow_target(e);
                        atomic_store(&e->pre_ready, true);
                        (void)eventfd_write(e->super_fd, 1);
                        return 100;
                }
                e->settle_until = now + MAX(now - e->pass_start, (uint64_t)1000);
                return 1;
        }

        if (now < e->settle_until)
                return 1;

        pthread_mutex_lock(&e->lock);
        size_t dirty = e->n_dirty;
        pthread_mutex_unlock(&e->lock);
        if (dirty <= DIRTY_LEFT || e->pre_passes >= PREPARE_PASSES || (e->pre_passes >= 2 && dirty >= e->last_dirty))
                /* Done: one last pass, and the freeze right after it, with no pause between. The freeze
                 * re-protects what the target writes from then on, not what it wrote in a whole pause
                 * (with Redis up to ~700 pages, 0.65 ms of the freeze), nor, when the passes did not
                 * converge, everything still dirty. */
                e->pass_final = true;
        e->last_dirty = dirty;
        e->pass_start = now;
        e->pass_active = true;
        return 0;
}

/*
 * The prepare phase's walk runs in a thread of its own, so that the handler serves the target's faults
 * while it runs: a write to memory already protected is released at once rather than after the step in
 * progress (each step protects and scans up to PREPARE_SLICE, 1-2 ms on the test VM, and the target,
 * writing all over its heap, faulted again right after each release: a Redis served almost nothing for
 * the whole phase). Only a fault in the part the step is covering waits for it (its pages get their
 * states at the step's end), and an address-space event is handled between steps, never during one, as
 * when one thread did both.
 */
static void walk_step_begin(Engine *e)
{
        pthread_mutex_lock(&e->lock);
        while (e->in_event && !atomic_load(&e->stop))
                pthread_cond_wait(&e->cond, &e->lock);
        e->walking = true;
        pthread_mutex_unlock(&e->lock);
}

static void walk_step_end(Engine *e)
{
        bool wake;

        pthread_mutex_lock(&e->lock);
        e->walking = false;
        e->step_lo = e->step_hi = 0;
        wake = e->step_deferred;
        e->step_deferred = false;
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        if (wake)
                (void)eventfd_write(e->handler_fd, 1);
}

static void *walker_thread(void *userdata)
{
        Engine *e = userdata;

        pthread_setname_np(pthread_self(), "livesnap-walk");

        while (!atomic_load(&e->stop) && !atomic_load(&e->pre_ready)) {
                struct pollfd p = { .fd = e->stop_fd, .events = POLLIN };
                int timeout;

                walk_step_begin(e);
                timeout = prepare_work(e);
                walk_step_end(e);
                if (timeout < 0) {
                        if (timeout == -ESRCH)
                                engine_fail_mm_gone(e);
                        else
                                engine_fail(e, timeout, "protecting memory before the freeze failed: %s",
                                            strerror(-timeout));
                        break;
                }
                if (timeout > 0 && !atomic_load(&e->pre_ready))
                        (void)poll(&p, 1, timeout); /* a pause between passes, or an event to be read */
        }
        unfollow_target(e);
        return NULL;
}

/* ---- the freeze's share ---- */

/*
 * Pages pinned for device writes (io_uring fixed buffers) change without a write fault: protecting
 * them proves nothing. Copy what they hold now, while the target is stopped, and stop tracking them.
 * Not finding them is not fatal; the image then says pinned memory could not be looked for.
 */
static int save_pinned(Engine *e)
{
        int r;

        r = hazards_pinned_ranges(e->target->pid, &e->pinned, &e->n_pinned);
        if (r == -ESRCH)
                return r;
        if (r < 0) {
                e->pinned_error = r;
                return 0;
        }
        for (size_t i = 0; i < e->n_pinned; i++) {
                uint64_t start = e->pinned[i].start, end = e->pinned[i].end;

                pthread_mutex_lock(&e->lock);
                r = ranges_cut(e, start, end, false, NULL, NULL);
                pthread_mutex_unlock(&e->lock);
                if (r < 0)
                        return r;
                r = pagemap_scan(e->pagemap_fd, start, end, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                 PAGE_IS_PRESENT, copy_frozen, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * Classifies every mapping at the instant and makes sure each is tracked: registered ones have their
 * uncovered parts (all of them without a prepare phase) protected and scanned now, the dirty pages are
 * re-protected; mappings that cannot be registered have their private pages copied now, while the
 * target is stopped.
 */
static int setup_memory(Engine *e, const ProcMap *maps, size_t n, ImageVma *vmas, char *err, size_t errlen)
{
        uint64_t pages = 0, t_step = now_usec();
        size_t run = 0, n_run = 0; /* maps[run, run + n_run): private file mappings to copy, see priv_freeze_run() */
        int r;

        for (size_t i = 0; i < n; i++) {
                const ProcMap *m = &maps[i];
                ImageVma *v = &vmas[i];
                bool anon = m->inode == 0 && (!m->name || m->name[0] == '[' || startswith(m->name, "[anon"));
                bool any, gaps, retry = false;

                *v = (ImageVma){
                        .start = m->start, .end = m->end, .pgoff = m->offset, .prot = m->prot,
                        .dev_major = m->dev_major, .dev_minor = m->dev_minor, .inode = m->inode,
                        .name = m->name, .content = IMAGE_VMA_CONTENT_FULL,
                };
                if (m->shared)
                        v->flags |= IMAGE_VMA_SHARED;
                if (hazards_shared_find(e->shared, e->n_shared, m))
                        v->flags |= IMAGE_VMA_NOT_PIT;

                if (vma_is_special(m)) {
                        v->flags |= IMAGE_VMA_SPECIAL;
                        if (streq(m->name, "[vdso]")) {
                                r = copy_frozen(e, m->start, m->end, 0);
                                if (r < 0)
                                        return r;
                        } else
                                v->content = IMAGE_VMA_CONTENT_NONE;
                        continue;
                }

                coverage(e, m->start, m->end, &any, &gaps);
                if (gaps && !any && unreg_known(e, m))
                        goto unregistrable;
                if (gaps) {
                        bool hugetlb = vma_is_hugetlb(e, m);

                        r = register_vma(e, m);
                        if (r >= 0)
                                r = cover_gaps(e, m, m->start, m->end, hugetlb, &retry);
                        else if (!any)
                                goto unregistrable;
                        /* The ranges do not cover its holes: released as a whole at the end. */
                        if (r >= 0 && vma_may_have_holes(m, hugetlb))
                                r = spans_add(&e->holed, m->start, m->end, 0);
                        if (r >= 0 && retry)
                                r = -EAGAIN;
                        if (r < 0) {
                                snprintf(err, errlen, "protecting 0x%" PRIx64 "-0x%" PRIx64 " (%s) failed: %s",
                                         m->start, m->end, m->name ?: "anonymous", strerror(-r));
                                return r;
                        }
                }
                v->flags |= vma_is_shmem(m) ? IMAGE_VMA_SHMEM : IMAGE_VMA_ANON;
                continue;

        unregistrable:
                /* Not registrable: copy now what the file does not hold. */
                if (anon) {
                        /* e.g. registered by the target's own userfaultfd (EBUSY) */
                        v->flags |= IMAGE_VMA_ANON;
                        r = pagemap_scan(e->pagemap_fd, m->start, m->end, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                         PAGE_IS_PRESENT, copy_frozen, e);
                } else if (m->shared) {
                        v->content = IMAGE_VMA_CONTENT_FILE;
                        v->flags |= IMAGE_VMA_NOT_PIT;
                        r = 0;
                } else {
                        /* Scanned with its neighbours of the same kind, once the run of them ends. */
                        v->content = IMAGE_VMA_CONTENT_FILE;
                        if (n_run > 0 && run + n_run != i) {
                                r = priv_freeze_run(e, maps, run, n_run, err, errlen);
                                if (r < 0)
                                        return r;
                                n_run = 0;
                        }
                        if (n_run++ == 0)
                                run = i;
                        continue;
                }
                if (r < 0) {
                        snprintf(err, errlen, "copying 0x%" PRIx64 "-0x%" PRIx64 " (%s) failed: %s", m->start,
                                 m->end, m->name ?: "anonymous", strerror(-r));
                        return r;
                }
        }

        if (n_run > 0) {
                r = priv_freeze_run(e, maps, run, n_run, err, errlen);
                if (r < 0)
                        return r;
        }
        /* Held pages of mappings that changed shape since: of no use. */
        for (size_t i = 0; i < e->n_priv; i++)
                priv_drop_held(e, &e->priv[i]);
        debug_step("  classify, cover, copy", &t_step);
        /* What the target wrote since the prepare phase's last pass. */
        do
                r = reprotect_dirty(e, SIZE_MAX, &pages);
        while (r > 0);
        e->pages_reprotected = pages;
        if (r < 0) {
                snprintf(err, errlen, "re-protecting written pages failed: %s", strerror(-r));
                return r;
        }

        debug_step("  re-protect written pages", &t_step);
        r = save_pinned(e);
        debug_step("  pinned memory", &t_step);
        if (r < 0) {
                snprintf(err, errlen, "copying pinned memory failed: %s", strerror(-r));
                return r;
        }

        atomic_fetch_add(&e->bytes_total, e->pages_pending << PAGE_SHIFT_4K);
        return 0;
}

/* ---- carrying fds out of the target ---- */

/*
 * pidfd_getfd() copies an fd out of the target. Where it does not exist (ENOSYS: valgrind 3.19 has no
 * wrapper for it), the target sends the fd instead: an injected socket(), sendmsg() with the fd as
 * SCM_RIGHTS to an AF_UNIX datagram socket of ours bound to a random abstract address, close(). Our
 * socket has SO_PASSCRED, so the kernel tells us who sent each message; a message not from the target,
 * or an fd of the wrong kind, is refused (anyone in the namespace can read the address in
 * /proc/net/unix: the randomness only avoids collisions). Abstract addresses are per network namespace:
 * the target must share ours. LIVESNAP_NO_PIDFD_GETFD=1 takes this path as if the syscall were missing.
 */
#define RENDEZVOUS_TIMEOUT_MS 3000

static bool have_pidfd_getfd(void)
{
        static atomic_int cached = -1;
        int have = atomic_load(&cached);

        if (have < 0) {
                const char *v = getenv("LIVESNAP_NO_PIDFD_GETFD");

                if (v && streq(v, "1"))
                        have = 0;
                else /* EBADF where it exists */
                        have = !(syscall(__NR_pidfd_getfd, -1, 0, 0) < 0 && errno == ENOSYS);
                atomic_store(&cached, have);
        }
        return have;
}

static bool same_netns(pid_t pid)
{
        struct stat ours, theirs;
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
        if (stat("/proc/self/ns/net", &ours) < 0 || stat(path, &theirs) < 0)
                return true; /* cannot tell: the send will say */
        return ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino;
}

typedef struct Rendezvous {
        int fd;
        struct sockaddr_un addr;
        socklen_t addr_len;
} Rendezvous;

static int rendezvous_open(Rendezvous *rv)
{
        _cleanup_close_ int fd = -EBADF;
        uint8_t rnd[16];
        int one = 1;
        size_t n;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
                return -errno;
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                return -EIO;

        *rv = (Rendezvous){ .addr.sun_family = AF_UNIX };
        n = 1 + (size_t)snprintf(rv->addr.sun_path + 1, sizeof(rv->addr.sun_path) - 1, "livesnap-fd-");
        for (size_t i = 0; i < sizeof(rnd); i++, n += 2)
                snprintf(rv->addr.sun_path + n, 3, "%02x", rnd[i]);
        rv->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        if (bind(fd, (struct sockaddr *)&rv->addr, rv->addr_len) < 0)
                return -errno;
        rv->fd = TAKE_FD(fd);
        return 0;
}

/* Receives one fd that the target, pid, sent to rv, within RENDEZVOUS_TIMEOUT_MS; its /proc/self/fd
 * link must start with kind ("anon_inode:[userfaultfd]", "socket:["). */
static int rendezvous_recv(Rendezvous *rv, pid_t pid, const char *kind, int *ret_fd, char *err,
                           size_t errlen)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
        } cbuf = {};
        struct pollfd p = { .fd = rv->fd, .events = POLLIN };
        char byte, path[64], link[64] = {};
        struct iovec iov = { &byte, 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &cbuf,
                             .msg_controllen = sizeof(cbuf) };
        struct ucred cred = { .pid = 0 };
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = poll(&p, 1, RENDEZVOUS_TIMEOUT_MS);
        if (r == 0)
                r = -ETIMEDOUT;
        else if (r > 0 && recvmsg(rv->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
                r = -errno;
        if (r < 0) {
                snprintf(err, errlen, "receiving an fd from PID %d on livesnap's socket failed: %s",
                         (int)pid, strerror(-r));
                return r;
        }

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                        continue;
                if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(cred)))
                        memcpy(&cred, CMSG_DATA(c), sizeof(cred));
                else if (c->cmsg_type == SCM_RIGHTS)
                        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                                int got;

                                memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                                if (fd < 0)
                                        fd = got;
                                else
                                        safe_close(got);
                        }
        }
        if (cred.pid != pid) {
                snprintf(err, errlen,
                         "refusing a message on livesnap's socket from PID %d: it was waiting for an fd "
                         "from PID %d",
                         (int)cred.pid, (int)pid);
                return -EPERM;
        }
        if (fd >= 0) {
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                (void)!readlink(path, link, sizeof(link) - 1);
        }
        if (fd < 0 || (mh.msg_flags & MSG_CTRUNC) || !startswith(link, kind)) {
                snprintf(err, errlen, "refusing what PID %d sent on livesnap's socket: not one %s fd but %s",
                         (int)pid, kind, fd < 0 ? "none" : link[0] ? link : "an unknown kind");
                return -EPROTO;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Scratch memory for injected syscalls' arguments: below the stopped thread's stack red zone. */
static int tracee_scratch(Tracee *tr, uint64_t *ret)
{
        struct user_regs_struct regs;

        if (ptrace(PTRACE_GETREGS, tr->tid, NULL, &regs) < 0)
                return -errno;
        *ret = ALIGN_DOWN((uint64_t)regs.rsp - 1024, 64);
        return 0;
}

/* An injected sendmsg() or recvmsg() of one byte and at most one fd, as laid out in the target. */
typedef struct RemoteMsg {
        struct msghdr mh;
        struct iovec iov;
        uint64_t data;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } cbuf;
        struct sockaddr_un name;
} RemoteMsg;

#define REMOTE_MSG_MAX 256
_Static_assert(sizeof(RemoteMsg) <= REMOTE_MSG_MAX, "RemoteMsg outgrew its scratch");

/* Runs nr (SYS_sendmsg or SYS_recvmsg) on sock inside tr, with its message at base in the target.
 * sendmsg: to name (NULL: the connected peer), passing fd unless it is < 0. recvmsg: *ret_fd gets the
 * fd received. */
static int target_inject_msg(Target *t, Tracee *tr, long nr, int64_t sock, uint64_t base, int flags,
                             const struct sockaddr_un *name, socklen_t name_len, int fd, int *ret_fd)
{
        RemoteMsg m = {};
        uint64_t args[6] = { (uint64_t)sock, base, (uint64_t)flags };
        int64_t res;
        int r;

        assert(name_len <= sizeof(m.name));

        m.iov.iov_base = (void *)(uintptr_t)(base + offsetof(RemoteMsg, data));
        m.iov.iov_len = 1;
        m.mh.msg_iov = (void *)(uintptr_t)(base + offsetof(RemoteMsg, iov));
        m.mh.msg_iovlen = 1;
        if (name) {
                memcpy(&m.name, name, name_len);
                m.mh.msg_name = (void *)(uintptr_t)(base + offsetof(RemoteMsg, name));
                m.mh.msg_namelen = name_len;
        }
        if (nr == SYS_recvmsg || fd >= 0) {
                m.mh.msg_control = (void *)(uintptr_t)(base + offsetof(RemoteMsg, cbuf));
                m.mh.msg_controllen = sizeof(m.cbuf);
        }
        if (fd >= 0) {
                struct cmsghdr *c = &m.cbuf.align;

                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        r = target_write_memory(t, base, &m, sizeof(m));
        if (r < 0)
                return r;
        r = target_inject_syscall(t, tr->tid, nr, args, &res);
        if (r >= 0 && res < 0)
                r = (int)res;
        if (r < 0 || nr != SYS_recvmsg)
                return r;

        r = target_read_memory(t, base, &m, sizeof(m));
        if (r < 0)
                return r;
        if (m.mh.msg_controllen < CMSG_LEN(sizeof(int)) || m.cbuf.align.cmsg_type != SCM_RIGHTS)
                return -EPROTO;
        memcpy(ret_fd, CMSG_DATA(&m.cbuf.align), sizeof(int));
        return 0;
}

/* Sends fd_in_target from inside the target to rv, from a socket made for it and closed again. */
static int target_send_fd(Target *t, Tracee *tr, int fd_in_target, const Rendezvous *rv)
{
        uint64_t scratch, args[6] = { AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC };
        int64_t sock, res;
        int r;

        r = tracee_scratch(tr, &scratch);
        if (r < 0)
                return r;
        r = target_inject_syscall(t, tr->tid, SYS_socket, args, &sock);
        if (r >= 0 && sock < 0)
                r = (int)sock;
        if (r < 0)
                return r;
        /* MSG_DONTWAIT: a full queue (someone else filling it) fails, rather than block the target. */
        r = target_inject_msg(t, tr, SYS_sendmsg, sock, scratch, MSG_DONTWAIT | MSG_NOSIGNAL, &rv->addr,
                              rv->addr_len, fd_in_target, NULL);
        args[0] = (uint64_t)sock;
        (void)target_inject_syscall(t, tr->tid, SYS_close, args, &res);
        return r;
}

/* Our copy of fd_in_target, without pidfd_getfd(): sent to a rendezvous socket of this process. */
static int target_take_fd(Target *t, Tracee *tr, int fd_in_target, const char *kind, int *ret_fd, char *err,
                          size_t errlen)
{
        Rendezvous rv = { .fd = -EBADF };
        int r;

        r = rendezvous_open(&rv);
        if (r < 0)
                snprintf(err, errlen, "cannot set up a socket to receive an fd from PID %d: %s", (int)t->pid,
                         strerror(-r));
        if (r >= 0) {
                r = target_send_fd(t, tr, fd_in_target, &rv);
                if (r < 0)
                        snprintf(err, errlen, "sending an fd from inside PID %d to livesnap failed: %s",
                                 (int)t->pid, strerror(-r));
        }
        if (r >= 0)
                r = rendezvous_recv(&rv, t->pid, kind, ret_fd, err, errlen);
        safe_close(rv.fd);
        return r;
}

/*
 * A target without CAP_SYS_PTRACE may not call userfaultfd() (vm.unprivileged_userfaultfd=0), but
 * anyone holding an open /dev/userfaultfd may create one with USERFAULTFD_IOC_NEW, bound to the caller's
 * mm. So: open the device here, hand the fd to the target over a socketpair created inside it (one end
 * pulled out with pidfd_getfd, or sent out without it), and have the target run the ioctl. Every fd it
 * got is closed again.
 */
static int uffd_via_device(Target *t, Tracee *tr, int64_t *ret_fd_in_target, char *err, size_t errlen)
{
        _cleanup_close_ int dev = -EBADF, ours = -EBADF;
        int32_t sv[2] = { -1, -1 };
        int64_t res, dev_in_target = -1;
        uint64_t scratch, args[6] = {};
        int r;

        dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev < 0) {
                r = -errno;
                snprintf(err, errlen,
                         "userfaultfd() inside PID %d was refused (the target lacks CAP_SYS_PTRACE and "
                         "vm.unprivileged_userfaultfd is 0), and /dev/userfaultfd cannot be opened: %s",
                         (int)t->pid, strerror(-r));
                return r;
        }
        r = tracee_scratch(tr, &scratch);
        if (r < 0)
                return r;

        /* socketpair(AF_UNIX, SOCK_DGRAM|SOCK_CLOEXEC, 0, scratch) */
        args[0] = AF_UNIX;
        args[1] = SOCK_DGRAM | SOCK_CLOEXEC;
        args[3] = scratch;
        r = target_inject_syscall(t, tr->tid, SYS_socketpair, args, &res);
        if (r >= 0 && res < 0)
                r = (int)res;
        if (r >= 0)
                r = target_read_memory(t, scratch, sv, sizeof(sv));
        if (r < 0)
                goto finish;

        if (have_pidfd_getfd()) {
                ours = (int)syscall(__NR_pidfd_getfd, t->pidfd, sv[1], 0);
                if (ours < 0) {
                        r = -errno;
                        goto finish;
                }
        } else {
                r = target_take_fd(t, tr, sv[1], "socket:[", &ours, err, errlen);
                if (r < 0)
                        goto finish;
        }

        {
                char byte = 0, cbuf[CMSG_SPACE(sizeof(int))] = {};
                struct iovec iov = { &byte, 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                                     .msg_controllen = sizeof(cbuf) };
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &dev, sizeof(int));
                if (sendmsg(ours, &mh, MSG_NOSIGNAL) < 0) {
                        r = -errno;
                        goto finish;
                }
        }

        {
                int fd;

                /* The target's recvmsg(), its arguments laid out below the socketpair's. */
                r = target_inject_msg(t, tr, SYS_recvmsg, sv[0], scratch - REMOTE_MSG_MAX, MSG_CMSG_CLOEXEC,
                                      NULL, 0, -1, &fd);
                if (r < 0)
                        goto finish;
                dev_in_target = fd;
        }

        args[0] = (uint64_t)dev_in_target;
        args[1] = USERFAULTFD_IOC_NEW;
        args[2] = O_CLOEXEC | O_NONBLOCK;
        args[3] = 0;
        r = target_inject_syscall(t, tr->tid, SYS_ioctl, args, &res);
        if (r >= 0 && res < 0)
                r = (int)res;
        if (r >= 0)
                *ret_fd_in_target = res;

finish:
        for (int i = 0; i < 3; i++) {
                int64_t fd = i < 2 ? sv[i] : dev_in_target;
                uint64_t a[6] = { (uint64_t)fd };
                if (fd >= 0)
                        (void)target_inject_syscall(t, tr->tid, SYS_close, a, &res);
        }
        if (r < 0 && err[0] == 0)
                snprintf(err, errlen, "creating a userfaultfd inside PID %d through /dev/userfaultfd failed: %s",
                         (int)t->pid, strerror(-r));
        return r;
}

/*
 * Creating the uffd means running syscalls on a target thread's borrowed registers. If we died in that
 * moment, the kernel would let the thread run on from our syscall instruction and it would crash. So a
 * child process does it, before the freeze, on the main thread alone: the child outlives us if we are
 * killed, finishes (closing the target's copy of the fd), restores the registers and lets go. We take
 * our copy of the fd with pidfd_getfd() while the child waits (or, without pidfd_getfd, the child has
 * the target send it to our rendezvous socket before it reports), then tell it to finish.
 */
typedef struct InjectorReport {
        int r;
        int fd_in_target;
        int async_fd_in_target; /* a second uffd, for WP_ASYNC tracking, or -1 */
        char err[256];
} InjectorReport;

_noreturn_ static void injector_main(pid_t pid, int report_fd, int done_fd, const Rendezvous *rv)
{
        InjectorReport rep = { .fd_in_target = -1, .async_fd_in_target = -1 };
        uint64_t args[6] = { O_CLOEXEC | O_NONBLOCK };
        Target *t = NULL;
        int64_t fd = -1, res;
        bool via_device = false;
        char byte;

        rep.r = target_attach_main(pid, &t, rep.err, sizeof(rep.err));
        if (rep.r >= 0) {
                Tracee *tr = target_find(t, pid);

                rep.r = target_inject_syscall(t, pid, SYS_userfaultfd, args, &fd);
                if (rep.r < 0)
                        snprintf(rep.err, sizeof(rep.err), "running userfaultfd() inside PID %d failed: %s",
                                 (int)pid, strerror(-rep.r));
                else if (fd == -EPERM) {
                        via_device = true;
                        rep.r = uffd_via_device(t, tr, &fd, rep.err, sizeof(rep.err));
                }
                else if (fd < 0) {
                        rep.r = (int)fd;
                        snprintf(rep.err, sizeof(rep.err), "userfaultfd() inside PID %d failed: %s", (int)pid,
                                 strerror(-rep.r));
                }
                if (rep.r >= 0)
                        rep.fd_in_target = (int)fd;
                if (rep.r >= 0 && rv) {
                        rep.r = target_send_fd(t, tr, rep.fd_in_target, rv);
                        if (rep.r < 0)
                                snprintf(rep.err, sizeof(rep.err),
                                         "sending the userfaultfd from inside PID %d to livesnap (there is "
                                         "no pidfd_getfd) failed: %s",
                                         (int)pid, strerror(-rep.r));
                }
                /* The second uffd (WP_ASYNC), only where userfaultfd() itself works and pidfd_getfd can
                 * take it (neither is worth a second trip): without it, private file mappings are copied
                 * inside the freeze. */
                if (rep.r >= 0 && !via_device && !rv &&
                    target_inject_syscall(t, pid, SYS_userfaultfd, args, &fd) >= 0 && fd >= 0)
                        rep.async_fd_in_target = (int)fd;
        }
        (void)!write(report_fd, &rep, sizeof(rep));

        /* Wait for our parent to take its copy (or to die), then close the target's. */
        while (read(done_fd, &byte, 1) < 0 && errno == EINTR)
                ;
        int fds[] = { rep.fd_in_target, rep.async_fd_in_target };
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                if (fds[i] >= 0) {
                        args[0] = (uint64_t)fds[i];
                        (void)target_inject_syscall(t, pid, SYS_close, args, &res);
                }
        target_free(t);
        _exit(rep.r < 0 ? 1 : 0);
}

static int create_uffd(Engine *e, pid_t pid, char *err, size_t errlen)
{
        struct uffdio_api api = {
                .api = UFFD_API,
                .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
                            UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID,
        };
        InjectorReport rep = {};
        Rendezvous rv = { .fd = -EBADF };
        bool getfd = have_pidfd_getfd();
        int report[2] = { -1, -1 }, done[2] = { -1, -1 }, pidfd = -1, r;
        pid_t child;
        ssize_t n;

        if (!getfd) {
                if (!same_netns(pid)) {
                        snprintf(err, errlen,
                                 "PID %d is in another network namespace: without pidfd_getfd() the target "
                                 "must send the userfaultfd to livesnap's abstract socket, which is not "
                                 "reachable from there",
                                 (int)pid);
                        return -EOPNOTSUPP;
                }
                r = rendezvous_open(&rv);
                if (r < 0) {
                        snprintf(err, errlen, "cannot set up the socket to receive the userfaultfd: %s",
                                 strerror(-r));
                        return r;
                }
        }
        if (pipe2(report, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) {
                r = -errno;
                snprintf(err, errlen, "pipe: %s", strerror(-r));
                goto out;
        }
        child = fork();
        if (child < 0) {
                r = -errno;
                snprintf(err, errlen, "fork: %s", strerror(-r));
                goto out;
        }
        if (child == 0) {
                safe_close(report[0]);
                safe_close(done[1]);
                injector_main(pid, report[1], done[0], getfd ? NULL : &rv);
        }
        report[1] = safe_close(report[1]);
        done[0] = safe_close(done[0]);

        do
                n = read(report[0], &rep, sizeof(rep));
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(rep)) {
                r = -EIO;
                snprintf(err, errlen, "the injector process ended without a report");
        } else if (rep.r < 0) {
                r = rep.r;
                rep.err[sizeof(rep.err) - 1] = 0;
                snprintf(err, errlen, "%s", rep.err);
        } else if (!getfd) {
                r = rendezvous_recv(&rv, pid, "anon_inode:[userfaultfd]", &e->uffd, err, errlen);
        } else {
                pidfd = (int)syscall(__NR_pidfd_open, pid, 0);
                e->uffd = pidfd < 0 ? -1 : (int)syscall(__NR_pidfd_getfd, pidfd, rep.fd_in_target, 0);
                r = e->uffd < 0 ? -errno : 0;
                if (r < 0)
                        snprintf(err, errlen, "pidfd_getfd of the userfaultfd failed: %s", strerror(-r));
                else if (rep.async_fd_in_target >= 0)
                        e->async_uffd = (int)syscall(__NR_pidfd_getfd, pidfd, rep.async_fd_in_target, 0);
        }

        /* Let the injector close the target's copy and detach; wait for it so the main thread is free
         * for our own PTRACE_SEIZE. */
        done[1] = safe_close(done[1]);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
                ;
        if (r < 0)
                goto out;

        /* WP_UNPOPULATED makes a protect cover empty pages too, which the prepare phase needs. A refused
         * feature leaves the uffd uninitialised, so asking again without it is allowed. */
        api.features |= UFFD_FEATURE_WP_UNPOPULATED;
        e->prepare = ioctl(e->uffd, UFFDIO_API, &api) == 0;
        if (!e->prepare && errno == EINVAL) {
                api = (struct uffdio_api){ .api = UFFD_API, .features = api.features & ~UFFD_FEATURE_WP_UNPOPULATED };
                if (ioctl(e->uffd, UFFDIO_API, &api) == 0)
                        goto out;
        }
        if (e->prepare && e->async_uffd >= 0) {
                struct uffdio_api async_api = { .api = UFFD_API,
                                                .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
                if (ioctl(e->async_uffd, UFFDIO_API, &async_api) < 0)
                        e->async_uffd = safe_close(e->async_uffd); /* older kernels: copy inside the freeze */
        }
        if (!e->prepare) {
                r = -errno;
                snprintf(err, errlen, "this kernel's userfaultfd lacks write-protect or events (UFFDIO_API: %s)",
                         strerror(-r));
                if (r == -EINVAL)
                        r = -EOPNOTSUPP;
        }
out:
        safe_close(report[0]);
        safe_close(report[1]);
        safe_close(done[0]);
        safe_close(done[1]);
        safe_close(pidfd);
        safe_close(rv.fd);
        return r;
}

/* ---- the supervisor ---- */

static void save_and_unprotect(Engine *e, uint64_t addr)
{
        uint64_t page = ALIGN_DOWN(addr, PAGE_SIZE_4K);

        for (int i = 0; i < 2000 && !atomic_load(&e->stop); i++) {
                int r = engine_save(e, page, SAVE_FAULT, 0, 0);
                if (r < 0)
                        return;
                if (r > 0 && uffd_wp(e, page, PAGE_SIZE_4K, false) != -EAGAIN)
                        return;
                usleep(500);
        }
}

/* An exiting thread: the kernel will write 0 to its clear_child_tid word and mark its robust futexes
 * OWNER_DIED; both writes are dropped on a write-protected page. Save and un-protect those pages. */
static void handle_exit(Engine *e, Tracee *tr)
{
        struct {
                uint64_t next;
                int64_t futex_offset;
                uint64_t pending;
        } head;
        uint64_t head_addr = 0;
        size_t len = 0;

        if (tr->clear_child_tid)
                save_and_unprotect(e, tr->clear_child_tid);

        if (syscall(SYS_get_robust_list, tr->tid, &head_addr, &len) < 0 || !head_addr)
                return;
        if (target_read_memory(e->target, head_addr, &head, sizeof(head)) < 0)
                return;

        uint64_t entry = head.next & ~1ULL;
        for (int i = 0; i < ROBUST_LIST_LIMIT && entry && entry != head_addr; i++) {
                uint64_t next;

                save_and_unprotect(e, entry + (uint64_t)head.futex_offset);
                if (target_read_memory(e->target, entry, &next, sizeof(next)) < 0)
                        break;
                entry = next & ~1ULL;
        }
        if (head.pending & ~1ULL)
                save_and_unprotect(e, (head.pending & ~1ULL) + (uint64_t)head.futex_offset);
}

static void note_clone_child_tid(Engine *e, Tracee *parent, Tracee *child)
{
        struct user_regs_struct regs;
        uint64_t flags = 0, child_tid = 0;

        if (ptrace(PTRACE_GETREGS, parent->tid, NULL, &regs) < 0)
                return;
        if (regs.orig_rax == SYS_clone) {
                flags = regs.rdi;
                child_tid = regs.r10;
        } else if (regs.orig_rax == 435 /* clone3 */) {
                uint64_t args[3];
                if (target_read_memory(e->target, regs.rdi, args, sizeof(args)) < 0)
                        return;
                flags = args[0];
                child_tid = args[2];
        }
        if (flags & CLONE_CHILD_CLEARTID)
                child->clear_child_tid = child_tid;
}

static void supervise_status(Engine *e, pid_t w, int status)
{
        Target *t = e->target;
        Tracee *tr = target_find(t, w);

        if (!tr) {
                tr = target_add(t, w); /* a new thread, attached by the kernel */
                if (!tr)
                        return;
        }

        if (WIFEXITED(status) || WIFSIGNALED(status)) {
                tr->state = TRACEE_GONE;
                if (w == t->pid) {
                        t->exited = true;
                        engine_fail(e, -ESRCH, "PID %d exited during the snapshot", (int)t->pid);
                }
                return;
        }
        if (!WIFSTOPPED(status))
                return;

        switch (status >> 16) {
        case PTRACE_EVENT_EXIT:
                tr->state = TRACEE_EXITING;
                /* Threads created or first stopped during the snapshot may not have had theirs read. */
                if (!tr->clear_child_tid)
                        (void)tracee_read_tid_address(t, tr);
                if (e->pre) {
                        /* Its last writes could meet a page the prepare phase re-protects after we let
                         * it go: it waits in its exit stop until after the instant (supervise()). */
                        if (w == t->pid)
                                engine_fail(e, -ESRCH, "PID %d exited during the snapshot", (int)t->pid);
                        return;
                }
                handle_exit(e, tr);
                break;
        case PTRACE_EVENT_CLONE: {
                unsigned long msg = 0;
                tr->state = TRACEE_STOPPED;
                if (ptrace(PTRACE_GETEVENTMSG, w, NULL, &msg) == 0 && msg > 0) {
                        Tracee *child = target_add(t, (pid_t)msg);
                        tr = target_find(t, w); /* target_add may have moved the array */
                        if (child && tr)
                                note_clone_child_tid(e, tr, child);
                }
                break;
        }
        case PTRACE_EVENT_EXEC:
                tr->state = TRACEE_STOPPED;
                t->execed = true;
                engine_fail(e, -ECANCELED, "PID %d called execve during the snapshot", (int)t->pid);
                return; /* leave it stopped until detach */
        case PTRACE_EVENT_STOP: {
                int sig = WSTOPSIG(status);
                tr->state = (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) ?
                                    TRACEE_GROUPSTOP :
                                    TRACEE_STOPPED;
                break;
        }
        case 0:
                tr->state = TRACEE_STOPPED;
                tr->pending_signal = WSTOPSIG(status);
                break;
        default:
                tr->state = TRACEE_STOPPED;
                break;
        }

        (void)tracee_resume(t, tr);
}

static void reap_all(Engine *e)
{
        for (;;) {
                int status;
                pid_t w = waitpid(-1, &status, __WALL | WNOHANG);
                if (w <= 0)
                        break;
                supervise_status(e, w, status);
        }
}

/* Serves ptrace stops and termination signals until *until, a failure, or deadline_usec (0: none). */
static void supervise(Engine *e, int sfd, atomic_bool *until, uint64_t deadline_usec)
{
        Target *t = e->target;
        uint64_t last_progress = 0, last_debug = 0;

        /* Threads already exiting at the freeze (or held since the prepare phase). */
        for (size_t i = 0; !e->pre && i < t->n_threads; i++)
                if (t->threads[i].state == TRACEE_EXITING) {
                        handle_exit(e, &t->threads[i]);
                        (void)tracee_resume(t, &t->threads[i]);
                }

        while (!atomic_load(&e->stop) && !atomic_load(until) && (deadline_usec == 0 || now_usec() < deadline_usec)) {
                struct pollfd p[3] = {
                        { .fd = sfd, .events = POLLIN },
                        { .fd = e->stop_fd, .events = POLLIN },
                        { .fd = e->super_fd, .events = POLLIN },
                };

                (void)poll(p, 3, debug_enabled() ? 50 : 100);
                if (p[2].revents & POLLIN) {
                        /* Consume the wake-up, or every later poll returns at once and this thread spins
                         * for the rest of the snapshot (the prepare phase's wake-up is followed by a copy
                         * phase that waits here too). */
                        eventfd_t v;
                        (void)eventfd_read(e->super_fd, &v);
                }
                if (p[0].revents & POLLIN) {
                        struct signalfd_siginfo si[8];
                        ssize_t n = read(sfd, si, sizeof(si));
                        for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(si[0]); i++)
                                if (si[i].ssi_signo != SIGCHLD)
                                        engine_fail(e, -EINTR, "interrupted by signal %s",
                                                    strsignal((int)si[i].ssi_signo));
                }
                reap_all(e);

                uint64_t now = now_usec();
                if (!e->pre && now - last_debug >= 50000 && debug_enabled()) {
                        /* A time series of the copy for timelines (bench/redis/timeline.sh). */
                        uint64_t used;

                        last_debug = now;
                        pthread_mutex_lock(&e->buf_lock);
                        used = e->buf_used;
                        pthread_mutex_unlock(&e->buf_lock);
                        debug("copy: %" PRIu64 " MiB done, %" PRIu64 " faults, %" PRIu64
                              " pages saved by them, %.1f MiB buffered",
                              atomic_load(&e->bytes_done) >> 20, (uint64_t)atomic_load(&e->faults),
                              (uint64_t)atomic_load(&e->pages_faulted), used / 1048576.0);
                }
                if (e->opts->progress && !e->pre && now - last_progress >= 100000) {
                        last_progress = now;
                        e->opts->progress(e->opts->userdata, atomic_load(&e->bytes_done),
                                          atomic_load(&e->bytes_total));
                }
        }
        reap_all(e);
}

/* ---- the whole dump ---- */

/* Debug output, only with LIVESNAP_DEBUG set: where the freeze spends its time. */
static bool debug_enabled(void)
{
        static int enabled = -1;

        if (enabled < 0)
                enabled = getenv("LIVESNAP_DEBUG") != NULL;
        return enabled;
}

static void debug_step(const char *what, uint64_t *last)
{
        uint64_t now = now_usec();

        if (debug_enabled())
                fprintf(stderr, "livesnap-debug: %-28s %8.3f ms\n", what, (now - *last) / 1000.0);
        *last = now;
}

static void debug(const char *fmt, ...)
{
        va_list ap;

        if (!debug_enabled())
                return;
        fprintf(stderr, "livesnap-debug: [%.6f] ", now_usec() / 1e6);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static void phase(const LivesnapDumpOptions *o, LivesnapPhase p)
{
        debug("phase %s", livesnap_phase_to_string(p));
        if (o->phase)
                o->phase(o->userdata, p);
}

static json_object *build_meta(Engine *e, const char *exe, char **argv, const char *comm, struct timespec *t_at,
                               const LivesnapDumpResult *res)
{
        json_object *meta = json_object_new_object(), *target = json_object_new_object(),
                    *cmd = json_object_new_array(), *stats = json_object_new_object();
        char when[64];
        struct tm tm;

        gmtime_r(&t_at->tv_sec, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%06ldZ", t_at->tv_nsec / 1000);

        json_object_object_add(target, "pid", json_object_new_int(e->target->pid));
        json_object_object_add(target, "exe", exe ? json_object_new_string(exe) : NULL);
        for (size_t i = 0; argv && argv[i]; i++)
                json_object_array_add(cmd, json_object_new_string(argv[i]));
        json_object_object_add(target, "cmdline", cmd);
        json_object_object_add(target, "comm", json_object_new_string(comm));

        json_object_object_add(meta, "tool", json_object_new_string("livesnap " LIVESNAP_VERSION));
        json_object_object_add(meta, "target", target);
        json_object_object_add(meta, "time", json_object_new_string(when));
        json_object_object_add(meta, "time_usec",
                               json_object_new_int64((int64_t)t_at->tv_sec * 1000000 + t_at->tv_nsec / 1000));
        json_object_object_add(meta, "freeze_us", json_object_new_int64((int64_t)res->freeze_us));
        json_object_object_add(meta, "elapsed_ms", json_object_new_int64((int64_t)res->elapsed_ms));
        json_object_object_add(meta, "page_size", json_object_new_int(4096));

#define STAT(name) json_object_object_add(stats, #name, json_object_new_int64((int64_t)res->name))
        STAT(pages_saved);
        STAT(pages_zero);
        STAT(pages_discarded);
        STAT(pages_unsaved);
        STAT(pages_faulted);
        STAT(faults);
        STAT(threads);
        STAT(peak_buffer_bytes);
        STAT(throttle_us);
        STAT(prepare_us);
        STAT(prepare_passes);
        STAT(pages_reprotected);
        STAT(private_pages_early);
        STAT(private_pages_frozen);
#undef STAT
        json_object_object_add(meta, "stats", stats);

        /* What uffd-wp could not make point-in-time, and how it was handled (livesnap-image(5)). */
        if (e->pinned_error < 0)
                json_object_object_add(meta, "pinned_error", json_object_new_string(strerror(-e->pinned_error)));
        else {
                json_object *j = NULL;
                if (hazards_pinned_to_json(e->pinned, e->n_pinned, &j) >= 0)
                        json_object_object_add(meta, "pinned", j);
        }
        if (e->shared_error < 0)
                json_object_object_add(meta, "shared_elsewhere_error",
                                       json_object_new_string(strerror(-e->shared_error)));
        else {
                json_object *j = NULL;
                if (hazards_shared_to_json(e->shared, e->n_shared, &j) >= 0)
                        json_object_object_add(meta, "shared_elsewhere", j);
        }
        return meta;
}

/*
 * The freeze runs at SCHED_FIFO (priority 1) where this process may: under load, a thread just given
 * PTRACE_CONT woke on this CPU and preempted the resume loop, so the target's last threads stayed
 * stopped for another 1-2 ms (a 1 GiB Redis under 8 loadgen connections: resume 0.14-2.2 ms). Every
 * wait inside the freeze sleeps, none spins. Without the privilege (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)
 * the freeze runs as it did.
 */
typedef struct FreezeSched {
        bool rt; /* raised: policy and param are what to go back to */
        int policy;
        struct sched_param param;
} FreezeSched;

static void freeze_sched_enter(FreezeSched *f)
{
        struct sched_param rt = { .sched_priority = 1 };

        f->rt = pthread_getschedparam(pthread_self(), &f->policy, &f->param) == 0 &&
                pthread_setschedparam(pthread_self(), SCHED_FIFO, &rt) == 0;
}

static void freeze_sched_leave(FreezeSched *f)
{
        if (f->rt)
                (void)pthread_setschedparam(pthread_self(), f->policy, &f->param);
        f->rt = false;
}

static void engine_stop_threads(Engine *e, pthread_t *handler, pthread_t *copier, pthread_t *writer)
{
        atomic_store(&e->stop, true);
        (void)eventfd_write(e->stop_fd, 1);
        pthread_mutex_lock(&e->lock);
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_mutex_lock(&e->buf_lock);
        pthread_cond_broadcast(&e->buf_cond);
        pthread_mutex_unlock(&e->buf_lock);

        if (e->walker) {
                pthread_join(e->walker, NULL);
                e->walker = 0;
        }
        if (*copier) {
                pthread_join(*copier, NULL);
                *copier = 0;
        }
        if (*handler) {
                pthread_join(*handler, NULL);
                *handler = 0;
        }
        if (*writer) {
                pthread_mutex_lock(&e->buf_lock);
                e->writer_stop = true;
                pthread_cond_signal(&e->writer_cond);
                pthread_cond_broadcast(&e->buf_cond);
                pthread_mutex_unlock(&e->buf_lock);
                pthread_join(*writer, NULL);
                *writer = 0;
        }
}

_export_ int livesnap_dump(pid_t pid, const char *path, const LivesnapDumpOptions *opts_in, LivesnapDumpResult *res)
{
        LivesnapDumpOptions opts = {};
        Engine *e = NULL;
        ProcMap *maps = NULL;
        ImageVma *vmas = NULL;
        size_t n_maps = 0;
        char *exe = NULL, **argv = NULL, *auxv = NULL;
        size_t auxv_len = 0;
        char comm[16] = "";
        pthread_t handler = 0, copier = 0, writer = 0;
        sigset_t mask, old_mask;
        int sfd = -EBADF, r;
        uint64_t t_start = now_usec(), t_freeze0 = 0, t_freeze1 = 0;
        FreezeSched freeze_sched = {};
        struct timespec t_at;
        bool success = false;

        if (!path || !res)
                return -EINVAL;
        memset(res, 0, sizeof(*res));
        if (opts_in)
                opts = *opts_in;
        if (opts.buffer_size == 0)
                opts.buffer_size = LIVESNAP_DEFAULT_BUFFER_SIZE;
        if (opts.buffer_size < (4ULL << 20))
                opts.buffer_size = 4ULL << 20; /* one 2 MiB window must always fit, with room to spare */

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->uffd = e->async_uffd = e->stop_fd = e->super_fd = e->handler_fd = e->pagemap_fd = -EBADF;
        e->opts = &opts;
        e->path = path;
        e->buf_limit = opts.buffer_size;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->cond, NULL);
        pthread_mutex_init(&e->buf_lock, NULL);
        pthread_cond_init(&e->buf_cond, NULL);
        {
                pthread_condattr_t ca;

                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&e->writer_cond, &ca);
                pthread_condattr_destroy(&ca);
        }
        pthread_mutex_init(&e->err_lock, NULL);
        e->probe_addr = 65536;
        {
                _cleanup_free_ char *s = NULL;
                uint64_t v;
                if (read_full_file("/proc/sys/vm/mmap_min_addr", &s, NULL) >= 0) {
                        s[strcspn(s, "\n")] = 0;
                        if (parse_u64(s, &v) >= 0 && v >= PAGE_SIZE_4K)
                                e->probe_addr = ALIGN_UP(v, PAGE_SIZE_4K);
                }
        }

        e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        e->super_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        e->handler_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e->stop_fd < 0 || e->super_fd < 0 || e->handler_fd < 0) {
                r = -errno;
                snprintf(res->error, sizeof(res->error), "eventfd: %s", strerror(-r));
                goto out;
        }

        /* SIGCHLD (ptrace stops) and termination requests come through a signalfd; the worker threads
         * inherit the blocked mask. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, &old_mask);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0) {
                r = -errno;
                snprintf(res->error, sizeof(res->error), "signalfd: %s", strerror(-r));
                goto out;
        }

        {
                /* LIVESNAP_NO_DIRECT: the image goes through the page cache (comparisons; see image.c).
                 * LIVESNAP_INDEX_MEMORY=BYTES: the writer spills its index after that many bytes of it
                 * rather than 1 MiB (tests: the spill on small images). */
                ImageWriterOptions wo = { .compress_level = opts.compress_level, .no_sync = opts.no_sync,
                                          .no_direct = getenv("LIVESNAP_NO_DIRECT") != NULL };
                const char *v = getenv("LIVESNAP_INDEX_MEMORY");
                uint64_t bytes;

                if (v && parse_size(v, &bytes) >= 0)
                        wo.index_memory = (size_t)bytes;
                r = image_writer_new(path, &wo, &e->writer);
                if (r < 0) {
                        snprintf(res->error, sizeof(res->error), "cannot create image %s: %s", path, strerror(-r));
                        goto out;
                }
        }

        {
                ProcStatus st;
                r = target_check(pid, &st, res->error, sizeof(res->error));
                if (r < 0)
                        goto out;
        }
        r = create_uffd(e, pid, res->error, sizeof(res->error));
        if (r < 0)
                goto out;
        /* LIVESNAP_NO_PREPARE: everything inside the freeze, as on kernels without WP_UNPOPULATED (for
         * comparisons, and as a way out should the prepare phase misbehave). */
        if (getenv("LIVESNAP_NO_PREPARE"))
                e->prepare = false;
        /* LIVESNAP_NO_ASYNC: private file mappings copied whole inside the freeze (for comparisons). */
        if (!e->prepare || getenv("LIVESNAP_NO_ASYNC"))
                e->async_uffd = safe_close(e->async_uffd);
        /* LIVESNAP_NO_FOLLOW: protection changes run on whatever CPU the scheduler gives (comparisons). */
        e->follow = !getenv("LIVESNAP_NO_FOLLOW") && sched_getaffinity(0, sizeof(e->cpus), &e->cpus) == 0 &&
                    CPU_COUNT(&e->cpus) > 1;
        {
                char p[64];
                snprintf(p, sizeof(p), "/proc/%d/pagemap", (int)pid);
                e->pagemap_fd = open(p, O_RDONLY | O_CLOEXEC);
                if (e->pagemap_fd < 0) {
                        r = -errno;
                        snprintf(res->error, sizeof(res->error), "cannot open %s: %s", p, strerror(-r));
                        goto out;
                }
        }

        r = pool_init(e, pid);
        if (r < 0) {
                snprintf(res->error, sizeof(res->error), "cannot map the %" PRIu64 " MiB buffer: %s",
                         e->buf_limit >> 20, strerror(-r));
                goto out;
        }
        e->priv_held_max = MIN(e->buf_limit / 4, PRIV_HELD_MAX) >> PAGE_SHIFT_4K;

        /* The writer runs from the start, so pages copied during the freeze stay within the buffer too. */
        r = -pthread_create(&writer, NULL, writer_thread, e);
        if (r < 0) {
                writer = 0;
                snprintf(res->error, sizeof(res->error), "cannot start the writer: %s", strerror(-r));
                goto out;
        }

        r = target_attach(pid, &e->target, res->error, sizeof(res->error));
        if (r < 0)
                goto out;
        phase(&opts, LIVESNAP_PHASE_ATTACHING);

        /* Which shared mappings other processes map or write too: this reads every process's /proc,
         * so it runs here while the target runs, not in the freeze; the freeze flags the VMAs. */
        {
                ProcMap *now = NULL;
                size_t n_now = 0;

                r = proc_maps_read(pid, &now, &n_now);
                if (r >= 0)
                        r = hazards_shared_elsewhere(pid, now, n_now, &e->shared, &e->n_shared);
                proc_maps_free(now, n_now);
                if (r == -ESRCH) {
                        snprintf(res->error, sizeof(res->error), "PID %d exited during the snapshot", (int)pid);
                        goto out;
                }
                if (r < 0)
                        e->shared_error = r;
        }

        /* ---- the prepare phase: the handler protects while the target runs ---- */
        if (e->prepare) {
                uint64_t t0 = now_usec();

                phase(&opts, LIVESNAP_PHASE_PREPARING);
                r = proc_maps_read(pid, &e->pre_maps, &e->n_pre_maps);
                if (r < 0) {
                        snprintf(res->error, sizeof(res->error), "reading /proc/%d/maps failed: %s", (int)pid,
                                 strerror(-r));
                        goto out;
                }
                e->pre = true;
                r = -pthread_create(&handler, NULL, handler_thread, e);
                if (r < 0) {
                        handler = 0;
                        snprintf(res->error, sizeof(res->error), "cannot start the fault handler: %s", strerror(-r));
                        goto out;
                }
                r = -pthread_create(&e->walker, NULL, walker_thread, e);
                if (r < 0) {
                        e->walker = 0;
                        snprintf(res->error, sizeof(res->error), "cannot start the prepare walk: %s", strerror(-r));
                        goto out;
                }
                supervise(e, sfd, &e->pre_ready, 0);
                /* Done when it said so (or failed, or was stopped): nothing of it runs into the freeze. */
                pthread_join(e->walker, NULL);
                e->walker = 0;
                if (atomic_load(&e->error) < 0)
                        goto failed;
                res->prepare_us = now_usec() - t0;
                res->prepare_passes = e->pre_passes;
                /* Test hook: time for the target to write what the prepare phase protected, before the
                 * freeze (tests/integration/privfile.sh). */
                const char *v = getenv("LIVESNAP_TEST_PREPARED_PAUSE_MS");
                if (v) {
                        atomic_bool never = false;

                        debug("test: pausing %s ms before the freeze", v);
                        supervise(e, sfd, &never, now_usec() + strtoull(v, NULL, 10) * 1000);
                        if (atomic_load(&e->error) < 0)
                                goto failed;
                }
        }

        /* ---- the freeze ---- */
        freeze_sched_enter(&freeze_sched);
        t_freeze0 = now_usec();
        uint64_t t_step = t_freeze0;
        r = target_stop_all(e->target, res->error, sizeof(res->error));
        if (r < 0)
                goto out;
        debug_step("stop all threads", &t_step);
        if (handler) {
                pthread_mutex_lock(&e->lock);
                e->park = true;
                if (!e->idle) {
                        (void)eventfd_write(e->handler_fd, 1);
                        while (!e->parked && !atomic_load(&e->stop))
                                pthread_cond_wait(&e->cond, &e->lock);
                }
                pthread_mutex_unlock(&e->lock);
                if (atomic_load(&e->error) < 0)
                        goto failed;
                debug_step("park the fault handler", &t_step);
        }
        clock_gettime(CLOCK_REALTIME, &t_at);

        r = target_capture_threads(e->target);
        if (r < 0) {
                snprintf(res->error, sizeof(res->error), "reading thread registers failed: %s", strerror(-r));
                goto out;
        }
        for (size_t i = 0; i < e->target->n_threads; i++)
                if (e->target->threads[i].at_instant)
                        res->threads++;
        debug_step("capture registers", &t_step);


        r = target_read_tid_addresses(e->target);
        if (r < 0) {
                snprintf(res->error, sizeof(res->error), "reading thread tid addresses failed: %s", strerror(-r));
                goto out;
        }
        debug_step("tid addresses", &t_step);

        r = proc_maps_read(pid, &maps, &n_maps);
        if (r < 0) {
                snprintf(res->error, sizeof(res->error), "reading /proc/%d/maps failed: %s", (int)pid, strerror(-r));
                goto out;
        }
        vmas = calloc(MAX(n_maps, (size_t)1), sizeof(ImageVma));
        if (!vmas) {
                r = -ENOMEM;
                goto out;
        }
        debug_step("maps", &t_step);
        {
                char p[64];
                snprintf(p, sizeof(p), "/proc/%d/auxv", (int)pid);
                (void)read_full_file(p, &auxv, &auxv_len);
                (void)proc_exe_read(pid, &exe);
                (void)proc_cmdline_read(pid, &argv);
        }

        debug_step("auxv, exe, cmdline", &t_step);
        r = setup_memory(e, maps, n_maps, vmas, res->error, sizeof(res->error));
        if (r < 0 && atomic_load(&e->error) < 0)
                goto failed;
        if (r < 0)
                goto out;
        debug_step("register, scan, protect", &t_step);
        res->pages_reprotected = e->pages_reprotected;
        res->private_pages_early = e->priv_early;
        res->private_pages_frozen = e->priv_refreshed + e->priv_copied;

        phase(&opts, LIVESNAP_PHASE_FROZEN);

        /* The target first, then the handler: a thread that faults meanwhile waits in the uffd for the
         * handler (not parked any more, nor still in the prepare phase) to read it, and waking the
         * handler does not delay the last PTRACE_CONT. */
        r = target_resume_all(e->target);
        t_freeze1 = now_usec();
        res->freeze_us = t_freeze1 - t_freeze0;
        /* Before leaving SCHED_FIFO: the threads just resumed may then hold this CPU for a millisecond or
         * more, which is not the freeze's. */
        debug_step("resume", &t_step);
        freeze_sched_leave(&freeze_sched);
        if (r < 0) {
                snprintf(res->error, sizeof(res->error), "resuming the target failed: %s", strerror(-r));
                goto out;
        }
        /* Names are not worth the freeze's time (~10 us a thread): read now, a moment after the instant. */
        target_read_thread_names(e->target);
        {
                /* The process's name is its main thread's; a main thread gone leaves it to /proc. */
                Tracee *main_thread = target_find(e->target, pid);
                ProcStatus st;

                if (main_thread && main_thread->at_instant && main_thread->saved.comm[0])
                        memcpy(comm, main_thread->saved.comm, sizeof(comm) - 1);
                else if (proc_status_read(pid, 0, &st) >= 0)
                        memcpy(comm, st.name, sizeof(comm) - 1);
        }
        if (handler) {
                pthread_mutex_lock(&e->lock);
                e->pre = false;
                e->park = false;
                pthread_cond_broadcast(&e->cond);
                pthread_mutex_unlock(&e->lock);
        } else {
                r = -pthread_create(&handler, NULL, handler_thread, e);
                if (r < 0) {
                        handler = 0;
                        snprintf(res->error, sizeof(res->error), "cannot start the fault handler: %s", strerror(-r));
                        goto out;
                }
        }
        if (e->async_uffd >= 0) {
                /* Past the instant: nothing more to learn from it; closing it lets go of its mappings. */
                e->async_uffd = safe_close(e->async_uffd);
                size_t watched = 0;

                for (size_t i = 0; i < e->n_priv; i++)
                        watched += e->priv[i].watched;
                debug("private file mappings: %zu tracked, %zu of them watched; %" PRIu64 " pages copied early stood, %" PRIu64
                      " read again in the freeze, %" PRIu64 " copied in it",
                      e->n_priv, watched, e->priv_early, e->priv_refreshed, e->priv_copied);
        }

        /* ---- copying ---- */
        phase(&opts, LIVESNAP_PHASE_COPYING);
        r = -pthread_create(&copier, NULL, copier_thread, e);
        if (r < 0) {
                copier = 0;
                snprintf(res->error, sizeof(res->error), "cannot start the copier: %s", strerror(-r));
                goto out;
        }

        supervise(e, sfd, &e->copier_done, 0);

        if (atomic_load(&e->error) < 0)
                goto failed;

        phase(&opts, LIVESNAP_PHASE_FINISHING);

        /* Every page is saved. Stop the handler and close the uffd: the kernel drops every remaining
         * write-protect bit and wakes any thread still waiting. Then drain the writer. */
        engine_stop_threads(e, &handler, &copier, &writer);
        debug("threads stopped, buffer drained");
        for (int k = 0; k < _FAULT_KIND_MAX; k++)
                debug("faults %s: %" PRIu64 ", %" PRIu64 " us in all, %" PRIu64 " over 100 us, %" PRIu64
                      " over 500 us, longest %" PRIu64 " us",
                      k == FAULT_SAVED ? "saving pages" : k == FAULT_WINDOW_FREED ? "freeing a saved window" : "other",
                      e->fault_stats[k].n,
                      e->fault_stats[k].us, e->fault_stats[k].over100, e->fault_stats[k].over500,
                      e->fault_stats[k].max);
        e->uffd = safe_close(e->uffd);
        debug("uffd closed");
        if (atomic_load(&e->error) < 0)
                goto failed;

        {
                ImageWriterStats ws;
                json_object *meta;

                res->pages_discarded = atomic_load(&e->pages_discarded);
                res->pages_unsaved = atomic_load(&e->pages_unsaved);
                res->pages_faulted = atomic_load(&e->pages_faulted);
                res->faults = atomic_load(&e->faults);
                res->peak_buffer_bytes = e->buf_peak;
                res->throttle_us = atomic_load(&e->throttle_us);
                image_writer_get_stats(e->writer, &ws);
                res->pages_saved = ws.pages_stored;
                res->pages_zero = ws.pages_zero + atomic_load(&e->pages_zero_at_t);
                res->elapsed_ms = (now_usec() - t_start) / 1000;

                /* The writer thread is done: the small sections go last, from this thread. */
                r = image_writer_add_maps(e->writer, vmas, n_maps);
                for (size_t i = 0; r >= 0 && i < e->target->n_threads; i++) {
                        /* main thread first */
                        Tracee *tr = &e->target->threads[i];
                        if (tr->at_instant && tr->tid == pid)
                                r = image_writer_add_thread(e->writer, &tr->saved);
                }
                for (size_t i = 0; r >= 0 && i < e->target->n_threads; i++) {
                        Tracee *tr = &e->target->threads[i];
                        if (tr->at_instant && tr->tid != pid)
                                r = image_writer_add_thread(e->writer, &tr->saved);
                }
                if (r >= 0 && auxv)
                        r = image_writer_add_auxv(e->writer, auxv, auxv_len);
                if (r >= 0)
                        r = image_writer_add_holes(e->writer, e->holes, e->n_holes);
                if (r >= 0) {
                        meta = build_meta(e, exe, argv, comm, &t_at, res);
                        r = image_writer_add_json(e->writer, IMAGE_SECTION_META, meta);
                        json_object_put(meta);
                }
                if (r >= 0)
                        r = image_writer_finish(e->writer);
                debug("image finished");
                if (r < 0) {
                        snprintf(res->error, sizeof(res->error), "writing %s failed: %s", path, strerror(-r));
                        goto out;
                }
                image_writer_get_stats(e->writer, &ws);
                res->image_bytes = ws.bytes_written;
        }

        if (opts.progress)
                opts.progress(opts.userdata, atomic_load(&e->bytes_total), atomic_load(&e->bytes_total));
        success = true;
        r = 0;
        goto out;

failed:
        r = atomic_load(&e->error);
        pthread_mutex_lock(&e->err_lock);
        snprintf(res->error, sizeof(res->error), "%s", e->errmsg);
        pthread_mutex_unlock(&e->err_lock);

out:
        freeze_sched_leave(&freeze_sched);
        engine_stop_threads(e, &handler, &copier, &writer);
        /* Un-protect (close the only uffd), then let the threads go. */
        e->uffd = safe_close(e->uffd);
        e->async_uffd = safe_close(e->async_uffd);
        if (e->target) {
                if (t_freeze0 && !t_freeze1)
                        res->freeze_us = now_usec() - t_freeze0;
                e->target = target_free(e->target);
        }
        if (!success) {
                if (r >= 0)
                        r = -EIO;
                if (!res->error[0])
                        snprintf(res->error, sizeof(res->error), "%s", strerror(-r));
        }
        res->elapsed_ms = (now_usec() - t_start) / 1000;

        e->writer = image_writer_free(e->writer);
        while (e->head) {
                Chunk *c = e->head;
                e->head = c->next;
                free(c);
        }
        for (size_t i = 0; i < e->n_priv; i++)
                while (e->priv[i].held) {
                        Chunk *c = e->priv[i].held;
                        e->priv[i].held = c->next;
                        free(c);
                }
        free(e->priv);
        free(e->unreg);
        for (size_t i = 0; i < e->n_ranges; i++)
                free(e->ranges[i].pages);
        free(e->ranges);
        free(e->holes);
        free(e->dirty);
        proc_maps_free(e->pre_maps, e->n_pre_maps);
        safe_close(e->stop_fd);
        safe_close(e->super_fd);
        safe_close(e->handler_fd);
        safe_close(e->pagemap_fd);
        pool_free(e);
        free(e->holed.v);
        if (sfd >= 0) {
                /* Drop SIGCHLDs our ptrace generated so the caller does not see them. */
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) > 0)
                        ;
                safe_close(sfd);
                pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        }
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cond);
        pthread_mutex_destroy(&e->buf_lock);
        pthread_cond_destroy(&e->buf_cond);
        pthread_cond_destroy(&e->writer_cond);
        pthread_mutex_destroy(&e->err_lock);
        hazard_ranges_free(e->pinned, e->n_pinned);
        free(e->shared);
        free(e);
        free(vmas);
        proc_maps_free(maps, n_maps);
        free(exe);
        strv_free(argv);
        free(auxv);
        return r;
}

_export_ const char *livesnap_phase_to_string(LivesnapPhase p)
{
        static const char *const table[_LIVESNAP_PHASE_MAX] = {
                [LIVESNAP_PHASE_ATTACHING] = "attaching",
                [LIVESNAP_PHASE_FROZEN] = "frozen",
                [LIVESNAP_PHASE_COPYING] = "copying",
                [LIVESNAP_PHASE_FINISHING] = "finishing",
                [LIVESNAP_PHASE_PREPARING] = "preparing",
        };

        if ((unsigned)p >= _LIVESNAP_PHASE_MAX)
                return NULL;
        return table[p];
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-swarm: many threads and many mappings, both churning all the time.
 *
 * Threads: N_SLOTS (1000) worker slots. A worker runs a random number of iterations, a few
 * milliseconds apart, then exits; the main thread joins it (so a lost clear_child_tid at exit would
 * hang the join and stop the churn) and starts a new worker in the slot. Each iteration, in this order:
 *   slot.in_progress = 1; slot.prev = slot.cur; g = ++counter (atomic); slot.cur = g; cells[slot] = g;
 *   slot.done++; slot.in_progress = 0.
 * "cells" is a separate mapping. The check requires, at the snapshot instant:
 *   - each slot: cells[slot] == cur, or (in_progress) prev or cur; prev <= cur <= counter;
 *   - sum(done) <= counter <= sum(done) + number of slots in progress (every increment of the counter
 *     is one slot's iteration, counted in done when it ends);
 *   - no two slots hold the same non-zero cur.
 * A checkpoint that saved the counter, the slots and the cells at different moments breaks these at
 * once: about 30000 iterations a second go by.
 *
 * Mappings: N_POOL (10000) one-page private anonymous mappings at a two-page stride inside a
 * PROT_NONE reservation (so that none merge). Two churner threads each own half of them and keep
 * unmapping and remapping them (munmap + mmap, or mmap MAP_FIXED over), rewriting them, and
 * mprotect()ing them read-only and back. Each page is filled with pool_word(gen, index); the pool
 * table ("pool_table") records addr, gen and state (BUSY while an entry changes, READY after). The
 * check of an entry READY at the instant: its page reads back as pool_word(gen, index) everywhere, or
 * the image does not hold it (unmapped after the instant before it was saved).
 *
 * "progress" is [counter, workers started, churn operations, main-thread loops].
 *
 * Check mode: `victim-swarm --check DIR` checks control.bin, slots.bin, cells.bin and any
 * pool-N.bin files (entry N's page; an empty file stands for one the image does not hold);
 * `victim-swarm --check DIR --pool-list K` prints K chunks of 8 consecutive entries (evenly spread;
 * needs pool_table.bin), each as "NAME FIRST COUNT ADDR LEN", for the test to extract with one
 * `livesnap cat` each and split into pool-N.bin files.
 */
#include <pthread.h>

#include "victim.h"

#define N_SLOTS     1000
#define N_POOL      10000
#define N_CHURNERS  2
#define STACK_SIZE  (64 * 1024)
#define ITER_MIN    5
#define ITER_SPREAD 60

enum { POOL_READY = 1, POOL_BUSY = 2 };

typedef struct Slot {
        uint64_t in_progress;
        uint64_t prev;
        uint64_t cur;
        uint64_t done;
        uint64_t tid;
        uint64_t exited; /* set by the worker as its last act; the main thread joins it */
        uint64_t pad[2];
} Slot;

typedef struct PoolEntry {
        uint64_t addr;
        uint64_t gen;
        uint64_t state;
        uint64_t prot;
} PoolEntry;

typedef struct Control {
        uint64_t progress[4]; /* counter, workers started, churn ops, main loops */
        uint64_t n_slots, n_pool;
        uint64_t threads_live;
} Control;

static Control *ctl;
static Slot *slots;
static volatile uint64_t *cells;
static PoolEntry *pool;
static char *reservation;
static pthread_t threads[N_SLOTS];
static unsigned worker_sleep_us = 30000, churn_sleep_us = 400;

static inline uint64_t pool_word(uint64_t gen, uint64_t idx, uint64_t i)
{
        return (gen << 40) ^ (idx << 16) ^ i ^ 0x5a5a000000000000ULL;
}

static uint64_t rnd(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static void *worker(void *arg)
{
        size_t k = (size_t)(uintptr_t)arg;
        volatile Slot *s = &slots[k];
        uint64_t seed = now_ns() ^ (k * 0x9e3779b97f4a7c15ULL) ^ 1;
        unsigned n = ITER_MIN + (unsigned)(rnd(&seed) % ITER_SPREAD);

        s->tid = (uint64_t)victim_gettid();
        for (unsigned it = 0; it < n; it++) {
                s->in_progress = 1;
                barrier();
                s->prev = s->cur;
                barrier();
                uint64_t g = atomic_fetch_add((_Atomic uint64_t *)&ctl->progress[0], 1) + 1;
                s->cur = g;
                barrier();
                cells[k] = g;
                barrier();
                s->done++;
                barrier();
                s->in_progress = 0;
                sleep_us(worker_sleep_us / 2 + (unsigned)(rnd(&seed) % worker_sleep_us));
        }
        atomic_fetch_sub((_Atomic uint64_t *)&ctl->threads_live, 1);
        __atomic_store_n(&s->exited, 1, __ATOMIC_RELEASE);
        return NULL;
}

static void start_worker(size_t k, pthread_attr_t *attr)
{
        int r;

        slots[k].exited = 0;
        atomic_fetch_add((_Atomic uint64_t *)&ctl->threads_live, 1);
        for (int tries = 0; (r = pthread_create(&threads[k], attr, worker, (void *)(uintptr_t)k)) == EAGAIN;
             tries++) {
                if (tries > 1000)
                        break;
                sleep_us(1000);
        }
        if (r != 0) {
                errno = r;
                victim_fail("pthread_create: %m");
        }
        atomic_fetch_add((_Atomic uint64_t *)&ctl->progress[1], 1);
}

static void pool_fill(size_t idx, uint64_t gen)
{
        uint64_t *w = (uint64_t *)(uintptr_t)pool[idx].addr;
        for (size_t i = 0; i < VICTIM_PAGE_SIZE / 8; i++)
                w[i] = pool_word(gen, idx, i);
}

static void *pool_page(size_t idx)
{
        return reservation + 2 * idx * VICTIM_PAGE_SIZE + VICTIM_PAGE_SIZE;
}

/* Check mode: the page of pool entry 0 (entry i's is 2 * i pages on; they never move). */
static uint64_t pool_base;

static void pool_map(size_t idx, bool unmap_first)
{
        void *p = pool_page(idx);

        if (unmap_first)
                VCHECK(munmap(p, VICTIM_PAGE_SIZE) == 0);
        VCHECK(mmap(p, VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                    0) == p);
        pool[idx].addr = (uint64_t)(uintptr_t)p;
        pool[idx].prot = PROT_READ | PROT_WRITE;
}

static void *churner(void *arg)
{
        size_t first = (size_t)(uintptr_t)arg * (N_POOL / N_CHURNERS), n = N_POOL / N_CHURNERS;
        uint64_t seed = now_ns() ^ (first + 7);

        for (;;) {
                size_t idx = first + rnd(&seed) % n;
                PoolEntry *e = &pool[idx];
                unsigned op = (unsigned)(rnd(&seed) % 4);

                if (op == 3) {
                        /* Flip the protection; the content stays. */
                        int prot = e->prot == PROT_READ ? PROT_READ | PROT_WRITE : PROT_READ;
                        VCHECK(mprotect((void *)(uintptr_t)e->addr, VICTIM_PAGE_SIZE, prot) == 0);
                        e->prot = (uint64_t)prot;
                } else {
                        uint64_t gen = e->gen + 1;
                        e->state = POOL_BUSY;
                        barrier();
                        if (op == 0 || op == 1)
                                pool_map(idx, op == 0);
                        else if (e->prot != (PROT_READ | PROT_WRITE)) {
                                VCHECK(mprotect((void *)(uintptr_t)e->addr, VICTIM_PAGE_SIZE,
                                                PROT_READ | PROT_WRITE) == 0);
                                e->prot = PROT_READ | PROT_WRITE;
                        }
                        pool_fill(idx, gen);
                        barrier();
                        e->gen = gen;
                        barrier();
                        e->state = POOL_READY;
                }
                atomic_fetch_add((_Atomic uint64_t *)&ctl->progress[2], 1);
                if (churn_sleep_us)
                        sleep_us(churn_sleep_us);
        }
        return NULL;
}

static _Noreturn void run(void)
{
        pthread_attr_t attr;
        pthread_t t;

        victim_init_run();
        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        ctl->n_slots = N_SLOTS;
        ctl->n_pool = N_POOL;
        slots = map_anon(sizeof(Slot) * N_SLOTS, PROT_READ | PROT_WRITE, 0);
        cells = map_anon(8 * N_SLOTS, PROT_READ | PROT_WRITE, 0);
        pool = map_anon(sizeof(PoolEntry) * N_POOL, PROT_READ | PROT_WRITE, 0);

        reservation = mmap(NULL, 2 * N_POOL * VICTIM_PAGE_SIZE + VICTIM_PAGE_SIZE, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        VCHECK(reservation != MAP_FAILED);
        for (size_t i = 0; i < N_POOL; i++) {
                pool_map(i, false);
                pool[i].gen = 1;
                pool_fill(i, 1);
                pool[i].state = POOL_READY;
        }

        VCHECK(pthread_attr_init(&attr) == 0);
        VCHECK(pthread_attr_setstacksize(&attr, STACK_SIZE) == 0);
        for (size_t k = 0; k < N_SLOTS; k++)
                start_worker(k, &attr);
        for (uintptr_t c = 0; c < N_CHURNERS; c++)
                VCHECK(pthread_create(&t, &attr, churner, (void *)c) == 0);

        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", ctl->progress, sizeof(ctl->progress));
        layout_add("slots", slots, sizeof(Slot) * N_SLOTS);
        layout_add("cells", (const void *)cells, 8 * N_SLOTS);
        layout_add("pool_table", pool, sizeof(PoolEntry) * N_POOL);
        victim_ready();

        for (;;) {
                for (size_t k = 0; k < N_SLOTS; k++) {
                        if (!__atomic_load_n(&slots[k].exited, __ATOMIC_ACQUIRE))
                                continue;
                        int r = pthread_join(threads[k], NULL);
                        if (r != 0) {
                                errno = r;
                                victim_fail("pthread_join of slot %zu: %m", k);
                        }
                        start_worker(k, &attr);
                }
                ((volatile uint64_t *)ctl->progress)[3]++;
                sleep_us(2000);
        }
}

/* Prints "NAME FIRST COUNT ADDR LEN" for want chunks of POOL_CHUNK consecutive entries, evenly spread:
 * [ADDR, ADDR + LEN) covers the chunk's pages and the gaps between them, so that one `livesnap cat`
 * extracts it (page j of the chunk at offset 2 * j pages). */
#define POOL_CHUNK 8
static int pool_list(unsigned want)
{
        size_t stride;

        if (want == 0)
                return 0;
        stride = N_POOL / want;
        if (stride < POOL_CHUNK)
                stride = POOL_CHUNK;
        for (size_t f = 0; f + POOL_CHUNK <= N_POOL && want > 0; f += stride, want--)
                printf("pool-chunk-%zu %zu %d 0x%" PRIx64 " %lu\n", f, f, POOL_CHUNK,
                       pool_base + 2 * f * VICTIM_PAGE_SIZE, (2 * POOL_CHUNK - 1) * VICTIM_PAGE_SIZE);
        return 0;
}

static int check(void)
{
        Control *c;
        Slot *s;
        uint64_t *cl, sum_done = 0, in_progress = 0, counter, *curs;
        size_t n_curs = 0, n_checked = 0;
        PoolEntry *p;

        layout_load();
        c = bin_load("control", NULL, false);
        s = bin_load("slots", NULL, false);
        cl = bin_load("cells", NULL, false);
        counter = c->progress[0];
        if (c->n_slots != N_SLOTS || c->n_pool != N_POOL)
                check_fail("control: n_slots=%" PRIu64 " n_pool=%" PRIu64, c->n_slots, c->n_pool);
        curs = calloc(N_SLOTS, sizeof(*curs));
        if (!curs)
                check_fail("out of memory");
        for (size_t k = 0; k < N_SLOTS; k++) {
                if (s[k].in_progress > 1 || s[k].prev > s[k].cur || s[k].cur > counter)
                        check_fail("slot %zu: in_progress=%" PRIu64 " prev=%" PRIu64 " cur=%" PRIu64
                                   " but counter=%" PRIu64 "%s",
                                   k, s[k].in_progress, s[k].prev, s[k].cur, counter,
                                   s[k].cur > counter ? ": the slot was saved after the counter's instant"
                                                      : "");
                if (cl[k] != s[k].cur && !(s[k].in_progress && cl[k] == s[k].prev))
                        check_fail("slot %zu: cell is %" PRIu64 ", but the slot says cur=%" PRIu64
                                   " prev=%" PRIu64 " in_progress=%" PRIu64,
                                   k, cl[k], s[k].cur, s[k].prev, s[k].in_progress);
                sum_done += s[k].done;
                in_progress += s[k].in_progress;
                if (s[k].cur)
                        curs[n_curs++] = s[k].cur;
        }
        if (sum_done > counter || counter > sum_done + in_progress)
                check_fail("counter=%" PRIu64 " but the slots record %" PRIu64
                           " finished iterations and %" PRIu64
                           " in progress: counter and slots are not from one instant",
                           counter, sum_done, in_progress);
        for (size_t i = 0; i < n_curs; i++)
                for (size_t j = i + 1; j < n_curs; j++)
                        if (curs[i] == curs[j])
                                check_fail("two slots hold the same generation %" PRIu64, curs[i]);
        printf("slots ok: counter=%" PRIu64 ", %" PRIu64 " iterations done, %" PRIu64
               " in progress, %" PRIu64 " workers started\n",
               counter, sum_done, in_progress, c->progress[1]);

        p = bin_load("pool_table", NULL, false);
        for (size_t i = 0; i < N_POOL; i++) {
                char path[PATH_MAX];
                uint64_t w[VICTIM_PAGE_SIZE / 8];
                ssize_t n;
                int fd;

                /* DIR/pool-N.bin: the test extracted entry N (its chunk was held in the image). */
                snprintf(path, sizeof(path), "%s/pool-%zu.bin", victim_dir, i);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue; /* not extracted, or not in the image (discarded) */
                n = read(fd, w, sizeof(w));
                close(fd);
                if (n == 0)
                        continue;
                if (n != (ssize_t)sizeof(w))
                        check_fail("%s: %zd bytes, expected %zu", path, n, sizeof(w));
                /* The test extracts every entry of a chunk it samples; one being changed at the instant
                 * (BUSY: remapped, re-protected or half refilled) holds nothing defined. */
                if (p[i].state != POOL_READY)
                        continue;
                for (size_t k = 0; k < VICTIM_PAGE_SIZE / 8; k++)
                        if (w[k] != pool_word(p[i].gen, i, k))
                                check_fail("pool-%zu (0x%" PRIx64 "): word %zu is 0x%" PRIx64
                                           ", expected 0x%" PRIx64 " (gen %" PRIu64 ")%s",
                                           i, p[i].addr, k, w[k], pool_word(p[i].gen, i, k), p[i].gen,
                                           (w[k] ^ pool_word(p[i].gen, i, k)) >> 40 ? ": another generation"
                                                                                    : "");
                n_checked++;
        }
        printf("pool ok: %zu entries checked\n", n_checked);
        free(p);
        free(curs);
        free(cl);
        free(s);
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);

        if (victim_check_mode) {
                if (i + 1 < argc && strcmp(argv[i], "--pool-list") == 0) {
                        PoolEntry *p;
                        layout_load();
                        p = bin_load("pool_table", NULL, false);
                        pool_base = p[0].addr;
                        free(p);
                        return pool_list((unsigned)strtoul(argv[i + 1], NULL, 10));
                }
                return check();
        }
        for (; i < argc; i += 2) {
                if (i + 1 >= argc)
                        usage_exit();
                if (strcmp(argv[i], "--worker-sleep-us") == 0)
                        worker_sleep_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--churn-sleep-us") == 0)
                        churn_sleep_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
                else
                        usage_exit();
        }
        if (worker_sleep_us < 2)
                worker_sleep_us = 2;
        run();
}

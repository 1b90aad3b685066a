/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-churn: a large ballast of data, and a loop that keeps changing the memory map.
 *
 * The ballast (256 MiB of a known pattern, never changed) makes a rate-limited dump last seconds.
 * Meanwhile one thread cycles through a pool of small regions full of data: it unmaps the oldest
 * region and maps a new one every iteration, so within milliseconds of the dump starting, regions
 * that held data at the snapshot instant are gone before the copier could reach them (the image must
 * mark them discarded, never pass them off as zeros). On the way it moves and grows regions with
 * mremap, shrinks them, toggles protections, drops pages with MADV_DONTNEED and MADV_FREE, and
 * forks children that exit at once. Before a region is unmapped and after each operation the thread
 * checks the region's content; a mismatch means the snapshot changed the target's memory (the victim
 * writes DIR/error and exits).
 *
 * The pool table (address, length, id, busy flag per region) lives in the control pages, so the image
 * says where every region was at the instant: `--check DIR --pool-list` prints them for the test to
 * extract (each either readable or discarded), and `--check DIR` verifies every extracted region that
 * was not busy, the ballast windows and the counters.
 */
#include <sys/wait.h>

#include "victim.h"

#define BALLAST_SIZE (256 * MIB)
#define WINDOW_SIZE  (4 * MIB)
#define NPOOL        256
#define REGION_SIZE  (128 * 1024UL)
#define REGION_MAX   (512 * 1024UL)

typedef struct PoolEntry {
        uint64_t addr;
        uint64_t len;
        uint64_t id;
        uint64_t busy;    /* being changed: content not defined */
        uint64_t history; /* H_* bits: what happened to the region since it was created */
} PoolEntry;

enum {
        H_GROWN = 1 << 0,
        H_SHRUNK = 1 << 1,
        H_MOVED = 1 << 2,
        H_MPROTECT = 1 << 3,
        H_DONTNEED = 1 << 4,
        H_FREE = 1 << 5,
};

static const char *history_str(uint64_t h)
{
        static char buf[128];
        snprintf(buf, sizeof(buf), "%s%s%s%s%s%s%s", h ? "" : "none", h & H_GROWN ? "grown " : "",
                 h & H_SHRUNK ? "shrunk " : "", h & H_MOVED ? "moved " : "",
                 h & H_MPROTECT ? "mprotect " : "", h & H_DONTNEED ? "dontneed " : "",
                 h & H_FREE ? "free " : "");
        return buf;
}

typedef struct Control {
        uint64_t iterations; /* the "progress" counter */
        uint64_t forks, moves, grows, shrinks, mprotects, dontneeds, frees, unmaps;
        uint64_t next_id;
        uint64_t npool;
        PoolEntry pool[NPOOL];
} Control;

#define CONTROL_SIZE ((sizeof(Control) + VICTIM_PAGE_SIZE - 1) & ~(VICTIM_PAGE_SIZE - 1))

static Control *ctl;

static inline uint64_t region_word(uint64_t id, size_t i)
{
        return (id << 32) ^ (uint64_t)i ^ 0xc4c4000000000000ULL;
}

static void region_fill(volatile PoolEntry *e, size_t from, size_t to)
{
        uint64_t *w = (uint64_t *)(uintptr_t)e->addr;
        for (size_t i = from / 8; i < to / 8; i++)
                w[i] = region_word(e->id, i);
}

static void region_verify(volatile PoolEntry *e, size_t from, size_t to, const char *after)
{
        const uint64_t *w = (const uint64_t *)(uintptr_t)e->addr;
        for (size_t i = from / 8; i < to / 8; i++)
                if (w[i] != region_word(e->id, i))
                        victim_fail("region id %" PRIu64 " at 0x%" PRIx64 " (len %" PRIu64
                                    "): word %zu is 0x%" PRIx64 ", expected 0x%" PRIx64 " (after %s)",
                                    (uint64_t)e->id, (uint64_t)e->addr, (uint64_t)e->len, i, w[i],
                                    region_word(e->id, i), after);
}

static void region_new(volatile PoolEntry *e)
{
        void *p = map_anon(REGION_SIZE, PROT_READ | PROT_WRITE, 0);

        e->addr = (uint64_t)(uintptr_t)p;
        e->len = REGION_SIZE;
        e->id = ++ctl->next_id;
        e->history = 0;
        region_fill(e, 0, REGION_SIZE);
}

static void churn_once(uint64_t k)
{
        volatile PoolEntry *e = &ctl->pool[k % NPOOL];
        volatile PoolEntry *o = &ctl->pool[(k + NPOOL / 2) % NPOOL];
        void *p;

        /* Replace the oldest region. */
        region_verify(e, 0, e->len, "running");
        e->busy = 1;
        barrier();
        VCHECK(munmap((void *)(uintptr_t)e->addr, e->len) == 0);
        ctl->unmaps++;
        region_new(e);
        barrier();
        e->busy = 0;

        /* And do something to another one. */
        o->busy = 1;
        barrier();
        switch (k % 8) {
        case 0: /* grow (moves if it cannot grow in place), or shrink when large */
                if (o->len < REGION_MAX) {
                        size_t old = o->len;
                        p = mremap((void *)(uintptr_t)o->addr, old, old * 2, MREMAP_MAYMOVE);
                        VCHECK(p != MAP_FAILED);
                        o->addr = (uint64_t)(uintptr_t)p;
                        o->len = old * 2;
                        region_verify(o, 0, old, "mremap grow");
                        region_fill(o, old, o->len);
                        ctl->grows++;
                        o->history |= H_GROWN;
                } else {
                        p = mremap((void *)(uintptr_t)o->addr, o->len, REGION_SIZE, 0);
                        VCHECK(p != MAP_FAILED);
                        o->len = REGION_SIZE;
                        region_verify(o, 0, o->len, "mremap shrink");
                        ctl->shrinks++;
                        o->history |= H_SHRUNK;
                }
                break;
        case 1:
        case 5: /* move */
                p = mmap(NULL, o->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                VCHECK(p != MAP_FAILED);
                p = mremap((void *)(uintptr_t)o->addr, o->len, o->len, MREMAP_MAYMOVE | MREMAP_FIXED, p);
                VCHECK(p != MAP_FAILED);
                o->addr = (uint64_t)(uintptr_t)p;
                region_verify(o, 0, o->len, "mremap move");
                ctl->moves++;
                o->history |= H_MOVED;
                break;
        case 2:
        case 6: /* read-only for a while */
                VCHECK(mprotect((void *)(uintptr_t)o->addr, o->len, PROT_READ) == 0);
                region_verify(o, 0, o->len, "mprotect(PROT_READ)");
                VCHECK(mprotect((void *)(uintptr_t)o->addr, o->len, PROT_READ | PROT_WRITE) == 0);
                region_fill(o, 0, o->len);
                ctl->mprotects++;
                o->history |= H_MPROTECT;
                break;
        case 3:
        case 7: { /* drop the second half: it must read as zeros */
                size_t half = o->len / 2;
                const uint64_t *w = (const uint64_t *)(uintptr_t)(o->addr + half);
                VCHECK(madvise((void *)(uintptr_t)(o->addr + half), half, MADV_DONTNEED) == 0);
                for (size_t i = 0; i < half / 8; i++)
                        if (w[i] != 0)
                                victim_fail("region id %" PRIu64
                                            ": word %zu after MADV_DONTNEED is 0x%" PRIx64 ", expected 0",
                                            (uint64_t)o->id, half / 8 + i, w[i]);
                region_verify(o, 0, half, "MADV_DONTNEED of the other half");
                region_fill(o, half, o->len);
                ctl->dontneeds++;
                o->history |= H_DONTNEED;
                break;
        }
        case 4: /* MADV_FREE the first half, then write it again (which cancels the free) */
                VCHECK(madvise((void *)(uintptr_t)o->addr, o->len / 2, MADV_FREE) == 0);
                region_fill(o, 0, o->len / 2);
                region_verify(o, 0, o->len, "MADV_FREE");
                ctl->frees++;
                o->history |= H_FREE;
                break;
        }
        barrier();
        o->busy = 0;

        if (k % 64 == 63) {
                pid_t pid = fork();
                VCHECK(pid >= 0);
                if (pid == 0)
                        _exit(0);
                int status;
                VCHECK(waitpid(pid, &status, 0) == pid);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        victim_fail("forked child ended with status 0x%x", status);
                ctl->forks++;
        }
        barrier();
        ((volatile Control *)ctl)->iterations++;
}

static _Noreturn void run(void)
{
        char *ballast;

        victim_init_run();
        ctl = map_anon(CONTROL_SIZE, PROT_READ | PROT_WRITE, 0);
        ctl->npool = NPOOL;
        ballast = map_anon(BALLAST_SIZE, PROT_READ | PROT_WRITE, 0);
        fill_pattern(ballast, BALLAST_SIZE);
        for (size_t i = 0; i < NPOOL; i++)
                region_new(&ctl->pool[i]);

        layout_add("control", ctl, CONTROL_SIZE);
        layout_add("progress", &ctl->iterations, sizeof(ctl->iterations));
        layout_add("ballast_head", ballast, WINDOW_SIZE);
        layout_add("ballast_mid", ballast + BALLAST_SIZE / 2 - WINDOW_SIZE / 2, WINDOW_SIZE);
        layout_add("ballast_tail", ballast + BALLAST_SIZE - WINDOW_SIZE, WINDOW_SIZE);
        layout_add("ballast", ballast, BALLAST_SIZE);
        /* A few iterations first, so that every kind of operation has run once. */
        for (uint64_t k = 0; k < 64; k++)
                churn_once(k);
        victim_ready();
        for (uint64_t k = 64;; k++)
                churn_once(k);
}

static int check(const char *extra)
{
        static const char *const windows[] = {"ballast_head", "ballast_mid", "ballast_tail"};
        const LayoutEntry *le;
        Control *c;
        size_t checked = 0, missing = 0, busy = 0;

        layout_load();
        c = bin_load("control", &le, false);
        if (c->npool != NPOOL)
                check_fail("control: npool=%" PRIu64 ", expected %d", c->npool, NPOOL);

        if (extra && strcmp(extra, "--pool-list") == 0) {
                for (size_t i = 0; i < NPOOL; i++)
                        printf("pool-%zu 0x%" PRIx64 " %" PRIu64 "\n", i, c->pool[i].addr, c->pool[i].len);
                return 0;
        }

        if (c->iterations < 64)
                check_fail("control: iterations=%" PRIu64 " < 64 at the instant", c->iterations);
        for (size_t i = 0; i < 3; i++) {
                const LayoutEntry *e;
                void *buf = bin_load(windows[i], &e, true);
                ssize_t bad;
                if (!buf)
                        continue;
                bad = pattern_mismatch(buf, e->addr, e->len);
                if (bad >= 0)
                        check_fail("%s: word at 0x%" PRIx64 " is 0x%" PRIx64 ", expected 0x%" PRIx64,
                                   windows[i], e->addr + 8 * (uint64_t)bad, ((uint64_t *)buf)[bad],
                                   pattern_word(e->addr + 8 * (uint64_t)bad));
                printf("%s ok\n", windows[i]);
                free(buf);
        }

        /* Pool regions: DIR/pool-N.bin for those the image holds. */
        for (size_t i = 0; i < NPOOL; i++) {
                const PoolEntry *e = &c->pool[i];
                char path[PATH_MAX];
                struct stat st;
                uint64_t *w;
                FILE *f;

                snprintf(path, sizeof(path), "%s/pool-%zu.bin", victim_dir, i);
                f = fopen(path, "re");
                if (!f) {
                        missing++;
                        continue;
                }
                if (fstat(fileno(f), &st) < 0 || (uint64_t)st.st_size != e->len)
                        check_fail("%s: %lld bytes, expected %" PRIu64, path, (long long)st.st_size, e->len);
                if (e->busy) {
                        busy++;
                        fclose(f);
                        continue;
                }
                w = malloc(e->len);
                if (!w || fread(w, 1, e->len, f) != e->len)
                        check_fail("cannot read %s", path);
                fclose(f);
                for (size_t j = 0; j < e->len / 8; j++) {
                        size_t zero_pages = 0, bad_pages = 0;
                        if (w[j] == region_word(e->id, j))
                                continue;
                        for (size_t p = 0; p < e->len / VICTIM_PAGE_SIZE; p++) {
                                const uint64_t *pw = w + p * VICTIM_PAGE_SIZE / 8;
                                bool zero = true, bad = false;
                                for (size_t q = 0; q < VICTIM_PAGE_SIZE / 8; q++) {
                                        zero = zero && pw[q] == 0;
                                        bad = bad ||
                                              pw[q] != region_word(e->id, p * VICTIM_PAGE_SIZE / 8 + q);
                                }
                                zero_pages += zero;
                                bad_pages += bad;
                        }
                        /* Iteration k unmaps pool[k % NPOOL] and maps id NPOOL + 1 + k in its place;
                         * the first NPOOL regions have ids 1..NPOOL: region id N goes at iteration
                         * N - 1. */
                        check_fail(
                                "pool-%zu (id %" PRIu64 ", 0x%" PRIx64 "+%" PRIu64
                                ", history: %s): word %zu is 0x%" PRIx64 ", expected 0x%" PRIx64
                                "; %zu of %zu pages wrong, %zu of them all zero%s; the region "
                                "was unmapped at iteration %" PRIu64 " (the instant: iteration %" PRIu64 ")",
                                i, e->id, e->addr, e->len, history_str(e->history), j, w[j],
                                region_word(e->id, j), bad_pages, (size_t)(e->len / VICTIM_PAGE_SIZE),
                                zero_pages,
                                zero_pages
                                        ? " (data passed off as zeros: neither saved nor marked discarded)"
                                        : "",
                                e->id - 1, c->iterations);
                }
                free(w);
                checked++;
        }
        printf("pool: %zu regions consistent, %zu not in the image, %zu busy at the instant; "
               "iterations=%" PRIu64 " forks=%" PRIu64 "\n",
               checked, missing, busy, c->iterations, c->forks);
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);
        if (victim_check_mode)
                return check(i < argc ? argv[i] : NULL);
        run();
}

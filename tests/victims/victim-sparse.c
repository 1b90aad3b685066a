/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-sparse: a sweep over pages scattered across a large, mostly empty mapping, some of them filled
 * for the first time, and emptied again, while a dump runs.
 *
 * A 64 GiB private anonymous mapping (MAP_NORESERVE: it costs nothing until written) holds N_SLOTS slot
 * pages about 1.3 GiB apart, with the rest of it never touched, as in an AddressSanitizer shadow or a
 * heap reserved ahead of use. The main thread sweeps: gen = ++counter; in_progress = 1; prev = cur;
 * cur = gen; gen goes into every word of slots [0, filled) in order, then into every word of slot
 * `filled`, which is empty (a page filled for the first time, in the middle of nothing), and filled++;
 * in_progress = 0; sweeps++. When every slot is filled: resetting = 1; the slots are dropped
 * (MADV_DONTNEED: empty again); filled = 0; resetting = 0.
 *
 * The check, at the snapshot instant, from the control page and each slot:
 *   - resetting: every slot is all cur (not dropped yet) or all zero (dropped);
 *   - otherwise the words of slots [0, filled), in order, are cur for a prefix and prev for the rest
 *     (all cur when !in_progress), never zero; slot `filled` is cur for a prefix and zero for the rest
 *     (all zero when !in_progress); every later slot is all zero;
 *   - prev <= cur <= counter, sweeps >= 1.
 * A page saved late shows a later gen; one filled after the instant but saved shows a gen in a slot the
 * record calls empty; a page filled before the instant but missed reads zero where the record wants data.
 */
#include "victim.h"

#define SPARSE_SIZE (64ULL << 30)
#define N_SLOTS     48
#define SLOT_STRIDE ((SPARSE_SIZE / N_SLOTS) & ~(2 * MIB - 1))
#define SLOT_WORDS  (VICTIM_PAGE_SIZE / 8)
#define PAUSE_US    500 /* between sweeps: the CPUs are left room for the dumps */

typedef struct Control {
        _Atomic uint64_t counter;
        uint64_t sweeps;
        uint64_t in_progress;
        uint64_t prev;
        uint64_t cur;
        uint64_t filled;
        uint64_t resetting;
} Control;

static Control *ctl;
static uint8_t *sparse;

/* Slot k: SLOT_STRIDE apart, each at a different offset in its 2 MiB block. */
static volatile uint64_t *slot(uint8_t *base, int k)
{
        return (volatile uint64_t *)(base + (uint64_t)k * SLOT_STRIDE + (uint64_t)(k % 7) * 37 * VICTIM_PAGE_SIZE);
}

static void sweep_once(void)
{
        uint64_t gen = atomic_fetch_add(&ctl->counter, 1) + 1;

        ctl->in_progress = 1;
        barrier();
        ctl->prev = ctl->cur;
        barrier();
        ctl->cur = gen;
        barrier();
        for (uint64_t k = 0; k <= ctl->filled && k < N_SLOTS; k++) {
                volatile uint64_t *w = slot(sparse, (int)k);
                for (size_t i = 0; i < SLOT_WORDS; i++)
                        w[i] = gen;
        }
        barrier();
        if (ctl->filled < N_SLOTS)
                ctl->filled++;
        barrier();
        ctl->in_progress = 0;
        barrier();
        ctl->sweeps++;
        barrier();
        if (ctl->filled == N_SLOTS) {
                ctl->resetting = 1;
                barrier();
                for (int k = 0; k < N_SLOTS; k++)
                        VCHECK(madvise((void *)slot(sparse, k), VICTIM_PAGE_SIZE, MADV_DONTNEED) == 0);
                barrier();
                ctl->filled = 0;
                barrier();
                ctl->resetting = 0;
                barrier();
        }
}

static _Noreturn void run(void)
{
        char name[16];

        victim_init_run();
        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        sparse = map_anon(SPARSE_SIZE, PROT_READ | PROT_WRITE, MAP_NORESERVE);
        /* 4 KiB pages, as a sanitizer's shadow or a reserved heap has them: no huge page fills a slot's
         * whole block. */
        VCHECK(madvise(sparse, SPARSE_SIZE, MADV_NOHUGEPAGE) == 0);
        sweep_once();

        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", &ctl->sweeps, sizeof(ctl->sweeps));
        for (int k = 0; k < N_SLOTS; k++) {
                snprintf(name, sizeof(name), "s%02d", k);
                layout_add(name, (const void *)slot(sparse, k), VICTIM_PAGE_SIZE);
        }
        victim_ready();

        for (;;) {
                sweep_once();
                usleep(PAUSE_US);
        }
}

/* Words [from, SLOT_WORDS) of w are all v; returns the first that is not, or SLOT_WORDS. */
static size_t run_of(const uint64_t *w, size_t from, uint64_t v)
{
        while (from < SLOT_WORDS && w[from] == v)
                from++;
        return from;
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint64_t *s[N_SLOTS];
        char name[16];
        bool cut = false;

        layout_load();
        c = bin_load("control", &e, false);
        if (c->sweeps < 1 || c->in_progress > 1 || c->resetting > 1 || c->filled > N_SLOTS || c->cur == 0 ||
            c->cur > c->counter || c->prev > c->cur)
                check_fail("control inconsistent: sweeps=%" PRIu64 " in_progress=%" PRIu64 " resetting=%" PRIu64
                           " filled=%" PRIu64 " prev=%" PRIu64 " cur=%" PRIu64 " counter=%" PRIu64,
                           c->sweeps, c->in_progress, c->resetting, c->filled, c->prev, c->cur,
                           (uint64_t)c->counter);
        for (int k = 0; k < N_SLOTS; k++) {
                snprintf(name, sizeof(name), "s%02d", k);
                s[k] = bin_load(name, &e, false);
        }

        if (c->resetting) {
                for (int k = 0; k < N_SLOTS; k++)
                        if (run_of(s[k], 0, c->cur) != SLOT_WORDS && run_of(s[k], 0, 0) != SLOT_WORDS)
                                check_fail("resetting: slot %d is neither all cur=%" PRIu64 " nor all zero "
                                           "(word 0 is %" PRIu64 ")",
                                           k, c->cur, s[k][0]);
                printf("resetting at gen %" PRIu64 ": every slot all cur or all zero\n", c->cur);
                return 0;
        }

        for (uint64_t k = 0; k < N_SLOTS; k++) {
                size_t i = 0;

                if (k < c->filled) {
                        /* cur words, then (once) prev words to the end of the filled slots */
                        if (!cut) {
                                i = run_of(s[k], 0, c->cur);
                                if (i < SLOT_WORDS)
                                        cut = true;
                        }
                        if (cut) {
                                if (!c->in_progress)
                                        check_fail("slot %" PRIu64 " word %zu is %" PRIu64 ", but the sweep of gen "
                                                   "%" PRIu64 " had finished",
                                                   k, i, s[k][i], c->cur);
                                i = run_of(s[k], i, c->prev);
                        }
                        if (i < SLOT_WORDS)
                                check_fail("slot %" PRIu64 " (filled) word %zu is %" PRIu64 ", expected %s%" PRIu64
                                           "%s; counter=%" PRIu64 "%s",
                                           k, i, s[k][i], cut ? "prev=" : "cur=", cut ? c->prev : c->cur,
                                           cut ? "" : " or prev", (uint64_t)c->counter,
                                           s[k][i] == 0 ? ": a page filled before the instant, lost" :
                                           s[k][i] > c->counter ? ": written after the instant" : "");
                } else if (k == c->filled && !cut) {
                        /* the slot being filled: a prefix of cur, then zeros */
                        i = c->in_progress ? run_of(s[k], 0, c->cur) : 0;
                        i = run_of(s[k], i, 0);
                        if (i < SLOT_WORDS)
                                check_fail("slot %" PRIu64 " (being filled) word %zu is %" PRIu64 ", expected cur=%" PRIu64
                                           " then zeros%s",
                                           k, i, s[k][i], c->cur,
                                           s[k][i] > c->counter ? ": written after the instant" : "");
                } else if (run_of(s[k], 0, 0) != SLOT_WORDS)
                        check_fail("slot %" PRIu64 " (empty at the instant: filled=%" PRIu64 ") holds %" PRIu64
                                   ": a page filled after the instant was saved",
                                   k, c->filled, s[k][run_of(s[k], 0, 0)]);
        }
        printf("consistent at gen %" PRIu64 ": %" PRIu64 " of %d slots filled, %s\n", c->cur, c->filled, N_SLOTS,
               c->in_progress ? "sweep in progress" : "idle");
        for (int k = 0; k < N_SLOTS; k++)
                free(s[k]);
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        if (victim_parse_args(argc, argv) < argc)
                usage_exit();
        if (victim_check_mode)
                return check();
        run();
}

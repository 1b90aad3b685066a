/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-sweep: threads sweeping generation numbers over their own memory, one memory kind each.
 *
 * Each sweeper takes gen = ++counter (one counter shared by all threads), then writes gen into every
 * 8-byte word of its region in address order. At any instant a region therefore reads as the current
 * generation for a prefix and the previous generation for the rest: exactly one cut. A checkpoint that
 * copies a page late (after the target changed it) shows a value from a later sweep, or a second cut;
 * one that copies a page early in a torn way shows a value that does not fit the record the thread
 * kept in the control page at the same instant.
 *
 * Per-thread record, written before and after each sweep (in this order, so every instant is
 * consistent with the region): in_progress = 1; prev = cur; cur = gen; <sweep>; in_progress = 0;
 * sweeps[r]++. The check requires, for each region at the snapshot instant:
 *   - every word is cur or prev, cur words form a prefix (possibly empty or the whole region);
 *   - if !in_progress the whole region is cur;
 *   - no word is 0, prev <= cur <= counter (equality and prev == 0 only in the short windows the
 *     record's write order allows);
 *   - sweeps >= 1 (the first full sweep finished before DIR/ready).
 *
 * Regions (one thread each): "anon" (private anonymous 4 KiB pages, MADV_NOHUGEPAGE), "thp" (2 MiB
 * aligned, MADV_HUGEPAGE), "memfd" (memfd MAP_SHARED), "arena" (malloc'd in a non-main thread: a glibc
 * thread arena), "bss" (static zero-initialised array), "data" (static array with a non-zero
 * initialiser: a private file mapping), and "brk" (malloc'd by the main thread from the brk heap,
 * swept by the main thread itself).
 *
 * Options after DIR:
 *   --ballast MIB   also hold MIB MiB of a known pattern that nobody writes ("ballast"), so that a
 *                   rate-limited dump takes a predictable while (the sweepers' own pages are saved at
 *                   once by their write faults, whatever the rate);
 *   --pause-us N    sleep N microseconds between sweeps, to leave the CPUs some room;
 *   --region-kib N  make each region N KiB (a multiple of 4, at most 8192; "data" at most 4096)
 *                   instead of 8 MiB, so that a test taking hundreds of checkpoints (soak.sh) spends
 *                   its time in the checkpoints rather than in copying megabytes. "thp" smaller than
 *                   2 MiB is not backed by a huge page.
 */
#include <malloc.h>
#include <pthread.h>

#include "victim.h"

enum { R_ANON, R_THP, R_MEMFD, R_ARENA, R_BSS, R_DATA, R_BRK, N_REGIONS };

static const char *const region_names[N_REGIONS] = {
        [R_ANON] = "anon", [R_THP] = "thp",   [R_MEMFD] = "memfd", [R_ARENA] = "arena",
        [R_BSS] = "bss",   [R_DATA] = "data", [R_BRK] = "brk",
};

#define REGION_SIZE (8 * MIB)
#define DATA_SIZE   (4 * MIB)
#define HUGE_SIZE   (2 * MIB)

typedef struct Record {
        uint64_t in_progress;
        uint64_t prev;
        uint64_t cur;
        uint64_t tid;
} Record;

/* The control page: the counter, the sweeps done per thread (the "progress" layout entry: one array,
 * so that the test can read every thread's counter at once), then the records. */
typedef struct Control {
        _Atomic uint64_t counter;
        uint64_t n_regions;
        uint64_t region_size[N_REGIONS];
        uint64_t sweeps[N_REGIONS];
        Record rec[N_REGIONS];
} Control;

_Static_assert(sizeof(Control) <= VICTIM_PAGE_SIZE, "control must fit a page");

static uint64_t bss_region[REGION_SIZE / 8];
static uint64_t data_region[DATA_SIZE / 8] = {[0 ... DATA_SIZE / 8 - 1] = 0xdada1234dada5678ULL};

static Control *ctl;
static unsigned pause_us;
static size_t region_size = REGION_SIZE;
static volatile uint64_t *regions[N_REGIONS];

static void sweep_once(int r)
{
        volatile Record *rec = &ctl->rec[r];
        volatile uint64_t *w = regions[r];
        size_t n = ctl->region_size[r] / 8;
        uint64_t gen = atomic_fetch_add(&ctl->counter, 1) + 1;

        rec->in_progress = 1;
        barrier();
        rec->prev = rec->cur;
        barrier();
        rec->cur = gen;
        barrier();
        for (size_t i = 0; i < n; i++)
                w[i] = gen;
        barrier();
        rec->in_progress = 0;
        barrier();
        ((volatile uint64_t *)ctl->sweeps)[r]++;
        if (pause_us)
                sleep_us(pause_us);
}

static void *sweeper(void *arg)
{
        int r = (int)(intptr_t)arg;

        ctl->rec[r].tid = (uint64_t)victim_gettid();
        if (r == R_ARENA) {
                /* Allocated in this thread, below the mmap threshold: from this thread's arena. */
                void *p = malloc(region_size);
                VCHECK(p);
                regions[r] = p;
        }
        for (;;)
                sweep_once(r);
        return NULL;
}

static bool thp_allowed(void)
{
        char buf[128] = "";
        FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");

        if (!f)
                return false;
        if (!fgets(buf, sizeof(buf), f))
                buf[0] = 0;
        fclose(f);
        return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

static void setup_regions(void)
{
        char *p;
        int fd;

        p = map_anon(region_size, PROT_READ | PROT_WRITE, 0);
        VCHECK(madvise(p, region_size, MADV_NOHUGEPAGE) == 0);
        regions[R_ANON] = (uint64_t *)p;

        p = map_anon(region_size + HUGE_SIZE, PROT_READ | PROT_WRITE, 0);
        p = (char *)(((uintptr_t)p + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
        if (thp_allowed())
                VCHECK(madvise(p, region_size, MADV_HUGEPAGE) == 0);
        else
                victim_log("note: transparent huge pages are disabled; 'thp' uses 4 KiB pages");
        regions[R_THP] = (uint64_t *)p;

        fd = memfd_create("victim-sweep", MFD_CLOEXEC);
        VCHECK(fd >= 0);
        VCHECK(ftruncate(fd, (off_t)region_size) == 0);
        p = mmap(NULL, region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        VCHECK(p != MAP_FAILED);
        close(fd);
        regions[R_MEMFD] = (uint64_t *)p;

        regions[R_BSS] = bss_region;
        regions[R_DATA] = data_region;

        p = malloc(region_size);
        VCHECK(p);
        regions[R_BRK] = (uint64_t *)p;

        /* The static arrays keep their size; a smaller region is a prefix of them. */
        for (int r = 0; r < N_REGIONS; r++)
                ctl->region_size[r] = r == R_DATA && region_size > DATA_SIZE ? DATA_SIZE : region_size;
}

static _Noreturn void run(size_t ballast_mib)
{
        pthread_t t;

        victim_init_run();
        /* Large allocations come from the heaps (brk for the main thread, an arena for the arena
         * thread), not from separate mmaps. 32 MiB is glibc's maximum threshold. */
        VCHECK(mallopt(M_MMAP_THRESHOLD, 32 * MIB) == 1);

        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        ctl->n_regions = N_REGIONS;
        setup_regions();
        ctl->rec[R_BRK].tid = (uint64_t)victim_gettid();

        for (int r = 0; r < N_REGIONS; r++) {
                if (r == R_BRK)
                        continue;
                VCHECK(pthread_create(&t, NULL, sweeper, (void *)(intptr_t)r) == 0);
        }
        /* The main thread's first sweep, then wait for every thread to finish one. */
        sweep_once(R_BRK);
        for (;;) {
                bool all = true;
                for (int r = 0; r < N_REGIONS; r++)
                        if (((volatile uint64_t *)ctl->sweeps)[r] < 1)
                                all = false;
                if (all)
                        break;
                sched_yield();
        }

        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", ctl->sweeps, sizeof(ctl->sweeps));
        for (int r = 0; r < N_REGIONS; r++)
                layout_add(region_names[r], (const void *)regions[r], ctl->region_size[r]);
        if (ballast_mib > 0) {
                void *b = map_anon(ballast_mib * MIB, PROT_READ | PROT_WRITE, 0);
                fill_pattern(b, ballast_mib * MIB);
                layout_add("ballast", b, ballast_mib * MIB);
        }
        victim_ready();

        for (;;)
                sweep_once(R_BRK);
}

static void check_region(int r, const Control *c, uint64_t counter)
{
        const Record *rec = &c->rec[r];
        const LayoutEntry *e;
        const char *name = region_names[r];
        uint64_t *w = bin_load(name, &e, false);
        size_t n = e->len / 8, cut = n;

        if (e->len != c->region_size[r])
                check_fail("%s: layout length %" PRIu64 " but control says %" PRIu64, name, e->len,
                           c->region_size[r]);
        if (c->sweeps[r] < 1)
                check_fail("%s: sweeps=%" PRIu64 ": the first sweep had not finished at the instant", name,
                           c->sweeps[r]);
        /* prev == cur only between "prev = cur" and "cur = gen"; prev == 0 only before the second
         * sweep's "prev = cur". */
        if (rec->in_progress > 1 || rec->cur == 0 || rec->cur > counter || rec->prev > rec->cur ||
            (rec->prev == rec->cur && !rec->in_progress) || (rec->prev == 0 && c->sweeps[r] > 1))
                check_fail("%s: record inconsistent: in_progress=%" PRIu64 " prev=%" PRIu64 " cur=%" PRIu64
                           " sweeps=%" PRIu64 " counter=%" PRIu64,
                           name, rec->in_progress, rec->prev, rec->cur, c->sweeps[r], counter);

        for (size_t i = 0; i < n; i++) {
                if (w[i] == 0)
                        check_fail("%s: word %zu (address 0x%" PRIx64 ") is 0: lost, or saved as zero", name,
                                   i, e->addr + 8 * i);
                if (w[i] == rec->cur)
                        continue;
                if (w[i] == rec->prev) {
                        cut = i;
                        break;
                }
                check_fail("%s: word %zu (address 0x%" PRIx64 ", page +0x%zx) is %" PRIu64
                           ", expected %" PRIu64 " (cur) or %" PRIu64 " (prev); counter=%" PRIu64 "%s",
                           name, i, e->addr + 8 * i, (8 * i) & ~(VICTIM_PAGE_SIZE - 1), w[i], rec->cur,
                           rec->prev, counter, w[i] > counter ? ": written after the snapshot instant" : "");
        }
        for (size_t i = cut; i < n; i++) {
                if (w[i] == rec->prev)
                        continue;
                check_fail("%s: second cut: words [0,%zu) are cur=%" PRIu64 ", word %zu is prev=%" PRIu64
                           ", but word %zu (address 0x%" PRIx64 ") is %" PRIu64 "%s; counter=%" PRIu64,
                           name, cut, rec->cur, cut, rec->prev, i, e->addr + 8 * i, w[i],
                           w[i] == rec->cur ? " (cur)" : (w[i] > counter ? " (after the instant)" : ""),
                           counter);
        }
        if (!rec->in_progress && cut != n)
                check_fail("%s: record says the sweep of gen %" PRIu64 " finished but words from %zu on are "
                           "still prev=%" PRIu64,
                           name, rec->cur, cut, rec->prev);
        printf("%-6s ok: %s cut at word %zu of %zu (cur=%" PRIu64 " prev=%" PRIu64 " sweeps=%" PRIu64 ")\n",
               name, rec->in_progress ? "in progress," : "idle,", cut, n, rec->cur, rec->prev, c->sweeps[r]);
        free(w);
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint64_t counter, *progress;

        layout_load();
        c = bin_load("control", &e, false);
        counter = atomic_load(&c->counter);
        if (c->n_regions != N_REGIONS)
                check_fail("control: n_regions=%" PRIu64 ", expected %d", c->n_regions, N_REGIONS);
        /* The progress copy, if extracted, must agree with the control page (same instant). */
        progress = bin_load("progress", NULL, true);
        if (progress) {
                if (memcmp(progress, c->sweeps, sizeof(c->sweeps)) != 0)
                        check_fail("progress.bin differs from the sweeps array inside control.bin");
                free(progress);
        }
        for (int r = 0; r < N_REGIONS; r++)
                check_region(r, c, counter);
        if (layout_find("ballast")) {
                void *b = bin_load("ballast", &e, true);
                if (b) {
                        ssize_t bad = pattern_mismatch(b, e->addr, e->len);
                        if (bad >= 0)
                                check_fail("ballast: word at 0x%" PRIx64 " is 0x%" PRIx64
                                           ", expected 0x%" PRIx64,
                                           e->addr + 8 * (uint64_t)bad, ((uint64_t *)b)[bad],
                                           pattern_word(e->addr + 8 * (uint64_t)bad));
                        printf("ballast ok\n");
                        free(b);
                }
        }
        printf("all %d regions consistent at counter %" PRIu64 "\n", N_REGIONS, counter);
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);
        size_t ballast_mib = 0;

        if (victim_check_mode)
                return check();
        for (; i < argc; i += 2) {
                if (i + 1 >= argc)
                        usage_exit();
                if (strcmp(argv[i], "--ballast") == 0)
                        ballast_mib = strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--pause-us") == 0)
                        pause_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--region-kib") == 0) {
                        unsigned long kib = strtoul(argv[i + 1], NULL, 10);
                        if (kib == 0 || kib % 4 != 0 || kib > REGION_SIZE / 1024)
                                usage_exit();
                        region_size = kib * 1024;
                }
                else
                        usage_exit();
        }
        run(ballast_mib);
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-sharedwriter: shared memory that another process writes while the target is checkpointed.
 *
 * The target (this process) forks a writer child, then both run until killed. Regions (1 MiB each):
 *   "shared_memfd"  memfd, MAP_SHARED in both (fds closed): the child sweeps it through its mapping;
 *   "shared_anon"   MAP_SHARED|MAP_ANONYMOUS, inherited by the fork: the child sweeps it;
 *   "shared_fd"     memfd mapped by the target only; the child holds the fd (O_RDWR) and pwrite()s
 *                   its sweeps into the file;
 *   "own_memfd"     memfd created after the fork, mapped by the target only, fd closed: the target
 *                   sweeps it itself. Nobody else can reach it, so a checkpoint must hold it exactly at
 *                   the instant (one cut, consistent with the target's record in "control").
 * uffd write-protect covers the target's page tables only, so the child's writes (and its pwrite()s,
 * which go through the page cache) change the first three under a checkpoint without a fault: an
 * image must mark them not point-in-time.
 *
 * A sweep (as in victim-sweep): gen = ++counter; record in_progress = 1, prev = cur, cur = gen; write
 * gen into every word of the data; in_progress = 0; sweeps++. Each shared region carries its own
 * record in its first page (the child's), its data after; the target keeps its record for own_memfd
 * in "control". "progress" (a small MAP_SHARED|MAP_ANONYMOUS page) holds [0] the target's sweeps and
 * [1] the child's, so the test sees both keep running. The child's PID is written to DIR/child.
 *
 * The check is strict for own_memfd and only reports for the shared regions ("consistent" or how they
 * are torn): their content at the instant is not something a per-process checkpoint can promise.
 */
#include "victim.h"

#define REGION_SIZE (1 * MIB)
#define DATA_OFF    VICTIM_PAGE_SIZE

typedef struct Record {
        uint64_t in_progress;
        uint64_t prev;
        uint64_t cur;
        uint64_t sweeps;
} Record;

typedef struct Control {
        uint64_t counter;
        Record own;
        uint64_t region_size;
        uint64_t child_pid;
} Control;

enum { R_MEMFD, R_ANON, R_FD, N_SHARED };
static const char *const shared_names[N_SHARED] = {"shared_memfd", "shared_anon", "shared_fd"};

static unsigned pause_us = 200;

static int memfd_sized(const char *name)
{
        int fd = memfd_create(name, MFD_CLOEXEC);
        VCHECK(fd >= 0);
        VCHECK(ftruncate(fd, REGION_SIZE) == 0);
        return fd;
}

static void *map_shared_fd(int fd)
{
        void *p = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        VCHECK(p != MAP_FAILED);
        return p;
}

/* Sweeps a region through memory: record at its start, data after. */
static void sweep_mem(void *region, uint64_t gen)
{
        volatile Record *rec = region;
        volatile uint64_t *w = (uint64_t *)((char *)region + DATA_OFF);

        rec->in_progress = 1;
        barrier();
        rec->prev = rec->cur;
        barrier();
        rec->cur = gen;
        barrier();
        for (size_t i = 0; i < (REGION_SIZE - DATA_OFF) / 8; i++)
                w[i] = gen;
        barrier();
        rec->in_progress = 0;
        barrier();
        rec->sweeps++;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
        while (len > 0) {
                ssize_t n = pwrite(fd, buf, len, off);
                if (n < 0 && errno == EINTR)
                        continue;
                VCHECK(n > 0);
                buf = (const char *)buf + n;
                len -= (size_t)n;
                off += n;
        }
}

/* The same sweep through write(2) on the file: the record, then the data a page at a time. */
static void sweep_fd(int fd, Record *rec, uint64_t gen)
{
        static uint64_t page[VICTIM_PAGE_SIZE / 8];

        rec->in_progress = 1;
        rec->prev = rec->cur;
        rec->cur = gen;
        pwrite_all(fd, rec, sizeof(*rec), 0);
        for (size_t i = 0; i < sizeof(page) / 8; i++)
                page[i] = gen;
        for (off_t off = DATA_OFF; off < (off_t)REGION_SIZE; off += VICTIM_PAGE_SIZE)
                pwrite_all(fd, page, sizeof(page), off);
        rec->in_progress = 0;
        rec->sweeps++;
        pwrite_all(fd, rec, sizeof(*rec), 0);
}

/* The target's own sweep: its record in private memory (control), the data in own. */
static void own_sweep(Control *ctl, void *own, volatile uint64_t *progress)
{
        volatile Record *rec = &ctl->own;
        volatile uint64_t *w = own;
        uint64_t gen = ++ctl->counter;

        rec->in_progress = 1;
        barrier();
        rec->prev = rec->cur;
        barrier();
        rec->cur = gen;
        barrier();
        for (size_t i = 0; i < REGION_SIZE / 8; i++)
                w[i] = gen;
        barrier();
        rec->in_progress = 0;
        barrier();
        rec->sweeps++;
        progress[0]++;
}

static _Noreturn void child_run(void *regions[N_SHARED], int fd, volatile uint64_t *progress, pid_t parent)
{
        Record fd_rec = {};
        uint64_t gen = 0;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(1);
        prctl(PR_SET_NAME, "sharedwriter-ch");
        for (;;) {
                sweep_mem(regions[R_MEMFD], ++gen);
                sweep_mem(regions[R_ANON], ++gen);
                sweep_fd(fd, &fd_rec, ++gen);
                progress[1]++;
                if (pause_us)
                        sleep_us(pause_us);
        }
}

static _Noreturn void run(void)
{
        void *regions[N_SHARED];
        volatile uint64_t *progress;
        Control *ctl;
        char buf[32];
        int fd_memfd, fd_child;
        pid_t child, parent = getpid();
        void *own;

        victim_init_run();
        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        ctl->region_size = REGION_SIZE;
        progress = mmap(NULL, VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        VCHECK(progress != MAP_FAILED);

        fd_memfd = memfd_sized("sharedwriter-mapped");
        regions[R_MEMFD] = map_shared_fd(fd_memfd);
        close(fd_memfd);
        regions[R_ANON] = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        VCHECK(regions[R_ANON] != MAP_FAILED);
        fd_child = memfd_sized("sharedwriter-fd");

        child = fork();
        VCHECK(child >= 0);
        if (child == 0)
                child_run(regions, fd_child, progress, parent);
        ctl->child_pid = (uint64_t)child;
        snprintf(buf, sizeof(buf), "%d\n", (int)child);
        VCHECK(victim_write_file("child", buf) == 0);

        /* Only the child keeps an fd; only this process maps it. */
        regions[R_FD] = map_shared_fd(fd_child);
        close(fd_child);
        int fd_own = memfd_sized("sharedwriter-own");
        own = map_shared_fd(fd_own);
        close(fd_own);

        /* Two sweeps of everything before ready (the first leaves zeros as prev). */
        own_sweep(ctl, own, progress);
        own_sweep(ctl, own, progress);
        while (progress[1] < 2) {
                if (kill(child, 0) < 0)
                        victim_fail("the writer child died");
                sleep_us(1000);
        }

        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", (const void *)progress, 2 * sizeof(uint64_t));
        layout_add("own_memfd", own, REGION_SIZE);
        for (int r = 0; r < N_SHARED; r++)
                layout_add(shared_names[r], regions[r], REGION_SIZE);
        victim_ready();

        for (;;) {
                own_sweep(ctl, own, progress);
                if (pause_us)
                        sleep_us(pause_us);
        }
}

/* Returns NULL if the words show exactly one cut consistent with the record, else what is wrong. */
static const char *sweep_verdict(const Record *rec, const uint64_t *w, size_t n, char *why, size_t whylen,
                                 size_t *ret_cut)
{
        size_t cut = n;

        for (size_t i = 0; i < n; i++) {
                if (w[i] == rec->cur)
                        continue;
                if (w[i] == rec->prev && rec->prev != 0) {
                        cut = i;
                        break;
                }
                snprintf(why, whylen,
                         "word %zu is %" PRIu64 ", expected %" PRIu64 " (cur) or %" PRIu64 " (prev)", i,
                         w[i], rec->cur, rec->prev);
                return why;
        }
        for (size_t i = cut; i < n; i++)
                if (w[i] != rec->prev) {
                        snprintf(why, whylen,
                                 "second cut: words [0,%zu) are cur=%" PRIu64 ", then prev=%" PRIu64
                                 ", but word %zu is %" PRIu64,
                                 cut, rec->cur, rec->prev, i, w[i]);
                        return why;
                }
        if (!rec->in_progress && cut != n) {
                snprintf(why, whylen,
                         "the record says the sweep of %" PRIu64
                         " finished, but words from %zu on are prev=%" PRIu64,
                         rec->cur, cut, rec->prev);
                return why;
        }
        if (rec->in_progress > 1 || rec->cur == 0 || rec->prev > rec->cur) {
                snprintf(why, whylen,
                         "record inconsistent: in_progress=%" PRIu64 " prev=%" PRIu64 " cur=%" PRIu64,
                         rec->in_progress, rec->prev, rec->cur);
                return why;
        }
        *ret_cut = cut;
        return NULL;
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint64_t *own;
        char why[256];
        const char *bad;
        size_t cut = 0;

        layout_load();
        c = bin_load("control", NULL, false);
        own = bin_load("own_memfd", &e, false);
        if (c->region_size != REGION_SIZE || e->len != REGION_SIZE)
                check_fail("own_memfd: region size %" PRIu64 " / layout %" PRIu64 ", expected %lu",
                           c->region_size, e->len, REGION_SIZE);
        if (c->own.sweeps < 1 || c->own.cur > c->counter)
                check_fail("control: sweeps=%" PRIu64 " cur=%" PRIu64 " counter=%" PRIu64, c->own.sweeps,
                           c->own.cur, c->counter);
        bad = sweep_verdict(&c->own, own, REGION_SIZE / 8, why, sizeof(why), &cut);
        if (bad)
                check_fail("own_memfd (mapped by the target only): %s", bad);
        printf("own_memfd ok: cut at word %zu (cur=%" PRIu64 " prev=%" PRIu64 " sweeps=%" PRIu64 ")\n", cut,
               c->own.cur, c->own.prev, c->own.sweeps);
        free(own);

        for (int r = 0; r < N_SHARED; r++) {
                uint64_t *s = bin_load(shared_names[r], &e, true);
                if (!s)
                        continue;
                bad = sweep_verdict((const Record *)s, s + DATA_OFF / 8, (REGION_SIZE - DATA_OFF) / 8, why,
                                    sizeof(why), &cut);
                printf("%s (written by the child): %s%s\n", shared_names[r], bad ? "torn: " : "consistent",
                       bad ? bad : "");
                free(s);
        }
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);

        if (victim_check_mode)
                return check();
        for (; i < argc; i += 2) {
                if (i + 1 >= argc)
                        usage_exit();
                if (strcmp(argv[i], "--pause-us") == 0)
                        pause_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
                else
                        usage_exit();
        }
        run();
}

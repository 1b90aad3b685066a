/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-privfile: a sweep over a private file mapping whose pages are still the file's when the dump's
 * prepare phase looks at them, and written for the first time before the instant.
 *
 * DIR/privfile holds N_PAGES pages: word 0 of page i is i, word 1 (the page's gen) is 0, the rest a
 * pattern of i. It is mapped MAP_PRIVATE and every page read, so the mapping holds the file's pages and
 * none of its own. On SIGUSR1 the main thread starts sweeping: gen = ++counter; in_progress = 1;
 * prev = cur; cur = gen; gen into word 1 of every page in order; in_progress = 0; sweeps++; a short rest.
 * The first sweep turns every page into a private copy (copy on write).
 *
 * On SIGUSR2 instead, it first maps the file again over the same range (MAP_FIXED: a new mapping of the
 * same file, offset and place, which no userfaultfd of the dump's knows), then sweeps as on SIGUSR1.
 *
 * The check, at the snapshot instant, from the control page and the pages (those the image does not
 * hold are read from the file by the test, as the image says to): every page's word 0 and pattern are
 * its own; the gens are cur for a prefix and prev for the rest (all cur when !in_progress); prev <= cur
 * <= counter. A written page the image lost reads the file's 0 where the record wants a gen; one saved
 * after the instant shows a later gen.
 */
#include "victim.h"

#define N_PAGES  256
#define PAGE_WORDS (VICTIM_PAGE_SIZE / 8)
#define PAUSE_US 200

typedef struct Control {
        _Atomic uint64_t counter;
        uint64_t sweeps;
        uint64_t in_progress;
        uint64_t prev;
        uint64_t cur;
} Control;

static Control *ctl;
static volatile sig_atomic_t go, remap;

static uint64_t pattern_of(uint64_t page, size_t word)
{
        return (page << 32) ^ (word * 0x9e3779b97f4a7c15ULL);
}

static void on_go(int sig)
{
        remap = sig == SIGUSR2;
        go = 1;
}

static _Noreturn void run(void)
{
        char path[PATH_MAX];
        uint64_t *buf, *pages;
        int fd;

        victim_init_run();
        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);

        snprintf(path, sizeof(path), "%s/privfile", victim_dir);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        VCHECK(fd >= 0);
        buf = malloc(VICTIM_PAGE_SIZE);
        VCHECK(buf);
        for (uint64_t i = 0; i < N_PAGES; i++) {
                buf[0] = i;
                buf[1] = 0;
                for (size_t w = 2; w < PAGE_WORDS; w++)
                        buf[w] = pattern_of(i, w);
                VCHECK(pwrite(fd, buf, VICTIM_PAGE_SIZE, (off_t)(i * VICTIM_PAGE_SIZE)) == VICTIM_PAGE_SIZE);
        }
        free(buf);
        VCHECK(fsync(fd) == 0);
        pages = mmap(NULL, N_PAGES * VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        VCHECK(pages != MAP_FAILED);
        for (uint64_t i = 0; i < N_PAGES; i++)
                VCHECK(((volatile uint64_t *)pages)[i * PAGE_WORDS] == i);

        signal(SIGUSR1, on_go);
        signal(SIGUSR2, on_go);
        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", &ctl->sweeps, sizeof(ctl->sweeps));
        layout_add("privfile", pages, N_PAGES * VICTIM_PAGE_SIZE);
        victim_ready();

        while (!go)
                pause();
        if (remap) {
                VCHECK(mmap(pages, N_PAGES * VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0) ==
                       pages);
                for (uint64_t i = 0; i < N_PAGES; i += 2)
                        VCHECK(((volatile uint64_t *)pages)[i * PAGE_WORDS] == i); /* half of them present */
        }
        close(fd);
        for (;;) {
                uint64_t gen = atomic_fetch_add(&ctl->counter, 1) + 1;

                ctl->in_progress = 1;
                barrier();
                ctl->prev = ctl->cur;
                barrier();
                ctl->cur = gen;
                barrier();
                for (uint64_t i = 0; i < N_PAGES; i++)
                        ((volatile uint64_t *)pages)[i * PAGE_WORDS + 1] = gen;
                barrier();
                ctl->in_progress = 0;
                barrier();
                ctl->sweeps++;
                barrier();
                sleep_us(PAUSE_US);
        }
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint64_t *p;
        uint64_t want;
        bool cut = false;

        layout_load();
        c = bin_load("control", &e, false);
        p = bin_load("privfile", &e, false);
        if (e->len != N_PAGES * VICTIM_PAGE_SIZE)
                check_fail("privfile is %" PRIu64 " bytes, expected %d", e->len, N_PAGES * (int)VICTIM_PAGE_SIZE);
        if (c->in_progress > 1 || c->prev > c->cur || c->cur > c->counter)
                check_fail("control inconsistent: in_progress=%" PRIu64 " prev=%" PRIu64 " cur=%" PRIu64
                           " counter=%" PRIu64,
                           c->in_progress, c->prev, c->cur, (uint64_t)c->counter);
        want = c->cur;
        for (uint64_t i = 0; i < N_PAGES; i++) {
                const uint64_t *pg = p + i * PAGE_WORDS;

                if (pg[0] != i)
                        check_fail("page %" PRIu64 ": word 0 is %" PRIu64 ": not this page", i, pg[0]);
                for (size_t w = 2; w < PAGE_WORDS; w++)
                        if (pg[w] != pattern_of(i, w))
                                check_fail("page %" PRIu64 ": word %zu is %#" PRIx64 ", not its pattern", i, w, pg[w]);
                if (pg[1] != want && !cut && c->in_progress) {
                        cut = true;
                        want = c->prev;
                }
                if (pg[1] != want)
                        check_fail("page %" PRIu64 ": gen %" PRIu64 ", expected %s=%" PRIu64 " (cur=%" PRIu64
                                   ", prev=%" PRIu64 ", in_progress=%" PRIu64 ", counter=%" PRIu64 ")%s",
                                   i, pg[1], cut ? "prev" : "cur", want, c->cur, c->prev, c->in_progress,
                                   (uint64_t)c->counter,
                                   pg[1] == 0 ? ": a page written before the instant, lost" :
                                   pg[1] > c->counter ? ": written after the instant" : "");
        }
        printf("consistent at gen %" PRIu64 ": %s\n", c->cur, c->in_progress ? "sweep in progress" : "idle");
        free(p);
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

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Generation sweeps over hugetlb memory: `victim-hugetlb DIR` maps 8 MiB with MAP_HUGETLB (2 MiB pages)
 * and one thread rewrites every 8-byte word with a new generation per sweep. `--check DIR` reads
 * huge.bin and counter.bin (cats from the image): one cut at most, nothing newer than the counter.
 */

#include <pthread.h>

#include "victim.h"

#define SIZE (8 * MIB)

static volatile uint64_t counter[1];
static uint64_t *huge;

static void *sweeper(void *arg)
{
        for (;;) {
                uint64_t g = __atomic_add_fetch(&counter[0], 1, __ATOMIC_SEQ_CST);
                for (size_t i = 0; i < SIZE / 8; i++)
                        huge[i] = g;
        }
        return arg;
}

static void *load(const char *name, size_t len)
{
        char path[4096];
        void *buf = malloc(len);
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", victim_dir, name);
        f = fopen(path, "rb");
        if (!f || !buf || fread(buf, 1, len, f) != len)
                victim_fail("cannot read %s", path);
        fclose(f);
        return buf;
}

int main(int argc, char *argv[])
{
        pthread_t t;

        victim_parse_args(argc, argv);
        if (victim_check_mode) {
                uint64_t *w = load("huge.bin", SIZE), *c = load("counter.bin", 8);
                size_t cuts = 0;
                for (size_t i = 1; i < SIZE / 8; i++)
                        if (w[i] != w[i - 1]) {
                                cuts++;
                                if (w[i] > w[i - 1])
                                        victim_fail("word %zu: %" PRIu64 " after %" PRIu64 ": newer past the cut", i,
                                                    w[i], w[i - 1]);
                        }
                if (cuts > 1)
                        victim_fail("%zu cuts in one sweep: a late or torn copy", cuts);
                if (w[0] > c[0])
                        victim_fail("generation %" PRIu64 " is newer than the counter %" PRIu64, w[0], c[0]);
                if (w[0] == 0)
                        victim_fail("no sweep in the image");
                printf("huge ok: %zu cut, generation %" PRIu64 ", counter %" PRIu64 "\n", cuts, w[0], c[0]);
                return 0;
        }
        victim_init_run();
        huge = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
        if (huge == MAP_FAILED)
                victim_fail("mmap(MAP_HUGETLB): %m");
        for (size_t i = 0; i < SIZE / 8; i++)
                huge[i] = 1;
        counter[0] = 1;
        pthread_create(&t, NULL, sweeper, NULL);
        layout_add("huge", huge, SIZE);
        layout_add("counter", (const void *)counter, 8);
        layout_add("progress", (const void *)counter, 8);
        victim_ready();
        for (;;)
                pause();
}

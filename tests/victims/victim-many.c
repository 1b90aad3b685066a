/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Many threads and many mappings: `victim-many DIR [THREADS [MAPPINGS]]` (default 200 and 3000). The
 * mappings are one page each, written, and alternate between read-write and read-only so that the
 * kernel cannot merge them. The threads block in read() on a pipe that never gets data.
 */

#include <pthread.h>

#include "victim.h"

static int pipefd[2];

static void *blocked(void *arg)
{
        char c;

        (void)!read(pipefd[0], &c, 1);
        return arg;
}

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);
        long threads = argc > i ? strtol(argv[i], NULL, 10) : 200;
        long maps = argc > i + 1 ? strtol(argv[i + 1], NULL, 10) : 3000;
        uint8_t *base;

        if (victim_check_mode)
                return 0;
        victim_init_run();
        if (pipe(pipefd) < 0)
                victim_fail("pipe: %m");

        /* One reservation, then each page re-mapped on its own with alternating protection. */
        base = mmap(NULL, (size_t)maps * VICTIM_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
                victim_fail("mmap: %m");
        for (long m = 0; m < maps; m++) {
                uint8_t *p = base + m * VICTIM_PAGE_SIZE;
                if (mprotect(p, VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE) < 0)
                        victim_fail("mprotect: %m");
                memset(p, (int)(m % 250) + 1, VICTIM_PAGE_SIZE);
                if (m % 2 && mprotect(p, VICTIM_PAGE_SIZE, PROT_READ) < 0)
                        victim_fail("mprotect: %m");
        }
        for (long t = 0; t < threads; t++) {
                pthread_t th;
                pthread_attr_t a;

                pthread_attr_init(&a);
                pthread_attr_setstacksize(&a, 64 * 1024);
                if (pthread_create(&th, &a, blocked, NULL) != 0)
                        victim_fail("pthread_create failed");
                pthread_attr_destroy(&a);
        }
        layout_add("maps", base, (uint64_t)maps * VICTIM_PAGE_SIZE);
        victim_ready();
        for (;;)
                pause();
}

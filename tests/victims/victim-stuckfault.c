/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-stuckfault: a thread that waits for good in a kernel-mode page fault on the victim's own
 * userfaultfd, beside a main thread that keeps counting.
 *
 * A page is registered for MISSING faults with a uffd nobody serves, and a thread read()s a pipe into
 * it: the kernel's copy to that page faults and waits. Such a thread does not stop when ptrace
 * interrupts it (the kernel retries the fault, spinning, until it is served), so no snapshot can
 * freeze this victim; a dump must say so in bounded time and let the victim go. The main thread counts
 * in "progress" every millisecond.
 */
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>

#include "victim.h"

static uint8_t *page;
static int pipe_fds[2];
static volatile uint64_t progress[1];

static void *reader(void *arg)
{
        /* Blocks in the fault until the process exits. */
        (void)read(pipe_fds[0], page, 64);
        victim_fail("the read into the unserved page returned");
}

static _Noreturn void run(void)
{
        struct uffdio_api api = { .api = UFFD_API };
        struct uffdio_register reg;
        pthread_t t;
        int uffd;

        victim_init_run();
        page = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        uffd = (int)syscall(__NR_userfaultfd, O_CLOEXEC);
        VCHECK(uffd >= 0);
        VCHECK(ioctl(uffd, UFFDIO_API, &api) == 0);
        reg = (struct uffdio_register){ .range = { .start = (uint64_t)(uintptr_t)page, .len = VICTIM_PAGE_SIZE },
                                        .mode = UFFDIO_REGISTER_MODE_MISSING };
        VCHECK(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0);
        VCHECK(pipe(pipe_fds) == 0);
        VCHECK(write(pipe_fds[1], "stuck", 5) == 5);
        VCHECK(pthread_create(&t, NULL, reader, NULL) == 0);

        layout_add("progress", (const void *)progress, sizeof(progress));
        victim_ready();
        for (;;) {
                progress[0]++;
                usleep(1000);
        }
}

int main(int argc, char *argv[])
{
        victim_parse_args(argc, argv);
        if (victim_check_mode)
                return 0;
        run();
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * bench/faultrt: how long a write to a write-protected page waits for its handler, by where the handler
 * runs. This is the round trip every write fault of a livesnap copy phase pays, stripped of the engine:
 * the handler reads the fault, copies the WINDOW pages around it and un-protects them (one ioctl, which
 * wakes the writer).
 *
 *   faultrt [WRITES [WINDOW_PAGES]]
 *
 * For each configuration a child process maps 256 MiB, fills it, write-protects it with a userfaultfd
 * and writes one byte to WRITES (default 20000) random windows, timing each write. It prints one line
 * per configuration: the median, p90 and p99 of those writes in microseconds. Configurations:
 *   handler  thread: a thread of the writer's process (copies with memcpy: what a handler injected into
 *                    the target would do); process: another process (process_vm_readv: livesnapd's way)
 *   cpu      same: pinned to the writer's CPU; other: pinned to another one
 *   wait     poll: blocks in poll(); spin: reads the non-blocking uffd in a loop
 *   writer   pinned to CPU 0, or free (placed by the scheduler)
 * Needs two CPUs, and root (or vm.unprivileged_userfaultfd=1).
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define REGION (256UL << 20)

typedef struct Config {
        const char *name;
        bool process; /* handler in another process */
        int handler_cpu;
        bool spin;
        int writer_cpu; /* -1: free */
} Config;

static int uffd;
static uint8_t *mem;
static pid_t writer_pid;
static size_t window = 4;
static const Config *cfg;

static uint64_t now_ns(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void pin(int cpu)
{
        cpu_set_t set;

        if (cpu < 0)
                return;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0) {
                perror("faultrt: sched_setaffinity");
                exit(1);
        }
}

static void handle(void)
{
        static uint8_t copy[64 * PAGE];
        struct uffd_msg msg;

        pin(cfg->handler_cpu);
        for (;;) {
                if (read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
                        struct pollfd p = { .fd = uffd, .events = POLLIN };

                        if (errno != EAGAIN) {
                                perror("faultrt: reading the userfaultfd");
                                exit(1);
                        }
                        if (!cfg->spin)
                                (void)poll(&p, 1, -1);
                        continue;
                }
                if (msg.event != UFFD_EVENT_PAGEFAULT)
                        continue;

                uint64_t start = msg.arg.pagefault.address & ~(window * PAGE - 1), len = window * PAGE;
                if (cfg->process) {
                        struct iovec local = { copy, len }, remote = { (void *)(uintptr_t)start, len };

                        if (process_vm_readv(writer_pid, &local, 1, &remote, 1, 0) != (ssize_t)len) {
                                perror("faultrt: process_vm_readv");
                                exit(1);
                        }
                } else
                        memcpy(copy, (void *)(uintptr_t)start, len);

                struct uffdio_writeprotect wp = { .range = { start, len }, .mode = 0 };
                if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
                        perror("faultrt: un-protecting");
                        exit(1);
                }
        }
}

static void *handler_thread(void *arg)
{
        (void)arg;
        handle();
        return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* One configuration, in a child of its own: returns its exit status. */
static int run(size_t writes)
{
        struct uffdio_api api = { .api = UFFD_API };
        struct uffdio_register reg = { .range = { 0, REGION }, .mode = UFFDIO_REGISTER_MODE_WP };
        struct uffdio_writeprotect wp = { .range = { 0, REGION }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
        uint64_t *lat, x = 88172645463325252ULL;
        size_t windows = REGION / (window * PAGE);
        pid_t handler = 0;

        /* The handler process is forked before the region exists: a region shared with it by fork()
         * would add a copy-on-write fault to every write measured. */
        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (uffd < 0) {
                perror("faultrt: userfaultfd (root, or vm.unprivileged_userfaultfd=1)");
                return 1;
        }
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                perror("faultrt: UFFDIO_API");
                return 1;
        }
        writer_pid = getpid();
        if (cfg->process) {
                handler = fork();
                if (handler < 0) {
                        perror("faultrt: fork");
                        return 1;
                }
                if (handler == 0) {
                        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                        handle();
                        _exit(0);
                }
        }

        mem = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        lat = calloc(writes, sizeof(*lat));
        if (mem == MAP_FAILED || !lat) {
                perror("faultrt: memory");
                return 1;
        }
        (void)madvise(mem, REGION, MADV_NOHUGEPAGE); /* 4 KiB pages, as most of a heap under load */
        memset(mem, 1, REGION);
        reg.range.start = wp.range.start = (uintptr_t)mem;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
                perror("faultrt: write-protecting");
                return 1;
        }
        if (!cfg->process) {
                pthread_t t;

                if (pthread_create(&t, NULL, handler_thread, NULL) != 0) {
                        fprintf(stderr, "faultrt: cannot start the handler thread\n");
                        return 1;
                }
        }
        pin(cfg->writer_cpu);
        usleep(100000);

        for (size_t i = 0; i < writes; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                volatile uint8_t *p = mem + (x % windows) * window * PAGE + ((x >> 32) % window) * PAGE;
                uint64_t t0 = now_ns();
                *p = 2;
                lat[i] = now_ns() - t0;
        }
        qsort(lat, writes, sizeof(*lat), cmp_u64);
        printf("%-34s %8.1f %8.1f %8.1f\n", cfg->name, lat[writes / 2] / 1e3, lat[writes * 9 / 10] / 1e3,
               lat[writes * 99 / 100] / 1e3);
        fflush(stdout);
        if (handler > 0) {
                kill(handler, SIGKILL);
                waitpid(handler, NULL, 0);
        }
        return 0;
}

int main(int argc, char *argv[])
{
        static const Config configs[] = {
                { "thread,  same CPU,  poll, pinned", false, 0, false, 0 },
                { "process, same CPU,  poll, pinned", true, 0, false, 0 },
                { "thread,  other CPU, poll, pinned", false, 1, false, 0 },
                { "process, other CPU, poll, pinned", true, 1, false, 0 },
                { "thread,  other CPU, spin, pinned", false, 1, true, 0 },
                { "process, other CPU, spin, pinned", true, 1, true, 0 },
                { "thread,  CPU 0,     poll, free", false, 0, false, -1 },
                { "process, CPU 0,     poll, free", true, 0, false, -1 },
        };
        size_t writes = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
        int status = 0;

        if (argc > 2)
                window = strtoul(argv[2], NULL, 10);
        if (argc > 3 || writes < 100 || window < 1 || window > 64 || (window & (window - 1))) {
                fprintf(stderr, "usage: faultrt [WRITES (>= 100) [WINDOW_PAGES (a power of two, <= 64)]]\n");
                return 2;
        }
        if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
                fprintf(stderr, "faultrt: needs two CPUs\n");
                return 1;
        }
        printf("# %zu writes, each to a random %zu KiB window of a 256 MiB region; microseconds\n", writes,
               window * PAGE / 1024);
        printf("%-34s %8s %8s %8s\n", "# handler, its CPU, wait, writer", "median", "p90", "p99");
        for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
                pid_t child;
                int st;

                cfg = &configs[i];
                fflush(stdout);
                child = fork();
                if (child == 0)
                        _exit(run(writes));
                if (child < 0 || waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        status = 1;
        }
        return status;
}

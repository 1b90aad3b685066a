/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * victim-gdb DIR: a process for reading its core in gdb and elfutils. Four worker threads, each in its
 * own function thread_func_N (N = 1..4) with volatile locals magic_N = 0x1234abc0 + N and
 * wide_N = 0xfeedface00000000 + N, blocked in block_in_read() -> read() on a pipe nobody writes; the
 * main thread in main_wait() with main_magic = 0x600dcafe, blocked the same way. DIR/tids lists
 * "FUNCTION TID" per thread, the main thread first.
 *
 * DIR/tids and DIR/ready are written once every thread is about to block; a test waits until every
 * thread is in the read system call (/proc/PID/task/TID/syscall) before dumping.
 */

#include <pthread.h>

#include "victim.h"

#define N_WORKERS 4

static int pipe_fds[2] = {-1, -1};
static atomic_int n_blocking;
/* Never set: only there so that the compiler cannot tell that block_in_read() does not return, which
 * would leave the callers' return addresses past their ends and "frame function" would not find them. */
static atomic_bool stop;
static pid_t worker_tids[N_WORKERS + 1];

/* Where every thread waits: forever, since nobody writes to the pipe. noinline so that it is a frame
 * of its own in every backtrace. */
static __attribute__((noinline)) void block_in_read(int who)
{
        char c;

        if (who > 0)
                worker_tids[who] = victim_gettid();
        atomic_fetch_add(&n_blocking, 1);
        while (!atomic_load(&stop)) {
                ssize_t n = read(pipe_fds[0], &c, 1);
                if (n < 0 && errno == EINTR)
                        continue;
                victim_fail("read on the pipe returned %zd: %m", n);
        }
}

#define THREAD_FUNC(N)                                                    \
        static __attribute__((noinline)) void *thread_func_##N(void *arg) \
        {                                                                 \
                volatile uint32_t magic_##N = 0x1234abc0U + N;            \
                volatile uint64_t wide_##N = 0xfeedface00000000ULL + N;   \
                                                                          \
                block_in_read(N);                                         \
                return (void *)(uintptr_t)(magic_##N + wide_##N);         \
        }

THREAD_FUNC(1)
THREAD_FUNC(2)
THREAD_FUNC(3)
THREAD_FUNC(4)

static void *(*const thread_funcs[N_WORKERS])(void *) = {thread_func_1, thread_func_2, thread_func_3,
                                                         thread_func_4};

static void wait_blocking(int n)
{
        uint64_t deadline = now_ns() + 30ULL * 1000000000ULL;

        while (atomic_load(&n_blocking) < n) {
                if (now_ns() > deadline)
                        victim_fail("only %d of %d threads started", atomic_load(&n_blocking), n);
                sleep_us(1000);
        }
}

static __attribute__((noinline)) void main_wait(void)
{
        volatile uint32_t main_magic = 0x600dcafeU;
        char buf[512];
        size_t off = 0;
        pthread_t t;

        for (int i = 0; i < N_WORKERS; i++)
                if (pthread_create(&t, NULL, thread_funcs[i], NULL) != 0)
                        victim_fail("pthread_create failed");
        wait_blocking(N_WORKERS);

        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "main_wait %d\n", (int)getpid());
        for (int i = 1; i <= N_WORKERS; i++)
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "thread_func_%d %d\n", i,
                                        (int)worker_tids[i]);
        if (victim_write_file("tids", buf) < 0)
                victim_fail("cannot write %s/tids", victim_dir);
        victim_ready();

        block_in_read(0);
        (void)main_magic;
}

int main(int argc, char *argv[])
{
        victim_parse_args(argc, argv);
        if (victim_check_mode)
                usage_exit();

        victim_init_run();
        if (pipe2(pipe_fds, O_CLOEXEC) < 0)
                victim_fail("pipe2: %m");
        main_wait();
        return 0;
}

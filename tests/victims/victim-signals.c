/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-signals: threads with signals blocked and pending, for the signal sets an image records at
 * the instant. The main thread blocks SIGUSR1 and SIGHUP, raises SIGUSR1 (pending for it alone) and
 * sends the process SIGHUP (pending for the process); a worker named "sig-worker" blocks SIGUSR2 and
 * SIGRTMIN+3 and sends itself SIGRTMIN+3 twice (queued twice). Then both wait for ever. The test
 * compares the sets of each thread's NT_PRSTATUS in the exported core with /proc/PID/task/TID/status.
 */
#include "victim.h"

#include <pthread.h>

static void *worker(void *arg)
{
        sigset_t s;

        sigemptyset(&s);
        sigaddset(&s, SIGUSR2);
        sigaddset(&s, SIGRTMIN + 3);
        VCHECK(pthread_sigmask(SIG_BLOCK, &s, NULL) == 0);
        VCHECK(syscall(SYS_tgkill, getpid(), victim_gettid(), SIGRTMIN + 3) == 0);
        VCHECK(syscall(SYS_tgkill, getpid(), victim_gettid(), SIGRTMIN + 3) == 0);
        VCHECK(pthread_setname_np(pthread_self(), "sig-worker") == 0);
        *(volatile int *)arg = 1;
        for (;;)
                pause();
        return NULL;
}

int main(int argc, char *argv[])
{
        static volatile int ready;
        pthread_t t;
        sigset_t s;

        if (victim_parse_args(argc, argv) < argc)
                usage_exit();
        if (victim_check_mode)
                return 0;
        victim_init_run();
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        sigaddset(&s, SIGHUP);
        VCHECK(sigprocmask(SIG_BLOCK, &s, NULL) == 0);
        VCHECK(pthread_create(&t, NULL, worker, (void *)&ready) == 0);
        VCHECK(raise(SIGUSR1) == 0);
        VCHECK(kill(getpid(), SIGHUP) == 0);
        while (!ready)
                usleep(1000);
        victim_ready();
        for (;;)
                pause();
}

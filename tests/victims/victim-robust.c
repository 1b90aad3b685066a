/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-robust: a thread exits holding a robust mutex while the process is being checkpointed.
 *
 * When a thread exits, the kernel writes its clear_child_tid word (pthread_join waits on it) and marks
 * the robust mutexes it holds FUTEX_OWNER_DIED. Both writes are dropped on a page that is still
 * write-protected by userfaultfd (the exiting task cannot take a uffd fault), after which
 * pthread_join() and the next pthread_mutex_lock() hang forever. The checkpointer must save and
 * un-protect those pages before the thread goes.
 *
 * Layout: a 192 MiB ballast of a known pattern with the mutex on its own page in the middle, so a
 * rate-limited copier reaches it late. The "holder" thread locks the mutex and waits for SIGUSR1
 * (blocked in every thread, taken with sigwait()), then returns without unlocking. The main thread
 * pthread_join()s it, writes DIR/joined, locks the mutex expecting EOWNERDEAD and writes the result's
 * name ("EOWNERDEAD", or e.g. "0" / "EINVAL") to DIR/result. A heartbeat thread keeps the progress
 * counter going throughout.
 *
 * --check DIR: at the snapshot instant (taken before the trigger) the mutex must be held by the holder
 * thread (the owner TID in the futex word, without FUTEX_OWNER_DIED), and the ballast windows must
 * hold their pattern.
 */
#include <linux/futex.h>
#include <pthread.h>

#include "victim.h"

#define BALLAST_SIZE (192 * MIB)
#define WINDOW_SIZE  (2 * MIB)

typedef struct Control {
        uint64_t beats; /* the "progress" counter */
        uint64_t holder_tid;
        uint64_t locked;  /* the holder holds the mutex */
        uint64_t exiting; /* the holder got the trigger */
        uint64_t joined;
} Control;

static Control *ctl;
static pthread_mutex_t *mutex;

static void *holder(void *arg)
{
        sigset_t set;
        int sig, r;

        ctl->holder_tid = (uint64_t)victim_gettid();
        r = pthread_mutex_lock(mutex);
        if (r != 0)
                victim_fail("holder: pthread_mutex_lock: %s", strerror(r));
        ctl->locked = 1;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        do
                r = sigwait(&set, &sig);
        while (r == EINTR);
        if (r != 0)
                victim_fail("holder: sigwait: %s", strerror(r));
        ctl->exiting = 1;
        return NULL; /* without unlocking */
}

static void *heartbeat(void *arg)
{
        for (;;) {
                ((volatile Control *)ctl)->beats++;
                sleep_us(1000);
        }
        return NULL;
}

static const char *errno_name(int r)
{
        switch (r) {
        case 0:
                return "0";
        case EOWNERDEAD:
                return "EOWNERDEAD";
        case ENOTRECOVERABLE:
                return "ENOTRECOVERABLE";
        case EINVAL:
                return "EINVAL";
        case EDEADLK:
                return "EDEADLK";
        case EAGAIN:
                return "EAGAIN";
        default:
                return strerror(r);
        }
}

static _Noreturn void run(void)
{
        pthread_mutexattr_t attr;
        pthread_t th, hb;
        char *ballast;
        sigset_t set;
        char buf[64];
        int r;

        victim_init_run();
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        VCHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);

        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        ballast = map_anon(BALLAST_SIZE, PROT_READ | PROT_WRITE, 0);
        VCHECK(madvise(ballast, BALLAST_SIZE, MADV_NOHUGEPAGE) == 0);
        fill_pattern(ballast, BALLAST_SIZE);
        /* The mutex gets the middle page to itself. */
        mutex = (pthread_mutex_t *)(ballast + BALLAST_SIZE / 2);
        memset(mutex, 0, VICTIM_PAGE_SIZE);
        VCHECK(pthread_mutexattr_init(&attr) == 0);
        VCHECK(pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0);
        VCHECK(pthread_mutex_init(mutex, &attr) == 0);

        VCHECK(pthread_create(&hb, NULL, heartbeat, NULL) == 0);
        VCHECK(pthread_create(&th, NULL, holder, NULL) == 0);
        while (!((volatile Control *)ctl)->locked)
                sleep_us(1000);

        layout_add("control", ctl, VICTIM_PAGE_SIZE);
        layout_add("progress", &ctl->beats, sizeof(ctl->beats));
        layout_add("mutex_page", mutex, VICTIM_PAGE_SIZE);
        layout_add("ballast_head", ballast, WINDOW_SIZE);
        layout_add("ballast_below_mutex", (char *)mutex - WINDOW_SIZE, WINDOW_SIZE);
        layout_add("ballast_above_mutex", (char *)mutex + VICTIM_PAGE_SIZE, WINDOW_SIZE);
        layout_add("ballast_tail", ballast + BALLAST_SIZE - WINDOW_SIZE, WINDOW_SIZE);
        victim_ready();

        /* Returns only if the kernel's clear_child_tid write landed. */
        VCHECK(pthread_join(th, NULL) == 0);
        ctl->joined = 1;
        victim_write_file("joined", "1\n");

        /* Returns only if the kernel marked the mutex FUTEX_OWNER_DIED. */
        r = pthread_mutex_lock(mutex);
        snprintf(buf, sizeof(buf), "%s\n", errno_name(r));
        if (r == EOWNERDEAD) {
                VCHECK(pthread_mutex_consistent(mutex) == 0);
                VCHECK(pthread_mutex_unlock(mutex) == 0);
        }
        victim_write_file("result", buf);

        for (;;)
                pause();
}

static int check(void)
{
        static const char *const windows[] = {"ballast_head", "ballast_below_mutex", "ballast_above_mutex",
                                              "ballast_tail"};
        const LayoutEntry *e;
        Control *c;
        pthread_mutex_t *m;
        uint32_t word;

        layout_load();
        c = bin_load("control", &e, false);
        m = bin_load("mutex_page", &e, false);
        if (!c->locked || c->holder_tid == 0)
                check_fail("control: locked=%" PRIu64 " holder_tid=%" PRIu64
                           ": the holder did not hold the mutex",
                           c->locked, c->holder_tid);
        if (c->exiting || c->joined)
                check_fail("control: exiting=%" PRIu64 " joined=%" PRIu64
                           ": the snapshot was taken after the trigger (test error?)",
                           c->exiting, c->joined);
        /* glibc's mutex: the futex word is the owner's TID (| FUTEX_WAITERS), __owner the TID too. */
        word = (uint32_t)m->__data.__lock;
        if ((word & FUTEX_TID_MASK) != c->holder_tid || (word & FUTEX_OWNER_DIED))
                check_fail("mutex futex word 0x%x at the instant, expected owner TID %" PRIu64
                           " without FUTEX_OWNER_DIED (0x%x): the page was saved after the holder exited?",
                           word, c->holder_tid, FUTEX_OWNER_DIED);
        if ((uint64_t)m->__data.__owner != c->holder_tid)
                check_fail("mutex __owner %d, expected %" PRIu64, m->__data.__owner, c->holder_tid);
        printf("mutex ok: held by TID %" PRIu64 " (futex word 0x%x)\n", c->holder_tid, word);

        for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
                void *buf = bin_load(windows[i], &e, true);
                ssize_t bad;
                if (!buf)
                        continue;
                bad = pattern_mismatch(buf, e->addr, e->len);
                if (bad >= 0)
                        check_fail("%s: word at 0x%" PRIx64 " is 0x%" PRIx64 ", expected 0x%" PRIx64,
                                   windows[i], e->addr + 8 * (uint64_t)bad, ((uint64_t *)buf)[bad],
                                   pattern_word(e->addr + 8 * (uint64_t)bad));
                printf("%s ok\n", windows[i]);
                free(buf);
        }
        free(c);
        free(m);
        return 0;
}

int main(int argc, char *argv[])
{
        victim_parse_args(argc, argv);
        if (victim_check_mode)
                return check();
        run();
}

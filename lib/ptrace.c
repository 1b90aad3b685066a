/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The ptrace side of a snapshot.
 *
 * Attaching: every thread is PTRACE_SEIZE'd with TRACECLONE (threads created later are attached by the
 * kernel and start in a PTRACE_EVENT_STOP), TRACEEXIT (so an exiting thread stops before the kernel's
 * last writes to its tid word and robust list, which uffd-wp would silently drop) and TRACEEXEC (an
 * exec replaces the mm under the snapshot: the snapshot fails). Then every thread is PTRACE_INTERRUPT'ed
 * and waited for; /proc/PID/task is re-read until no thread is missing.
 *
 * Injection: a stopped thread's registers are saved, pointed at a "syscall" instruction found in the
 * target's own code (the vDSO has one), single-stepped over it, and restored. orig_rax is set to -1 so
 * that the kernel does not apply its syscall-restart logic to our registers; restoring the saved
 * registers (with the interrupted syscall's orig_rax and -ERESTART* in rax) lets the thread's own
 * syscall restart normally when it resumes, so a read() blocked across the snapshot loses nothing.
 *
 * Target.pidfd is the target's pidfd, or -EBADF where pidfd_open() fails with ENOSYS (it does under
 * valgrind 3.19, which has no wrapper for it; never on a kernel this engine runs on). Nothing here
 * depends on it: the PID cannot be recycled under us while we trace its threads (a traced zombie waits
 * for our wait), and the engine asks /proc instead where it would have polled the pidfd.
 */

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "compat.h"
#include "procfs.h"
#include "ptrace.h"
#include "util.h"

#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

#define XSTATE_MAX (64U << 10)

/* TRACESYSGOOD marks syscall-stops with 0x80: a stop that, unlike a single-step's SIGTRAP, leaves no
 * signal behind to kill the target if we die while it is stopped there. */
static const long seize_options = PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC |
                                  PTRACE_O_TRACESYSGOOD;

static long target_options(const Target *t)
{
        return t->no_clone_events ? seize_options & ~PTRACE_O_TRACECLONE : seize_options;
}

#define errf(...) (err ? (void)snprintf(err, errlen, __VA_ARGS__) : (void)0)

static int tracee_note_status(Target *t, Tracee *tr, int status);
static int seccomp_can_suspend(void);

/*
 * How long a thread may take to stop once interrupted. A thread in a kernel-mode fault on a userfaultfd
 * (a read() into memory its own uffd has not filled yet, or the kernel's rseq update of a page ours
 * protects) does not stop while the fault stands: with the interrupt pending the kernel retries the
 * fault in a loop, burning its CPU. Waiting for such a thread without a bound froze the rest of the
 * target for good; past this, the attach or the freeze fails instead and the target is let go.
 */
#define STOP_TIMEOUT_MS 3000

/*
 * Waits for tid to change state, as waitpid(tid, status, __WALL) does, until deadline (now_usec()
 * time). Returns tid, 0 at the deadline, or a negative errno. SIGCHLD, which a tracee's stop sends us,
 * wakes it: it is blocked meanwhile and read from a signalfd of its own (without one, every 1 ms), made
 * only if the tracee has not changed state already, as most have by the time they are waited for.
 */
static pid_t wait_tracee(pid_t tid, int *status, uint64_t deadline)
{
        sigset_t chld, old;
        int sfd = -EBADF;
        bool blocked = false;
        pid_t w;

        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        for (;;) {
                uint64_t now;

                w = waitpid(tid, status, __WALL | WNOHANG);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w != 0) {
                        w = w < 0 ? -errno : w;
                        break;
                }
                now = now_usec();
                if (now >= deadline)
                        break;
                if (!blocked) {
                        /* From here a SIGCHLD stays pending for the signalfd; the next waitpid() sees a
                         * state change that came before. */
                        pthread_sigmask(SIG_BLOCK, &chld, &old);
                        blocked = true;
                        sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
                        continue;
                }
                if (sfd >= 0) {
                        struct pollfd p = { .fd = sfd, .events = POLLIN };
                        struct signalfd_siginfo si;

                        if (poll(&p, 1, (int)MIN((deadline - now + 999) / 1000, (uint64_t)INT_MAX)) > 0)
                                while (read(sfd, &si, sizeof(si)) == sizeof(si))
                                        ;
                } else
                        (void)usleep(1000);
        }
        safe_close(sfd);
        if (blocked)
                pthread_sigmask(SIG_SETMASK, &old, NULL);
        return w;
}

/* The message for a thread that did not stop in time. */
static void errf_not_stopped(pid_t pid, pid_t tid, char *err, size_t errlen)
{
        ProcStatus st;
        char state = proc_status_read(pid, tid, &st) >= 0 ? st.state : '?';

        errf("thread %d of PID %d did not stop within %d ms (state %c): it may be waiting in a page fault "
             "on a userfaultfd, which holds it until the fault is served",
             (int)tid, (int)pid, STOP_TIMEOUT_MS, state);
}

Tracee *target_find(Target *t, pid_t tid)
{
        for (size_t i = 0; i < t->n_threads; i++)
                if (t->threads[i].tid == tid && t->threads[i].state != TRACEE_GONE)
                        return &t->threads[i];
        return NULL;
}

Tracee *target_add(Target *t, pid_t tid)
{
        Tracee *tr;

        tr = target_find(t, tid);
        if (tr)
                return tr;

        if (t->n_threads == t->n_allocated) {
                size_t n = MAX(t->n_allocated * 2, (size_t)16);
                Tracee *p = realloc(t->threads, n * sizeof(Tracee));
                if (!p)
                        return NULL;
                t->threads = p;
                t->n_allocated = n;
        }

        tr = &t->threads[t->n_threads++];
        *tr = (Tracee){ .tid = tid, .state = TRACEE_RUNNING };
        return tr;
}

static int find_syscall_gadget(Target *t)
{
        ProcMap *maps = NULL;
        size_t n = 0;
        int r;

        r = proc_maps_read(t->pid, &maps, &n);
        if (r < 0)
                return r;

        /* Prefer the vDSO (always has a syscall fallback), then any executable mapping. */
        r = -ENOENT;
        for (int pass = 0; pass < 2 && r < 0; pass++)
                for (size_t i = 0; i < n && r < 0; i++) {
                        const ProcMap *m = &maps[i];
                        size_t len = MIN(m->end - m->start, (uint64_t)(4U << 20));
                        _cleanup_free_ uint8_t *buf = NULL;
                        uint8_t *p;

                        if (!(m->prot & PROT_EXEC))
                                continue;
                        if (pass == 0 && !(m->name && streq(m->name, "[vdso]")))
                                continue;
                        if (m->name && streq(m->name, "[vsyscall]"))
                                continue;

                        buf = malloc(len);
                        if (!buf) {
                                r = -ENOMEM;
                                break;
                        }
                        if (target_read_memory(t, m->start, buf, len) < 0)
                                continue;
                        p = memmem(buf, len, "\x0f\x05", 2);
                        if (p) {
                                t->syscall_gadget = m->start + (uint64_t)(p - buf);
                                r = 0;
                        }
                }

        proc_maps_free(maps, n);
        return r;
}

int target_read_memory(Target *t, uint64_t addr, void *buf, size_t len)
{
        size_t done = 0;

        while (done < len) {
                struct iovec local = { .iov_base = (uint8_t *)buf + done, .iov_len = len - done };
                struct iovec remote = { .iov_base = (void *)(uintptr_t)(addr + done), .iov_len = len - done };
                ssize_t n;

                n = process_vm_readv(t->pid, &local, 1, &remote, 1, 0);
                if (n > 0) {
                        done += (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;

                /* PROT_NONE or otherwise unreadable for process_vm_readv: /proc/PID/mem uses FOLL_FORCE. */
                n = pread(t->mem_fd, (uint8_t *)buf + done, len - done, (off_t)(addr + done));
                if (n > 0) {
                        done += (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                return n < 0 ? -errno : -EIO;
        }
        return 0;
}

int target_write_memory(Target *t, uint64_t addr, const void *buf, size_t len)
{
        struct iovec local = { .iov_base = (void *)buf, .iov_len = len };
        struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
        ssize_t n;

        n = process_vm_writev(t->pid, &local, 1, &remote, 1, 0);
        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EIO;
}

int target_check(pid_t pid, ProcStatus *st, char *err, size_t errlen)
{
        int r;

        if (pid <= 0) {
                errf("invalid PID %d", (int)pid);
                return -EINVAL;
        }

        r = proc_status_read(pid, 0, st);
        if (r == -ENOENT || r == -ESRCH) {
                errf("PID %d: no such process", (int)pid);
                return -ESRCH;
        }
        if (r < 0) {
                errf("PID %d: cannot read /proc/%d/status: %s", (int)pid, (int)pid, strerror(-r));
                return r;
        }

        if (st->tgid == getpid()) {
                errf("PID %d is livesnap itself", (int)pid);
                return -EINVAL;
        }
        r = proc_is_kthread(pid);
        if (r > 0 || st->kthread) {
                errf("PID %d (%s) is a kernel thread", (int)pid, st->name);
                return -EINVAL;
        }
        if (st->state == 'Z' || st->state == 'X') {
                errf("PID %d (%s) is a zombie", (int)pid, st->name);
                return -ECHILD;
        }
        if (st->tgid != pid) {
                errf("PID %d is a thread of process %d; checkpoint the process", (int)pid, (int)st->tgid);
                return -EINVAL;
        }
        if (st->tracer != 0) {
                errf("PID %d (%s) is already traced by PID %d", (int)pid, st->name, (int)st->tracer);
                return -EBUSY;
        }
        return 0;
}

static int seccomp_can_suspend(void)
{
        ProcStatus self;
        int r;

        r = proc_status_read(getpid(), 0, &self);
        if (r < 0)
                return r;
        if (self.seccomp > 0)
                return 0;
        /* PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN in the initial user namespace. */
        return prctl(PR_CAPBSET_READ, 21 /* CAP_SYS_ADMIN */) == 1 && geteuid() == 0 ? 1 : 0;
}

/* /proc/PID/mem, the fallback for reads process_vm_readv refuses (PROT_NONE). Opened only once the
 * target is seized, so a caller without rights hears "not permitted", not EACCES on this file. */
static int target_open_mem(Target *t, char *err, size_t errlen)
{
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/mem", (int)t->pid);
        t->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (t->mem_fd < 0) {
                int r = -errno;
                errf("PID %d: cannot open %s: %s", (int)t->pid, path, strerror(-r));
                return r;
        }
        return 0;
}

/* A Target for pid with its pidfd, after the refusal checks; decides whether seccomp must be suspended
 * around injections, and refuses if it must but cannot be. */
static int target_new(pid_t pid, ProcStatus *st, Target **ret, char *err, size_t errlen)
{
        Target *t;
        int r;

        r = target_check(pid, st, err, errlen);
        if (r < 0)
                return r;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->pid = pid;
        t->mem_fd = -EBADF;
        t->regset_buf = malloc(XSTATE_MAX);
        if (!t->regset_buf) {
                free(t);
                return -ENOMEM;
        }
        memset(t->regset_buf, 0, XSTATE_MAX);
        t->pidfd = (int)syscall(__NR_pidfd_open, pid, 0);
        if (t->pidfd < 0 && errno == ENOSYS)
                t->pidfd = -EBADF; /* no pidfds here (valgrind 3.19): see the note at the top */
        else if (t->pidfd < 0) {
                r = -errno;
                errf("PID %d: %s", (int)pid, r == -ESRCH ? "no such process" : strerror(-r));
                goto fail;
        }
        if (st->seccomp > 0) {
                if (seccomp_can_suspend() <= 0) {
                        errf("PID %d (%s) runs under a seccomp filter and this caller cannot suspend it "
                             "(needs CAP_SYS_ADMIN and no filter of its own): refusing to inject a syscall "
                             "the filter might punish",
                             (int)pid, st->name);
                        r = -EOPNOTSUPP;
                        goto fail;
                }
                t->suspend_seccomp = true;
        }
        *ret = t;
        return 0;
fail:
        target_free(t);
        return r;
}

static bool thread_traced_by_us(pid_t pid, pid_t tid)
{
        ProcStatus st;

        return proc_status_read(pid, tid, &st) >= 0 && st.tracer == getpid();
}

#define EXITING_WAIT_MS 2000

/* Waits until thread tid of pid has left /proc. Returns 0, or -ETIMEDOUT. */
static int wait_thread_gone(pid_t pid, pid_t tid)
{
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)pid, (int)tid);
        for (int i = 0; i < EXITING_WAIT_MS * 10; i++) {
                if (access(path, F_OK) < 0)
                        return 0;
                usleep(100);
        }
        return -ETIMEDOUT;
}

int target_attach(pid_t pid, Target **ret, char *err, size_t errlen)
{
        Target *t = NULL;
        ProcStatus st;
        pid_t *tids = NULL;
        size_t n_tids = 0;
        int r;

        r = target_new(pid, &st, &t, err, errlen);
        if (r < 0)
                return r;

        /* Seize until a pass over /proc/PID/task finds no new thread. */
        for (bool again = true; again;) {
                again = false;
                free(tids);
                tids = NULL;
                r = proc_task_list(pid, &tids, &n_tids);
                if (r < 0) {
                        errf("PID %d: cannot list threads: %s", (int)pid, strerror(-r));
                        goto fail;
                }
                for (size_t i = 0; i < n_tids; i++) {
                        Tracee *tr;

                        if (target_find(t, tids[i]))
                                continue;
                        if (ptrace(PTRACE_SEIZE, tids[i], NULL, (void *)seize_options) < 0) {
                                r = -errno;
                                if (r == -ESRCH)
                                        continue; /* exited meanwhile */
                                if (r == -EPERM && t->n_threads > 0 && thread_traced_by_us(pid, tids[i])) {
                                        /* Created by a thread we had seized: the kernel attached it to us
                                         * (PTRACE_O_TRACECLONE); its parent's clone event follows. */
                                        if (!target_add(t, tids[i])) {
                                                r = -ENOMEM;
                                                goto fail;
                                        }
                                        again = true;
                                        continue;
                                }
                                if (r == -EPERM && t->n_threads > 0 && proc_thread_exiting(pid, tids[i]) > 0) {
                                        /* The kernel refuses to attach to an exiting thread. It runs no
                                         * more user code, but its exit still writes its clear_child_tid
                                         * word, which nothing saves for a thread we do not trace: wait
                                         * until it is gone, before anything is protected. */
                                        r = wait_thread_gone(pid, tids[i]);
                                        if (r < 0) {
                                                errf("thread %d of PID %d (%s) is exiting but did not finish "
                                                     "within %d ms", (int)tids[i], (int)pid, st.name,
                                                     EXITING_WAIT_MS);
                                                goto fail;
                                        }
                                        continue;
                                }
                                if (r == -EPERM && t->n_threads == 0) {
                                        ProcStatus st2;
                                        if (proc_status_read(pid, 0, &st2) >= 0 && st2.tracer != 0) {
                                                errf("PID %d (%s) is already traced by PID %d", (int)pid,
                                                     st.name, (int)st2.tracer);
                                                r = -EBUSY;
                                        } else
                                                errf("not permitted to trace PID %d (%s): %s", (int)pid,
                                                     st.name, strerror(EPERM));
                                } else
                                        errf("failed to seize thread %d of PID %d (%s): %s", (int)tids[i],
                                             (int)pid, st.name, strerror(-r));
                                goto fail;
                        }
                        tr = target_add(t, tids[i]);
                        if (!tr) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        again = true;
                }
        }

        if (t->n_threads == 0) {
                errf("PID %d: no such process", (int)pid);
                r = -ESRCH;
                goto fail;
        }

        r = target_open_mem(t, err, errlen);
        if (r < 0)
                goto fail;

        free(tids);
        *ret = t;
        return 0;

fail:
        free(tids);
        target_free(t);
        return r;
}

int target_attach_main(pid_t pid, Target **ret, char *err, size_t errlen)
{
        Target *t = NULL;
        ProcStatus st;
        Tracee *tr;
        uint64_t deadline;
        int r, status;

        r = target_new(pid, &st, &t, err, errlen);
        if (r < 0)
                return r;

        /* Without clone events: the injector follows no new thread, and a main thread seized in the
         * middle of clone() would otherwise first stop in a clone event, from which the next syscall
         * stop is clone's exit, not the entry of the injected call (which then fails with EIO). */
        t->no_clone_events = true;
        if (ptrace(PTRACE_SEIZE, pid, NULL, (void *)target_options(t)) < 0) {
                r = -errno;
                if (r == -EPERM)
                        errf("not permitted to trace PID %d (%s): %s", (int)pid, st.name, strerror(EPERM));
                else
                        errf("failed to seize PID %d (%s): %s", (int)pid, st.name, strerror(-r));
                goto fail;
        }
        tr = target_add(t, pid);
        if (!tr) {
                r = -ENOMEM;
                goto fail;
        }
        r = target_open_mem(t, err, errlen);
        if (r < 0)
                goto fail;
        if (ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) < 0) {
                r = -errno;
                errf("failed to interrupt PID %d: %s", (int)pid, strerror(-r));
                goto fail;
        }
        deadline = now_usec() + STOP_TIMEOUT_MS * 1000ULL;
        while (tr->state == TRACEE_RUNNING) {
                pid_t w = wait_tracee(pid, &status, deadline);

                if (w == 0) {
                        tr->unstoppable = true;
                        errf_not_stopped(pid, pid, err, errlen);
                        r = -ETIMEDOUT;
                        goto fail;
                }
                if (w < 0) {
                        r = w;
                        errf("waiting for PID %d failed: %s", (int)pid, strerror(-r));
                        goto fail;
                }
                (void)tracee_note_status(t, tr, status);
                tr = target_find(t, pid);
                if (!tr || tr->state == TRACEE_GONE || tr->state == TRACEE_EXITING) {
                        errf("PID %d exited while being attached", (int)pid);
                        r = -ESRCH;
                        goto fail;
                }
                if (t->execed) {
                        errf("PID %d called execve while being attached", (int)pid);
                        r = -ECANCELED;
                        goto fail;
                }
        }
        *ret = t;
        return 0;
fail:
        target_free(t);
        return r;
}

/* Records what a wait status means for tr. Returns 1 if tr is now stopped, 0 if not (or gone). */
static int tracee_note_status(Target *t, Tracee *tr, int status)
{
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
                tr->state = TRACEE_GONE;
                if (tr->tid == t->pid)
                        t->exited = true;
                return 0;
        }
        if (!WIFSTOPPED(status))
                return 0;

        int sig = WSTOPSIG(status), event = status >> 16;

        switch (event) {
        case 0:
                /* Signal-delivery-stop: hold the signal, deliver it on resume. */
                tr->pending_signal = sig;
                tr->state = TRACEE_STOPPED;
                return 1;
        case PTRACE_EVENT_STOP:
                if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
                        tr->state = TRACEE_GROUPSTOP;
                else
                        tr->state = TRACEE_STOPPED;
                return 1;
        case PTRACE_EVENT_CLONE: {
                unsigned long msg = 0;

                if (ptrace(PTRACE_GETEVENTMSG, tr->tid, NULL, &msg) == 0 && msg > 0)
                        (void)target_add(t, (pid_t)msg);
                tr->state = TRACEE_STOPPED;
                return 1;
        }
        case PTRACE_EVENT_EXIT:
                tr->state = TRACEE_EXITING;
                return 1;
        case PTRACE_EVENT_EXEC:
                t->execed = true;
                tr->state = TRACEE_STOPPED;
                return 1;
        default:
                tr->state = TRACEE_STOPPED;
                return 1;
        }
}

int target_stop_all(Target *t, char *err, size_t errlen)
{
        uint64_t deadline = now_usec() + STOP_TIMEOUT_MS * 1000ULL;
        int r;

        for (size_t i = 0; i < t->n_threads; i++)
                if (ptrace(PTRACE_INTERRUPT, t->threads[i].tid, NULL, NULL) < 0 && errno != ESRCH) {
                        r = -errno;
                        errf("failed to interrupt thread %d: %s", (int)t->threads[i].tid, strerror(-r));
                        return r;
                }

        for (;;) {
                Tracee *waiting = NULL;
                int status;
                pid_t w;

                /* Threads added by clone events start stopped by the kernel; wait for everyone running. */
                for (size_t i = 0; i < t->n_threads; i++)
                        if (t->threads[i].state == TRACEE_RUNNING) {
                                waiting = &t->threads[i];
                                break;
                        }
                if (!waiting) {
                        pid_t *tids = NULL;
                        size_t n = 0;
                        bool missing = false;

                        /* Stable? Every thread in /proc must be a stopped tracee. */
                        r = proc_task_list(t->pid, &tids, &n);
                        if (r < 0) {
                                errf("cannot list threads of PID %d: %s", (int)t->pid, strerror(-r));
                                return r;
                        }
                        for (size_t i = 0; i < n; i++)
                                if (!target_find(t, tids[i])) {
                                        missing = true;
                                        if (ptrace(PTRACE_SEIZE, tids[i], NULL, (void *)seize_options) == 0) {
                                                (void)target_add(t, tids[i]);
                                                (void)ptrace(PTRACE_INTERRUPT, tids[i], NULL, NULL);
                                        }
                                }
                        free(tids);
                        if (!missing)
                                break;
                        continue;
                }

                w = wait_tracee(waiting->tid, &status, deadline);
                if (w == 0) {
                        waiting->unstoppable = true;
                        errf_not_stopped(t->pid, waiting->tid, err, errlen);
                        return -ETIMEDOUT;
                }
                if (w < 0) {
                        if (w == -ECHILD) {
                                waiting->state = TRACEE_GONE;
                                continue;
                        }
                        r = w;
                        errf("waiting for thread %d failed: %s", (int)waiting->tid, strerror(-r));
                        return r;
                }
                (void)tracee_note_status(t, waiting, status);
                if (t->execed) {
                        errf("PID %d called execve while being attached", (int)t->pid);
                        return -ECANCELED;
                }
        }

        if (!target_find(t, t->pid)) {
                errf("PID %d exited while being attached", (int)t->pid);
                return -ESRCH;
        }
        return 0;
}

/* Reads regset type of tid into t's scratch buffer, then keeps a copy of the size the kernel gave.
 * Allocating XSTATE_MAX per thread in the freeze cost ~0.15 ms a thread in page faults alone. */
static int getregset(Target *t, pid_t tid, uint32_t type, size_t max, ImageRegset *ret)
{
        struct iovec iov = { .iov_base = t->regset_buf, .iov_len = MIN(max, (size_t)XSTATE_MAX) };
        void *data;

        if (ptrace(PTRACE_GETREGSET, tid, (void *)(uintptr_t)type, &iov) < 0)
                return -errno;
        data = malloc(MAX(iov.iov_len, (size_t)1));
        if (!data)
                return -ENOMEM;
        memcpy(data, t->regset_buf, iov.iov_len);
        *ret = (ImageRegset){ .type = type, .size = (uint32_t)iov.iov_len, .data = data };
        return 0;
}

/*
 * The signals pending for the thread alone (SigPnd, not the process's ShdPnd), from its queue. A
 * signal pending without a queue entry (its siginfo could not be allocated past RLIMIT_SIGPENDING) is
 * not seen: the image then lacks one bit of what a core file reports, nothing of the memory.
 */
static uint64_t tracee_pending(pid_t tid)
{
        siginfo_t si[32];
        uint64_t set = 0;

        for (uint64_t off = 0;;) {
                struct __ptrace_peeksiginfo_args a = { .off = off, .flags = 0, .nr = ELEMENTSOF(si) };
                long n = ptrace(PTRACE_PEEKSIGINFO, tid, &a, si);

                if (n <= 0)
                        return set;
                for (long i = 0; i < n; i++)
                        if (si[i].si_signo >= 1 && si[i].si_signo <= 64)
                                set |= 1ULL << (si[i].si_signo - 1);
                if (n < (long)ELEMENTSOF(si))
                        return set;
                off += (uint64_t)n;
        }
}

int target_capture_threads(Target *t)
{
        for (size_t i = 0; i < t->n_threads; i++) {
                Tracee *tr = &t->threads[i];
                ImageThread *it = &tr->saved;
                siginfo_t si;
                int r;

                if (tr->state == TRACEE_GONE || tr->state == TRACEE_RUNNING)
                        continue;

                tr->at_instant = true;
                it->tid = (uint32_t)tr->tid;
                it->flags = tr->tid == t->pid ? IMAGE_THREAD_MAIN : 0;
                /* Two ptrace calls, ~2 us, where /proc/PID/task/TID/status took 15 (the name is read after
                 * the freeze: target_read_thread_names()). */
                if (ptrace(PTRACE_GETSIGMASK, tr->tid, (void *)sizeof(it->sigblocked), &it->sigblocked) < 0)
                        it->sigblocked = 0;
                it->sigpending = tracee_pending(tr->tid);

                it->regsets = calloc(4, sizeof(ImageRegset));
                if (!it->regsets)
                        return -ENOMEM;

                r = getregset(t, tr->tid, NT_PRSTATUS, sizeof(struct user_regs_struct), &it->regsets[it->n_regsets]);
                if (r < 0)
                        return r;
                it->n_regsets++;
                if (getregset(t, tr->tid, NT_PRFPREG, sizeof(struct user_fpregs_struct),
                              &it->regsets[it->n_regsets]) >= 0)
                        it->n_regsets++;
                if (getregset(t, tr->tid, NT_X86_XSTATE, XSTATE_MAX, &it->regsets[it->n_regsets]) >= 0)
                        it->n_regsets++;

                memset(&si, 0, sizeof(si));
                if (ptrace(PTRACE_GETSIGINFO, tr->tid, NULL, &si) < 0) {
                        memset(&si, 0, sizeof(si));
                        si.si_signo = SIGSTOP;
                }
                it->regsets[it->n_regsets].type = IMAGE_REGSET_SIGINFO;
                it->regsets[it->n_regsets].size = sizeof(si);
                it->regsets[it->n_regsets].data = malloc(sizeof(si));
                if (!it->regsets[it->n_regsets].data)
                        return -ENOMEM;
                memcpy(it->regsets[it->n_regsets].data, &si, sizeof(si));
                it->n_regsets++;
        }
        return 0;
}

static int set_suspend_seccomp(Target *t, pid_t tid, bool on)
{
        long opts = target_options(t) | (on ? PTRACE_O_SUSPEND_SECCOMP : 0);

        if (!t->suspend_seccomp)
                return 0;
        if (ptrace(PTRACE_SETOPTIONS, tid, NULL, (void *)opts) < 0)
                return -errno;
        return 0;
}

int target_inject_syscall(Target *t, pid_t tid, long nr, const uint64_t args[6], int64_t *ret_result)
{
        struct user_regs_struct saved, regs;
        Tracee *tr;
        int r, status;

        tr = target_find(t, tid);
        if (!tr || (tr->state != TRACEE_STOPPED && tr->state != TRACEE_GROUPSTOP))
                return -ESRCH;

        if (t->syscall_gadget == 0) {
                r = find_syscall_gadget(t);
                if (r < 0)
                        return r;
        }

        if (ptrace(PTRACE_GETREGS, tid, NULL, &saved) < 0)
                return -errno;

        regs = saved;
        regs.rax = (unsigned long)nr;
        regs.orig_rax = (unsigned long)-1;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = t->syscall_gadget;

        r = set_suspend_seccomp(t, tid, true);
        if (r < 0)
                return r;

        if (ptrace(PTRACE_SETREGS, tid, NULL, &regs) < 0) {
                r = -errno;
                goto restore_opts;
        }

        /* Run to the syscall's entry stop, then to its exit stop. */
        for (bool entered = false;;) {
                if (ptrace(PTRACE_SYSCALL, tid, NULL, NULL) < 0) {
                        r = -errno;
                        goto restore;
                }
                for (;;) {
                        if (waitpid(tid, &status, __WALL) >= 0)
                                break;
                        if (errno != EINTR) {
                                r = -errno;
                                goto restore;
                        }
                }
                if (WIFEXITED(status) || WIFSIGNALED(status)) {
                        tr->state = TRACEE_GONE;
                        return -ESRCH;
                }
                if (!WIFSTOPPED(status)) {
                        r = -EIO;
                        goto restore;
                }
                if ((status >> 16) == PTRACE_EVENT_EXIT) {
                        tr->state = TRACEE_EXITING;
                        return -ESRCH;
                }
                if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
                        if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) < 0) {
                                r = -errno;
                                goto restore;
                        }
                        if (!entered) {
                                if ((long)regs.orig_rax != nr) {
                                        /* Stopped in some other syscall: do not guess. */
                                        r = -EIO;
                                        goto restore;
                                }
                                entered = true;
                                continue;
                        }
                        break;
                }
                /* A signal arrived before the syscall ran: keep it for later, go on. */
                if ((status >> 16) == 0 && tr->pending_signal == 0)
                        tr->pending_signal = WSTOPSIG(status);
        }

        *ret_result = (int64_t)regs.rax;
        r = 0;

restore:
        if (ptrace(PTRACE_SETREGS, tid, NULL, &saved) < 0 && r == 0)
                r = -errno;

        /* Back in an interrupt stop, as before: the queued interrupt traps the thread again inside the
         * kernel, before it runs any user code. */
        if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) == 0 && ptrace(PTRACE_CONT, tid, NULL, NULL) == 0)
                for (;;) {
                        if (waitpid(tid, &status, __WALL) < 0) {
                                if (errno == EINTR)
                                        continue;
                                break;
                        }
                        if (WIFEXITED(status) || WIFSIGNALED(status)) {
                                tr->state = TRACEE_GONE;
                                return -ESRCH;
                        }
                        if (!WIFSTOPPED(status))
                                break;
                        if ((status >> 16) == PTRACE_EVENT_STOP)
                                break;
                        if ((status >> 16) == PTRACE_EVENT_EXIT) {
                                tr->state = TRACEE_EXITING;
                                break;
                        }
                        if ((status >> 16) == 0)
                                tr->pending_signal = WSTOPSIG(status);
                        if (ptrace(PTRACE_CONT, tid, NULL, NULL) < 0)
                                break;
                }
restore_opts:
        (void)set_suspend_seccomp(t, tid, false);
        return r;
}

/*
 * glibc keeps each thread's tid word (the address set_tid_address() gave the kernel) at a fixed offset
 * from the thread pointer. Learn that offset from this process and use it for a target thread only if
 * the word there holds that thread's tid. Asking the thread with an injected prctl() would work for any
 * libc, but an injection during the freeze is a moment in which our death would leave the thread on
 * borrowed registers; threads of other libcs go without (their robust lists are still handled).
 */
static int64_t glibc_tid_offset(void)
{
        uint64_t fs = 0;
        int *ctid = NULL;

        if (syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &fs) < 0 ||
            prctl(PR_GET_TID_ADDRESS, &ctid, 0, 0, 0) < 0 || !ctid)
                return -1;
        if ((uint64_t)(uintptr_t)ctid < fs || (uint64_t)(uintptr_t)ctid - fs >= 65536)
                return -1;
        return (int64_t)((uint64_t)(uintptr_t)ctid - fs);
}

static int64_t tid_offset(void)
{
        static int64_t off = -2;

        if (off == -2)
                off = glibc_tid_offset();
        return off;
}

int tracee_read_tid_address(Target *t, Tracee *tr)
{
        int64_t off = tid_offset();
        struct user_regs_struct regs;
        int32_t word;

        if (off < 0)
                return -EOPNOTSUPP;
        if (ptrace(PTRACE_GETREGS, tr->tid, NULL, &regs) < 0)
                return -errno;
        if (regs.fs_base == 0 || target_read_memory(t, regs.fs_base + (uint64_t)off, &word, sizeof(word)) < 0 ||
            word != tr->tid)
                return -ENOENT;
        tr->clear_child_tid = regs.fs_base + (uint64_t)off;
        return 0;
}

/* The thread's fs_base as captured at the instant, or 0. */
static uint64_t captured_fs_base(const Tracee *tr)
{
        const ImageThread *it = &tr->saved;

        if (!tr->at_instant || it->n_regsets == 0 || it->regsets[0].type != NT_PRSTATUS ||
            it->regsets[0].size < sizeof(struct user_regs_struct))
                return 0;
        return ((const struct user_regs_struct *)it->regsets[0].data)->fs_base;
}

#define TID_BATCH 64

/* Reads the tid words of who[0, n) at addr[i] in one process_vm_readv(); those it could not read, one
 * at a time as before. */
static void read_tid_batch(Target *t, Tracee **who, const uint64_t *addr, size_t n)
{
        struct iovec local[TID_BATCH] = {}, remote[TID_BATCH] = {};
        int32_t words[TID_BATCH];
        ssize_t got;

        for (size_t i = 0; i < n; i++) {
                local[i] = (struct iovec){ .iov_base = &words[i], .iov_len = sizeof(words[i]) };
                remote[i] = (struct iovec){ .iov_base = (void *)(uintptr_t)addr[i], .iov_len = sizeof(words[i]) };
        }
        got = process_vm_readv(t->pid, local, n, remote, n, 0);
        for (size_t i = 0; i < n; i++) {
                if (got >= 0 && (size_t)got >= (i + 1) * sizeof(words[i])) {
                        if (words[i] == who[i]->tid)
                                who[i]->clear_child_tid = addr[i];
                } else /* process_vm_readv() stopped at the first word it could not read */
                        (void)tracee_read_tid_address(t, who[i]);
        }
}

/*
 * The freeze, after target_capture_threads(): where each stopped thread's tid word is, from the fs_base
 * it captured, the words read in batches (a PTRACE_GETREGS and a read per thread took ~6 us each).
 */
int target_read_tid_addresses(Target *t)
{
        int64_t off = tid_offset();
        Tracee *who[TID_BATCH];
        uint64_t addr[TID_BATCH];
        size_t n = 0;

        for (size_t i = 0; i < t->n_threads; i++) {
                Tracee *tr = &t->threads[i];
                uint64_t fs;

                if (tr->clear_child_tid ||
                    (tr->state != TRACEE_STOPPED && tr->state != TRACEE_GROUPSTOP && tr->state != TRACEE_EXITING))
                        continue;
                fs = off >= 0 ? captured_fs_base(tr) : 0;
                if (fs == 0) {
                        (void)tracee_read_tid_address(t, tr);
                        continue;
                }
                who[n] = tr;
                addr[n++] = fs + (uint64_t)off;
                if (n == TID_BATCH) {
                        read_tid_batch(t, who, addr, n);
                        n = 0;
                }
        }
        if (n > 0)
                read_tid_batch(t, who, addr, n);
        return 0;
}

/* After the freeze: the name of each thread captured at the instant (its status, read in the freeze,
 * took 15 us a thread). A thread gone since keeps an empty name. */
void target_read_thread_names(Target *t)
{
        for (size_t i = 0; i < t->n_threads; i++) {
                Tracee *tr = &t->threads[i];
                _cleanup_free_ char *name = NULL;
                char path[64];
                size_t k;

                if (!tr->at_instant)
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)t->pid, (int)tr->tid);
                if (read_full_file(path, &name, NULL) < 0)
                        continue;
                k = MIN(strcspn(name, "\n"), sizeof(tr->saved.comm) - 1);
                memcpy(tr->saved.comm, name, k);
                tr->saved.comm[k] = 0;
        }
}

int tracee_resume(Target *t, Tracee *tr)
{
        int sig = tr->pending_signal;

        switch (tr->state) {
        case TRACEE_GROUPSTOP:
                tr->state = TRACEE_RUNNING;
                if (ptrace(PTRACE_LISTEN, tr->tid, NULL, NULL) < 0 && errno != ESRCH)
                        return -errno;
                return 0;
        case TRACEE_STOPPED:
        case TRACEE_EXITING:
                tr->pending_signal = 0;
                tr->state = tr->state == TRACEE_EXITING ? TRACEE_GONE : TRACEE_RUNNING;
                if (ptrace(PTRACE_CONT, tr->tid, NULL, (void *)(uintptr_t)sig) < 0 && errno != ESRCH)
                        return -errno;
                return 0;
        default:
                return 0;
        }
}

int target_resume_all(Target *t)
{
        int r = 0;

        for (size_t i = 0; i < t->n_threads; i++) {
                Tracee *tr = &t->threads[i];

                if (tr->state == TRACEE_EXITING)
                        continue; /* the supervisor releases exiting threads after saving their pages */
                int k = tracee_resume(t, tr);
                if (k < 0 && r == 0)
                        r = k;
        }
        return r;
}

Target *target_free(Target *t)
{
        if (!t)
                return NULL;

        for (size_t i = 0; i < t->n_threads; i++) {
                Tracee *tr = &t->threads[i];

                if (tr->state != TRACEE_GONE) {
                        /* PTRACE_DETACH needs a stopped tracee; interrupt, wait, detach with its signal. */
                        if (ptrace(PTRACE_DETACH, tr->tid, NULL, (void *)(uintptr_t)tr->pending_signal) < 0 &&
                            errno == ESRCH && !tr->unstoppable) {
                                int status;

                                /* One that does not stop in time (see STOP_TIMEOUT_MS), or did not before,
                                 * stays traced until this process exits, which lets it go. */
                                uint64_t deadline = now_usec() + STOP_TIMEOUT_MS * 1000ULL;

                                if (ptrace(PTRACE_INTERRUPT, tr->tid, NULL, NULL) == 0) {
                                        for (;;) {
                                                pid_t w = wait_tracee(tr->tid, &status, deadline);
                                                if (w <= 0 || WIFEXITED(status) || WIFSIGNALED(status))
                                                        break;
                                                int sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0;
                                                if (sig == 0)
                                                        sig = tr->pending_signal;
                                                if (ptrace(PTRACE_DETACH, tr->tid, NULL, (void *)(uintptr_t)sig) ==
                                                            0 ||
                                                    errno != ESRCH)
                                                        break;
                                        }
                                }
                        }
                }
                image_thread_done(&tr->saved);
        }

        free(t->threads);
        free(t->regset_buf);
        safe_close(t->pidfd);
        safe_close(t->mem_fd);
        free(t);
        return NULL;
}

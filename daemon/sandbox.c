/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * How livesnapd confines itself.
 *
 * livesnapd is three kinds of process. The bus-facing process parses everything callers send, so it is the
 * one worth attacking; it never touches a target. Right after start-up it forks the spawner, a small loop
 * that forks the job workers and export children on its request (or, under systemd, connects to the spawner
 * of livesnapd-spawner.service, the same loop in a unit of its own: see livesnapd.c), and then it gives up
 * almost everything: it keeps CAP_CHOWN and CAP_FOWNER (store_add() hands a finished image and its record to
 * the user who asked for it) and installs a seccomp allow-list that refuses fork, exec, ptrace, kill, mount,
 * namespaces, module loading, new sockets and everything else it does not name. A caller who took over the
 * bus-facing process can still ask the spawner for what the daemon could always do (a checkpoint of a
 * process, an export of a checkpoint); the spawner checks those requests itself and builds every path from
 * the store directory, so it cannot be made to open anything else. (It still runs as uid 0, so files root
 * owns stay open to it as far as their modes and the unit's ProtectSystem= allow.)
 *
 * The spawner and the workers keep CAP_SYS_PTRACE, CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH and nothing
 * else, and they stay unfiltered on purpose: a worker injects system calls into its target through
 * ptrace with PTRACE_O_SUSPEND_SECCOMP, so that a target's own seccomp filter cannot refuse them, and
 * the kernel grants that option only to a tracer that has CAP_SYS_ADMIN and no seccomp filter of its
 * own (a filter is inherited across fork, so the spawner cannot have one either; nor can a systemd unit
 * the spawner runs in, which is why livesnapd.service, whose options install filters, no longer holds
 * it). They also run the whole engine (threads, userfaultfd, zstd, /proc), whose system calls change
 * with the engine.
 *
 * Capabilities leave the effective, permitted, inheritable and ambient sets, and the bounding set when
 * the process holds CAP_SETPCAP (root outside systemd). Under livesnapd.service it does not:
 * CapabilityBoundingSet= already bounds the service, NoNewPrivileges=yes (set here too) keeps execve()
 * from regaining anything, and the bus-facing process cannot call execve() at all.
 *
 * The filter's default action is EPERM rather than killing the process: a call missing from the list
 * then fails one request with an error that names it, instead of taking every running job down with
 * the daemon. The allow-list is for the steady state only: it is installed after the bus name is
 * taken, so connecting, reading the configuration and opening the store are not in it.
 */

#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "sandbox.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cap_t, cap_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release);

static bool cap_in(cap_value_t c, const cap_value_t *set, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (set[i] == c)
                        return true;
        return false;
}

/* Keeps exactly keep[] (those of them the process holds) and drops the rest. */
static int drop_capabilities(const cap_value_t *keep, size_t n_keep)
{
        _cleanup_(cap_freep) cap_t cur = NULL, want = NULL;
        cap_flag_value_t setpcap = CAP_CLEAR;

        cur = cap_get_proc();
        if (!cur)
                return negative_errno();
        if (cap_get_flag(cur, CAP_SETPCAP, CAP_PERMITTED, &setpcap) < 0)
                return negative_errno();

        if (setpcap == CAP_SET) {
                cap_value_t v = CAP_SETPCAP;

                /* PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set. */
                if (cap_set_flag(cur, CAP_EFFECTIVE, 1, &v, CAP_SET) < 0 || cap_set_proc(cur) < 0)
                        return negative_errno();
                for (cap_value_t c = 0; c < (cap_value_t)cap_max_bits(); c++) {
                        if (cap_in(c, keep, n_keep) || !CAP_IS_SUPPORTED(c))
                                continue;
                        if (cap_drop_bound(c) < 0 && errno != EINVAL)
                                return negative_errno();
                }
        }

        want = cap_init();
        if (!want)
                return negative_errno();
        for (size_t i = 0; i < n_keep; i++) {
                cap_flag_value_t have = CAP_CLEAR;

                if (cap_get_flag(cur, keep[i], CAP_PERMITTED, &have) < 0)
                        return negative_errno();
                if (have != CAP_SET)
                        continue;
                if (cap_set_flag(want, CAP_EFFECTIVE, 1, &keep[i], CAP_SET) < 0 ||
                    cap_set_flag(want, CAP_PERMITTED, 1, &keep[i], CAP_SET) < 0)
                        return negative_errno();
        }
        if (cap_set_proc(want) < 0)
                return negative_errno();
        /* Nothing kept may come back through the ambient set either (a kernel without it says EINVAL). */
        if (cap_reset_ambient() < 0 && errno != EINVAL)
                return negative_errno();
        return 0;
}

int sandbox_enter_spawner(void)
{
        static const cap_value_t keep[] = { CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH };
        int r;

        r = drop_capabilities(keep, ELEMENTSOF(keep));
        if (r < 0)
                return r;
        /* Nothing here executes a program; should anything ever, it gains nothing by it. */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return negative_errno();
        return 0;
}

int sandbox_enter_exporter(void)
{
        static const cap_value_t keep[] = { CAP_DAC_READ_SEARCH };

        return drop_capabilities(keep, ELEMENTSOF(keep));
}

/*
 * What the bus-facing process does once it serves: sd-event and sd-bus (epoll, timers, signals, messages
 * with file descriptors on the bus socket and the spawner's), the store (files in one directory), /proc
 * reads about callers and targets, pidfds of targets and workers, and malloc. Taken from the bus test run
 * with the bus-facing process under strace, plus the calls of paths it does not take (retention,
 * timeouts). Old spellings (rename, chown, ...) are there because glibc still uses them where the kernel
 * has them. Signals go to workers through their pidfds only: kill() is not on the list.
 */
static const char *const bus_syscalls[] = {
        /* memory (malloc, json-c, sd-bus) */
        "brk", "mmap", "munmap", "mremap", "madvise", "mprotect",
        /* the event loop: epoll, timer and signal fds; the clock when the vDSO cannot serve it */
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "poll", "ppoll",
        "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd4", "signalfd",
        "clock_gettime", "clock_getres", "gettimeofday",
        "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "restart_syscall",
        /* messages: the bus socket and the spawner's socketpair, fds passed both ways */
        "sendmsg", "recvmsg", "getsockopt",
        /* file descriptors: progress pipes handed to workers, stderr */
        "read", "write", "writev", "close", "fcntl", "pipe2", "pipe",
        /* the store and /proc: files in one directory, /proc/PID/status and stat of /proc/PID */
        "openat", "newfstatat", "fstat", "statx", "getdents64", "lseek",
        "unlinkat", "unlink", "renameat", "renameat2", "rename",
        "fchown", "chown", "fchownat", "fchmod", "chmod", "fchmodat", "fsync", "fdatasync",
        /* targets and workers: pidfds; the spawner reaped at exit; store ids */
        "pidfd_open", "pidfd_send_signal", "wait4", "waitid", "getrandom",
        /* identity (sd-bus) and the rest of libc */
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "futex", "exit", "exit_group",
};

int sandbox_enter_bus(void)
{
        static const cap_value_t keep[] = { CAP_CHOWN, CAP_FOWNER };
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        int r;

        r = drop_capabilities(keep, ELEMENTSOF(keep));
        if (r < 0)
                return r;

        /* Without CAP_SYS_ADMIN the kernel wants no_new_privs before a filter; libseccomp sets it too. */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return negative_errno();

        ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
        if (!ctx)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(bus_syscalls); i++) {
                int nr = seccomp_syscall_resolve_name(bus_syscalls[i]);

                if (nr == __NR_SCMP_ERROR)
                        continue; /* not a system call on this architecture */
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
                if (r < 0 && r != -EDOM)
                        return r;
        }
        return seccomp_load(ctx);
}

static bool probe_refused(FILE *out, const char *what, long r)
{
        int e = r < 0 ? errno : 0;

        fprintf(out, "%-28s %s%s\n", what, r < 0 ? "refused: " : "allowed", r < 0 ? strerror(e) : "");
        return r < 0 && e == EPERM;
}

int sandbox_probe(FILE *out)
{
        bool ok = true;
        pid_t pid;
        long r;

        assert(out);

        pid = fork();
        if (pid == 0)
                _exit(0);
        if (pid > 0)
                (void)waitpid(pid, NULL, 0);
        ok = probe_refused(out, "fork()", pid) && ok;

        /* Without the filter: ENOENT. */
        r = execve("/nonexistent/livesnapd-probe", (char *[]){ NULL }, (char *[]){ NULL });
        ok = probe_refused(out, "execve()", r) && ok;

        /* Without the filter: ESRCH (PID 0 is not traced by anyone). */
        r = ptrace(PTRACE_PEEKDATA, 0, NULL, NULL);
        ok = probe_refused(out, "ptrace(PTRACE_PEEKDATA)", r) && ok;

        /* Without the filter: a socket. */
        r = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (r >= 0)
                safe_close((int)r);
        ok = probe_refused(out, "socket(AF_INET)", r) && ok;

        /* Without the filter: success, changing nothing. */
        r = unshare(0);
        ok = probe_refused(out, "unshare(0)", r) && ok;

        r = getppid();
        fprintf(out, "%-28s %s\n", "getppid()", r > 0 ? "allowed" : "refused");
        ok = r > 0 && ok;

        /* What the kernel says of this process, as it would of the daemon's bus-facing process. */
        {
                _cleanup_free_ char *status = NULL;
                char *save = NULL;

                if (read_full_file("/proc/self/status", &status, NULL) >= 0)
                        for (char *line = strtok_r(status, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                                if (startswith(line, "Seccomp") || startswith(line, "Cap") ||
                                    startswith(line, "NoNewPrivs"))
                                        fprintf(out, "%s\n", line);
        }

        fflush(out);
        return ok ? 0 : -EBADE;
}

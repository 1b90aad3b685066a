/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-tracer DIR PID: a helper, not a victim. Attaches to PID with PTRACE_SEIZE (which does not
 * stop it), touches DIR/ready and stays attached until killed, so that a test can check that livesnap
 * refuses a target that is already traced (as under strace or gdb) and leaves it alone.
 *
 * A well-behaved tracer: signal-delivery stops are resumed with the signal, group stops with
 * PTRACE_LISTEN, so the tracee runs as if untraced.
 */
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "victim.h"

int main(int argc, char *argv[])
{
        int i = victim_parse_args(argc, argv);
        pid_t pid;

        if (victim_check_mode || i >= argc)
                usage_exit();
        pid = (pid_t)atoi(argv[i]);
        victim_init_run();
        if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0)
                victim_fail("PTRACE_SEIZE %d: %m", (int)pid);
        victim_ready();

        for (;;) {
                int status, sig;
                pid_t w = waitpid(pid, &status, __WALL);

                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ECHILD) /* the tracee is gone */
                                for (;;)
                                        pause();
                        victim_fail("waitpid: %m");
                }
                if (WIFEXITED(status) || WIFSIGNALED(status))
                        continue;
                if (!WIFSTOPPED(status))
                        continue;
                sig = WSTOPSIG(status);
                if (status >> 16 == PTRACE_EVENT_STOP) {
                        if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
                                /* group stop: stay stopped, but be told of SIGCONT */
                                ptrace(PTRACE_LISTEN, w, NULL, NULL);
                        else
                                /* the end of a group stop, or an interrupt */
                                ptrace(PTRACE_CONT, w, NULL, NULL);
                        continue;
                }
                ptrace(PTRACE_CONT, w, NULL, (void *)(uintptr_t)sig);
        }
}

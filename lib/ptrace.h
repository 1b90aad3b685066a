/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Seizing a process's threads with ptrace, holding them stopped, and running syscalls inside it.
 *
 * ptrace is per tracer thread: every function here must be called from the thread that called
 * target_attach(). The engine keeps that thread as its "supervisor" for the whole snapshot.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include "image.h"

typedef enum TraceeState {
        TRACEE_RUNNING,   /* seized, not in a ptrace stop we know of */
        TRACEE_STOPPED,   /* in a ptrace stop (interrupt, signal-delivery, event) */
        TRACEE_GROUPSTOP, /* in a group-stop: resumed with PTRACE_LISTEN, not CONT */
        TRACEE_EXITING,   /* in PTRACE_EVENT_EXIT stop */
        TRACEE_GONE,      /* reaped */
} TraceeState;

typedef struct Tracee {
        pid_t tid;
        TraceeState state;
        int pending_signal;        /* to deliver when resumed */
        bool at_instant;           /* existed (and was stopped) at the snapshot instant */
        bool unstoppable;          /* interrupted, did not stop in time: not waited for again */
        uint64_t clear_child_tid;  /* address the kernel clears at thread exit, 0 if unknown */
        ImageThread saved;         /* registers at the instant (at_instant only) */
} Tracee;

typedef struct Target {
        pid_t pid;
        int pidfd;  /* -EBADF where pidfd_open() does not exist (ENOSYS: valgrind) */
        int mem_fd; /* /proc/PID/mem, opened at attach */
        Tracee *threads;
        size_t n_threads, n_allocated;
        bool suspend_seccomp;   /* target has a filter; we may suspend it around injections */
        bool no_clone_events;   /* seized without PTRACE_O_TRACECLONE (the injector) */
        uint64_t syscall_gadget; /* address of a "syscall" instruction in the target */
        bool execed, exited;     /* seen PTRACE_EVENT_EXEC / the whole group exited */
        void *regset_buf;        /* XSTATE_MAX bytes, touched at attach: no page faults in the freeze */
} Target;

/* The refusals (itself, kernel thread, zombie, thread id, already traced, no such process). */
struct ProcStatus;
int target_check(pid_t pid, struct ProcStatus *st, char *err, size_t errlen);

/* Seizes and stops the main thread only: for the short-lived injector process. */
int target_attach_main(pid_t pid, Target **ret, char *err, size_t errlen);

/* Refusal checks, pidfd, and PTRACE_SEIZE of every thread (not yet stopped). err gets a message. */
int target_attach(pid_t pid, Target **ret, char *err, size_t errlen);

/* PTRACE_INTERRUPT every thread and wait until all are stopped, catching threads created meanwhile. */
int target_stop_all(Target *t, char *err, size_t errlen);

/* Captures registers (general, FP, xstate, siginfo) and signal masks of every stopped thread; the
 * names are read after the freeze (target_read_thread_names()). */
int target_capture_threads(Target *t);

/* Runs syscall nr with args inside stopped thread tid; the thread's registers are restored after. */
int target_inject_syscall(Target *t, pid_t tid, long nr, const uint64_t args[6], int64_t *ret_result);

/* Finds the address each stopped thread's kernel will clear at exit (glibc threads; see ptrace.c). */
int target_read_tid_addresses(Target *t);
void target_read_thread_names(Target *t);
/* The same for one thread in a ptrace stop (an exit stop included). Returns 0, or a negative errno
 * (-EOPNOTSUPP: not glibc; -ENOENT: the word there is not the thread's tid). */
int tracee_read_tid_address(Target *t, Tracee *tr);

/* Resumes every stopped thread (re-delivering signals they were stopped with). */
int target_resume_all(Target *t);

/* Handles one wait status for tid during the copy phase. Returns the Tracee or NULL if unknown. */
Tracee *target_find(Target *t, pid_t tid);
Tracee *target_add(Target *t, pid_t tid);

/* Resume one stopped tracee appropriately for its state. */
int tracee_resume(Target *t, Tracee *tr);

/* Detaches every thread (they keep running), closes fds, frees. Safe on half-built targets. */
Target *target_free(Target *t);

/* Writes target memory (process_vm_writev); used only before protection, for injection scratch. */
int target_write_memory(Target *t, uint64_t addr, const void *buf, size_t len);

/* Reads target memory at the snapshot's mm: process_vm_readv, falling back to /proc/PID/mem. */
int target_read_memory(Target *t, uint64_t addr, void *buf, size_t len);

/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Parsers for the /proc files the engine reads. Each parser has a variant that takes the file's text,
 * so the unit tests (tests/test-procfs.c) feed it samples, and one that reads /proc/PID/... itself.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ProcMap {
        uint64_t start, end; /* [start, end) */
        uint64_t offset;
        uint32_t prot;        /* PROT_READ | PROT_WRITE | PROT_EXEC */
        bool shared;          /* 's' in the fourth column */
        uint32_t dev_major, dev_minor;
        uint64_t inode;
        char *name; /* the path or pseudo-name, or NULL for anonymous; "(deleted)" suffix kept */
} ProcMap;

/* Parses the text of /proc/PID/maps. Returns -EBADMSG on a malformed line. */
int proc_maps_parse(const char *text, ProcMap **ret, size_t *ret_n);
int proc_maps_read(pid_t pid, ProcMap **ret, size_t *ret_n);
void proc_maps_free(ProcMap *maps, size_t n);

typedef struct ProcStatus {
        char name[16];  /* Name: */
        char state;     /* first letter of State: (R, S, D, T, t, Z, X, I) */
        pid_t tgid;     /* Tgid: */
        pid_t tracer;   /* TracerPid: */
        uid_t uid[4];   /* Uid: real, effective, saved, fs */
        int seccomp;    /* Seccomp: 0 none, 1 strict, 2 filter; -1 if absent */
        uint64_t sigpnd, shdpnd, sigblk; /* SigPnd:, ShdPnd:, SigBlk: */
        bool kthread;   /* Kthread: 1 (newer kernels) or derived from flags by proc_is_kthread() */
} ProcStatus;

/* Parses /proc/PID/status or /proc/PID/task/TID/status text. Missing optional fields keep defaults
 * (seccomp -1, tracer 0). Returns -EBADMSG if Name/State/Tgid are missing. */
int proc_status_parse(const char *text, ProcStatus *ret);
int proc_status_read(pid_t pid, pid_t tid, ProcStatus *ret); /* tid <= 0: the process's status */

/* True if pid is a kernel thread (PF_KTHREAD in /proc/PID/stat's flags field, robust against ')' in
 * comm). Returns 1, 0, or a negative errno. */
int proc_stat_flags_parse(const char *text, unsigned long *ret_flags);
/* Field 39 of /proc/PID/task/TID/stat: the CPU the thread last ran on. */
int proc_stat_cpu_parse(const char *text, unsigned *ret_cpu);
int proc_stat_cpu_read(pid_t pid, pid_t tid, unsigned *ret_cpu);
int proc_is_kthread(pid_t pid);

/* True if thread tid of pid is exiting (PF_EXITING) or gone. Returns 1, 0, or a negative errno. */
int proc_thread_exiting(pid_t pid, pid_t tid);

/* Lists the thread ids under /proc/PID/task, sorted ascending. */
int proc_task_list(pid_t pid, pid_t **ret, size_t *ret_n);

/* Reads NUL-separated /proc/PID/cmdline into a NULL-terminated argv (one allocation each). */
int proc_cmdline_read(pid_t pid, char ***ret_argv);
void strv_free(char **argv);

/* readlink of /proc/PID/exe; -ENOENT for kernel threads. */
int proc_exe_read(pid_t pid, char **ret);

/* Parses /proc/PID/task/TID/syscall text: "28 0x7f.. 0x1000 0x4 ..." into nr and up to 6 args.
 * Returns -EAGAIN for "running", -ENODATA for "-1 ..." (not in a syscall). */
int proc_syscall_parse(const char *text, long *ret_nr, uint64_t ret_args[6]);
int proc_syscall_read(pid_t pid, pid_t tid, long *ret_nr, uint64_t ret_args[6]);

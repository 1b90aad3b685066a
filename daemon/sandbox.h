/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * livesnapd's hardening of itself: which capabilities each of its processes keeps, and the system call
 * allow-list of the bus-facing process. See the top of sandbox.c for the process split and why the
 * spawner and the workers stay unfiltered.
 */

#include <stdbool.h>
#include <stdio.h>

/* Capabilities of the spawner and so of every worker it forks: ptrace (CAP_SYS_PTRACE), suspending a
 * target's seccomp filter and reading /proc/PID/map_files (CAP_SYS_ADMIN), and reading other users'
 * /proc/PID/mem, pagemap and checkpoint images (CAP_DAC_READ_SEARCH). Drops every other one from the
 * effective, permitted, inheritable, ambient and (when allowed to) bounding sets, and sets no_new_privs.
 * Installs no seccomp filter: see sandbox.c. */
int sandbox_enter_spawner(void);

/* Capabilities of an export child: reading a checkpoint image owned by another user. */
int sandbox_enter_exporter(void);

/* The bus-facing process, once initialised: keeps only CAP_CHOWN and CAP_FOWNER (filing a checkpoint
 * under its owner), sets no_new_privs, and installs the system call allow-list; anything else fails
 * with EPERM. Must be called before any thread exists (the filter covers the calling thread only). */
int sandbox_enter_bus(void);

/* Tries system calls the bus-facing process's allow-list leaves out (fork, ptrace, mount, an AF_INET
 * socket, execve) and one it allows (getppid), writing one line per try to out. Returns 0 if every call
 * left out was refused with EPERM and the allowed one worked, -EBADE otherwise. For
 * `livesnapd --check-sandbox`, after sandbox_enter_bus(). */
int sandbox_probe(FILE *out);

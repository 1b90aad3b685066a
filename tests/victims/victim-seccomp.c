/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-seccomp: a process whose seccomp filter kills it if it ever calls userfaultfd().
 *
 * systemd's SystemCallFilter= and container runtimes install such filters. A checkpointer that
 * injects userfaultfd() into the target must suspend the filter first (PTRACE_O_SUSPEND_SECCOMP needs
 * CAP_SYS_ADMIN), or refuse: trying anyway kills the target. The filter is raw BPF (no libseccomp):
 * SECCOMP_RET_KILL_PROCESS for userfaultfd on x86_64, SECCOMP_RET_ALLOW for everything else.
 *
 * After installing the filter it fills a 16 MiB region with a known pattern and runs a heartbeat
 * (the progress counter) that also rewrites a small "beat" array, so the target writes during a dump.
 *
 * --check DIR: the pattern region holds its pattern, the filter was installed, beats consistent.
 */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>

#include "victim.h"

#define REGION_SIZE (16 * MIB)
#define NBEAT       512

typedef struct Control {
        uint64_t beats; /* the "progress" counter */
        uint64_t filter_installed;
        uint64_t beat[NBEAT]; /* beat[i] == beats for i < beats % NBEAT ... see check() */
} Control;

#define CONTROL_SIZE ((sizeof(Control) + VICTIM_PAGE_SIZE - 1) & ~(VICTIM_PAGE_SIZE - 1))

static Control *ctl;

static void install_filter(void)
{
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 323 /* __NR_userfaultfd */, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};

        VCHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
        VCHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
}

static void *heartbeat(void *arg)
{
        volatile Control *c = ctl;

        for (;;) {
                uint64_t b = c->beats + 1;
                c->beat[b % NBEAT] = b;
                barrier();
                c->beats = b;
                sleep_us(1000);
        }
        return NULL;
}

static _Noreturn void run(void)
{
        pthread_t th;
        char *region;

        victim_init_run();
        install_filter();
        ctl = map_anon(CONTROL_SIZE, PROT_READ | PROT_WRITE, 0);
        ctl->filter_installed = 1;
        region = map_anon(REGION_SIZE, PROT_READ | PROT_WRITE, 0);
        fill_pattern(region, REGION_SIZE);

        VCHECK(pthread_create(&th, NULL, heartbeat, NULL) == 0);
        layout_add("control", ctl, CONTROL_SIZE);
        layout_add("progress", &ctl->beats, sizeof(ctl->beats));
        layout_add("region", region, REGION_SIZE);
        victim_ready();
        /* The main thread writes too: every page of the region, with the same values. */
        for (;;) {
                for (size_t off = 0; off < REGION_SIZE; off += VICTIM_PAGE_SIZE) {
                        uint64_t *w = (uint64_t *)(region + off);
                        *(volatile uint64_t *)w = pattern_word((uint64_t)(uintptr_t)w);
                }
                sleep_us(10000);
        }
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        void *region;
        ssize_t bad;

        layout_load();
        c = bin_load("control", &e, false);
        if (!c->filter_installed)
                check_fail("control: filter_installed=0");
        if (c->beats == 0)
                check_fail("control: no heartbeat before the instant");
        /* The last NBEAT beats are in the ring: beat[b % NBEAT] == b for b in (beats - NBEAT, beats]. */
        for (uint64_t b = c->beats > NBEAT ? c->beats - NBEAT + 1 : 1; b <= c->beats; b++)
                if (c->beat[b % NBEAT] != b)
                        check_fail("control: beat[%" PRIu64 "] = %" PRIu64 ", expected %" PRIu64
                                   " (beats=%" PRIu64 ")",
                                   b % NBEAT, c->beat[b % NBEAT], b, c->beats);
        region = bin_load("region", &e, false);
        bad = pattern_mismatch(region, e->addr, e->len);
        if (bad >= 0)
                check_fail("region: word at 0x%" PRIx64 " is 0x%" PRIx64 ", expected 0x%" PRIx64,
                           e->addr + 8 * (uint64_t)bad, ((uint64_t *)region)[bad],
                           pattern_word(e->addr + 8 * (uint64_t)bad));
        printf("region ok, beats=%" PRIu64 "\n", c->beats);
        free(c);
        free(region);
        return 0;
}

int main(int argc, char *argv[])
{
        victim_parse_args(argc, argv);
        if (victim_check_mode)
                return check();
        run();
}

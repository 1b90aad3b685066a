/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A target that execs or exits on request, to be checkpointed while it does: 256 MiB of ballast so a
 * rate-limited dump lasts seconds; SIGUSR1 makes it execve("/bin/sleep", "1000"), SIGUSR2 makes it
 * exit(0). The dump must fail clearly and leave no image; after an exec the new program must run free.
 */

#include "victim.h"

static volatile sig_atomic_t what;

static void on_signal(int sig)
{
        what = sig;
}

int main(int argc, char *argv[])
{
        size_t size = 256 * MIB;
        uint8_t *ballast;

        victim_parse_args(argc, argv);
        if (victim_check_mode)
                return 0;
        victim_init_run();

        ballast = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ballast == MAP_FAILED)
                victim_fail("mmap: %m");
        for (size_t i = 0; i < size; i += VICTIM_PAGE_SIZE)
                ballast[i] = (uint8_t)(i / VICTIM_PAGE_SIZE + 1);
        signal(SIGUSR1, on_signal);
        signal(SIGUSR2, on_signal);
        layout_add("ballast", ballast, size);
        victim_ready();

        for (;;) {
                pause();
                if (what == SIGUSR1) {
                        execl("/bin/sleep", "sleep", "1000", (char *)NULL);
                        victim_fail("execl: %m");
                }
                if (what == SIGUSR2)
                        exit(0);
        }
}

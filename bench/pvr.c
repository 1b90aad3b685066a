/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * bench/pvr: how fast process_vm_readv reads another process's memory.
 *
 *   pvr PID ADDR LEN [CHUNK_KIB]
 *
 * Reads LEN bytes at ADDR (hex) of process PID, CHUNK_KIB (default 1024) at a time, into one reused buffer,
 * and prints "bytes=N seconds=S mb_per_s=R" (MB = 10^6 bytes).
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char *argv[])
{
        size_t len, chunk = 1024 * 1024, done = 0;
        uintptr_t addr;
        double t0, t1;
        pid_t pid;
        char *buf;

        if (argc < 4 || argc > 5) {
                fprintf(stderr, "usage: %s PID ADDR LEN [CHUNK_KIB]\n", argv[0]);
                return 2;
        }
        pid = (pid_t)strtol(argv[1], NULL, 10);
        addr = (uintptr_t)strtoull(argv[2], NULL, 16);
        len = (size_t)strtoull(argv[3], NULL, 10);
        if (argc == 5)
                chunk = (size_t)strtoull(argv[4], NULL, 10) * 1024;
        if (chunk == 0) {
                fprintf(stderr, "bad chunk size\n");
                return 2;
        }
        buf = malloc(chunk);
        if (!buf)
                return 1;
        memset(buf, 0, chunk); /* fault the buffer in before timing */

        t0 = now_s();
        while (done < len) {
                size_t n = len - done < chunk ? len - done : chunk;
                struct iovec local = { .iov_base = buf, .iov_len = n };
                struct iovec remote = { .iov_base = (void *)(addr + done), .iov_len = n };
                ssize_t r = process_vm_readv(pid, &local, 1, &remote, 1, 0);

                if (r <= 0) {
                        fprintf(stderr, "process_vm_readv at 0x%lx: %s\n", (unsigned long)(addr + done),
                                r < 0 ? strerror(errno) : "short read");
                        return 1;
                }
                done += (size_t)r;
        }
        t1 = now_s();
        printf("bytes=%zu seconds=%.4f mb_per_s=%.0f\n", done, t1 - t0, (double)done / (t1 - t0) / 1e6);
        return 0;
}

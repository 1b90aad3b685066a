/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * bench/target: the process the benchmarks snapshot.
 *
 *   target SIZE_MIB 4k|thp
 *
 * Maps SIZE_MIB MiB of private anonymous memory, as 4 KiB pages (MADV_NOHUGEPAGE) or as transparent huge
 * pages (2 MiB aligned, MADV_HUGEPAGE), fills every page with non-zero bytes, then prints one line
 *
 *   ready pid=PID addr=0xADDR len=BYTES anon_huge_kib=KIB
 *
 * and serves commands, one per line on stdin, each answered by one line on stdout:
 *
 *   load idle                  the load thread sleeps (the default)                 -> ok
 *   load write PAGES_PER_MS    the load thread writes one word per page, sweeping the region over and
 *                              over, PAGES_PER_MS pages then a 1 ms sleep           -> ok
 *   fork N                     fork() N times from this (main) thread; the child _exit(0)s at once; the
 *                              parent times each fork() call                         -> fork US US ...
 *   lat STRIDE_KIB GAP_US FILE arms the latency probe: starts a thread that waits for latgo, then writes one
 *                              word at the start of every STRIDE_KIB KiB of the region, from the top down,
 *                              one write every GAP_US microseconds, timing each write with
 *                              CLOCK_MONOTONIC                                       -> ok
 *   latgo                      starts the armed probe's writes                       -> ok
 *   latwait                    waits for the probe to finish, writes one line per write to FILE:
 *                              "START_US LATENCY_NS", START_US counted from latgo    -> done N go=REALTIME
 *   quit                       exits                                                 -> bye
 *
 * Writes by the load thread and the probe never change the "non-zero" property of the memory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HPAGE (2UL << 20)

static uint8_t *region;
static size_t region_len;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long load_pages_per_ms; /* 0: idle */
static atomic_bool quitting;

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
        struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL), .tv_nsec = (long)(ns % 1000000000ULL) };

        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
                ;
}

static void *load_thread(void *arg)
{
        size_t npages = region_len / PAGE, i = 0;
        uint64_t gen = 1;

        (void)arg;
        prctl(PR_SET_NAME, "bench-load");
        for (;;) {
                long n;

                pthread_mutex_lock(&lock);
                while (load_pages_per_ms == 0 && !atomic_load(&quitting))
                        pthread_cond_wait(&cond, &lock);
                n = load_pages_per_ms;
                pthread_mutex_unlock(&lock);
                if (atomic_load(&quitting))
                        return NULL;

                for (long k = 0; k < n; k++) {
                        /* Second word of the page: the probe uses the first. Never zero. */
                        ((volatile uint64_t *)(region + i * PAGE))[1] = gen | 1;
                        if (++i == npages) {
                                i = 0;
                                gen++;
                        }
                }
                sleep_ns(1000000);
        }
}

/* ---- latency probe ---- */

static struct {
        pthread_t thread;
        bool running;
        bool go;
        size_t stride;
        uint64_t gap_ns;
        char file[4096];
        uint32_t *lat; /* ns, saturated */
        uint64_t *at;  /* ns since go */
        struct timespec go_real;
        size_t n;
} probe;

static void *probe_thread(void *arg)
{
        size_t count = region_len / probe.stride;

        (void)arg;
        prctl(PR_SET_NAME, "bench-probe");
        /* Touch our own records first, so no fault on them lands between two timed writes. */
        memset(probe.lat, 0xff, count * sizeof(uint32_t));
        memset(probe.at, 0xff, count * sizeof(uint64_t));
        pthread_mutex_lock(&lock);
        while (!probe.go)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        clock_gettime(CLOCK_REALTIME, &probe.go_real);
        uint64_t start = now_ns();
        for (size_t k = 0; k < count; k++) {
                volatile uint64_t *p = (volatile uint64_t *)(region + region_len - (k + 1) * probe.stride);
                uint64_t t0, t1;

                t0 = now_ns();
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                *p = k + 1;
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                t1 = now_ns();
                probe.lat[k] = (t1 - t0) > UINT32_MAX ? UINT32_MAX : (uint32_t)(t1 - t0);
                probe.at[k] = t0 - start;
                probe.n = k + 1;
                sleep_ns(probe.gap_ns);
        }
        return NULL;
}

static int probe_start(size_t stride_kib, uint64_t gap_us, const char *file)
{
        if (probe.running || stride_kib == 0 || stride_kib * 1024 > region_len || stride_kib % 4)
                return -EINVAL;
        probe.stride = stride_kib * 1024;
        probe.gap_ns = gap_us * 1000;
        snprintf(probe.file, sizeof(probe.file), "%s", file);
        free(probe.lat);
        free(probe.at);
        probe.lat = malloc((region_len / probe.stride) * sizeof(uint32_t));
        probe.at = malloc((region_len / probe.stride) * sizeof(uint64_t));
        if (!probe.lat || !probe.at)
                return -ENOMEM;
        probe.n = 0;
        probe.go = false;
        if (pthread_create(&probe.thread, NULL, probe_thread, NULL) != 0)
                return -EAGAIN;
        probe.running = true;
        return 0;
}

static long probe_wait(void)
{
        FILE *f;

        if (!probe.running)
                return -EINVAL;
        pthread_mutex_lock(&lock);
        probe.go = true; /* latwait without latgo: run it now */
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        pthread_join(probe.thread, NULL);
        probe.running = false;
        f = fopen(probe.file, "we");
        if (!f)
                return -errno;
        for (size_t k = 0; k < probe.n; k++)
                fprintf(f, "%" PRIu64 " %" PRIu32 "\n", probe.at[k] / 1000, probe.lat[k]);
        if (fclose(f) != 0)
                return -errno;
        return (long)probe.n;
}

/* ---- setup ---- */

static long anon_huge_kib(void)
{
        FILE *f = fopen("/proc/self/smaps", "re");
        char line[512];
        bool in = false;
        long kib = -1;

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f)) {
                unsigned long start, end;

                if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
                        in = start <= (unsigned long)region && (unsigned long)region < end;
                        continue;
                }
                if (in && strncmp(line, "AnonHugePages:", 14) == 0) {
                        long v = strtol(line + 14, NULL, 10);
                        kib = (kib < 0 ? 0 : kib) + v;
                }
        }
        fclose(f);
        return kib;
}

static void do_fork(int n)
{
        char out[8192];
        size_t o = 0;

        o += (size_t)snprintf(out + o, sizeof(out) - o, "fork");
        for (int i = 0; i < n && o < sizeof(out) - 32; i++) {
                uint64_t t0, t1;
                pid_t pid;

                t0 = now_ns();
                pid = fork();
                if (pid == 0)
                        _exit(0);
                t1 = now_ns();
                if (pid < 0) {
                        o += (size_t)snprintf(out + o, sizeof(out) - o, " error:%s", strerror(errno));
                        break;
                }
                waitpid(pid, NULL, 0);
                o += (size_t)snprintf(out + o, sizeof(out) - o, " %.1f", (double)(t1 - t0) / 1000.0);
                usleep(50000); /* let the child's teardown finish before the next one */
        }
        printf("%s\n", out);
}

int main(int argc, char *argv[])
{
        pthread_t load;
        char line[4608];
        bool thp;
        size_t mib;
        uint8_t *map;
        size_t map_len;

        if (argc != 3 || (strcmp(argv[2], "4k") != 0 && strcmp(argv[2], "thp") != 0)) {
                fprintf(stderr, "usage: %s SIZE_MIB 4k|thp\n", argv[0]);
                return 2;
        }
        mib = strtoul(argv[1], NULL, 10);
        thp = strcmp(argv[2], "thp") == 0;
        region_len = mib << 20;
        if (region_len == 0) {
                fprintf(stderr, "bad size\n");
                return 2;
        }

        /* Over-map by 2 MiB so the region can start on a 2 MiB boundary; trim the slack. */
        map_len = region_len + HPAGE;
        map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) {
                perror("mmap");
                return 1;
        }
        region = (uint8_t *)(((uintptr_t)map + HPAGE - 1) & ~(HPAGE - 1));
        if (region > map)
                munmap(map, (size_t)(region - map));
        if (map + map_len > region + region_len)
                munmap(region + region_len, (size_t)(map + map_len - (region + region_len)));

        if (madvise(region, region_len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0) {
                perror("madvise");
                return 1;
        }
        for (size_t off = 0; off < region_len; off += PAGE)
                memset(region + off, (int)(((off / PAGE) % 255) + 1), PAGE);

        if (pthread_create(&load, NULL, load_thread, NULL) != 0) {
                fprintf(stderr, "pthread_create failed\n");
                return 1;
        }

        setvbuf(stdout, NULL, _IOLBF, 0);
        printf("ready pid=%d addr=%p len=%zu anon_huge_kib=%ld\n", getpid(), (void *)region, region_len,
               anon_huge_kib());

        while (fgets(line, sizeof(line), stdin)) {
                char arg[4096];
                long a, b;
                int n;

                if (sscanf(line, "load write %ld", &a) == 1 && a > 0) {
                        pthread_mutex_lock(&lock);
                        load_pages_per_ms = a;
                        pthread_cond_broadcast(&cond);
                        pthread_mutex_unlock(&lock);
                        printf("ok\n");
                } else if (strncmp(line, "load idle", 9) == 0) {
                        pthread_mutex_lock(&lock);
                        load_pages_per_ms = 0;
                        pthread_mutex_unlock(&lock);
                        printf("ok\n");
                } else if (sscanf(line, "fork %d", &n) == 1 && n > 0 && n <= 100) {
                        do_fork(n);
                } else if (sscanf(line, "lat %ld %ld %4095s", &a, &b, arg) == 3 && a > 0 && b >= 0) {
                        int r = probe_start((size_t)a, (uint64_t)b, arg);
                        if (r < 0)
                                printf("error %s\n", strerror(-r));
                        else
                                printf("ok\n");
                } else if (strncmp(line, "latgo", 5) == 0) {
                        pthread_mutex_lock(&lock);
                        probe.go = true;
                        pthread_cond_broadcast(&cond);
                        pthread_mutex_unlock(&lock);
                        printf(probe.running ? "ok\n" : "error not armed\n");
                } else if (strncmp(line, "latwait", 7) == 0) {
                        long r = probe_wait();
                        if (r < 0)
                                printf("error %s\n", strerror((int)-r));
                        else
                                printf("done %ld go=%lld.%09ld\n", r, (long long)probe.go_real.tv_sec,
                                       probe.go_real.tv_nsec);
                } else if (strncmp(line, "huge", 4) == 0) {
                        printf("anon_huge_kib=%ld\n", anon_huge_kib());
                } else if (strncmp(line, "quit", 4) == 0) {
                        break;
                } else {
                        printf("error unknown command\n");
                }
        }

        pthread_mutex_lock(&lock);
        atomic_store(&quitting, true);
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        pthread_join(load, NULL);
        printf("bye\n");
        return 0;
}

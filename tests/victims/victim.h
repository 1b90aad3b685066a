/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Shared helpers for victim programs, in the manner of CRIU's zdtm.
 *
 * A victim is started as `victim-NAME DIR [options]`. It sets its memory up, writes one line per
 * region of interest to DIR/layout ("NAME 0xADDR LEN", LEN in bytes, decimal), touches DIR/ready and
 * runs until killed. The test takes a checkpoint, extracts each region with
 * `livesnap cat IMAGE ADDR LEN > DIR/NAME.bin` and runs `victim-NAME --check DIR`, which checks the
 * invariant the victim's memory carried at the snapshot instant and prints what broke.
 *
 * Conventions shared with tests/lib.sh:
 *   - a layout line named "progress" points at an array of uint64_t counters that the victim's
 *     running threads keep increasing; the test reads them through /proc/PID/mem to see that every
 *     thread still makes progress;
 *   - a victim that detects corruption while running writes the reason to DIR/error and exits 1;
 *   - files are written under a temporary name and renamed, so a test never sees half a file.
 *
 * Memory filled by fill_pattern() holds, in each 8-byte word, a function of the word's own address,
 * so any window of it can be checked on its own without knowing where its region starts.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define VICTIM_PAGE_SIZE 4096UL
#define MIB              (1024UL * 1024UL)

#define barrier() __asm__ __volatile__("" ::: "memory")
/* Every victim uses only some of these helpers. */
#define _unused_ __attribute__((unused))

static const char *victim_name = "victim";
static const char *victim_dir = NULL;
static bool victim_check_mode = false;

static _unused_ void victim_vmsg(const char *prefix, const char *fmt, va_list ap)
{
        char buf[1024];

        vsnprintf(buf, sizeof(buf), fmt, ap);
        fprintf(stderr, "%s: %s%s\n", victim_name, prefix, buf);
}

/* Write a whole file under DIR atomically (temporary name + rename). Best effort: returns -errno. */
static _unused_ int victim_write_file(const char *name, const char *content)
{
        char path[PATH_MAX], tmp[PATH_MAX];
        size_t len = strlen(content);
        int fd;

        if (!victim_dir)
                return -EINVAL;
        snprintf(path, sizeof(path), "%s/%s", victim_dir, name);
        snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", victim_dir, name, (int)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t n = write(fd, content, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = -errno;
                        close(fd);
                        unlink(tmp);
                        return r;
                }
                content += n;
                len -= (size_t)n;
        }
        close(fd);
        if (rename(tmp, path) < 0) {
                int r = -errno;
                unlink(tmp);
                return r;
        }
        return 0;
}

/* A failure while running: tell the test through DIR/error and stderr, then exit 1. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void victim_fail(const char *fmt, ...)
{
        char buf[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s: FAILED: %s\n", victim_name, buf);
        if (victim_dir && !victim_check_mode) {
                strncat(buf, "\n", sizeof(buf) - strlen(buf) - 1);
                victim_write_file("error", buf);
        }
        _exit(1);
}

/* A broken invariant in check mode. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void check_fail(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        victim_vmsg("CHECK FAILED: ", fmt, ap);
        va_end(ap);
        exit(1);
}

__attribute__((format(printf, 1, 2), unused)) static void victim_log(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        victim_vmsg("", fmt, ap);
        va_end(ap);
}

#define VCHECK(expr)                                                                              \
        do {                                                                                      \
                if (!(expr))                                                                      \
                        victim_fail("%s:%d: %s: %s", __FILE__, __LINE__, #expr, strerror(errno)); \
        } while (0)

static _unused_ void usage_exit(void)
{
        fprintf(stderr,
                "usage: %s DIR          run: write DIR/layout, touch DIR/ready, run until killed\n"
                "       %s --check DIR  check DIR/NAME.bin files extracted from an image\n",
                victim_name, victim_name);
        exit(2);
}

/* Parses "NAME DIR" or "NAME --check DIR"; returns the index of the first argument after DIR. */
static _unused_ int victim_parse_args(int argc, char *argv[])
{
        const char *slash = strrchr(argv[0], '/');

        victim_name = slash ? slash + 1 : argv[0];
        if (argc >= 3 && strcmp(argv[1], "--check") == 0) {
                victim_check_mode = true;
                victim_dir = argv[2];
                return 3;
        }
        if (argc < 2 || argv[1][0] == '-')
                usage_exit();
        victim_dir = argv[1];
        return 2;
}

/* In run mode: die with the test (SIGKILL when the parent goes away), unbuffered stdout. */
static _unused_ void victim_init_run(void)
{
        pid_t parent = getppid();

        setvbuf(stdout, NULL, _IONBF, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                victim_fail("PR_SET_PDEATHSIG: %m");
        if (getppid() != parent)
                _exit(1);
        /* Stale files from an earlier run would mislead the test. */
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/ready", victim_dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/layout", victim_dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/error", victim_dir);
        unlink(path);
}

/* ---- layout ---- */

#define LAYOUT_MAX 64

typedef struct LayoutEntry {
        char name[64];
        uint64_t addr;
        uint64_t len;
} LayoutEntry;

static LayoutEntry layout_entries[LAYOUT_MAX];
static size_t layout_n = 0;

static _unused_ void layout_add(const char *name, const void *addr, uint64_t len)
{
        if (layout_n >= LAYOUT_MAX)
                victim_fail("too many layout entries");
        snprintf(layout_entries[layout_n].name, sizeof(layout_entries[layout_n].name), "%s", name);
        layout_entries[layout_n].addr = (uint64_t)(uintptr_t)addr;
        layout_entries[layout_n].len = len;
        layout_n++;
}

/* Writes DIR/layout, then touches DIR/ready. */
static _unused_ void victim_ready(void)
{
        char buf[LAYOUT_MAX * 128] = "";
        size_t off = 0;

        for (size_t i = 0; i < layout_n; i++)
                off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s 0x%" PRIx64 " %" PRIu64 "\n",
                                        layout_entries[i].name, layout_entries[i].addr,
                                        layout_entries[i].len);
        if (victim_write_file("layout", buf) < 0)
                victim_fail("cannot write %s/layout: %m", victim_dir);
        if (victim_write_file("ready", "") < 0)
                victim_fail("cannot write %s/ready: %m", victim_dir);
}

/* Check mode: loads DIR/layout into layout_entries. */
static _unused_ void layout_load(void)
{
        char path[PATH_MAX], line[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/layout", victim_dir);
        f = fopen(path, "re");
        if (!f)
                check_fail("cannot open %s: %m", path);
        layout_n = 0;
        while (fgets(line, sizeof(line), f)) {
                LayoutEntry *e = &layout_entries[layout_n];
                if (layout_n >= LAYOUT_MAX)
                        check_fail("%s: too many lines", path);
                if (sscanf(line, "%63s %" SCNx64 " %" SCNu64, e->name, &e->addr, &e->len) != 3)
                        check_fail("%s: bad line: %s", path, line);
                layout_n++;
        }
        fclose(f);
}

static _unused_ const LayoutEntry *layout_find(const char *name)
{
        for (size_t i = 0; i < layout_n; i++)
                if (strcmp(layout_entries[i].name, name) == 0)
                        return &layout_entries[i];
        return NULL;
}

/* Check mode: loads DIR/NAME.bin, which must hold exactly the layout entry's length. The caller frees
 * the buffer. Returns NULL if the file does not exist and optional is true. */
static _unused_ void *bin_load(const char *name, const LayoutEntry **ret_entry, bool optional)
{
        const LayoutEntry *e = layout_find(name);
        char path[PATH_MAX];
        struct stat st;
        void *buf;
        int fd;

        if (!e)
                check_fail("no layout entry '%s'", name);
        snprintf(path, sizeof(path), "%s/%s.bin", victim_dir, name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT && optional)
                        return NULL;
                check_fail("cannot open %s: %m", path);
        }
        if (fstat(fd, &st) < 0)
                check_fail("fstat %s: %m", path);
        if ((uint64_t)st.st_size != e->len)
                check_fail("%s: %lld bytes, expected %" PRIu64 " (the layout's length of '%s')", path,
                           (long long)st.st_size, e->len, name);
        buf = malloc(e->len ? e->len : 1);
        if (!buf)
                check_fail("out of memory");
        for (uint64_t off = 0; off < e->len;) {
                ssize_t n = read(fd, (char *)buf + off, e->len - off);
                if (n <= 0)
                        check_fail("read %s: %s", path, n < 0 ? strerror(errno) : "short file");
                off += (uint64_t)n;
        }
        close(fd);
        if (ret_entry)
                *ret_entry = e;
        return buf;
}

/* ---- memory ---- */

static _unused_ void *map_anon(size_t len, int prot, int extra_flags)
{
        void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
        if (p == MAP_FAILED)
                victim_fail("mmap(%zu): %m", len);
        return p;
}

/* The content fill_pattern() puts in the word at addr (addr is a multiple of 8). */
static inline uint64_t pattern_word(uint64_t addr)
{
        return (addr * 0x9e3779b97f4a7c15ULL) ^ 0x5ca1ab1e00000000ULL ^ (addr >> 12);
}

static _unused_ void fill_pattern(void *p, size_t len)
{
        uint64_t *w = p;
        for (size_t i = 0; i < len / 8; i++)
                w[i] = pattern_word((uint64_t)(uintptr_t)&w[i]);
}

/* Returns the index of the first word that does not hold the pattern for address base + 8*i, or -1. */
static _unused_ ssize_t pattern_mismatch(const void *buf, uint64_t base, size_t len)
{
        const uint64_t *w = buf;
        for (size_t i = 0; i < len / 8; i++)
                if (w[i] != pattern_word(base + 8 * i))
                        return (ssize_t)i;
        return -1;
}

/* ---- time ---- */

static inline uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void sleep_us(unsigned us)
{
        struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static inline pid_t victim_gettid(void)
{
        return (pid_t)syscall(SYS_gettid);
}

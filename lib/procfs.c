/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The /proc parsers. The kernel's formats are stable but awkward in places: a mapping's path may hold
 * spaces and ends in " (deleted)" once unlinked, a task's comm may hold spaces and ')', fields come
 * and go between kernel versions, and a read can be cut short when the process exits mid-read. So no
 * line is trusted: every line is handled by pointer and length (no fixed buffer that would silently
 * truncate a long path), numbers are parsed by hand with explicit bounds (no sign, no overflow, no
 * leading blanks that sscanf() would accept), and anything that does not fit the format is -EBADMSG
 * rather than a guess. Unknown status keys are ignored, so new kernels do not break us.
 *
 * Names are kept exactly as the kernel prints them: a path with a newline appears escaped ("\012"),
 * and since a backslash is not escaped, unescaping would be ambiguous.
 */

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <sys/mman.h>

#include "procfs.h"
#include "util.h"

#define PF_EXITING 0x00000004UL
#define PF_KTHREAD 0x00200000UL

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

static bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

static bool is_space(char c)
{
        return is_blank(c) || c == '\n' || c == '\r';
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static void skip_blanks(const char **p, const char *end)
{
        while (*p < end && is_blank(**p))
                (*p)++;
}

/* At least one blank, then any more. */
static int separator(const char **p, const char *end)
{
        if (*p >= end || !is_blank(**p))
                return -EBADMSG;
        skip_blanks(p, end);
        return 0;
}

static int expect_char(const char **p, const char *end, char c)
{
        if (*p >= end || **p != c)
                return -EBADMSG;
        (*p)++;
        return 0;
}

/* One or more hex digits (after a mandatory "0x" if prefixed); stops at the first other character. */
static int parse_hex(const char **p, const char *end, bool prefixed, uint64_t *ret)
{
        const char *s = *p;
        uint64_t v = 0;
        int d;

        if (prefixed) {
                if (end - s < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
                        return -EBADMSG;
                s += 2;
        }
        if (s >= end || hex_digit(*s) < 0)
                return -EBADMSG;
        for (; s < end && (d = hex_digit(*s)) >= 0; s++) {
                if (v > (UINT64_MAX >> 4))
                        return -EBADMSG;
                v = v << 4 | (uint64_t)d;
        }
        *p = s;
        *ret = v;
        return 0;
}

/* One or more decimal digits, no sign. */
static int parse_dec(const char **p, const char *end, uint64_t *ret)
{
        const char *s = *p;
        uint64_t v = 0;

        if (s >= end || *s < '0' || *s > '9')
                return -EBADMSG;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
                uint64_t d = (uint64_t)(*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -EBADMSG;
                v = v * 10 + d;
        }
        *p = s;
        *ret = v;
        return 0;
}

/* An optional '-', then decimal digits; the value must fit in int64_t. */
static int parse_dec_signed(const char **p, const char *end, int64_t *ret)
{
        const char *s = *p;
        bool neg = false;
        uint64_t v;
        int r;

        if (s < end && *s == '-') {
                neg = true;
                s++;
        }
        r = parse_dec(&s, end, &v);
        if (r < 0)
                return r;
        if (v > (uint64_t)INT64_MAX + neg)
                return -EBADMSG;
        *p = s;
        *ret = neg ? (int64_t)(0 - v) : (int64_t)v;
        return 0;
}

/* A whole value: the number, then nothing but blanks to the end. */
static int parse_dec_value(const char *p, const char *end, uint64_t max, uint64_t *ret)
{
        uint64_t v;

        if (parse_dec(&p, end, &v) < 0 || v > max)
                return -EBADMSG;
        skip_blanks(&p, end);
        if (p != end)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int parse_hex_value(const char *p, const char *end, uint64_t *ret)
{
        uint64_t v;

        if (parse_hex(&p, end, false, &v) < 0)
                return -EBADMSG;
        skip_blanks(&p, end);
        if (p != end)
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* The next line of [*text, end) as [*ret_line, *ret_end), without its newline; false at the end. */
static bool next_line(const char **text, const char *end, const char **ret_line, const char **ret_end)
{
        const char *l = *text, *nl;

        if (l >= end)
                return false;
        nl = memchr(l, '\n', (size_t)(end - l));
        *ret_line = l;
        *ret_end = nl ?: end;
        *text = nl ? nl + 1 : end;
        return true;
}

/* "start-end perms offset major:minor inode [padding name]" */
static int parse_maps_line(const char *p, const char *end, ProcMap *ret)
{
        uint64_t start, stop, offset, major, minor, inode;
        ProcMap m = {};

        if (parse_hex(&p, end, false, &start) < 0 || expect_char(&p, end, '-') < 0 ||
            parse_hex(&p, end, false, &stop) < 0 || expect_char(&p, end, ' ') < 0)
                return -EBADMSG;
        if (stop <= start)
                return -EBADMSG;

        if (end - p < 5 || !strchr("r-", p[0]) || !strchr("w-", p[1]) || !strchr("x-", p[2]) ||
            !strchr("sp", p[3]) || p[4] != ' ')
                return -EBADMSG;
        m.prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
                 (p[2] == 'x' ? PROT_EXEC : 0);
        m.shared = p[3] == 's';
        p += 5;

        if (parse_hex(&p, end, false, &offset) < 0 || expect_char(&p, end, ' ') < 0 ||
            parse_hex(&p, end, false, &major) < 0 || expect_char(&p, end, ':') < 0 ||
            parse_hex(&p, end, false, &minor) < 0 || expect_char(&p, end, ' ') < 0 ||
            parse_dec(&p, end, &inode) < 0)
                return -EBADMSG;
        if (major > UINT32_MAX || minor > UINT32_MAX)
                return -EBADMSG;
        /* The kernel always puts a blank after the inode; accept its absence at the end of the line. */
        if (p < end && !is_blank(*p))
                return -EBADMSG;

        /* Padding, then the name verbatim to the end of the line: it may hold blanks of its own. */
        skip_blanks(&p, end);
        if (p < end) {
                m.name = strndup(p, (size_t)(end - p));
                if (!m.name)
                        return -ENOMEM;
        }

        m.start = start;
        m.end = stop;
        m.offset = offset;
        m.dev_major = (uint32_t)major;
        m.dev_minor = (uint32_t)minor;
        m.inode = inode;
        *ret = m;
        return 0;
}

int proc_maps_parse(const char *text, ProcMap **ret, size_t *ret_n)
{
        const char *end, *line, *line_end;
        ProcMap *maps = NULL;
        size_t n = 0, allocated = 0;

        assert(text);
        assert(ret);
        assert(ret_n);

        end = text + strlen(text);
        while (next_line(&text, end, &line, &line_end)) {
                int r;

                if (line == line_end)
                        continue;
                if (n == allocated) {
                        size_t k = MAX(allocated * 2, (size_t)64);
                        ProcMap *p = reallocarray(maps, k, sizeof(ProcMap));
                        if (!p) {
                                proc_maps_free(maps, n);
                                return -ENOMEM;
                        }
                        maps = p;
                        allocated = k;
                }
                r = parse_maps_line(line, line_end, &maps[n]);
                if (r < 0) {
                        proc_maps_free(maps, n);
                        return r;
                }
                n++;
        }

        *ret = maps;
        *ret_n = n;
        return 0;
}

int proc_maps_read(pid_t pid, ProcMap **ret, size_t *ret_n)
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return proc_maps_parse(text, ret, ret_n);
}

void proc_maps_free(ProcMap *maps, size_t n)
{
        for (size_t i = 0; maps && i < n; i++)
                free(maps[i].name);
        free(maps);
}

static bool key_is(const char *key, const char *key_end, const char *name)
{
        size_t len = strlen(name);

        return (size_t)(key_end - key) == len && memcmp(key, name, len) == 0;
}

/* v: the value as it follows the colon, blanks included. */
static int parse_status_field(ProcStatus *st, const char *key, const char *key_end, const char *v,
                              const char *end, bool *seen_name, bool *seen_state, bool *seen_tgid)
{
        const char *p;
        uint64_t x;
        int r = 0;

        if (key_is(key, key_end, "Name")) {
                /* The kernel writes one tab, then comm with tabs and newlines escaped but blanks as they
                 * are, leading ones included. comm is at most 15 bytes; kernel workers may show longer
                 * names: keep their start. */
                size_t len;

                if (v < end && *v == '\t')
                        v++;
                len = MIN((size_t)(end - v), sizeof(st->name) - 1);
                memcpy(st->name, v, len);
                st->name[len] = 0;
                *seen_name = true;
                return 0;
        }

        skip_blanks(&v, end);
        p = v;
        if (key_is(key, key_end, "State")) {
                if (p >= end || !is_alpha(*p))
                        return -EBADMSG;
                st->state = *p;
                *seen_state = true;
        } else if (key_is(key, key_end, "Tgid")) {
                r = parse_dec_value(v, end, INT32_MAX, &x);
                st->tgid = (pid_t)x;
                *seen_tgid = true;
        } else if (key_is(key, key_end, "TracerPid")) {
                r = parse_dec_value(v, end, INT32_MAX, &x);
                st->tracer = (pid_t)x;
        } else if (key_is(key, key_end, "Uid")) {
                for (size_t i = 0; i < ELEMENTSOF(st->uid); i++) {
                        if ((i > 0 && separator(&p, end) < 0) || parse_dec(&p, end, &x) < 0 ||
                            x > UINT32_MAX)
                                return -EBADMSG;
                        st->uid[i] = (uid_t)x;
                }
                skip_blanks(&p, end);
                if (p != end)
                        return -EBADMSG;
        } else if (key_is(key, key_end, "Seccomp")) {
                r = parse_dec_value(v, end, INT32_MAX, &x);
                st->seccomp = (int)x;
        } else if (key_is(key, key_end, "SigPnd")) {
                r = parse_hex_value(v, end, &x);
                st->sigpnd = x;
        } else if (key_is(key, key_end, "ShdPnd")) {
                r = parse_hex_value(v, end, &x);
                st->shdpnd = x;
        } else if (key_is(key, key_end, "SigBlk")) {
                r = parse_hex_value(v, end, &x);
                st->sigblk = x;
        } else if (key_is(key, key_end, "Kthread")) {
                r = parse_dec_value(v, end, 1, &x);
                st->kthread = x == 1;
        }
        return r;
}

int proc_status_parse(const char *text, ProcStatus *ret)
{
        ProcStatus st = { .seccomp = -1 };
        bool name = false, state = false, tgid = false;
        const char *end, *line, *line_end;

        assert(text);
        assert(ret);

        end = text + strlen(text);
        while (next_line(&text, end, &line, &line_end)) {
                const char *colon = memchr(line, ':', (size_t)(line_end - line));
                int r;

                /* Not a "Key: value" line: not one we know, so not one we need. */
                if (!colon)
                        continue;
                r = parse_status_field(&st, line, colon, colon + 1, line_end, &name, &state, &tgid);
                if (r < 0)
                        return r;
        }

        if (!name || !state || !tgid)
                return -EBADMSG;
        *ret = st;
        return 0;
}

int proc_status_read(pid_t pid, pid_t tid, ProcStatus *ret)
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        int r;

        if (tid > 0)
                snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
        else
                snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return proc_status_parse(text, ret);
}

/* "pid (comm) state f4 f5 ...": leaves *p at the blank before field 4 (ppid), past the state letter. */
static int stat_skip_to_fields(const char *text, const char **p, const char **end)
{
        const char *open, *close;
        uint64_t pid;

        *p = text;
        *end = text + strlen(text);
        if (parse_dec(p, *end, &pid) < 0 || expect_char(p, *end, ' ') < 0 || expect_char(p, *end, '(') < 0)
                return -EBADMSG;
        open = *p - 1;

        /* comm may hold blanks and ')' itself: the fields start after the last ')'. Nothing after comm
         * can contain one, as every later field is a number. */
        close = strrchr(text, ')');
        if (!close || close < open)
                return -EBADMSG;
        *p = close + 1;

        if (separator(p, *end) < 0 || *p >= *end || !is_alpha(**p))
                return -EBADMSG;
        (*p)++;
        return 0;
}

/* Field number n (4 or later, counting from 1 as proc(5) does) as an unsigned number; the fields
 * before it must be numbers too. */
static int stat_field_parse(const char *text, unsigned n, uint64_t *ret)
{
        const char *p, *end;
        uint64_t v;

        assert(n >= 4);
        if (stat_skip_to_fields(text, &p, &end) < 0)
                return -EBADMSG;
        for (unsigned i = 4; i < n; i++) {
                /* skipped: any decimal, some do not fit int64_t (rsslim is often 2^64-1) */
                if (separator(&p, end) < 0)
                        return -EBADMSG;
                if (p < end && *p == '-')
                        p++;
                if (p >= end || !is_digit(*p))
                        return -EBADMSG;
                while (p < end && is_digit(*p))
                        p++;
        }
        if (separator(&p, end) < 0 || parse_dec(&p, end, &v) < 0)
                return -EBADMSG;
        if (p < end && !is_space(*p))
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* "pid (comm) state ppid pgrp session tty_nr tpgid flags ..." */
int proc_stat_flags_parse(const char *text, unsigned long *ret_flags)
{
        uint64_t flags;

        assert(text);
        assert(ret_flags);

        if (stat_field_parse(text, 9, &flags) < 0 || flags > ULONG_MAX)
                return -EBADMSG;
        *ret_flags = (unsigned long)flags;
        return 0;
}

/* Field 39, processor: the CPU the task last ran on. */
int proc_stat_cpu_parse(const char *text, unsigned *ret_cpu)
{
        uint64_t cpu;

        assert(text);
        assert(ret_cpu);

        if (stat_field_parse(text, 39, &cpu) < 0 || cpu >= CPU_SETSIZE)
                return -EBADMSG;
        *ret_cpu = (unsigned)cpu;
        return 0;
}

int proc_stat_cpu_read(pid_t pid, pid_t tid, unsigned *ret_cpu)
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return proc_stat_cpu_parse(text, ret_cpu);
}

/* The flags field of a /proc/.../stat file. */
static int proc_stat_flags_read(const char *path, unsigned long *ret_flags)
{
        _cleanup_free_ char *text = NULL;
        int r;

        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return proc_stat_flags_parse(text, ret_flags);
}

int proc_is_kthread(pid_t pid)
{
        unsigned long flags;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        r = proc_stat_flags_read(path, &flags);
        if (r < 0)
                return r;
        return !!(flags & PF_KTHREAD);
}

int proc_thread_exiting(pid_t pid, pid_t tid)
{
        unsigned long flags;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
        r = proc_stat_flags_read(path, &flags);
        if (r == -ENOENT || r == -ESRCH)
                return 1; /* gone already */
        if (r < 0)
                return r;
        return !!(flags & PF_EXITING);
}

static int pid_cmp(const void *a, const void *b)
{
        pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

        return x < y ? -1 : x > y;
}

int proc_task_list(pid_t pid, pid_t **ret, size_t *ret_n)
{
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ pid_t *tids = NULL;
        size_t n = 0, allocated = 0;
        char path[64];

        assert(ret);
        assert(ret_n);

        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        d = opendir(path); /* glibc opens directories O_CLOEXEC */
        if (!d)
                return -errno;

        for (;;) {
                const char *p, *end;
                struct dirent *de;
                uint64_t tid;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return -errno;
                        break;
                }

                p = de->d_name;
                end = p + strlen(p);
                if (parse_dec(&p, end, &tid) < 0 || p != end || tid == 0 || tid > INT32_MAX)
                        continue; /* "." and ".." */

                if (n == allocated) {
                        size_t k = MAX(allocated * 2, (size_t)16);
                        pid_t *t = reallocarray(tids, k, sizeof(pid_t));
                        if (!t)
                                return -ENOMEM;
                        tids = t;
                        allocated = k;
                }
                tids[n++] = (pid_t)tid;
        }

        if (n > 1)
                qsort(tids, n, sizeof(pid_t), pid_cmp);
        *ret = TAKE_PTR(tids);
        *ret_n = n;
        return 0;
}

void strv_free(char **argv)
{
        for (char **p = argv; p && *p; p++)
                free(*p);
        free(argv);
}

int proc_cmdline_read(pid_t pid, char ***ret_argv)
{
        _cleanup_free_ char *text = NULL;
        char path[64], **argv;
        size_t size, n = 0, k = 0;
        int r;

        assert(ret_argv);

        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        r = read_full_file(path, &text, &size);
        if (r < 0)
                return r;

        /* One string per NUL; the last may lack its NUL when the process rewrote its arguments, and
         * read_full_file() terminates the buffer, so one more slot covers it. */
        for (size_t i = 0; i < size; i++)
                if (text[i] == 0)
                        n++;
        argv = calloc(n + 2, sizeof(char *));
        if (!argv)
                return -ENOMEM;
        for (size_t i = 0; i < size; i += strlen(text + i) + 1) {
                argv[k] = strdup(text + i);
                if (!argv[k]) {
                        strv_free(argv);
                        return -ENOMEM;
                }
                k++;
        }
        *ret_argv = argv;
        return 0;
}

int proc_exe_read(pid_t pid, char **ret)
{
        char path[64], buf[PATH_MAX + 1], *s;
        ssize_t n;

        assert(ret);

        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
        n = readlink(path, buf, sizeof(buf));
        if (n < 0)
                return -errno;
        if ((size_t)n >= sizeof(buf))
                return -ENAMETOOLONG;
        buf[n] = 0;
        s = strdup(buf);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/*
 * "running" while the thread runs; "-1 SP PC" when it is blocked outside a system call; else
 * "NR ARG1 .. ARG6 SP PC", every value but NR in 0x-hex.
 */
int proc_syscall_parse(const char *text, long *ret_nr, uint64_t ret_args[6])
{
        const char *p = text, *end;
        uint64_t a[8];
        size_t n = 0;
        int64_t nr;

        assert(text);
        assert(ret_nr);
        assert(ret_args);

        end = text + strlen(text);
        while (end > p && is_space(end[-1]))
                end--;

        if ((size_t)(end - p) == strlen("running") && memcmp(p, "running", strlen("running")) == 0)
                return -EAGAIN;

        if (parse_dec_signed(&p, end, &nr) < 0 || nr < -1 || nr > LONG_MAX)
                return -EBADMSG;
        while (p < end) {
                if (n >= ELEMENTSOF(a) || separator(&p, end) < 0 || parse_hex(&p, end, true, &a[n]) < 0)
                        return -EBADMSG;
                n++;
        }

        if (nr == -1)
                return n == 2 ? -ENODATA : -EBADMSG;
        /* The kernel prints the six arguments, then the stack and instruction pointers. */
        if (n != 6 && n != 8)
                return -EBADMSG;

        *ret_nr = (long)nr;
        memcpy(ret_args, a, 6 * sizeof(uint64_t));
        return 0;
}

int proc_syscall_read(pid_t pid, pid_t tid, long *ret_nr, uint64_t ret_args[6])
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        return proc_syscall_parse(text, ret_nr, ret_args);
}

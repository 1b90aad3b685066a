/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>

#include "procfs.h"
#include "util.h"

#define PF_KTHREAD 0x00200000UL

/* Copies the next line of *text (without its newline) into buf; false at the end. */
static bool next_line(const char **text, char *buf, size_t size)
{
        const char *l = *text, *nl;
        size_t len;

        if (!l || !*l)
                return false;
        nl = strchr(l, '\n');
        len = nl ? (size_t)(nl - l) : strlen(l);
        if (len >= size)
                len = size - 1;
        memcpy(buf, l, len);
        buf[len] = 0;
        *text = nl ? nl + 1 : l + strlen(l);
        return true;
}

static int parse_maps_line(const char *line, ProcMap *ret)
{
        unsigned long long start, end, offset, inode;
        unsigned maj, min;
        char perms[8];
        int pos = 0;
        ProcMap m = {};

        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &maj, &min, &inode,
                   &pos) < 7 ||
            strlen(perms) != 4 || end < start)
                return -EBADMSG;

        m.start = start;
        m.end = end;
        m.offset = offset;
        m.dev_major = maj;
        m.dev_minor = min;
        m.inode = inode;
        m.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                 (perms[2] == 'x' ? PROT_EXEC : 0);
        m.shared = perms[3] == 's';
        if (pos > 0 && line[pos]) {
                m.name = strdup(line + pos);
                if (!m.name)
                        return -ENOMEM;
        }
        *ret = m;
        return 0;
}

int proc_maps_parse(const char *text, ProcMap **ret, size_t *ret_n)
{
        ProcMap *maps = NULL;
        size_t n = 0, allocated = 0;
        char line[PATH_MAX + 256];

        while (next_line(&text, line, sizeof(line))) {
                int r;

                if (!*line)
                        continue;
                if (n == allocated) {
                        size_t k = MAX(allocated * 2, (size_t)64);
                        ProcMap *p = realloc(maps, k * sizeof(ProcMap));
                        if (!p) {
                                proc_maps_free(maps, n);
                                return -ENOMEM;
                        }
                        maps = p;
                        allocated = k;
                }
                r = parse_maps_line(line, &maps[n]);
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

int proc_status_parse(const char *text, ProcStatus *ret)
{
        ProcStatus st = { .seccomp = -1 };
        bool name = false, state = false, tgid = false;
        char line[512];

        while (next_line(&text, line, sizeof(line))) {
                char *colon = strchr(line, ':'), *v;

                if (!colon)
                        continue;
                *colon = 0;
                v = colon + 1;
                v += strspn(v, " \t");

                if (streq(line, "Name")) {
                        snprintf(st.name, sizeof(st.name), "%s", v);
                        name = true;
                } else if (streq(line, "State")) {
                        st.state = *v;
                        state = *v != 0;
                } else if (streq(line, "Tgid")) {
                        st.tgid = (pid_t)strtol(v, NULL, 10);
                        tgid = true;
                } else if (streq(line, "TracerPid"))
                        st.tracer = (pid_t)strtol(v, NULL, 10);
                else if (streq(line, "Uid"))
                        (void)sscanf(v, "%u %u %u %u", &st.uid[0], &st.uid[1], &st.uid[2], &st.uid[3]);
                else if (streq(line, "Seccomp"))
                        st.seccomp = (int)strtol(v, NULL, 10);
                else if (streq(line, "SigPnd"))
                        st.sigpnd = strtoull(v, NULL, 16);
                else if (streq(line, "ShdPnd"))
                        st.shdpnd = strtoull(v, NULL, 16);
                else if (streq(line, "SigBlk"))
                        st.sigblk = strtoull(v, NULL, 16);
                else if (streq(line, "Kthread"))
                        st.kthread = strtol(v, NULL, 10) == 1;
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

int proc_stat_flags_parse(const char *text, unsigned long *ret_flags)
{
        const char *p = strrchr(text, ')');
        unsigned long flags;
        char state;
        int ppid, pgrp, session, tty, tpgid;

        /* comm may hold spaces and ')': the fields start after the last ')'. */
        if (!p || sscanf(p + 1, " %c %d %d %d %d %d %lu", &state, &ppid, &pgrp, &session, &tty, &tpgid, &flags) != 7)
                return -EBADMSG;
        *ret_flags = flags;
        return 0;
}

int proc_is_kthread(pid_t pid)
{
        _cleanup_free_ char *text = NULL;
        unsigned long flags;
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        r = proc_stat_flags_parse(text, &flags);
        if (r < 0)
                return r;
        return !!(flags & PF_KTHREAD);
}

static int pid_cmp(const void *a, const void *b)
{
        pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
        return x < y ? -1 : x > y;
}

int proc_task_list(pid_t pid, pid_t **ret, size_t *ret_n)
{
        pid_t *tids = NULL;
        size_t n = 0, allocated = 0;
        struct dirent *de;
        char path[64];
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        d = opendir(path);
        if (!d)
                return -errno;

        while ((de = readdir(d))) {
                if (!isdigit((unsigned char)de->d_name[0]))
                        continue;
                if (n == allocated) {
                        size_t k = MAX(allocated * 2, (size_t)16);
                        pid_t *p = realloc(tids, k * sizeof(pid_t));
                        if (!p) {
                                free(tids);
                                closedir(d);
                                return -ENOMEM;
                        }
                        tids = p;
                        allocated = k;
                }
                tids[n++] = (pid_t)strtol(de->d_name, NULL, 10);
        }
        closedir(d);

        if (n > 1)
                qsort(tids, n, sizeof(pid_t), pid_cmp);
        *ret = tids;
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

        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        r = read_full_file(path, &text, &size);
        if (r < 0)
                return r;

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
        char path[64], buf[PATH_MAX];
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
        n = readlink(path, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

int proc_syscall_parse(const char *text, long *ret_nr, uint64_t ret_args[6])
{
        unsigned long long a[6] = {};
        long nr;

        if (startswith(text, "running"))
                return -EAGAIN;
        if (sscanf(text, "%ld", &nr) != 1)
                return -EBADMSG;
        if (nr < 0)
                return -ENODATA;
        if (sscanf(text, "%ld %llx %llx %llx %llx %llx %llx", &nr, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]) != 7)
                return -EBADMSG;

        *ret_nr = nr;
        for (int i = 0; i < 6; i++)
                ret_args[i] = a[i];
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

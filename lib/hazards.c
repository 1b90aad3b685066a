/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Finding memory that write-protect cannot make point-in-time (see hazards.h for the two kinds).
 *
 * Pinned ranges come from the fdinfo of every io_uring fd of the target: the kernel prints the
 * registered buffers there, but only when it takes the ring's lock without waiting, so an incomplete
 * listing is retried, never taken as "no buffers". The addresses are the ring owner's, so they are
 * clipped to the target's own mappings.
 *
 * Sharing is found by (dev, inode): the maps of every other process name the same pair for the same
 * shmem object or file, and stat() through /proc/N/fd/M gives it for open files. Read-only fds cannot
 * change the content and are not counted; read-only shared mappings are (mprotect can make them
 * writable). This is a snapshot of who shares what at the time of the scan: a process that opens the
 * file later, or attaches a SysV segment by key later, is not seen.
 */

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "hazards.h"
#include "procfs.h"
#include "util.h"

/* IORING_MAX_REG_BUFFERS is 1 << 14 today; leave room, but refuse absurd counts. */
#define IOURING_BUFS_MAX (1U << 20)
#define FDINFO_RETRIES   50
#define REASON_JOIN_MAX  4

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* ---- small text helpers ---- */

static const char *line_end(const char *p)
{
        const char *e = strchr(p, '\n');
        return e ? e : p + strlen(p);
}

static const char *next_line(const char *e)
{
        return *e == '\n' ? e + 1 : e;
}

/* Parses decimal digits in [*p, end) without overflow; at least one digit. */
static int parse_dec(const char **p, const char *end, uint64_t *ret)
{
        uint64_t v = 0;
        const char *s = *p;

        if (s >= end || !isdigit((unsigned char)*s))
                return -EBADMSG;
        for (; s < end && isdigit((unsigned char)*s); s++) {
                unsigned d = (unsigned)(*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -EBADMSG;
                v = v * 10 + d;
        }
        *p = s;
        *ret = v;
        return 0;
}

static int parse_hex(const char **p, const char *end, uint64_t *ret)
{
        uint64_t v = 0;
        const char *s = *p;

        if (s >= end || !isxdigit((unsigned char)*s))
                return -EBADMSG;
        for (; s < end && isxdigit((unsigned char)*s); s++) {
                unsigned d = isdigit((unsigned char)*s) ? (unsigned)(*s - '0')
                                                        : (unsigned)(tolower((unsigned char)*s) - 'a' + 10);
                if (v >> 60)
                        return -EBADMSG;
                v = v << 4 | d;
        }
        *p = s;
        *ret = v;
        return 0;
}

/* Finds the line that starts with key (e.g. "UserBufs:"); returns the text after the key or NULL. Fails
 * with -EBADMSG through *ret_dup if the key occurs twice. */
static const char *find_key(const char *text, const char *key, bool *ret_dup)
{
        const char *found = NULL;
        size_t kl = strlen(key);

        *ret_dup = false;
        for (const char *p = text; *p;) {
                const char *e = line_end(p);
                if ((size_t)(e - p) >= kl && memcmp(p, key, kl) == 0) {
                        if (found) {
                                *ret_dup = true;
                                return NULL;
                        }
                        found = p + kl;
                }
                p = next_line(e);
        }
        return found;
}

/* ---- io_uring fdinfo ---- */

/* "%5u: 0x%llx/%u" or "%5u: <none>"; returns 1 for a buffer, 0 for an empty slot, -EAGAIN if the line
 * is not an entry at all (the next section: the listing was cut short), -EBADMSG if it is a bad one. */
static int parse_buf_line(const char *p, const char *e, uint64_t index, HazardBuf *ret)
{
        uint64_t i, addr, len;

        while (p < e && *p == ' ')
                p++;
        if (p >= e || !isdigit((unsigned char)*p))
                return -EAGAIN;
        if (parse_dec(&p, e, &i) < 0 || p >= e || *p != ':')
                return -EAGAIN;
        if (i != index)
                return -EBADMSG;
        p++;
        if (p >= e || *p != ' ')
                return -EBADMSG;
        p++;
        if ((size_t)(e - p) == strlen("<none>") && memcmp(p, "<none>", strlen("<none>")) == 0)
                return 0;
        if (e - p < 2 || p[0] != '0' || p[1] != 'x')
                return -EBADMSG;
        p += 2;
        if (parse_hex(&p, e, &addr) < 0 || p >= e || *p != '/')
                return -EBADMSG;
        p++;
        if (parse_dec(&p, e, &len) < 0 || p != e)
                return -EBADMSG;
        if (len > UINT64_MAX - addr)
                return -EBADMSG;
        ret->addr = addr;
        ret->len = len;
        return 1;
}

int hazards_iouring_fdinfo_parse(const char *text, HazardBuf **ret, size_t *ret_n)
{
        _cleanup_free_ HazardBuf *bufs = NULL;
        const char *p, *e;
        uint64_t count;
        size_t n = 0;
        bool dup;
        int r;

        assert(text);
        assert(ret);
        assert(ret_n);

        p = find_key(text, "UserBufs:", &dup);
        if (dup)
                return -EBADMSG;
        if (!p)
                return -EAGAIN;
        e = line_end(p);
        while (p < e && (*p == '\t' || *p == ' '))
                p++;
        if (parse_dec(&p, e, &count) < 0 || p != e || count > IOURING_BUFS_MAX)
                return -EBADMSG;
        if (count > 0) {
                bufs = calloc(count, sizeof(*bufs));
                if (!bufs)
                        return -ENOMEM;
        }
        for (uint64_t i = 0; i < count; i++) {
                if (!*e)
                        return -EAGAIN;
                p = next_line(e);
                e = line_end(p);
                r = parse_buf_line(p, e, i, &bufs[n]);
                if (r < 0)
                        return r;
                if (r > 0 && bufs[n].len > 0)
                        n++;
        }
        *ret = n > 0 ? TAKE_PTR(bufs) : NULL;
        *ret_n = n;
        return 0;
}

/* ---- ranges ---- */

void hazard_ranges_free(HazardRange *r, size_t n)
{
        if (!r)
                return;
        for (size_t i = 0; i < n; i++)
                free(r[i].reason);
        free(r);
}

static int range_cmp(const void *a, const void *b)
{
        const HazardRange *x = a, *y = b;
        if (x->start != y->start)
                return x->start < y->start ? -1 : 1;
        return x->end < y->end ? -1 : x->end > y->end;
}

/* Appends reason b to *a ("; " between parts) unless one part already is b; past REASON_JOIN_MAX parts
 * adds one "..." only. */
static int reason_join(char **a, const char *b)
{
        size_t parts = 0, bl;
        char *s;

        if (!b)
                return 0;
        if (!*a) {
                *a = strdup(b);
                return *a ? 0 : -ENOMEM;
        }
        bl = strlen(b);
        for (const char *p = *a;;) {
                const char *e = strstr(p, "; ");
                size_t l = e ? (size_t)(e - p) : strlen(p);
                if ((l == bl && memcmp(p, b, bl) == 0) || (l == 3 && memcmp(p, "...", 3) == 0))
                        return 0;
                parts++;
                if (!e)
                        break;
                p = e + 2;
        }
        if (parts >= REASON_JOIN_MAX)
                b = "...";
        if (asprintf(&s, "%s; %s", *a, b) < 0)
                return -ENOMEM;
        free(*a);
        *a = s;
        return 0;
}

int hazard_ranges_normalize(HazardRange *r, size_t *n)
{
        size_t out = 0;
        int k;

        assert(n);
        assert(r || *n == 0);

        for (size_t i = 0; i < *n; i++) {
                r[i].start = ALIGN_DOWN(r[i].start, (uint64_t)PAGE_SIZE_4K);
                /* The top page of the address space cannot be rounded up past 2^64. */
                r[i].end = r[i].end > UINT64_MAX - PAGE_SIZE_4K
                                   ? ALIGN_DOWN(UINT64_MAX, (uint64_t)PAGE_SIZE_4K)
                                   : ALIGN_UP(r[i].end, (uint64_t)PAGE_SIZE_4K);
        }
        if (*n > 1)
                qsort(r, *n, sizeof(*r), range_cmp);
        for (size_t i = 0; i < *n; i++) {
                if (r[i].end <= r[i].start) {
                        free(r[i].reason);
                        r[i].reason = NULL;
                        continue;
                }
                if (out > 0 && r[i].start <= r[out - 1].end) {
                        r[out - 1].end = MAX(r[out - 1].end, r[i].end);
                        k = reason_join(&r[out - 1].reason, r[i].reason);
                        free(r[i].reason);
                        r[i].reason = NULL;
                        if (k < 0) {
                                /* Leave a consistent array behind: everything after out is freed. */
                                for (size_t j = i + 1; j < *n; j++) {
                                        free(r[j].reason);
                                        r[j].reason = NULL;
                                }
                                *n = out;
                                return k;
                        }
                        continue;
                }
                if (out != i) {
                        r[out] = r[i];
                        r[i].reason = NULL;
                }
                out++;
        }
        *n = out;
        return 0;
}

typedef struct RangeList {
        HazardRange *r;
        size_t n, allocated;
} RangeList;

static int range_list_add(RangeList *l, uint64_t start, uint64_t end, const char *reason)
{
        if (l->n == l->allocated) {
                size_t na = l->allocated ? l->allocated * 2 : 16;
                HazardRange *p = reallocarray(l->r, na, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                l->r = p;
                l->allocated = na;
        }
        l->r[l->n].reason = strdup(reason);
        if (!l->r[l->n].reason)
                return -ENOMEM;
        l->r[l->n].start = start;
        l->r[l->n].end = end;
        l->n++;
        return 0;
}

/* Adds [start, end) clipped to the mappings (sorted, as /proc prints them). */
static int range_list_add_clipped(RangeList *l, const ProcMap *maps, size_t n_maps, uint64_t start,
                                  uint64_t end, const char *reason)
{
        int r;

        for (size_t i = 0; i < n_maps; i++) {
                uint64_t s = MAX(start, maps[i].start), e = MIN(end, maps[i].end);
                if (s >= e)
                        continue;
                r = range_list_add(l, s, e, reason);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool fd_is_iouring(int dir_fd, const char *name)
{
        char target[64];
        ssize_t k = readlinkat(dir_fd, name, target, sizeof(target) - 1);

        if (k < 0)
                return false;
        target[k] = 0;
        return streq(target, "anon_inode:[io_uring]");
}

static int read_iouring_fdinfo(pid_t pid, const char *fd_name, HazardBuf **ret, size_t *ret_n)
{
        char path[64];
        int r = -EAGAIN;

        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%.16s", (int)pid, fd_name);
        for (int attempt = 0; attempt < FDINFO_RETRIES && r == -EAGAIN; attempt++) {
                _cleanup_free_ char *text = NULL;

                if (attempt > 0)
                        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
                r = read_full_file(path, &text, NULL);
                if (r < 0)
                        return r;
                r = hazards_iouring_fdinfo_parse(text, ret, ret_n);
        }
        return r;
}

int hazards_pinned_ranges(pid_t pid, HazardRange **ret, size_t *ret_n)
{
        _cleanup_(closedirp) DIR *d = NULL;
        RangeList l = {};
        ProcMap *maps = NULL;
        size_t n_maps = 0;
        char path[64];
        struct dirent *de;
        int r;

        assert(pid > 0);
        assert(ret);
        assert(ret_n);

        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        d = opendir(path);
        if (!d)
                return errno == ENOENT ? -ESRCH : negative_errno();

        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ HazardBuf *bufs = NULL;
                size_t n_bufs = 0;
                char reason[96];

                if (de->d_name[0] == '.' || !fd_is_iouring(dirfd(d), de->d_name))
                        continue;
                r = read_iouring_fdinfo(pid, de->d_name, &bufs, &n_bufs);
                if (r == -ENOENT)
                        continue; /* closed meanwhile */
                if (r < 0)
                        goto fail;
                if (n_bufs == 0)
                        continue;
                if (!maps) {
                        r = proc_maps_read(pid, &maps, &n_maps);
                        if (r < 0)
                                goto fail;
                }
                snprintf(reason, sizeof(reason), "io_uring fixed buffer (fd %.16s)", de->d_name);
                for (size_t i = 0; i < n_bufs; i++) {
                        r = range_list_add_clipped(&l, maps, n_maps, bufs[i].addr,
                                                   bufs[i].addr + bufs[i].len, reason);
                        if (r < 0)
                                goto fail;
                }
        }
        if (errno != 0) {
                r = negative_errno();
                goto fail;
        }

        r = hazard_ranges_normalize(l.r, &l.n);
        if (r < 0)
                goto fail;
        proc_maps_free(maps, n_maps);
        if (l.n == 0) {
                free(l.r);
                l.r = NULL;
        }
        *ret = l.r;
        *ret_n = l.n;
        return 0;

fail:
        proc_maps_free(maps, n_maps);
        hazard_ranges_free(l.r, l.n);
        return r;
}

static int json_add(json_object *o, const char *key, json_object *v)
{
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int json_append(json_object *arr, json_object *v)
{
        if (!v)
                return -ENOMEM;
        if (json_object_array_add(arr, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

int hazards_pinned_to_json(const HazardRange *r, size_t n, json_object **ret)
{
        json_object *arr;

        assert(r || n == 0);
        assert(ret);

        arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_new_object();
                if (json_append(arr, o) < 0 ||
                    json_add(o, "start", json_object_new_uint64(r[i].start)) < 0 ||
                    json_add(o, "end", json_object_new_uint64(r[i].end)) < 0 ||
                    json_add(o, "reason", json_object_new_string(r[i].reason ?: "pinned")) < 0) {
                        json_object_put(arr);
                        return -ENOMEM;
                }
        }
        *ret = arr;
        return 0;
}

/* ---- shared elsewhere ---- */

static int shared_cmp(const void *a, const void *b)
{
        const HazardShared *x = a, *y = b;
        if (x->dev_major != y->dev_major)
                return x->dev_major < y->dev_major ? -1 : 1;
        if (x->dev_minor != y->dev_minor)
                return x->dev_minor < y->dev_minor ? -1 : 1;
        return x->inode < y->inode ? -1 : x->inode > y->inode;
}

static HazardShared *shared_lookup(HazardShared *s, size_t n, uint32_t major, uint32_t minor, uint64_t inode)
{
        HazardShared key = {.dev_major = major, .dev_minor = minor, .inode = inode};
        return n ? bsearch(&key, s, n, sizeof(*s), shared_cmp) : NULL;
}

const HazardShared *hazards_shared_find(const HazardShared *s, size_t n, const ProcMap *m)
{
        assert(m);
        if (!m->shared || !s)
                return NULL;
        return shared_lookup((HazardShared *)s, n, m->dev_major, m->dev_minor, m->inode);
}

int hazards_shared_to_json(const HazardShared *s, size_t n, json_object **ret)
{
        json_object *arr;

        assert(s || n == 0);
        assert(ret);

        arr = json_object_new_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_new_object(), *pids = NULL;
                char dev[32];

                snprintf(dev, sizeof(dev), "%02x:%02x", s[i].dev_major, s[i].dev_minor);
                if (json_append(arr, o) < 0 || json_add(o, "dev", json_object_new_string(dev)) < 0 ||
                    json_add(o, "inode", json_object_new_uint64(s[i].inode)) < 0 ||
                    json_add(o, "pids", pids = json_object_new_array()) < 0 ||
                    json_add(o, "n_pids", json_object_new_uint64(s[i].n_pids)) < 0 ||
                    json_add(o, "self_fd", json_object_new_boolean(s[i].self_fd)) < 0) {
                        json_object_put(arr);
                        return -ENOMEM;
                }
                for (size_t k = 0; k < MIN(s[i].n_pids, (size_t)HAZARD_SHARED_PIDS_MAX); k++)
                        if (json_append(pids, json_object_new_int(s[i].pids[k])) < 0) {
                                json_object_put(arr);
                                return -ENOMEM;
                        }
        }
        *ret = arr;
        return 0;
}

static void shared_add_pid(HazardShared *s, pid_t pid)
{
        size_t k = MIN(s->n_pids, (size_t)HAZARD_SHARED_PIDS_MAX);

        /* Each process is added at most once per object: the scan is per process. */
        for (size_t i = 0; i < k; i++)
                if (s->pids[i] == pid)
                        return;
        if (s->n_pids < HAZARD_SHARED_PIDS_MAX) {
                size_t i = s->n_pids;
                while (i > 0 && s->pids[i - 1] > pid) {
                        s->pids[i] = s->pids[i - 1];
                        i--;
                }
                s->pids[i] = pid;
        }
        s->n_pids++;
}

int hazards_fdinfo_flags_parse(const char *text, int *ret_flags)
{
        const char *p, *e;
        unsigned long v = 0;
        bool dup;

        assert(text);
        assert(ret_flags);
        p = find_key(text, "flags:", &dup);
        if (!p || dup)
                return -EBADMSG;
        e = line_end(p);
        while (p < e && (*p == '\t' || *p == ' '))
                p++;
        if (p >= e)
                return -EBADMSG;
        for (; p < e; p++) {
                if (*p < '0' || *p > '7' || v > (unsigned long)INT32_MAX >> 3)
                        return -EBADMSG;
                v = v << 3 | (unsigned long)(*p - '0');
        }
        *ret_flags = (int)v;
        return 0;
}

static bool fd_writable(pid_t pid, const char *fd_name)
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        int flags;

        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%.16s", (int)pid, fd_name);
        if (read_full_file(path, &text, NULL) < 0 || hazards_fdinfo_flags_parse(text, &flags) < 0)
                return true; /* cannot tell: assume the worst */
        return (flags & O_ACCMODE) != O_RDONLY;
}

/* Marks each object of s that pid holds open for writing: as pid's, or as the target's own (self). */
static void scan_fds(pid_t pid, HazardShared *s, size_t n, bool self)
{
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        d = opendir(path);
        if (!d)
                return;
        while ((de = readdir(d))) {
                HazardShared *h;
                struct stat st;

                if (de->d_name[0] == '.')
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0)
                        continue;
                h = shared_lookup(s, n, major(st.st_dev), minor(st.st_dev), (uint64_t)st.st_ino);
                if (!h || !fd_writable(pid, de->d_name))
                        continue;
                if (self)
                        h->self_fd = true;
                else
                        shared_add_pid(h, pid);
        }
}

static void scan_maps(pid_t pid, HazardShared *s, size_t n)
{
        ProcMap *maps = NULL;
        size_t n_maps = 0;

        if (proc_maps_read(pid, &maps, &n_maps) < 0)
                return;
        for (size_t i = 0; i < n_maps; i++) {
                HazardShared *h;
                if (!maps[i].shared)
                        continue;
                h = shared_lookup(s, n, maps[i].dev_major, maps[i].dev_minor, maps[i].inode);
                if (h)
                        shared_add_pid(h, pid);
        }
        proc_maps_free(maps, n_maps);
}

int hazards_shared_elsewhere(pid_t pid, const ProcMap *maps, size_t n_maps, HazardShared **ret,
                             size_t *ret_n)
{
        _cleanup_free_ HazardShared *s = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        size_t n = 0, out = 0;
        pid_t self = getpid();

        assert(pid > 0);
        assert(maps || n_maps == 0);
        assert(ret);
        assert(ret_n);

        /* The candidates: each shared (dev, inode) once. inode 0 names nothing another process could
         * match. */
        if (n_maps > 0) {
                s = calloc(n_maps, sizeof(*s));
                if (!s)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n_maps; i++) {
                if (!maps[i].shared || maps[i].inode == 0)
                        continue;
                s[n++] = (HazardShared){
                        .dev_major = maps[i].dev_major,
                        .dev_minor = maps[i].dev_minor,
                        .inode = maps[i].inode,
                };
        }
        if (n > 1)
                qsort(s, n, sizeof(*s), shared_cmp);
        for (size_t i = 0; i < n; i++)
                if (out == 0 || shared_cmp(&s[out - 1], &s[i]) != 0)
                        s[out++] = s[i];
        n = out;
        if (n == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }

        d = opendir("/proc");
        if (!d)
                return negative_errno();
        while ((errno = 0, de = readdir(d))) {
                char *end;
                unsigned long v;

                if (!isdigit((unsigned char)de->d_name[0]))
                        continue;
                v = strtoul(de->d_name, &end, 10);
                if (*end || v == 0 || v > INT32_MAX)
                        continue;
                /* The caller (the checkpointing process) only reads the target's memory. */
                if ((pid_t)v == pid || (pid_t)v == self)
                        continue;
                scan_maps((pid_t)v, s, n);
                scan_fds((pid_t)v, s, n, false);
        }
        if (errno != 0)
                return negative_errno();
        scan_fds(pid, s, n, true);

        out = 0;
        for (size_t i = 0; i < n; i++)
                if (s[i].n_pids > 0)
                        s[out++] = s[i];
        *ret = out > 0 ? TAKE_PTR(s) : NULL;
        *ret_n = out;
        return 0;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Unit tests for lib/hazards.c: the io_uring fdinfo parser on the text Linux 6.18 prints (and the
 * shapes older kernels and a busy ring lock give), malformed input, every truncation and mutations;
 * range normalization; and the /proc readers on this process: a ring with registered buffers, and
 * memfds and shared anonymous memory that a forked child maps or holds open.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "hazards.h"
#include "procfs.h"
#include "util.h"

/* As Linux 6.18 prints it for a ring with three registered buffers (the second not page aligned). */
static const char fdinfo_sample[] = "pos:\t0\n"
                                    "flags:\t02000002\n"
                                    "mnt_id:\t17\n"
                                    "ino:\t337697\n"
                                    "SqMask:\t0x7\n"
                                    "SqHead:\t0\n"
                                    "SqTail:\t0\n"
                                    "CachedSqHead:\t0\n"
                                    "CqMask:\t0xf\n"
                                    "CqHead:\t0\n"
                                    "CqTail:\t0\n"
                                    "CachedCqTail:\t0\n"
                                    "SQEs:\t0\n"
                                    "CQEs:\t0\n"
                                    "SqThread:\t-1\n"
                                    "SqThreadCpu:\t-1\n"
                                    "SqTotalTime:\t0\n"
                                    "SqWorkTime:\t0\n"
                                    "UserFiles:\t0\n"
                                    "UserBufs:\t3\n"
                                    "    0: 0x7f6c91957000/12288\n"
                                    "    1: 0x55d6ea7b32a5/100\n"
                                    "    2: 0x7f6c91958000/4096\n"
                                    "PollList:\n"
                                    "CqOverflowList:\n"
                                    "NAPI:\tdisabled\n";

static void test_fdinfo_parse(void **state)
{
        HazardBuf *b = NULL;
        size_t n = 0;

        assert_int_equal(hazards_iouring_fdinfo_parse(fdinfo_sample, &b, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(b[0].addr, 0x7f6c91957000ULL);
        assert_int_equal(b[0].len, 12288);
        assert_int_equal(b[1].addr, 0x55d6ea7b32a5ULL);
        assert_int_equal(b[1].len, 100);
        assert_int_equal(b[2].addr, 0x7f6c91958000ULL);
        assert_int_equal(b[2].len, 4096);
        free(b);

        /* No buffers registered. */
        b = (HazardBuf *)1;
        assert_int_equal(hazards_iouring_fdinfo_parse("UserFiles:\t0\nUserBufs:\t0\nPollList:\n", &b, &n),
                         0);
        assert_int_equal(n, 0);
        assert_null(b);

        /* A sparse table: empty slots and zero-length entries are no buffers; the last line may lack its
         * newline; wide indices are not padded. */
        assert_int_equal(hazards_iouring_fdinfo_parse("UserBufs:\t4\n"
                                                      "    0: <none>\n"
                                                      "    1: 0xABCdef000/8192\n"
                                                      "    2: 0x1000/0\n"
                                                      "    3: 0x2000/1",
                                                      &b, &n),
                         0);
        assert_int_equal(n, 2);
        assert_int_equal(b[0].addr, 0xabcdef000ULL);
        assert_int_equal(b[0].len, 8192);
        assert_int_equal(b[1].addr, 0x2000);
        assert_int_equal(b[1].len, 1);
        free(b);

        assert_int_equal(hazards_iouring_fdinfo_parse("UserBufs:\t1\n123456: 0x1000/4096\n", &b, &n),
                         -EBADMSG);
        assert_int_equal(
                hazards_iouring_fdinfo_parse("UserBufs:\t1\n    0: 0xfffffffffffe0000/65536\n", &b, &n), 0);
        assert_int_equal(n, 1);
        free(b);
}

static void test_fdinfo_incomplete(void **state)
{
        HazardBuf *b = (HazardBuf *)1;
        size_t n = 99;

        /* Newer kernels leave the tables out when the ring's lock is busy. */
        assert_int_equal(
                hazards_iouring_fdinfo_parse("SqThread:\t-1\nSqThreadCpu:\t-1\nPollList:\n", &b, &n),
                -EAGAIN);
        /* Older ones print the count but not the entries. */
        assert_int_equal(hazards_iouring_fdinfo_parse("UserFiles:\t1\nUserBufs:\t2\nPollList:\n", &b, &n),
                         -EAGAIN);
        assert_int_equal(
                hazards_iouring_fdinfo_parse("UserBufs:\t2\n    0: 0x1000/4096\nPollList:\n", &b, &n),
                -EAGAIN);
        /* Cut short by the end of the text. */
        assert_int_equal(hazards_iouring_fdinfo_parse("UserBufs:\t2\n    0: 0x1000/4096\n", &b, &n),
                         -EAGAIN);
        assert_int_equal(hazards_iouring_fdinfo_parse("UserBufs:\t2\n    0: 0x1000/4096", &b, &n), -EAGAIN);
        assert_int_equal(hazards_iouring_fdinfo_parse("", &b, &n), -EAGAIN);
        /* Nothing was written on failure. */
        assert_ptr_equal(b, (HazardBuf *)1);
        assert_int_equal(n, 99);
}

static void test_fdinfo_malformed(void **state)
{
        static const char *const bad[] = {
                "UserBufs:\t\n",
                "UserBufs:\tx\n",
                "UserBufs:\t-1\n",
                "UserBufs:\t1 \n    0: 0x1000/4096\n",
                "UserBufs:\t99999999999999999999999\n",
                "UserBufs:\t2000000\n",
                "UserBufs:\t1\n    1: 0x1000/4096\n", /* index out of order */
                "UserBufs:\t2\n    0: 0x1000/4096\n    0: 0x2000/4096\n",
                "UserBufs:\t1\n    0: 1000/4096\n", /* no 0x */
                "UserBufs:\t1\n    0: 0x/4096\n",
                "UserBufs:\t1\n    0: 0x1000\n",
                "UserBufs:\t1\n    0: 0x1000/\n",
                "UserBufs:\t1\n    0: 0x1000/4096 \n", /* trailing junk */
                "UserBufs:\t1\n    0: 0x1000/4096x\n",
                "UserBufs:\t1\n    0: 0x1000/-1\n",
                "UserBufs:\t1\n    0:0x1000/4096\n",
                "UserBufs:\t1\n    0: <none> \n",
                "UserBufs:\t1\n    0: <nothing>\n",
                "UserBufs:\t1\n    0: 0x10000000000000000/1\n",   /* address past 64 bits */
                "UserBufs:\t1\n    0: 0xffffffffffffff00/4096\n", /* wraps around */
                "UserBufs:\t1\n    0: 0x1000/18446744073709551616\n",
                "UserBufs:\t0\nUserBufs:\t0\n",
        };
        HazardBuf *b = (HazardBuf *)1;
        size_t n = 99;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = hazards_iouring_fdinfo_parse(bad[i], &b, &n);
                if (r != -EBADMSG)
                        fail_msg("sample %zu (%s): %d, expected -EBADMSG", i, bad[i], r);
        }
        assert_ptr_equal(b, (HazardBuf *)1);
        assert_int_equal(n, 99);
}

static void test_fdinfo_flags(void **state)
{
        int f = -1;

        assert_int_equal(hazards_fdinfo_flags_parse(fdinfo_sample, &f), 0);
        assert_int_equal(f, 02000002);
        assert_int_equal(f & O_ACCMODE, O_RDWR);
        assert_int_equal(hazards_fdinfo_flags_parse("pos:\t0\nflags:\t0100000\nmnt_id:\t1\n", &f), 0);
        assert_int_equal(f & O_ACCMODE, O_RDONLY);
        assert_int_equal(hazards_fdinfo_flags_parse("flags:\t01", &f), 0);
        assert_int_equal(f, O_WRONLY);
        assert_int_equal(hazards_fdinfo_flags_parse("pos:\t0\n", &f), -EBADMSG);
        assert_int_equal(hazards_fdinfo_flags_parse("flags:\t\n", &f), -EBADMSG);
        assert_int_equal(hazards_fdinfo_flags_parse("flags:\t08\n", &f), -EBADMSG);
        assert_int_equal(hazards_fdinfo_flags_parse("flags:\t777777777777\n", &f), -EBADMSG);
        assert_int_equal(hazards_fdinfo_flags_parse("flags:\t1\nflags:\t2\n", &f), -EBADMSG);
}

/* ---- normalization ---- */

static HazardRange mk(uint64_t s, uint64_t e, const char *reason)
{
        HazardRange r = {.start = s, .end = e, .reason = reason ? strdup(reason) : NULL};
        assert_true(!reason || r.reason);
        return r;
}

static void test_normalize(void **state)
{
        HazardRange *r = calloc(8, sizeof(*r));
        size_t n = 8;

        assert_non_null(r);
        r[0] = mk(0x5000, 0x5001, "b");     /* widened to one page */
        r[1] = mk(0x1010, 0x2ff0, "a");     /* widened to [0x1000, 0x3000) */
        r[2] = mk(0x3000, 0x4000, "a");     /* adjacent: merged, reason once */
        r[3] = mk(0x2000, 0x2800, "c");     /* inside */
        r[4] = mk(0x7000, 0x7000, "empty"); /* empty: dropped */
        r[5] = mk(0x10000, 0x20000, "d");
        r[6] = mk(0xfffffffffffff000ULL, UINT64_MAX, "top"); /* cannot end at 2^64: dropped */
        r[7] = mk(0x5000, 0x6000, "b");
        assert_int_equal(hazard_ranges_normalize(r, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(r[0].start, 0x1000);
        assert_int_equal(r[0].end, 0x4000);
        assert_string_equal(r[0].reason, "a; c");
        assert_int_equal(r[1].start, 0x5000);
        assert_int_equal(r[1].end, 0x6000);
        assert_string_equal(r[1].reason, "b");
        assert_int_equal(r[2].start, 0x10000);
        assert_int_equal(r[2].end, 0x20000);
        hazard_ranges_free(r, n);

        /* "fd 1" is not "fd 10"; at most four reasons, then one "...". */
        r = calloc(7, sizeof(*r));
        assert_non_null(r);
        n = 7;
        for (size_t i = 0; i < n; i++) {
                char why[32];
                snprintf(why, sizeof(why), "fd %zu", i == 1 ? 10 : i == 2 ? 1 : i);
                r[i] = mk(0x1000 * (i + 1), 0x1000 * (i + 2), why);
        }
        assert_int_equal(hazard_ranges_normalize(r, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(r[0].start, 0x1000);
        assert_int_equal(r[0].end, 0x8000);
        assert_string_equal(r[0].reason, "fd 0; fd 10; fd 1; fd 3; ...");
        hazard_ranges_free(r, n);

        n = 0;
        assert_int_equal(hazard_ranges_normalize(NULL, &n), 0);
        hazard_ranges_free(NULL, 0);
}

static void test_json(void **state)
{
        HazardRange r[2] = {
                {.start = 0x7f0000001000ULL,
                 .end = 0x7f0000003000ULL,
                 .reason = (char *)"io_uring fixed buffer (fd 5)"},
                {.start = 0x1000, .end = 0x2000, .reason = NULL},
        };
        HazardShared s[1] = {{
                .dev_major = 0,
                .dev_minor = 1,
                .inode = 4113,
                .n_pids = HAZARD_SHARED_PIDS_MAX + 3,
                .self_fd = true,
        }};
        json_object *j = NULL;

        for (int i = 0; i < HAZARD_SHARED_PIDS_MAX; i++)
                s[0].pids[i] = 100 + i;
        assert_int_equal(hazards_pinned_to_json(r, 2, &j), 0);
        assert_string_equal(
                json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
                "[{\"start\":139637976731648,\"end\":139637976739840,\"reason\":\"io_uring fixed buffer (fd "
                "5)\"},{\"start\":4096,\"end\":8192,\"reason\":\"pinned\"}]");
        json_object_put(j);
        assert_int_equal(hazards_pinned_to_json(NULL, 0, &j), 0);
        assert_string_equal(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN), "[]");
        json_object_put(j);

        assert_int_equal(hazards_shared_to_json(s, 1, &j), 0);
        assert_string_equal(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
                            "[{\"dev\":\"00:01\",\"inode\":4113,\"pids\":[100,101,102,103,104,105,106,107],"
                            "\"n_pids\":11,\"self_fd\":true}]");
        json_object_put(j);
}

/* ---- robustness ---- */

static void run_parsers(const char *text)
{
        HazardBuf *b = NULL;
        size_t n = 0;
        int f, r;

        r = hazards_iouring_fdinfo_parse(text, &b, &n);
        assert_true(r == 0 || r == -EBADMSG || r == -EAGAIN);
        if (r == 0) {
                for (size_t i = 0; i < n; i++)
                        assert_true(b[i].len > 0 && b[i].addr + b[i].len > b[i].addr);
                free(b);
        }
        r = hazards_fdinfo_flags_parse(text, &f);
        assert_true(r == 0 || r == -EBADMSG);
}

static void test_robustness(void **state)
{
        static const char *const samples[] = {
                fdinfo_sample,
                "UserBufs:\t4\n    0: <none>\n    1: 0xabcdef000/8192\n    2: 0x1000/0\n    3: 0x2000/1",
        };
        static const char interesting[] = {'\n', ' ', '\t', ':', '/', '0', 'x', 'f', '<', 0x7f, (char)0xff};
        unsigned seed = 4242;

        for (size_t s = 0; s < ELEMENTSOF(samples); s++) {
                size_t len = strlen(samples[s]);

                for (size_t k = 0; k <= len; k++) {
                        _cleanup_free_ char *t = strndup(samples[s], k);
                        assert_non_null(t);
                        run_parsers(t);
                }
                for (int m = 0; m < 3000; m++) {
                        _cleanup_free_ char *t = strdup(samples[s]);
                        assert_non_null(t);
                        for (int j = 0; j < 1 + m % 3; j++) {
                                seed = seed * 1103515245 + 12345;
                                size_t pos = (seed >> 8) % len;
                                seed = seed * 1103515245 + 12345;
                                t[pos] = interesting[(seed >> 8) % sizeof(interesting)];
                        }
                        run_parsers(t);
                }
        }
}

/* ---- this process: a ring with registered buffers ---- */

static void test_self_pinned(void **state)
{
        struct io_uring_params p = {};
        HazardRange *r = NULL;
        size_t n = 99;
        int ring;
        char *a, *b;

        /* Nothing pinned yet (no ring). */
        assert_int_equal(hazards_pinned_ranges(getpid(), &r, &n), 0);
        assert_int_equal(n, 0);
        assert_null(r);

        ring = (int)syscall(SYS_io_uring_setup, 4, &p);
        if (ring < 0) {
                print_message("io_uring_setup: %s: skipping\n", strerror(errno));
                skip();
                return;
        }
        a = mmap(NULL, 8 * PAGE_SIZE_4K, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(a != MAP_FAILED);
        b = mmap(NULL, 4 * PAGE_SIZE_4K, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(b != MAP_FAILED);
        struct iovec iov[] = {
                {a + 100, 2 * PAGE_SIZE_4K},          /* pages 0-2 of a, unaligned */
                {a + 2 * PAGE_SIZE_4K, PAGE_SIZE_4K}, /* page 2 again: merged */
                {b + PAGE_SIZE_4K, 2 * PAGE_SIZE_4K}, /* pages 1-2 of b */
        };
        if (syscall(SYS_io_uring_register, ring, IORING_REGISTER_BUFFERS, iov, ELEMENTSOF(iov)) < 0) {
                print_message("IORING_REGISTER_BUFFERS: %s: skipping\n", strerror(errno));
                close(ring);
                skip();
                return;
        }
        /* Unmapping a pinned range leaves the pin; the report is clipped to what is still mapped. */
        assert_int_equal(munmap(b + 2 * PAGE_SIZE_4K, PAGE_SIZE_4K), 0);

        assert_int_equal(hazards_pinned_ranges(getpid(), &r, &n), 0);
        assert_int_equal(n, 2);
        char want[64];
        snprintf(want, sizeof(want), "io_uring fixed buffer (fd %d)", ring);
        uintptr_t lo = (uintptr_t)a < (uintptr_t)b ? (uintptr_t)a : (uintptr_t)b + PAGE_SIZE_4K;
        uintptr_t hi = lo == (uintptr_t)a ? (uintptr_t)b + PAGE_SIZE_4K : (uintptr_t)a;
        assert_int_equal(r[0].start, lo);
        assert_int_equal(r[1].start, hi);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(r[i].reason, want);
                if (r[i].start == (uintptr_t)a)
                        assert_int_equal(r[i].end, (uintptr_t)a + 3 * PAGE_SIZE_4K);
                else
                        assert_int_equal(r[i].end, (uintptr_t)b + 2 * PAGE_SIZE_4K);
        }
        hazard_ranges_free(r, n);

        /* A second fd on the same ring: the same ranges, both fds named. */
        int ring2 = fcntl(ring, F_DUPFD_CLOEXEC, 100);
        assert_true(ring2 >= 100);
        assert_int_equal(hazards_pinned_ranges(getpid(), &r, &n), 0);
        assert_int_equal(n, 2);
        assert_non_null(strstr(r[0].reason, want));
        snprintf(want, sizeof(want), "io_uring fixed buffer (fd %d)", ring2);
        assert_non_null(strstr(r[0].reason, want));
        hazard_ranges_free(r, n);

        close(ring2);
        close(ring);
        munmap(a, 8 * PAGE_SIZE_4K);
        munmap(b, 4 * PAGE_SIZE_4K);

        assert_int_equal(hazards_pinned_ranges(0x3fffffff, &r, &n), -ESRCH);
}

/* ---- this process and a child: shared memory ---- */

static int memfd_mapped(size_t len, char **ret_map)
{
        int fd = memfd_create("test-hazards", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)len), 0);
        *ret_map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        assert_true(*ret_map != MAP_FAILED);
        return fd;
}

static const HazardShared *find_map(const HazardShared *s, size_t n, const ProcMap *maps, size_t n_maps,
                                    void *addr)
{
        for (size_t i = 0; i < n_maps; i++)
                if (maps[i].start == (uintptr_t)addr)
                        return hazards_shared_find(s, n, &maps[i]);
        fail_msg("no mapping at %p", addr);
        return NULL;
}

static void test_self_shared(void **state)
{
        char *mapped_by_child, *fd_in_child, *ro_fd_in_child, *mine, *anon;
        int fd_mapped, fd_rw, fd_ro_src, fd_mine, pipefd[2];
        HazardShared *s = NULL;
        ProcMap *maps = NULL;
        size_t n = 0, n_maps = 0;
        pid_t child;

        fd_mapped = memfd_mapped(PAGE_SIZE_4K, &mapped_by_child);
        fd_rw = memfd_mapped(PAGE_SIZE_4K, &fd_in_child);
        fd_ro_src = memfd_mapped(PAGE_SIZE_4K, &ro_fd_in_child);
        anon = mmap(NULL, PAGE_SIZE_4K, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        assert_true(anon != MAP_FAILED);
        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);

        child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                char c, path[64];
                int ro, rw;

                /* Keep: mapped_by_child and anon (mapped), fd_rw (a writable fd, not mapped), a read-only
                 * fd of ro_fd_in_child. */
                munmap(fd_in_child, PAGE_SIZE_4K);
                munmap(ro_fd_in_child, PAGE_SIZE_4K);
                rw = fcntl(fd_rw, F_DUPFD, 50);
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd_ro_src);
                ro = open(path, O_RDONLY);
                close(fd_mapped);
                close(fd_rw);
                close(fd_ro_src);
                close(pipefd[1]);
                if (rw < 0 || ro < 0)
                        _exit(2);
                (void)!read(pipefd[0], &c, 1);
                _exit(0);
        }
        close(pipefd[0]);
        close(fd_mapped);
        close(fd_ro_src);
        /* Created after the fork: only this process maps it, and its fd is closed. */
        fd_mine = memfd_mapped(PAGE_SIZE_4K, &mine);
        close(fd_mine);

        /* Wait until the child has dropped what it must not hold. */
        for (int i = 0; i < 500; i++) {
                ProcMap *cm = NULL;
                size_t cn = 0;
                bool gone = true;
                assert_int_equal(proc_maps_read(child, &cm, &cn), 0);
                for (size_t k = 0; k < cn; k++)
                        if (cm[k].start == (uintptr_t)fd_in_child ||
                            cm[k].start == (uintptr_t)ro_fd_in_child)
                                gone = false;
                proc_maps_free(cm, cn);
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)child, fd_rw);
                if (gone && access(path, F_OK) < 0)
                        break;
                usleep(10000);
        }

        assert_int_equal(proc_maps_read(getpid(), &maps, &n_maps), 0);
        assert_int_equal(hazards_shared_elsewhere(getpid(), maps, n_maps, &s, &n), 0);

        const HazardShared *h = find_map(s, n, maps, n_maps, mapped_by_child);
        assert_non_null(h);
        assert_int_equal(h->n_pids, 1);
        assert_int_equal(h->pids[0], child);
        assert_false(h->self_fd);

        h = find_map(s, n, maps, n_maps, anon);
        assert_non_null(h);
        assert_int_equal(h->n_pids, 1);
        assert_int_equal(h->pids[0], child);

        /* Held for writing by the child, and open here too. */
        h = find_map(s, n, maps, n_maps, fd_in_child);
        assert_non_null(h);
        assert_int_equal(h->n_pids, 1);
        assert_int_equal(h->pids[0], child);
        assert_true(h->self_fd);

        /* A read-only fd cannot change it; nobody else has this one at all. */
        assert_null(find_map(s, n, maps, n_maps, ro_fd_in_child));
        assert_null(find_map(s, n, maps, n_maps, mine));
        for (size_t i = 0; i < n; i++) {
                assert_true(s[i].n_pids > 0);
                if (i > 0)
                        assert_true(s[i - 1].dev_major < s[i].dev_major ||
                                    (s[i - 1].dev_major == s[i].dev_major &&
                                     s[i - 1].dev_minor < s[i].dev_minor) ||
                                    (s[i - 1].dev_major == s[i].dev_major &&
                                     s[i - 1].dev_minor == s[i].dev_minor && s[i - 1].inode < s[i].inode));
        }
        free(s);

        close(pipefd[1]);
        int status;
        assert_int_equal(waitpid(child, &status, 0), child);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        /* The child is gone: nothing is shared any more. */
        assert_int_equal(hazards_shared_elsewhere(getpid(), maps, n_maps, &s, &n), 0);
        assert_int_equal(n, 0);
        assert_null(s);
        proc_maps_free(maps, n_maps);

        /* No shared mappings at all. */
        assert_int_equal(hazards_shared_elsewhere(getpid(), NULL, 0, &s, &n), 0);
        assert_int_equal(n, 0);

        close(fd_rw);
        munmap(mapped_by_child, PAGE_SIZE_4K);
        munmap(fd_in_child, PAGE_SIZE_4K);
        munmap(ro_fd_in_child, PAGE_SIZE_4K);
        munmap(mine, PAGE_SIZE_4K);
        munmap(anon, PAGE_SIZE_4K);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fdinfo_parse),
                cmocka_unit_test(test_fdinfo_incomplete),
                cmocka_unit_test(test_fdinfo_malformed),
                cmocka_unit_test(test_fdinfo_flags),
                cmocka_unit_test(test_normalize),
                cmocka_unit_test(test_json),
                cmocka_unit_test(test_robustness),
                cmocka_unit_test(test_self_pinned),
                cmocka_unit_test(test_self_shared),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests for the /proc parsers, on samples and on this process. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "procfs.h"
#include "util.h"

static void test_maps_parse(void **state)
{
        static const char text[] =
                "55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234567                    /usr/bin/cat\n"
                "55d0c0c21000-55d0c0c42000 rw-p 00000000 00:00 0                          [heap]\n"
                "7f3a00000000-7f3a00021000 rw-s 00000000 00:01 2048                       /memfd:pool (deleted)\n"
                "7f3a10000000-7f3a10001000 rwxp 00003000 fd:02 99                         /opt/my app/lib x.so\n"
                "7f3a20000000-7f3a20400000 ---p 00000000 00:00 0 \n"
                "7ffd1e9f3000-7ffd1ea14000 rw-p 00000000 00:00 0                          [stack]\n"
                "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
        ProcMap *m = NULL;
        size_t n = 0;

        assert_int_equal(proc_maps_parse(text, &m, &n), 0);
        assert_int_equal(n, 7);
        assert_int_equal(m[0].start, 0x55d0c0a00000ULL);
        assert_int_equal(m[0].end, 0x55d0c0a02000ULL);
        assert_int_equal(m[0].prot, PROT_READ);
        assert_false(m[0].shared);
        assert_int_equal(m[0].dev_major, 8);
        assert_int_equal(m[0].dev_minor, 1);
        assert_int_equal(m[0].inode, 1234567);
        assert_string_equal(m[0].name, "/usr/bin/cat");
        assert_string_equal(m[1].name, "[heap]");
        assert_true(m[2].shared);
        assert_string_equal(m[2].name, "/memfd:pool (deleted)");
        assert_int_equal(m[3].prot, PROT_READ | PROT_WRITE | PROT_EXEC);
        assert_int_equal(m[3].offset, 0x3000);
        assert_int_equal(m[3].dev_major, 0xfd);
        assert_string_equal(m[3].name, "/opt/my app/lib x.so");
        assert_null(m[4].name);
        assert_int_equal(m[4].prot, 0);
        assert_int_equal(m[6].start, 0xffffffffff600000ULL);
        proc_maps_free(m, n);

        assert_int_equal(proc_maps_parse("", &m, &n), 0);
        assert_int_equal(n, 0);
        proc_maps_free(m, n);

        assert_int_equal(proc_maps_parse("garbage line\n", &m, &n), -EBADMSG);
        assert_int_equal(proc_maps_parse("1000-2000 rw-p 0 08:01\n", &m, &n), -EBADMSG);
}

static void test_status_parse(void **state)
{
        static const char text[] = "Name:\tredis-server\n"
                                   "Umask:\t0022\n"
                                   "State:\tS (sleeping)\n"
                                   "Tgid:\t812\n"
                                   "Pid:\t813\n"
                                   "TracerPid:\t77\n"
                                   "Uid:\t107\t107\t107\t107\n"
                                   "SigPnd:\t0000000000000100\n"
                                   "SigBlk:\t0000000000014000\n"
                                   "Seccomp:\t2\n";
        ProcStatus st;

        assert_int_equal(proc_status_parse(text, &st), 0);
        assert_string_equal(st.name, "redis-server");
        assert_int_equal(st.state, 'S');
        assert_int_equal(st.tgid, 812);
        assert_int_equal(st.tracer, 77);
        assert_int_equal(st.seccomp, 2);
        assert_int_equal(st.sigpnd, 0x100);
        assert_int_equal(st.sigblk, 0x14000);

        assert_int_equal(proc_status_parse("Name:\tx\nState:\tZ (zombie)\nTgid:\t5\n", &st), 0);
        assert_int_equal(st.state, 'Z');
        assert_int_equal(st.seccomp, -1);
        assert_int_equal(st.tracer, 0);

        assert_int_equal(proc_status_parse("Umask:\t0022\n", &st), -EBADMSG);
        assert_int_equal(proc_status_parse("", &st), -EBADMSG);
}

static void test_stat_flags(void **state)
{
        unsigned long f;

        assert_int_equal(proc_stat_flags_parse("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", &f), 0);
        assert_int_equal(f, 2129984);
        assert_true(f & 0x00200000);
        /* a comm with spaces and parentheses */
        assert_int_equal(proc_stat_flags_parse("99 (a) b (c)) R 1 99 99 0 -1 4194560 5 0", &f), 0);
        assert_int_equal(f, 4194560);
        assert_int_equal(proc_stat_flags_parse("no parenthesis here", &f), -EBADMSG);
        assert_int_equal(proc_stat_flags_parse("1 (x) S", &f), -EBADMSG);
}

static void test_syscall_parse(void **state)
{
        uint64_t a[6];
        long nr;

        assert_int_equal(proc_syscall_parse("28 0x7f0000000000 0x200000 0x4 0x0 0x0 0x0 0x7ffd00 0x7f00\n", &nr, a), 0);
        assert_int_equal(nr, 28);
        assert_int_equal(a[0], 0x7f0000000000ULL);
        assert_int_equal(a[1], 0x200000);
        assert_int_equal(a[2], 4);
        assert_int_equal(proc_syscall_parse("running\n", &nr, a), -EAGAIN);
        assert_int_equal(proc_syscall_parse("-1 0x7ffd00 0x7f00\n", &nr, a), -ENODATA);
        assert_int_equal(proc_syscall_parse("junk", &nr, a), -EBADMSG);
}

static void test_self(void **state)
{
        ProcMap *m = NULL;
        size_t n = 0;
        ProcStatus st;
        pid_t *tids = NULL;
        size_t n_tids = 0;
        char **argv = NULL, *exe = NULL;
        bool stack = false, found_tid = false;

        assert_int_equal(proc_maps_read(getpid(), &m, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (m[i].name && streq(m[i].name, "[stack]"))
                        stack = true;
        assert_true(stack);
        proc_maps_free(m, n);

        assert_int_equal(proc_status_read(getpid(), 0, &st), 0);
        assert_int_equal(st.tgid, getpid());
        assert_int_equal(proc_status_read(getpid(), (pid_t)syscall(SYS_gettid), &st), 0);

        assert_int_equal(proc_task_list(getpid(), &tids, &n_tids), 0);
        for (size_t i = 0; i < n_tids; i++)
                if (tids[i] == (pid_t)syscall(SYS_gettid))
                        found_tid = true;
        assert_true(found_tid);
        free(tids);

        assert_int_equal(proc_cmdline_read(getpid(), &argv), 0);
        assert_non_null(argv[0]);
        assert_non_null(strstr(argv[0], "procfs"));
        strv_free(argv);
        assert_int_equal(proc_exe_read(getpid(), &exe), 0);
        assert_non_null(strstr(exe, "procfs"));
        free(exe);

        assert_int_equal(proc_is_kthread(getpid()), 0);
        if (access("/proc/2/stat", F_OK) == 0) {
                _cleanup_free_ char *comm = NULL;
                if (read_full_file("/proc/2/comm", &comm, NULL) >= 0 && startswith(comm, "kthreadd"))
                        assert_int_equal(proc_is_kthread(2), 1);
        }
        assert_int_equal(proc_status_read(999999999, 0, &st), -ENOENT);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_maps_parse),
                cmocka_unit_test(test_status_parse),
                cmocka_unit_test(test_stat_flags),
                cmocka_unit_test(test_syscall_parse),
                cmocka_unit_test(test_self),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Unit tests for the /proc parsers: realistic samples (as kernel 6.x prints them), malformed input,
 * every truncation and a batch of mutations of each sample (no crash, only the documented results;
 * the ASan build catches a read past the end), and the real files of this process.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "procfs.h"
#include "util.h"

static pid_t my_gettid(void)
{
        return (pid_t)syscall(SYS_gettid);
}

/* ---- maps ---- */

static const char maps_sample[] =
        "55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234567                    /usr/bin/cat\n"
        "55d0c0a02000-55d0c0a07000 r-xp 00002000 08:01 1234567                    /usr/bin/cat\n"
        "55d0c0c21000-55d0c0c42000 rw-p 00000000 00:00 0                          [heap]\n"
        "7f3a00000000-7f3a00021000 rw-s 00000000 00:01 2048                       /memfd:pool (deleted)\n"
        "7f3a10000000-7f3a10001000 rwxp 00003000 fd:02 99                         /opt/my app/lib x.so\n"
        "7f3a20000000-7f3a20400000 ---p 00000000 00:00 0 \n"
        "7f3a30000000-7f3a30001000 rw-p 00000000 00:00 0                          [anon:jemalloc arena]\n"
        "7f3a40000000-7f3a40010000 rw-s 00000000 00:05 4113                       /dev/shm/a b (deleted) "
        "(deleted)\n"
        "7f3a50000000-7f3a50001000 r--s 00000000 103:05 77                        /var/lib/x.db\n"
        "7ffd1e9f3000-7ffd1ea14000 rw-p 00000000 00:00 0                          [stack]\n"
        "7ffd1eb4c000-7ffd1eb50000 r--p 00000000 00:00 0                          [vvar]\n"
        "7ffd1eb50000-7ffd1eb52000 r-xp 00000000 00:00 0                          [vdso]\n"
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]";

static void test_maps_parse(void **state)
{
        ProcMap *m = NULL;
        size_t n = 0;

        assert_int_equal(proc_maps_parse(maps_sample, &m, &n), 0);
        assert_int_equal(n, 13);

        assert_int_equal(m[0].start, 0x55d0c0a00000ULL);
        assert_int_equal(m[0].end, 0x55d0c0a02000ULL);
        assert_int_equal(m[0].prot, PROT_READ);
        assert_false(m[0].shared);
        assert_int_equal(m[0].offset, 0);
        assert_int_equal(m[0].dev_major, 8);
        assert_int_equal(m[0].dev_minor, 1);
        assert_int_equal(m[0].inode, 1234567);
        assert_string_equal(m[0].name, "/usr/bin/cat");

        assert_int_equal(m[1].prot, PROT_READ | PROT_EXEC);
        assert_int_equal(m[1].offset, 0x2000);

        assert_string_equal(m[2].name, "[heap]");
        assert_int_equal(m[2].prot, PROT_READ | PROT_WRITE);
        assert_int_equal(m[2].inode, 0);

        assert_true(m[3].shared);
        assert_string_equal(m[3].name, "/memfd:pool (deleted)");
        assert_int_equal(m[3].inode, 2048);

        assert_int_equal(m[4].prot, PROT_READ | PROT_WRITE | PROT_EXEC);
        assert_int_equal(m[4].offset, 0x3000);
        assert_int_equal(m[4].dev_major, 0xfd);
        assert_int_equal(m[4].dev_minor, 2);
        assert_string_equal(m[4].name, "/opt/my app/lib x.so");

        /* Anonymous, no name: the kernel still ends the line with a blank. */
        assert_null(m[5].name);
        assert_int_equal(m[5].prot, 0);
        assert_false(m[5].shared);

        assert_string_equal(m[6].name, "[anon:jemalloc arena]");
        assert_string_equal(m[7].name, "/dev/shm/a b (deleted) (deleted)");
        assert_true(m[7].shared);

        /* Majors above 0xff print with three digits. */
        assert_int_equal(m[8].dev_major, 0x103);
        assert_int_equal(m[8].dev_minor, 5);
        assert_int_equal(m[8].prot, PROT_READ);
        assert_true(m[8].shared);

        assert_string_equal(m[9].name, "[stack]");
        assert_string_equal(m[10].name, "[vvar]");
        assert_string_equal(m[11].name, "[vdso]");

        /* The last line has no newline; the top of the address space. */
        assert_int_equal(m[12].start, 0xffffffffff600000ULL);
        assert_int_equal(m[12].end, 0xffffffffff601000ULL);
        assert_int_equal(m[12].prot, PROT_EXEC);
        assert_string_equal(m[12].name, "[vsyscall]");
        proc_maps_free(m, n);
}

static void test_maps_parse_edges(void **state)
{
        ProcMap *m = NULL;
        size_t n = 99;

        /* Nothing at all: no mappings (a zombie's maps are empty). */
        assert_int_equal(proc_maps_parse("", &m, &n), 0);
        assert_int_equal(n, 0);
        proc_maps_free(m, n);

        /* Blank lines are skipped; no blank after the inode at the end of a line is accepted. */
        assert_int_equal(proc_maps_parse("\n1000-2000 rw-p 00000000 00:00 0\n\n", &m, &n), 0);
        assert_int_equal(n, 1);
        assert_null(m[0].name);
        proc_maps_free(m, n);

        /* A name keeps its own trailing blanks and inner runs of blanks. */
        assert_int_equal(proc_maps_parse("1000-2000 r--p 00000000 08:01 5   /tmp/a  b  \n", &m, &n), 0);
        assert_string_equal(m[0].name, "/tmp/a  b  ");
        proc_maps_free(m, n);

        /* A newline in a path is escaped by the kernel; the name stays as printed. */
        assert_int_equal(proc_maps_parse("1000-2000 r--p 00000000 08:01 5   /tmp/a\\012b\n", &m, &n), 0);
        assert_string_equal(m[0].name, "/tmp/a\\012b");
        proc_maps_free(m, n);

        /* 32-bit style short addresses, upper-case hex, big inode. */
        assert_int_equal(
                proc_maps_parse("08048000-0804C000 r-xP 00000000 08:01 18446744073709551615 /bin/x\n", &m,
                                &n),
                -EBADMSG); /* 'P' is not a sharing flag */
        assert_int_equal(
                proc_maps_parse("08048000-0804C000 r-xp 00000000 08:01 18446744073709551615 /bin/x\n", &m,
                                &n),
                0);
        assert_int_equal(m[0].start, 0x08048000);
        assert_int_equal(m[0].end, 0x0804c000);
        assert_int_equal(m[0].inode, UINT64_MAX);
        proc_maps_free(m, n);

        /* Paths as long as the kernel makes them are not truncated. */
        {
                size_t len = 3 * 4096;
                _cleanup_free_ char *line = malloc(len + 128), *name = malloc(len + 1);

                assert_non_null(line);
                assert_non_null(name);
                name[0] = '/';
                for (size_t i = 1; i < len; i++)
                        name[i] = i % 50 == 0 ? '/' : i % 7 == 0 ? ' ' : (char)('a' + i % 26);
                name[len] = 0;
                snprintf(line, len + 128, "7f0000000000-7f0000001000 r--p 00000000 08:01 42   %s\n", name);
                assert_int_equal(proc_maps_parse(line, &m, &n), 0);
                assert_int_equal(n, 1);
                assert_string_equal(m[0].name, name);
                proc_maps_free(m, n);
        }

        /* Many lines grow the array. */
        {
                size_t k = 1000;
                _cleanup_free_ char *text = malloc(k * 64);
                char *p;

                assert_non_null(text);
                p = text;
                for (size_t i = 0; i < k; i++)
                        p += sprintf(p, "%zx-%zx rw-p 00000000 00:00 0 \n", (i + 1) * 0x10000,
                                     (i + 1) * 0x10000 + 0x1000);
                assert_int_equal(proc_maps_parse(text, &m, &n), 0);
                assert_int_equal(n, k);
                assert_int_equal(m[k - 1].start, k * 0x10000);
                proc_maps_free(m, n);
        }
}

static void test_maps_parse_malformed(void **state)
{
        static const char *const bad[] = {
                "garbage line\n",
                "1000-2000 rw-p 0 08:01\n",             /* no inode */
                "1000-2000 rw-p 00000000 08:01 x /a\n", /* inode not a number */
                "1000 rw-p 00000000 08:01 0\n",         /* no end */
                "1000-2000rw-p 00000000 08:01 0\n",     /* no blank after the range */
                "-1000-2000 rw-p 00000000 08:01 0\n",   /* a sign */
                " 1000-2000 rw-p 00000000 08:01 0\n",   /* a leading blank */
                "1000--2000 rw-p 00000000 08:01 0\n",
                "1000-+2000 rw-p 00000000 08:01 0\n",
                "0x1000-0x2000 rw-p 00000000 08:01 0\n",                /* no 0x in maps */
                "2000-1000 rw-p 00000000 08:01 0\n",                    /* end before start */
                "1000-1000 rw-p 00000000 08:01 0\n",                    /* empty */
                "10000000000000000-10000000001000000 rw-p 0 00:00 0\n", /* past 64 bits */
                "1000-2000 rw- 00000000 08:01 0\n",                     /* three permission letters */
                "1000-2000 rw-pp 00000000 08:01 0\n",                   /* five */
                "1000-2000 rwzp 00000000 08:01 0\n",                    /* not a permission letter */
                "1000-2000 wr-p 00000000 08:01 0\n",                    /* out of order */
                "1000-2000 rw-p 0000g000 08:01 0\n",                    /* offset not hex */
                "1000-2000 rw-p 00000000 0801 0\n",                     /* no ':' in the device */
                "1000-2000 rw-p 00000000 08:01:02 0\n",
                "1000-2000 rw-p 00000000 100000000:01 0\n", /* major past 32 bits */
                "1000-2000 rw-p 00000000 08:01 0/a\n",      /* no blank before the name */
                "1000-2000 rw-p 00000000 08:01 -5 /a\n",
                "1000-2000 rw-p 00000000 08:01 99999999999999999999 /a\n", /* inode past 64 bits */
                "1000-2000 rw-p",
                "1000-",
                "-",
                "\t\n",
                /* one good line, then a bad one: the whole text is refused */
                "1000-2000 rw-p 00000000 08:01 0 /a\n3000-4000 rw-p\n",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ProcMap *m = (ProcMap *)0x1;
                size_t n = 12345;

                if (proc_maps_parse(bad[i], &m, &n) != -EBADMSG)
                        fail_msg("accepted malformed maps text #%zu: \"%s\"", i, bad[i]);
                /* ret_ parameters untouched on failure */
                assert_ptr_equal(m, (ProcMap *)0x1);
                assert_int_equal(n, 12345);
        }
}

/* ---- status ---- */

static const char status_sample[] = "Name:\tredis-server\n"
                                    "Umask:\t0022\n"
                                    "State:\tS (sleeping)\n"
                                    "Tgid:\t812\n"
                                    "Ngid:\t0\n"
                                    "Pid:\t813\n"
                                    "PPid:\t1\n"
                                    "TracerPid:\t77\n"
                                    "Uid:\t107\t108\t109\t110\n"
                                    "Gid:\t113\t113\t113\t113\n"
                                    "FDSize:\t128\n"
                                    "Groups:\t113 \n"
                                    "NStgid:\t812\n"
                                    "VmPeak:\t  123456 kB\n"
                                    "VmRSS:\t    9876 kB\n"
                                    "Threads:\t5\n"
                                    "SigQ:\t0/63344\n"
                                    "SigPnd:\t0000000000000100\n"
                                    "ShdPnd:\t0000000000004000\n"
                                    "SigBlk:\t0000000000014000\n"
                                    "SigIgn:\tffffffffffffffff\n"
                                    "SigCgt:\t00000001800046eb\n"
                                    "CapEff:\t0000000000000000\n"
                                    "NoNewPrivs:\t1\n"
                                    "Seccomp:\t2\n"
                                    "Seccomp_filters:\t3\n"
                                    "Speculation_Store_Bypass:\tthread vulnerable\n"
                                    "Cpus_allowed_list:\t0-3\n"
                                    "Kthread:\t0\n"
                                    "voluntary_ctxt_switches:\t150\n";

static void test_status_parse(void **state)
{
        ProcStatus st;

        assert_int_equal(proc_status_parse(status_sample, &st), 0);
        assert_string_equal(st.name, "redis-server");
        assert_int_equal(st.state, 'S');
        assert_int_equal(st.tgid, 812);
        assert_int_equal(st.tracer, 77);
        assert_int_equal(st.uid[0], 107);
        assert_int_equal(st.uid[1], 108);
        assert_int_equal(st.uid[2], 109);
        assert_int_equal(st.uid[3], 110);
        assert_int_equal(st.seccomp, 2); /* not confused with Seccomp_filters */
        assert_int_equal(st.sigpnd, 0x100);
        assert_int_equal(st.shdpnd, 0x4000);
        assert_int_equal(st.sigblk, 0x14000);
        assert_false(st.kthread);

        /* The minimum; optional fields keep their defaults. */
        assert_int_equal(proc_status_parse("Name:\tx\nState:\tZ (zombie)\nTgid:\t5\n", &st), 0);
        assert_string_equal(st.name, "x");
        assert_int_equal(st.state, 'Z');
        assert_int_equal(st.tgid, 5);
        assert_int_equal(st.seccomp, -1);
        assert_int_equal(st.tracer, 0);
        assert_int_equal(st.uid[0], 0);
        assert_false(st.kthread);

        /* A kernel thread on a kernel with the Kthread field; the idle state. */
        assert_int_equal(
                proc_status_parse("Name:\tkthreadd\nState:\tI (idle)\nTgid:\t2\nKthread:\t1\n", &st), 0);
        assert_true(st.kthread);
        assert_int_equal(st.state, 'I');

        /* comm with blanks, ')' and a leading blank is kept as is; a tab arrives escaped. */
        assert_int_equal(proc_status_parse("Name:\t my (app) x\nState:\tR (running)\nTgid:\t9\n", &st), 0);
        assert_string_equal(st.name, " my (app) x");
        assert_int_equal(proc_status_parse("Name:\ta\\tb\nState:\tt (tracing stop)\nTgid:\t9\n", &st), 0);
        assert_string_equal(st.name, "a\\tb");
        assert_int_equal(st.state, 't');

        /* A long worker name is cut to what fits. */
        assert_int_equal(
                proc_status_parse("Name:\tkworker/u16:3-events_unbound\nState:\tI (idle)\nTgid:\t99\n", &st),
                0);
        assert_string_equal(st.name, "kworker/u16:3-e");

        /* Order does not matter; an empty Name is still a Name; the last line may lack its newline. */
        assert_int_equal(proc_status_parse("Tgid:\t7\nState:\tD (disk sleep)\nName:\t", &st), 0);
        assert_string_equal(st.name, "");
        assert_int_equal(st.state, 'D');
        assert_int_equal(st.tgid, 7);
}

static void test_status_parse_malformed(void **state)
{
        static const char *const bad[] = {
                "",
                "\n\n",
                "Umask:\t0022\n",
                "State:\tS (sleeping)\nTgid:\t5\n", /* no Name */
                "Name:\tx\nTgid:\t5\n",             /* no State */
                "Name:\tx\nState:\tS (sleeping)\n", /* no Tgid */
                "Name:\tx\nState:\t\nTgid:\t5\n",   /* empty State */
                "Name:\tx\nState:\t1\nTgid:\t5\n",  /* State not a letter */
                "Name:\tx\nState:\tS\nTgid:\tabc\n",
                "Name:\tx\nState:\tS\nTgid:\t-5\n",
                "Name:\tx\nState:\tS\nTgid:\t5 6\n",
                "Name:\tx\nState:\tS\nTgid:\t\n",
                "Name:\tx\nState:\tS\nTgid:\t99999999999\n", /* past pid_t */
                "Name:\tx\nState:\tS\nTgid:\t5\nTracerPid:\tz\n",
                "Name:\tx\nState:\tS\nTgid:\t5\nUid:\t1\t2\t3\n", /* three uids */
                "Name:\tx\nState:\tS\nTgid:\t5\nUid:\t1\t2\t3\t4\t5\n",
                "Name:\tx\nState:\tS\nTgid:\t5\nUid:\t1\t2\t3\t4294967296\n",
                "Name:\tx\nState:\tS\nTgid:\t5\nSeccomp:\tfilter\n",
                "Name:\tx\nState:\tS\nTgid:\t5\nSigPnd:\t00000000000000zz\n",
                "Name:\tx\nState:\tS\nTgid:\t5\nSigBlk:\t10000000000000000\n", /* past 64 bits */
                "Name:\tx\nState:\tS\nTgid:\t5\nKthread:\t2\n",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ProcStatus st = { .tgid = -42 };

                if (proc_status_parse(bad[i], &st) != -EBADMSG)
                        fail_msg("accepted malformed status text #%zu: \"%s\"", i, bad[i]);
                assert_int_equal(st.tgid, -42);
        }
}

/* ---- stat ---- */

static void test_stat_flags(void **state)
{
        unsigned long f = 0;

        /* kthreadd on 6.x */
        assert_int_equal(proc_stat_flags_parse(
                                 "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 20 0 0 "
                                 "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0\n",
                                 &f),
                         0);
        assert_int_equal(f, 2129984);
        assert_true(f & 0x00200000);

        /* an ordinary process */
        assert_int_equal(proc_stat_flags_parse(
                                 "812 (redis-server) S 1 812 812 0 -1 4194560 1204 0 5 0 33 12 0 0 20 0 "
                                 "5 0 4242 73000960 2469 18446744073709551615\n",
                                 &f),
                         0);
        assert_int_equal(f, 4194560);
        assert_false(f & 0x00200000);

        /* comm with blanks and ')' that look like the fields: only the last ')' counts */
        assert_int_equal(proc_stat_flags_parse("99 (a) R 1 2 3 4 5 6) S 1 99 99 34816 99 4194304 5 0\n", &f),
                         0);
        assert_int_equal(f, 4194304);
        assert_int_equal(proc_stat_flags_parse("99 ()) (() R 1 99 99 0 -1 2097216 5 0", &f), 0);
        assert_int_equal(f, 2097216);
        assert_int_equal(proc_stat_flags_parse("7 () Z 1 7 7 0 -1 4227084 0 0\n", &f), 0);
        assert_int_equal(f, 4227084);
        /* flags as the last field */
        assert_int_equal(proc_stat_flags_parse("7 (x) S 1 7 7 0 -1 64", &f), 0);
        assert_int_equal(f, 64);
}

static void test_stat_cpu(void **state)
{
        unsigned cpu = 4242;

        /* a 6.x line (52 fields): processor is field 39 */
        assert_int_equal(proc_stat_cpu_parse(
                                 "812 (redis-server) S 1 812 812 0 -1 4194560 1204 0 5 0 33 12 0 0 20 0 5 0 4242 "
                                 "73000960 2469 18446744073709551615 94000000000000 94000000100000 140720000000000 "
                                 "0 0 0 0 4097 17642 0 0 0 17 1 0 0 0 0 0 94000000200000 94000000300000 "
                                 "94000000400000 140720000001000 140720000001100 140720000001100 140720000002000 0\n",
                                 &cpu),
                         0);
        assert_int_equal(cpu, 1);
        /* negative fields before it (nice, priority of a real-time task) are fine; comm with ") " too */
        assert_int_equal(proc_stat_cpu_parse("5 (a) b) R 1 5 5 0 -1 4194304 0 0 0 0 0 0 0 0 -51 -20 1 0 9 0 0 "
                                             "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 7 50 1\n",
                                             &cpu),
                         0);
        assert_int_equal(cpu, 7);

        cpu = 4242;
        assert_int_equal(proc_stat_cpu_parse("7 (x) S 1 7 7 0 -1 64", &cpu), -EBADMSG); /* too short */
        assert_int_equal(proc_stat_cpu_parse("5 (a) R 1 5 5 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0 "
                                             "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 -3 0 0\n",
                                             &cpu),
                         -EBADMSG); /* a negative CPU */
        assert_int_equal(cpu, 4242);
}

static void test_self_cpu(void **state)
{
        unsigned cpu = 0;
        cpu_set_t set;

        assert_int_equal(proc_stat_cpu_read(getpid(), getpid(), &cpu), 0);
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        assert_true(CPU_ISSET(cpu, &set) || CPU_COUNT(&set) > 0);
        assert_int_equal(proc_stat_cpu_read(getpid(), 1 << 30, &cpu), -ENOENT);
}

static void test_stat_flags_malformed(void **state)
{
        static const char *const bad[] = {
                "",
                "no parenthesis here",
                "1 (x) S",
                "1 (x) S 0 0 0 0 -1", /* no flags */
                "1 (x) S 0 0 0 0 -1 ",
                "1 (x) S 0 0 0 0 -1 abc",
                "1 (x) S 0 0 0 0 -1 -5", /* flags are unsigned */
                "1 (x) S 0 0 0 0 -1 99999999999999999999",
                "1 (x) S 0 0 0 0 -1 12x",
                "1 (x) 5 0 0 0 0 -1 64", /* state not a letter */
                "1 (x)S 0 0 0 0 -1 64",
                "1 (x) S 0 0 a 0 -1 64",
                "1 (x) S 0 0 0 0 - 64",
                "(x) S 0 0 0 0 -1 64",  /* no pid */
                "1 x) S 0 0 0 0 -1 64", /* no '(' */
                "1 (x S 0 0 0 0 -1 64", /* no ')' */
                "1 ) (x S 0 0 0 0 -1 64",
                ")",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                unsigned long f = 4242;

                if (proc_stat_flags_parse(bad[i], &f) != -EBADMSG)
                        fail_msg("accepted malformed stat text #%zu: \"%s\"", i, bad[i]);
                assert_int_equal(f, 4242);
        }
}

/* ---- syscall ---- */

static void test_syscall_parse(void **state)
{
        uint64_t a[6] = {};
        long nr = 0;

        /* madvise(0x7f0000000000, 0x200000, MADV_DONTNEED) */
        assert_int_equal(
                proc_syscall_parse(
                        "28 0x7f0000000000 0x200000 0x4 0x0 0x0 0x0 0x7ffd1ea12f38 0x7f3a1c2e4b5b\n", &nr,
                        a),
                0);
        assert_int_equal(nr, 28);
        assert_int_equal(a[0], 0x7f0000000000ULL);
        assert_int_equal(a[1], 0x200000);
        assert_int_equal(a[2], 4);
        assert_int_equal(a[3], 0);
        assert_int_equal(a[5], 0);

        /* full 64-bit values, syscall 0, upper-case hex, no newline */
        assert_int_equal(
                proc_syscall_parse("0 0xffffffffffffffff 0x1 0x2 0x3 0x4 0xABCDEF 0x7ffd 0x7f00", &nr, a),
                0);
        assert_int_equal(nr, 0);
        assert_int_equal(a[0], UINT64_MAX);
        assert_int_equal(a[5], 0xabcdef);

        /* only the six arguments */
        assert_int_equal(proc_syscall_parse("202 0x1 0x2 0x3 0x4 0x5 0x6\n", &nr, a), 0);
        assert_int_equal(nr, 202);
        assert_int_equal(a[5], 6);

        /* not in a system call, and running: ret_ untouched */
        nr = 4242;
        a[0] = 4242;
        assert_int_equal(proc_syscall_parse("running\n", &nr, a), -EAGAIN);
        assert_int_equal(proc_syscall_parse("running", &nr, a), -EAGAIN);
        assert_int_equal(proc_syscall_parse("-1 0x7ffd1ea12f38 0x7f3a1c2e4b5b\n", &nr, a), -ENODATA);
        assert_int_equal(nr, 4242);
        assert_int_equal(a[0], 4242);
}

static void test_syscall_parse_malformed(void **state)
{
        static const char *const bad[] = {
                "",
                "\n",
                "junk",
                "runningx",
                "run",
                "28",                                     /* no arguments */
                "28 0x1 0x2 0x3 0x4 0x5",                 /* five */
                "28 0x1 0x2 0x3 0x4 0x5 0x6 0x7",         /* seven */
                "28 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8 0x9", /* nine */
                "28 1 2 3 4 5 6 7 8",                     /* no 0x */
                "28 0x1 0x2 0x3 0x4 0x5 0xg 0x7 0x8",
                "28 0x 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
                "28 0x10000000000000000 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
                "28 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8 junk",
                "28x 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
                "-2 0x1 0x2",
                "-1",
                "-1 0x1",
                "-1 0x1 0x2 0x3",
                "-1 zz 0x2",
                "- 0x1 0x2",
                "99999999999999999999 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
                " 28 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t a[6] = { 4242 };
                long nr = 4242;

                if (proc_syscall_parse(bad[i], &nr, a) != -EBADMSG)
                        fail_msg("accepted malformed syscall text #%zu: \"%s\"", i, bad[i]);
                assert_int_equal(nr, 4242);
                assert_int_equal(a[0], 4242);
        }
}

/* ---- every parser on every prefix and on mutations of the samples: no crash, documented results ---- */

static void run_all_parsers(const char *text)
{
        ProcMap *m = NULL;
        size_t n = 0;
        ProcStatus st;
        unsigned long f;
        uint64_t a[6];
        long nr;
        int r;

        r = proc_maps_parse(text, &m, &n);
        assert_true(r == 0 || r == -EBADMSG);
        if (r == 0) {
                for (size_t i = 0; i < n; i++)
                        assert_true(m[i].start < m[i].end);
                proc_maps_free(m, n);
        }
        r = proc_status_parse(text, &st);
        assert_true(r == 0 || r == -EBADMSG);
        if (r == 0)
                assert_true(strlen(st.name) < sizeof(st.name));
        r = proc_stat_flags_parse(text, &f);
        assert_true(r == 0 || r == -EBADMSG);
        r = proc_syscall_parse(text, &nr, a);
        assert_true(r == 0 || r == -EBADMSG || r == -EAGAIN || r == -ENODATA);
}

static void test_robustness(void **state)
{
        static const char *const samples[] = {
                maps_sample,
                status_sample,
                "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 20 0 0\n",
                "99 (a) b (c)) R 1 99 99 0 -1 4194560 5 0",
                "28 0x7f0000000000 0x200000 0x4 0x0 0x0 0x0 0x7ffd1ea12f38 0x7f3a1c2e4b5b\n",
                "-1 0x7ffd1ea12f38 0x7f3a1c2e4b5b\n",
                "running\n",
        };
        static const char interesting[] = {
                0x01, '\n', ' ', '\t', ')', '(', ':', '-', '0', 'x', 'f', 0x7f, (char)0xff,
        };
        unsigned seed = 12345;

        for (size_t s = 0; s < ELEMENTSOF(samples); s++) {
                size_t len = strlen(samples[s]);

                /* Every prefix, each in a buffer of its exact size so that ASan sees a read past it. */
                for (size_t k = 0; k <= len; k++) {
                        _cleanup_free_ char *t = strndup(samples[s], k);
                        assert_non_null(t);
                        run_all_parsers(t);
                }

                /* Random single and multiple byte changes. */
                for (int round = 0; round < 2000; round++) {
                        _cleanup_free_ char *t = strdup(samples[s]);
                        assert_non_null(t);
                        for (int j = 0; j <= round % 4; j++) {
                                seed = seed * 1103515245 + 12345;
                                size_t pos = (seed >> 8) % len;
                                seed = seed * 1103515245 + 12345;
                                char c = (seed >> 16) % 3 == 0
                                                 ? (char)(seed >> 8)
                                                 : interesting[(seed >> 8) % sizeof(interesting)];
                                t[pos] = c ?: '0';
                        }
                        run_all_parsers(t);
                }
        }
}

/* ---- this process ---- */

static void test_self_maps(void **state)
{
        char tmpl[] = "/tmp/test-procfs map XXXXXX", expect[PATH_MAX + 32];
        _cleanup_close_ int mfd = -EBADF, ffd = -EBADF;
        void *anon, *shared, *file;
        bool stack = false, seen_anon = false, seen_shared = false, seen_file = false;
        uintptr_t local = (uintptr_t)&stack;
        ProcMap *m = NULL;
        size_t n = 0;

        anon = mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(anon != MAP_FAILED);
        mfd = memfd_create("my pool (x)", MFD_CLOEXEC);
        assert_true(mfd >= 0);
        assert_int_equal(ftruncate(mfd, 8192), 0);
        shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        assert_true(shared != MAP_FAILED);
        /* A file with blanks in its name, unlinked while mapped at an offset. */
        ffd = mkostemp(tmpl, O_CLOEXEC);
        assert_true(ffd >= 0);
        assert_int_equal(ftruncate(ffd, 3 * 4096), 0);
        file = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, ffd, 4096);
        assert_true(file != MAP_FAILED);
        assert_int_equal(unlink(tmpl), 0);

        assert_int_equal(proc_maps_read(getpid(), &m, &n), 0);
        assert_true(n > 5);
        for (size_t i = 0; i < n; i++) {
                assert_true(m[i].start < m[i].end);
                if (i > 0)
                        assert_true(m[i - 1].end <= m[i].start);
                if (m[i].name && streq(m[i].name, "[stack]")) {
                        stack = true;
                        /* cmocka runs the tests on the main thread */
                        assert_true(m[i].start <= local && local < m[i].end);
                        assert_int_equal(m[i].prot, PROT_READ | PROT_WRITE);
                }
                if (m[i].start == (uintptr_t)anon) {
                        seen_anon = true;
                        assert_int_equal(m[i].end, (uintptr_t)anon + 3 * 4096);
                        assert_int_equal(m[i].prot, PROT_READ);
                        assert_false(m[i].shared);
                        assert_null(m[i].name);
                        assert_int_equal(m[i].inode, 0);
                }
                if (m[i].start == (uintptr_t)shared) {
                        seen_shared = true;
                        assert_true(m[i].shared);
                        assert_int_equal(m[i].prot, PROT_READ | PROT_WRITE);
                        assert_string_equal(m[i].name, "/memfd:my pool (x) (deleted)");
                }
                if (m[i].start == (uintptr_t)file) {
                        struct stat sb;

                        seen_file = true;
                        assert_int_equal(fstat(ffd, &sb), 0);
                        assert_int_equal(m[i].offset, 4096);
                        assert_int_equal(m[i].inode, sb.st_ino);
                        assert_int_equal(m[i].dev_major, major(sb.st_dev));
                        assert_int_equal(m[i].dev_minor, minor(sb.st_dev));
                        assert_int_equal(m[i].prot, PROT_READ | PROT_EXEC);
                        snprintf(expect, sizeof(expect), "%s (deleted)", tmpl);
                        assert_string_equal(m[i].name, expect);
                }
        }
        assert_true(stack);
        assert_true(seen_anon);
        assert_true(seen_shared);
        assert_true(seen_file);
        proc_maps_free(m, n);

        munmap(anon, 3 * 4096);
        munmap(shared, 8192);
        munmap(file, 4096);
}

static void test_self_status(void **state)
{
        char comm[17] = "";
        ProcStatus st;

        assert_int_equal(prctl(PR_GET_NAME, comm), 0);

        assert_int_equal(proc_status_read(getpid(), 0, &st), 0);
        assert_int_equal(st.tgid, getpid());
        assert_string_equal(st.name, comm);
        assert_true(st.state == 'R' || st.state == 'S');
        assert_int_equal(st.uid[0], getuid());
        assert_int_equal(st.uid[1], geteuid());
        assert_true(st.seccomp >= 0); /* every supported kernel has the field */
        assert_false(st.kthread);

        assert_int_equal(proc_status_read(getpid(), my_gettid(), &st), 0);
        assert_int_equal(st.tgid, getpid());
        assert_string_equal(st.name, comm);

        /* A blocked signal shows in SigBlk. */
        {
                sigset_t set, old;

                sigemptyset(&set);
                sigaddset(&set, SIGUSR2);
                assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
                assert_int_equal(proc_status_read(getpid(), my_gettid(), &st), 0);
                assert_true(st.sigblk & (1ULL << (SIGUSR2 - 1)));
                assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
        }
}

typedef struct Blocked {
        int fd;
        pid_t tid;
} Blocked;

static void *blocked_thread(void *userdata)
{
        Blocked *b = userdata;
        char c;

        __atomic_store_n(&b->tid, my_gettid(), __ATOMIC_SEQ_CST);
        (void)!read(b->fd, &c, 1);
        return NULL;
}

static void test_self_tasks_and_syscall(void **state)
{
        int pipefd[2];
        Blocked b = { .tid = 0 };
        pthread_t thread;
        pid_t *tids = NULL, tid = 0;
        size_t n_tids = 0;
        bool found_self = false, found_other = false;
        uint64_t a[6];
        long nr = -1;
        int r = -EAGAIN;

        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        b.fd = pipefd[0];
        assert_int_equal(pthread_create(&thread, NULL, blocked_thread, &b), 0);
        for (int i = 0; i < 2000 && !(tid = __atomic_load_n(&b.tid, __ATOMIC_SEQ_CST)); i++)
                usleep(1000);
        assert_true(tid > 0);

        assert_int_equal(proc_task_list(getpid(), &tids, &n_tids), 0);
        assert_true(n_tids >= 2);
        for (size_t i = 0; i < n_tids; i++) {
                if (i > 0)
                        assert_true(tids[i - 1] < tids[i]);
                if (tids[i] == my_gettid())
                        found_self = true;
                if (tids[i] == tid)
                        found_other = true;
        }
        assert_true(found_self);
        assert_true(found_other);
        free(tids);

        /* The other thread, once blocked, is seen in read(fd, ...). */
        for (int i = 0; i < 2000; i++) {
                r = proc_syscall_read(getpid(), tid, &nr, a);
                if (r == 0 && nr == SYS_read)
                        break;
                assert_true(r == 0 || r == -EAGAIN || r == -ENODATA);
                usleep(1000);
        }
        assert_int_equal(r, 0);
        assert_int_equal(nr, SYS_read);
        assert_int_equal(a[0], (uint64_t)pipefd[0]);
        assert_int_equal(a[2], 1);

        assert_int_equal(write(pipefd[1], "x", 1), 1);
        assert_int_equal(pthread_join(thread, NULL), 0);
        close(pipefd[0]);
        close(pipefd[1]);

        /* Gone once reaped (just after the join wakes, so allow a moment). */
        for (int i = 0; i < 2000 && (r = proc_syscall_read(getpid(), tid, &nr, a)) != -ENOENT; i++)
                usleep(1000);
        assert_int_equal(r, -ENOENT);
}

static void test_self_cmdline_exe(void **state)
{
        struct stat a, b;
        char **argv = NULL, *exe = NULL;

        assert_int_equal(proc_cmdline_read(getpid(), &argv), 0);
        assert_non_null(argv[0]);
        assert_string_equal(argv[0], program_invocation_name);
        assert_non_null(strstr(argv[0], "procfs"));
        strv_free(argv);

        assert_int_equal(proc_exe_read(getpid(), &exe), 0);
        assert_true(exe[0] == '/');
        assert_non_null(strstr(exe, "procfs"));
        assert_int_equal(stat(exe, &a), 0);
        assert_int_equal(stat("/proc/self/exe", &b), 0);
        assert_int_equal(a.st_dev, b.st_dev);
        assert_int_equal(a.st_ino, b.st_ino);
        free(exe);

        strv_free(NULL);
}

static void test_kthread(void **state)
{
        _cleanup_free_ char *comm = NULL;
        ProcStatus st;
        char **argv = NULL, *exe = NULL;

        assert_int_equal(proc_is_kthread(getpid()), 0);

        /* PID 2 is kthreadd, unless we are in a PID namespace. */
        if (read_full_file("/proc/2/comm", &comm, NULL) < 0 || !startswith(comm, "kthreadd")) {
                skip();
                return;
        }
        assert_int_equal(proc_is_kthread(2), 1);
        assert_int_equal(proc_status_read(2, 0, &st), 0);
        assert_int_equal(st.tgid, 2);
        assert_string_equal(st.name, "kthreadd");
        assert_int_equal(proc_exe_read(2, &exe), -ENOENT);
        assert_int_equal(proc_cmdline_read(2, &argv), 0);
        assert_null(argv[0]);
        strv_free(argv);
}

static void test_nonexistent(void **state)
{
        const pid_t pid = INT32_MAX; /* above any pid_max */
        ProcMap *m = NULL;
        size_t n = 0;
        ProcStatus st;
        pid_t *tids = NULL;
        char **argv = NULL, *exe = NULL;
        uint64_t a[6];
        long nr;

        assert_int_equal(proc_maps_read(pid, &m, &n), -ENOENT);
        assert_int_equal(proc_status_read(pid, 0, &st), -ENOENT);
        assert_int_equal(proc_status_read(getpid(), pid, &st), -ENOENT);
        assert_int_equal(proc_is_kthread(pid), -ENOENT);
        assert_int_equal(proc_task_list(pid, &tids, &n), -ENOENT);
        assert_int_equal(proc_cmdline_read(pid, &argv), -ENOENT);
        assert_int_equal(proc_exe_read(pid, &exe), -ENOENT);
        assert_int_equal(proc_syscall_read(pid, pid, &nr, a), -ENOENT);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_maps_parse),
                cmocka_unit_test(test_maps_parse_edges),
                cmocka_unit_test(test_maps_parse_malformed),
                cmocka_unit_test(test_status_parse),
                cmocka_unit_test(test_status_parse_malformed),
                cmocka_unit_test(test_stat_flags),
                cmocka_unit_test(test_stat_flags_malformed),
                cmocka_unit_test(test_stat_cpu),
                cmocka_unit_test(test_self_cpu),
                cmocka_unit_test(test_syscall_parse),
                cmocka_unit_test(test_syscall_parse_malformed),
                cmocka_unit_test(test_robustness),
                cmocka_unit_test(test_self_maps),
                cmocka_unit_test(test_self_status),
                cmocka_unit_test(test_self_tasks_and_syscall),
                cmocka_unit_test(test_self_cmdline_exe),
                cmocka_unit_test(test_kthread),
                cmocka_unit_test(test_nonexistent),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests for livesnapd's checkpoint store. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

static char dir[] = "/tmp/test-store.XXXXXX";

static void put_file(const char *path, const char *content)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
        close(fd);
}

static void add_one(Store *s, uid_t owner, const char *label, uint64_t time_usec, char ret_id[STORE_ID_LEN + 1])
{
        _cleanup_free_ char *tmp = NULL;
        StoreEntry e = { .owner = owner, .label = (char *)label, .pid = 42, .exe = (char *)"/usr/bin/x",
                         .cmdline = (char *)"x --y", .time_usec = time_usec, .freeze_us = 7 };

        assert_int_equal(store_new_id(s, e.id, &tmp), 0);
        assert_true(store_id_valid(e.id));
        put_file(tmp, "image bytes");
        assert_int_equal(store_add(s, &e, tmp), 0);
        assert_int_equal(access(tmp, F_OK), -1);
        memcpy(ret_id, e.id, STORE_ID_LEN + 1);
}

static void test_validation(void **state)
{
        assert_true(store_id_valid("0123456789abcdef"));
        assert_false(store_id_valid("0123456789ABCDEF"));
        assert_false(store_id_valid("../../etc/passwd"));
        assert_false(store_id_valid("0123456789abcde"));
        assert_false(store_id_valid("0123456789abcdef0"));
        assert_false(store_id_valid(""));
        assert_false(store_id_valid(NULL));

        assert_true(store_label_valid(""));
        assert_true(store_label_valid("nightly before upgrade"));
        assert_true(store_label_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
        assert_false(store_label_valid("a/b"));
        assert_false(store_label_valid("../x"));
        assert_false(store_label_valid("tab\there"));
        assert_false(store_label_valid("\xc3"));             /* truncated sequence */
        assert_false(store_label_valid("\xc0\xaf"));         /* overlong '/' */
        assert_false(store_label_valid("\xed\xa0\x80"));     /* surrogate */
        assert_false(store_label_valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
        assert_false(store_label_valid("\xc2\x85"));         /* C1 control */
        /* The UTF-8 rules alone, which the CLI applies before it sends a label. */
        assert_true(utf8_is_valid(""));
        assert_true(utf8_is_valid("tab\there \x7f"));
        assert_true(utf8_is_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"));
        assert_false(utf8_is_valid("bad\xffutf8"));
        assert_false(utf8_is_valid("\xe2\x82"));     /* cut at the end */
        assert_false(utf8_is_valid("\xe2\x82x"));    /* cut by an ASCII byte */
        assert_false(utf8_is_valid("\xe0\x80\xaf")); /* overlong, three bytes */
        assert_false(utf8_is_valid("\xed\xbf\xbf")); /* surrogate */
        assert_false(utf8_is_valid("\x80"));         /* stray continuation byte */
        char long_label[STORE_LABEL_MAX + 2];
        memset(long_label, 'a', sizeof(long_label) - 1);
        long_label[sizeof(long_label) - 1] = 0;
        assert_false(store_label_valid(long_label));
        long_label[STORE_LABEL_MAX] = 0;
        assert_true(store_label_valid(long_label));
}

static void test_add_reopen_delete(void **state)
{
        char sub[256], err[256] = "", id1[STORE_ID_LEN + 1], id2[STORE_ID_LEN + 1], path[512];
        Store *s = NULL;
        struct stat st;
        const StoreEntry *e;

        snprintf(sub, sizeof(sub), "%s/store", dir);
        assert_int_equal(store_open(sub, &s, err, sizeof(err)), 0);
        assert_int_equal(stat(sub, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);

        add_one(s, 65534, "first", 1000, id1);
        add_one(s, 0, "", 2000, id2);
        assert_int_equal(store_n_entries(s), 2);

        /* files: 0600, owned by the requester */
        snprintf(path, sizeof(path), "%s/%s.lsnap", sub, id1);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_uid, 65534);
        snprintf(path, sizeof(path), "%s/%s.json", sub, id1);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_uid, 65534);

        /* debris: a temporary, a record without image, a stranger */
        snprintf(path, sizeof(path), "%s/.0000000000000000.lsnap.tmp", sub);
        put_file(path, "half");
        snprintf(path, sizeof(path), "%s/1111111111111111.json", sub);
        put_file(path, "{\"id\":\"1111111111111111\",\"owner\":0}");
        store_free(s);

        chmod(sub, 0755);
        assert_int_equal(store_open(sub, &s, err, sizeof(err)), 0);
        assert_int_equal(stat(sub, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(store_n_entries(s), 2);
        snprintf(path, sizeof(path), "%s/.0000000000000000.lsnap.tmp", sub);
        assert_int_equal(access(path, F_OK), -1);
        snprintf(path, sizeof(path), "%s/1111111111111111.json", sub);
        assert_int_equal(access(path, F_OK), -1);

        e = store_find(s, id1);
        assert_non_null(e);
        assert_string_equal(e->label, "first");
        assert_int_equal(e->owner, 65534);
        assert_int_equal(e->pid, 42);
        assert_string_equal(e->exe, "/usr/bin/x");
        assert_string_equal(e->cmdline, "x --y");
        assert_int_equal(e->time_usec, 1000);
        assert_int_equal(e->size, strlen("image bytes"));
        assert_int_equal(e->freeze_us, 7);
        assert_null(store_find(s, "../../etc/passwd"));

        assert_int_equal(store_delete(s, id1), 0);
        assert_int_equal(store_delete(s, id1), -ENOENT);
        assert_int_equal(store_delete(s, "../x"), -EINVAL);
        assert_int_equal(store_n_entries(s), 1);
        snprintf(path, sizeof(path), "%s/%s.lsnap", sub, id1);
        assert_int_equal(access(path, F_OK), -1);
        store_free(s);
}

static void removed_cb(void *userdata, const char *id)
{
        (*(int *)userdata)++;
}

static void test_retention(void **state)
{
        char sub[256], err[256] = "", id[STORE_ID_LEN + 1];
        Store *s = NULL;
        int removed = 0;

        snprintf(sub, sizeof(sub), "%s/retention", dir);
        assert_int_equal(store_open(sub, &s, err, sizeof(err)), 0);
        for (int i = 0; i < 5; i++)
                add_one(s, 1000, "a", 1000000ULL * (uint64_t)(i + 1), id);
        for (int i = 0; i < 2; i++)
                add_one(s, 2000, "b", 1000000ULL * (uint64_t)(i + 1), id);

        /* at most 3 per user: user 1000 loses its 2 oldest */
        assert_int_equal(store_apply_retention(s, 3, 0, 0, removed_cb, &removed), 0);
        assert_int_equal(removed, 2);
        assert_int_equal(store_n_entries(s), 5);
        for (size_t i = 0; i < store_n_entries(s); i++)
                if (store_entry(s, i)->owner == 1000)
                        assert_true(store_entry(s, i)->time_usec >= 3000000);

        /* older than 2 s at t = 5.5 s: only the checkpoints at 4 s and 5 s stay */
        removed = 0;
        assert_int_equal(store_apply_retention(s, 0, 2, 5500000, removed_cb, &removed), 0);
        assert_int_equal(removed, 3);
        assert_int_equal(store_n_entries(s), 2);
        store_free(s);
}

static void test_bad_dir(void **state)
{
        char err[256] = "";
        Store *s = NULL;

        assert_int_equal(store_open("relative", &s, err, sizeof(err)), -EINVAL);
        assert_true(store_open("/proc/1/nonexistent/store", &s, err, sizeof(err)) < 0);
        assert_non_null(strstr(err, "/proc/1/nonexistent/store"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_validation),
                cmocka_unit_test(test_add_reopen_delete),
                cmocka_unit_test(test_retention),
                cmocka_unit_test(test_bad_dir),
        };
        int r;

        assert_non_null(mkdtemp(dir));
        r = cmocka_run_group_tests(tests, NULL, NULL);
        {
                char cmd[300];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                (void)!system(cmd);
        }
        return r;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests for livesnapd's configuration parser: every key, and every error with file and line. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "config.h"
#include "util.h"

static int parse(Config *c, const char *text, char *err, size_t errlen)
{
        config_init(c);
        return config_parse(c, "/etc/livesnap/livesnap.json", text, strlen(text), err, errlen);
}

static void test_defaults(void **state)
{
        Config c;
        char err[256] = "";

        assert_int_equal(parse(&c, "{}", err, sizeof(err)), 0);
        assert_null(c.store_dir);
        assert_int_equal(c.buffer_size, 64ULL << 20);
        assert_int_equal(c.max_jobs, 4);
        assert_int_equal(c.max_jobs_per_user, 2);
        config_done(&c);
}

static void test_every_key(void **state)
{
        static const char text[] = "{\n"
                                   "  \"_comment\": \"ignored\",\n"
                                   "  \"store_dir\": \"/srv/livesnap\",\n"
                                   "  \"buffer_size\": \"128M\",\n"
                                   "  \"rate_limit\": 104857600,\n"
                                   "  \"compress_level\": 3,\n"
                                   "  \"max_jobs\": 8,\n"
                                   "  \"max_jobs_per_user\": 3,\n"
                                   "  \"retention\": { \"max_checkpoints_per_user\": 5, \"max_age_hours\": 48 }\n"
                                   "}\n";
        Config c;
        char err[256] = "";

        assert_int_equal(parse(&c, text, err, sizeof(err)), 0);
        assert_string_equal(c.store_dir, "/srv/livesnap");
        assert_int_equal(c.buffer_size, 128ULL << 20);
        assert_int_equal(c.rate_limit, 104857600);
        assert_int_equal(c.compress_level, 3);
        assert_int_equal(c.max_jobs, 8);
        assert_int_equal(c.max_jobs_per_user, 3);
        assert_int_equal(c.max_checkpoints_per_user, 5);
        assert_int_equal(c.max_age_sec, 48 * 3600);
        config_done(&c);
}

static void expect_error(const char *text, const char *where_what)
{
        Config c;
        char err[256] = "";

        assert_int_equal(parse(&c, text, err, sizeof(err)), -EINVAL);
        if (!strstr(err, where_what))
                fail_msg("error \"%s\" does not contain \"%s\"", err, where_what);
        config_done(&c);
}

static void test_errors(void **state)
{
        expect_error("{\n  \"store_dir\": \"/x\",\n  \"bufer_size\": 1\n}\n",
                     "/etc/livesnap/livesnap.json:3: unknown key \"bufer_size\"");
        expect_error("{\n\n  \"max_jobs\": \"four\"\n}", ":3: \"max_jobs\" must be a whole number");
        expect_error("{ \"max_jobs\": 0 }", ":1: \"max_jobs\" must be at least 1");
        expect_error("{ \"max_jobs\": -2 }", "must be between 0 and");
        expect_error("{ \"compress_level\": 20 }", "\"compress_level\" must be between 0 and 19");
        expect_error("{ \"store_dir\": \"relative/dir\" }", "\"store_dir\" must be an absolute path");
        expect_error("{ \"store_dir\": 5 }", "\"store_dir\" must be an absolute path");
        expect_error("{ \"buffer_size\": \"lots\" }", "\"buffer_size\" must be a size");
        expect_error("{ \"buffer_size\": \"1M\" }", "\"buffer_size\" must be at least 4M");
        expect_error("{\n \"retention\": {\n  \"max_age\": 3 } }", ":3: unknown key \"retention.max_age\"");
        expect_error("{ \"retention\": 3 }", "\"retention\" must be an object");
        /* syntax errors name the line where parsing stopped */
        expect_error("{\n  \"max_jobs\": 4,\n  \"max_jobs_per_user\" 2\n}\n", "livesnap.json:3:");
        expect_error("{\n  \"max_jobs\": 4,\n", "livesnap.json:3: unexpected end of file");
        expect_error("[1, 2]", ":1: the configuration must be a JSON object");
        expect_error("{} {}", "unexpected text after the configuration object");
        expect_error("", "unexpected end of file");
}

/* The shipped example documents every key with its default: it must parse to the defaults. */
static void test_example(void **state)
{
        Config c, d;
        char err[256] = "";

        config_init(&c);
        config_init(&d);
        assert_int_equal(config_load(&c, TOP_SRCDIR "/config.example.json", false, err, sizeof(err)), 0);
        assert_string_equal(c.store_dir, "/var/lib/livesnap");
        assert_int_equal(c.buffer_size, d.buffer_size);
        assert_int_equal(c.rate_limit, d.rate_limit);
        assert_int_equal(c.compress_level, d.compress_level);
        assert_int_equal(c.max_jobs, d.max_jobs);
        assert_int_equal(c.max_jobs_per_user, d.max_jobs_per_user);
        assert_int_equal(c.max_checkpoints_per_user, d.max_checkpoints_per_user);
        assert_int_equal(c.max_age_sec, d.max_age_sec);
        config_done(&c);
}

static void test_load(void **state)
{
        Config c;
        char err[256] = "";

        config_init(&c);
        assert_int_equal(config_load(&c, "/nonexistent/livesnap.json", true, err, sizeof(err)), 0);
        assert_int_equal(config_load(&c, "/nonexistent/livesnap.json", false, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "/nonexistent/livesnap.json"));
        config_done(&c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_every_key),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_example),
                cmocka_unit_test(test_load),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

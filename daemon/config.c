/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdarg.h>
#include <json-c/json.h>

#include "config.h"
#include "util.h"

void config_init(Config *c)
{
        *c = (Config){
                .buffer_size = 64ULL << 20,
                .max_jobs = 4,
                .max_jobs_per_user = 2,
                .max_checkpoints_per_user = 16,
        };
}

void config_done(Config *c)
{
        free(c->store_dir);
        c->store_dir = NULL;
}

/* Line of the first byte at offset in text, 1-based. */
static unsigned line_of_offset(const char *text, size_t len, size_t offset)
{
        unsigned line = 1;

        for (size_t i = 0; i < offset && i < len; i++)
                if (text[i] == '\n')
                        line++;
        return line;
}

/* json-c keeps no positions: find the line of "key" (the first occurrence after parent's, if any). */
static unsigned line_of_key(const char *text, size_t len, const char *parent, const char *key)
{
        char needle[256];
        const char *from = text, *p;

        if (parent) {
                snprintf(needle, sizeof(needle), "\"%s\"", parent);
                p = memmem(text, len, needle, strlen(needle));
                if (p)
                        from = p;
        }
        snprintf(needle, sizeof(needle), "\"%s\"", key);
        p = memmem(from, len - (size_t)(from - text), needle, strlen(needle));
        return p ? line_of_offset(text, len, (size_t)(p - text)) : 1;
}

typedef struct Ctx {
        const char *path, *text;
        size_t len;
        char *err;
        size_t errlen;
} Ctx;

static int fail(Ctx *x, const char *parent, const char *key, const char *fmt, ...) _printf_(4, 5);

static int fail(Ctx *x, const char *parent, const char *key, const char *fmt, ...)
{
        char reason[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        snprintf(x->err, x->errlen, "%s:%u: %s", x->path, key ? line_of_key(x->text, x->len, parent, key) : 1,
                 reason);
        return -EINVAL;
}

static int get_uint(Ctx *x, const char *parent, const char *key, json_object *v, uint64_t max, uint64_t *ret)
{
        int64_t n;

        if (!json_object_is_type(v, json_type_int))
                return fail(x, parent, key, "\"%s\" must be a whole number", key);
        n = json_object_get_int64(v);
        if (n < 0 || (uint64_t)n > max)
                return fail(x, parent, key, "\"%s\" must be between 0 and %" PRIu64, key, max);
        *ret = (uint64_t)n;
        return 0;
}

/* A size: a number of bytes, or a string such as "64M". */
static int get_size(Ctx *x, const char *key, json_object *v, uint64_t *ret)
{
        if (json_object_is_type(v, json_type_int)) {
                if (json_object_get_int64(v) < 0)
                        return fail(x, NULL, key, "\"%s\" must not be negative", key);
                *ret = (uint64_t)json_object_get_int64(v);
                return 0;
        }
        if (json_object_is_type(v, json_type_string) && parse_size(json_object_get_string(v), ret) >= 0)
                return 0;
        return fail(x, NULL, key, "\"%s\" must be a size in bytes or a string such as \"64M\"", key);
}

int config_parse(Config *c, const char *path, const char *text, size_t len, char *err, size_t errlen)
{
        Ctx x = { path, text, len, err, errlen };
        json_tokener *tok;
        json_object *root, *v;
        enum json_tokener_error jerr;
        uint64_t n;
        int r = 0;

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, text, (int)len);
        jerr = json_tokener_get_error(tok);
        if (!root || jerr != json_tokener_success) {
                size_t end = json_tokener_get_parse_end(tok);
                snprintf(err, errlen, "%s:%u: %s", path, line_of_offset(text, len, end),
                         jerr == json_tokener_continue ? "unexpected end of file" : json_tokener_error_desc(jerr));
                json_tokener_free(tok);
                json_object_put(root);
                return -EINVAL;
        }
        /* Anything after the object but white space is an error too. */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
                if (!strchr(" \t\r\n", text[i])) {
                        snprintf(err, errlen, "%s:%u: unexpected text after the configuration object", path,
                                 line_of_offset(text, len, i));
                        json_tokener_free(tok);
                        json_object_put(root);
                        return -EINVAL;
                }
        json_tokener_free(tok);

        if (!json_object_is_type(root, json_type_object)) {
                json_object_put(root);
                snprintf(err, errlen, "%s:1: the configuration must be a JSON object", path);
                return -EINVAL;
        }

        json_object_object_foreach(root, key, val)
        {
                v = val;
                if (streq(key, "store_dir")) {
                        const char *s = json_object_get_string(v);
                        if (!json_object_is_type(v, json_type_string) || !s || s[0] != '/') {
                                r = fail(&x, NULL, key, "\"store_dir\" must be an absolute path");
                                break;
                        }
                        free(c->store_dir);
                        c->store_dir = strdup(s);
                        if (!c->store_dir) {
                                r = -ENOMEM;
                                break;
                        }
                } else if (streq(key, "buffer_size")) {
                        r = get_size(&x, key, v, &n);
                        if (r >= 0 && n < (4ULL << 20))
                                r = fail(&x, NULL, key, "\"buffer_size\" must be at least 4M");
                        if (r < 0)
                                break;
                        c->buffer_size = n;
                } else if (streq(key, "rate_limit")) {
                        r = get_size(&x, key, v, &c->rate_limit);
                        if (r < 0)
                                break;
                } else if (streq(key, "compress_level")) {
                        r = get_uint(&x, NULL, key, v, 19, &n);
                        if (r < 0)
                                break;
                        c->compress_level = (int)n;
                } else if (streq(key, "max_jobs")) {
                        r = get_uint(&x, NULL, key, v, 1024, &n);
                        if (r >= 0 && n == 0)
                                r = fail(&x, NULL, key, "\"max_jobs\" must be at least 1");
                        if (r < 0)
                                break;
                        c->max_jobs = (unsigned)n;
                } else if (streq(key, "max_jobs_per_user")) {
                        r = get_uint(&x, NULL, key, v, 1024, &n);
                        if (r >= 0 && n == 0)
                                r = fail(&x, NULL, key, "\"max_jobs_per_user\" must be at least 1");
                        if (r < 0)
                                break;
                        c->max_jobs_per_user = (unsigned)n;
                } else if (streq(key, "retention")) {
                        if (!json_object_is_type(v, json_type_object)) {
                                r = fail(&x, NULL, key, "\"retention\" must be an object");
                                break;
                        }
                        json_object_object_foreach(v, rkey, rval)
                        {
                                if (streq(rkey, "max_checkpoints_per_user")) {
                                        r = get_uint(&x, "retention", rkey, rval, 1000000, &n);
                                        if (r < 0)
                                                break;
                                        c->max_checkpoints_per_user = (unsigned)n;
                                } else if (streq(rkey, "max_age_hours")) {
                                        r = get_uint(&x, "retention", rkey, rval, 24ULL * 365 * 100, &n);
                                        if (r < 0)
                                                break;
                                        c->max_age_sec = n * 3600;
                                } else if (rkey[0] == '_') {
                                        /* documentation */
                                } else {
                                        r = fail(&x, "retention", rkey, "unknown key \"retention.%s\"", rkey);
                                        break;
                                }
                        }
                        if (r < 0)
                                break;
                } else if (key[0] == '_') {
                        /* "_comment" and the like: documentation, ignored */
                } else {
                        r = fail(&x, NULL, key, "unknown key \"%s\"", key);
                        break;
                }
        }

        json_object_put(root);
        return r;
}

int config_load(Config *c, const char *path, bool missing_ok, char *err, size_t errlen)
{
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        r = read_full_file(path, &text, &len);
        if (r == -ENOENT && missing_ok)
                return 0;
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", path, strerror(-r));
                return r;
        }
        return config_parse(c, path, text, len, err, errlen);
}

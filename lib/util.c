/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <time.h>

#include "util.h"

int loop_write(int fd, const void *buf, size_t len)
{
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

int read_full_file(const char *path, char **ret, size_t *ret_size)
{
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, allocated = 4096;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;

        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t n;

                if (allocated - size < 2) {
                        char *p;

                        if (allocated > (64U << 20))
                                return -EFBIG;
                        p = realloc(buf, allocated * 2);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        allocated *= 2;
                }

                n = read(fd, buf + size, allocated - size - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                size += (size_t)n;
        }

        buf[size] = 0;
        if (ret_size)
                *ret_size = size;
        *ret = TAKE_PTR(buf);
        return 0;
}

int parse_u64(const char *s, uint64_t *ret)
{
        char *end = NULL;
        unsigned long long v;

        if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
                return -EINVAL;

        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno != 0)
                return -errno;
        if (!end || *end != 0)
                return -EINVAL;

        *ret = v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
        static const struct {
                char suffix;
                unsigned shift;
        } units[] = {
                { 'K', 10 }, { 'k', 10 }, { 'M', 20 }, { 'm', 20 }, { 'G', 30 }, { 'g', 30 }, { 'T', 40 }, { 't', 40 },
        };
        char *end = NULL;
        unsigned long long v;
        unsigned shift = 0;

        if (!s || !*s || *s == '-' || isspace((unsigned char)*s))
                return -EINVAL;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0)
                return -errno;
        if (end == s)
                return -EINVAL;

        if (*end) {
                size_t i;
                bool found = false;

                for (i = 0; i < ELEMENTSOF(units); i++)
                        if (*end == units[i].suffix) {
                                shift = units[i].shift;
                                found = true;
                                break;
                        }
                if (!found)
                        return -EINVAL;
                end++;
                /* Accept "64M", "64MB", "64MiB". */
                if (streq(end, "iB") || streq(end, "B"))
                        end += strlen(end);
                if (*end)
                        return -EINVAL;
        }

        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;

        *ret = (uint64_t)v << shift;
        return 0;
}

const char *format_bytes(char *buf, size_t len, uint64_t bytes)
{
        static const char *const suffixes[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        double v = (double)bytes;
        size_t i = 0;

        while (v >= 1024.0 && i + 1 < ELEMENTSOF(suffixes)) {
                v /= 1024.0;
                i++;
        }

        if (i == 0)
                snprintf(buf, len, "%" PRIu64 " B", bytes);
        else
                snprintf(buf, len, "%.1f %s", v, suffixes[i]);
        return buf;
}

int utf8_decode(const char *s, uint32_t *ret_cp)
{
        const unsigned char *p = (const unsigned char *)s;
        unsigned c = p[0], need;
        uint32_t cp;

        assert(s);
        assert(ret_cp);

        if (c < 0x80) {
                *ret_cp = c;
                return 1;
        }
        /* 0xc0 and 0xc1 only ever start overlong forms, 0xf5 and up code points past U+10FFFF. */
        if (c >= 0xc2 && c <= 0xdf)
                need = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                need = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                need = 3, cp = c & 0x07;
        else
                return -EILSEQ;
        /* A NUL is not a continuation byte, so a cut sequence stops here without reading past it. */
        for (unsigned i = 1; i <= need; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return -EILSEQ;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
                return -EILSEQ;
        *ret_cp = cp;
        return (int)need + 1;
}

bool utf8_is_valid(const char *s)
{
        uint32_t cp;
        int n;

        for (; *s; s += n) {
                n = utf8_decode(s, &cp);
                if (n < 0)
                        return false;
        }
        return true;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Small helpers shared by every part of livesnap: cleanup attributes in the manner of systemd's
 * src/basic/macro.h, and a handful of arithmetic and fd helpers. Nothing here allocates global state.
 */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _unused_ __attribute__((__unused__))
#define _noreturn_ __attribute__((__noreturn__))
#define _pure_ __attribute__((__pure__))
#define _printf_(a, b) __attribute__((__format__(printf, a, b)))
#define _cleanup_(f) __attribute__((__cleanup__(f)))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _export_ __attribute__((__visibility__("default")))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define ALIGN_UP(x, a) ALIGN_DOWN((x) + (a) - 1, (a))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)

#define PAGE_SIZE_4K 4096UL
#define PAGE_SHIFT_4K 12
#define HPAGE_SIZE_2M (2UL << 20)

/* Take ownership of a pointer or fd: the cleanup attribute on the old variable becomes a no-op. */
#define TAKE_PTR(p)                                                                                      \
        ({                                                                                               \
                __typeof__(p) _p_ = (p);                                                                 \
                (p) = NULL;                                                                              \
                _p_;                                                                                     \
        })
#define TAKE_FD(fd)                                                                                      \
        ({                                                                                               \
                int _fd_ = (fd);                                                                         \
                (fd) = -EBADF;                                                                           \
                _fd_;                                                                                    \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                          \
        static inline void func##p(type *p)                                                              \
        {                                                                                                \
                if (*p)                                                                                  \
                        func(*p);                                                                        \
        }

static inline void freep(void *p)
{
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd if it is valid, keeps errno; returns -EBADF so that "fd = safe_close(fd);" reads well. */
static inline int safe_close(int fd)
{
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd)
{
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* errno as a negative return value, never 0 even when errno was not set. */
static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}

static inline bool streq(const char *a, const char *b)
{
        return strcmp(a, b) == 0;
}

static inline bool startswith(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Writes all of buf, retrying short writes and EINTR. Returns 0 or a negative errno. */
int loop_write(int fd, const void *buf, size_t len);

/* Monotonic time in microseconds. */
uint64_t now_usec(void);

/* Reads a whole (small) file, such as one under /proc, into a NUL-terminated buffer. */
int read_full_file(const char *path, char **ret, size_t *ret_size);

/* Parses sizes such as "64M", "1G", "4096", "512k" (binary units). */
int parse_size(const char *s, uint64_t *ret);

/* Formats a byte count as "1.5 GiB" into buf. */
const char *format_bytes(char *buf, size_t len, uint64_t bytes);

/* Parses an unsigned 64-bit number, decimal or 0x-prefixed hex, rejecting trailing junk. */
int parse_u64(const char *s, uint64_t *ret);

/* Decodes the UTF-8 character at s: returns its length in bytes (1 to 4) with its code point in *ret_cp,
 * or -EILSEQ for anything but strict UTF-8 (a stray or cut sequence, an overlong form, a surrogate, a
 * code point past U+10FFFF). s[0] must not be NUL. */
int utf8_decode(const char *s, uint32_t *ret_cp);

/* True if s is strict UTF-8 throughout (as utf8_decode() reads it). */
bool utf8_is_valid(const char *s);

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Fuzz target for livesnapd's decoding of the a{sv} options of Checkpoint and CheckpointUnit
 * (daemon/options.c). libsystemd has no public call that turns bytes into a message, and the daemon
 * only ever sees messages sd-bus has already checked, so the input is a recipe for a well-formed
 * message instead, built with the public sd_bus_message_append*() calls on a bus that is never
 * connected:
 *
 *   byte 0         shape: bit 0 selects Checkpoint (u PID) or CheckpointUnit (s unit) before the
 *                  options; bits 1-3: 0-4 a{sv}, 5 nothing, 6 s, 7 a{ss} where the a{sv} belongs
 *   then, until the input ends, one entry each:
 *     key byte     bit 7 set: one of the known keys (low 3 bits); else a key of that many bytes follows
 *     type byte    the variant's type (see append_value()), then its value's bytes
 *
 * Invariants: on success every option is within its documented range and the label is valid; on a
 * refusal the caller's options and label are untouched, the error is org.livesnap1.Error.InvalidArgument,
 * and an error reply carrying it can be built (its text is valid UTF-8); on any other failure no error
 * is set. Anything else aborts.
 */

#include <inttypes.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "options.h"
#include "store.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                            \
        do {                                                                                                \
                if (!(x)) {                                                                                 \
                        fprintf(stderr, "fuzz-options: %s:%d: check failed: %s\n", __FILE__, __LINE__, #x); \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

typedef struct Input {
        const uint8_t *p;
        size_t n;
} Input;

static uint8_t next_byte(Input *in)
{
        uint8_t b;

        if (in->n == 0)
                return 0;
        b = *in->p++;
        in->n--;
        return b;
}

static void next_bytes(Input *in, void *buf, size_t len)
{
        memset(buf, 0, len);
        memcpy(buf, in->p, MIN(len, in->n));
        in->p += MIN(len, in->n);
        in->n -= MIN(len, in->n);
}

/* A string of the length given by the next byte (cut at a NUL; sd-bus refuses bad UTF-8 itself). */
static void next_string(Input *in, char *buf, size_t max)
{
        size_t len = next_byte(in); /* not inside MIN(), which evaluates its arguments twice */

        len = MIN(len, max - 1);

        next_bytes(in, buf, len);
        buf[len] = 0;
}

static const char *const known_keys[] = {
        "label", "buffer_size", "rate_limit", "compress_level", "", "Label", "buffer_size ", "compress",
};

static int append_entries(sd_bus_message *m, Input *in, unsigned depth, unsigned max_entries);

/* Appends a variant whose type the next byte selects. */
static int append_value(sd_bus_message *m, Input *in, unsigned depth)
{
        char s[256];
        uint64_t t;
        uint32_t u;
        uint16_t q;
        uint8_t y;
        double d;
        int r;

        switch (next_byte(in) % 16) {
        case 0:
                next_string(in, s, sizeof(s));
                return sd_bus_message_append(m, "v", "s", s);
        case 1:
                next_bytes(in, &t, sizeof(t));
                return sd_bus_message_append(m, "v", "t", t);
        case 2:
                next_bytes(in, &u, sizeof(u));
                return sd_bus_message_append(m, "v", "u", u);
        case 3:
                next_bytes(in, &u, sizeof(u));
                return sd_bus_message_append(m, "v", "i", (int32_t)u);
        case 4:
                y = next_byte(in);
                return sd_bus_message_append(m, "v", "b", (int)(y & 1));
        case 5:
                y = next_byte(in);
                return sd_bus_message_append(m, "v", "y", y);
        case 6:
                next_bytes(in, &d, sizeof(d));
                return sd_bus_message_append(m, "v", "d", d);
        case 7: {
                char a[16], b[16];
                next_string(in, a, sizeof(a));
                next_string(in, b, sizeof(b));
                return sd_bus_message_append(m, "v", "as", 2, a, b);
        }
        case 8:
                /* a variant in a variant: "v" of type "v" */
                next_string(in, s, sizeof(s));
                return sd_bus_message_append(m, "v", "v", "s", s);
        case 9:
                if (depth >= 3)
                        return sd_bus_message_append(m, "v", "s", "deep");
                r = sd_bus_message_open_container(m, 'v', "a{sv}");
                if (r < 0)
                        return r;
                r = append_entries(m, in, depth + 1, 4);
                if (r < 0)
                        return r;
                return sd_bus_message_close_container(m);
        case 10:
                return sd_bus_message_append(m, "v", "o", "/org/livesnap1");
        case 11:
                return sd_bus_message_append(m, "v", "g", "a{sv}");
        case 12:
                next_bytes(in, &t, sizeof(t));
                next_bytes(in, &u, sizeof(u));
                return sd_bus_message_append(m, "v", "(tu)", t, u);
        case 13:
                next_bytes(in, &q, sizeof(q));
                return sd_bus_message_append(m, "v", "n", (int16_t)q);
        case 14:
                next_bytes(in, &t, sizeof(t));
                return sd_bus_message_append(m, "v", "x", (int64_t)t);
        default:
                /* small unsigned values near the limits that matter */
                y = next_byte(in);
                return sd_bus_message_append(m, "v", "u", (uint32_t)y);
        }
}

/* Appends {sv} entries to an open a{sv}, until the input ends or max_entries. */
static int append_entries(sd_bus_message *m, Input *in, unsigned depth, unsigned max_entries)
{
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (unsigned i = 0; in->n > 0 && i < max_entries; i++) {
                char key[128];
                uint8_t kb = next_byte(in);

                if (kb & 0x80)
                        snprintf(key, sizeof(key), "%s", known_keys[kb & 7]);
                else {
                        size_t len = MIN((size_t)kb, sizeof(key) - 1);
                        next_bytes(in, key, len);
                        key[len] = 0;
                }
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(m, "s", key);
                if (r < 0)
                        return r;
                r = append_value(m, in, depth);
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* A bus that is never connected: sd-bus makes messages only on a bus that has been started, so start
 * one on a socket pair whose other end nobody reads. */
static sd_bus *fuzz_bus(void)
{
        static sd_bus *bus = NULL;
        int fds[2];

        if (bus)
                return bus;
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) >= 0);
        CHECK(sd_bus_new(&bus) >= 0);
        CHECK(sd_bus_set_fd(bus, fds[0], fds[0]) >= 0);
        CHECK(sd_bus_start(bus) >= 0);
        /* fds[1] stays open for the life of the process, so the bus never sees a hangup. */
        return bus;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint64_t cookie = 0;
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        Input in = {data, size};
        LivesnapDumpOptions opts, before;
        char *label, *label_before;
        uint8_t shape;
        int r;

        shape = next_byte(&in);
        CHECK(sd_bus_message_new_method_call(fuzz_bus(), &m, "org.livesnap1", "/org/livesnap1",
                                             "org.livesnap1.Manager",
                                             shape & 1 ? "CheckpointUnit" : "Checkpoint") >= 0);
        r = shape & 1 ? sd_bus_message_append(m, "s", "redis-server.service")
                      : sd_bus_message_append(m, "u", 4242);
        CHECK(r >= 0);
        switch ((shape >> 1) & 7) {
        case 5:
                break;
        case 6:
                r = sd_bus_message_append(m, "s", "label");
                break;
        case 7:
                r = sd_bus_message_append(m, "a{ss}", 1, "label", "x");
                break;
        default:
                r = append_entries(m, &in, 0, 64);
        }
        if (r < 0 || sd_bus_message_seal(m, ++cookie, 0) < 0) {
                /* the recipe asked for something sd-bus refuses to build (bad UTF-8, say) */
                sd_bus_message_unref(m);
                return 0;
        }
        CHECK(sd_bus_message_rewind(m, true) >= 0);
        CHECK(sd_bus_message_skip(m, shape & 1 ? "s" : "u") >= 0);

        opts = before =
                (LivesnapDumpOptions){.buffer_size = 64ULL << 20, .rate_limit = 0, .compress_level = 3};
        label = label_before = strdup("default");
        CHECK(label);

        r = checkpoint_options_read(m, &opts, &label, &error);
        if (getenv("FUZZ_OPTIONS_DEBUG")) /* to see what a corpus entry does */
                fprintf(stderr,
                        "fuzz-options: r=%d %s: %s; label=\"%s\" buffer_size=%" PRIu64 " rate_limit=%" PRIu64
                        " compress_level=%d\n",
                        r, error.name ?: "-", error.message ?: "-", label, opts.buffer_size, opts.rate_limit,
                        opts.compress_level);
        if (r >= 0) {
                CHECK(!sd_bus_error_is_set(&error));
                CHECK(label && store_label_valid(label));
                CHECK(opts.buffer_size == before.buffer_size ||
                      (opts.buffer_size >= OPTIONS_BUFFER_MIN && opts.buffer_size <= OPTIONS_BUFFER_MAX));
                CHECK(opts.compress_level >= 0 && opts.compress_level <= OPTIONS_COMPRESS_MAX);
                CHECK(opts.progress == NULL && opts.phase == NULL && opts.userdata == NULL && !opts.no_sync);
                /* the whole array was read */
                CHECK(sd_bus_message_at_end(m, true) > 0);
        } else {
                CHECK(memcmp(&opts, &before, sizeof(opts)) == 0);
                CHECK(label == label_before && streq(label, "default"));
                if (sd_bus_error_is_set(&error)) {
                        CHECK(r == -EINVAL);
                        CHECK(sd_bus_error_has_name(&error, OPTIONS_ERROR_INVALID));
                        CHECK(error.message && error.message[0]);
                        /* the refusal can be sent back */
                        CHECK(sd_bus_message_new_method_error(m, &reply, &error) >= 0);
                        sd_bus_message_unref(reply);
                } else
                        /* only a malformed call (no a{sv} there) fails without a refusal */
                        CHECK(((shape >> 1) & 7) >= 5);
        }

        free(label);
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
        return 0;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <inttypes.h>

#include "options.h"
#include "store.h"
#include "util.h"

/* Keys are printed back to the caller in refusals: at most this many bytes of them. */
#define KEY_SHOWN_MAX 64

int checkpoint_options_read(sd_bus_message *msg, LivesnapDumpOptions *opts, char **label,
                            sd_bus_error *error)
{
        LivesnapDumpOptions o;
        const char *new_label = NULL;
        int r;

        assert(msg);
        assert(opts);
        assert(label);

        /* Decode into a copy: the caller's options change only if every option is good. */
        o = *opts;

        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        if (r == 0)
                return -EBADMSG; /* no arguments left */

        for (;;) {
                const char *key;

                r = sd_bus_message_enter_container(msg, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(msg, "s", &key);
                if (r < 0)
                        return r;

                if (streq(key, "label")) {
                        const char *s;

                        r = sd_bus_message_read(msg, "v", "s", &s);
                        if (r < 0) {
                                sd_bus_error_set(error, OPTIONS_ERROR_INVALID,
                                                 "option \"label\" must be a string (s)");
                                return -EINVAL;
                        }
                        if (!store_label_valid(s)) {
                                sd_bus_error_setf(
                                        error, OPTIONS_ERROR_INVALID,
                                        "invalid label: at most %d bytes of UTF-8, no control characters, "
                                        "no '/'",
                                        STORE_LABEL_MAX);
                                return -EINVAL;
                        }
                        new_label = s; /* lives as long as msg */
                } else if (streq(key, "buffer_size") || streq(key, "rate_limit")) {
                        uint64_t t;

                        r = sd_bus_message_read(msg, "v", "t", &t);
                        if (r < 0) {
                                sd_bus_error_setf(error, OPTIONS_ERROR_INVALID,
                                                  "option \"%s\" must be a uint64 (t)", key);
                                return -EINVAL;
                        }
                        if (streq(key, "buffer_size")) {
                                if (t < OPTIONS_BUFFER_MIN || t > OPTIONS_BUFFER_MAX) {
                                        sd_bus_error_setf(
                                                error, OPTIONS_ERROR_INVALID,
                                                "buffer_size must be between 4 MiB and 64 GiB, not %" PRIu64,
                                                t);
                                        return -EINVAL;
                                }
                                o.buffer_size = t;
                        } else
                                o.rate_limit = t;
                } else if (streq(key, "compress_level")) {
                        uint32_t u;

                        r = sd_bus_message_read(msg, "v", "u", &u);
                        if (r < 0 || u > OPTIONS_COMPRESS_MAX) {
                                sd_bus_error_setf(error, OPTIONS_ERROR_INVALID,
                                                  "option \"compress_level\" must be a uint32 from 0 to %d",
                                                  OPTIONS_COMPRESS_MAX);
                                return -EINVAL;
                        }
                        o.compress_level = (int)u;
                } else {
                        size_t n = strlen(key), shown = MIN(n, (size_t)KEY_SHOWN_MAX);

                        /* Cut on a character boundary: the refusal must stay UTF-8, or sd-bus cannot send
                         * it. */
                        while (shown > 0 && shown < n && ((unsigned char)key[shown] & 0xc0) == 0x80)
                                shown--;
                        sd_bus_error_setf(error, OPTIONS_ERROR_INVALID, "unknown option \"%.*s\"%s",
                                          (int)shown, key, shown < n ? "..." : "");
                        return -EINVAL;
                }

                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_exit_container(msg);
        if (r < 0)
                return r;

        if (new_label) {
                char *l = strdup(new_label);
                if (!l)
                        return -ENOMEM;
                free(*label);
                *label = l;
        }
        *opts = o;
        return 0;
}

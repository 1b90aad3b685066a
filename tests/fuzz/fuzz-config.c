/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzz target for livesnapd's configuration parser: any bytes give a config or an error with a line. */

#include "config.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char err[512] = "";
        Config c;
        int r;

        config_init(&c);
        r = config_parse(&c, "fuzz.json", (const char *)data, size, err, sizeof(err));
        if (r < 0 && r != -ENOMEM && !startswith(err, "fuzz.json:"))
                abort(); /* every refusal names the file and a line */
        config_done(&c);
        return 0;
}

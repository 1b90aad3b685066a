/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>
#include <unistd.h>

#include "progress.h"
#include "util.h"

struct ProgressBar {
        const char *label;
        uint64_t t_start, t_last;
        bool drawn;
};

ProgressBar *progress_new(const char *label, bool enabled)
{
        ProgressBar *p;

        if (!enabled || !isatty(STDERR_FILENO))
                return NULL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->label = label;
        p->t_start = now_usec();
        return p;
}

void progress_update(ProgressBar *p, uint64_t done, uint64_t total)
{
        char a[32], b[32], c[32], bar[31];
        uint64_t now;
        unsigned pct, fill;

        if (!p)
                return;
        now = now_usec();
        if (p->drawn && now - p->t_last < 100000 && done < total)
                return;
        p->t_last = now;
        pct = total ? (unsigned)MIN(done * 100 / total, (uint64_t)100) : 0;
        fill = pct * 30 / 100;
        for (unsigned i = 0; i < 30; i++)
                bar[i] = i < fill ? '#' : ' ';
        bar[30] = 0;
        double secs = (now - p->t_start) / 1e6;
        fprintf(stderr, "\r%-10s [%s] %3u%%  %s / %s  %s/s\033[K", p->label, bar, pct, format_bytes(a, sizeof(a), done),
                format_bytes(b, sizeof(b), total), format_bytes(c, sizeof(c), secs > 0 ? (uint64_t)(done / secs) : 0));
        p->drawn = true;
}

ProgressBar *progress_free(ProgressBar *p)
{
        if (!p)
                return NULL;
        if (p->drawn)
                fputs("\r\033[K", stderr);
        free(p);
        return NULL;
}

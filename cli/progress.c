/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The progress bar: one line on stderr, redrawn in place with '\r'. It is drawn only on a terminal,
 * so logs and pipes never see control characters; it is fitted to the terminal's width on every
 * draw (a line that wraps would defeat '\r' and scroll), and redrawn at most ten times a second so
 * that a fast loop calling it per chunk costs nothing. The rate shown is over the last second or so,
 * not since the start, since a throttled dump's speed changes as it goes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "progress.h"
#include "util.h"

#define REDRAW_USEC      100000ULL
#define RATE_WINDOW_USEC 1000000ULL
#define BAR_MAX          30
#define BAR_MIN          10

struct ProgressBar {
        char label[32];
        uint64_t t_start, t_last_draw;
        uint64_t t_mark, done_mark; /* start of the current rate window */
        uint64_t rate;              /* bytes per second, over the last window */
        bool have_rate;
        uint64_t last_done, last_total;
        bool drawn;
};

ProgressBar *progress_new(const char *label, bool enabled)
{
        ProgressBar *p;

        if (!enabled || !isatty(STDERR_FILENO))
                return NULL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL; /* no bar is better than no dump */
        snprintf(p->label, sizeof(p->label), "%s", label ?: "");
        p->t_start = p->t_mark = now_usec();
        return p;
}

static unsigned terminal_columns(void)
{
        struct winsize ws = {};

        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
                return 80;
        return ws.ws_col;
}

static void update_rate(ProgressBar *p, uint64_t now, uint64_t done)
{
        if (done < p->done_mark) { /* the caller started over */
                p->t_mark = now;
                p->done_mark = done;
                p->have_rate = false;
                return;
        }
        if (now - p->t_mark >= RATE_WINDOW_USEC) {
                p->rate = (done - p->done_mark) * 1000000ULL / (now - p->t_mark);
                p->have_rate = true;
                p->t_mark = now;
                p->done_mark = done;
        } else if (!p->have_rate && now > p->t_start)
                p->rate = done * 1000000ULL / (now - p->t_start);
}

void progress_update(ProgressBar *p, uint64_t done, uint64_t total)
{
        char a[32], b[32], c[32], tail[128], bar[BAR_MAX + 1], line[256];
        unsigned pct, columns, width, fill;
        size_t fixed;
        uint64_t now;
        bool final;

        if (!p)
                return;

        now = now_usec();
        final = total > 0 && done >= total;
        /* The last frame is always drawn, once; others at most every REDRAW_USEC. */
        if (p->drawn &&
            (final ? done == p->last_done && total == p->last_total : now - p->t_last_draw < REDRAW_USEC))
                return;
        update_rate(p, now, done);
        p->t_last_draw = now;
        p->last_done = done;
        p->last_total = total;

        pct = total > 0 ? (unsigned)(MIN(done, total) * 100 / total) : 0;
        snprintf(tail, sizeof(tail), "%3u%%  %s / %s  %s/s", pct, format_bytes(a, sizeof(a), done),
                 format_bytes(b, sizeof(b), total), format_bytes(c, sizeof(c), p->rate));

        /* "label [bar] tail", kept one column short of the terminal's width so it never wraps. */
        columns = terminal_columns();
        fixed = strlen(p->label) + 4 + strlen(tail);
        width = columns > fixed + 1 ? (unsigned)MIN((size_t)BAR_MAX, columns - fixed - 1) : 0;
        if (width >= BAR_MIN) {
                fill = (unsigned)(total > 0 ? MIN(done, total) * width / total : 0);
                for (unsigned i = 0; i < width; i++)
                        bar[i] = i < fill ? '#' : ' ';
                bar[width] = 0;
                snprintf(line, sizeof(line), "\r%s [%s] %s", p->label, bar, tail);
        } else
                snprintf(line, sizeof(line), "\r%s %s", p->label, tail);
        if (columns >= 2 && strlen(line) > columns) /* '\r', then at most columns - 1 characters */
                line[columns] = 0;

        /* Clear whatever a longer previous frame left to the right. */
        fputs(line, stderr);
        fputs("\033[K", stderr);
        fflush(stderr);
        p->drawn = true;
}

ProgressBar *progress_free(ProgressBar *p)
{
        if (!p)
                return NULL;
        if (p->drawn) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        free(p);
        return NULL;
}

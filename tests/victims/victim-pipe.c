/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-pipe: the main thread sits in read() on a pipe, into write-protected memory.
 *
 * The kernel copies pipe data into the reader's buffer with copy_to_user(), which takes the
 * userfaultfd write-protect fault path like any user write. The main thread is almost always blocked
 * in read() (the writer thread is paced), so the snapshot interrupts that syscall: it must be
 * restarted transparently (never fail with EINTR), and the copy into the protected buffer must wait
 * for the page to be saved (never fail with EFAULT, never lose or corrupt a byte).
 *
 * The main thread reads into a 64 MiB ring of 256 KiB segments (all written before DIR/ready, so
 * every page is present and protected at the instant), checks every byte against the stream's pattern
 * and counts. Any error or mismatch goes to DIR/error and the victim exits 1.
 *
 * --check DIR: the ring at the instant must hold, in each segment, the stream bytes its record says
 * (seg_off/seg_fill in the control pages), and untouched segments must still hold the initial fill.
 */
#include <pthread.h>

#include "victim.h"

#define NSEG       256
#define SEG_SIZE   (256 * 1024UL)
#define RING_SIZE  (NSEG * SEG_SIZE)
#define CHUNK      (16 * 1024UL)
#define FILL_BYTE  0xee
#define SEG_UNUSED UINT64_MAX

typedef struct Control {
        uint64_t received; /* the "progress" counter: bytes read and checked */
        uint64_t sent;
        uint64_t reads;
        uint64_t cur_seg;
        uint64_t seg_off[NSEG];  /* stream offset of the segment's first byte, or SEG_UNUSED */
        uint64_t seg_fill[NSEG]; /* bytes of the segment filled and checked */
} Control;

#define CONTROL_SIZE ((sizeof(Control) + VICTIM_PAGE_SIZE - 1) & ~(VICTIM_PAGE_SIZE - 1))

static Control *ctl;
static int pipefd[2];

static inline uint8_t stream_byte(uint64_t off)
{
        return (uint8_t)((off * 7) ^ (off >> 8) ^ (off >> 16) ^ (off >> 24) ^ 0x5a);
}

static void *writer(void *arg)
{
        static uint8_t buf[CHUNK];
        uint64_t off = 0;

        for (;;) {
                for (size_t i = 0; i < CHUNK; i++)
                        buf[i] = stream_byte(off + i);
                for (size_t done = 0; done < CHUNK;) {
                        ssize_t n = write(pipefd[1], buf + done, CHUNK - done);
                        if (n < 0) {
                                if (errno == EINTR)
                                        victim_fail("writer: write() failed with EINTR");
                                victim_fail("writer: write: %m");
                        }
                        done += (size_t)n;
                }
                off += CHUNK;
                ((volatile Control *)ctl)->sent = off;
                sleep_us(2000);
        }
        return NULL;
}

static _Noreturn void run(void)
{
        volatile Control *c;
        uint8_t *ring;
        pthread_t th;

        victim_init_run();
        VCHECK(pipe2(pipefd, O_CLOEXEC) == 0);
        ctl = map_anon(CONTROL_SIZE, PROT_READ | PROT_WRITE, 0);
        c = ctl;
        ring = map_anon(RING_SIZE, PROT_READ | PROT_WRITE, 0);
        memset(ring, FILL_BYTE, RING_SIZE);
        for (size_t s = 0; s < NSEG; s++)
                ctl->seg_off[s] = SEG_UNUSED;

        layout_add("control", ctl, CONTROL_SIZE);
        layout_add("progress", &ctl->received, sizeof(ctl->received));
        layout_add("ring", ring, RING_SIZE);

        VCHECK(pthread_create(&th, NULL, writer, NULL) == 0);
        for (uint64_t s = 0;; s = (s + 1) % NSEG) {
                uint8_t *seg = ring + s * SEG_SIZE;
                uint64_t fill = 0;

                c->cur_seg = s;
                c->seg_fill[s] = 0;
                barrier();
                c->seg_off[s] = c->received;
                barrier();
                while (fill < SEG_SIZE) {
                        ssize_t n = read(pipefd[0], seg + fill, SEG_SIZE - fill);
                        if (n < 0)
                                victim_fail("main: read() into %p failed: %s%s", (void *)(seg + fill),
                                            errno == EINTR    ? "EINTR"
                                            : errno == EFAULT ? "EFAULT"
                                                              : "",
                                            errno == EINTR || errno == EFAULT ? "" : strerror(errno));
                        if (n == 0)
                                victim_fail("main: read() returned end of file");
                        for (ssize_t i = 0; i < n; i++)
                                if (seg[fill + i] != stream_byte(c->received + i))
                                        victim_fail("main: stream byte %" PRIu64
                                                    " is 0x%02x, expected 0x%02x",
                                                    c->received + i, seg[fill + i],
                                                    stream_byte(c->received + i));
                        fill += (uint64_t)n;
                        /* received first: at any instant seg_off + seg_fill <= received. */
                        barrier();
                        c->received += (uint64_t)n;
                        barrier();
                        c->seg_fill[s] = fill;
                        c->reads++;
                        if (c->reads == 1)
                                victim_ready();
                }
        }
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint8_t *ring;
        size_t used = 0;

        layout_load();
        c = bin_load("control", &e, false);
        ring = bin_load("ring", &e, false);
        if (c->received == 0 || c->reads == 0)
                check_fail("control: received=%" PRIu64 " reads=%" PRIu64, c->received, c->reads);
        for (size_t s = 0; s < NSEG; s++) {
                const uint8_t *seg = ring + s * SEG_SIZE;
                if (c->seg_off[s] == SEG_UNUSED) {
                        for (size_t i = 0; i < SEG_SIZE; i++)
                                if (seg[i] != FILL_BYTE)
                                        check_fail(
                                                "segment %zu (unused) byte %zu is 0x%02x, expected 0x%02x",
                                                s, i, seg[i], FILL_BYTE);
                        continue;
                }
                if (c->seg_fill[s] > SEG_SIZE || c->seg_off[s] + c->seg_fill[s] > c->received)
                        check_fail("segment %zu: record off=%" PRIu64 " fill=%" PRIu64
                                   " beyond received=%" PRIu64,
                                   s, c->seg_off[s], c->seg_fill[s], c->received);
                for (size_t i = 0; i < c->seg_fill[s]; i++)
                        if (seg[i] != stream_byte(c->seg_off[s] + i))
                                check_fail("segment %zu (stream offset %" PRIu64
                                           ") byte %zu is 0x%02x, expected 0x%02x",
                                           s, c->seg_off[s], i, seg[i], stream_byte(c->seg_off[s] + i));
                used++;
        }
        printf("ring ok: %zu segments used, received=%" PRIu64 " sent=%" PRIu64 " reads=%" PRIu64 "\n", used,
               c->received, c->sent, c->reads);
        free(c);
        free(ring);
        return 0;
}

int main(int argc, char *argv[])
{
        victim_parse_args(argc, argv);
        if (victim_check_mode)
                return check();
        run();
}

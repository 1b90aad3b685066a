/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * victim-iouring: a buffer that only the kernel writes, through an io_uring fixed-buffer pin.
 *
 * The buffer ("buffer", 64 KiB, page aligned) is registered with IORING_REGISTER_BUFFERS, which pins
 * its pages long-term. Then, forever: write generation g's payload into a pipe from a staging buffer,
 * and IORING_OP_READ_FIXED it from the pipe into the registered buffer. Word i of generation g's
 * payload is (g << 32) | i, so every word names its generation and its place.
 *
 * The kernel copies into the pinned pages directly, without the page tables, so uffd write-protect
 * never sees these writes: a checkpoint that copies the buffer after the freeze (instead of during
 * it) shows a generation later than the control page saved at the same instant says.
 *
 * Control page, in this order per iteration (so every instant is consistent with the buffer):
 *   pending = g; state = 1; <write the pipe>; { <READ_FIXED>; done += res } until done == size;
 *   gen = g; state = 0; done = 0; iterations++.
 * The buffer sits in a mapping of its own between guard pages, with 4 MiB of pattern ("ballast_lo",
 * "ballast_hi", never written again) on either side, so that a checkpoint reaches it some time after
 * the freeze.
 *
 * The check requires, at the snapshot instant:
 *   - state 0: every word is gen's;
 *   - state 1: pending == gen + 1; the words form a prefix of pending's (covering at least the first
 *     `done` bytes: reads recorded as done) and a suffix of gen's, each word in its place;
 *   - iterations >= 1 (the first read completed before DIR/ready).
 *
 * With `--async 1`, each read is forced to an io-wq worker (IOSQE_ASYNC): the target then has
 * "iou-wrk-*" kernel-side threads, and a read can be in flight in one while the target is frozen.
 *
 * `victim-iouring --probe` exits 0 if io_uring with registered buffers works here, else prints why
 * and exits 77.
 */
#include <linux/io_uring.h>
#include <sys/uio.h>

#include "victim.h"

#define BUF_SIZE     (64 * 1024UL)
#define BUF_WORDS    (BUF_SIZE / 8)
#define BALLAST_SIZE (4 * MIB)

typedef struct Control {
        uint64_t gen;
        uint64_t pending;
        uint64_t state;
        uint64_t done;
        uint64_t iterations; /* "progress" */
        uint64_t buf_size;
        uint64_t ring_fd;
} Control;

static Control *ctl;
static bool async_reads;

typedef struct Ring {
        int fd;
        unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
        unsigned *cq_head, *cq_tail, *cq_mask;
        struct io_uring_sqe *sqes;
        struct io_uring_cqe *cqes;
} Ring;

static int ring_setup(Ring *r, char *why, size_t whylen)
{
        struct io_uring_params p = {};
        void *sq, *cq;

        r->fd = (int)syscall(SYS_io_uring_setup, 4, &p);
        if (r->fd < 0) {
                snprintf(why, whylen, "io_uring_setup: %s", strerror(errno));
                return -1;
        }
        sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
        cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
        if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED) {
                snprintf(why, whylen, "mmap of the io_uring rings: %s", strerror(errno));
                return -1;
        }
        r->sq_head = (unsigned *)((char *)sq + p.sq_off.head);
        r->sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
        r->sq_mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
        r->sq_array = (unsigned *)((char *)sq + p.sq_off.array);
        r->cq_head = (unsigned *)((char *)cq + p.cq_off.head);
        r->cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
        r->cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
        r->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
        return 0;
}

static int ring_register(Ring *r, void *buf, size_t len, char *why, size_t whylen)
{
        struct iovec iov = {.iov_base = buf, .iov_len = len};

        if (syscall(SYS_io_uring_register, r->fd, IORING_REGISTER_BUFFERS, &iov, 1) < 0) {
                snprintf(why, whylen, "IORING_REGISTER_BUFFERS: %s", strerror(errno));
                return -1;
        }
        return 0;
}

/* One READ_FIXED of len bytes from fd into buf (inside the registered buffer 0); returns its result. */
static int ring_read_fixed(Ring *r, int fd, void *buf, unsigned len)
{
        unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
        struct io_uring_sqe *sqe = &r->sqes[idx];
        int res;

        memset(sqe, 0, sizeof(*sqe));
        sqe->opcode = IORING_OP_READ_FIXED;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)buf;
        sqe->len = len;
        sqe->off = (uint64_t)-1;
        sqe->buf_index = 0;
        if (async_reads)
                sqe->flags |= IOSQE_ASYNC; /* done by an io-wq worker thread of the target */
        r->sq_array[idx] = idx;
        __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
        for (;;) {
                long k = syscall(SYS_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
                if (k >= 0 || errno != EINTR)
                        break;
        }
        head = *r->cq_head;
        while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
                if (syscall(SYS_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0 &&
                    errno != EINTR)
                        victim_fail("io_uring_enter: %m");
        }
        res = r->cqes[head & *r->cq_mask].res;
        __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
        return res;
}

static inline uint64_t payload_word(uint64_t gen, uint64_t i)
{
        return gen << 32 | i;
}

static int probe(void)
{
        char why[256];
        Ring r;
        void *buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (buf == MAP_FAILED || ring_setup(&r, why, sizeof(why)) < 0 ||
            ring_register(&r, buf, BUF_SIZE, why, sizeof(why)) < 0) {
                printf("kernel without usable io_uring fixed buffers (%s)\n", why);
                return 77;
        }
        return 0;
}

static _Noreturn void run(unsigned pause_us)
{
        volatile uint64_t *buf, *staging;
        void *ballast_lo, *ballast_hi;
        char why[256];
        int pipefd[2];
        Ring ring;

        victim_init_run();
        ctl = map_anon(VICTIM_PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
        staging = map_anon(BUF_SIZE, PROT_READ | PROT_WRITE, 0);
        /* The buffer in a mapping of its own, between guard pages, with ballast on both sides: a
         * checkpoint that copies pages around a faulting address, or in address order, then reaches
         * the buffer only some time after the freeze, as it would in a real process. */
        ballast_lo = map_anon(BALLAST_SIZE, PROT_READ | PROT_WRITE, 0);
        fill_pattern(ballast_lo, BALLAST_SIZE);
        char *g = map_anon(BUF_SIZE + 2 * VICTIM_PAGE_SIZE, PROT_NONE, 0);
        VCHECK(mprotect(g + VICTIM_PAGE_SIZE, BUF_SIZE, PROT_READ | PROT_WRITE) == 0);
        buf = (volatile uint64_t *)(g + VICTIM_PAGE_SIZE);
        ballast_hi = map_anon(BALLAST_SIZE, PROT_READ | PROT_WRITE, 0);
        fill_pattern(ballast_hi, BALLAST_SIZE);
        ctl->buf_size = BUF_SIZE;

        if (ring_setup(&ring, why, sizeof(why)) < 0 ||
            ring_register(&ring, (void *)buf, BUF_SIZE, why, sizeof(why)) < 0)
                victim_fail("%s", why);
        ctl->ring_fd = (uint64_t)ring.fd;
        VCHECK(pipe2(pipefd, O_CLOEXEC) == 0);
        /* Room for a whole generation, so that one write never waits for the read. */
        VCHECK(fcntl(pipefd[1], F_SETPIPE_SZ, (int)(2 * BUF_SIZE)) >= (int)BUF_SIZE);

        for (uint64_t it = 0;; it++) {
                uint64_t g = ctl->gen + 1;

                ctl->pending = g;
                barrier();
                ctl->state = 1;
                barrier();
                for (uint64_t i = 0; i < BUF_WORDS; i++)
                        staging[i] = payload_word(g, i);
                for (size_t off = 0; off < BUF_SIZE;) {
                        ssize_t n = write(pipefd[1], (const char *)staging + off, BUF_SIZE - off);
                        if (n < 0 && errno == EINTR)
                                continue;
                        VCHECK(n > 0);
                        off += (size_t)n;
                }
                while (ctl->done < BUF_SIZE) {
                        int res = ring_read_fixed(&ring, pipefd[0], (char *)buf + ctl->done,
                                                  (unsigned)(BUF_SIZE - ctl->done));
                        if (res == -EINTR || res == -EAGAIN)
                                continue;
                        if (res <= 0)
                                victim_fail("READ_FIXED: %s", res < 0 ? strerror(-res) : "end of file");
                        barrier();
                        ctl->done += (uint64_t)res;
                        barrier();
                }
                barrier();
                ctl->gen = g;
                barrier();
                ctl->state = 0;
                barrier();
                ctl->done = 0;
                barrier();
                ctl->iterations++;
                /* Now and then, see that the kernel wrote what it was given. */
                if (it % 64 == 0)
                        for (uint64_t i = 0; i < BUF_WORDS; i++)
                                if (buf[i] != payload_word(g, i))
                                        victim_fail("buffer word %" PRIu64 " is 0x%" PRIx64
                                                    " after the read of gen %" PRIu64,
                                                    i, buf[i], g);
                if (it == 0) {
                        layout_add("control", ctl, VICTIM_PAGE_SIZE);
                        layout_add("progress", &ctl->iterations, sizeof(ctl->iterations));
                        layout_add("buffer", (const void *)buf, BUF_SIZE);
                        layout_add("ballast_lo", ballast_lo, BALLAST_SIZE);
                        layout_add("ballast_hi", ballast_hi, BALLAST_SIZE);
                        victim_ready();
                }
                if (pause_us)
                        sleep_us(pause_us);
        }
}

static int check(void)
{
        const LayoutEntry *e;
        Control *c;
        uint64_t *w, cut = BUF_WORDS;

        layout_load();
        c = bin_load("control", NULL, false);
        w = bin_load("buffer", &e, false);
        if (c->buf_size != BUF_SIZE || e->len != BUF_SIZE)
                check_fail("control: buf_size=%" PRIu64 ", layout %" PRIu64 ", expected %lu", c->buf_size,
                           e->len, BUF_SIZE);
        if (c->iterations < 1 || c->gen < 1)
                check_fail("control: iterations=%" PRIu64 " gen=%" PRIu64
                           ": the first read had not completed",
                           c->iterations, c->gen);
        if (c->state > 1 || (c->state == 1 && c->pending != c->gen + 1) ||
            (c->state == 0 && c->pending != c->gen) || c->done > BUF_SIZE || c->done % 8)
                check_fail("control inconsistent: gen=%" PRIu64 " pending=%" PRIu64 " state=%" PRIu64
                           " done=%" PRIu64,
                           c->gen, c->pending, c->state, c->done);

        for (uint64_t i = 0; i < BUF_WORDS; i++) {
                uint64_t g = w[i] >> 32, idx = w[i] & 0xffffffffULL;
                const char *late = g > c->pending
                                           ? ": written after the snapshot instant (by the kernel, through "
                                             "the pin, after the freeze)"
                                           : "";

                if (idx != i)
                        check_fail("buffer word %" PRIu64 " (address 0x%" PRIx64 ") is 0x%" PRIx64
                                   ": not a payload word "
                                   "for its place",
                                   i, e->addr + 8 * i, w[i]);
                if (c->state == 0 && g != c->gen)
                        check_fail("buffer word %" PRIu64 " (address 0x%" PRIx64 ", page +0x%" PRIx64
                                   ") is from gen %" PRIu64 ", but the control page says gen %" PRIu64
                                   " was read completely and nothing was in "
                                   "flight%s",
                                   i, e->addr + 8 * i, (8 * i) & ~(VICTIM_PAGE_SIZE - 1), g, c->gen, late);
                if (c->state == 1) {
                        if (g != c->gen && g != c->pending)
                                check_fail("buffer word %" PRIu64 " (address 0x%" PRIx64
                                           ") is from gen %" PRIu64 ", expected %" PRIu64
                                           " (read) or %" PRIu64 " (being read)%s",
                                           i, e->addr + 8 * i, g, c->gen, c->pending, late);
                        if (g == c->pending && cut < i)
                                check_fail("buffer: second cut: word %" PRIu64 " is gen %" PRIu64
                                           " again after word %" PRIu64 " was gen %" PRIu64,
                                           i, g, cut, c->gen);
                        if (g == c->gen && cut == BUF_WORDS)
                                cut = i;
                }
        }
        if (c->state == 1 && cut * 8 < c->done)
                check_fail("buffer: only %" PRIu64 " bytes are from gen %" PRIu64
                           ", but the control page recorded %" PRIu64 " bytes read",
                           cut * 8, c->pending, c->done);
        for (int k = 0; k < 2; k++) {
                const char *name = k ? "ballast_hi" : "ballast_lo";
                void *b = bin_load(name, &e, true);
                if (!b)
                        continue;
                ssize_t bad = pattern_mismatch(b, e->addr, e->len);
                if (bad >= 0)
                        check_fail("%s: word at 0x%" PRIx64 " is 0x%" PRIx64 ", expected 0x%" PRIx64, name,
                                   e->addr + 8 * (uint64_t)bad, ((uint64_t *)b)[bad],
                                   pattern_word(e->addr + 8 * (uint64_t)bad));
                free(b);
        }
        printf("buffer ok: %s gen %" PRIu64 " (pending %" PRIu64 ", %" PRIu64
               " bytes of it in the buffer), %" PRIu64 " iterations\n",
               c->state ? "in flight," : "idle,", c->gen, c->pending, c->state ? cut * 8 : 0, c->iterations);
        free(w);
        free(c);
        return 0;
}

int main(int argc, char *argv[])
{
        unsigned pause_us = 50;
        int i;

        if (argc == 2 && strcmp(argv[1], "--probe") == 0)
                return probe();
        i = victim_parse_args(argc, argv);
        if (victim_check_mode)
                return check();
        for (; i < argc; i += 2) {
                if (i + 1 >= argc)
                        usage_exit();
                if (strcmp(argv[i], "--pause-us") == 0)
                        pause_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--async") == 0)
                        async_reads = strtoul(argv[i + 1], NULL, 10) != 0;
                else
                        usage_exit();
        }
        run(pause_us);
}

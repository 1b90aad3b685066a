/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A target with a userfaultfd of its own: it registers a 4 MiB region for MISSING faults and serves them
 * from a thread, filling each new page with its index. livesnap's own registration of that region
 * fails with EBUSY, so it must copy the region while the target is stopped and leave the target's uffd
 * alone. `--check DIR` checks region.bin (a cat of the region from the image) against what was filled
 * before the dump; the running victim keeps touching new pages, so a broken uffd shows as a hang
 * (no progress) or a wrong byte (DIR/error).
 *
 * A second region, "marked" (1 MiB, one page in 16 written), is registered with the same uffd for
 * write-protect with WP_UNPOPULATED and protected whole, so each of its empty pages holds a uffd-wp PTE
 * marker, which PAGEMAP_SCAN reports as swapped. The victim never touches it again: a dump must not
 * read those pages as data (reading maps the zero page in; the test counts the pages present), and
 * --check wants the written pages in marked.bin and zeros between. If the kernel refuses
 * WP_UNPOPULATED, "marked" is left out of the layout.
 */

#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>

#include "victim.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED /* Linux 6.4; Debian 12's headers are 6.1 */
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

#define REGION (4 * MIB)
#define PREFILLED 256 /* pages touched before the dump */
#define MARKED (1 * MIB)
#define MARKED_EVERY 16 /* one page in this many of "marked" is written */

static int uffd;
static uint8_t *region;
static volatile uint64_t progress[1];

static void *server(void *arg)
{
        static uint8_t page[VICTIM_PAGE_SIZE] __attribute__((aligned(4096)));

        for (;;) {
                struct uffd_msg msg;
                struct pollfd p = { .fd = uffd, .events = POLLIN };

                if (poll(&p, 1, -1) < 0 || read(uffd, &msg, sizeof(msg)) != sizeof(msg))
                        continue;
                if (msg.event != UFFD_EVENT_PAGEFAULT)
                        continue;
                uint64_t addr = msg.arg.pagefault.address & ~(VICTIM_PAGE_SIZE - 1);
                memset(page, (int)(((addr - (uint64_t)(uintptr_t)region) / VICTIM_PAGE_SIZE) % 250 + 1),
                       sizeof(page));
                struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)page, .len = VICTIM_PAGE_SIZE };
                if (ioctl(uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
                        victim_fail("UFFDIO_COPY: %m");
        }
        return arg;
}

static uint8_t expected(size_t page)
{
        return (uint8_t)(page % 250 + 1);
}

static void check_marked(const char *dir)
{
        char path[4096];
        static uint8_t buf[MARKED];
        FILE *f;

        snprintf(path, sizeof(path), "%s/marked.bin", dir);
        f = fopen(path, "rb");
        if (!f) {
                printf("marked: not in the layout (no WP_UNPOPULATED)\n");
                return;
        }
        if (fread(buf, 1, MARKED, f) != MARKED)
                victim_fail("cannot read %s", path);
        fclose(f);
        for (size_t p = 0; p < MARKED / VICTIM_PAGE_SIZE; p++) {
                uint8_t want = p % MARKED_EVERY == 0 ? expected(p) : 0;
                for (size_t i = 0; i < VICTIM_PAGE_SIZE; i++)
                        if (buf[p * VICTIM_PAGE_SIZE + i] != want)
                                victim_fail("marked page %zu byte %zu is %u, expected %u", p, i,
                                            buf[p * VICTIM_PAGE_SIZE + i], want);
        }
        printf("marked ok: %zu pages written, the rest zero\n", MARKED / VICTIM_PAGE_SIZE / MARKED_EVERY);
}

/* The "marked" region, on a uffd of its own kind: features are set once per uffd, and the MISSING
 * server above does not want WP_UNPOPULATED. */
static void setup_marked(void)
{
        struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_UNPOPULATED };
        uint8_t *m;
        int fd;

        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
        if (fd < 0)
                victim_fail("userfaultfd: %m");
        if (ioctl(fd, UFFDIO_API, &api) < 0) {
                close(fd);
                return;
        }
        m = mmap(NULL, MARKED, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
                victim_fail("mmap: %m");
        for (size_t p = 0; p < MARKED / VICTIM_PAGE_SIZE; p += MARKED_EVERY)
                memset(m + p * VICTIM_PAGE_SIZE, expected(p), VICTIM_PAGE_SIZE);
        struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)m, MARKED }, .mode = UFFDIO_REGISTER_MODE_WP };
        if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
                victim_fail("UFFDIO_REGISTER (WP): %m");
        struct uffdio_writeprotect wp = { .range = { (uint64_t)(uintptr_t)m, MARKED },
                                          .mode = UFFDIO_WRITEPROTECT_MODE_WP };
        if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0)
                victim_fail("UFFDIO_WRITEPROTECT: %m");
        layout_add("marked", m, MARKED);
        /* fd stays open: closing it would drop the protection and the markers */
}

int main(int argc, char *argv[])
{
        pthread_t t;

        victim_parse_args(argc, argv);
        if (victim_check_mode) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/region.bin", victim_dir);
                FILE *f = fopen(path, "rb");
                static uint8_t buf[REGION];
                if (!f || fread(buf, 1, REGION, f) != REGION)
                        victim_fail("cannot read %s", path);
                fclose(f);
                for (size_t p = 0; p < PREFILLED; p++)
                        for (size_t i = 0; i < VICTIM_PAGE_SIZE; i++)
                                if (buf[p * VICTIM_PAGE_SIZE + i] != expected(p))
                                        victim_fail("page %zu byte %zu is %u, expected %u", p, i,
                                                    buf[p * VICTIM_PAGE_SIZE + i], expected(p));
                printf("region ok: %d pages as the target's own uffd filled them\n", PREFILLED);
                check_marked(victim_dir);
                return 0;
        }
        victim_init_run();

        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
        if (uffd < 0)
                victim_fail("userfaultfd: %m");
        struct uffdio_api api = { .api = UFFD_API };
        if (ioctl(uffd, UFFDIO_API, &api) < 0)
                victim_fail("UFFDIO_API: %m");
        region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED)
                victim_fail("mmap: %m");
        struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)region, REGION },
                                       .mode = UFFDIO_REGISTER_MODE_MISSING };
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
                victim_fail("UFFDIO_REGISTER: %m");
        pthread_create(&t, NULL, server, NULL);

        for (size_t p = 0; p < PREFILLED; p++)
                if (region[p * VICTIM_PAGE_SIZE] != expected(p))
                        victim_fail("page %zu filled wrong", p);
        layout_add("region", region, REGION);
        layout_add("progress", (const void *)progress, sizeof(progress));
        setup_marked();
        victim_ready();

        /* Keep faulting new pages through our own uffd, then start over on a fresh mapping. */
        for (size_t p = PREFILLED;; p++) {
                if (p == REGION / VICTIM_PAGE_SIZE) {
                        p = PREFILLED;
                        if (madvise(region + PREFILLED * VICTIM_PAGE_SIZE, REGION - PREFILLED * VICTIM_PAGE_SIZE,
                                    MADV_DONTNEED) < 0)
                                victim_fail("madvise: %m");
                }
                if (region[p * VICTIM_PAGE_SIZE] != expected(p))
                        victim_fail("page %zu: our own uffd filled %u, expected %u", p, region[p * VICTIM_PAGE_SIZE],
                                    expected(p));
                progress[0]++;
                usleep(100);
        }
}

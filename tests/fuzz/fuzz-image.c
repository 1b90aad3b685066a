/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzz target for the image reader: whatever the bytes, open/verify/read must fail cleanly or work. */

#include <fcntl.h>
#include <sys/mman.h>

#include "image.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char path[64], err[256];
        ImageReader *r = NULL;
        int fd;

        fd = memfd_create("fuzz-image", MFD_CLOEXEC);
        if (fd < 0)
                return 0;
        if (size > 0 && write(fd, data, size) != (ssize_t)size) {
                close(fd);
                return 0;
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

        if (image_open(path, &r, err, sizeof(err)) >= 0) {
                uint8_t buf[2 * IMAGE_PAGE_SIZE];
                void *auxv = NULL;
                size_t auxv_len;

                (void)image_verify(r, NULL, NULL, err, sizeof(err));
                for (size_t i = 0; i < image_n_threads(r); i++) {
                        ImageThread t;
                        if (image_read_thread(r, i, &t) >= 0)
                                image_thread_done(&t);
                }
                if (image_read_auxv(r, &auxv, &auxv_len) >= 0)
                        free(auxv);
                for (size_t i = 0; i < image_n_vmas(r); i++) {
                        const ImageVma *v = image_vma(r, i);
                        ImageMemError me;
                        uint64_t bad;
                        (void)image_read_memory(r, v->start, MIN(sizeof(buf), v->end - v->start), buf, &me, &bad);
                        (void)image_read_memory(r, v->end - 8, 16, buf, &me, &bad);
                }
                for (size_t i = 0; i < image_n_page_chunks(r) && i < 4; i++) {
                        uint64_t a;
                        uint32_t n;
                        image_page_chunk(r, i, &a, &n);
                        void *p = malloc((size_t)n * IMAGE_PAGE_SIZE);
                        if (p)
                                (void)image_read_page_chunk(r, i, p);
                        free(p);
                }
                image_close(r);
        }
        close(fd);
        return 0;
}

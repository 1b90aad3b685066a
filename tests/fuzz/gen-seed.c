/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Writes small, valid images with every section type: the fuzz corpus's seeds. */

#include <sys/mman.h>

#include "image.h"
#include "util.h"

static int write_seed(const char *path, int compress)
{
        ImageWriterOptions o = { .compress_level = compress, .no_sync = true };
        ImageWriter *w = NULL;
        uint8_t pages[3 * IMAGE_PAGE_SIZE] = {};
        ImageVma vmas[2] = {
                { .start = 0x10000, .end = 0x14000, .prot = PROT_READ | PROT_WRITE, .flags = IMAGE_VMA_ANON,
                  .content = IMAGE_VMA_CONTENT_FULL },
                { .start = 0x400000, .end = 0x401000, .prot = PROT_READ, .content = IMAGE_VMA_CONTENT_FILE,
                  .inode = 7, .name = (char *)"/lib/x.so" },
        };
        ImageHole hole = { .start = 0x13000, .end = 0x14000, .reason = IMAGE_HOLE_DISCARDED };
        uint64_t regs[27] = { 1 }, auxv[4] = { 6, 4096, 0, 0 };
        ImageRegset rs = { IMAGE_REGSET_PRSTATUS, sizeof(regs), regs };
        ImageThread t = { .tid = 10, .flags = IMAGE_THREAD_MAIN, .comm = "seed", .n_regsets = 1, .regsets = &rs };
        json_object *meta = json_object_new_object();
        int r;

        for (size_t i = 0; i < sizeof(pages); i++)
                pages[i] = (uint8_t)(i % 251 + 1);
        json_object_object_add(meta, "freeze_us", json_object_new_int(1));
        r = image_writer_new(path, &o, &w);
        if (r >= 0)
                r = image_writer_add_pages(w, 0x10000, pages, 3);
        if (r >= 0)
                r = image_writer_add_maps(w, vmas, 2);
        if (r >= 0)
                r = image_writer_add_thread(w, &t);
        if (r >= 0)
                r = image_writer_add_auxv(w, auxv, sizeof(auxv));
        if (r >= 0)
                r = image_writer_add_holes(w, &hole, 1);
        if (r >= 0)
                r = image_writer_add_json(w, IMAGE_SECTION_META, meta);
        if (r >= 0)
                r = image_writer_finish(w);
        image_writer_free(w);
        json_object_put(meta);
        return r;
}

int main(int argc, char *argv[])
{
        char p[4096];

        if (argc != 2) {
                fprintf(stderr, "usage: gen-seed DIR\n");
                return 2;
        }
        snprintf(p, sizeof(p), "%s/seed-plain", argv[1]);
        if (write_seed(p, 0) < 0)
                return 1;
        snprintf(p, sizeof(p), "%s/seed-zstd", argv[1]);
        if (write_seed(p, 3) < 0)
                return 1;
        return 0;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests for the image format: round trips, truncation and corruption. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "image.h"
#include "util.h"

#define WRITE_ALIGN_FOR_TESTS 4096 /* image.c's WRITE_ALIGN */

static char dir[] = "/tmp/test-image.XXXXXX";

static char *path_in_dir(const char *name)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static size_t count_dir_entries(void)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void fill_page(uint8_t *p, uint64_t seed)
{
        for (size_t i = 0; i < IMAGE_PAGE_SIZE / 8; i++)
                ((uint64_t *)p)[i] = seed * 1000003ULL + i + 1;
}

/* A small image: two mappings (one anonymous, one file-backed), 3 page chunks with a zero page in the
 * middle of one, a discarded hole, two threads, auxv and meta. */
static void write_sample(const char *path, int compress)
{
        ImageWriterOptions o = { .compress_level = compress, .no_sync = true };
        ImageWriter *w = NULL;
        uint8_t *pages = calloc(8, IMAGE_PAGE_SIZE);
        ImageVma vmas[2] = {
                { .start = 0x10000, .end = 0x20000, .prot = PROT_READ | PROT_WRITE, .flags = IMAGE_VMA_ANON,
                  .content = IMAGE_VMA_CONTENT_FULL, .name = NULL },
                { .start = 0x400000, .end = 0x402000, .pgoff = 0x3000, .prot = PROT_READ | PROT_WRITE,
                  .content = IMAGE_VMA_CONTENT_FILE, .inode = 42, .dev_major = 8, .dev_minor = 1,
                  .name = (char *)"/usr/lib/x.so" },
        };
        ImageHole hole = { .start = 0x18000, .end = 0x1a000, .reason = IMAGE_HOLE_DISCARDED };
        uint64_t regs[27] = { 1, 2, 3 };
        uint8_t xstate[832] = { 7 };
        ImageRegset rs_main[2] = { { IMAGE_REGSET_PRSTATUS, sizeof(regs), regs },
                                   { IMAGE_REGSET_XSTATE, sizeof(xstate), xstate } };
        ImageRegset rs_other[1] = { { IMAGE_REGSET_PRSTATUS, sizeof(regs), regs } };
        ImageThread t_other = { .tid = 1001, .comm = "worker", .n_regsets = 1, .regsets = rs_other };
        ImageThread t_main = { .tid = 1000, .flags = IMAGE_THREAD_MAIN, .comm = "main", .n_regsets = 2,
                               .regsets = rs_main };
        uint64_t auxv[4] = { 6, 4096, 0, 0 };
        json_object *meta = json_object_new_object();
        ImageWriterStats st;

        bool existed = access(path, F_OK) == 0;

        assert_non_null(pages);
        for (int i = 0; i < 4; i++)
                if (i != 2)
                        fill_page(pages + i * IMAGE_PAGE_SIZE, (uint64_t)i);
        json_object_object_add(meta, "freeze_us", json_object_new_int(1234));

        assert_int_equal(image_writer_new(path, &o, &w), 0);
        /* page chunks arrive out of address order, as faults make them */
        assert_int_equal(image_writer_add_pages(w, 0x14000, pages, 4), 0); /* page 2 is zero */
        fill_page(pages + 4 * IMAGE_PAGE_SIZE, 99);
        assert_int_equal(image_writer_add_pages(w, 0x10000, pages + 4 * IMAGE_PAGE_SIZE, 1), 0);
        fill_page(pages + 5 * IMAGE_PAGE_SIZE, 77);
        assert_int_equal(image_writer_add_pages(w, 0x400000, pages + 5 * IMAGE_PAGE_SIZE, 1), 0);
        assert_int_equal(image_writer_add_maps(w, vmas, 2), 0);
        assert_int_equal(image_writer_add_thread(w, &t_other), 0);
        assert_int_equal(image_writer_add_thread(w, &t_main), 0);
        assert_int_equal(image_writer_add_auxv(w, auxv, sizeof(auxv)), 0);
        assert_int_equal(image_writer_add_holes(w, &hole, 1), 0);
        assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
        image_writer_get_stats(w, &st);
        assert_int_equal(st.pages_stored, 5);
        assert_int_equal(st.pages_zero, 1);
        /* nothing visible before finish */
        if (!existed)
                assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(image_writer_finish(w), 0);
        image_writer_free(w);
        json_object_put(meta);
        free(pages);
}

static void check_sample(const char *path)
{
        char err[256] = "";
        ImageReader *r = NULL;
        uint8_t buf[3 * IMAGE_PAGE_SIZE], expect[IMAGE_PAGE_SIZE];
        ImageMemError me;
        uint64_t bad;
        ImageThread t;
        void *auxv;
        size_t auxv_len;
        json_object *v;

        assert_int_equal(image_open(path, &r, err, sizeof(err)), 0);
        assert_int_equal(image_verify(r, NULL, NULL, err, sizeof(err)), 0);
        assert_int_equal(image_version(r), 1);
        assert_int_equal(image_pages_stored(r), 5);
        assert_true(json_object_object_get_ex(image_meta(r), "freeze_us", &v));
        assert_int_equal(json_object_get_int(v), 1234);

        assert_int_equal(image_n_vmas(r), 2);
        assert_int_equal(image_vma(r, 0)->start, 0x10000);
        assert_int_equal(image_vma(r, 0)->content, IMAGE_VMA_CONTENT_FULL);
        assert_true(image_vma(r, 0)->flags & IMAGE_VMA_ANON);
        assert_null(image_vma(r, 0)->name);
        assert_string_equal(image_vma(r, 1)->name, "/usr/lib/x.so");
        assert_int_equal(image_vma(r, 1)->pgoff, 0x3000);
        assert_int_equal(image_vma(r, 1)->inode, 42);
        assert_int_equal(image_vma(r, 1)->dev_major, 8);
        assert_int_equal(image_vma(r, 1)->prot, PROT_READ | PROT_WRITE);

        assert_int_equal(image_n_threads(r), 2);
        assert_int_equal(image_read_thread(r, 0, &t), 0);
        assert_int_equal(t.tid, 1000); /* main first */
        assert_true(t.flags & IMAGE_THREAD_MAIN);
        assert_string_equal(t.comm, "main");
        assert_int_equal(t.n_regsets, 2);
        assert_int_equal(t.regsets[1].type, IMAGE_REGSET_XSTATE);
        assert_int_equal(t.regsets[1].size, 832);
        assert_int_equal(((uint8_t *)t.regsets[1].data)[0], 7);
        image_thread_done(&t);
        assert_int_equal(image_read_thread(r, 1, &t), 0);
        assert_int_equal(t.tid, 1001);
        image_thread_done(&t);

        assert_int_equal(image_read_auxv(r, &auxv, &auxv_len), 0);
        assert_int_equal(auxv_len, 32);
        assert_int_equal(((uint64_t *)auxv)[1], 4096);
        free(auxv);

        /* data, a zero page, and a stored page again, across chunk boundaries */
        assert_int_equal(image_read_memory(r, 0x15000, sizeof(buf), buf, &me, &bad), 0);
        fill_page(expect, 1);
        assert_memory_equal(buf, expect, IMAGE_PAGE_SIZE);
        memset(expect, 0, sizeof(expect));
        assert_memory_equal(buf + IMAGE_PAGE_SIZE, expect, IMAGE_PAGE_SIZE);
        fill_page(expect, 3);
        assert_memory_equal(buf + 2 * IMAGE_PAGE_SIZE, expect, IMAGE_PAGE_SIZE);
        /* unaligned read */
        assert_int_equal(image_read_memory(r, 0x10008, 8, buf, &me, &bad), 0);
        fill_page(expect, 99);
        assert_memory_equal(buf, expect + 8, 8);
        /* never stored in an anonymous mapping: zero */
        assert_int_equal(image_read_memory(r, 0x1c000, 16, buf, &me, &bad), 0);
        assert_int_equal(buf[0] | buf[15], 0);
        /* discarded */
        assert_int_equal(image_read_memory(r, 0x17ff0, 32, buf, &me, &bad), -ENOENT);
        assert_int_equal(me, IMAGE_MEM_DISCARDED);
        assert_int_equal(bad, 0x18000);
        /* not mapped */
        assert_int_equal(image_read_memory(r, 0x30000, 1, buf, &me, &bad), -ENOENT);
        assert_int_equal(me, IMAGE_MEM_NOT_MAPPED);
        /* file-backed: stored page readable, the rest not saved */
        assert_int_equal(image_read_memory(r, 0x400000, 8, buf, &me, &bad), 0);
        assert_int_equal(image_read_memory(r, 0x401000, 8, buf, &me, &bad), -ENOENT);
        assert_int_equal(me, IMAGE_MEM_UNSAVED);

        image_close(r);
}

static void test_round_trip(void **state)
{
        _cleanup_free_ char *p = path_in_dir("plain.lsnap");

        write_sample(p, 0);
        check_sample(p);
        unlink(p);
}

static void test_round_trip_compressed(void **state)
{
        _cleanup_free_ char *p = path_in_dir("zstd.lsnap"), *q = path_in_dir("plain2.lsnap");
        struct stat a, b;

        write_sample(p, 3);
        write_sample(q, 0);
        check_sample(p);
        assert_int_equal(stat(p, &a), 0);
        assert_int_equal(stat(q, &b), 0);
        assert_true(a.st_size < b.st_size);
        unlink(p);
        unlink(q);
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
        return read_full_file(path, (char **)ret, ret_len);
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        close(fd);
}

/* Open and, if that works, verify; returns the first error. */
static int open_and_verify(const char *path, char *err, size_t errlen)
{
        ImageReader *r = NULL;
        int k = image_open(path, &r, err, errlen);

        if (k < 0)
                return k;
        k = image_verify(r, NULL, NULL, err, errlen);
        image_close(r);
        return k;
}

static void test_truncated(void **state)
{
        _cleanup_free_ char *p = path_in_dir("t.lsnap"), *q = path_in_dir("t-cut.lsnap");
        _cleanup_free_ uint8_t *data = NULL;
        size_t len;
        char err[256];

        write_sample(p, 0);
        assert_int_equal(read_file(p, &data, &len), 0);

        for (size_t cut = 0; cut < len; cut += (cut < 200 || len - cut < 200) ? 1 : 61) {
                err[0] = 0;
                write_file(q, data, cut);
                assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
                assert_true(strlen(err) > 0);
        }
        /* the message names the problem */
        write_file(q, data, len - 1);
        assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
        assert_non_null(strstr(err, "truncated"));
        unlink(p);
        unlink(q);
}

static void test_corrupted(void **state)
{
        _cleanup_free_ char *p = path_in_dir("c.lsnap"), *q = path_in_dir("c-bad.lsnap");
        _cleanup_free_ uint8_t *data = NULL;
        size_t len;
        char err[256];

        write_sample(p, 0);
        assert_int_equal(read_file(p, &data, &len), 0);

        for (size_t off = 0; off < len; off += 97)
                for (int bit = 0; bit < 8; bit += 3) {
                        data[off] ^= (uint8_t)(1 << bit);
                        write_file(q, data, len);
                        err[0] = 0;
                        assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
                        assert_true(strlen(err) > 0);
                        data[off] ^= (uint8_t)(1 << bit);
                }

        /* bad magic */
        memcpy(data, "NOTANIMG", 8);
        write_file(q, data, len);
        assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
        assert_non_null(strstr(err, "not a livesnap image"));
        unlink(p);
        unlink(q);
}

static void test_garbage_and_empty(void **state)
{
        _cleanup_free_ char *q = path_in_dir("g.lsnap");
        uint8_t junk[4096];
        char err[256];

        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (uint8_t)(i * 31 + 7);
        write_file(q, junk, sizeof(junk));
        assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
        write_file(q, junk, 0);
        assert_int_equal(open_and_verify(q, err, sizeof(err)), -EBADMSG);
        unlink(q);
        assert_int_equal(open_and_verify(q, err, sizeof(err)), -ENOENT);
}

static void test_unfinished_leaves_nothing(void **state)
{
        _cleanup_free_ char *p = path_in_dir("u.lsnap");
        ImageWriter *w = NULL;
        uint8_t page[IMAGE_PAGE_SIZE];
        size_t before = count_dir_entries();

        fill_page(page, 5);
        assert_int_equal(image_writer_new(p, NULL, &w), 0);
        assert_int_equal(image_writer_add_pages(w, 0x1000, page, 1), 0);
        image_writer_free(w);
        assert_int_equal(count_dir_entries(), before);
        assert_int_equal(access(p, F_OK), -1);
}

static void test_replace_atomically(void **state)
{
        _cleanup_free_ char *p = path_in_dir("r.lsnap");
        ImageWriter *w = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        size_t len;

        write_file(p, (const uint8_t *)"old", 3);
        assert_int_equal(image_writer_new(p, NULL, &w), 0);
        /* the old file is untouched until finish */
        assert_int_equal(read_file(p, &data, &len), 0);
        assert_int_equal(len, 3);
        image_writer_free(w);
        free(TAKE_PTR(data));
        assert_int_equal(read_file(p, &data, &len), 0);
        assert_int_equal(len, 3);
        free(TAKE_PTR(data));

        write_sample(p, 0);
        check_sample(p);
        unlink(p);
}

/* An image of exactly 256 sections besides the index, then 512: the index array is full when the INDEX
 * section is written, and growing it then freed the very payload being written (use after free; the
 * image's index came out corrupt). Then with the writer's memory for page entries exactly as many as
 * there are, and one fewer (one run spilled, one entry left in memory). */
static void test_index_full_at_finish(void **state)
{
        _cleanup_free_ char *p = path_in_dir("full-index.lsnap");
        json_object *meta;
        ImageVma vma = { .start = 0x100000, .end = 0x100000 + 1024 * IMAGE_PAGE_SIZE, .flags = IMAGE_VMA_ANON,
                         .content = IMAGE_VMA_CONTENT_FULL };
        ImageWriterOptions o = { .no_sync = true };
        uint8_t page[IMAGE_PAGE_SIZE];
        char err[256] = "";

        for (size_t v = 0; v < 6; v++) {
                size_t n_sections = v % 2 ? 512 : 256;
                ImageWriter *w = NULL;

                o.index_memory = v < 2 ? 0 : (n_sections - 2 - (v >= 4)) * 16;
                assert_int_equal(image_writer_new(p, &o, &w), 0);
                /* META and MAPS, then page chunks of one page each, apart so they stay separate sections. */
                meta = json_object_new_object();
                assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
                json_object_put(meta);
                assert_int_equal(image_writer_add_maps(w, &vma, 1), 0);
                for (size_t i = 0; i < n_sections - 2; i++) {
                        fill_page(page, i);
                        assert_int_equal(image_writer_add_pages(w, vma.start + 2 * i * IMAGE_PAGE_SIZE, page, 1), 0);
                }
                assert_int_equal(image_writer_finish(w), 0);
                image_writer_free(w);
                assert_int_equal(open_and_verify(p, err, sizeof(err)), 0);
                unlink(p);
        }
}

enum { SHUFFLED_N = 5000 };

/* Writes SHUFFLED_N one-page chunks in shuffled address order, every third compressible, with META
 * first and MAPS half way; the same bytes for the same index_memory. */
static void write_shuffled(const char *p, size_t index_memory)
{
        ImageVma vma = { .start = 0x100000, .end = 0x100000 + 2 * SHUFFLED_N * IMAGE_PAGE_SIZE,
                         .flags = IMAGE_VMA_ANON, .content = IMAGE_VMA_CONTENT_FULL };
        ImageWriterOptions o = { .compress_level = 1, .no_sync = true, .index_memory = index_memory };
        uint64_t rng = 42;
        size_t order[SHUFFLED_N];
        uint8_t page[IMAGE_PAGE_SIZE];
        ImageWriter *w = NULL;
        json_object *meta;

        for (size_t i = 0; i < SHUFFLED_N; i++)
                order[i] = i;
        for (size_t i = SHUFFLED_N - 1; i > 0; i--) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t j = (size_t)(rng >> 33) % (i + 1), t = order[i];
                order[i] = order[j];
                order[j] = t;
        }

        assert_int_equal(image_writer_new(p, &o, &w), 0);
        meta = json_object_new_object();
        assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
        json_object_put(meta);
        for (size_t i = 0; i < SHUFFLED_N; i++) {
                /* Every third chunk compresses (one byte repeated); the others are noise and stay raw. */
                if (order[i] % 3 == 0)
                        memset(page, 0x41 + (int)(order[i] % 7), sizeof(page));
                else
                        for (size_t k = 0; k < sizeof(page) / 8; k++) {
                                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                                memcpy(page + 8 * k, &rng, 8);
                        }
                assert_int_equal(image_writer_add_pages(w, vma.start + 2 * order[i] * IMAGE_PAGE_SIZE, page, 1), 0);
                if (i == SHUFFLED_N / 2)
                        assert_int_equal(image_writer_add_maps(w, &vma, 1), 0);
        }
        assert_int_equal(image_writer_finish(w), 0);
        image_writer_free(w);
}

/* Asserts that the index on disk is sorted and that each entry is the section it points at. */
static void check_index_sorted(const char *p)
{
        uint64_t trailer[6], n, idx_off, prev_type = 0, prev_arg = 0, prev_off = 0;
        size_t zstd = 0, raw = 0, pages = 0;
        char err[256] = "";
        int fd;

        assert_int_equal(open_and_verify(p, err, sizeof(err)), 0);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        off_t size = lseek(fd, 0, SEEK_END);
        assert_int_equal(pread(fd, trailer, sizeof(trailer), size - (off_t)sizeof(trailer)), sizeof(trailer));
        idx_off = trailer[1];
        n = trailer[4];
        assert_int_equal(n, SHUFFLED_N + 2); /* the pages, META and MAPS */
        uint8_t (*e)[40] = calloc(n, 40);
        assert_non_null(e);
        assert_int_equal(pread(fd, e, n * 40, (off_t)idx_off + 48), (ssize_t)(n * 40));
        for (uint64_t i = 0; i < n; i++) {
                uint32_t type, flags;
                uint64_t off, arg, raw_len, stored_len, hdr[6];

                memcpy(&type, e[i], 4);
                memcpy(&flags, e[i] + 4, 4);
                memcpy(&off, e[i] + 8, 8);
                memcpy(&arg, e[i] + 16, 8);
                memcpy(&raw_len, e[i] + 24, 8);
                memcpy(&stored_len, e[i] + 32, 8);
                /* sorted */
                assert_true(type >= prev_type);
                if (type == prev_type && type == IMAGE_SECTION_PAGES)
                        assert_true(arg > prev_arg);
                else if (type == prev_type)
                        assert_true(off > prev_off);
                prev_type = type;
                prev_arg = arg;
                prev_off = off;
                /* and each entry is the section it points at */
                assert_int_equal(pread(fd, hdr, sizeof(hdr), (off_t)off), sizeof(hdr));
                assert_int_equal(hdr[0] >> 32, type);
                assert_int_equal((uint32_t)hdr[1], flags);
                assert_int_equal(hdr[2], arg);
                assert_int_equal(hdr[3], raw_len);
                assert_int_equal(hdr[4], stored_len);
                if (type == IMAGE_SECTION_PAGES) {
                        pages++;
                        assert_int_equal(raw_len, IMAGE_PAGE_SIZE);
                        if (flags & 1)
                                zstd++;
                        else {
                                assert_int_equal(stored_len, raw_len);
                                raw++;
                        }
                }
        }
        assert_int_equal(pages, SHUFFLED_N);
        assert_true(zstd > 0 && raw > 0);
        free(e);
        close(fd);
}


/*
 * The index on disk is sorted (type, then address for PAGES, then offset) and lists every section, however
 * the writer holds it: thousands of page chunks in shuffled address order, some compressed and some not
 * (the writer keeps the two kinds apart in memory and merges them when it writes the index), among the
 * other sections. Read raw from the file, as livesnap-image(5) lays it out. Then again with the writer
 * holding only 4 KiB of each kind in memory, so that both kinds go to its spill file in sorted runs
 * (20 and 33) that it merges: the file must be the same, byte for byte.
 */
static void test_index_sorted_on_disk(void **state)
{
        _cleanup_free_ char *p = path_in_dir("sorted-index.lsnap"), *q = path_in_dir("sorted-index-spilled.lsnap");
        _cleanup_free_ uint8_t *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;

        write_shuffled(p, 0);
        check_index_sorted(p);
        write_shuffled(q, 4096);
        check_index_sorted(q);

        assert_int_equal(read_file(p, &a, &la), 0);
        assert_int_equal(read_file(q, &b, &lb), 0);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
        unlink(p);
        unlink(q);
}

static void test_bad_arguments(void **state)
{
        _cleanup_free_ char *p = path_in_dir("a.lsnap");
        ImageWriter *w = NULL;
        uint8_t page[IMAGE_PAGE_SIZE] = { 1 };

        assert_int_equal(image_writer_new(p, NULL, &w), 0);
        assert_int_equal(image_writer_add_pages(w, 0x1001, page, 1), -EINVAL);
        assert_int_equal(image_writer_add_pages(w, 0x1000, page, 0), -EINVAL);
        assert_int_equal(image_writer_add_pages(w, 0x1000, page, IMAGE_CHUNK_MAX_PAGES + 1), -EINVAL);
        image_writer_free(w);
        assert_int_equal(image_writer_new("/nonexistent-dir/x.lsnap", NULL, &w), -ENOENT);
}

/* Writes an image of n_chunks chunks of 1..IMAGE_CHUNK_MAX_PAGES pages (sizes vary, so sections cross
 * the writer's 1 MiB blocks anywhere and the file ends off any block boundary). */
static void write_chunks(const char *path, bool no_direct, size_t n_chunks)
{
        ImageWriterOptions o = { .no_sync = true, .no_direct = no_direct };
        ImageVma vma = { .start = 0x100000, .end = 0x100000 + (uint64_t)n_chunks * (2 << 20), .flags = IMAGE_VMA_ANON,
                         .content = IMAGE_VMA_CONTENT_FULL };
        uint8_t *pages = malloc(IMAGE_CHUNK_MAX_PAGES * IMAGE_PAGE_SIZE);
        json_object *meta = json_object_new_object();
        ImageWriter *w = NULL;

        assert_non_null(pages);
        assert_int_equal(image_writer_new(path, &o, &w), 0);
        for (size_t i = 0; i < n_chunks; i++) {
                size_t n = 1 + (i * 97) % IMAGE_CHUNK_MAX_PAGES;

                for (size_t k = 0; k < n; k++)
                        fill_page(pages + k * IMAGE_PAGE_SIZE, i * 1000 + k);
                assert_int_equal(image_writer_add_pages(w, vma.start + (uint64_t)i * (2 << 20), pages, n), 0);
        }
        assert_int_equal(image_writer_add_maps(w, &vma, 1), 0);
        json_object_object_add(meta, "chunks", json_object_new_int((int)n_chunks));
        assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
        assert_int_equal(image_writer_finish(w), 0);
        image_writer_free(w);
        json_object_put(meta);
        free(pages);
}

/* Pages of the file in the page cache, or -1 if it cannot be told. */
static long cached_pages(const char *path)
{
        struct stat st;
        unsigned char *vec;
        long n = 0;
        void *m;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        assert_true(m != MAP_FAILED);
        vec = malloc((size_t)(st.st_size + IMAGE_PAGE_SIZE - 1) / IMAGE_PAGE_SIZE);
        assert_non_null(vec);
        if (mincore(m, (size_t)st.st_size, vec) < 0)
                n = -1;
        for (off_t i = 0; n >= 0 && i < (st.st_size + IMAGE_PAGE_SIZE - 1) / IMAGE_PAGE_SIZE; i++)
                n += vec[i] & 1;
        free(vec);
        munmap(m, (size_t)st.st_size);
        return n;
}

/* The writer's blocks (O_DIRECT where the file system takes it) and the page cache give the same
 * bytes; with O_DIRECT the image is not left in the page cache. */
static void test_direct_and_buffered(void **state)
{
        _cleanup_free_ char *d = path_in_dir("direct.lsnap"), *b = path_in_dir("buffered.lsnap"),
                            *probe = path_in_dir("probe");
        _cleanup_free_ uint8_t *dd = NULL, *bd = NULL;
        size_t dl = 0, bl = 0;
        char err[256] = "";
        bool direct_fs;
        int fd;

        write_chunks(d, false, 12);
        write_chunks(b, true, 12);
        assert_int_equal(read_file(d, &dd, &dl), 0);
        assert_int_equal(read_file(b, &bd, &bl), 0);
        assert_true(dl > (4U << 20));
        assert_true(dl % WRITE_ALIGN_FOR_TESTS != 0);
        assert_int_equal(dl, bl);
        assert_memory_equal(dd, bd, dl);
        assert_int_equal(open_and_verify(d, err, sizeof(err)), 0);

        fd = open(probe, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
        direct_fs = fd >= 0;
        if (fd >= 0)
                close(fd);
        unlink(probe);
        if (!direct_fs)
                fprintf(stderr, "test_direct_and_buffered: %s takes no O_DIRECT: page-cache check skipped\n", dir);
        else {
                unlink(d);
                write_chunks(d, false, 12);
                long n = cached_pages(d);
                if (n < 0)
                        fprintf(stderr, "test_direct_and_buffered: mincore failed: page-cache check skipped\n");
                else
                        /* Of its 1000-odd pages, none should be cached; allow a few: valgrind reads the
                         * head of any file that is mapped (to look for ELF debug info). */
                        assert_true(n <= 16);
        }
        unlink(d);
        unlink(b);
}

/* A disk that fills while the last bytes wait in the writer's block: finish says so, nothing appears. */
static void test_full_disk_at_finish(void **state)
{
        char mnt[] = "/tmp/test-image-full.XXXXXX";
        _cleanup_free_ char *p = NULL;
        ImageWriterOptions o = { .no_sync = true };
        ImageWriter *w = NULL;
        uint8_t page[IMAGE_PAGE_SIZE];

        assert_non_null(mkdtemp(mnt));
        if (mount("none", mnt, "tmpfs", 0, "size=256k") < 0) {
                rmdir(mnt);
                skip(); /* needs root: say so in the output */
        }
        assert_true(asprintf(&p, "%s/full.lsnap", mnt) > 0);
        assert_int_equal(image_writer_new(p, &o, &w), 0);
        /* 128 pages apart from each other: 512 KiB, under the writer's block, over the disk */
        for (int i = 0; i < 128; i++) {
                fill_page(page, (uint64_t)i);
                assert_int_equal(image_writer_add_pages(w, 0x100000 + (uint64_t)i * 2 * IMAGE_PAGE_SIZE, page, 1), 0);
        }
        assert_int_equal(image_writer_finish(w), -ENOSPC);
        image_writer_free(w);
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(umount(mnt), 0);
        rmdir(mnt);
}

static void test_full_disk(void **state)
{
        char mnt[] = "/tmp/test-image-full.XXXXXX";
        _cleanup_free_ char *p = NULL;
        ImageWriter *w = NULL;
        uint8_t *pages;
        int r = 0;

        assert_non_null(mkdtemp(mnt));
        if (mount("none", mnt, "tmpfs", 0, "size=256k") < 0) {
                rmdir(mnt);
                skip(); /* needs root: say so in the output */
        }
        assert_true(asprintf(&p, "%s/full.lsnap", mnt) > 0);
        pages = malloc(IMAGE_CHUNK_MAX_PAGES * IMAGE_PAGE_SIZE);
        assert_non_null(pages);
        for (size_t i = 0; i < IMAGE_CHUNK_MAX_PAGES; i++)
                fill_page(pages + i * IMAGE_PAGE_SIZE, i);

        assert_int_equal(image_writer_new(p, NULL, &w), 0);
        for (int i = 0; i < 4 && r >= 0; i++)
                r = image_writer_add_pages(w, 0x100000 + (uint64_t)i * (2 << 20), pages, IMAGE_CHUNK_MAX_PAGES);
        assert_int_equal(r, -ENOSPC);
        image_writer_free(w);
        assert_int_equal(access(p, F_OK), -1);
        free(pages);
        assert_int_equal(umount(mnt), 0);
        rmdir(mnt);
}

/* The disk fills while the writer spills its index (one entry in memory, so every section spills one;
 * pages that compress to a few bytes, so the image itself stays in the writer's 1 MiB stage): ENOSPC
 * from the section that meets it, and nothing left behind. */
static void test_full_disk_spill(void **state)
{
        char mnt[] = "/tmp/test-image-spill.XXXXXX";
        ImageWriterOptions o = { .compress_level = 1, .index_memory = 1 };
        _cleanup_free_ char *p = NULL, *filler = NULL;
        uint8_t page[IMAGE_PAGE_SIZE], chunk[4096] = {};
        ImageWriter *w = NULL;
        size_t i;
        int fd, r = 0;

        assert_non_null(mkdtemp(mnt));
        if (mount("none", mnt, "tmpfs", 0, "size=256k") < 0) {
                rmdir(mnt);
                skip(); /* needs root: say so in the output */
        }
        /* All but 8 KiB of the file system taken. */
        assert_true(asprintf(&filler, "%s/filler", mnt) > 0);
        fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        while (write(fd, chunk, sizeof(chunk)) == (ssize_t)sizeof(chunk))
                ;
        assert_int_equal(ftruncate(fd, lseek(fd, 0, SEEK_CUR) - 2 * (off_t)sizeof(chunk)), 0);
        close(fd);

        assert_true(asprintf(&p, "%s/spill.lsnap", mnt) > 0);
        assert_int_equal(image_writer_new(p, &o, &w), 0);
        memset(page, 0x5a, sizeof(page));
        for (i = 0; i < 10000 && r >= 0; i++)
                r = image_writer_add_pages(w, 0x100000 + 2 * i * IMAGE_PAGE_SIZE, page, 1);
        assert_int_equal(r, -ENOSPC);
        assert_true(i > 100); /* 8 KiB of spill file took some hundred entries */
        image_writer_free(w);
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(unlink(filler), 0);
        DIR *d = opendir(mnt);
        assert_non_null(d);
        for (struct dirent *de; (de = readdir(d));)
                assert_true(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
        closedir(d);
        assert_int_equal(umount(mnt), 0);
        rmdir(mnt);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_round_trip_compressed),
                cmocka_unit_test(test_index_sorted_on_disk),
                cmocka_unit_test(test_truncated),
                cmocka_unit_test(test_corrupted),
                cmocka_unit_test(test_garbage_and_empty),
                cmocka_unit_test(test_unfinished_leaves_nothing),
                cmocka_unit_test(test_replace_atomically),
                cmocka_unit_test(test_index_full_at_finish),
                cmocka_unit_test(test_bad_arguments),
                cmocka_unit_test(test_full_disk),
                cmocka_unit_test(test_full_disk_spill),
                cmocka_unit_test(test_direct_and_buffered),
                cmocka_unit_test(test_full_disk_at_finish),
        };
        int r;

        assert_non_null(mkdtemp(dir));
        r = cmocka_run_group_tests(tests, NULL, NULL);
        rmdir(dir);
        return r;
}

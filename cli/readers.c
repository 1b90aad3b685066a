/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The read-only verbs: info, verify, cat. */

#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <sys/mman.h>

#include "core.h"
#include "image.h"
#include "progress.h"
#include "util.h"
#include "verbs.h"

/* Opens an image, mapping errors to exit statuses: a missing file is a failure (1), anything that is
 * not a valid image is 3. */
static int open_image(const char *path, ImageReader **ret)
{
        char err[256] = "";
        int r;

        r = image_open(path, ret, err, sizeof(err));
        if (r >= 0)
                return EXIT_OK;
        log_error("%s: %s", path, err[0] ? err : strerror(-r));
        return r == -EBADMSG || r == -EPROTONOSUPPORT ? EXIT_BAD_IMAGE : EXIT_FAILED;
}

/* Stored pages of v: page chunks are sorted by address, so binary search for the first that ends past
 * v->start and walk until past v->end (O(log n + chunks in v), not a scan of every chunk). */
static uint64_t vma_pages_stored(ImageReader *r, const ImageVma *v)
{
        size_t lo = 0, hi = image_n_page_chunks(r);
        uint64_t n = 0;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                uint64_t a;
                uint32_t np;

                image_page_chunk(r, mid, &a, &np);
                if (a + (uint64_t)np * IMAGE_PAGE_SIZE <= v->start)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (size_t i = lo; i < image_n_page_chunks(r); i++) {
                uint64_t a, e;
                uint32_t np;

                image_page_chunk(r, i, &a, &np);
                if (a >= v->end)
                        break;
                e = a + (uint64_t)np * IMAGE_PAGE_SIZE;
                n += (MIN(e, v->end) - MAX(a, v->start)) / IMAGE_PAGE_SIZE;
        }
        return n;
}

/* info shows every thread: one it cannot read makes the image invalid, as a bad META or MAPS does
 * (those image_open() reads). Checked before anything is printed. */
static int check_threads(ImageReader *r, const char *path)
{
        for (size_t i = 0; i < image_n_threads(r); i++) {
                ImageThread t;
                int k = image_read_thread(r, i, &t);

                if (k < 0) {
                        log_error("%s: thread %zu of %zu: %s", path, i + 1, image_n_threads(r),
                                  k == -EBADMSG ? "corrupt section (checksum, header or contents)"
                                                : strerror(-k));
                        return k == -EBADMSG ? EXIT_BAD_IMAGE : EXIT_FAILED;
                }
                image_thread_done(&t);
        }
        return EXIT_OK;
}

static void prot_string(uint32_t prot, char s[4])
{
        s[0] = prot & PROT_READ ? 'r' : '-';
        s[1] = prot & PROT_WRITE ? 'w' : '-';
        s[2] = prot & PROT_EXEC ? 'x' : '-';
        s[3] = 0;
}

int verb_info(int argc, char *argv[])
{
        ImageReader *r = NULL;
        CorePlan plan;
        bool json = false;
        int k;

        k = parse_verb_args(argc, argv,
                            "Usage: livesnap info FILE [--json]\n\nShow what a checkpoint image holds.\n", 1, &json);
        if (k != EXIT_OK)
                return k < 0 ? EXIT_OK : k;
        k = open_image(argv[optind], &r);
        if (k != EXIT_OK)
                return k;
        k = check_threads(r, argv[optind]);
        if (k != EXIT_OK) {
                image_close(r);
                return k;
        }

        json_object *meta = image_meta(r);

        if (json) {
                json_object *o = json_object_new_object(), *threads = json_object_new_array(),
                            *maps = json_object_new_array(), *holes = json_object_new_array();

                json_object_object_add(o, "version", json_object_new_int((int)image_version(r)));
                json_object_object_add(o, "file_size", json_object_new_uint64(image_file_size(r)));
                json_object_object_add(o, "meta", json_object_get(meta));
                for (size_t i = 0; i < image_n_threads(r); i++) {
                        ImageThread t;
                        if (image_read_thread(r, i, &t) < 0)
                                continue;
                        json_object *to = json_object_new_object();
                        json_object_object_add(to, "tid", json_object_new_int((int)t.tid));
                        json_object_object_add(to, "comm", json_object_new_string(t.comm));
                        json_object_object_add(to, "main", json_object_new_boolean(t.flags & IMAGE_THREAD_MAIN));
                        json_object_array_add(threads, to);
                        image_thread_done(&t);
                }
                for (size_t i = 0; i < image_n_vmas(r); i++) {
                        const ImageVma *v = image_vma(r, i);
                        json_object *m = json_object_new_object(), *fl = json_object_new_array();
                        char prot[4];

                        prot_string(v->prot, prot);
                        if (v->flags & IMAGE_VMA_SHARED)
                                json_object_array_add(fl, json_object_new_string("shared"));
                        if (v->flags & IMAGE_VMA_SHMEM)
                                json_object_array_add(fl, json_object_new_string("shmem"));
                        if (v->flags & IMAGE_VMA_ANON)
                                json_object_array_add(fl, json_object_new_string("anon"));
                        if (v->flags & IMAGE_VMA_SPECIAL)
                                json_object_array_add(fl, json_object_new_string("special"));
                        if (v->flags & IMAGE_VMA_NOT_PIT)
                                json_object_array_add(fl, json_object_new_string("not-point-in-time"));
                        json_object_object_add(m, "start", json_object_new_uint64(v->start));
                        json_object_object_add(m, "end", json_object_new_uint64(v->end));
                        json_object_object_add(m, "prot", json_object_new_string(prot));
                        json_object_object_add(m, "content",
                                               json_object_new_string(image_vma_content_to_string(v->content)));
                        json_object_object_add(m, "flags", fl);
                        json_object_object_add(m, "name", v->name ? json_object_new_string(v->name) : NULL);
                        json_object_object_add(m, "pages_stored", json_object_new_uint64(vma_pages_stored(r, v)));
                        json_object_array_add(maps, m);
                }
                for (size_t i = 0; i < image_n_holes(r); i++) {
                        const ImageHole *h = image_hole(r, i);
                        json_object *ho = json_object_new_object();
                        json_object_object_add(ho, "start", json_object_new_uint64(h->start));
                        json_object_object_add(ho, "end", json_object_new_uint64(h->end));
                        json_object_object_add(
                                ho, "reason",
                                json_object_new_string(image_hole_reason_to_string((ImageHoleReason)h->reason)));
                        json_object_array_add(holes, ho);
                }
                json_object_object_add(o, "threads", threads);
                json_object_object_add(o, "mappings", maps);
                json_object_object_add(o, "holes", holes);
                json_object_object_add(o, "pages_stored", json_object_new_uint64(image_pages_stored(r)));
                json_object_object_add(o, "chunks", json_object_new_uint64(image_n_page_chunks(r)));
                if (core_plan(r, &plan) >= 0) {
                        json_object *e = json_object_new_object();
                        json_object_object_add(e, "segments", json_object_new_uint64(plan.n_segments));
                        json_object_object_add(e, "bytes", json_object_new_uint64(plan.bytes));
                        json_object_object_add(e, "threads", json_object_new_uint64(plan.n_threads));
                        json_object_object_add(o, "export_core", e);
                }
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
                image_close(r);
                return EXIT_OK;
        }

        json_object *target = NULL, *v = NULL, *stats = NULL;
        char b[32];

        printf("Image:      %s (version %u, %s)\n", argv[optind], image_version(r),
               format_bytes(b, sizeof(b), image_file_size(r)));
        if (json_object_object_get_ex(meta, "target", &target)) {
                json_object *pid = NULL, *exe = NULL, *cmd = NULL;
                json_object_object_get_ex(target, "pid", &pid);
                json_object_object_get_ex(target, "exe", &exe);
                json_object_object_get_ex(target, "cmdline", &cmd);
                json_object *comm = NULL;
                json_object_object_get_ex(target, "comm", &comm);
                if (pid)
                        printf("Target:     PID %d", json_object_get_int(pid));
                else
                        printf("Target:     (PID not recorded)");
                printf(" (%s), %s\n", comm ? json_object_get_string(comm) : "?",
                       exe ? json_object_get_string(exe) : "(unknown executable)");
                if (cmd && json_object_is_type(cmd, json_type_array)) {
                        printf("Command:   ");
                        for (size_t i = 0; i < json_object_array_length(cmd); i++)
                        {
                                const char *a = json_object_get_string(json_object_array_get_idx(cmd, i));
                                /* Quote what a shell would split or expand. */
                                if (!*a || strpbrk(a, " \t\n'\"\\$`*?[]{}()<>|&;#~"))
                                        printf(" '%s'", a);
                                else
                                        printf(" %s", a);
                        }
                        printf("\n");
                }
        }
        if (json_object_object_get_ex(meta, "time", &v))
                printf("Taken:      %s\n", json_object_get_string(v));
        if (json_object_object_get_ex(meta, "freeze_us", &v))
                printf("Freeze:     %.3f ms\n", json_object_get_int64(v) / 1000.0);
        if (json_object_object_get_ex(meta, "elapsed_ms", &v))
                printf("Elapsed:    %" PRId64 " ms\n", json_object_get_int64(v));
        if (json_object_object_get_ex(meta, "stats", &stats)) {
                json_object *s;
                printf("Pages:     ");
                static const char *const keys[] = { "pages_saved", "pages_zero", "pages_discarded", "pages_unsaved",
                                                    "pages_faulted" };
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        if (json_object_object_get_ex(stats, keys[i], &s))
                                printf(" %s=%" PRId64, keys[i] + 6, json_object_get_int64(s));
                printf("\n");
                if (json_object_object_get_ex(stats, "faults", &s))
                        printf("Faults:     %" PRId64 " served during the copy\n", json_object_get_int64(s));
        }

        printf("\nThreads (%zu):\n", image_n_threads(r));
        for (size_t i = 0; i < image_n_threads(r); i++) {
                ImageThread t;
                if (image_read_thread(r, i, &t) < 0) {
                        printf("  (thread %zu unreadable)\n", i);
                        continue;
                }
                printf("  %7u  %-16s%s\n", t.tid, t.comm, t.flags & IMAGE_THREAD_MAIN ? " (main)" : "");
                image_thread_done(&t);
        }

        printf("\nMappings (%zu):\n", image_n_vmas(r));
        printf("  %-37s %-4s %-5s %10s %8s  %s\n", "RANGE", "PROT", "DATA", "SIZE", "PAGES", "NAME");
        for (size_t i = 0; i < image_n_vmas(r); i++) {
                const ImageVma *m = image_vma(r, i);
                char prot[4], sz[32];

                prot_string(m->prot, prot);
                printf("  0x%016" PRIx64 "-0x%016" PRIx64 " %-4s %-5s %10s %8" PRIu64 "  %s\n", m->start, m->end,
                       prot, image_vma_content_to_string(m->content), format_bytes(sz, sizeof(sz), m->end - m->start),
                       vma_pages_stored(r, m), m->name ?: "");
        }
        if (image_n_holes(r) > 0) {
                printf("\nHoles (%zu):\n", image_n_holes(r));
                for (size_t i = 0; i < image_n_holes(r); i++) {
                        const ImageHole *h = image_hole(r, i);
                        printf("  0x%016" PRIx64 "-0x%016" PRIx64 " %s\n", h->start, h->end,
                               image_hole_reason_to_string((ImageHoleReason)h->reason));
                }
        }
        printf("\nStored:     %" PRIu64 " pages in %zu chunks\n", image_pages_stored(r), image_n_page_chunks(r));
        if (core_plan(r, &plan) >= 0)
                printf("Export:     core with %zu PT_LOAD segments (%s of memory), %zu threads\n", plan.n_segments,
                       format_bytes(b, sizeof(b), plan.bytes), plan.n_threads);
        image_close(r);
        return EXIT_OK;
}

static void verify_progress(void *userdata, uint64_t done, uint64_t total)
{
        progress_update(userdata, done, total);
}

int verb_verify(int argc, char *argv[])
{
        ImageReader *r = NULL;
        ProgressBar *bar;
        char err[256] = "", b[32];
        bool json = false;
        int k;

        k = parse_verb_args(argc, argv,
                            "Usage: livesnap verify FILE [--json]\n\n"
                            "Check an image's structure and every checksum. Exit 0 if intact, 3 if not.\n",
                            1, &json);
        if (k != EXIT_OK)
                return k < 0 ? EXIT_OK : k;

        k = image_open(argv[optind], &r, err, sizeof(err));
        if (k >= 0) {
                bar = progress_new("Verifying", !json);
                k = image_verify(r, verify_progress, bar, err, sizeof(err));
                progress_free(bar);
        }

        if (json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "ok", json_object_new_boolean(k >= 0));
                json_object_object_add(o, "error", k >= 0 ? NULL : json_object_new_string(err[0] ? err : strerror(-k)));
                if (r) {
                        json_object_object_add(o, "pages", json_object_new_uint64(image_pages_stored(r)));
                        json_object_object_add(o, "chunks", json_object_new_uint64(image_n_page_chunks(r)));
                }
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        } else if (k >= 0)
                printf("%s: OK (%" PRIu64 " pages in %zu chunks, %s)\n", argv[optind], image_pages_stored(r),
                       image_n_page_chunks(r), format_bytes(b, sizeof(b), image_file_size(r)));
        else
                log_error("%s: %s", argv[optind], err[0] ? err : strerror(-k));

        image_close(r);
        if (k >= 0)
                return EXIT_OK;
        return k == -EBADMSG || k == -EPROTONOSUPPORT ? EXIT_BAD_IMAGE : EXIT_FAILED;
}

int verb_cat(int argc, char *argv[])
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const size_t piece = 1U << 20;
        _cleanup_free_ uint8_t *buf = NULL;
        ImageReader *r = NULL;
        uint64_t addr, len;
        int c, k;

        optind = 0;
        while ((c = verb_getopt(argc, argv, "h", options)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: livesnap cat FILE ADDR LEN\n\n"
                               "Write the LEN bytes of memory at ADDR (decimal or 0x-hex), as they were at the\n"
                               "snapshot instant, to stdout. Exit 4, writing nothing, if any byte is not in the\n"
                               "image.\n");
                        return EXIT_OK;
                default:
                        return EXIT_USAGE;
                }
        if (optind + 3 != argc) {
                log_error("cat: expected FILE ADDR LEN (see 'livesnap cat --help')");
                return EXIT_USAGE;
        }
        if (parse_u64(argv[optind + 1], &addr) < 0) {
                log_error("cat: invalid address '%s'", argv[optind + 1]);
                return EXIT_USAGE;
        }
        if (parse_u64(argv[optind + 2], &len) < 0) {
                log_error("cat: invalid length '%s'", argv[optind + 2]);
                return EXIT_USAGE;
        }
        if (len > 0 && addr > UINT64_MAX - (len - 1)) {
                log_error("cat: range 0x%" PRIx64 "+%" PRIu64 " wraps around", addr, len);
                return EXIT_USAGE;
        }

        k = open_image(argv[optind], &r);
        if (k != EXIT_OK)
                return k;
        buf = malloc(piece);
        if (!buf) {
                image_close(r);
                return EXIT_FAILED;
        }

        /* Two passes: nothing is written unless every byte of the range is in the image. */
        for (int pass = 0; pass < 2; pass++)
                for (uint64_t done = 0; done < len;) {
                        size_t n = (size_t)MIN(len - done, (uint64_t)piece);
                        ImageMemError err = IMAGE_MEM_OK;
                        uint64_t bad = 0;

                        k = image_read_memory(r, addr + done, n, buf, &err, &bad);
                        if (k == -ENOENT) {
                                const ImageVma *v = NULL;
                                for (size_t i = 0; i < image_n_vmas(r); i++)
                                        if (image_vma(r, i)->start <= bad && bad < image_vma(r, i)->end)
                                                v = image_vma(r, i);
                                if (err == IMAGE_MEM_UNSAVED && v && v->content == IMAGE_VMA_CONTENT_FILE && v->name)
                                        log_error("0x%" PRIx64 ": not in the image: not saved (file-backed page; "
                                                  "the file %s holds it at offset 0x%" PRIx64 ")",
                                                  bad, v->name, v->pgoff + (ALIGN_DOWN(bad, 4096ULL) - v->start));
                                else
                                        log_error("0x%" PRIx64 ": not in the image: %s", bad,
                                                  image_mem_error_to_string(err));
                                image_close(r);
                                return EXIT_NOT_IN_IMAGE;
                        }
                        if (k < 0) {
                                log_error("%s: reading 0x%" PRIx64 " failed: %s", argv[optind], addr + done,
                                          k == -EBADMSG ? "corrupt page data (checksum mismatch)" : strerror(-k));
                                image_close(r);
                                return k == -EBADMSG ? EXIT_BAD_IMAGE : EXIT_FAILED;
                        }
                        if (pass == 1) {
                                k = loop_write(STDOUT_FILENO, buf, n);
                                if (k == -EPIPE) {
                                        /* The reader stopped reading (| head): not our failure to report. */
                                        image_close(r);
                                        return EXIT_OK;
                                }
                                if (k < 0) {
                                        log_error("writing to stdout failed: %s", strerror(-k));
                                        image_close(r);
                                        return EXIT_FAILED;
                                }
                        }
                        done += n;
                }

        image_close(r);
        return EXIT_OK;
}

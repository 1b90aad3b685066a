/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The livesnap image: one file per checkpoint. See man/livesnap-image.5 for the byte layout.
 *
 * Writing streams: sections are appended in any order (page chunks arrive in fault order, not address
 * order), the index and a fixed-size trailer go last. The file is created with O_TMPFILE where the file
 * system allows (a named temporary otherwise), fsync'ed, and only then given its name, so a crash or a
 * kill never leaves a half-written image under a real name.
 *
 * Reading verifies the header and trailer at open, the index checksum, and each section's checksum
 * when the section is read. Every byte of a valid file is covered by some checksum.
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#define IMAGE_PAGE_SIZE 4096U
/* Largest page chunk the writer accepts in one call and the reader accepts in one section. */
#define IMAGE_CHUNK_MAX_PAGES 512U

typedef enum ImageSectionType {
        IMAGE_SECTION_META = 1,    /* JSON object: target, time, statistics (see livesnap-image(5)) */
        IMAGE_SECTION_MAPS = 2,    /* JSON array of mappings at the snapshot instant */
        IMAGE_SECTION_THREAD = 3,  /* one per thread: ImageThread serialized */
        IMAGE_SECTION_AUXV = 4,    /* raw /proc/PID/auxv */
        IMAGE_SECTION_PAGES = 5,   /* page data: vaddr + npages, raw or zstd */
        IMAGE_SECTION_HOLES = 6,   /* array of ImageHole (discarded or unsaved ranges) */
        IMAGE_SECTION_INDEX = 7,   /* written by image_writer_finish() only */
        _IMAGE_SECTION_TYPE_MAX,
        _IMAGE_SECTION_TYPE_INVALID = -EINVAL,
} ImageSectionType;

/* What a mapping's pages that are not stored in the image mean. */
typedef enum ImageVmaContent {
        IMAGE_VMA_CONTENT_FULL,  /* anonymous or shmem: a page not stored was zero (or never populated) */
        IMAGE_VMA_CONTENT_FILE,  /* file-backed: stored pages are private copies; the rest is the file's
                                  * content at pgoff, which the image does not hold */
        IMAGE_VMA_CONTENT_NONE,  /* nothing saved ([vvar], [vsyscall], VM_IO, unsupported kinds) */
        _IMAGE_VMA_CONTENT_MAX,
        _IMAGE_VMA_CONTENT_INVALID = -EINVAL,
} ImageVmaContent;

#define IMAGE_VMA_SHARED (1U << 0)  /* MAP_SHARED */
#define IMAGE_VMA_SHMEM (1U << 1)   /* backed by shmem/memfd/tmpfs */
#define IMAGE_VMA_ANON (1U << 2)    /* private anonymous (incl. [heap], [stack]) */
#define IMAGE_VMA_SPECIAL (1U << 3) /* [vdso], [vvar], [vsyscall], ... */
#define IMAGE_VMA_HUGE (1U << 4)    /* hugetlb */
#define IMAGE_VMA_NOT_PIT (1U << 5) /* content may not be point-in-time (e.g. shared with other processes) */

typedef struct ImageVma {
        uint64_t start, end; /* [start, end) */
        uint64_t pgoff;      /* file offset in bytes */
        uint32_t prot;       /* PROT_READ | PROT_WRITE | PROT_EXEC */
        uint32_t flags;      /* IMAGE_VMA_* */
        ImageVmaContent content;
        uint32_t dev_major, dev_minor;
        uint64_t inode;
        char *name; /* as /proc/PID/maps shows it ("/usr/lib/x.so", "[heap]", "/memfd:x (deleted)"), or NULL */
} ImageVma;

typedef enum ImageHoleReason {
        IMAGE_HOLE_DISCARDED = 1, /* unmapped/removed by the target after the snapshot instant before it
                                   * could be saved: the content at the instant is unknown */
        IMAGE_HOLE_UNSAVED = 2,   /* the engine could not save it (read error, pinned, unsupported) */
        _IMAGE_HOLE_REASON_MAX,
        _IMAGE_HOLE_REASON_INVALID = -EINVAL,
} ImageHoleReason;

typedef struct ImageHole {
        uint64_t start, end;
        uint32_t reason; /* ImageHoleReason */
        uint32_t reserved;
} ImageHole;

/* Register sets of one thread, kept in the layout PTRACE_GETREGSET returns (x86_64). */
#define IMAGE_REGSET_PRSTATUS 1          /* struct user_regs_struct, raw (not struct elf_prstatus) */
#define IMAGE_REGSET_FPREGSET 2          /* struct user_fpregs_struct */
#define IMAGE_REGSET_SIGINFO 0x53494749U /* siginfo_t of the stop, 128 bytes */
#define IMAGE_REGSET_XSTATE 0x202        /* NT_X86_XSTATE, variable size */

typedef struct ImageRegset {
        uint32_t type;
        uint32_t size;
        void *data;
} ImageRegset;

#define IMAGE_THREAD_MAIN (1U << 0) /* the thread group leader */

typedef struct ImageThread {
        uint32_t tid;
        uint32_t flags; /* IMAGE_THREAD_* */
        char comm[16];
        uint64_t sigpending, sigblocked; /* from /proc/PID/task/TID/status SigPnd/SigBlk */
        size_t n_regsets;
        ImageRegset *regsets;
} ImageThread;

void image_thread_done(ImageThread *t); /* frees regsets' data and the array; not t itself */

/* ---- Writer ---- */

typedef struct ImageWriter ImageWriter;

typedef struct ImageWriterOptions {
        int compress_level; /* 0: no compression; 1..19: zstd level per chunk */
        bool no_sync;       /* skip fsync (tests only) */
        bool no_direct;     /* write through the page cache even where O_DIRECT is taken */
        size_t index_memory; /* bytes of index entries of each kind held in memory before they are sorted
                              * and spilled to a temporary file beside the image; 0: 1 MiB (tests: less) */
} ImageWriterOptions;

typedef struct ImageWriterStats {
        uint64_t pages_stored;   /* pages written as data */
        uint64_t pages_zero;     /* pages passed in that were all zero and so not stored */
        uint64_t bytes_written;  /* file size so far */
} ImageWriterStats;

/* Creates the image that will appear at path once finished. Nothing is visible at path before. */
int image_writer_new(const char *path, const ImageWriterOptions *opts, ImageWriter **ret);

/* Appends npages (1..IMAGE_CHUNK_MAX_PAGES) pages of memory from vaddr (page aligned). Pages that are
 * all zero are not stored (counted in pages_zero); runs of non-zero pages become PAGES sections. */
int image_writer_add_pages(ImageWriter *w, uint64_t vaddr, const void *data, size_t npages);

/* Appends a metadata section. META and MAPS take a JSON object/array; the writer serializes it. */
int image_writer_add_json(ImageWriter *w, ImageSectionType type, json_object *obj);
int image_writer_add_maps(ImageWriter *w, const ImageVma *vmas, size_t n_vmas);
int image_writer_add_thread(ImageWriter *w, const ImageThread *t);
int image_writer_add_auxv(ImageWriter *w, const void *data, size_t len);
int image_writer_add_holes(ImageWriter *w, const ImageHole *holes, size_t n_holes);

void image_writer_get_stats(ImageWriter *w, ImageWriterStats *ret);

/* Writes index and trailer, fsyncs the file and its directory, and links it at path (replacing an
 * existing file). After an error nothing is left at path (an old file there is kept). */
int image_writer_finish(ImageWriter *w);

/* Frees; an unfinished image is discarded and leaves nothing behind. Returns NULL. */
ImageWriter *image_writer_free(ImageWriter *w);

/* ---- Reader ---- */

typedef struct ImageReader ImageReader;

/* Opens and checks header, trailer and index; loads META, MAPS and HOLES. On failure returns a negative
 * errno (-EBADMSG for a corrupt or truncated file, -EPROTONOSUPPORT for an unknown version) and, if
 * errbuf is non-NULL, a one-line message naming what is wrong, e.g.
 * "truncated: no trailer (file is 1234 bytes)" or "section 12 at offset 0x4000: checksum mismatch". */
int image_open(const char *path, ImageReader **ret, char *errbuf, size_t errlen);
ImageReader *image_close(ImageReader *r); /* returns NULL */

uint32_t image_version(ImageReader *r);
uint64_t image_file_size(ImageReader *r);
json_object *image_meta(ImageReader *r); /* borrowed */

size_t image_n_vmas(ImageReader *r);
const ImageVma *image_vma(ImageReader *r, size_t i); /* sorted by start */

size_t image_n_holes(ImageReader *r);
const ImageHole *image_hole(ImageReader *r, size_t i); /* sorted by start */

size_t image_n_threads(ImageReader *r);
/* Reads thread i (the main thread first); caller calls image_thread_done(). */
int image_read_thread(ImageReader *r, size_t i, ImageThread *ret);

int image_read_auxv(ImageReader *r, void **ret_data, size_t *ret_len);

/* Counts of the index, cheap. */
uint64_t image_pages_stored(ImageReader *r);
size_t image_n_page_chunks(ImageReader *r);

/* Page chunk i in address order: its address and page count (no data read). */
void image_page_chunk(ImageReader *r, size_t i, uint64_t *ret_vaddr, uint32_t *ret_npages);
/* Reads chunk i's data (npages * 4096 bytes into buf), checking its checksum. */
int image_read_page_chunk(ImageReader *r, size_t i, void *buf);

typedef enum ImageMemError {
        IMAGE_MEM_OK,
        IMAGE_MEM_NOT_MAPPED, /* no mapping covered the address at the snapshot instant */
        IMAGE_MEM_DISCARDED,  /* discarded by the target before it could be saved */
        IMAGE_MEM_UNSAVED,    /* the engine could not save it, or a file-backed page the image
                               * does not hold, or a special mapping */
        _IMAGE_MEM_ERROR_MAX,
} ImageMemError;

/* Reads len bytes of the target's memory at addr as it was at the snapshot instant. Returns 0, or
 * -ENOENT with *ret_err and *ret_bad_addr (the first byte that is not available) set, or another
 * negative errno (-EBADMSG: checksum mismatch of a chunk it needed). */
int image_read_memory(ImageReader *r, uint64_t addr, size_t len, void *buf, ImageMemError *ret_err,
                      uint64_t *ret_bad_addr);

/* What the image holds from addr on, without reading data: *ret_kind is IMAGE_MEM_OK where memory reads
 * as data (a stored page, or zero in a "full" mapping), or why it does not; *ret_end is where that kind
 * ends (at most end; page aligned past addr). Returns 0 or -EINVAL. */
int image_probe(ImageReader *r, uint64_t addr, uint64_t end, ImageMemError *ret_kind, uint64_t *ret_end);

/* Reads and checks every section (structure and checksums). progress may be NULL. Returns 0 or a
 * negative errno with a message as image_open(). */
int image_verify(ImageReader *r, void (*progress)(void *userdata, uint64_t done, uint64_t total),
                 void *userdata, char *errbuf, size_t errlen);

const char *image_mem_error_to_string(ImageMemError e);
const char *image_hole_reason_to_string(ImageHoleReason r);
const char *image_vma_content_to_string(ImageVmaContent c);

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The image file. Layout (little-endian; see livesnap-image(5)):
 *
 *   header (64 bytes) | section* | INDEX section | trailer (48 bytes)
 *
 * Each section is a 48-byte header followed by its payload; the header's checksum (XXH3-64) covers
 * the header (with the checksum field zero) and the stored payload. The index lists every other
 * section; the trailer, found at a fixed distance from the end, points at the index and repeats the
 * file size, so a truncated file has no valid trailer. Header and trailer carry an XXH32 of their own.
 *
 * The writer passes every byte through aligned blocks of WRITE_STAGE bytes and writes each out
 * whole, with O_DIRECT where the filesystem takes it: an image is written once and not read back
 * soon, so the page cache is no place for it. There are two blocks: while a thread of the writer's own
 * (the flusher) writes a full one, the caller fills the other, so the disk is not left idle while the
 * caller copies, checksums or waits for data (under a loaded Redis a single block kept it idle for a
 * quarter of the copy phase). Going through the page cache cost the writer a CPU of
 * its own on the test VM (the kernel copies every byte into freshly allocated page-cache pages, then
 * writeback walks them again), time the target was short of on a 2-CPU machine, and a dump of 8 GiB
 * would push 8 GiB of other files' pages out of the cache. The last, partial block is written
 * padded and the file cut back to its size. A filesystem that refuses O_DIRECT (or a write that it
 * refuses later) is written through the page cache instead.
 */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <xxhash.h>
#include <zstd.h>

#include "image.h"
#include "util.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the image format is little-endian and livesnap only supports little-endian hosts"
#endif

/* A fuzzing build accepts bad checksums, so that mutated inputs reach the parsers behind them. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define checksum_ok(a, b) ((void)(a), (void)(b), true)
#else
#define checksum_ok(a, b) ((a) == (b))
#endif

#define IMAGE_VERSION 1
#define HEADER_MAGIC "LSNAPIMG"
#define TRAILER_MAGIC "LSNAPEND"
#define SECTION_MAGIC 0x4345534cU /* "LSEC" */
#define SECTION_ZSTD (1U << 0)
#define META_MAX (64U << 20) /* largest META/MAPS/HOLES/THREAD/AUXV payload a reader accepts */
#define WRITE_STAGE (1U << 20) /* bytes per write (see the top) */
#define WRITE_ALIGN 4096U      /* of the buffer, offsets and lengths of O_DIRECT writes */
#define INDEX_MEMORY (1U << 20)  /* bytes of each part of the writer's index held in memory (see IndexPart) */
#define INDEX_READ_ENTRIES 512U  /* entries read at a time from each run of the index when merging it */

typedef struct DiskHeader {
        char magic[8];
        uint32_t version;
        uint32_t header_size;
        uint64_t flags;
        uint64_t page_size;
        uint8_t reserved[28];
        uint32_t checksum; /* XXH32 of the 60 bytes before it */
} DiskHeader;
static_assert(sizeof(DiskHeader) == 64, "header size");

typedef struct DiskSection {
        uint32_t magic;
        uint32_t type;
        uint32_t flags;
        uint32_t reserved;
        uint64_t arg; /* PAGES: vaddr; THREAD: tid */
        uint64_t raw_len;
        uint64_t stored_len;
        uint64_t checksum; /* XXH3-64 of this header (checksum zeroed) followed by the payload */
} DiskSection;
static_assert(sizeof(DiskSection) == 48, "section header size");

typedef struct DiskIndexEntry {
        uint32_t type;
        uint32_t flags; /* section flags; THREAD: | (thread flags << 16) */
        uint64_t offset;
        uint64_t arg;
        uint64_t raw_len;
        uint64_t stored_len;
} DiskIndexEntry;
static_assert(sizeof(DiskIndexEntry) == 40, "index entry size");

/* An uncompressed PAGES section's index entry, in the writer's memory: its offset, and its address with
 * the page count less one in the low bits (the address is page aligned, the count at most 512). */
typedef struct PagesEntry {
        uint64_t offset;
        uint64_t vaddr_npages;
} PagesEntry;
static_assert(IMAGE_CHUNK_MAX_PAGES <= IMAGE_PAGE_SIZE, "page count fits below a page address");

typedef struct DiskTrailer {
        char magic[8];
        uint64_t index_offset;
        uint64_t index_size; /* section header + payload */
        uint64_t file_size;
        uint64_t n_entries;
        uint32_t reserved;
        uint32_t checksum; /* XXH32 of the 44 bytes before it */
} DiskTrailer;
static_assert(sizeof(DiskTrailer) == 48, "trailer size");

/* Thread payload: fixed part, then n_regsets of { u32 type, u32 size, data padded to 8 }. */
typedef struct DiskThread {
        uint32_t tid;
        uint32_t flags;
        char comm[16];
        uint64_t sigpending, sigblocked;
        uint32_t n_regsets;
        uint32_t reserved;
} DiskThread;
static_assert(sizeof(DiskThread) == 48, "thread size");

static int pread_all(int fd, void *p, size_t len, uint64_t off)
{
        while (len > 0) {
                ssize_t n = pread(fd, p, len, (off_t)off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EBADMSG;
                p = (uint8_t *)p + n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

/* A section's checksum, begun: its header with the checksum field zero. The payload follows, in as many
 * updates as the caller likes. NULL if out of memory. */
static XXH3_state_t *section_checksum_begin(const DiskSection *h)
{
        XXH3_state_t *st = XXH3_createState();
        DiskSection copy = *h;

        if (!st)
                return NULL;
        copy.checksum = 0;
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, &copy, sizeof(copy));
        return st;
}

static uint64_t section_checksum(const DiskSection *h, const void *payload, size_t len)
{
        XXH3_state_t *st = section_checksum_begin(h);
        uint64_t v;

        if (len)
                XXH3_64bits_update(st, payload, len);
        v = XXH3_64bits_digest(st);
        XXH3_freeState(st);
        return v;
}

/* ---- writer ---- */

/* A sorted run of one part's entries in the writer's spill file. */
typedef struct IndexRun {
        uint64_t offset, n;
} IndexRun;

/*
 * One part of the writer's index: entries of one layout, at most cap of them in memory. When that is
 * full they are sorted and appended to the spill file as a run, and writer_index() merges every run
 * and what is left in memory. The writer's memory for its index is thus fixed whatever the image's
 * size (an 8 GiB Redis dumped under load makes ~250k sections: 3.7 MiB held whole), but for 16 bytes a
 * run and, while merging, a read buffer of 8 or 20 KiB a run (a run holds 64k or 26k entries); the
 * spill file takes 16 or 40 bytes a section on the image's file system and is gone with the writer.
 */
typedef struct IndexPart {
        size_t size; /* of an entry */
        int (*cmp)(const void *a, const void *b);
        DiskIndexEntry (*expand)(const void *entry);
        uint8_t *mem; /* mapped at first use, cap * size bytes */
        size_t n, cap;
        IndexRun *runs;
        size_t n_runs;
        uint64_t total; /* entries, spilled or not */
} IndexPart;

enum {
        PART_PAGES, /* uncompressed PAGES sections (all of them unless compressing) as 16-byte PagesEntry */
        PART_OTHER, /* every other section as its DiskIndexEntry */
        _PART_MAX,
};

/* Writes full stage blocks in the background, one at a time (see the top). */
typedef struct Flusher {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool started, stop, failed; /* failed: no thread could be started; blocks are written in line */
        uint8_t *spare;  /* the block the caller fills next, once the flusher is done with it */
        uint8_t *block;  /* the block being written; NULL when idle */
        uint64_t off;    /* where it goes */
        int error;       /* the first failed write's -errno, returned by the caller's next stage call */
} Flusher;

struct ImageWriter {
        int fd, dir_fd, spill_fd;
        char *path, *dir, *tmp_path; /* tmp_path: named temporary (no O_TMPFILE) */
        bool tmpfile, finished;
        ImageWriterOptions opts;
        ImageWriterStats stats;
        uint64_t offset; /* the file's size once the stage is written */
        uint8_t *stage;  /* WRITE_STAGE bytes, aligned: what is not written yet */
        size_t stage_len;
        uint64_t stage_off; /* where stage[0] goes in the file: a multiple of WRITE_STAGE */
        bool direct;        /* fd is O_DIRECT; changed by the flusher only while the caller waits */
        Flusher flusher;
        IndexPart parts[_PART_MAX]; /* the index, merged in index order when written */
        uint64_t spill_size;
        ZSTD_CCtx *cctx;
        void *zbuf;
        size_t zbuf_size;
};

static int pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t)off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p = (const uint8_t *)p + n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

/* Writes len bytes of block (a multiple of WRITE_ALIGN if direct) at off. */
static int block_write(ImageWriter *w, const uint8_t *block, size_t len, uint64_t off)
{
        int r = pwrite_all(w->fd, block, len, off);

        if (r == -EINVAL && w->direct) {
                /* Taken at open, refused now (a filesystem wanting larger blocks, say): go buffered.
                 * A short direct write may have stored a prefix; writing it again is harmless. */
                int fl = fcntl(w->fd, F_GETFL);
                if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) < 0)
                        return -errno;
                w->direct = false;
                r = pwrite_all(w->fd, block, len, off);
        }
        return r;
}

static void *flusher_thread(void *userdata)
{
        ImageWriter *w = userdata;
        Flusher *f = &w->flusher;

        pthread_mutex_lock(&f->lock);
        for (;;) {
                uint8_t *block;
                int r;

                while (!f->block && !f->stop)
                        pthread_cond_wait(&f->cond, &f->lock);
                if (!f->block)
                        break;
                block = f->block;
                pthread_mutex_unlock(&f->lock);

                r = f->error < 0 ? f->error : block_write(w, block, WRITE_STAGE, f->off);

                pthread_mutex_lock(&f->lock);
                if (r < 0 && f->error == 0)
                        f->error = r;
                f->spare = block;
                f->block = NULL;
                pthread_cond_broadcast(&f->cond);
        }
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

/* Waits until the flusher is idle; returns its error, if a write failed. */
static int flusher_wait(ImageWriter *w)
{
        Flusher *f = &w->flusher;
        int r;

        if (!f->started)
                return 0;
        pthread_mutex_lock(&f->lock);
        while (f->block)
                pthread_cond_wait(&f->cond, &f->lock);
        r = f->error;
        pthread_mutex_unlock(&f->lock);
        return r;
}

static int flusher_start(ImageWriter *w)
{
        Flusher *f = &w->flusher;
        sigset_t all, old;
        int r;

        r = posix_memalign((void **)&f->spare, WRITE_ALIGN, WRITE_STAGE);
        if (r != 0) {
                f->spare = NULL;
                return -r;
        }
        pthread_mutex_init(&f->lock, NULL);
        pthread_cond_init(&f->cond, NULL);
        /* Signals are for the caller's threads, never for this one. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&f->thread, NULL, flusher_thread, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0) {
                pthread_cond_destroy(&f->cond);
                pthread_mutex_destroy(&f->lock);
                free(f->spare);
                f->spare = NULL;
                return r;
        }
        pthread_setname_np(f->thread, "livesnap-flush");
        f->started = true;
        return 0;
}

static void flusher_stop(ImageWriter *w)
{
        Flusher *f = &w->flusher;

        if (!f->started)
                return;
        pthread_mutex_lock(&f->lock);
        f->stop = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->thread, NULL);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        free(f->spare);
        f->spare = NULL;
        f->started = false;
}

/* Hands the full stage to the flusher and goes on with the other block; writes it here if no thread
 * could be started. */
static int stage_submit(ImageWriter *w)
{
        Flusher *f = &w->flusher;
        uint8_t *full = w->stage;
        int r;

        if (!f->started && !f->failed && flusher_start(w) < 0)
                f->failed = true;
        if (!f->started) {
                r = block_write(w, w->stage, WRITE_STAGE, w->stage_off);
                if (r < 0)
                        return r;
        } else {
                pthread_mutex_lock(&f->lock);
                while (f->block)
                        pthread_cond_wait(&f->cond, &f->lock);
                r = f->error;
                if (r == 0) {
                        w->stage = f->spare;
                        f->spare = NULL;
                        f->block = full;
                        f->off = w->stage_off;
                        pthread_cond_broadcast(&f->cond);
                }
                pthread_mutex_unlock(&f->lock);
                if (r < 0)
                        return r;
        }
        w->stage_off += WRITE_STAGE;
        w->stage_len = 0;
        return 0;
}

static int stage_append(ImageWriter *w, const void *p, size_t len)
{
        while (len > 0) {
                size_t n = MIN(len, (size_t)WRITE_STAGE - w->stage_len);

                memcpy(w->stage + w->stage_len, p, n);
                w->stage_len += n;
                p = (const uint8_t *)p + n;
                len -= n;
                if (w->stage_len == WRITE_STAGE) {
                        int r = stage_submit(w);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* Writes what is left in the stage, once the flusher is done: with O_DIRECT padded to a block, then the
 * file cut to size. */
static int stage_flush(ImageWriter *w)
{
        size_t len = w->stage_len;
        int r;

        r = flusher_wait(w);
        if (r < 0)
                return r;
        if (len == 0)
                return 0;
        if (w->direct) {
                len = ALIGN_UP(len, (size_t)WRITE_ALIGN);
                memset(w->stage + w->stage_len, 0, len - w->stage_len);
        }
        r = block_write(w, w->stage, len, w->stage_off);
        if (r < 0)
                return r;
        if (len != w->stage_len && ftruncate(w->fd, (off_t)(w->stage_off + w->stage_len)) < 0)
                return -errno;
        w->stage_off += w->stage_len;
        w->stage_len = 0;
        return 0;
}

static int index_cmp(const void *a, const void *b)
{
        const DiskIndexEntry *x = a, *y = b;

        if (x->type != y->type)
                return x->type < y->type ? -1 : 1;
        if (x->type == IMAGE_SECTION_PAGES && x->arg != y->arg)
                return x->arg < y->arg ? -1 : 1;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int pages_entry_cmp(const void *a, const void *b)
{
        const PagesEntry *x = a, *y = b;
        uint64_t vx = x->vaddr_npages & ~(uint64_t)(IMAGE_PAGE_SIZE - 1),
                 vy = y->vaddr_npages & ~(uint64_t)(IMAGE_PAGE_SIZE - 1);

        if (vx != vy)
                return vx < vy ? -1 : 1;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static DiskIndexEntry pages_entry_expand(const void *entry)
{
        const PagesEntry *p = entry;
        uint64_t len = ((p->vaddr_npages & (IMAGE_PAGE_SIZE - 1)) + 1) * IMAGE_PAGE_SIZE;

        return (DiskIndexEntry){
                .type = IMAGE_SECTION_PAGES, .offset = p->offset,
                .arg = p->vaddr_npages & ~(uint64_t)(IMAGE_PAGE_SIZE - 1), .raw_len = len, .stored_len = len,
        };
}

static DiskIndexEntry index_entry_expand(const void *entry)
{
        return *(const DiskIndexEntry *)entry;
}

static bool index_compact(uint32_t type, uint32_t flags)
{
        return type == IMAGE_SECTION_PAGES && flags == 0;
}

/* A temporary file in dir (dir_fd): unnamed with O_TMPFILE where the file system has it; else made
 * with mkostemp() and its name returned in *ret_name (for the caller to rename or unlink). */
static int tmpfile_open(int dir_fd, const char *dir, const char *base, char **ret_name)
{
        _cleanup_free_ char *name = NULL;
        int fd;

        *ret_name = NULL;
        fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
                return fd;
        if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
                return -errno;
        if (asprintf(&name, "%s/.%s.XXXXXX", dir, base) < 0)
                return -ENOMEM;
        fd = mkostemp(name, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *ret_name = TAKE_PTR(name);
        return fd;
}

/*
 * Sorts a part's entries in place (heapsort). glibc's qsort() mallocs a copy of the array to merge-sort
 * it, and the heap keeps that megabyte resident once malloc's threshold has risen past it: as much
 * again as the part itself, which is what spilling it saves.
 */
static void index_sort(IndexPart *part)
{
        uint8_t *v = part->mem, t[sizeof(DiskIndexEntry)];
        size_t z = part->size;

        assert(z <= sizeof(t));
#define AT(i) (v + (i) * z)
#define SWAP(i, j) (memcpy(t, AT(i), z), memcpy(AT(i), AT(j), z), memcpy(AT(j), t, z))
        for (size_t n = part->n, start = n / 2, end = n; end > 1;) {
                size_t root, child;

                if (start > 0)
                        root = --start; /* building the heap */
                else {
                        end--;
                        SWAP(0, end); /* its largest to the end */
                        root = 0;
                }
                while ((child = 2 * root + 1) < end) {
                        if (child + 1 < end && part->cmp(AT(child), AT(child + 1)) < 0)
                                child++;
                        if (part->cmp(AT(root), AT(child)) >= 0)
                                break;
                        SWAP(root, child);
                        root = child;
                }
        }
#undef SWAP
#undef AT
}

/* Appends the part's entries in memory, sorted, to the spill file as a run, and empties the memory. */
static int index_spill(ImageWriter *w, IndexPart *part)
{
        IndexRun *runs;
        int r;

        if (w->spill_fd < 0) {
                _cleanup_free_ char *b = strdup(w->path), *name = NULL;

                if (!b)
                        return -ENOMEM;
                r = tmpfile_open(w->dir_fd, w->dir, basename(b), &name);
                if (r < 0)
                        return r;
                w->spill_fd = r;
                if (name)
                        (void)unlink(name);
        }
        runs = reallocarray(part->runs, part->n_runs + 1, sizeof(IndexRun));
        if (!runs)
                return -ENOMEM;
        part->runs = runs;

        index_sort(part);
        r = pwrite_all(w->spill_fd, part->mem, part->n * part->size, w->spill_size);
        if (r < 0)
                return r;
        part->runs[part->n_runs++] = (IndexRun){ .offset = w->spill_size, .n = part->n };
        w->spill_size += part->n * part->size;
        part->n = 0;
        return 0;
}

/* Room in memory for one more entry of the part. */
static int index_room(ImageWriter *w, IndexPart *part)
{
        if (!part->mem) {
                void *p = mmap(NULL, part->cap * part->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                               -1, 0);
                if (p == MAP_FAILED)
                        return -ENOMEM;
                part->mem = p;
        }
        return part->n < part->cap ? 0 : index_spill(w, part);
}

static int writer_section(ImageWriter *w, uint32_t type, uint32_t flags, uint32_t index_flags, uint64_t arg,
                          const void *payload, size_t len)
{
        DiskSection h = { .magic = SECTION_MAGIC, .type = type, .arg = arg, .raw_len = len, .stored_len = len };
        const void *data = payload;
        IndexPart *part;
        int r;

        if (w->opts.compress_level > 0 && type == IMAGE_SECTION_PAGES && len > 0) {
                size_t bound = ZSTD_compressBound(len), n;

                if (w->zbuf_size < bound) {
                        void *p = realloc(w->zbuf, bound);
                        if (!p)
                                return -ENOMEM;
                        w->zbuf = p;
                        w->zbuf_size = bound;
                }
                if (!w->cctx && !(w->cctx = ZSTD_createCCtx()))
                        return -ENOMEM;
                n = ZSTD_compressCCtx(w->cctx, w->zbuf, w->zbuf_size, payload, len, w->opts.compress_level);
                if (!ZSTD_isError(n) && n < len) {
                        data = w->zbuf;
                        h.stored_len = n;
                        flags |= SECTION_ZSTD;
                }
        }
        h.flags = flags;
        h.checksum = section_checksum(&h, data, h.stored_len);

        /* Room for this section's entry, before anything is written. */
        part = &w->parts[index_compact(type, flags | index_flags) ? PART_PAGES : PART_OTHER];
        r = index_room(w, part);
        if (r < 0)
                return r;

        r = stage_append(w, &h, sizeof(h));
        if (r < 0)
                return r;
        r = stage_append(w, data, h.stored_len);
        if (r < 0)
                return r;

        if (part == &w->parts[PART_PAGES])
                ((PagesEntry *)part->mem)[part->n++] = (PagesEntry){
                        .offset = w->offset, .vaddr_npages = arg | ((len >> PAGE_SHIFT_4K) - 1),
                };
        else
                ((DiskIndexEntry *)part->mem)[part->n++] = (DiskIndexEntry){
                        .type = type, .flags = flags | index_flags, .offset = w->offset, .arg = arg,
                        .raw_len = len, .stored_len = h.stored_len,
                };
        part->total++;
        w->offset += sizeof(h) + h.stored_len;
        w->stats.bytes_written = w->offset;
        return 0;
}

int image_writer_new(const char *path, const ImageWriterOptions *opts, ImageWriter **ret)
{
        _cleanup_free_ char *base = NULL;
        size_t index_memory;
        ImageWriter *w;
        DiskHeader h = {};
        int r;

        if (!path || !*path || !ret)
                return -EINVAL;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fd = w->dir_fd = w->spill_fd = -EBADF;
        if (opts)
                w->opts = *opts;
        index_memory = w->opts.index_memory ?: INDEX_MEMORY;
        w->parts[PART_PAGES] = (IndexPart){ .size = sizeof(PagesEntry), .cmp = pages_entry_cmp,
                                            .expand = pages_entry_expand };
        w->parts[PART_OTHER] = (IndexPart){ .size = sizeof(DiskIndexEntry), .cmp = index_cmp,
                                            .expand = index_entry_expand };
        for (size_t p = 0; p < _PART_MAX; p++)
                w->parts[p].cap = MAX(index_memory / w->parts[p].size, (size_t)1);

        w->path = strdup(path);
        w->dir = strdup(path);
        base = strdup(path);
        if (!w->path || !w->dir || !base) {
                r = -ENOMEM;
                goto fail;
        }
        dirname(w->dir);

        w->dir_fd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (w->dir_fd < 0) {
                r = -errno;
                goto fail;
        }

        r = tmpfile_open(w->dir_fd, w->dir, basename(base), &w->tmp_path);
        if (r < 0)
                goto fail;
        w->fd = r;
        w->tmpfile = !w->tmp_path;

        r = posix_memalign((void **)&w->stage, WRITE_ALIGN, WRITE_STAGE);
        if (r != 0) {
                w->stage = NULL;
                r = -r;
                goto fail;
        }
        if (!w->opts.no_direct) {
                int fl = fcntl(w->fd, F_GETFL);
                w->direct = fl >= 0 && fcntl(w->fd, F_SETFL, fl | O_DIRECT) == 0;
        }

        memcpy(h.magic, HEADER_MAGIC, 8);
        h.version = IMAGE_VERSION;
        h.header_size = sizeof(h);
        h.page_size = IMAGE_PAGE_SIZE;
        h.checksum = XXH32(&h, offsetof(DiskHeader, checksum), 0);
        r = stage_append(w, &h, sizeof(h));
        if (r < 0)
                goto fail;
        w->offset = sizeof(h);
        w->stats.bytes_written = w->offset;

        *ret = w;
        return 0;

fail:
        image_writer_free(w);
        return r;
}

static bool page_is_zero(const uint8_t *p)
{
        const uint64_t *q = (const uint64_t *)p;

        for (size_t i = 0; i < IMAGE_PAGE_SIZE / 8; i += 4)
                if (q[i] | q[i + 1] | q[i + 2] | q[i + 3])
                        return false;
        return true;
}

int image_writer_add_pages(ImageWriter *w, uint64_t vaddr, const void *data, size_t npages)
{
        const uint8_t *p = data;

        if (!w || !data || npages == 0 || npages > IMAGE_CHUNK_MAX_PAGES || !IS_ALIGNED(vaddr, IMAGE_PAGE_SIZE))
                return -EINVAL;

        for (size_t i = 0; i < npages;) {
                size_t n = 0;
                int r;

                if (page_is_zero(p + i * IMAGE_PAGE_SIZE)) {
                        w->stats.pages_zero++;
                        i++;
                        continue;
                }
                while (i + n < npages && !page_is_zero(p + (i + n) * IMAGE_PAGE_SIZE))
                        n++;
                r = writer_section(w, IMAGE_SECTION_PAGES, 0, 0, vaddr + i * IMAGE_PAGE_SIZE,
                                   p + i * IMAGE_PAGE_SIZE, n * IMAGE_PAGE_SIZE);
                if (r < 0)
                        return r;
                w->stats.pages_stored += n;
                i += n;
        }
        return 0;
}

int image_writer_add_json(ImageWriter *w, ImageSectionType type, json_object *obj)
{
        const char *s;

        if (!w || !obj || (type != IMAGE_SECTION_META && type != IMAGE_SECTION_MAPS))
                return -EINVAL;
        s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
        if (!s)
                return -ENOMEM;
        return writer_section(w, type, 0, 0, 0, s, strlen(s));
}

static const char *const vma_content_table[_IMAGE_VMA_CONTENT_MAX] = {
        [IMAGE_VMA_CONTENT_FULL] = "full",
        [IMAGE_VMA_CONTENT_FILE] = "file",
        [IMAGE_VMA_CONTENT_NONE] = "none",
};

static const struct {
        uint32_t flag;
        const char *name;
} vma_flag_names[] = {
        { IMAGE_VMA_SHARED, "shared" }, { IMAGE_VMA_SHMEM, "shmem" },     { IMAGE_VMA_ANON, "anon" },
        { IMAGE_VMA_SPECIAL, "special" }, { IMAGE_VMA_HUGE, "huge" }, { IMAGE_VMA_NOT_PIT, "not-point-in-time" },
};

int image_writer_add_maps(ImageWriter *w, const ImageVma *vmas, size_t n_vmas)
{
        json_object *arr;
        int r;

        if (!w || (!vmas && n_vmas))
                return -EINVAL;

        arr = json_object_new_array();
        for (size_t i = 0; i < n_vmas; i++) {
                const ImageVma *v = &vmas[i];
                json_object *o = json_object_new_object(), *flags = json_object_new_array();
                char prot[4], dev[32];

                prot[0] = v->prot & PROT_READ ? 'r' : '-';
                prot[1] = v->prot & PROT_WRITE ? 'w' : '-';
                prot[2] = v->prot & PROT_EXEC ? 'x' : '-';
                prot[3] = 0;
                snprintf(dev, sizeof(dev), "%02x:%02x", v->dev_major, v->dev_minor);
                for (size_t k = 0; k < ELEMENTSOF(vma_flag_names); k++)
                        if (v->flags & vma_flag_names[k].flag)
                                json_object_array_add(flags, json_object_new_string(vma_flag_names[k].name));

                json_object_object_add(o, "start", json_object_new_uint64(v->start));
                json_object_object_add(o, "end", json_object_new_uint64(v->end));
                json_object_object_add(o, "pgoff", json_object_new_uint64(v->pgoff));
                json_object_object_add(o, "prot", json_object_new_string(prot));
                json_object_object_add(o, "flags", flags);
                json_object_object_add(o, "content",
                                       json_object_new_string((unsigned)v->content < _IMAGE_VMA_CONTENT_MAX ?
                                                                      vma_content_table[v->content] :
                                                                      "none"));
                json_object_object_add(o, "dev", json_object_new_string(dev));
                json_object_object_add(o, "inode", json_object_new_uint64(v->inode));
                json_object_object_add(o, "name", v->name ? json_object_new_string(v->name) : NULL);
                json_object_array_add(arr, o);
        }
        r = image_writer_add_json(w, IMAGE_SECTION_MAPS, arr);
        json_object_put(arr);
        return r;
}

int image_writer_add_thread(ImageWriter *w, const ImageThread *t)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = sizeof(DiskThread), off;
        DiskThread d = {};

        if (!w || !t || (t->n_regsets && !t->regsets))
                return -EINVAL;
        for (size_t i = 0; i < t->n_regsets; i++)
                len += 8 + ALIGN_UP((size_t)t->regsets[i].size, 8);
        buf = calloc(1, len);
        if (!buf)
                return -ENOMEM;

        d.tid = t->tid;
        d.flags = t->flags;
        memcpy(d.comm, t->comm, sizeof(d.comm));
        d.sigpending = t->sigpending;
        d.sigblocked = t->sigblocked;
        d.n_regsets = (uint32_t)t->n_regsets;
        memcpy(buf, &d, sizeof(d));
        off = sizeof(d);
        for (size_t i = 0; i < t->n_regsets; i++) {
                uint32_t hdr[2] = { t->regsets[i].type, t->regsets[i].size };
                memcpy(buf + off, hdr, 8);
                if (t->regsets[i].size)
                        memcpy(buf + off + 8, t->regsets[i].data, t->regsets[i].size);
                off += 8 + ALIGN_UP((size_t)t->regsets[i].size, 8);
        }
        return writer_section(w, IMAGE_SECTION_THREAD, 0, (t->flags & 0xffffU) << 16, t->tid, buf, len);
}

int image_writer_add_auxv(ImageWriter *w, const void *data, size_t len)
{
        if (!w || (!data && len))
                return -EINVAL;
        return writer_section(w, IMAGE_SECTION_AUXV, 0, 0, 0, data, len);
}

int image_writer_add_holes(ImageWriter *w, const ImageHole *holes, size_t n_holes)
{
        if (!w || (!holes && n_holes))
                return -EINVAL;
        return writer_section(w, IMAGE_SECTION_HOLES, 0, 0, 0, holes, n_holes * sizeof(ImageHole));
}

void image_writer_get_stats(ImageWriter *w, ImageWriterStats *ret)
{
        if (w && ret)
                *ret = w->stats;
}

/* Merging the index's runs, a heap of sources ordered by their head entry. A source is a run in the
 * spill file, read INDEX_READ_ENTRIES at a time, or a part's entries left in memory. */
typedef struct MergeSource {
        const IndexPart *part;
        uint8_t *buf; /* NULL: reads from the part's memory */
        const uint8_t *at, *end;
        uint64_t offset, left; /* in the spill file: the next entries not yet read */
        DiskIndexEntry head;
} MergeSource;

typedef struct IndexMerge {
        int fd;
        MergeSource *src;
        size_t n_src;
        size_t *heap, n_heap; /* sources with entries left, as indexes into src */
} IndexMerge;

/* Moves the source's next entry into its head: 1, or 0 if it has none left. */
static int source_next(IndexMerge *m, MergeSource *s)
{
        if (s->at == s->end) {
                size_t n = (size_t)MIN(s->left, (uint64_t)INDEX_READ_ENTRIES);
                int r;

                if (n == 0)
                        return 0;
                r = pread_all(m->fd, s->buf, n * s->part->size, s->offset);
                if (r < 0)
                        return r;
                s->offset += n * s->part->size;
                s->left -= n;
                s->at = s->buf;
                s->end = s->buf + n * s->part->size;
        }
        s->head = s->part->expand(s->at);
        s->at += s->part->size;
        return 1;
}

static bool heap_less(const IndexMerge *m, size_t a, size_t b)
{
        return index_cmp(&m->src[m->heap[a]].head, &m->src[m->heap[b]].head) < 0;
}

static void heap_down(IndexMerge *m, size_t i)
{
        for (;;) {
                size_t l = 2 * i + 1, least = i, t;

                if (l < m->n_heap && heap_less(m, l, least))
                        least = l;
                if (l + 1 < m->n_heap && heap_less(m, l + 1, least))
                        least = l + 1;
                if (least == i)
                        return;
                t = m->heap[i];
                m->heap[i] = m->heap[least];
                m->heap[least] = t;
                i = least;
        }
}

static void index_merge_done(IndexMerge *m)
{
        for (size_t i = 0; i < m->n_src; i++)
                free(m->src[i].buf);
        free(m->src);
        free(m->heap);
        *m = (IndexMerge){};
}

/* Sets up a merge of every run and what each part holds in memory (sorted: see writer_index()). */
static int index_merge_start(ImageWriter *w, IndexMerge *m)
{
        size_t n = 0;
        int r;

        *m = (IndexMerge){ .fd = w->spill_fd };
        for (size_t p = 0; p < _PART_MAX; p++)
                n += w->parts[p].n_runs + 1;
        m->src = calloc(n, sizeof(MergeSource));
        m->heap = calloc(n, sizeof(size_t));
        if (!m->src || !m->heap) {
                index_merge_done(m);
                return -ENOMEM;
        }

        for (size_t p = 0; p < _PART_MAX; p++) {
                IndexPart *part = &w->parts[p];

                for (size_t i = 0; i < part->n_runs; i++)
                        m->src[m->n_src++] = (MergeSource){ .part = part, .offset = part->runs[i].offset,
                                                            .left = part->runs[i].n };
                if (part->n == 0)
                        continue;
                m->src[m->n_src++] = (MergeSource){ .part = part, .at = part->mem,
                                                    .end = part->mem + part->n * part->size };
        }

        for (size_t i = 0; i < m->n_src; i++) {
                MergeSource *s = &m->src[i];

                if (s->left > 0) {
                        s->buf = malloc(INDEX_READ_ENTRIES * s->part->size);
                        if (!s->buf) {
                                index_merge_done(m);
                                return -ENOMEM;
                        }
                }
                r = source_next(m, s);
                if (r < 0) {
                        index_merge_done(m);
                        return r;
                }
                m->heap[m->n_heap++] = i;
        }
        for (size_t i = m->n_heap / 2; i-- > 0;)
                heap_down(m, i);
        return 0;
}

/* Fills out[] with up to n entries of the index, in order. Returns how many, 0 at the end. */
static ssize_t index_merge_next(IndexMerge *m, DiskIndexEntry *out, size_t n)
{
        size_t k = 0;

        while (k < n && m->n_heap > 0) {
                MergeSource *s = &m->src[m->heap[0]];
                int r;

                out[k++] = s->head;
                r = source_next(m, s);
                if (r < 0)
                        return r;
                if (r == 0)
                        m->heap[0] = m->heap[--m->n_heap];
                heap_down(m, 0);
        }
        return (ssize_t)k;
}

/* The INDEX section: every other section's entry, sorted (see index_cmp), merged from the parts' runs
 * twice, once for the checksum and once to write, a batch at a time: never the whole index at 40 bytes
 * an entry in memory. */
static int writer_index(ImageWriter *w)
{
        uint64_t n = w->parts[PART_PAGES].total + w->parts[PART_OTHER].total;
        DiskSection h = {
                .magic = SECTION_MAGIC, .type = IMAGE_SECTION_INDEX, .arg = n,
                .raw_len = n * sizeof(DiskIndexEntry), .stored_len = n * sizeof(DiskIndexEntry),
        };
        DiskIndexEntry batch[256];
        IndexMerge m;
        XXH3_state_t *st;
        ssize_t k;
        int r;

        for (size_t p = 0; p < _PART_MAX; p++)
                index_sort(&w->parts[p]);

        st = section_checksum_begin(&h);
        if (!st)
                return -ENOMEM;
        r = index_merge_start(w, &m);
        if (r < 0) {
                XXH3_freeState(st);
                return r;
        }
        while ((k = index_merge_next(&m, batch, ELEMENTSOF(batch))) > 0)
                XXH3_64bits_update(st, batch, (size_t)k * sizeof(DiskIndexEntry));
        index_merge_done(&m);
        h.checksum = XXH3_64bits_digest(st);
        XXH3_freeState(st);
        if (k < 0)
                return (int)k;

        r = index_merge_start(w, &m);
        if (r < 0)
                return r;
        r = stage_append(w, &h, sizeof(h));
        while (r >= 0 && (k = index_merge_next(&m, batch, ELEMENTSOF(batch))) > 0)
                r = stage_append(w, batch, (size_t)k * sizeof(DiskIndexEntry));
        index_merge_done(&m);
        if (r < 0)
                return r;
        if (k < 0)
                return (int)k;
        w->offset += sizeof(h) + h.stored_len;
        w->stats.bytes_written = w->offset;
        return 0;
}

int image_writer_finish(ImageWriter *w)
{
        DiskTrailer t = {};
        uint64_t index_offset;
        int r;

        if (!w || w->finished)
                return -EINVAL;

        index_offset = w->offset;
        r = writer_index(w);
        if (r < 0)
                return r;

        memcpy(t.magic, TRAILER_MAGIC, 8);
        t.index_offset = index_offset;
        t.index_size = w->offset - index_offset;
        t.file_size = w->offset + sizeof(t);
        t.n_entries = w->parts[PART_PAGES].total + w->parts[PART_OTHER].total;
        t.checksum = XXH32(&t, offsetof(DiskTrailer, checksum), 0);
        r = stage_append(w, &t, sizeof(t));
        if (r >= 0)
                r = stage_flush(w);
        if (r < 0)
                return r;
        w->offset += sizeof(t);
        w->stats.bytes_written = w->offset;

        if (!w->opts.no_sync && fsync(w->fd) < 0)
                return -errno;

        if (w->tmpfile) {
                char proc[64], tmp[PATH_MAX];
                _cleanup_free_ char *b = strdup(w->path);

                if (!b)
                        return -ENOMEM;
                snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->fd);
                for (int i = 0;; i++) {
                        snprintf(tmp, sizeof(tmp), ".%s.%08x", basename(b), (unsigned)random());
                        if (linkat(AT_FDCWD, proc, w->dir_fd, tmp, AT_SYMLINK_FOLLOW) == 0)
                                break;
                        if (errno != EEXIST || i > 100)
                                return -errno;
                }
                _cleanup_free_ char *b2 = strdup(w->path);
                if (!b2 || renameat(w->dir_fd, tmp, w->dir_fd, basename(b2)) < 0) {
                        r = b2 ? -errno : -ENOMEM;
                        (void)unlinkat(w->dir_fd, tmp, 0);
                        return r;
                }
        } else {
                if (rename(w->tmp_path, w->path) < 0)
                        return -errno;
                free(w->tmp_path);
                w->tmp_path = NULL;
        }

        if (!w->opts.no_sync)
                (void)fsync(w->dir_fd);
        w->finished = true;
        return 0;
}

ImageWriter *image_writer_free(ImageWriter *w)
{
        if (!w)
                return NULL;
        flusher_stop(w);
        if (w->tmp_path) {
                (void)unlink(w->tmp_path);
                free(w->tmp_path);
        }
        safe_close(w->fd);
        safe_close(w->dir_fd);
        safe_close(w->spill_fd);
        free(w->path);
        free(w->dir);
        for (size_t p = 0; p < _PART_MAX; p++) {
                if (w->parts[p].mem)
                        (void)munmap(w->parts[p].mem, w->parts[p].cap * w->parts[p].size);
                free(w->parts[p].runs);
        }
        free(w->zbuf);
        free(w->stage);
        ZSTD_freeCCtx(w->cctx);
        free(w);
        return NULL;
}

void image_thread_done(ImageThread *t)
{
        if (!t)
                return;
        for (size_t i = 0; i < t->n_regsets; i++)
                free(t->regsets[i].data);
        free(t->regsets);
        t->regsets = NULL;
        t->n_regsets = 0;
}

/* ---- reader ---- */

typedef struct PageEntry {
        uint64_t vaddr;
        uint32_t npages;
        uint32_t index; /* into entries */
} PageEntry;

struct ImageReader {
        int fd;
        uint64_t size;
        uint32_t version;
        DiskIndexEntry *entries;
        size_t n_entries;
        PageEntry *pages;
        size_t n_pages;
        uint64_t pages_stored;
        size_t *threads; /* indexes into entries, main first */
        size_t n_threads;
        json_object *meta;
        ImageVma *vmas;
        size_t n_vmas;
        ImageHole *holes;
        size_t n_holes;
        ssize_t auxv_entry;
        /* one-chunk cache for image_read_memory */
        ssize_t cached;
        uint8_t *cache;
};

#define rerr(...) (errbuf ? (void)snprintf(errbuf, errlen, __VA_ARGS__) : (void)0)

static const char *section_name(uint32_t type)
{
        static const char *const names[] = {
                [IMAGE_SECTION_META] = "META",   [IMAGE_SECTION_MAPS] = "MAPS",   [IMAGE_SECTION_THREAD] = "THREAD",
                [IMAGE_SECTION_AUXV] = "AUXV",   [IMAGE_SECTION_PAGES] = "PAGES", [IMAGE_SECTION_HOLES] = "HOLES",
                [IMAGE_SECTION_INDEX] = "INDEX",
        };
        return type < ELEMENTSOF(names) && names[type] ? names[type] : "unknown";
}

/* Reads and checks section i; returns its payload (decompressed) in *ret (malloc'ed). */
static int read_section(ImageReader *r, size_t i, void **ret, size_t *ret_len, char *errbuf, size_t errlen)
{
        const DiskIndexEntry *e = &r->entries[i];
        _cleanup_free_ uint8_t *stored = NULL, *raw = NULL;
        DiskSection h;
        int k;

        k = pread_all(r->fd, &h, sizeof(h), e->offset);
        if (k < 0) {
                rerr("section %zu (%s) at offset 0x%" PRIx64 ": %s", i, section_name(e->type), e->offset,
                     k == -EBADMSG ? "truncated" : strerror(-k));
                return k == -EBADMSG ? -EBADMSG : k;
        }
        if (h.magic != SECTION_MAGIC || h.type != e->type || h.arg != e->arg || h.raw_len != e->raw_len ||
            h.stored_len != e->stored_len || (h.flags & ~SECTION_ZSTD) != 0 ||
            h.flags != (e->flags & 0xffffU)) {
                rerr("section %zu (%s) at offset 0x%" PRIx64 ": header does not match the index", i,
                     section_name(e->type), e->offset);
                return -EBADMSG;
        }

        stored = malloc(MAX(h.stored_len, (uint64_t)1));
        if (!stored)
                return -ENOMEM;
        k = pread_all(r->fd, stored, h.stored_len, e->offset + sizeof(h));
        if (k < 0) {
                rerr("section %zu (%s) at offset 0x%" PRIx64 ": %s", i, section_name(e->type), e->offset,
                     k == -EBADMSG ? "truncated" : strerror(-k));
                return k == -EBADMSG ? -EBADMSG : k;
        }
        if (!checksum_ok(section_checksum(&h, stored, h.stored_len), h.checksum)) {
                if (e->type == IMAGE_SECTION_PAGES)
                        rerr("section %zu (PAGES at 0x%" PRIx64 ") at offset 0x%" PRIx64 ": checksum mismatch", i,
                             e->arg, e->offset);
                else
                        rerr("section %zu (%s) at offset 0x%" PRIx64 ": checksum mismatch", i,
                             section_name(e->type), e->offset);
                return -EBADMSG;
        }

        if (h.flags & SECTION_ZSTD) {
                size_t n;

                raw = malloc(MAX(h.raw_len, (uint64_t)1));
                if (!raw)
                        return -ENOMEM;
                n = ZSTD_decompress(raw, h.raw_len, stored, h.stored_len);
                if (ZSTD_isError(n) || n != h.raw_len) {
                        rerr("section %zu (%s) at offset 0x%" PRIx64 ": bad compressed data", i,
                             section_name(e->type), e->offset);
                        return -EBADMSG;
                }
                *ret = TAKE_PTR(raw);
        } else
                *ret = TAKE_PTR(stored);
        *ret_len = h.raw_len;
        return 0;
}

static int page_entry_cmp(const void *a, const void *b)
{
        const PageEntry *x = a, *y = b;
        return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

static int vma_cmp(const void *a, const void *b)
{
        const ImageVma *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

static int hole_cmp(const void *a, const void *b)
{
        const ImageHole *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

static bool json_u64(json_object *o, const char *key, uint64_t *ret)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return false;
        *ret = json_object_get_uint64(v);
        return true;
}

static int parse_maps(ImageReader *r, const char *text, size_t len, char *errbuf, size_t errlen)
{
        json_tokener *tok = json_tokener_new();
        json_object *arr;
        size_t n;

        if (!tok)
                return -ENOMEM;
        arr = json_tokener_parse_ex(tok, text, (int)len);
        json_tokener_free(tok);
        if (!arr || !json_object_is_type(arr, json_type_array)) {
                json_object_put(arr);
                rerr("MAPS section: not a JSON array");
                return -EBADMSG;
        }
        n = json_object_array_length(arr);
        r->vmas = calloc(MAX(n, (size_t)1), sizeof(ImageVma));
        if (!r->vmas) {
                json_object_put(arr);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_array_get_idx(arr, i), *v;
                ImageVma *m = &r->vmas[i];
                const char *s;
                unsigned maj, min;

                if (!json_object_is_type(o, json_type_object) || !json_u64(o, "start", &m->start) ||
                    !json_u64(o, "end", &m->end) || !json_u64(o, "pgoff", &m->pgoff) || m->end <= m->start ||
                    !IS_ALIGNED(m->start, IMAGE_PAGE_SIZE) || !IS_ALIGNED(m->end, IMAGE_PAGE_SIZE)) {
                        r->n_vmas = i;
                        json_object_put(arr);
                        rerr("MAPS section: malformed mapping %zu", i);
                        return -EBADMSG;
                }
                (void)json_u64(o, "inode", &m->inode);
                if (json_object_object_get_ex(o, "prot", &v) && (s = json_object_get_string(v)) && strlen(s) >= 3)
                        m->prot = (s[0] == 'r' ? PROT_READ : 0) | (s[1] == 'w' ? PROT_WRITE : 0) |
                                  (s[2] == 'x' ? PROT_EXEC : 0);
                if (json_object_object_get_ex(o, "dev", &v) && (s = json_object_get_string(v)) &&
                    sscanf(s, "%x:%x", &maj, &min) == 2) {
                        m->dev_major = maj;
                        m->dev_minor = min;
                }
                m->content = IMAGE_VMA_CONTENT_NONE;
                if (json_object_object_get_ex(o, "content", &v) && (s = json_object_get_string(v)))
                        for (int c = 0; c < _IMAGE_VMA_CONTENT_MAX; c++)
                                if (streq(s, vma_content_table[c]))
                                        m->content = (ImageVmaContent)c;
                if (json_object_object_get_ex(o, "flags", &v) && json_object_is_type(v, json_type_array))
                        for (size_t k = 0; k < json_object_array_length(v); k++) {
                                const char *f = json_object_get_string(json_object_array_get_idx(v, k));
                                for (size_t q = 0; f && q < ELEMENTSOF(vma_flag_names); q++)
                                        if (streq(f, vma_flag_names[q].name))
                                                m->flags |= vma_flag_names[q].flag;
                        }
                if (json_object_object_get_ex(o, "name", &v) && json_object_is_type(v, json_type_string)) {
                        m->name = strdup(json_object_get_string(v));
                        if (!m->name) {
                                r->n_vmas = i;
                                json_object_put(arr);
                                return -ENOMEM;
                        }
                }
                r->n_vmas = i + 1;
        }
        json_object_put(arr);
        qsort(r->vmas, r->n_vmas, sizeof(ImageVma), vma_cmp);
        for (size_t i = 1; i < r->n_vmas; i++)
                if (r->vmas[i].start < r->vmas[i - 1].end) {
                        rerr("MAPS section: mappings overlap at 0x%" PRIx64, r->vmas[i].start);
                        return -EBADMSG;
                }
        return 0;
}

static int thread_cmp(const void *a, const void *b, void *userdata)
{
        const ImageReader *r = userdata;
        const DiskIndexEntry *x = &r->entries[*(const size_t *)a], *y = &r->entries[*(const size_t *)b];
        bool mx = (x->flags >> 16) & IMAGE_THREAD_MAIN, my = (y->flags >> 16) & IMAGE_THREAD_MAIN;

        if (mx != my)
                return mx ? -1 : 1;
        return x->arg < y->arg ? -1 : x->arg > y->arg;
}

int image_open(const char *path, ImageReader **ret, char *errbuf, size_t errlen)
{
        ImageReader *r;
        DiskHeader h;
        DiskTrailer t;
        DiskSection ih;
        struct stat st;
        int k;

        if (!path || !ret)
                return -EINVAL;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->auxv_entry = -1;
        r->cached = -1;
        /* O_NONBLOCK: opening a FIFO would wait for a writer; it is refused below as not a regular
         * file, and on a regular file the flag changes nothing. */
        r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (r->fd < 0) {
                k = -errno;
                rerr("%s", strerror(-k));
                goto fail;
        }
        if (fstat(r->fd, &st) < 0) {
                k = -errno;
                rerr("%s", strerror(-k));
                goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
                k = -EBADMSG;
                rerr("not a regular file");
                goto fail;
        }
        r->size = (uint64_t)st.st_size;

        if (r->size < sizeof(h) || pread_all(r->fd, &h, sizeof(h), 0) < 0 || memcmp(h.magic, HEADER_MAGIC, 8) != 0) {
                k = -EBADMSG;
                rerr("not a livesnap image (bad magic)");
                goto fail;
        }
        if (!checksum_ok(XXH32(&h, offsetof(DiskHeader, checksum), 0), h.checksum)) {
                k = -EBADMSG;
                rerr("header checksum mismatch");
                goto fail;
        }
        if (h.version != IMAGE_VERSION) {
                k = -EPROTONOSUPPORT;
                rerr("unsupported image version %u (this livesnap reads %u)", h.version, IMAGE_VERSION);
                goto fail;
        }
        /* A flag this reader does not know may change what the rest means: refuse rather than guess. */
        if (h.flags != 0) {
                k = -EPROTONOSUPPORT;
                rerr("unsupported header flags 0x%" PRIx64, h.flags);
                goto fail;
        }
        if (h.header_size != sizeof(h) || h.page_size != IMAGE_PAGE_SIZE) {
                k = -EBADMSG;
                rerr("header: unexpected header or page size");
                goto fail;
        }
        r->version = h.version;

        if (r->size < sizeof(h) + sizeof(ih) + sizeof(t) || pread_all(r->fd, &t, sizeof(t), r->size - sizeof(t)) < 0 ||
            memcmp(t.magic, TRAILER_MAGIC, 8) != 0 ||
            !checksum_ok(XXH32(&t, offsetof(DiskTrailer, checksum), 0), t.checksum)) {
                k = -EBADMSG;
                rerr("truncated: no trailer (file is %" PRIu64 " bytes)", r->size);
                goto fail;
        }
        if (t.file_size != r->size || t.index_offset < sizeof(h) || t.index_size < sizeof(ih) ||
            t.index_offset > r->size || t.index_size != r->size - sizeof(t) - t.index_offset ||
            t.n_entries > (t.index_offset - sizeof(h)) / sizeof(DiskSection) ||
            t.index_size != sizeof(ih) + t.n_entries * sizeof(DiskIndexEntry)) {
                k = -EBADMSG;
                rerr("trailer: inconsistent sizes (file is %" PRIu64 " bytes, trailer says %" PRIu64 ")", r->size,
                     t.file_size);
                goto fail;
        }

        k = pread_all(r->fd, &ih, sizeof(ih), t.index_offset);
        if (k < 0 || ih.magic != SECTION_MAGIC || ih.type != IMAGE_SECTION_INDEX || ih.flags != 0 ||
            ih.arg != t.n_entries || ih.raw_len != t.n_entries * sizeof(DiskIndexEntry) ||
            ih.stored_len != ih.raw_len) {
                k = -EBADMSG;
                rerr("index at offset 0x%" PRIx64 ": bad section header", t.index_offset);
                goto fail;
        }
        r->n_entries = t.n_entries;
        r->entries = malloc(MAX(r->n_entries, (size_t)1) * sizeof(DiskIndexEntry));
        if (!r->entries) {
                k = -ENOMEM;
                goto fail;
        }
        k = pread_all(r->fd, r->entries, r->n_entries * sizeof(DiskIndexEntry), t.index_offset + sizeof(ih));
        if (k < 0 ||
            !checksum_ok(section_checksum(&ih, r->entries, r->n_entries * sizeof(DiskIndexEntry)), ih.checksum)) {
                k = -EBADMSG;
                rerr("index at offset 0x%" PRIx64 ": checksum mismatch", t.index_offset);
                goto fail;
        }

        /* Structure of every entry. */
        size_t n_pages = 0, n_threads = 0;
        ssize_t meta = -1, maps = -1, holes = -1;
        for (size_t i = 0; i < r->n_entries; i++) {
                DiskIndexEntry *e = &r->entries[i];

                if (e->type == 0 || e->type >= _IMAGE_SECTION_TYPE_MAX || e->type == IMAGE_SECTION_INDEX ||
                    e->offset < sizeof(h) || e->stored_len > t.index_offset ||
                    e->offset > t.index_offset - sizeof(DiskSection) - e->stored_len) {
                        k = -EBADMSG;
                        rerr("index entry %zu: section out of bounds or of unknown type %u", i, e->type);
                        goto fail;
                }
                if (e->type == IMAGE_SECTION_PAGES) {
                        if (e->raw_len == 0 || e->raw_len % IMAGE_PAGE_SIZE ||
                            e->raw_len > IMAGE_CHUNK_MAX_PAGES * (uint64_t)IMAGE_PAGE_SIZE ||
                            !IS_ALIGNED(e->arg, IMAGE_PAGE_SIZE) || e->arg > UINT64_MAX - e->raw_len) {
                                k = -EBADMSG;
                                rerr("index entry %zu: bad page chunk", i);
                                goto fail;
                        }
                        n_pages++;
                } else if (e->raw_len > META_MAX) {
                        k = -EBADMSG;
                        rerr("index entry %zu (%s): section too large", i, section_name(e->type));
                        goto fail;
                }
                if ((e->flags & 0xffffU & ~SECTION_ZSTD) != 0 ||
                    ((e->flags & SECTION_ZSTD) == 0 && e->stored_len != e->raw_len)) {
                        k = -EBADMSG;
                        rerr("index entry %zu: bad flags or lengths", i);
                        goto fail;
                }
                if (e->type == IMAGE_SECTION_THREAD)
                        n_threads++;
                ssize_t *one = e->type == IMAGE_SECTION_META ? &meta :
                               e->type == IMAGE_SECTION_MAPS ? &maps :
                               e->type == IMAGE_SECTION_HOLES ? &holes :
                               e->type == IMAGE_SECTION_AUXV ? &r->auxv_entry :
                                                               NULL;
                if (one) {
                        if (*one >= 0) {
                                k = -EBADMSG;
                                rerr("index: more than one %s section", section_name(e->type));
                                goto fail;
                        }
                        *one = (ssize_t)i;
                }
        }
        if (meta < 0 || maps < 0) {
                k = -EBADMSG;
                rerr("index: no %s section", meta < 0 ? "META" : "MAPS");
                goto fail;
        }

        r->pages = calloc(MAX(n_pages, (size_t)1), sizeof(PageEntry));
        r->threads = calloc(MAX(n_threads, (size_t)1), sizeof(size_t));
        if (!r->pages || !r->threads) {
                k = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < r->n_entries; i++) {
                DiskIndexEntry *e = &r->entries[i];
                if (e->type == IMAGE_SECTION_PAGES) {
                        r->pages[r->n_pages++] = (PageEntry){ e->arg, (uint32_t)(e->raw_len / IMAGE_PAGE_SIZE),
                                                              (uint32_t)i };
                        r->pages_stored += e->raw_len / IMAGE_PAGE_SIZE;
                } else if (e->type == IMAGE_SECTION_THREAD)
                        r->threads[r->n_threads++] = i;
        }
        qsort(r->pages, r->n_pages, sizeof(PageEntry), page_entry_cmp);
        for (size_t i = 1; i < r->n_pages; i++)
                if (r->pages[i].vaddr < r->pages[i - 1].vaddr + (uint64_t)r->pages[i - 1].npages * IMAGE_PAGE_SIZE) {
                        k = -EBADMSG;
                        rerr("index: page chunks overlap at 0x%" PRIx64, r->pages[i].vaddr);
                        goto fail;
                }
        qsort_r(r->threads, r->n_threads, sizeof(size_t), thread_cmp, r);

        /* META, MAPS, HOLES. */
        {
                _cleanup_free_ char *text = NULL;
                size_t len;
                json_tokener *tok;

                k = read_section(r, (size_t)meta, (void **)&text, &len, errbuf, errlen);
                if (k < 0)
                        goto fail;
                tok = json_tokener_new();
                if (!tok) {
                        k = -ENOMEM;
                        goto fail;
                }
                r->meta = json_tokener_parse_ex(tok, text, (int)len);
                json_tokener_free(tok);
                if (!r->meta || !json_object_is_type(r->meta, json_type_object)) {
                        k = -EBADMSG;
                        rerr("META section: not a JSON object");
                        goto fail;
                }
        }
        {
                _cleanup_free_ char *text = NULL;
                size_t len;

                k = read_section(r, (size_t)maps, (void **)&text, &len, errbuf, errlen);
                if (k < 0)
                        goto fail;
                k = parse_maps(r, text, len, errbuf, errlen);
                if (k < 0)
                        goto fail;
        }
        if (holes >= 0) {
                void *data = NULL;
                size_t len;

                k = read_section(r, (size_t)holes, &data, &len, errbuf, errlen);
                if (k < 0)
                        goto fail;
                if (len % sizeof(ImageHole)) {
                        free(data);
                        k = -EBADMSG;
                        rerr("HOLES section: bad length");
                        goto fail;
                }
                r->holes = data;
                r->n_holes = len / sizeof(ImageHole);
                for (size_t i = 0; i < r->n_holes; i++)
                        if (r->holes[i].end <= r->holes[i].start || r->holes[i].reason == 0 ||
                            r->holes[i].reason >= _IMAGE_HOLE_REASON_MAX) {
                                k = -EBADMSG;
                                rerr("HOLES section: malformed hole %zu", i);
                                goto fail;
                        }
                qsort(r->holes, r->n_holes, sizeof(ImageHole), hole_cmp);
        }

        *ret = r;
        return 0;

fail:
        image_close(r);
        return k;
}

ImageReader *image_close(ImageReader *r)
{
        if (!r)
                return NULL;
        safe_close(r->fd);
        free(r->entries);
        free(r->pages);
        free(r->threads);
        json_object_put(r->meta);
        for (size_t i = 0; i < r->n_vmas; i++)
                free(r->vmas[i].name);
        free(r->vmas);
        free(r->holes);
        free(r->cache);
        free(r);
        return NULL;
}

uint32_t image_version(ImageReader *r)
{
        return r->version;
}
uint64_t image_file_size(ImageReader *r)
{
        return r->size;
}
json_object *image_meta(ImageReader *r)
{
        return r->meta;
}
size_t image_n_vmas(ImageReader *r)
{
        return r->n_vmas;
}
const ImageVma *image_vma(ImageReader *r, size_t i)
{
        return i < r->n_vmas ? &r->vmas[i] : NULL;
}
size_t image_n_holes(ImageReader *r)
{
        return r->n_holes;
}
const ImageHole *image_hole(ImageReader *r, size_t i)
{
        return i < r->n_holes ? &r->holes[i] : NULL;
}
size_t image_n_threads(ImageReader *r)
{
        return r->n_threads;
}
uint64_t image_pages_stored(ImageReader *r)
{
        return r->pages_stored;
}
size_t image_n_page_chunks(ImageReader *r)
{
        return r->n_pages;
}

void image_page_chunk(ImageReader *r, size_t i, uint64_t *ret_vaddr, uint32_t *ret_npages)
{
        if (i >= r->n_pages)
                return;
        if (ret_vaddr)
                *ret_vaddr = r->pages[i].vaddr;
        if (ret_npages)
                *ret_npages = r->pages[i].npages;
}

int image_read_page_chunk(ImageReader *r, size_t i, void *buf)
{
        void *data = NULL;
        size_t len;
        int k;

        if (!r || i >= r->n_pages || !buf)
                return -EINVAL;
        k = read_section(r, r->pages[i].index, &data, &len, NULL, 0);
        if (k < 0)
                return k;
        memcpy(buf, data, len);
        free(data);
        return 0;
}

int image_read_thread(ImageReader *r, size_t i, ImageThread *ret)
{
        _cleanup_free_ uint8_t *data = NULL;
        ImageThread t = {};
        DiskThread d;
        size_t len, off;
        int k;

        if (!r || !ret || i >= r->n_threads)
                return -EINVAL;
        k = read_section(r, r->threads[i], (void **)&data, &len, NULL, 0);
        if (k < 0)
                return k;
        if (len < sizeof(d))
                return -EBADMSG;
        memcpy(&d, data, sizeof(d));
        if (d.n_regsets > 64)
                return -EBADMSG;
        t.tid = d.tid;
        t.flags = d.flags;
        memcpy(t.comm, d.comm, sizeof(t.comm));
        t.comm[sizeof(t.comm) - 1] = 0;
        t.sigpending = d.sigpending;
        t.sigblocked = d.sigblocked;
        t.regsets = calloc(MAX(d.n_regsets, 1U), sizeof(ImageRegset));
        if (!t.regsets)
                return -ENOMEM;
        off = sizeof(d);
        for (uint32_t k2 = 0; k2 < d.n_regsets; k2++) {
                uint32_t hdr[2];

                if (len - off < 8) {
                        image_thread_done(&t);
                        return -EBADMSG;
                }
                memcpy(hdr, data + off, 8);
                off += 8;
                if (hdr[1] > len - off || ALIGN_UP((size_t)hdr[1], 8) > len - off) {
                        image_thread_done(&t);
                        return -EBADMSG;
                }
                t.regsets[k2].type = hdr[0];
                t.regsets[k2].size = hdr[1];
                t.regsets[k2].data = malloc(MAX(hdr[1], 1U));
                if (!t.regsets[k2].data) {
                        image_thread_done(&t);
                        return -ENOMEM;
                }
                memcpy(t.regsets[k2].data, data + off, hdr[1]);
                t.n_regsets = k2 + 1;
                off += ALIGN_UP((size_t)hdr[1], 8);
        }
        *ret = t;
        return 0;
}

int image_read_auxv(ImageReader *r, void **ret_data, size_t *ret_len)
{
        if (!r || !ret_data || !ret_len)
                return -EINVAL;
        if (r->auxv_entry < 0)
                return -ENOENT;
        return read_section(r, (size_t)r->auxv_entry, ret_data, ret_len, NULL, 0);
}

static const ImageVma *vma_find(ImageReader *r, uint64_t addr)
{
        size_t lo = 0, hi = r->n_vmas;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (addr < r->vmas[mid].start)
                        hi = mid;
                else if (addr >= r->vmas[mid].end)
                        lo = mid + 1;
                else
                        return &r->vmas[mid];
        }
        return NULL;
}

/* Index of the first hole / page chunk starting after addr (both arrays are sorted by start). */
static size_t holes_after(ImageReader *r, uint64_t addr)
{
        size_t lo = 0, hi = r->n_holes;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (r->holes[mid].start <= addr)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static size_t chunks_after(ImageReader *r, uint64_t addr)
{
        size_t lo = 0, hi = r->n_pages;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (r->pages[mid].vaddr <= addr)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static const ImageHole *hole_find(ImageReader *r, uint64_t addr)
{
        size_t i = holes_after(r, addr);

        if (i > 0 && addr < r->holes[i - 1].end)
                return &r->holes[i - 1];
        return NULL;
}

static ssize_t chunk_find(ImageReader *r, uint64_t addr)
{
        size_t i = chunks_after(r, addr);

        if (i > 0 && addr < r->pages[i - 1].vaddr + (uint64_t)r->pages[i - 1].npages * IMAGE_PAGE_SIZE)
                return (ssize_t)(i - 1);
        return -1;
}

int image_read_memory(ImageReader *r, uint64_t addr, size_t len, void *buf, ImageMemError *ret_err,
                      uint64_t *ret_bad_addr)
{
        uint8_t *out = buf;

        if (!r || (!buf && len))
                return -EINVAL;
        if (len && addr > UINT64_MAX - len + 1)
                return -EINVAL;

        while (len > 0) {
                uint64_t page = ALIGN_DOWN(addr, (uint64_t)IMAGE_PAGE_SIZE);
                size_t off = addr - page, n = MIN(len, IMAGE_PAGE_SIZE - off);
                const ImageVma *v = vma_find(r, addr);
                const ImageHole *h;
                ImageMemError err = IMAGE_MEM_OK;
                ssize_t c;

                if (!v)
                        err = IMAGE_MEM_NOT_MAPPED;
                else if ((h = hole_find(r, addr)))
                        err = h->reason == IMAGE_HOLE_DISCARDED ? IMAGE_MEM_DISCARDED : IMAGE_MEM_UNSAVED;
                else if ((c = chunk_find(r, addr)) >= 0) {
                        if (r->cached != c) {
                                void *data = NULL;
                                size_t dlen;
                                int k = read_section(r, r->pages[c].index, &data, &dlen, NULL, 0);
                                if (k < 0)
                                        return k;
                                free(r->cache);
                                r->cache = data;
                                r->cached = c;
                        }
                        memcpy(out, r->cache + (page - r->pages[c].vaddr) + off, n);
                } else if (v->content == IMAGE_VMA_CONTENT_FULL)
                        memset(out, 0, n);
                else
                        err = IMAGE_MEM_UNSAVED;

                if (err != IMAGE_MEM_OK) {
                        if (ret_err)
                                *ret_err = err;
                        if (ret_bad_addr)
                                *ret_bad_addr = addr;
                        return -ENOENT;
                }
                out += n;
                addr += n;
                len -= n;
        }
        if (ret_err)
                *ret_err = IMAGE_MEM_OK;
        return 0;
}

int image_probe(ImageReader *r, uint64_t addr, uint64_t end, ImageMemError *ret_kind, uint64_t *ret_end)
{
        const ImageVma *v;
        const ImageHole *h;
        uint64_t stop;
        ssize_t c;
        size_t j;

        if (!r || !ret_kind || !ret_end || end <= addr || !IS_ALIGNED(addr, (uint64_t)IMAGE_PAGE_SIZE))
                return -EINVAL;

        v = vma_find(r, addr);
        if (!v) {
                /* up to the next mapping */
                stop = end;
                for (size_t i = 0; i < r->n_vmas; i++)
                        if (r->vmas[i].start > addr) {
                                stop = MIN(stop, r->vmas[i].start);
                                break;
                        }
                *ret_kind = IMAGE_MEM_NOT_MAPPED;
                *ret_end = stop;
                return 0;
        }
        end = MIN(end, v->end);

        h = hole_find(r, addr);
        if (h) {
                *ret_kind = h->reason == IMAGE_HOLE_DISCARDED ? IMAGE_MEM_DISCARDED : IMAGE_MEM_UNSAVED;
                *ret_end = MIN(end, h->end);
                return 0;
        }
        /* the next hole bounds any run that is not a hole */
        j = holes_after(r, addr);
        if (j < r->n_holes)
                end = MIN(end, r->holes[j].start);

        if (v->content == IMAGE_VMA_CONTENT_FULL) {
                *ret_kind = IMAGE_MEM_OK;
                *ret_end = end;
                return 0;
        }
        c = chunk_find(r, addr);
        if (c >= 0) {
                *ret_kind = IMAGE_MEM_OK;
                *ret_end = MIN(end, r->pages[c].vaddr + (uint64_t)r->pages[c].npages * IMAGE_PAGE_SIZE);
                return 0;
        }
        /* not stored: unsaved until the next stored chunk */
        j = chunks_after(r, addr);
        if (j < r->n_pages)
                end = MIN(end, r->pages[j].vaddr);
        *ret_kind = IMAGE_MEM_UNSAVED;
        *ret_end = end;
        return 0;
}

int image_verify(ImageReader *r, void (*progress)(void *userdata, uint64_t done, uint64_t total), void *userdata,
                 char *errbuf, size_t errlen)
{
        uint64_t done = 0, total = 0;

        if (!r)
                return -EINVAL;
        for (size_t i = 0; i < r->n_entries; i++)
                total += r->entries[i].stored_len + sizeof(DiskSection);

        for (size_t i = 0; i < r->n_entries; i++) {
                void *data = NULL;
                size_t len;
                int k = read_section(r, i, &data, &len, errbuf, errlen);
                if (k < 0)
                        return k;
                free(data);
                done += r->entries[i].stored_len + sizeof(DiskSection);
                if (progress)
                        progress(userdata, done, total);
        }
        for (size_t i = 0; i < r->n_threads; i++) {
                ImageThread t;
                int k = image_read_thread(r, i, &t);
                if (k < 0) {
                        rerr("thread section %zu: malformed", i);
                        return k == -ENOMEM ? k : -EBADMSG;
                }
                image_thread_done(&t);
        }
        return 0;
}

const char *image_mem_error_to_string(ImageMemError e)
{
        static const char *const table[_IMAGE_MEM_ERROR_MAX] = {
                [IMAGE_MEM_OK] = "ok",
                [IMAGE_MEM_NOT_MAPPED] = "not mapped at the snapshot instant",
                [IMAGE_MEM_DISCARDED] = "discarded by the target after the snapshot instant",
                [IMAGE_MEM_UNSAVED] = "not saved",
        };
        return (unsigned)e < _IMAGE_MEM_ERROR_MAX ? table[e] : NULL;
}

const char *image_hole_reason_to_string(ImageHoleReason reason)
{
        static const char *const table[_IMAGE_HOLE_REASON_MAX] = {
                [IMAGE_HOLE_DISCARDED] = "discarded",
                [IMAGE_HOLE_UNSAVED] = "unsaved",
        };
        return (unsigned)reason < _IMAGE_HOLE_REASON_MAX ? table[reason] : NULL;
}

const char *image_vma_content_to_string(ImageVmaContent c)
{
        return (unsigned)c < _IMAGE_VMA_CONTENT_MAX ? vma_content_table[c] : NULL;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests for the ELF core export (lib/core.c), on images built here: which parts of which mappings
 * carry file bytes, the notes and their order, the bytes, a pipe as output, corrupt page data, and
 * extended numbering (PN_XNUM). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/procfs.h>
#include <sys/stat.h>
#include <sys/user.h>

#include "core.h"
#include "image.h"
#include "util.h"

static char dir[] = "/tmp/test-core.XXXXXX";

static char *path_in_dir(const char *name)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static void fill_page(uint8_t *p, uint64_t seed)
{
        for (size_t i = 0; i < IMAGE_PAGE_SIZE / 8; i++)
                ((uint64_t *)p)[i] = seed * 1000003ULL + i + 1;
}

/*
 * The sample, and what its core holds (PT_LOADs in address order):
 *   0x10000-0x20000 rw- full, a discarded hole at 0x18000-0x1a000, pages 0x10000 (seed 0), 0x13000 and
 *                   0x14000 (seeds 1, 2) stored: [0x10000, 0x18000) bytes, the hole none, then bytes
 *   0x400000-0x404000 rw- file /usr/lib/x.so at 0x3000, page 0x401000 (seed 3) stored: none, bytes, none
 *   0x500000-0x502000 r-x file /usr/bin/prog, nothing stored: none
 *   0x600000-0x610000 --- full (PROT_NONE): none
 *   0x7000000-0x7002000 r-- [vvar], content none: none
 *   0x7002000-0x7004000 r-x [vdso], full, both pages stored (seeds 4, 5): bytes
 */
static const ImageVma sample_vmas[] = {
        {.start = 0x10000,
         .end = 0x20000,
         .prot = PROT_READ | PROT_WRITE,
         .flags = IMAGE_VMA_ANON,
         .content = IMAGE_VMA_CONTENT_FULL},
        {.start = 0x400000,
         .end = 0x404000,
         .pgoff = 0x3000,
         .prot = PROT_READ | PROT_WRITE,
         .content = IMAGE_VMA_CONTENT_FILE,
         .inode = 42,
         .dev_major = 8,
         .dev_minor = 1,
         .name = (char *)"/usr/lib/x.so"},
        {.start = 0x500000,
         .end = 0x502000,
         .prot = PROT_READ | PROT_EXEC,
         .content = IMAGE_VMA_CONTENT_FILE,
         .inode = 7,
         .dev_major = 8,
         .dev_minor = 1,
         .name = (char *)"/usr/bin/prog"},
        {.start = 0x600000,
         .end = 0x610000,
         .prot = PROT_NONE,
         .flags = IMAGE_VMA_ANON,
         .content = IMAGE_VMA_CONTENT_FULL},
        {.start = 0x7000000,
         .end = 0x7002000,
         .prot = PROT_READ,
         .flags = IMAGE_VMA_SPECIAL,
         .content = IMAGE_VMA_CONTENT_NONE,
         .name = (char *)"[vvar]"},
        {.start = 0x7002000,
         .end = 0x7004000,
         .prot = PROT_READ | PROT_EXEC,
         .flags = IMAGE_VMA_SPECIAL,
         .content = IMAGE_VMA_CONTENT_FULL,
         .name = (char *)"[vdso]"},
};

static const struct {
        uint64_t vaddr, memsz;
        bool bytes;
        uint32_t flags;
} sample_loads[] = {
        {0x10000, 0x8000, true, PF_R | PF_W},   {0x18000, 0x2000, false, PF_R | PF_W},
        {0x1a000, 0x6000, true, PF_R | PF_W},   {0x400000, 0x1000, false, PF_R | PF_W},
        {0x401000, 0x1000, true, PF_R | PF_W},  {0x402000, 0x2000, false, PF_R | PF_W},
        {0x500000, 0x2000, false, PF_R | PF_X}, {0x600000, 0x10000, false, 0},
        {0x7000000, 0x2000, false, PF_R},       {0x7002000, 0x2000, true, PF_R | PF_X},
};

#define SAMPLE_BYTES (0x8000 + 0x6000 + 0x1000 + 0x2000)
#define SAMPLE_RIP   0x401234ULL

static void write_sample(const char *path)
{
        ImageWriterOptions o = {.no_sync = true};
        ImageWriter *w = NULL;
        uint8_t pages[3 * IMAGE_PAGE_SIZE];
        ImageHole hole = {.start = 0x18000, .end = 0x1a000, .reason = IMAGE_HOLE_DISCARDED};
        struct user_regs_struct regs = {.rip = SAMPLE_RIP, .rsp = 0x7ffc0000};
        uint8_t fpregs[sizeof(struct user_fpregs_struct)] = {0x7f, 0x03};
        uint8_t xstate[1024] = {0x11};
        siginfo_t si = {.si_signo = SIGSTOP};
        ImageRegset rs_main[] = {
                {IMAGE_REGSET_PRSTATUS, sizeof(regs), &regs},
                {IMAGE_REGSET_FPREGSET, sizeof(fpregs), fpregs},
                {IMAGE_REGSET_XSTATE, sizeof(xstate), xstate},
                {IMAGE_REGSET_SIGINFO, sizeof(si), &si},
        };
        ImageRegset rs_other[] = {{IMAGE_REGSET_PRSTATUS, sizeof(regs), &regs}};
        ImageThread t_other = {.tid = 1001, .comm = "worker", .n_regsets = 1, .regsets = rs_other};
        ImageThread t_main = {.tid = 1000,
                              .flags = IMAGE_THREAD_MAIN,
                              .comm = "prog",
                              .sigpending = 0x100,
                              .sigblocked = 0x200,
                              .n_regsets = ELEMENTSOF(rs_main),
                              .regsets = rs_main};
        uint64_t auxv[4] = {AT_PAGESZ, 4096, AT_NULL, 0};
        json_object *meta = json_object_new_object(), *target = json_object_new_object(),
                    *cmd = json_object_new_array();

        json_object_array_add(cmd, json_object_new_string("prog"));
        json_object_array_add(cmd, json_object_new_string("--flag"));
        json_object_object_add(target, "pid", json_object_new_int(1000));
        json_object_object_add(target, "comm", json_object_new_string("prog"));
        json_object_object_add(target, "cmdline", cmd);
        json_object_object_add(meta, "target", target);

        assert_int_equal(image_writer_new(path, &o, &w), 0);
        /* out of address order, as faults make them */
        fill_page(pages, 3);
        assert_int_equal(image_writer_add_pages(w, 0x401000, pages, 1), 0);
        fill_page(pages, 1);
        fill_page(pages + IMAGE_PAGE_SIZE, 2);
        assert_int_equal(image_writer_add_pages(w, 0x13000, pages, 2), 0);
        fill_page(pages, 4);
        fill_page(pages + IMAGE_PAGE_SIZE, 5);
        assert_int_equal(image_writer_add_pages(w, 0x7002000, pages, 2), 0);
        fill_page(pages, 0);
        assert_int_equal(image_writer_add_pages(w, 0x10000, pages, 1), 0);
        assert_int_equal(image_writer_add_maps(w, sample_vmas, ELEMENTSOF(sample_vmas)), 0);
        assert_int_equal(image_writer_add_thread(w, &t_other), 0);
        assert_int_equal(image_writer_add_thread(w, &t_main), 0);
        assert_int_equal(image_writer_add_auxv(w, auxv, sizeof(auxv)), 0);
        assert_int_equal(image_writer_add_holes(w, &hole, 1), 0);
        assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
        assert_int_equal(image_writer_finish(w), 0);
        image_writer_free(w);
        json_object_put(meta);
}

/* The whole file (holes read as zeros). */
static uint8_t *read_file(const char *path, size_t *ret_len)
{
        struct stat st;
        uint8_t *buf;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        buf = malloc((size_t)st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
        close(fd);
        *ret_len = (size_t)st.st_size;
        return buf;
}

static int export_core(const char *image, const char *core, char *err, size_t errlen)
{
        ImageReader *r = NULL;
        int fd, k;

        assert_int_equal(image_open(image, &r, err, errlen), 0);
        fd = open(core, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        k = core_write(r, fd, NULL, NULL, err, errlen);
        close(fd);
        image_close(r);
        return k;
}

typedef struct Note {
        const char *name;
        uint32_t type;
        const uint8_t *desc;
        size_t len;
} Note;

static size_t parse_notes(const uint8_t *p, size_t len, Note *notes, size_t max)
{
        size_t n = 0, off = 0;

        while (off < len) {
                Elf64_Nhdr h;

                assert_true(off + sizeof(h) <= len);
                memcpy(&h, p + off, sizeof(h));
                off += sizeof(h);
                assert_true(n < max);
                notes[n].name = (const char *)p + off;
                assert_int_equal(strnlen(notes[n].name, h.n_namesz), h.n_namesz - 1);
                off += ALIGN_UP((size_t)h.n_namesz, 4);
                notes[n].type = h.n_type;
                notes[n].desc = p + off;
                notes[n].len = h.n_descsz;
                off += ALIGN_UP((size_t)h.n_descsz, 4);
                n++;
        }
        assert_int_equal(off, len);
        return n;
}

static void test_plan(void **state)
{
        _cleanup_free_ char *image = path_in_dir("sample.lsnap");
        char err[256] = "";
        ImageReader *r = NULL;
        CorePlan plan;

        write_sample(image);
        assert_int_equal(image_open(image, &r, err, sizeof(err)), 0);
        assert_int_equal(core_plan(r, &plan), 0);
        assert_int_equal(plan.n_segments, ELEMENTSOF(sample_loads));
        assert_int_equal(plan.bytes, SAMPLE_BYTES);
        assert_int_equal(plan.n_threads, 2);
        assert_int_equal(core_plan(NULL, &plan), -EINVAL);
        assert_int_equal(core_plan(r, NULL), -EINVAL);
        image_close(r);
}

static void test_core(void **state)
{
        _cleanup_free_ char *image = path_in_dir("sample.lsnap"), *core = path_in_dir("sample.core");
        _cleanup_free_ uint8_t *data = NULL;
        uint8_t expect[IMAGE_PAGE_SIZE], zero[IMAGE_PAGE_SIZE] = {};
        char err[256] = "";
        const Elf64_Ehdr *eh;
        const Elf64_Phdr *ph;
        Note notes[16];
        size_t len, n;
        struct stat st;

        write_sample(image);
        assert_int_equal(export_core(image, core, err, sizeof(err)), 0);
        data = read_file(core, &len);

        eh = (const Elf64_Ehdr *)data;
        assert_memory_equal(eh->e_ident, ELFMAG, SELFMAG);
        assert_int_equal(eh->e_ident[EI_CLASS], ELFCLASS64);
        assert_int_equal(eh->e_ident[EI_DATA], ELFDATA2LSB);
        assert_int_equal(eh->e_type, ET_CORE);
        assert_int_equal(eh->e_machine, EM_X86_64);
        assert_int_equal(eh->e_phentsize, sizeof(Elf64_Phdr));
        assert_int_equal(eh->e_phnum, 1 + ELEMENTSOF(sample_loads));
        assert_int_equal(eh->e_shnum, 0);
        ph = (const Elf64_Phdr *)(data + eh->e_phoff);

        /* The loads: where the core holds bytes, they are the memory at the instant. */
        assert_int_equal(ph[0].p_type, PT_NOTE);
        for (size_t i = 0; i < ELEMENTSOF(sample_loads); i++) {
                const Elf64_Phdr *p = &ph[i + 1];

                assert_int_equal(p->p_type, PT_LOAD);
                assert_int_equal(p->p_vaddr, sample_loads[i].vaddr);
                assert_int_equal(p->p_memsz, sample_loads[i].memsz);
                assert_int_equal(p->p_filesz, sample_loads[i].bytes ? sample_loads[i].memsz : 0);
                assert_int_equal(p->p_flags, sample_loads[i].flags);
                assert_true(p->p_offset + p->p_filesz <= len);
                if (p->p_filesz)
                        assert_int_equal(p->p_offset % 4096, p->p_vaddr % 4096);
        }
        static const struct {
                uint64_t addr;
                int seed; /* -1: zero */
        } pages[] = {
                {0x10000, 0},  {0x11000, -1}, {0x13000, 1},  {0x14000, 2},   {0x17000, -1},
                {0x1a000, -1}, {0x1f000, -1}, {0x401000, 3}, {0x7002000, 4}, {0x7003000, 5},
        };
        for (size_t i = 0; i < ELEMENTSOF(pages); i++) {
                const Elf64_Phdr *p = NULL;

                for (size_t j = 1; j < eh->e_phnum; j++)
                        if (ph[j].p_vaddr <= pages[i].addr && pages[i].addr < ph[j].p_vaddr + ph[j].p_filesz)
                                p = &ph[j];
                assert_non_null(p);
                if (pages[i].seed >= 0)
                        fill_page(expect, (uint64_t)pages[i].seed);
                assert_memory_equal(data + p->p_offset + (pages[i].addr - p->p_vaddr),
                                    pages[i].seed >= 0 ? expect : zero, IMAGE_PAGE_SIZE);
        }
        /* zero pages are holes, not written */
        assert_int_equal(stat(core, &st), 0);
        assert_true((uint64_t)st.st_blocks * 512 < len);

        /* The notes, in gdb's order, the main thread first. */
        n = parse_notes(data + ph[0].p_offset, ph[0].p_filesz, notes, ELEMENTSOF(notes));
        static const struct {
                const char *name;
                uint32_t type;
        } order[] = {
                {"CORE", NT_PRPSINFO},    {"CORE", NT_PRSTATUS}, {"CORE", NT_FPREGSET},
                {"LINUX", NT_X86_XSTATE}, {"CORE", NT_SIGINFO},  {"CORE", NT_PRSTATUS},
                {"CORE", NT_AUXV},        {"CORE", NT_FILE},
        };
        assert_int_equal(n, ELEMENTSOF(order));
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(notes[i].name, order[i].name);
                assert_int_equal(notes[i].type, order[i].type);
        }

        struct elf_prpsinfo ps;
        assert_int_equal(notes[0].len, sizeof(ps));
        memcpy(&ps, notes[0].desc, sizeof(ps));
        assert_int_equal(ps.pr_pid, 1000);
        assert_string_equal(ps.pr_fname, "prog");
        assert_string_equal(ps.pr_psargs, "prog --flag");

        struct elf_prstatus pr;
        assert_int_equal(notes[1].len, sizeof(pr));
        memcpy(&pr, notes[1].desc, sizeof(pr));
        assert_int_equal(pr.pr_pid, 1000);
        assert_int_equal(pr.pr_sigpend, 0x100);
        assert_int_equal(pr.pr_sighold, 0x200);
        assert_int_equal(((struct user_regs_struct *)&pr.pr_reg)->rip, SAMPLE_RIP);
        assert_true(pr.pr_fpvalid);
        assert_int_equal(notes[2].len, sizeof(struct user_fpregs_struct));
        assert_int_equal(notes[2].desc[0], 0x7f);
        assert_int_equal(notes[3].len, 1024);
        assert_int_equal(notes[3].desc[0], 0x11);
        assert_int_equal(notes[4].len, sizeof(siginfo_t));
        memcpy(&pr, notes[5].desc, sizeof(pr));
        assert_int_equal(pr.pr_pid, 1001);
        assert_false(pr.pr_fpvalid);
        uint64_t auxv[4];
        assert_int_equal(notes[6].len, sizeof(auxv));
        memcpy(auxv, notes[6].desc, sizeof(auxv));
        assert_int_equal(auxv[1], 4096);

        /* NT_FILE: the two file mappings, offsets in pages. (Note descriptors are only 4-aligned.) */
        uint64_t f[8];
        const char *names = (const char *)notes[7].desc + sizeof(f);
        assert_true(notes[7].len > sizeof(f));
        memcpy(f, notes[7].desc, sizeof(f));
        assert_int_equal(f[0], 2);
        assert_int_equal(f[1], 4096);
        assert_int_equal(f[2], 0x400000);
        assert_int_equal(f[3], 0x404000);
        assert_int_equal(f[4], 3);
        assert_int_equal(f[5], 0x500000);
        assert_int_equal(f[6], 0x502000);
        assert_int_equal(f[7], 0);
        assert_string_equal(names, "/usr/lib/x.so");
        assert_string_equal(names + strlen(names) + 1, "/usr/bin/prog");
        assert_int_equal(notes[7].len, 8 * 8 + sizeof("/usr/lib/x.so") + sizeof("/usr/bin/prog"));
}

typedef struct Drain {
        int fd;
        uint8_t *buf;
        size_t len, allocated;
} Drain;

static void *drain_thread(void *userdata)
{
        Drain *d = userdata;

        for (;;) {
                if (d->len == d->allocated) {
                        d->allocated = MAX(d->allocated * 2, (size_t)65536);
                        d->buf = realloc(d->buf, d->allocated);
                        assert_non_null(d->buf);
                }
                ssize_t n = read(d->fd, d->buf + d->len, d->allocated - d->len);
                if (n <= 0)
                        return NULL;
                d->len += (size_t)n;
        }
}

/* Into a pipe (livesnapd writes into the caller's fd), the same bytes as into a file. */
static void test_pipe(void **state)
{
        _cleanup_free_ char *image = path_in_dir("sample.lsnap"), *core = path_in_dir("sample.core");
        _cleanup_free_ uint8_t *data = NULL;
        char err[256] = "";
        ImageReader *r = NULL;
        Drain d = {};
        pthread_t t;
        int p[2];
        size_t len;

        write_sample(image);
        assert_int_equal(export_core(image, core, err, sizeof(err)), 0);
        data = read_file(core, &len);

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        d.fd = p[0];
        assert_int_equal(pthread_create(&t, NULL, drain_thread, &d), 0);
        assert_int_equal(image_open(image, &r, err, sizeof(err)), 0);
        assert_int_equal(core_write(r, p[1], NULL, NULL, err, sizeof(err)), 0);
        close(p[1]);
        assert_int_equal(pthread_join(t, NULL), 0);
        close(p[0]);
        image_close(r);
        assert_int_equal(d.len, len);
        assert_memory_equal(d.buf, data, len);
        free(d.buf);
}

typedef struct Progress {
        uint64_t last, total, calls;
} Progress;

static void on_progress(void *userdata, uint64_t done, uint64_t total)
{
        Progress *p = userdata;

        assert_true(done >= p->last);
        assert_true(done <= total);
        p->last = done;
        p->total = total;
        p->calls++;
}

static void test_progress(void **state)
{
        _cleanup_free_ char *image = path_in_dir("sample.lsnap"), *core = path_in_dir("sample.core");
        char err[256] = "";
        ImageReader *r = NULL;
        Progress p = {};
        int fd;

        write_sample(image);
        assert_int_equal(image_open(image, &r, err, sizeof(err)), 0);
        fd = open(core, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(core_write(r, fd, on_progress, &p, err, sizeof(err)), 0);
        close(fd);
        image_close(r);
        assert_true(p.calls > 0);
        assert_int_equal(p.total, SAMPLE_BYTES);
        assert_int_equal(p.last, SAMPLE_BYTES);
}

/* Page data that fails its checksum is found while writing: -EBADMSG and a message. */
static void test_corrupt_pages(void **state)
{
        _cleanup_free_ char *image = path_in_dir("sample.lsnap"), *core = path_in_dir("bad.core");
        _cleanup_free_ uint8_t *data = NULL;
        uint8_t page[IMAGE_PAGE_SIZE];
        char err[256] = "";
        uint8_t *hit;
        size_t len;
        int fd;

        write_sample(image);
        data = read_file(image, &len);
        /* the page at 0x401000 is stored raw: find it by its content and flip a byte in it */
        fill_page(page, 3);
        hit = memmem(data, len, page, IMAGE_PAGE_SIZE);
        assert_non_null(hit);
        hit[IMAGE_PAGE_SIZE / 2] ^= 0xff;
        fd = open(image, O_WRONLY | O_TRUNC | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        close(fd);

        assert_int_equal(export_core(image, core, err, sizeof(err)), -EBADMSG);
        assert_true(err[0] != 0);
}

/* More than 65534 segments: e_phnum is PN_XNUM and the count is in section header 0's sh_info. */
static void test_xnum(void **state)
{
        _cleanup_free_ char *image = path_in_dir("xnum.lsnap"), *core = path_in_dir("xnum.core");
        _cleanup_free_ ImageVma *vmas = calloc(70000, sizeof(ImageVma));
        _cleanup_free_ uint8_t *data = NULL;
        ImageWriterOptions o = {.no_sync = true};
        ImageWriter *w = NULL;
        json_object *meta = json_object_new_object();
        char err[256] = "";
        const Elf64_Ehdr *eh;
        const Elf64_Shdr *sh;
        const Elf64_Phdr *ph;
        size_t len;

        assert_non_null(vmas);
        for (size_t i = 0; i < 70000; i++)
                vmas[i] = (ImageVma){
                        .start = 0x10000000 + i * 4096,
                        .end = 0x10000000 + (i + 1) * 4096,
                        .prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE,
                        .flags = IMAGE_VMA_ANON,
                        .content = IMAGE_VMA_CONTENT_FULL,
                };
        assert_int_equal(image_writer_new(image, &o, &w), 0);
        assert_int_equal(image_writer_add_maps(w, vmas, 70000), 0);
        assert_int_equal(image_writer_add_json(w, IMAGE_SECTION_META, meta), 0);
        assert_int_equal(image_writer_finish(w), 0);
        image_writer_free(w);
        json_object_put(meta);

        assert_int_equal(export_core(image, core, err, sizeof(err)), 0);
        data = read_file(core, &len);
        eh = (const Elf64_Ehdr *)data;
        assert_int_equal(eh->e_phnum, PN_XNUM);
        assert_int_equal(eh->e_shnum, 1);
        assert_int_equal(eh->e_shentsize, sizeof(Elf64_Shdr));
        assert_true(eh->e_shoff + sizeof(Elf64_Shdr) <= len);
        sh = (const Elf64_Shdr *)(data + eh->e_shoff);
        assert_int_equal(sh->sh_type, SHT_NULL);
        assert_int_equal(sh->sh_info, 70001);
        ph = (const Elf64_Phdr *)(data + eh->e_phoff);
        assert_int_equal(ph[0].p_type, PT_NOTE);
        for (size_t i = 1; i <= 70000; i++) {
                assert_int_equal(ph[i].p_type, PT_LOAD);
                assert_int_equal(ph[i].p_vaddr, vmas[i - 1].start);
                assert_int_equal(ph[i].p_filesz, 4096);
        }
        /* the headers do not overlap the notes */
        assert_true(ph[0].p_offset >= eh->e_shoff + sizeof(Elf64_Shdr) ||
                    ph[0].p_offset + ph[0].p_filesz <= eh->e_shoff);
        assert_true(ph[0].p_offset >= eh->e_phoff + 70001 * sizeof(Elf64_Phdr));
}

static int setup(void **state)
{
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
        static const char *const names[] = {"sample.lsnap", "sample.core", "bad.core", "xnum.lsnap",
                                            "xnum.core"};

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *p = path_in_dir(names[i]);
                (void)unlink(p);
        }
        return rmdir(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plan),          cmocka_unit_test(test_core),
                cmocka_unit_test(test_pipe),          cmocka_unit_test(test_progress),
                cmocka_unit_test(test_corrupt_pages), cmocka_unit_test(test_xnum),
        };

        return cmocka_run_group_tests(tests, setup, teardown) == 0 ? 0 : 1;
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <elf.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/procfs.h>
#include <sys/user.h>

#include "core.h"
#include "util.h"

#define CORE_ALIGN 4096U
#define PIECE (1U << 20)

typedef struct Segment {
        uint64_t vaddr, memsz, filesz, offset;
        uint32_t flags;
} Segment;

typedef struct Buf {
        uint8_t *data;
        size_t len, allocated;
} Buf;

static int buf_append(Buf *b, const void *p, size_t len)
{
        if (len == 0)
                return 0; /* p may be NULL (an empty Buf's data), which memcpy() must not get */
        if (b->len + len > b->allocated) {
                size_t n = MAX(b->allocated * 2, b->len + len + 4096);
                uint8_t *q = realloc(b->data, n);
                if (!q)
                        return -ENOMEM;
                b->data = q;
                b->allocated = n;
        }
        memcpy(b->data + b->len, p, len);
        b->len += len;
        return 0;
}

static int note_add(Buf *b, const char *name, uint32_t type, const void *desc, size_t len)
{
        Elf64_Nhdr h = { .n_namesz = (uint32_t)strlen(name) + 1, .n_descsz = (uint32_t)len, .n_type = type };
        static const uint8_t pad[8];
        int r;

        r = buf_append(b, &h, sizeof(h));
        if (r >= 0)
                r = buf_append(b, name, h.n_namesz);
        if (r >= 0)
                r = buf_append(b, pad, ALIGN_UP((size_t)h.n_namesz, 4) - h.n_namesz);
        if (r >= 0 && len)
                r = buf_append(b, desc, len);
        if (r >= 0)
                r = buf_append(b, pad, ALIGN_UP(len, 4) - len);
        return r;
}

static const ImageRegset *regset_find(const ImageThread *t, uint32_t type)
{
        for (size_t i = 0; i < t->n_regsets; i++)
                if (t->regsets[i].type == type)
                        return &t->regsets[i];
        return NULL;
}

/* Runs of each mapping: data where the image holds memory, p_filesz 0 elsewhere. */
static int plan_segments(ImageReader *r, Segment **ret, size_t *ret_n, uint64_t *ret_bytes)
{
        Segment *segs = NULL;
        size_t n = 0, allocated = 0;
        uint64_t bytes = 0;

        for (size_t i = 0; i < image_n_vmas(r); i++) {
                const ImageVma *v = image_vma(r, i);
                uint32_t flags = (v->prot & PROT_READ ? PF_R : 0) | (v->prot & PROT_WRITE ? PF_W : 0) |
                                 (v->prot & PROT_EXEC ? PF_X : 0);
                bool first = true;

                for (uint64_t a = v->start; a < v->end;) {
                        ImageMemError kind;
                        uint64_t e;
                        bool data;
                        int k;

                        k = image_probe(r, a, v->end, &kind, &e);
                        if (k < 0)
                                return k;
                        if (e <= a)
                                e = a + IMAGE_PAGE_SIZE; /* cannot happen; never loop forever */
                        /* Not readable at the instant: gdb could not have read it either. */
                        data = kind == IMAGE_MEM_OK && v->prot != 0;

                        if (!first && (segs[n - 1].filesz > 0) == data) {
                                segs[n - 1].memsz += e - a;
                                if (data)
                                        segs[n - 1].filesz += e - a;
                        } else {
                                if (n == allocated) {
                                        size_t k2 = MAX(allocated * 2, (size_t)64);
                                        Segment *p = realloc(segs, k2 * sizeof(Segment));
                                        if (!p) {
                                                free(segs);
                                                return -ENOMEM;
                                        }
                                        segs = p;
                                        allocated = k2;
                                }
                                segs[n++] = (Segment){ .vaddr = a, .memsz = e - a, .filesz = data ? e - a : 0,
                                                       .flags = flags };
                        }
                        if (data)
                                bytes += e - a;
                        first = false;
                        a = e;
                }
        }
        *ret = segs;
        *ret_n = n;
        *ret_bytes = bytes;
        return 0;
}

int core_plan(ImageReader *r, CorePlan *ret)
{
        Segment *segs = NULL;
        size_t n = 0;
        uint64_t bytes = 0;
        int k;

        if (!r || !ret)
                return -EINVAL;
        k = plan_segments(r, &segs, &n, &bytes);
        if (k < 0)
                return k;
        free(segs);
        *ret = (CorePlan){ .n_segments = n, .bytes = bytes, .n_threads = image_n_threads(r) };
        return 0;
}

static int build_notes(ImageReader *r, Buf *b, char *err, size_t errlen)
{
        json_object *meta = image_meta(r), *target = NULL, *v;
        struct elf_prpsinfo ps = {};
        void *auxv = NULL;
        size_t auxv_len = 0;
        int k;

        if (json_object_object_get_ex(meta, "target", &target)) {
                if (json_object_object_get_ex(target, "pid", &v))
                        ps.pr_pid = json_object_get_int(v);
                if (json_object_object_get_ex(target, "comm", &v))
                        snprintf(ps.pr_fname, sizeof(ps.pr_fname), "%s", json_object_get_string(v));
                if (json_object_object_get_ex(target, "cmdline", &v) && json_object_is_type(v, json_type_array)) {
                        size_t off = 0;
                        for (size_t i = 0; i < json_object_array_length(v) && off + 1 < sizeof(ps.pr_psargs); i++)
                                off += (size_t)snprintf(ps.pr_psargs + off, sizeof(ps.pr_psargs) - off, "%s%s",
                                                        i ? " " : "",
                                                        json_object_get_string(json_object_array_get_idx(v, i)));
                }
        }
        ps.pr_sname = 'R';
        k = note_add(b, "CORE", NT_PRPSINFO, &ps, sizeof(ps));
        if (k < 0)
                return k;

        /* The main thread first: gdb takes the first NT_PRSTATUS as the current thread. */
        for (size_t i = 0; i < image_n_threads(r); i++) {
                ImageThread t;
                struct elf_prstatus st = {};
                const ImageRegset *rs;

                k = image_read_thread(r, i, &t);
                if (k < 0) {
                        snprintf(err, errlen, "reading thread %zu of the image failed: %s", i, strerror(-k));
                        return k;
                }
                st.pr_pid = (pid_t)t.tid;
                st.pr_sigpend = t.sigpending;
                st.pr_sighold = t.sigblocked;
                rs = regset_find(&t, IMAGE_REGSET_PRSTATUS);
                if (rs)
                        memcpy(&st.pr_reg, rs->data, MIN((size_t)rs->size, sizeof(st.pr_reg)));
                rs = regset_find(&t, IMAGE_REGSET_SIGINFO);
                if (rs && rs->size >= sizeof(siginfo_t)) {
                        const siginfo_t *si = rs->data;
                        /* The stop's signal (SIGSTOP, SIGTRAP) is ours, not the process's: leave pr_cursig 0
                         * or gdb would say the program terminated with it. NT_SIGINFO keeps the details. */
                        st.pr_info.si_code = si->si_code;
                }
                st.pr_fpvalid = regset_find(&t, IMAGE_REGSET_FPREGSET) != NULL;
                k = note_add(b, "CORE", NT_PRSTATUS, &st, sizeof(st));
                if (k >= 0 && (rs = regset_find(&t, IMAGE_REGSET_FPREGSET)))
                        k = note_add(b, "CORE", NT_FPREGSET, rs->data, rs->size);
                if (k >= 0 && (rs = regset_find(&t, IMAGE_REGSET_XSTATE)))
                        k = note_add(b, "LINUX", NT_X86_XSTATE, rs->data, rs->size);
                if (k >= 0 && (rs = regset_find(&t, IMAGE_REGSET_SIGINFO)))
                        k = note_add(b, "CORE", NT_SIGINFO, rs->data, rs->size);
                image_thread_done(&t);
                if (k < 0)
                        return k;
        }

        if (image_read_auxv(r, &auxv, &auxv_len) >= 0) {
                k = note_add(b, "CORE", NT_AUXV, auxv, auxv_len);
                free(auxv);
                if (k < 0)
                        return k;
        }

        /* NT_FILE: count, page size, (start, end, offset in pages) per file mapping, then the names. */
        {
                Buf f = {}, names = {};
                uint64_t count = 0, page = IMAGE_PAGE_SIZE;

                for (size_t i = 0; i < image_n_vmas(r); i++) {
                        const ImageVma *vm = image_vma(r, i);
                        if (!vm->name || vm->name[0] != '/' || vm->inode == 0)
                                continue;
                        count++;
                }
                k = buf_append(&f, &count, 8);
                if (k >= 0)
                        k = buf_append(&f, &page, 8);
                for (size_t i = 0; k >= 0 && i < image_n_vmas(r); i++) {
                        const ImageVma *vm = image_vma(r, i);
                        uint64_t e[3] = { vm->start, vm->end, vm->pgoff / IMAGE_PAGE_SIZE };
                        if (!vm->name || vm->name[0] != '/' || vm->inode == 0)
                                continue;
                        k = buf_append(&f, e, sizeof(e));
                        if (k >= 0)
                                k = buf_append(&names, vm->name, strlen(vm->name) + 1);
                }
                if (k >= 0)
                        k = buf_append(&f, names.data, names.len);
                if (k >= 0)
                        k = note_add(b, "CORE", NT_FILE, f.data, f.len);
                free(f.data);
                free(names.data);
                if (k < 0)
                        return k;
        }
        return 0;
}

/* Writes len zero bytes: a hole in a regular file, zeros into a pipe. */
static int write_zeros(int fd, uint64_t len, bool seekable)
{
        static const uint8_t zeros[65536];

        if (seekable)
                return lseek(fd, (off_t)len, SEEK_CUR) < 0 ? -errno : 0;
        while (len > 0) {
                size_t n = (size_t)MIN(len, (uint64_t)sizeof(zeros));
                int k = loop_write(fd, zeros, n);
                if (k < 0)
                        return k;
                len -= n;
        }
        return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
        for (size_t i = 0; i < len; i += 8)
                if (*(const uint64_t *)(p + i))
                        return false;
        return true;
}

int core_write(ImageReader *r, int fd, void (*progress)(void *userdata, uint64_t done, uint64_t total),
               void *userdata, char *err, size_t errlen)
{
        Segment *segs = NULL;
        size_t n_segs = 0, n_phdrs;
        uint64_t bytes = 0, done = 0, off, notes_off, data_off;
        Buf notes = {};
        Elf64_Ehdr eh = {};
        Elf64_Phdr ph;
        Elf64_Shdr sh = {};
        uint8_t *piece = NULL;
        bool xnum, seekable;
        int k;

        if (!r || fd < 0)
                return -EINVAL;
        seekable = lseek(fd, 0, SEEK_CUR) >= 0;

        k = plan_segments(r, &segs, &n_segs, &bytes);
        if (k < 0) {
                snprintf(err, errlen, "planning the core's segments failed: %s", strerror(-k));
                return k;
        }
        k = build_notes(r, &notes, err, errlen);
        if (k < 0)
                goto out;

        n_phdrs = n_segs + 1;
        xnum = n_phdrs >= PN_XNUM;
        notes_off = sizeof(eh) + n_phdrs * sizeof(Elf64_Phdr) + (xnum ? sizeof(Elf64_Shdr) : 0);
        data_off = ALIGN_UP(notes_off + notes.len, (uint64_t)CORE_ALIGN);
        off = data_off;
        for (size_t i = 0; i < n_segs; i++) {
                segs[i].offset = off;
                off += segs[i].filesz;
        }

        memcpy(eh.e_ident, ELFMAG, SELFMAG);
        eh.e_ident[EI_CLASS] = ELFCLASS64;
        eh.e_ident[EI_DATA] = ELFDATA2LSB;
        eh.e_ident[EI_VERSION] = EV_CURRENT;
        eh.e_ident[EI_OSABI] = ELFOSABI_NONE;
        eh.e_type = ET_CORE;
        eh.e_machine = EM_X86_64;
        eh.e_version = EV_CURRENT;
        eh.e_phoff = sizeof(eh);
        eh.e_ehsize = sizeof(eh);
        eh.e_phentsize = sizeof(Elf64_Phdr);
        eh.e_phnum = xnum ? PN_XNUM : (uint16_t)n_phdrs;
        if (xnum) {
                /* More program headers than e_phnum holds: the count goes in section header 0. */
                eh.e_shoff = sizeof(eh) + n_phdrs * sizeof(Elf64_Phdr);
                eh.e_shentsize = sizeof(Elf64_Shdr);
                eh.e_shnum = 1;
                sh.sh_type = SHT_NULL;
                sh.sh_size = 1;
                sh.sh_info = (uint32_t)n_phdrs;
        }
        k = loop_write(fd, &eh, sizeof(eh));
        if (k < 0)
                goto io;

        ph = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = notes_off, .p_filesz = notes.len, .p_align = 4 };
        k = loop_write(fd, &ph, sizeof(ph));
        for (size_t i = 0; k >= 0 && i < n_segs; i++) {
                ph = (Elf64_Phdr){
                        .p_type = PT_LOAD, .p_flags = segs[i].flags, .p_offset = segs[i].offset,
                        .p_vaddr = segs[i].vaddr, .p_filesz = segs[i].filesz, .p_memsz = segs[i].memsz,
                        .p_align = CORE_ALIGN,
                };
                k = loop_write(fd, &ph, sizeof(ph));
        }
        if (k >= 0 && xnum)
                k = loop_write(fd, &sh, sizeof(sh));
        if (k >= 0)
                k = loop_write(fd, notes.data, notes.len);
        if (k >= 0)
                k = write_zeros(fd, data_off - notes_off - notes.len, false);
        if (k < 0)
                goto io;

        piece = malloc(PIECE);
        if (!piece) {
                k = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_segs; i++)
                for (uint64_t a = segs[i].vaddr; a < segs[i].vaddr + segs[i].filesz;) {
                        size_t len = (size_t)MIN((uint64_t)PIECE, segs[i].vaddr + segs[i].filesz - a);
                        ImageMemError me;
                        uint64_t bad;

                        k = image_read_memory(r, a, len, piece, &me, &bad);
                        if (k < 0) {
                                snprintf(err, errlen, "reading 0x%" PRIx64 " from the image failed: %s", a,
                                         k == -ENOENT ? image_mem_error_to_string(me) : strerror(-k));
                                goto out;
                        }
                        for (size_t o = 0; o < len && k >= 0; o += 65536) {
                                size_t m = MIN(len - o, (size_t)65536);
                                k = all_zero(piece + o, m) ? write_zeros(fd, m, seekable) :
                                                             loop_write(fd, piece + o, m);
                        }
                        if (k < 0)
                                goto io;
                        a += len;
                        done += len;
                        if (progress)
                                progress(userdata, done, bytes);
                }
        /* A trailing hole still counts toward the size. */
        if (seekable && ftruncate(fd, (off_t)off) < 0) {
                k = -errno;
                goto io;
        }
        k = 0;
        goto out;

io:
        snprintf(err, errlen, "writing the core failed: %s", strerror(-k));
out:
        free(piece);
        free(notes.data);
        free(segs);
        return k;
}

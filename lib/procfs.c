#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>
#include "procfs.h"
#include "util.h"

int proc_maps_parse(const char *text, ProcMap **ret, size_t *ret_n) {
        ProcMap *v = NULL; size_t n = 0, a = 0;
        const char *l = text;
        while (l && *l) {
                const char *nl = strchr(l, '\n');
                size_t len = nl ? (size_t)(nl - l) : strlen(l);
                char line[4096]; if (len >= sizeof line) len = sizeof line - 1;
                memcpy(line, l, len); line[len] = 0;
                l = nl ? nl + 1 : NULL;
                if (!*line) continue;
                ProcMap m = {}; char perms[8]; unsigned long long s, e, off, ino; unsigned maj, min; int pos = 0;
                if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &s, &e, perms, &off, &maj, &min, &ino, &pos) < 7) { proc_maps_free(v, n); return -EBADMSG; }
                m.start = s; m.end = e; m.offset = off; m.dev_major = maj; m.dev_minor = min; m.inode = ino;
                m.prot = (perms[0]=='r'?PROT_READ:0)|(perms[1]=='w'?PROT_WRITE:0)|(perms[2]=='x'?PROT_EXEC:0);
                m.shared = perms[3]=='s';
                if (pos > 0 && line[pos]) m.name = strdup(line + pos);
                if (n == a) { a = a ? a*2 : 64; v = realloc(v, a*sizeof *v); }
                v[n++] = m;
        }
        *ret = v; *ret_n = n; return 0;
}
int proc_maps_read(pid_t pid, ProcMap **ret, size_t *ret_n) {
        char p[64]; _cleanup_free_ char *t = NULL; snprintf(p, sizeof p, "/proc/%d/maps", (int)pid);
        int r = read_full_file(p, &t, NULL); if (r < 0) return r;
        return proc_maps_parse(t, ret, ret_n);
}
void proc_maps_free(ProcMap *m, size_t n) { for (size_t i = 0; i < n; i++) free(m[i].name); free(m); }
int proc_status_parse(const char *text, ProcStatus *st) {
        *st = (ProcStatus){ .seccomp = -1 };
        const char *l = text;
        while (l && *l) {
                if (startswith(l, "Name:\t")) { const char *s = l + 6; size_t k = strcspn(s, "\n"); if (k > 15) k = 15; memcpy(st->name, s, k); st->name[k] = 0; }
                else if (startswith(l, "State:\t")) st->state = l[7];
                else if (startswith(l, "Tgid:\t")) st->tgid = atoi(l + 6);
                else if (startswith(l, "TracerPid:\t")) st->tracer = atoi(l + 11);
                else if (startswith(l, "Seccomp:\t")) st->seccomp = atoi(l + 9);
                else if (startswith(l, "SigPnd:\t")) st->sigpnd = strtoull(l + 8, NULL, 16);
                else if (startswith(l, "SigBlk:\t")) st->sigblk = strtoull(l + 8, NULL, 16);
                else if (startswith(l, "Kthread:\t")) st->kthread = atoi(l + 9);
                const char *nl = strchr(l, '\n'); l = nl ? nl + 1 : NULL;
        }
        return 0;
}
int proc_status_read(pid_t pid, pid_t tid, ProcStatus *ret) {
        char p[64]; _cleanup_free_ char *t = NULL;
        if (tid > 0) snprintf(p, sizeof p, "/proc/%d/task/%d/status", (int)pid, (int)tid); else snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
        int r = read_full_file(p, &t, NULL); if (r < 0) return r;
        return proc_status_parse(t, ret);
}
int proc_stat_flags_parse(const char *text, unsigned long *ret) { const char *p = strrchr(text, ')'); if (!p) return -EBADMSG; unsigned long f; char st; int x; if (sscanf(p + 2, "%c %d %d %d %d %d %lu", &st, &x, &x, &x, &x, &x, &f) != 7) return -EBADMSG; *ret = f; return 0; }
int proc_is_kthread(pid_t pid) { char p[64]; _cleanup_free_ char *t = NULL; unsigned long f; snprintf(p, sizeof p, "/proc/%d/stat", (int)pid); int r = read_full_file(p, &t, NULL); if (r < 0) return r; r = proc_stat_flags_parse(t, &f); if (r < 0) return r; return !!(f & 0x00200000); }
static int cmp(const void *a, const void *b) { return *(const pid_t*)a - *(const pid_t*)b; }
int proc_task_list(pid_t pid, pid_t **ret, size_t *ret_n) {
        char p[64]; snprintf(p, sizeof p, "/proc/%d/task", (int)pid);
        DIR *d = opendir(p); if (!d) return -errno; pid_t *v = NULL; size_t n = 0, a = 0; struct dirent *de;
        while ((de = readdir(d))) { if (!isdigit(de->d_name[0])) continue; if (n == a) { a = a ? a*2 : 16; v = realloc(v, a*sizeof *v); } v[n++] = atoi(de->d_name); }
        closedir(d); qsort(v, n, sizeof *v, cmp); *ret = v; *ret_n = n; return 0;
}
int proc_cmdline_read(pid_t pid, char ***ret) { char p[64]; _cleanup_free_ char *t = NULL; size_t sz; snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid); int r = read_full_file(p, &t, &sz); if (r < 0) return r; size_t k = 0; for (size_t i = 0; i < sz; i++) if (!t[i]) k++; char **v = calloc(k + 2, sizeof(char*)); size_t j = 0; for (size_t i = 0; i < sz; i += strlen(t + i) + 1) v[j++] = strdup(t + i); *ret = v; return 0; }
void strv_free(char **v) { if (!v) return; for (char **p = v; *p; p++) free(*p); free(v); }
int proc_exe_read(pid_t pid, char **ret) { char p[64], b[4096]; snprintf(p, sizeof p, "/proc/%d/exe", (int)pid); ssize_t n = readlink(p, b, sizeof b - 1); if (n < 0) return -errno; b[n] = 0; *ret = strdup(b); return 0; }
int proc_syscall_parse(const char *t, long *nr, uint64_t a[6]) { if (startswith(t, "running")) return -EAGAIN; long x; unsigned long long v[6] = {}; int k = sscanf(t, "%ld %llx %llx %llx %llx %llx %llx", &x, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]); if (k < 1) return -EBADMSG; if (x < 0) return -ENODATA; *nr = x; for (int i = 0; i < 6; i++) a[i] = v[i]; return 0; }
int proc_syscall_read(pid_t pid, pid_t tid, long *nr, uint64_t a[6]) { char p[64]; _cleanup_free_ char *t = NULL; snprintf(p, sizeof p, "/proc/%d/task/%d/syscall", (int)pid, (int)tid); int r = read_full_file(p, &t, NULL); if (r < 0) return r; return proc_syscall_parse(t, nr, a); }

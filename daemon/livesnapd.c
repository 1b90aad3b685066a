/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * livesnapd: checkpoints served over D-Bus.
 *
 * The bus-facing process never touches a target. Each checkpoint job runs in a forked worker that calls
 * livesnap_dump() (ptrace is per tracer thread, and a crash must cost the job, not the daemon). The worker
 * reports progress as text lines on a pipe and ends with one line of JSON; the daemon watches the pipe
 * with sd-event, so the event loop never blocks.
 *
 * Workers and export children are not forked by the bus-facing process but by the spawner, a small
 * privileged process (sandbox.c says what each keeps and why the spawner stays unfiltered). They talk over
 * a SOCK_SEQPACKET socket, one fixed-size message each way per event: the bus-facing process asks for a
 * worker (target PID with the pidfd it checked the target through, options, the image's name in the
 * store, the write end of the progress pipe) or an export child (checkpoint id, format, the caller's fd);
 * the spawner answers "started" (with the worker's pidfd, through which a job is cancelled) and, as the
 * parent that reaps them, "exited" with the child's status. The spawner comes one of two ways:
 *
 *  - Forked at start-up (the default), before the bus-facing process drops its capabilities and installs
 *    its seccomp filter, over a socketpair. It dies with the bus-facing process and, when the socket
 *    closes, sends its children a SIGTERM and waits for them.
 *  - Under systemd, as a unit of its own (livesnapd-spawner.service, `livesnapd --spawner`), started by
 *    livesnapd-spawner.socket, to which the bus-facing process connects (--spawner-socket) instead of
 *    forking (and which it refuses unless root listens on it). A unit's seccomp filters cover every process
 *    of the unit, and a worker must be free of any to suspend its target's; so livesnapd.service keeps
 *    systemd's filters and the spawner's unit sets none. That spawner serves one connection at a time, from
 *    uid 0 only (SO_PEERCRED), and when the connection closes it SIGKILLs and reaps whatever children it
 *    still has, so nothing outlives the bus-facing process that asked for it; a bus-facing process that
 *    stops gives its workers their SIGTERM and the time to take it before it closes the socket.
 *
 * Either way a worker dies with the spawner (PR_SET_PDEATHSIG), and a worker that dies releases its
 * target: the kernel un-protects it, and the image, written unnamed or under a temporary name in the
 * store, never appears under a checkpoint id. The daemon stops when the spawner's socket closes.
 *
 * A target is named by PID, but checked and checkpointed through one pidfd: the bus-facing process opens
 * it before it checks the caller's rights and sees it still alive after, so the checks were about that
 * process; the spawner checks the pidfd is the PID's; the worker sees it alive before the dump and after,
 * and a PID whose process was alive throughout cannot have been reused in between.
 *
 * Authorization uses the caller's credentials as the bus reports them, never a PID it sends: root may
 * checkpoint any process; another user only processes whose every uid is theirs and that the kernel
 * shows as theirs in /proc (dumpable). Users see, export and delete only their own checkpoints.
 */

#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "config.h"
#include "core.h"
#include "image.h"
#include "livesnap.h"
#include "options.h"
#include "procfs.h"
#include "sandbox.h"
#include "store.h"
#include "util.h"

#define BUS_NAME "org.livesnap1"
#define OBJ_PATH "/org/livesnap1"
#define IFACE_MANAGER "org.livesnap1.Manager"
#define IFACE_JOB "org.livesnap1.Job"
#define IFACE_CHECKPOINT "org.livesnap1.Checkpoint"
#define JOB_PREFIX OBJ_PATH "/job"
#define CHECKPOINT_PREFIX OBJ_PATH "/checkpoint"

#define ERR_NO_SUCH_PROCESS "org.livesnap1.Error.NoSuchProcess"
#define ERR_PERMISSION "org.livesnap1.Error.PermissionDenied"
#define ERR_BUSY "org.livesnap1.Error.Busy"
#define ERR_NO_SUCH_CHECKPOINT "org.livesnap1.Error.NoSuchCheckpoint"
#define ERR_NO_SUCH_JOB "org.livesnap1.Error.NoSuchJob"
#define ERR_LIMITS "org.livesnap1.Error.LimitsExceeded"
#define ERR_INVALID OPTIONS_ERROR_INVALID
#define ERR_FAILED "org.livesnap1.Error.Failed"
#define ERR_NOT_SUPPORTED "org.livesnap1.Error.NotSupported"

typedef struct Manager Manager;

typedef struct Job {
        Manager *manager;
        unsigned id;
        char *path;
        pid_t target;
        int worker_pidfd; /* from the spawner once it started the worker */
        bool cancel_pending; /* cancelled before the worker's pidfd came */
        uid_t owner;
        char *label;
        LivesnapDumpOptions opts;
        char checkpoint_id[STORE_ID_LEN + 1];
        char *tmp_image;
        uint64_t done, total;
        const char *state; /* "running", "cancelling" */
        int pipe_fd;
        char buf[4096];
        size_t buf_len;
        char *result; /* the worker's last line */
        char *exe, *cmdline; /* what the worker saw of the target */
        bool exited, pipe_closed;
        int exit_status;
        sd_event_source *io;
        struct Job *next;
} Job;

/* An export runs in a child process: images are large, and the event loop must not block on the
 * caller's fd. The reply goes out when the child ends. */
typedef struct Export {
        uint32_t id;
        sd_bus_message *msg;
        struct Export *next;
} Export;

struct Manager {
        sd_event *event;
        sd_bus *bus;
        Config config;
        Store *store;
        Job *jobs;
        unsigned next_job_id;
        Export *exports;
        uint32_t next_export_id;
        int spawner_fd;
        pid_t spawner;
        sd_event_source *spawner_io;
};

#define STORE_DEFAULT_DIR "/var/lib/livesnap"

static const char *arg_config = CONFIG_DEFAULT_PATH;
static bool arg_check_sandbox = false;
static bool arg_spawner = false;
static const char *arg_spawner_socket = NULL;

/* ---- helpers ---- */

static int caller_uid(sd_bus_message *m, uid_t *ret)
{
        sd_bus_creds *creds = NULL;
        int r;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_AUGMENT, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, ret);
        sd_bus_creds_unref(creds);
        return r;
}

/* May uid checkpoint pid? Root may; others only processes they could ptrace themselves. */
static int may_checkpoint(uid_t uid, pid_t pid)
{
        ProcStatus st;
        struct stat s;
        char path[64];
        int r;

        r = proc_status_read(pid, 0, &st);
        if (r < 0)
                return r == -ENOENT ? -ESRCH : r;
        if (uid == 0)
                return 0;
        for (int i = 0; i < 4; i++)
                if (st.uid[i] != uid)
                        return -EPERM;
        /* /proc/PID belongs to root for a process that is not dumpable. */
        snprintf(path, sizeof(path), "/proc/%d", (int)pid);
        if (stat(path, &s) < 0)
                return -errno == -ENOENT ? -ESRCH : -errno;
        if (s.st_uid != uid)
                return -EPERM;
        return 0;
}

static Job *job_find(Manager *m, unsigned id)
{
        for (Job *j = m->jobs; j; j = j->next)
                if (j->id == id)
                        return j;
        return NULL;
}

static Job *job_from_path(Manager *m, const char *path)
{
        const char *p = startswith(path, JOB_PREFIX "/") ? path + strlen(JOB_PREFIX "/") : NULL;
        uint64_t id;

        if (!p || parse_u64(p, &id) < 0 || id > UINT32_MAX)
                return NULL;
        return job_find(m, (unsigned)id);
}

static const StoreEntry *checkpoint_from_path(Manager *m, const char *path)
{
        const char *p = startswith(path, CHECKPOINT_PREFIX "/") ? path + strlen(CHECKPOINT_PREFIX "/") : NULL;

        return p ? store_find(m->store, p) : NULL;
}

static char *checkpoint_path(const char *id)
{
        char *p = NULL;

        if (asprintf(&p, CHECKPOINT_PREFIX "/%s", id) < 0)
                return NULL;
        return p;
}

static void job_free(Job *j)
{
        if (!j)
                return;
        sd_event_source_unref(j->io);
        safe_close(j->pipe_fd);
        safe_close(j->worker_pidfd);
        if (j->tmp_image)
                (void)unlink(j->tmp_image);
        free(j->tmp_image);
        free(j->path);
        free(j->label);
        free(j->result);
        free(j->exe);
        free(j->cmdline);
        free(j);
}

static void job_unlink(Manager *m, Job *j)
{
        for (Job **p = &m->jobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        return;
                }
}

/* ---- the spawner's protocol ---- */

typedef enum SpawnKind {
        SPAWN_WORKER = 1, /* fds: the target's pidfd, the write end of the progress pipe */
        SPAWN_EXPORT = 2, /* fds: the caller's file descriptor */
} SpawnKind;

typedef struct SpawnRequest {
        uint32_t kind;
        uint32_t cookie; /* the job's or the export's id, echoed in the replies */
        int32_t target;
        int32_t compress_level;
        uint64_t buffer_size, rate_limit;
        char name[64];  /* worker: the temporary image's name in the store; export: the checkpoint id */
        char format[8]; /* export: "image" or "core" */
} SpawnRequest;

typedef enum SpawnEvent {
        SPAWN_STARTED = 1, /* error, or 0 and (a worker) its pidfd */
        SPAWN_EXITED = 2,  /* the child's si_code and si_status */
} SpawnEvent;

typedef struct SpawnReply {
        uint32_t event;
        uint32_t kind;
        uint32_t cookie;
        int32_t error;
        int32_t code, status;
} SpawnReply;

#define SPAWN_MAX_FDS 2

static int seqpacket_send(int fd, const void *buf, size_t len, const int *fds, size_t n_fds)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
        } control = {};
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        assert(n_fds <= SPAWN_MAX_FDS);
        if (n_fds > 0) {
                struct cmsghdr *c;

                mh.msg_control = &control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

/* One message of exactly len bytes and up to SPAWN_MAX_FDS fds (-1 in the unused slots). Returns 1, 0 at
 * end of file, or a negative errno (-EBADMSG for a message of another size, its fds closed). */
static int seqpacket_recv(int fd, void *buf, size_t len, int fds[SPAWN_MAX_FDS], size_t *ret_n_fds)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                             .msg_controllen = sizeof(control) };
        size_t n_fds = 0;
        ssize_t n;

        for (size_t i = 0; i < SPAWN_MAX_FDS; i++)
                fds[i] = -EBADF;
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int f;

                        memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (n_fds < SPAWN_MAX_FDS)
                                fds[n_fds++] = f;
                        else
                                safe_close(f);
                }
        }
        if (n == 0 && n_fds == 0)
                return 0;
        if ((size_t)n != len || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                for (size_t i = 0; i < n_fds; i++)
                        fds[i] = safe_close(fds[i]);
                return -EBADMSG;
        }
        if (ret_n_fds)
                *ret_n_fds = n_fds;
        return 1;
}

/* Has the process behind pidfd exited? (Its pidfd turns readable then.) */
static bool pidfd_exited(int pidfd)
{
        struct pollfd p = { .fd = pidfd, .events = POLLIN };

        return poll(&p, 1, 0) > 0;
}

/* ---- the worker ---- */

static void worker_progress(void *userdata, uint64_t done, uint64_t total)
{
        int fd = *(int *)userdata;
        char line[64];
        int n = snprintf(line, sizeof(line), "P %" PRIu64 " %" PRIu64 "\n", done, total);

        (void)!write(fd, line, (size_t)n);
}

/* What the store records of the target, read here because reading /proc/PID/exe of another user's (or a
 * more privileged) process takes CAP_SYS_PTRACE, which the bus-facing process no longer has. */
static void worker_describe_target(pid_t pid, int fd)
{
        json_object *out = json_object_new_object();
        _cleanup_free_ char *exe = NULL, *cmdline = NULL;
        char **argv = NULL;
        size_t len = 0;
        const char *text;

        (void)proc_exe_read(pid, &exe);
        if (proc_cmdline_read(pid, &argv) >= 0) {
                for (char **a = argv; *a; a++)
                        len += strlen(*a) + 1;
                cmdline = calloc(1, len + 1);
                for (char **a = argv; cmdline && *a; a++) {
                        if (a != argv)
                                strcat(cmdline, " ");
                        strcat(cmdline, *a);
                }
                strv_free(argv);
        }
        /* The line must fit the daemon's 4 KiB line buffer once escaped. */
        if (exe && strlen(exe) > 1024)
                exe[1024] = 0;
        if (cmdline && strlen(cmdline) > 1024)
                cmdline[1024] = 0;
        json_object_object_add(out, "exe", json_object_new_string(exe ?: ""));
        json_object_object_add(out, "cmdline", json_object_new_string(cmdline ?: ""));
        text = json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN);
        if (strlen(text) < 4000) {
                (void)!write(fd, "I ", 2);
                (void)!write(fd, text, strlen(text));
                (void)!write(fd, "\n", 1);
        }
        json_object_put(out);
}

_noreturn_ static void worker_main(const SpawnRequest *req, const char *image, int pidfd, int fd, pid_t spawner)
{
        LivesnapDumpOptions o = {
                .buffer_size = req->buffer_size,
                .rate_limit = req->rate_limit,
                .compress_level = req->compress_level,
        };
        LivesnapDumpResult res = {};
        json_object *out = json_object_new_object();
        pid_t target = req->target;
        sigset_t none;
        const char *text;
        int r;

        /* Die with the spawner, which dies with the daemon: the kernel then releases the target for us. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != spawner)
                _exit(1);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);

        worker_describe_target(target, fd);
        o.progress = worker_progress;
        o.userdata = &fd;
        if (pidfd_exited(pidfd)) {
                r = -ESRCH;
                snprintf(res.error, sizeof(res.error), "PID %d exited before the checkpoint began", (int)target);
        } else {
                r = livesnap_dump(target, image, &o, &res);
                /* Alive now means alive throughout: the PID was this process's for the whole dump. */
                if (r >= 0 && pidfd_exited(pidfd)) {
                        (void)unlink(image);
                        r = -ESRCH;
                        snprintf(res.error, sizeof(res.error),
                                 "PID %d exited during the checkpoint (its PID may have been reused): nothing filed",
                                 (int)target);
                }
        }

        json_object_object_add(out, "ok", json_object_new_boolean(r >= 0));
        json_object_object_add(out, "errno", json_object_new_int(-r));
        json_object_object_add(out, "error", json_object_new_string(res.error));
        json_object_object_add(out, "freeze_us", json_object_new_uint64(res.freeze_us));
        json_object_object_add(out, "elapsed_ms", json_object_new_uint64(res.elapsed_ms));
        json_object_object_add(out, "pages_saved", json_object_new_uint64(res.pages_saved));
        json_object_object_add(out, "pages_zero", json_object_new_uint64(res.pages_zero));
        json_object_object_add(out, "pages_discarded", json_object_new_uint64(res.pages_discarded));
        json_object_object_add(out, "pages_unsaved", json_object_new_uint64(res.pages_unsaved));
        json_object_object_add(out, "threads", json_object_new_uint64(res.threads));
        json_object_object_add(out, "image_bytes", json_object_new_uint64(res.image_bytes));
        json_object_object_add(out, "peak_buffer_bytes", json_object_new_uint64(res.peak_buffer_bytes));
        text = json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN);
        (void)!write(fd, "R ", 2);
        (void)!write(fd, text, strlen(text));
        (void)!write(fd, "\n", 1);
        _exit(r >= 0 ? 0 : 1);
}

/* ---- the export child ---- */

static int export_copy(const char *image, int out)
{
        _cleanup_close_ int in = open(image, O_RDONLY | O_CLOEXEC);

        if (in < 0)
                return -errno;
        for (;;) {
                char buf[1 << 16];
                ssize_t n = read(in, buf, sizeof(buf)), w = 0;

                if (n < 0)
                        return -errno;
                if (n == 0)
                        return 0;
                while (w < n) {
                        ssize_t k = write(out, buf + w, (size_t)(n - w));
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        w += k;
                }
        }
}

_noreturn_ static void exporter_main(const char *image, const char *format, int fd, pid_t spawner)
{
        int r;

        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != spawner)
                _exit(1);
        r = sandbox_enter_exporter();
        if (r >= 0 && streq(format, "core")) {
                ImageReader *rd = NULL;
                char err[256];

                r = image_open(image, &rd, err, sizeof(err));
                if (r >= 0)
                        r = core_write(rd, fd, NULL, NULL, err, sizeof(err));
                image_close(rd);
        } else if (r >= 0)
                r = export_copy(image, fd);
        _exit(r < 0 ? -r : 0);
}

/* ---- the spawner ---- */

typedef struct SpawnChild {
        pid_t pid;
        uint32_t kind, cookie;
} SpawnChild;

typedef struct Spawner {
        int sock, sigfd;
        int listen_fd; /* livesnapd-spawner.socket's, or -EBADF */
        pid_t self;
        const char *store_dir;
        SpawnChild *children;
        size_t n_children;
} Spawner;

/* Is pidfd the pidfd of pid? /proc/self/fdinfo says which PID a pidfd refers to (-1 once it exited). */
static bool pidfd_is(int pidfd, pid_t pid)
{
        _cleanup_free_ char *text = NULL;
        char path[64];
        const char *p;

        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        if (read_full_file(path, &text, NULL) < 0)
                return false;
        p = strstr(text, "\nPid:");
        return p && strtol(p + 5, NULL, 10) == (long)pid;
}

/* Forks the child a request asks for. Returns its PID and, for a worker, its pidfd. */
static int spawner_fork(Spawner *s, const SpawnRequest *req, int fds[SPAWN_MAX_FDS], size_t n_fds,
                        pid_t *ret_pid, int *ret_pidfd)
{
        _cleanup_free_ char *path = NULL;
        pid_t child;

        if (!memchr(req->name, 0, sizeof(req->name)) || !memchr(req->format, 0, sizeof(req->format)))
                return -EINVAL;
        if (req->kind == SPAWN_WORKER) {
                size_t len = strlen(req->name);
                char id[STORE_ID_LEN + 1];

                /* Only a name store_new_id() makes: ".ID.lsnap.tmp". */
                if (n_fds != 2 || req->target <= 0 || req->compress_level < 0 || req->compress_level > 19 ||
                    len != 1 + STORE_ID_LEN + strlen(".lsnap.tmp") || req->name[0] != '.' ||
                    !streq(req->name + 1 + STORE_ID_LEN, ".lsnap.tmp"))
                        return -EINVAL;
                memcpy(id, req->name + 1, STORE_ID_LEN);
                id[STORE_ID_LEN] = 0;
                if (!store_id_valid(id))
                        return -EINVAL;
                if (req->target == s->self)
                        return -EINVAL; /* itself: the bus-facing process does not know its PID */
                if (!pidfd_is(fds[0], req->target))
                        return -ESRCH;
                if (asprintf(&path, "%s/%s", s->store_dir, req->name) < 0)
                        return -ENOMEM;
        } else if (req->kind == SPAWN_EXPORT) {
                if (n_fds != 1 || !store_id_valid(req->name) ||
                    (!streq(req->format, "image") && !streq(req->format, "core")))
                        return -EINVAL;
                if (asprintf(&path, "%s/%s.lsnap", s->store_dir, req->name) < 0)
                        return -ENOMEM;
        } else
                return -EINVAL;

        child = fork();
        if (child < 0)
                return -errno;
        if (child == 0) {
                safe_close(s->sock);
                safe_close(s->sigfd);
                safe_close(s->listen_fd);
                if (req->kind == SPAWN_WORKER)
                        worker_main(req, path, fds[0], fds[1], s->self);
                exporter_main(path, req->format, fds[0], s->self);
        }
        *ret_pid = child;
        *ret_pidfd = -EBADF;
        if (req->kind == SPAWN_WORKER) {
                /* Our own child cannot be reaped before we wait for it: this pidfd is the right one. */
                *ret_pidfd = (int)syscall(SYS_pidfd_open, child, 0);
                if (*ret_pidfd < 0) {
                        int r = -errno;
                        (void)kill(child, SIGKILL);
                        return r;
                }
        }
        return 0;
}

static int spawner_on_request(Spawner *s)
{
        SpawnRequest req;
        SpawnReply rep = { .event = SPAWN_STARTED };
        int fds[SPAWN_MAX_FDS], pidfd = -EBADF, r;
        size_t n_fds = 0;
        pid_t child = 0;
        SpawnChild *c;

        r = seqpacket_recv(s->sock, &req, sizeof(req), fds, &n_fds);
        if (r <= 0)
                return r;
        rep.kind = req.kind;
        rep.cookie = req.cookie;
        c = reallocarray(s->children, s->n_children + 1, sizeof(*c));
        if (c) {
                s->children = c;
                rep.error = spawner_fork(s, &req, fds, n_fds, &child, &pidfd);
        } else
                rep.error = -ENOMEM;
        for (size_t i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        if (rep.error >= 0)
                s->children[s->n_children++] = (SpawnChild){ .pid = child, .kind = req.kind, .cookie = req.cookie };
        r = seqpacket_send(s->sock, &rep, sizeof(rep), &pidfd, pidfd >= 0 ? 1 : 0);
        safe_close(pidfd);
        return r < 0 ? r : 1;
}

static void spawner_reap(Spawner *s)
{
        for (;;) {
                siginfo_t si = {};

                if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
                        return;
                for (size_t i = 0; i < s->n_children; i++) {
                        SpawnReply rep;

                        if (s->children[i].pid != si.si_pid)
                                continue;
                        rep = (SpawnReply){ .event = SPAWN_EXITED, .kind = s->children[i].kind,
                                            .cookie = s->children[i].cookie, .code = si.si_code,
                                            .status = si.si_status };
                        (void)seqpacket_send(s->sock, &rep, sizeof(rep), NULL, 0);
                        s->children[i] = s->children[--s->n_children];
                        break;
                }
        }
}

/* Signals and capabilities of a spawner. catch_term: SIGTERM and SIGINT end spawner_serve() (the spawner
 * of livesnapd-spawner.service, which systemd stops); otherwise they are ignored (the forked spawner: the
 * bus-facing process decides when jobs end, and a SIGTERM to the whole service must not kill the spawner
 * first, and its children with it; they get their own SIGTERM). */
static int spawner_setup(Spawner *s, bool catch_term)
{
        sigset_t mask;

        if (!catch_term) {
                signal(SIGTERM, SIG_IGN);
                signal(SIGINT, SIG_IGN);
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        if (catch_term) {
                sigaddset(&mask, SIGTERM);
                sigaddset(&mask, SIGINT);
        }
        sigprocmask(SIG_BLOCK, &mask, NULL);
        s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (s->sigfd < 0)
                return -errno;
        return sandbox_enter_spawner();
}

/* Reads the signalfd, reaping children; returns true if a SIGTERM or SIGINT came. */
static bool spawner_on_signal(Spawner *s)
{
        struct signalfd_siginfo si;
        bool term = false;

        while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                        term = true;
        spawner_reap(s);
        return term;
}

/* Requests in, children out, until the peer closes s->sock (returns 0) or a SIGTERM or SIGINT comes
 * (returns 1; only when spawner_setup() was told to catch them). */
static int spawner_serve(Spawner *s)
{
        for (;;) {
                struct pollfd p[2] = { { .fd = s->sock, .events = POLLIN }, { .fd = s->sigfd, .events = POLLIN } };
                int r;

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return 0;
                }
                if (p[1].revents && spawner_on_signal(s))
                        return 1;
                if (p[0].revents) {
                        r = spawner_on_request(s);
                        if (r == 0 || (r < 0 && r != -EAGAIN && r != -EINTR && r != -EBADMSG))
                                return 0;
                }
        }
}

/* Sends sig to every child still running and waits for all of them. */
static void spawner_stop_children(Spawner *s, int sig)
{
        for (size_t i = 0; i < s->n_children; i++)
                (void)kill(s->children[i].pid, sig);
        while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
                ;
        s->n_children = 0;
}

/* The forked spawner: serves the bus-facing process until it closes the socket. */
_noreturn_ static void spawner_main(int sock, const char *store_dir, pid_t parent)
{
        Spawner s = { .sock = sock, .listen_fd = -EBADF, .self = getpid(), .store_dir = store_dir };
        int r;

        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
                _exit(1);
        r = spawner_setup(&s, false);
        if (r < 0) {
                fprintf(stderr, "livesnapd: spawner: cannot set up: %s\n", strerror(-r));
                _exit(1);
        }
        (void)spawner_serve(&s);
        /* The daemon is going: the children get a SIGTERM (a clean abort) and the time to take it. */
        spawner_stop_children(&s, SIGTERM);
        _exit(0);
}

/* The spawner of livesnapd-spawner.service (livesnapd --spawner): takes the listening socket from
 * systemd and serves one connection at a time, from root only. When a connection closes, whatever its
 * peer started is killed: the bus-facing process that asked for it is gone, and nothing may outlive it
 * (a worker killed releases its target; the kernel un-protects it). Returns on SIGTERM or SIGINT. */
static int spawner_listen_main(int listen_fd, const char *store_dir)
{
        Spawner s = { .sock = -EBADF, .listen_fd = listen_fd, .self = getpid(), .store_dir = store_dir };
        int r;

        r = spawner_setup(&s, true);
        if (r < 0) {
                fprintf(stderr, "livesnapd: spawner: cannot set up: %s\n", strerror(-r));
                return r;
        }
        (void)fcntl(listen_fd, F_SETFL, O_NONBLOCK);
        fprintf(stderr, "livesnapd: spawner: waiting for livesnapd, store %s\n", store_dir);

        for (;;) {
                struct pollfd p[2] = { { .fd = listen_fd, .events = POLLIN }, { .fd = s.sigfd, .events = POLLIN } };
                struct ucred cred = {};
                socklen_t len = sizeof(cred);
                size_t n;
                int conn;

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (p[1].revents && spawner_on_signal(&s)) {
                        r = 0;
                        break;
                }
                if (!p[0].revents)
                        continue;
                conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (conn < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                continue;
                        r = -errno;
                        fprintf(stderr, "livesnapd: spawner: accept: %s\n", strerror(-r));
                        break;
                }
                /* The socket's mode (0600) keeps others out already; this holds even if it is changed. */
                if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
                        fprintf(stderr, "livesnapd: spawner: refused a connection from PID %d, uid %u: only root "
                                "may ask for workers\n", (int)cred.pid, (unsigned)cred.uid);
                        safe_close(conn);
                        continue;
                }
                fprintf(stderr, "livesnapd: spawner: serving livesnapd (PID %d)\n", (int)cred.pid);
                s.sock = conn;
                r = spawner_serve(&s);
                n = s.n_children;
                spawner_stop_children(&s, SIGKILL);
                s.sock = safe_close(s.sock);
                fprintf(stderr, "livesnapd: spawner: %s livesnapd (PID %d); killed the %zu child%s it left\n",
                        r > 0 ? "stopping: dropped" : "connection closed by", (int)cred.pid, n, n == 1 ? "" : "ren");
                if (r > 0) {
                        r = 0;
                        break;
                }
        }

        spawner_stop_children(&s, SIGKILL);
        safe_close(s.sigfd);
        free(s.children);
        return r;
}

static void job_finish(Job *j);

static int job_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Job *j = userdata;
        ssize_t n;

        n = read(fd, j->buf + j->buf_len, sizeof(j->buf) - 1 - j->buf_len);
        if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                j->pipe_closed = true;
                j->io = sd_event_source_disable_unref(j->io);
                if (j->exited)
                        job_finish(j);
                return 0;
        }
        j->buf_len += (size_t)n;
        j->buf[j->buf_len] = 0;

        char *line = j->buf, *nl;
        bool progressed = false;
        while ((nl = strchr(line, '\n'))) {
                *nl = 0;
                if (line[0] == 'P') {
                        unsigned long long d, t;
                        if (sscanf(line, "P %llu %llu", &d, &t) == 2) {
                                j->done = d;
                                j->total = t;
                                progressed = true;
                        }
                } else if (line[0] == 'R' && line[1] == ' ') {
                        free(j->result);
                        j->result = strdup(line + 2);
                } else if (line[0] == 'I' && line[1] == ' ') {
                        json_object *info = json_tokener_parse(line + 2), *v;

                        if (info && json_object_object_get_ex(info, "exe", &v) && !j->exe)
                                j->exe = strdup(json_object_get_string(v));
                        if (info && json_object_object_get_ex(info, "cmdline", &v) && !j->cmdline)
                                j->cmdline = strdup(json_object_get_string(v));
                        json_object_put(info);
                }
                line = nl + 1;
        }
        j->buf_len = strlen(line);
        memmove(j->buf, line, j->buf_len + 1);
        if (j->buf_len == sizeof(j->buf) - 1)
                j->buf_len = 0; /* a line that long is not ours: drop it */

        if (progressed)
                (void)sd_bus_emit_properties_changed(j->manager->bus, j->path, IFACE_JOB, "Progress", NULL);
        return 0;
}

/* The spawner reaped the worker (code, status: as in siginfo_t). */
static void job_on_exit(Job *j, int code, int status)
{
        j->exited = true;
        j->exit_status = code == CLD_EXITED ? status : 128 + status;
        if (code != CLD_EXITED) {
                free(j->result);
                j->result = NULL;
                if (asprintf(&j->result, "{\"ok\":false,\"error\":\"the worker was killed by signal %s\"}",
                             strsignal(status)) < 0)
                        j->result = NULL;
        }
        if (j->pipe_closed || code != CLD_EXITED)
                job_finish(j);
}

/* The spawner could not start the worker. */
static void job_on_spawn_error(Job *j, int error)
{
        json_object *res = json_object_new_object();
        char text[128];

        if (error == -ESRCH)
                snprintf(text, sizeof(text), "the target exited before its worker started");
        else
                snprintf(text, sizeof(text), "the worker could not be started: %s", strerror(-error));
        json_object_object_add(res, "ok", json_object_new_boolean(false));
        json_object_object_add(res, "errno", json_object_new_int(-error));
        json_object_object_add(res, "error", json_object_new_string(text));
        free(j->result);
        j->result = strdup(json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
        json_object_put(res);
        j->exited = true;
        j->exit_status = 1;
        if (j->pipe_closed)
                job_finish(j);
}

/* The job is over: file the checkpoint, tell the bus, forget the job. */
static void job_finish(Job *j)
{
        Manager *m = j->manager;
        json_object *res = j->result ? json_tokener_parse(j->result) : NULL, *v;
        const char *error = "the worker ended without a result";
        bool ok = false;
        _cleanup_free_ char *cpath = NULL;

        if (res && json_object_object_get_ex(res, "ok", &v))
                ok = json_object_get_boolean(v);
        if (res && json_object_object_get_ex(res, "error", &v) && *json_object_get_string(v))
                error = json_object_get_string(v);

        if (ok && j->exit_status == 0) {
                StoreEntry e = { .owner = j->owner, .label = j->label, .pid = j->target, .exe = j->exe,
                                 .cmdline = j->cmdline };
                struct timespec ts;

                memcpy(e.id, j->checkpoint_id, sizeof(e.id));
                clock_gettime(CLOCK_REALTIME, &ts);
                e.time_usec = (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
                if (json_object_object_get_ex(res, "freeze_us", &v))
                        e.freeze_us = json_object_get_uint64(v);
                if (store_add(m->store, &e, j->tmp_image) < 0) {
                        ok = false;
                        error = "filing the checkpoint in the store failed";
                } else {
                        free(j->tmp_image);
                        j->tmp_image = NULL;
                        cpath = checkpoint_path(e.id);
                        (void)sd_bus_emit_signal(m->bus, OBJ_PATH, IFACE_MANAGER, "CheckpointAdded", "so", e.id,
                                                 cpath);
                        (void)store_apply_retention(m->store, m->config.max_checkpoints_per_user,
                                                    m->config.max_age_sec, e.time_usec, NULL, NULL);
                }
        } else
                ok = false;

        (void)sd_bus_emit_signal(m->bus, OBJ_PATH, IFACE_MANAGER, "JobRemoved", "uossss", j->id, j->path,
                                 ok ? "done" : (streq(j->state, "cancelling") ? "canceled" : "failed"),
                                 ok ? j->checkpoint_id : "", ok ? "" : error, j->result ?: "{}");
        (void)sd_bus_emit_object_removed(m->bus, j->path);
        json_object_put(res);
        job_unlink(m, j);
        job_free(j);
}

/* ---- org.livesnap1.Manager ---- */

/* A job with the configured defaults and the caller's options (msg is at the a{sv}). */
static int job_prepare(Manager *m, sd_bus_message *msg, Job **ret, sd_bus_error *error)
{
        Job *j;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->pipe_fd = -EBADF;
        j->worker_pidfd = -EBADF;
        j->opts = (LivesnapDumpOptions){ .buffer_size = m->config.buffer_size, .rate_limit = m->config.rate_limit,
                                         .compress_level = m->config.compress_level };
        j->label = strdup("");
        r = j->label ? checkpoint_options_read(msg, &j->opts, &j->label, error) : -ENOMEM;
        if (r < 0) {
                job_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

/* Checks, asks the spawner for a worker and replies to msg. Takes j (freed on failure). pidfd: the
 * target's, if the caller holds one already (borrowed); otherwise one is opened here. */
static int job_start(Manager *m, sd_bus_message *msg, Job *j, uint32_t pid, int pidfd, sd_bus_error *error)
{
        _cleanup_close_ int own_pidfd = -EBADF;
        unsigned n_all = 0, n_user = 0;
        SpawnRequest req = {};
        const char *name;
        uid_t uid;
        int pipefd[2], r;

        r = caller_uid(msg, &uid);
        if (r < 0)
                goto fail;

        if ((pid_t)pid == getpid() || (m->spawner > 0 && (pid_t)pid == m->spawner)) {
                r = sd_bus_error_setf(error, ERR_INVALID, "PID %" PRIu32 " is livesnapd itself", pid);
                goto fail;
        }
        /* Checked through a pidfd, and seen alive after the checks: they were about this process. */
        if (pidfd < 0) {
                pidfd = own_pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
                /* A thread that is not its group's leader: EINVAL, or ENOENT since Linux 6.9. */
                if (pidfd < 0 && (errno == EINVAL || errno == ENOENT)) {
                        r = sd_bus_error_setf(error, ERR_INVALID,
                                              "PID %" PRIu32 " is a thread, not a process (give its process's PID)",
                                              pid);
                        goto fail;
                }
                if (pidfd < 0 && errno != ESRCH) {
                        r = -errno;
                        goto fail;
                }
        }
        r = pidfd < 0 ? -ESRCH : may_checkpoint(uid, (pid_t)pid);
        if (r >= 0 && pidfd_exited(pidfd))
                r = -ESRCH;
        if (r == -ESRCH) {
                r = sd_bus_error_setf(error, ERR_NO_SUCH_PROCESS, "PID %" PRIu32 ": no such process", pid);
                goto fail;
        }
        if (r == -EPERM) {
                r = sd_bus_error_setf(error, ERR_PERMISSION,
                                      "user %u may not checkpoint PID %" PRIu32 " (not a process it may trace)",
                                      (unsigned)uid, pid);
                goto fail;
        }
        if (r < 0)
                goto fail;

        for (Job *k = m->jobs; k; k = k->next) {
                if (k->target == (pid_t)pid) {
                        r = sd_bus_error_setf(error, ERR_BUSY, "PID %" PRIu32 " is being checkpointed (job %u)",
                                              pid, k->id);
                        goto fail;
                }
                n_all++;
                if (k->owner == uid)
                        n_user++;
        }
        if (n_all >= m->config.max_jobs || n_user >= m->config.max_jobs_per_user) {
                r = sd_bus_error_setf(error, ERR_LIMITS, "too many checkpoint jobs running (%u of %u; %u of %u for "
                                      "user %u)",
                                      n_all, m->config.max_jobs, n_user, m->config.max_jobs_per_user, (unsigned)uid);
                goto fail;
        }

        j->manager = m;
        j->id = ++m->next_job_id;
        j->target = (pid_t)pid;
        j->owner = uid;
        j->state = "running";
        if (asprintf(&j->path, JOB_PREFIX "/%u", j->id) < 0 || !j->label) {
                r = -ENOMEM;
                goto fail;
        }
        r = store_new_id(m->store, j->checkpoint_id, &j->tmp_image);
        if (r < 0)
                goto fail;

        req = (SpawnRequest){
                .kind = SPAWN_WORKER,
                .cookie = j->id,
                .target = (int32_t)pid,
                .compress_level = j->opts.compress_level,
                .buffer_size = j->opts.buffer_size,
                .rate_limit = j->opts.rate_limit,
        };
        name = strrchr(j->tmp_image, '/');
        name = name ? name + 1 : j->tmp_image;
        if (strlen(name) >= sizeof(req.name)) {
                r = -ENAMETOOLONG;
                goto fail;
        }
        strcpy(req.name, name);

        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
        }
        r = seqpacket_send(m->spawner_fd, &req, sizeof(req), (int[]){ pidfd, pipefd[1] }, 2);
        safe_close(pipefd[1]);
        if (r < 0) {
                safe_close(pipefd[0]);
                r = sd_bus_error_setf(error, ERR_FAILED, "cannot ask the spawner for a worker: %s", strerror(-r));
                goto fail;
        }
        j->pipe_fd = pipefd[0];
        (void)fcntl(j->pipe_fd, F_SETFL, O_NONBLOCK);

        /* The job exists from here on: the spawner answers with the worker's pidfd, or an error. */
        j->next = m->jobs;
        m->jobs = j;
        r = sd_event_add_io(m->event, &j->io, j->pipe_fd, EPOLLIN, job_on_io, j);
        if (r < 0) {
                /* The job ends as failed when the spawner's answer and its exit come. */
                j->pipe_closed = true;
                j->cancel_pending = true;
        }
        (void)sd_bus_emit_object_added(m->bus, j->path);
        return sd_bus_reply_method_return(msg, "uo", j->id, j->path);

fail:
        job_free(j);
        return r;
}

static int method_checkpoint(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        Job *j = NULL;
        uint32_t pid;
        int r;

        r = sd_bus_message_read(msg, "u", &pid);
        if (r < 0)
                return r;
        if (pid == 0 || pid > INT32_MAX)
                return sd_bus_error_setf(error, ERR_INVALID, "invalid PID %" PRIu32, pid);
        r = job_prepare(m, msg, &j, error);
        if (r < 0)
                return r;
        return job_start(m, msg, j, pid, -EBADF, error);
}

/*
 * CheckpointUnit: ask systemd (on the same bus) for the unit's main PID, asynchronously so the loop never
 * waits on it, then re-read it once the PID is pinned with a pidfd: if it changed, the PID we hold may
 * already be another process's, and the request fails rather than checkpoint a stranger.
 */
typedef struct UnitRequest {
        Manager *manager;
        sd_bus_message *msg;
        Job *job;
        char *unit_path;
        uint32_t pid;
        int pidfd;
        bool recheck;
} UnitRequest;

static void unit_request_free(UnitRequest *u)
{
        if (!u)
                return;
        sd_bus_message_unref(u->msg);
        job_free(u->job);
        free(u->unit_path);
        safe_close(u->pidfd);
        free(u);
}

static int unit_request_fail(UnitRequest *u, const char *name, const char *fmt, const char *detail)
{
        (void)sd_bus_reply_method_errorf(u->msg, name, fmt, detail);
        unit_request_free(u);
        return 0;
}

static int unit_on_main_pid(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        UnitRequest *u = userdata;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        uint32_t pid;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL))
                return unit_request_fail(u, ERR_FAILED, "cannot read the unit's main PID: %s",
                                         sd_bus_message_get_error(reply)->message);
        r = sd_bus_message_read(reply, "v", "u", &pid);
        if (r < 0)
                return unit_request_fail(u, ERR_FAILED, "cannot read the unit's main PID: %s", strerror(-r));
        if (pid == 0)
                return unit_request_fail(u, ERR_NO_SUCH_PROCESS, "unit %s has no main process (not running?)",
                                         u->unit_path);

        if (!u->recheck) {
                u->pid = pid;
                u->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
                if (u->pidfd < 0)
                        return unit_request_fail(u, ERR_NO_SUCH_PROCESS, "the unit's main process is gone%s", "");
                u->recheck = true;
                r = sd_bus_call_method_async(u->manager->bus, NULL, "org.freedesktop.systemd1", u->unit_path,
                                             "org.freedesktop.DBus.Properties", "Get", unit_on_main_pid, u, "ss",
                                             "org.freedesktop.systemd1.Service", "MainPID");
                if (r < 0)
                        return unit_request_fail(u, ERR_FAILED, "asking systemd failed: %s", strerror(-r));
                return 0;
        }
        if (pid != u->pid)
                return unit_request_fail(u, ERR_BUSY, "the unit's main PID changed while it was being looked up%s",
                                         "");

        r = job_start(u->manager, u->msg, TAKE_PTR(u->job), pid, u->pidfd, &error);
        if (r < 0 || sd_bus_error_is_set(&error)) {
                if (!sd_bus_error_is_set(&error))
                        sd_bus_error_set_errno(&error, r);
                (void)sd_bus_reply_method_error(u->msg, &error);
        }
        sd_bus_error_free(&error);
        unit_request_free(u);
        return 0;
}

static int unit_on_get_unit(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        UnitRequest *u = userdata;
        const char *path;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL))
                return unit_request_fail(u, ERR_NO_SUCH_PROCESS, "no such unit: %s",
                                         sd_bus_message_get_error(reply)->message);
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0 || !(u->unit_path = strdup(path)))
                return unit_request_fail(u, ERR_FAILED, "bad reply from systemd%s", "");
        r = sd_bus_call_method_async(u->manager->bus, NULL, "org.freedesktop.systemd1", u->unit_path,
                                     "org.freedesktop.DBus.Properties", "Get", unit_on_main_pid, u, "ss",
                                     "org.freedesktop.systemd1.Service", "MainPID");
        if (r < 0)
                return unit_request_fail(u, ERR_FAILED, "asking systemd failed: %s", strerror(-r));
        return 0;
}

static bool unit_name_valid(const char *name)
{
        size_t len = strlen(name);

        if (len < 9 || len > 255 || !streq(name + len - 8, ".service"))
                return false;
        for (const char *p = name; *p; p++)
                if (!(isalnum((unsigned char)*p) || strchr(":-_.\\@", *p)))
                        return false;
        return true;
}

static int method_checkpoint_unit(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        UnitRequest *u;
        const char *name;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        if (!unit_name_valid(name))
                return sd_bus_error_setf(error, ERR_INVALID, "invalid unit name \"%s\" (NAME.service expected)",
                                         name);
        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->manager = m;
        u->pidfd = -EBADF;
        r = job_prepare(m, msg, &u->job, error);
        if (r < 0) {
                unit_request_free(u);
                return r;
        }
        u->msg = sd_bus_message_ref(msg);
        r = sd_bus_call_method_async(m->bus, NULL, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager", "GetUnit", unit_on_get_unit, u, "s", name);
        if (r < 0) {
                unit_request_free(u);
                return sd_bus_error_setf(error, ERR_FAILED, "cannot ask systemd for %s: %s", name, strerror(-r));
        }
        return 1;
}

static int method_list_checkpoints(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        sd_bus_message *reply = NULL;
        uid_t uid;
        int r;

        r = caller_uid(msg, &uid);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssuuttto)");
        for (size_t i = 0; r >= 0 && i < store_n_entries(m->store); i++) {
                const StoreEntry *e = store_entry(m->store, i);
                _cleanup_free_ char *p = NULL;

                if (uid != 0 && e->owner != uid)
                        continue;
                p = checkpoint_path(e->id);
                if (!p) {
                        r = -ENOMEM;
                        break;
                }
                r = sd_bus_message_append(reply, "(ssuuttto)", e->id, e->label, (uint32_t)e->owner,
                                          (uint32_t)e->pid, e->time_usec, e->size, e->freeze_us, p);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return r;
}

/* The entry id names, if the caller may see it; sets a named error otherwise. */
static const StoreEntry *own_checkpoint(Manager *m, sd_bus_message *msg, const char *id, sd_bus_error *error)
{
        const StoreEntry *e;
        uid_t uid;

        if (!store_id_valid(id)) {
                sd_bus_error_setf(error, ERR_INVALID, "invalid checkpoint id \"%s\" (16 hex digits expected)", id);
                return NULL;
        }
        e = store_find(m->store, id);
        if (!e || caller_uid(msg, &uid) < 0 || (uid != 0 && e->owner != uid)) {
                /* Someone else's checkpoint does not exist, as far as this caller knows. */
                sd_bus_error_setf(error, ERR_NO_SUCH_CHECKPOINT, "no checkpoint %s", id);
                return NULL;
        }
        return e;
}

static int method_get_checkpoint(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *p = NULL;
        const char *id;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        if (!own_checkpoint(m, msg, id, error))
                return -EINVAL;
        p = checkpoint_path(id);
        if (!p)
                return -ENOMEM;
        return sd_bus_reply_method_return(msg, "o", p);
}

static int method_delete(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *p = NULL;
        char id[STORE_ID_LEN + 1];
        const char *s;
        int r;

        r = sd_bus_message_read(msg, "s", &s);
        if (r < 0)
                return r;
        if (!own_checkpoint(m, msg, s, error))
                return -EINVAL;
        snprintf(id, sizeof(id), "%s", s);
        r = store_delete(m->store, id);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "deleting checkpoint %s failed: %s", id, strerror(-r));
        p = checkpoint_path(id);
        (void)sd_bus_emit_signal(m->bus, OBJ_PATH, IFACE_MANAGER, "CheckpointRemoved", "so", id, p ?: "/");
        return sd_bus_reply_method_return(msg, NULL);
}

static Export *export_free(Export *x)
{
        if (x) {
                sd_bus_message_unref(x->msg);
                free(x);
        }
        return NULL;
}

static Export *export_take(Manager *m, uint32_t id)
{
        for (Export **p = &m->exports; *p; p = &(*p)->next)
                if ((*p)->id == id) {
                        Export *x = *p;
                        *p = x->next;
                        return x;
                }
        return NULL;
}

/* The spawner reaped the export child, or could not start it (code 0, status: the errno). */
static void export_on_exit(Export *x, int code, int status)
{
        if (code == CLD_EXITED && status == 0)
                (void)sd_bus_reply_method_return(x->msg, NULL);
        else if (code == CLD_EXITED || code == 0)
                (void)sd_bus_reply_method_errorf(x->msg, ERR_FAILED, "export failed: %s", strerror(status));
        else
                (void)sd_bus_reply_method_errorf(x->msg, ERR_FAILED, "export failed: the exporter was killed by "
                                                 "signal %s", strsignal(status));
}

static int method_export(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        SpawnRequest req = { .kind = SPAWN_EXPORT };
        const char *id, *format;
        Export *x;
        int fd, r;

        r = sd_bus_message_read(msg, "ssh", &id, &format, &fd);
        if (r < 0)
                return r;
        if (!own_checkpoint(m, msg, id, error))
                return -EINVAL;
        if (!streq(format, "image") && !streq(format, "core"))
                return sd_bus_error_setf(error, ERR_INVALID, "unknown export format \"%s\" (core or image)",
                                         format);

        x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->id = ++m->next_export_id;
        req.cookie = x->id;
        snprintf(req.name, sizeof(req.name), "%s", id);
        snprintf(req.format, sizeof(req.format), "%s", format);
        r = seqpacket_send(m->spawner_fd, &req, sizeof(req), &fd, 1);
        if (r < 0) {
                free(x);
                return sd_bus_error_setf(error, ERR_FAILED, "cannot ask the spawner for an exporter: %s",
                                         strerror(-r));
        }
        x->msg = sd_bus_message_ref(msg);
        x->next = m->exports;
        m->exports = x;
        return 1; /* replied to later */
}

/* ---- the spawner, seen from the bus-facing process ---- */

static void spawner_on_reply(Manager *m, const SpawnReply *rep, int pidfd)
{
        if (rep->kind == SPAWN_WORKER) {
                Job *j = job_find(m, rep->cookie);

                if (!j) {
                        safe_close(pidfd);
                        return;
                }
                if (rep->event == SPAWN_STARTED && rep->error < 0)
                        job_on_spawn_error(j, rep->error);
                else if (rep->event == SPAWN_STARTED && pidfd >= 0) {
                        safe_close(j->worker_pidfd);
                        j->worker_pidfd = pidfd;
                        if (j->cancel_pending)
                                (void)syscall(SYS_pidfd_send_signal, j->worker_pidfd, SIGTERM, NULL, 0);
                        return;
                } else if (rep->event == SPAWN_EXITED)
                        job_on_exit(j, rep->code, rep->status);
        } else if (rep->kind == SPAWN_EXPORT) {
                Export *x = NULL;

                if (rep->event == SPAWN_STARTED && rep->error < 0) {
                        x = export_take(m, rep->cookie);
                        if (x)
                                export_on_exit(x, 0, -rep->error);
                } else if (rep->event == SPAWN_EXITED) {
                        x = export_take(m, rep->cookie);
                        if (x)
                                export_on_exit(x, rep->code, rep->status);
                }
                export_free(x);
        }
        safe_close(pidfd);
}

static int spawner_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Manager *m = userdata;

        for (;;) {
                SpawnReply rep;
                int fds[SPAWN_MAX_FDS];
                size_t n_fds = 0;
                int r;

                r = seqpacket_recv(fd, &rep, sizeof(rep), fds, &n_fds);
                if (r == -EAGAIN || r == -EINTR)
                        return 0;
                if (r == -EBADMSG)
                        continue;
                if (r <= 0) {
                        /* Its children died with it: no job can end well, and none can start. */
                        fprintf(stderr, "livesnapd: the spawner process exited (its socket closed); stopping\n");
                        m->spawner_io = sd_event_source_disable_unref(m->spawner_io);
                        return sd_event_exit(m->event, -EPIPE);
                }
                if (n_fds > 1)
                        fds[1] = safe_close(fds[1]);
                spawner_on_reply(m, &rep, fds[0]);
        }
}

/* Forks the spawner, before the bus-facing process gives its privileges up. */
static int spawner_start(Manager *m)
{
        int sv[2];
        pid_t parent = getpid(), child;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        child = fork();
        if (child < 0) {
                safe_close(sv[0]);
                safe_close(sv[1]);
                return -errno;
        }
        if (child == 0) {
                _cleanup_free_ char *dir = strdup(store_dir(m->store));

                safe_close(sv[0]);
                /* Nothing of the bus-facing process's state is the spawner's. */
                m->store = store_free(m->store);
                if (!dir)
                        _exit(1);
                spawner_main(sv[1], dir, parent);
        }
        safe_close(sv[1]);
        m->spawner = child;
        m->spawner_fd = sv[0];
        (void)fcntl(m->spawner_fd, F_SETFL, O_NONBLOCK);
        return 0;
}

/* Connects to the spawner of livesnapd-spawner.service instead of forking one. Its socket is root's: a
 * listener of another user (the path taken over by someone else) is refused. */
static int spawner_connect(Manager *m, const char *path)
{
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct ucred cred = {};
        socklen_t len = sizeof(cred);

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        /* Of a connected socket: the credentials of whoever called listen() (systemd, for the unit). */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (cred.uid != 0)
                return -EPERM;
        (void)fcntl(fd, F_SETFL, O_NONBLOCK);
        m->spawner = 0; /* not ours to wait for */
        m->spawner_fd = TAKE_FD(fd);
        return 0;
}

/* Waits up to timeout_ms for the workers to exit (through their pidfds). The spawner of
 * livesnapd-spawner.service kills whatever its peer left once the socket closes: the workers get the
 * time to take their SIGTERM first. */
static void jobs_wait_workers(Manager *m, int timeout_ms)
{
        struct timespec start;

        clock_gettime(CLOCK_MONOTONIC, &start);
        for (Job *j = m->jobs; j; j = j->next) {
                struct pollfd p = { .fd = j->worker_pidfd, .events = POLLIN };
                struct timespec now;
                long left;

                if (j->worker_pidfd < 0)
                        continue;
                clock_gettime(CLOCK_MONOTONIC, &now);
                left = timeout_ms - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
                if (left <= 0)
                        return;
                while (poll(&p, 1, (int)left) < 0 && errno == EINTR)
                        ;
        }
}

static int method_list_jobs(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        sd_bus_message *reply = NULL;
        uid_t uid;
        int r;

        r = caller_uid(msg, &uid);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(usuuttso)");
        for (Job *j = m->jobs; r >= 0 && j; j = j->next)
                if (uid == 0 || j->owner == uid)
                        r = sd_bus_message_append(reply, "(usuuttso)", j->id, j->state, (uint32_t)j->owner,
                                                  (uint32_t)j->target, j->done, j->total, j->label, j->path);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return r;
}

static int job_cancel(Job *j, sd_bus_message *msg, sd_bus_error *error)
{
        uid_t uid;
        int r;

        r = caller_uid(msg, &uid);
        if (r < 0)
                return r;
        if (uid != 0 && uid != j->owner)
                return sd_bus_error_setf(error, ERR_NO_SUCH_JOB, "no job %u", j->id);
        j->state = "cancelling";
        /* The engine turns SIGTERM into a clean abort: target released, nothing filed. */
        if (j->worker_pidfd >= 0)
                (void)syscall(SYS_pidfd_send_signal, j->worker_pidfd, SIGTERM, NULL, 0);
        else
                j->cancel_pending = true;
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_cancel_job(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        uint32_t id;
        Job *j;
        int r;

        r = sd_bus_message_read(msg, "u", &id);
        if (r < 0)
                return r;
        j = job_find(m, id);
        if (!j)
                return sd_bus_error_setf(error, ERR_NO_SUCH_JOB, "no job %" PRIu32, id);
        return job_cancel(j, msg, error);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Checkpoint", SD_BUS_ARGS("u", pid, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job_path), method_checkpoint,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckpointUnit", SD_BUS_ARGS("s", unit, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job_path), method_checkpoint_unit,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListCheckpoints", SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssuuttto)", checkpoints), method_list_checkpoints,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetCheckpoint", SD_BUS_ARGS("s", id), SD_BUS_RESULT("o", path),
                                method_get_checkpoint, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Export", SD_BUS_ARGS("s", id, "s", format, "h", fd), SD_BUS_NO_RESULT,
                                method_export, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("s", id), SD_BUS_NO_RESULT, method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(usuuttso)", jobs), method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CancelJob", SD_BUS_ARGS("u", id), SD_BUS_NO_RESULT, method_cancel_job,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("CheckpointAdded", SD_BUS_ARGS("s", id, "o", path), 0),
        SD_BUS_SIGNAL_WITH_ARGS("CheckpointRemoved", SD_BUS_ARGS("s", id, "o", path), 0),
        SD_BUS_SIGNAL_WITH_ARGS("JobRemoved",
                                SD_BUS_ARGS("u", id, "o", path, "s", result, "s", checkpoint_id, "s", error, "s",
                                            details),
                                0),
        SD_BUS_VTABLE_END,
};

/* ---- org.livesnap1.Job ---- */

static int job_find_cb(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
                       sd_bus_error *error)
{
        Job *j = job_from_path(userdata, path);

        if (!j)
                return 0;
        *found = j;
        return 1;
}

static int job_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***ret, sd_bus_error *error)
{
        Manager *m = userdata;
        size_t n = 0, k = 0;
        char **l;

        for (Job *j = m->jobs; j; j = j->next)
                n++;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (Job *j = m->jobs; j; j = j->next)
                l[k++] = strdup(j->path);
        *ret = l;
        return 0;
}

static int job_property_progress(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;

        return sd_bus_message_append(reply, "(tt)", j->done, j->total);
}

static int job_property_state(sd_bus *bus, const char *path, const char *iface, const char *prop,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;

        return sd_bus_message_append(reply, "s", j->state);
}

static int job_method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return job_cancel(userdata, msg, error);
}

static const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "u", NULL, offsetof(Job, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pid", "u", NULL, offsetof(Job, target), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Owner", "u", NULL, offsetof(Job, owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Label", "s", NULL, offsetof(Job, label), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", job_property_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Progress", "(tt)", job_property_progress, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD("Cancel", NULL, NULL, job_method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* ---- org.livesnap1.Checkpoint ---- */

static int checkpoint_find_cb(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
                              sd_bus_error *error)
{
        const StoreEntry *e = checkpoint_from_path(userdata, path);

        if (!e)
                return 0;
        *found = (void *)e;
        return 1;
}

static int checkpoint_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***ret, sd_bus_error *error)
{
        Manager *m = userdata;
        size_t n = store_n_entries(m->store);
        char **l = calloc(n + 1, sizeof(char *));

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                l[i] = checkpoint_path(store_entry(m->store, i)->id);
        *ret = l;
        return 0;
}

static int checkpoint_property_id(sd_bus *bus, const char *path, const char *iface, const char *prop,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        const StoreEntry *e = userdata;

        return sd_bus_message_append(reply, "s", e->id);
}

static const sd_bus_vtable checkpoint_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", checkpoint_property_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Label", "s", NULL, offsetof(StoreEntry, label), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Owner", "u", NULL, offsetof(StoreEntry, owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pid", "u", NULL, offsetof(StoreEntry, pid), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Exe", "s", NULL, offsetof(StoreEntry, exe), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CommandLine", "s", NULL, offsetof(StoreEntry, cmdline), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Time", "t", NULL, offsetof(StoreEntry, time_usec), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Size", "t", NULL, offsetof(StoreEntry, size), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("FreezeUSec", "t", NULL, offsetof(StoreEntry, freeze_us), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END,
};

/* ---- main ---- */

/* livesnapd --spawner: the service livesnapd-spawner.socket starts, with its listening socket. */
static int run_spawner(const char *store_dir)
{
        int n, fd, r;

        n = sd_listen_fds(true);
        if (n < 0) {
                fprintf(stderr, "livesnapd: spawner: cannot take the sockets systemd passed: %s\n", strerror(-n));
                return n;
        }
        if (n != 1) {
                fprintf(stderr, "livesnapd: spawner: wants one listening socket from systemd "
                        "(livesnapd-spawner.socket), got %d\n", n);
                return -EBADF;
        }
        fd = SD_LISTEN_FDS_START;
        r = sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0);
        if (r <= 0) {
                fprintf(stderr, "livesnapd: spawner: the socket systemd passed is not a listening AF_UNIX "
                        "SOCK_SEQPACKET socket\n");
                return r < 0 ? r : -ENOTSOCK;
        }
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        r = spawner_listen_main(fd, store_dir);
        safe_close(fd);
        return r;
}

static void help(void)
{
        printf("Usage: livesnapd [--config FILE] [--spawner-socket PATH]\n"
               "       livesnapd --spawner [--config FILE]\n"
               "       livesnapd --check-sandbox\n"
               "\n"
               "The livesnap checkpoint service: org.livesnap1 on the system bus.\n"
               "\n"
               "  -c --config FILE   Configuration (default: " CONFIG_DEFAULT_PATH ")\n"
               "     --spawner-socket PATH\n"
               "                     Get workers from the spawner listening on PATH\n"
               "                     (livesnapd-spawner.socket) instead of forking one\n"
               "     --spawner       Be that spawner, on the socket systemd passes\n"
               "     --check-sandbox Enter the bus-facing process's sandbox, try system calls\n"
               "                     it leaves out, and exit\n"
               "  -h --help          Show this help\n"
               "     --version       Show the version\n"
               "\n"
               "See livesnapd(8) and livesnap.json(5).\n");
}

static int parse_argv(int argc, char *argv[])
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "config", required_argument, NULL, 'c' },
                { "version", no_argument, NULL, 'V' },
                { "check-sandbox", no_argument, NULL, 'S' },
                { "spawner", no_argument, NULL, 'W' },
                { "spawner-socket", required_argument, NULL, 'P' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("livesnapd %s\n", LIVESNAP_VERSION);
                        return 0;
                case 'c':
                        arg_config = optarg;
                        break;
                case 'S':
                        arg_check_sandbox = true;
                        break;
                case 'W':
                        arg_spawner = true;
                        break;
                case 'P':
                        if (optarg[0] != '/') {
                                fprintf(stderr, "livesnapd: --spawner-socket wants an absolute path, not '%s'\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_spawner_socket = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "livesnapd: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (arg_spawner && (arg_spawner_socket || arg_check_sandbox)) {
                fprintf(stderr, "livesnapd: --spawner goes with neither --spawner-socket nor --check-sandbox\n");
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[])
{
        Manager m = { .spawner_fd = -EBADF };
        sigset_t mask;
        char err[512] = "";
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        if (arg_check_sandbox) {
                /* The very function the daemon calls once it serves, then calls it should not get. */
                r = sandbox_enter_bus();
                if (r < 0) {
                        fprintf(stderr, "livesnapd: cannot enter the sandbox: %s\n", strerror(-r));
                        return r;
                }
                r = sandbox_probe(stdout);
                if (r < 0)
                        fprintf(stderr, "livesnapd: the sandbox let a system call through\n");
                return r;
        }

        config_init(&m.config);
        r = config_load(&m.config, arg_config, streq(arg_config, CONFIG_DEFAULT_PATH), err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "livesnapd: bad configuration: %s\n", err);
                goto out;
        }
        if (arg_spawner) {
                r = run_spawner(m.config.store_dir ?: STORE_DEFAULT_DIR);
                goto out;
        }
        /* The store first: opening it removes the temporaries a crash left, which no worker may be
         * writing yet. (The spawner of livesnapd-spawner.service killed its last peer's workers when that
         * peer's socket closed, and serves this process only once it did.) */
        r = store_open(m.config.store_dir ?: STORE_DEFAULT_DIR, &m.store, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "livesnapd: %s\n", err[0] ? err : strerror(-r));
                goto out;
        }
        if (arg_spawner_socket) {
                r = spawner_connect(&m, arg_spawner_socket);
                if (r == -EPERM)
                        fprintf(stderr, "livesnapd: %s is not root's socket; refusing it\n", arg_spawner_socket);
                else if (r < 0)
                        fprintf(stderr, "livesnapd: cannot connect to the spawner at %s: %s\n", arg_spawner_socket,
                                strerror(-r));
        } else {
                r = spawner_start(&m);
                if (r < 0)
                        fprintf(stderr, "livesnapd: cannot start the spawner process: %s\n", strerror(-r));
        }
        if (r < 0)
                goto out;

        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&m.event);
        if (r >= 0)
                r = sd_event_add_signal(m.event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(m.event, NULL, SIGINT, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_io(m.event, &m.spawner_io, m.spawner_fd, EPOLLIN, spawner_on_io, &m);
        if (r < 0) {
                fprintf(stderr, "livesnapd: cannot set up the event loop: %s\n", strerror(-r));
                goto out;
        }

        r = sd_bus_open_system(&m.bus);
        if (r < 0) {
                fprintf(stderr, "livesnapd: cannot connect to the system bus: %s\n", strerror(-r));
                goto out;
        }
        r = sd_bus_add_object_vtable(m.bus, NULL, OBJ_PATH, IFACE_MANAGER, manager_vtable, &m);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(m.bus, NULL, JOB_PREFIX, IFACE_JOB, job_vtable, job_find_cb, &m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m.bus, NULL, JOB_PREFIX, job_enumerate, &m);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(m.bus, NULL, CHECKPOINT_PREFIX, IFACE_CHECKPOINT, checkpoint_vtable,
                                               checkpoint_find_cb, &m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m.bus, NULL, CHECKPOINT_PREFIX, checkpoint_enumerate, &m);
        if (r >= 0)
                r = sd_bus_add_object_manager(m.bus, NULL, OBJ_PATH);
        if (r >= 0)
                r = sd_bus_attach_event(m.bus, m.event, 0);
        if (r >= 0)
                r = sd_bus_request_name(m.bus, BUS_NAME, 0);
        if (r < 0) {
                fprintf(stderr, "livesnapd: cannot serve %s on the system bus: %s\n", BUS_NAME, strerror(-r));
                goto out;
        }
        r = sandbox_enter_bus();
        if (r < 0) {
                fprintf(stderr, "livesnapd: cannot enter the sandbox: %s\n", strerror(-r));
                goto out;
        }

        fprintf(stderr, "livesnapd: serving %s, store %s, %zu checkpoints\n", BUS_NAME, store_dir(m.store),
                store_n_entries(m.store));
        r = sd_event_loop(m.event);

out:
        /* Workers get a SIGTERM (a clean abort). A forked spawner, its socket closed, waits for them; the
         * spawner of livesnapd-spawner.service kills them, so they get their time here. */
        for (Job *j = m.jobs; j; j = j->next)
                if (j->worker_pidfd >= 0)
                        (void)syscall(SYS_pidfd_send_signal, j->worker_pidfd, SIGTERM, NULL, 0);
        if (m.spawner_fd >= 0 && m.spawner <= 0)
                jobs_wait_workers(&m, 10 * 1000);
        m.spawner_io = sd_event_source_disable_unref(m.spawner_io);
        m.spawner_fd = safe_close(m.spawner_fd);
        if (m.spawner > 0)
                (void)waitpid(m.spawner, NULL, 0);
        for (Job *j = m.jobs, *next; j; j = next) {
                next = j->next;
                job_free(j);
        }
        for (Export *x = m.exports, *next; x; x = next) {
                next = x->next;
                export_free(x);
        }
        m.bus = sd_bus_flush_close_unref(m.bus);
        m.event = sd_event_unref(m.event);
        m.store = store_free(m.store);
        config_done(&m.config);
        return r;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);
        return r < 0 ? 1 : 0;
}

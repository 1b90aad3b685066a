/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

struct Store {
        char *dir;
        int dir_fd;
        StoreEntry *entries;
        size_t n_entries;
};

void store_entry_done(StoreEntry *e)
{
        free(e->label);
        free(e->exe);
        free(e->cmdline);
        e->label = e->exe = e->cmdline = NULL;
}

bool store_id_valid(const char *id)
{
        if (!id || strlen(id) != STORE_ID_LEN)
                return false;
        for (size_t i = 0; i < STORE_ID_LEN; i++)
                if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
                        return false;
        return true;
}

bool store_label_valid(const char *label)
{
        const char *p = label;
        size_t len;

        if (!label)
                return false;
        len = strlen(label);
        if (len > STORE_LABEL_MAX)
                return false;

        /* Strict UTF-8; no control characters (C0, DEL or C1), no '/'. */
        while (*p) {
                uint32_t cp;
                int n = utf8_decode(p, &cp);

                if (n < 0 || cp < 0x20 || cp == 0x7f || cp == '/' || (cp >= 0x80 && cp <= 0x9f))
                        return false;
                p += n;
        }
        return true;
}

static int entry_to_file(Store *s, const StoreEntry *e)
{
        json_object *o = json_object_new_object();
        char tmp[64], name[64];
        const char *text;
        int fd, r = 0;

        json_object_object_add(o, "id", json_object_new_string(e->id));
        json_object_object_add(o, "owner", json_object_new_int64(e->owner));
        json_object_object_add(o, "label", json_object_new_string(e->label ?: ""));
        json_object_object_add(o, "pid", json_object_new_int(e->pid));
        json_object_object_add(o, "exe", json_object_new_string(e->exe ?: ""));
        json_object_object_add(o, "cmdline", json_object_new_string(e->cmdline ?: ""));
        json_object_object_add(o, "time_usec", json_object_new_uint64(e->time_usec));
        json_object_object_add(o, "size", json_object_new_uint64(e->size));
        json_object_object_add(o, "freeze_us", json_object_new_uint64(e->freeze_us));
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

        snprintf(tmp, sizeof(tmp), ".%s.json.tmp", e->id);
        snprintf(name, sizeof(name), "%s.json", e->id);
        fd = openat(s->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fchown(fd, e->owner, (gid_t)-1) < 0 ||
            fsync(fd) < 0)
                r = errno ? -errno : -EIO;
        close(fd);
        if (r >= 0 && renameat(s->dir_fd, tmp, s->dir_fd, name) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(s->dir_fd, tmp, 0);
out:
        json_object_put(o);
        return r;
}

static char *json_dup_string(json_object *o, const char *key)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return strdup("");
        return strdup(json_object_get_string(v));
}

static uint64_t json_get_u64(json_object *o, const char *key)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return 0;
        return json_object_get_uint64(v);
}

static int entry_from_file(Store *s, const char *name, StoreEntry *ret)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        StoreEntry e = {};
        json_object *o;
        struct stat st;
        int r;

        if (asprintf(&path, "%s/%s", s->dir, name) < 0)
                return -ENOMEM;
        r = read_full_file(path, &text, NULL);
        if (r < 0)
                return r;
        o = json_tokener_parse(text);
        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return -EBADMSG;
        }

        {
                _cleanup_free_ char *id = json_dup_string(o, "id");
                if (!id || !store_id_valid(id) || strncmp(name, id, STORE_ID_LEN) != 0) {
                        json_object_put(o);
                        return -EBADMSG;
                }
                memcpy(e.id, id, sizeof(e.id));
        }
        e.owner = (uid_t)json_get_u64(o, "owner");
        e.pid = (pid_t)json_get_u64(o, "pid");
        e.time_usec = json_get_u64(o, "time_usec");
        e.size = json_get_u64(o, "size");
        e.freeze_us = json_get_u64(o, "freeze_us");
        e.label = json_dup_string(o, "label");
        e.exe = json_dup_string(o, "exe");
        e.cmdline = json_dup_string(o, "cmdline");
        json_object_put(o);
        if (!e.label || !e.exe || !e.cmdline) {
                store_entry_done(&e);
                return -ENOMEM;
        }

        /* A record without its image is debris. */
        char img[64];
        snprintf(img, sizeof(img), "%s.lsnap", e.id);
        if (fstatat(s->dir_fd, img, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
                store_entry_done(&e);
                return -ENOENT;
        }
        *ret = e;
        return 0;
}

static int entry_cmp(const void *a, const void *b)
{
        const StoreEntry *x = a, *y = b;

        if (x->time_usec != y->time_usec)
                return x->time_usec < y->time_usec ? -1 : 1;
        return strcmp(x->id, y->id);
}

static int store_append(Store *s, const StoreEntry *e)
{
        StoreEntry *p = realloc(s->entries, (s->n_entries + 1) * sizeof(StoreEntry));

        if (!p)
                return -ENOMEM;
        s->entries = p;
        s->entries[s->n_entries++] = *e;
        return 0;
}

int store_open(const char *dir, Store **ret, char *err, size_t errlen)
{
        Store *s;
        struct stat st;
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (!dir || dir[0] != '/')
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->dir_fd = -EBADF;
        s->dir = strdup(dir);
        if (!s->dir) {
                store_free(s);
                return -ENOMEM;
        }

        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                r = -errno;
                snprintf(err, errlen, "cannot create the store %s: %s", dir, strerror(-r));
                goto fail;
        }
        s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (s->dir_fd < 0 || fstat(s->dir_fd, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot open the store %s: %s", dir, strerror(-r));
                goto fail;
        }
        /* Checkpoints hold other users' secrets: the directory is for root's eyes only. */
        if ((st.st_mode & 07777) != 0700 && fchmod(s->dir_fd, 0700) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot make the store %s private (mode 0700): %s", dir, strerror(-r));
                goto fail;
        }

        d = fdopendir(dup(s->dir_fd));
        if (!d) {
                r = -errno;
                snprintf(err, errlen, "cannot list the store %s: %s", dir, strerror(-r));
                goto fail;
        }
        while ((de = readdir(d))) {
                const char *n = de->d_name;
                size_t len = strlen(n);
                StoreEntry e;

                if (streq(n, ".") || streq(n, ".."))
                        continue;
                if (n[0] == '.') {
                        /* a temporary left by a crash */
                        (void)unlinkat(s->dir_fd, n, 0);
                        continue;
                }
                if (len != STORE_ID_LEN + 5 || !streq(n + STORE_ID_LEN, ".json"))
                        continue;
                r = entry_from_file(s, n, &e);
                if (r == -ENOMEM)
                        break;
                if (r < 0) {
                        (void)unlinkat(s->dir_fd, n, 0);
                        continue;
                }
                r = store_append(s, &e);
                if (r < 0) {
                        store_entry_done(&e);
                        break;
                }
        }
        closedir(d);
        if (r == -ENOMEM)
                goto fail;
        if (s->n_entries > 1)
                qsort(s->entries, s->n_entries, sizeof(StoreEntry), entry_cmp);

        *ret = s;
        return 0;

fail:
        store_free(s);
        return r;
}

Store *store_free(Store *s)
{
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_entries; i++)
                store_entry_done(&s->entries[i]);
        free(s->entries);
        safe_close(s->dir_fd);
        free(s->dir);
        free(s);
        return NULL;
}

const char *store_dir(Store *s)
{
        return s->dir;
}

size_t store_n_entries(Store *s)
{
        return s->n_entries;
}

const StoreEntry *store_entry(Store *s, size_t i)
{
        return i < s->n_entries ? &s->entries[i] : NULL;
}

const StoreEntry *store_find(Store *s, const char *id)
{
        if (!store_id_valid(id))
                return NULL;
        for (size_t i = 0; i < s->n_entries; i++)
                if (streq(s->entries[i].id, id))
                        return &s->entries[i];
        return NULL;
}

char *store_image_path(Store *s, const char *id)
{
        char *p = NULL;

        if (!store_id_valid(id) || asprintf(&p, "%s/%s.lsnap", s->dir, id) < 0)
                return NULL;
        return p;
}

int store_new_id(Store *s, char ret_id[STORE_ID_LEN + 1], char **ret_tmp_image_path)
{
        for (int attempt = 0; attempt < 16; attempt++) {
                uint8_t rnd[STORE_ID_LEN / 2];
                char id[STORE_ID_LEN + 1], name[64];
                struct stat st;

                if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                        return -EIO;
                for (size_t i = 0; i < sizeof(rnd); i++)
                        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
                snprintf(name, sizeof(name), "%s.lsnap", id);
                if (store_find(s, id) || fstatat(s->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        continue;

                if (asprintf(ret_tmp_image_path, "%s/.%s.lsnap.tmp", s->dir, id) < 0)
                        return -ENOMEM;
                memcpy(ret_id, id, STORE_ID_LEN + 1);
                return 0;
        }
        return -EEXIST;
}

int store_add(Store *s, const StoreEntry *e, const char *tmp_image_path)
{
        StoreEntry copy = *e;
        _cleanup_free_ char *image = NULL;
        struct stat st;
        int r;

        if (!store_id_valid(e->id) || store_find(s, e->id) || !store_label_valid(e->label ?: ""))
                return -EINVAL;
        image = store_image_path(s, e->id);
        if (!image)
                return -ENOMEM;
        if (lstat(tmp_image_path, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (chown(tmp_image_path, e->owner, (gid_t)-1) < 0 || chmod(tmp_image_path, 0600) < 0)
                return -errno;
        if (rename(tmp_image_path, image) < 0)
                return -errno;

        copy.size = (uint64_t)st.st_size;
        copy.label = strdup(e->label ?: "");
        copy.exe = strdup(e->exe ?: "");
        copy.cmdline = strdup(e->cmdline ?: "");
        if (!copy.label || !copy.exe || !copy.cmdline) {
                store_entry_done(&copy);
                (void)unlink(image);
                return -ENOMEM;
        }
        r = entry_to_file(s, &copy);
        if (r >= 0)
                r = store_append(s, &copy);
        if (r < 0) {
                store_entry_done(&copy);
                (void)unlink(image);
                return r;
        }
        (void)fsync(s->dir_fd);
        qsort(s->entries, s->n_entries, sizeof(StoreEntry), entry_cmp);
        return 0;
}

int store_delete(Store *s, const char *id)
{
        char name[64];
        size_t i;

        if (!store_id_valid(id))
                return -EINVAL;
        for (i = 0; i < s->n_entries; i++)
                if (streq(s->entries[i].id, id))
                        break;
        if (i == s->n_entries)
                return -ENOENT;

        /* The record goes first: an image without a record is debris store_open() ignores. */
        snprintf(name, sizeof(name), "%s.json", id);
        if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                return -errno;
        snprintf(name, sizeof(name), "%s.lsnap", id);
        (void)unlinkat(s->dir_fd, name, 0);

        store_entry_done(&s->entries[i]);
        memmove(&s->entries[i], &s->entries[i + 1], (s->n_entries - i - 1) * sizeof(StoreEntry));
        s->n_entries--;
        return 0;
}

int store_apply_retention(Store *s, unsigned max_per_user, uint64_t max_age_sec, uint64_t now_realtime_usec,
                          void (*removed)(void *userdata, const char *id), void *userdata)
{
        /* Entries are sorted oldest first: walk from the newest, counting per owner. */
        for (size_t i = s->n_entries; i > 0; i--) {
                StoreEntry *e = &s->entries[i - 1];
                unsigned newer = 0;
                bool old = max_age_sec > 0 && now_realtime_usec > e->time_usec &&
                           now_realtime_usec - e->time_usec > max_age_sec * 1000000ULL;

                for (size_t j = i; j < s->n_entries; j++)
                        if (s->entries[j].owner == e->owner)
                                newer++;
                if (old || (max_per_user > 0 && newer >= max_per_user)) {
                        char id[STORE_ID_LEN + 1];
                        int r;

                        memcpy(id, e->id, sizeof(id));
                        if (removed)
                                removed(userdata, id);
                        r = store_delete(s, id);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

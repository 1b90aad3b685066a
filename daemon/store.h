/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The checkpoint store: one directory (mode 0700, owned by root) holding, per checkpoint, the image
 * ID.lsnap and its record ID.json, both mode 0600 and owned by the user who asked for the checkpoint.
 * IDs are 16 lowercase hex digits drawn from getrandom(); nothing a caller sends is ever used as a path.
 * Both files are written under temporary names and renamed, the image first, so a record on disk always
 * has its image, and a crash leaves at most a stray temporary file that store_open() removes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_ID_LEN 16
#define STORE_LABEL_MAX 128

typedef struct StoreEntry {
        char id[STORE_ID_LEN + 1];
        uid_t owner;
        char *label;      /* may be empty, never NULL */
        pid_t pid;
        char *exe;        /* may be empty */
        char *cmdline;    /* space-joined, may be empty */
        uint64_t time_usec; /* CLOCK_REALTIME of the snapshot instant */
        uint64_t size;    /* image bytes */
        uint64_t freeze_us;
} StoreEntry;

typedef struct Store Store;

/* Opens (creating it 0700 if missing) the store at dir and loads every record. Records whose image is
 * missing, unreadable records and temporary files are removed. */
int store_open(const char *dir, Store **ret, char *err, size_t errlen);
Store *store_free(Store *s);

const char *store_dir(Store *s);

/* True if id has the form of a store id (16 lowercase hex digits). */
bool store_id_valid(const char *id);
/* True if label is acceptable: at most STORE_LABEL_MAX bytes of valid UTF-8, no control characters,
 * no '/'. */
bool store_label_valid(const char *label);

/* Makes a new unique id and the temporary path a worker writes the image to (inside the store). */
int store_new_id(Store *s, char ret_id[STORE_ID_LEN + 1], char **ret_tmp_image_path);

/* Adds a checkpoint whose image a worker wrote at tmp_image_path: chowns both files to e->owner,
 * renames the image to ID.lsnap and writes ID.json. e->id must come from store_new_id(). */
int store_add(Store *s, const StoreEntry *e, const char *tmp_image_path);

/* Lookups. Returned entries are owned by the store. */
size_t store_n_entries(Store *s);
const StoreEntry *store_entry(Store *s, size_t i);
const StoreEntry *store_find(Store *s, const char *id);

/* Path of an entry's image (malloc'ed). */
char *store_image_path(Store *s, const char *id);

/* Removes a checkpoint: both files and the entry. -ENOENT if unknown. */
int store_delete(Store *s, const char *id);

/* Applies retention: keeps at most max_per_user (0: unlimited) newest checkpoints per user, and none
 * older than max_age_sec (0: forever) at now_usec. Calls removed() for each id removed, before removal. */
int store_apply_retention(Store *s, unsigned max_per_user, uint64_t max_age_sec, uint64_t now_realtime_usec,
                          void (*removed)(void *userdata, const char *id), void *userdata);

void store_entry_done(StoreEntry *e);

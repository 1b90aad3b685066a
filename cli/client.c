/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The verbs that talk to livesnapd over the system bus: checkpoint, list, show, delete, jobs, cancel. */

#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "progress.h"
#include "util.h"
#include "verbs.h"

#define BUS_NAME "org.livesnap1"
#define OBJ_PATH "/org/livesnap1"
#define IFACE_MANAGER "org.livesnap1.Manager"
#define IFACE_JOB "org.livesnap1.Job"

static int bus_connect(sd_bus **ret)
{
        sd_bus *bus = NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0) {
                log_error("cannot connect to the system bus: %s", strerror(-r));
                return r;
        }
        /* Is anyone serving? Say so plainly rather than with a D-Bus error name. */
        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetNameOwner", NULL, NULL, "s", BUS_NAME);
        if (r < 0) {
                /* Activation may still start it; try a harmless call. */
                r = sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL,
                                       NULL);
                if (r < 0) {
                        log_error("livesnapd is not running (no %s on the system bus); start it with "
                                  "'systemctl start livesnapd', or use 'livesnap dump' without the daemon",
                                  BUS_NAME);
                        sd_bus_unref(bus);
                        return -ESRCH;
                }
        }
        *ret = bus;
        return 0;
}

static int bus_error_exit(const sd_bus_error *error, int r, const char *what)
{
        log_error("%s: %s", what, error && error->message ? error->message : strerror(-r));
        if (error && error->name && (streq(error->name, "org.livesnap1.Error.InvalidArgument") ||
                                     streq(error->name, "org.freedesktop.DBus.Error.InvalidArgs")))
                return EXIT_USAGE;
        return EXIT_FAILED;
}

static const char *format_time(char *buf, size_t len, uint64_t usec)
{
        time_t t = (time_t)(usec / 1000000);
        struct tm tm;

        localtime_r(&t, &tm);
        strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
        return buf;
}

typedef struct Waiter {
        const char *job_path;
        bool done;
        char *result, *checkpoint_id, *error, *details;
        ProgressBar *bar;
} Waiter;

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Waiter *w = userdata;
        const char *path, *result, *id, *err, *details;
        uint32_t job;

        if (sd_bus_message_read(m, "uossss", &job, &path, &result, &id, &err, &details) < 0)
                return 0;
        if (!streq(path, w->job_path))
                return 0;
        w->done = true;
        w->result = strdup(result);
        w->checkpoint_id = strdup(id);
        w->error = strdup(err);
        w->details = strdup(details);
        return 0;
}

static int on_job_changed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Waiter *w = userdata;
        sd_bus *bus = sd_bus_message_get_bus(m);
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint64_t done, total;

        if (sd_bus_get_property(bus, BUS_NAME, w->job_path, IFACE_JOB, "Progress", &e, &reply, "(tt)") >= 0 &&
            sd_bus_message_read(reply, "(tt)", &done, &total) >= 0)
                progress_update(w->bar, done, total);
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
        return 0;
}

int verb_checkpoint(int argc, char *argv[])
{
        enum { ARG_LABEL = 0x100, ARG_WAIT, ARG_JSON, ARG_UNIT };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "unit", required_argument, NULL, ARG_UNIT },
                { "label", required_argument, NULL, ARG_LABEL },
                { "wait", no_argument, NULL, ARG_WAIT },
                { "json", no_argument, NULL, ARG_JSON },
                {},
        };
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus *bus = NULL;
        const char *label = NULL, *path, *unit = NULL;
        bool wait = false, json = false;
        Waiter w = {};
        uint32_t job;
        uint64_t v;
        int c, r, ret = EXIT_FAILED;

        optind = 0;
        while ((c = verb_getopt(argc, argv, "h", options)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: livesnap checkpoint PID [--label LABEL] [--wait] [--json]\n"
                               "       livesnap checkpoint --unit NAME.service [--label LABEL] [--wait] [--json]\n\n"
                               "Ask livesnapd to take a checkpoint of PID, or of a systemd service's main\n"
                               "process. Prints the job; with --wait, follows it to the end and prints the\n"
                               "checkpoint.\n");
                        return EXIT_OK;
                case ARG_LABEL:
                        label = optarg;
                        break;
                case ARG_UNIT:
                        unit = optarg;
                        break;
                case ARG_WAIT:
                        wait = true;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                default:
                        return EXIT_USAGE;
                }
        if (optind + (unit ? 0 : 1) != argc) {
                log_error(unit ? "checkpoint: --unit takes no PID" :
                                 "checkpoint: expected one PID or --unit NAME (see 'livesnap checkpoint --help')");
                return EXIT_USAGE;
        }
        if (!unit && (parse_u64(argv[optind], &v) < 0 || v == 0 || v > INT_MAX)) {
                log_error("checkpoint: invalid PID '%s'", argv[optind]);
                return EXIT_USAGE;
        }
        /* livesnapd judges labels; but sd-bus cannot even send one that is not UTF-8. */
        if (label && !utf8_is_valid(label)) {
                log_error("checkpoint: invalid label: not valid UTF-8");
                return EXIT_USAGE;
        }

        if (bus_connect(&bus) < 0)
                return EXIT_FAILED;

        if (wait) {
                /* Subscribe before the call so the end of a quick job is not missed. */
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, OBJ_PATH, IFACE_MANAGER, "JobRemoved", on_job_removed,
                                        &w);
                if (r < 0)
                        goto out;
        }

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, OBJ_PATH, IFACE_MANAGER,
                                           unit ? "CheckpointUnit" : "Checkpoint");
        if (r >= 0)
                r = unit ? sd_bus_message_append(m, "s", unit) : sd_bus_message_append(m, "u", (uint32_t)v);
        if (r >= 0)
                r = label ? sd_bus_message_append(m, "a{sv}", 1, "label", "s", label) :
                            sd_bus_message_append(m, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0) {
                ret = bus_error_exit(&error, r, "checkpoint failed");
                goto out;
        }
        r = sd_bus_message_read(reply, "uo", &job, &path);
        if (r < 0)
                goto out;

        if (!wait) {
                if (json)
                        printf("{\"job\":%" PRIu32 ",\"path\":\"%s\"}\n", job, path);
                else
                        printf("Job %" PRIu32 " started (%s); follow it with 'livesnap jobs'\n", job, path);
                ret = EXIT_OK;
                goto out;
        }

        w.job_path = path;
        w.bar = progress_new("Saving", !json);
        (void)sd_bus_match_signal(bus, NULL, BUS_NAME, path, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                  on_job_changed, &w);
        while (!w.done) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        break;
                if (r == 0)
                        (void)sd_bus_wait(bus, 500000);
        }
        w.bar = progress_free(w.bar);
        if (!w.done) {
                log_error("lost the connection to livesnapd while waiting for job %" PRIu32, job);
                goto out;
        }

        if (!streq(w.result, "done")) {
                if (unit)
                        log_error("checkpoint of %s %s: %s", unit, w.result, w.error);
                else
                        log_error("checkpoint of PID %" PRIu64 " %s: %s", v, w.result, w.error);
                if (json) {
                        json_object *o = json_object_new_object();

                        json_object_object_add(o, "job", json_object_new_int64(job));
                        json_object_object_add(o, "result", json_object_new_string(w.result));
                        json_object_object_add(o, "error", json_object_new_string(w.error));
                        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                }
                goto out;
        }
        if (json) {
                json_object *o = json_tokener_parse(w.details);
                if (!o)
                        o = json_object_new_object();
                json_object_object_add(o, "id", json_object_new_string(w.checkpoint_id));
                json_object_object_add(o, "job", json_object_new_int64(job));
                json_object_object_add(o, "pid", json_object_new_int64((int64_t)v));
                json_object_object_del(o, "ok");
                json_object_object_del(o, "errno");
                json_object_object_del(o, "error");
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        } else if (unit)
                printf("Checkpoint %s of %s taken (job %" PRIu32 ")\n", w.checkpoint_id, unit, job);
        else
                printf("Checkpoint %s of PID %" PRIu64 " taken (job %" PRIu32 ")\n", w.checkpoint_id, v, job);
        ret = EXIT_OK;

out:
        free(w.result);
        free(w.checkpoint_id);
        free(w.error);
        free(w.details);
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return ret;
}

int parse_verb_args(int argc, char *argv[], const char *usage, int n_args, bool *ret_json)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, 'j' },
                {},
        };
        int c;

        optind = 0;
        while ((c = verb_getopt(argc, argv, "h", options)) >= 0)
                switch (c) {
                case 'h':
                        printf("%s", usage);
                        return -1;
                case 'j':
                        if (!ret_json) {
                                log_error("%s: unknown option '--json' (see 'livesnap %s --help')", argv[0],
                                          argv[0]);
                                return EXIT_USAGE;
                        }
                        *ret_json = true;
                        break;
                default:
                        return EXIT_USAGE;
                }
        if (argc - optind != n_args) {
                log_error("%s: wrong number of arguments (see 'livesnap %s --help')", argv[0], argv[0]);
                return EXIT_USAGE;
        }
        return EXIT_OK;
}

int verb_list(int argc, char *argv[])
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        sd_bus *bus = NULL;
        bool json = false;
        json_object *arr = NULL;
        int r, ret = EXIT_FAILED;

        r = parse_verb_args(argc, argv, "Usage: livesnap list [--json]\n\nList the checkpoints livesnapd keeps "
                                        "for you (root: for everyone).\n",
                            0, &json);
        if (r != EXIT_OK)
                return r < 0 ? EXIT_OK : r;
        if (bus_connect(&bus) < 0)
                return EXIT_FAILED;

        r = sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, IFACE_MANAGER, "ListCheckpoints", &error, &reply, NULL);
        if (r < 0) {
                ret = bus_error_exit(&error, r, "listing checkpoints failed");
                goto out;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(ssuuttto)");
        if (r < 0)
                goto out;
        if (json)
                arr = json_object_new_array();
        else
                printf("%-16s  %-19s  %7s  %6s  %10s  %9s  %s\n", "ID", "TIME", "PID", "OWNER", "SIZE", "FREEZE",
                       "LABEL");
        for (;;) {
                const char *id, *label, *path;
                uint32_t owner, pid;
                uint64_t t, size, freeze;
                char tb[32], sb[32];

                r = sd_bus_message_read(reply, "(ssuuttto)", &id, &label, &owner, &pid, &t, &size, &freeze, &path);
                if (r <= 0)
                        break;
                if (json) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "id", json_object_new_string(id));
                        json_object_object_add(o, "label", json_object_new_string(label));
                        json_object_object_add(o, "owner", json_object_new_int64(owner));
                        json_object_object_add(o, "pid", json_object_new_int64(pid));
                        json_object_object_add(o, "time_usec", json_object_new_uint64(t));
                        json_object_object_add(o, "size", json_object_new_uint64(size));
                        json_object_object_add(o, "freeze_us", json_object_new_uint64(freeze));
                        json_object_array_add(arr, o);
                } else
                        printf("%-16s  %-19s  %7" PRIu32 "  %6" PRIu32 "  %10s  %6.2f ms  %s\n", id,
                               format_time(tb, sizeof(tb), t), pid, owner, format_bytes(sb, sizeof(sb), size),
                               freeze / 1000.0, label);
        }
        if (r < 0)
                goto out;
        if (json)
                printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
        ret = EXIT_OK;
out:
        json_object_put(arr);
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return ret;
}

int verb_show(int argc, char *argv[])
{
        static const struct {
                const char *name, *type;
        } props[] = {
                { "Id", "s" },  { "Label", "s" }, { "Owner", "u" }, { "Pid", "u" },         { "Exe", "s" },
                { "CommandLine", "s" }, { "Time", "t" },  { "Size", "t" },  { "FreezeUSec", "t" },
        };
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        sd_bus *bus = NULL;
        const char *path;
        bool json = false;
        json_object *o = NULL;
        int r, ret = EXIT_FAILED;

        r = parse_verb_args(argc, argv, "Usage: livesnap show ID [--json]\n\nShow one checkpoint livesnapd keeps.\n",
                            1, &json);
        if (r != EXIT_OK)
                return r < 0 ? EXIT_OK : r;
        if (bus_connect(&bus) < 0)
                return EXIT_FAILED;

        r = sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, IFACE_MANAGER, "GetCheckpoint", &error, &reply, "s",
                               argv[optind]);
        if (r < 0) {
                ret = bus_error_exit(&error, r, argv[optind]);
                goto out;
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                goto out;
        o = json_object_new_object();
        for (size_t i = 0; i < ELEMENTSOF(props); i++) {
                sd_bus_message *v = NULL;
                const char *str;
                uint32_t u;
                uint64_t t;

                r = sd_bus_get_property(bus, BUS_NAME, path, "org.livesnap1.Checkpoint", props[i].name, &error, &v,
                                        props[i].type);
                if (r < 0)
                        break;
                if (props[i].type[0] == 's' && sd_bus_message_read(v, "s", &str) >= 0)
                        json_object_object_add(o, props[i].name, json_object_new_string(str));
                else if (props[i].type[0] == 'u' && sd_bus_message_read(v, "u", &u) >= 0)
                        json_object_object_add(o, props[i].name, json_object_new_int64(u));
                else if (props[i].type[0] == 't' && sd_bus_message_read(v, "t", &t) >= 0)
                        json_object_object_add(o, props[i].name, json_object_new_uint64(t));
                sd_bus_message_unref(v);
        }
        if (r < 0 || json_object_object_length(o) == 0) {
                ret = bus_error_exit(&error, r < 0 ? r : -EIO, argv[optind]);
                goto out;
        }
        if (json)
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        else {
                json_object_object_foreach(o, key, val)
                {
                        char tb[32];
                        if (streq(key, "Time"))
                                printf("%12s: %s\n", key, format_time(tb, sizeof(tb), json_object_get_uint64(val)));
                        else
                                printf("%12s: %s\n", key, json_object_get_string(val));
                }
        }
        ret = EXIT_OK;
out:
        json_object_put(o);
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return ret;
}

static int simple_call(int argc, char *argv[], const char *usage, const char *method, bool numeric)
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus = NULL;
        uint64_t v = 0;
        int r;

        r = parse_verb_args(argc, argv, usage, 1, NULL);
        if (r != EXIT_OK)
                return r < 0 ? EXIT_OK : r;
        if (numeric && (parse_u64(argv[optind], &v) < 0 || v > UINT32_MAX)) {
                log_error("%s: invalid job number '%s'", argv[0], argv[optind]);
                return EXIT_USAGE;
        }
        if (bus_connect(&bus) < 0)
                return EXIT_FAILED;
        r = numeric ? sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, IFACE_MANAGER, method, &error, NULL, "u",
                                         (uint32_t)v) :
                      sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, IFACE_MANAGER, method, &error, NULL, "s",
                                         argv[optind]);
        if (r < 0) {
                r = bus_error_exit(&error, r, argv[optind]);
                sd_bus_error_free(&error);
                sd_bus_flush_close_unref(bus);
                return r;
        }
        sd_bus_flush_close_unref(bus);
        return EXIT_OK;
}

int verb_delete(int argc, char *argv[])
{
        return simple_call(argc, argv, "Usage: livesnap delete ID\n\nDelete a checkpoint livesnapd keeps.\n",
                           "Delete", false);
}

int verb_cancel(int argc, char *argv[])
{
        return simple_call(argc, argv, "Usage: livesnap cancel JOB\n\nCancel a running checkpoint job.\n",
                           "CancelJob", true);
}

int verb_jobs(int argc, char *argv[])
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        sd_bus *bus = NULL;
        bool json = false;
        json_object *arr = NULL;
        int r, ret = EXIT_FAILED;

        r = parse_verb_args(argc, argv, "Usage: livesnap jobs [--json]\n\nList running checkpoint jobs.\n", 0,
                            &json);
        if (r != EXIT_OK)
                return r < 0 ? EXIT_OK : r;
        if (bus_connect(&bus) < 0)
                return EXIT_FAILED;
        r = sd_bus_call_method(bus, BUS_NAME, OBJ_PATH, IFACE_MANAGER, "ListJobs", &error, &reply, NULL);
        if (r < 0) {
                ret = bus_error_exit(&error, r, "listing jobs failed");
                goto out;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(usuuttso)");
        if (r < 0)
                goto out;
        if (json)
                arr = json_object_new_array();
        else
                printf("%5s  %-10s  %7s  %6s  %5s  %s\n", "JOB", "STATE", "PID", "OWNER", "DONE", "LABEL");
        for (;;) {
                const char *state, *label, *path;
                uint32_t id, owner, pid;
                uint64_t done, total;

                r = sd_bus_message_read(reply, "(usuuttso)", &id, &state, &owner, &pid, &done, &total, &label,
                                        &path);
                if (r <= 0)
                        break;
                if (json) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "job", json_object_new_int64(id));
                        json_object_object_add(o, "state", json_object_new_string(state));
                        json_object_object_add(o, "owner", json_object_new_int64(owner));
                        json_object_object_add(o, "pid", json_object_new_int64(pid));
                        json_object_object_add(o, "bytes_done", json_object_new_uint64(done));
                        json_object_object_add(o, "bytes_total", json_object_new_uint64(total));
                        json_object_object_add(o, "label", json_object_new_string(label));
                        json_object_array_add(arr, o);
                } else
                        printf("%5" PRIu32 "  %-10s  %7" PRIu32 "  %6" PRIu32 "  %4.0f%%  %s\n", id, state, pid,
                               owner, total ? 100.0 * (double)done / (double)total : 0.0, label);
        }
        if (r < 0)
                goto out;
        if (json)
                printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
        ret = EXIT_OK;
out:
        json_object_put(arr);
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return ret;
}

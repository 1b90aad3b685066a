/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* livesnap: the command line. main() dispatches to a verb; `dump` is here, the readers in their files. */

#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>

#include "livesnap.h"
#include "procfs.h"
#include "progress.h"
#include "util.h"
#include "verbs.h"

static const char *arg_test_stop_at = NULL;

static void help(void)
{
        printf("Usage: livesnap COMMAND [OPTIONS...]\n"
               "\n"
               "Live, point-in-time memory checkpoints of running processes.\n"
               "\n"
               "Commands:\n"
               "  dump PID [-o FILE]     Take a checkpoint of process PID into an image file\n"
               "  info FILE              Show what an image holds\n"
               "  verify FILE            Check an image's structure and checksums\n"
               "  cat FILE ADDR LEN      Write LEN bytes of memory at ADDR, as they were, to stdout\n"
               "  export SOURCE -o FILE  Write a checkpoint as an ELF core file for gdb\n"
               "\n"
               "Through the livesnapd service:\n"
               "  checkpoint PID         Take a checkpoint kept by livesnapd (--wait to follow it)\n"
               "  list                   List your checkpoints\n"
               "  show ID                Show one checkpoint\n"
               "  delete ID              Delete a checkpoint\n"
               "  jobs                   List running checkpoint jobs\n"
               "  cancel JOB             Cancel a job\n"
               "\n"
               "Options:\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "\n"
               "Run 'livesnap COMMAND --help' for a command's options. See livesnap(1).\n");
}

static void dump_help(void)
{
        printf("Usage: livesnap dump PID [OPTIONS...]\n"
               "\n"
               "Take a live, point-in-time checkpoint of process PID. The process is stopped only\n"
               "for a short freeze; its pages are then saved while it runs.\n"
               "\n"
               "Options:\n"
               "  -o --output FILE       Image file to write (default: livesnap-PID.lsnap)\n"
               "     --buffer SIZE       Memory for pages in flight, e.g. 64M (default: 64M);\n"
               "                         when full, the target's writes wait\n"
               "     --rate SIZE         Limit the background copy to SIZE bytes per second\n"
               "                         (the target's write faults are never delayed by it)\n"
               "     --compress[=LEVEL]  Compress page data with zstd (default level: 3)\n"
               "     --json              Print the result as one JSON object\n"
               "     --no-progress       Do not draw a progress bar\n"
               "  -h --help              Show this help\n");
}

void log_error(const char *fmt, ...)
{
        va_list ap;

        fputs("livesnap: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

int verb_getopt(int argc, char *argv[], const char *shortopts, const struct option *longopts)
{
        const char *arg;
        int c;

        opterr = 0;
        c = getopt_long(argc, argv, shortopts, longopts, NULL);
        if (c != '?')
                return c;

        /* A long option leaves optind past itself; a short one may not (its cluster goes on), so it is
         * named by optopt. optopt is 0 for an unknown long option, the option's value for a known one
         * with a missing or unwanted argument. */
        arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
        if (startswith(arg, "--")) {
                size_t len = strcspn(arg, "=");
                bool known = false;

                for (const struct option *o = longopts; o && o->name; o++)
                        if (strlen(o->name) == len - 2 && strncmp(o->name, arg + 2, len - 2) == 0)
                                known = o->val == optopt && optopt != 0;
                if (known || optopt == 0) {
                        log_error("%s: %s '%.*s' (see 'livesnap %s --help')", argv[0],
                                  !known     ? "unknown option"
                                  : arg[len] ? "no value expected for option"
                                             : "missing value for option",
                                  (int)len, arg, argv[0]);
                        return c;
                }
        }
        if (optopt > 0 && optopt < 0x80 && strchr(shortopts, optopt))
                log_error("%s: missing value for option '-%c' (see 'livesnap %s --help')", argv[0], optopt,
                          argv[0]);
        else if (optopt > 0x20 && optopt < 0x7f)
                log_error("%s: unknown option '-%c' (see 'livesnap %s --help')", argv[0], optopt, argv[0]);
        else
                log_error("%s: bad option '%s' (see 'livesnap %s --help')", argv[0], arg, argv[0]);
        return c;
}

typedef struct DumpContext {
        ProgressBar *bar;
} DumpContext;

static void dump_progress(void *userdata, uint64_t done, uint64_t total)
{
        DumpContext *c = userdata;

        progress_update(c->bar, done, total);
}

static void dump_phase(void *userdata, LivesnapPhase p)
{
        /* Test hook: stop ourselves at a known point so a test can kill us there. */
        if (arg_test_stop_at && streq(arg_test_stop_at, livesnap_phase_to_string(p)))
                raise(SIGSTOP);
}

int verb_dump(int argc, char *argv[])
{
        enum { ARG_BUFFER = 0x100, ARG_RATE, ARG_COMPRESS, ARG_JSON, ARG_NO_PROGRESS };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "output", required_argument, NULL, 'o' },
                { "buffer", required_argument, NULL, ARG_BUFFER },
                { "rate", required_argument, NULL, ARG_RATE },
                { "compress", optional_argument, NULL, ARG_COMPRESS },
                { "json", no_argument, NULL, ARG_JSON },
                { "no-progress", no_argument, NULL, ARG_NO_PROGRESS },
                {},
        };
        LivesnapDumpOptions opts = { .buffer_size = LIVESNAP_DEFAULT_BUFFER_SIZE };
        LivesnapDumpResult res;
        DumpContext ctx = {};
        _cleanup_free_ char *default_output = NULL;
        const char *output = NULL;
        bool json = false, progress = true;
        uint64_t v;
        pid_t pid;
        int c, r;

        optind = 0;
        while ((c = verb_getopt(argc, argv, "ho:", options)) >= 0)
                switch (c) {
                case 'h':
                        dump_help();
                        return EXIT_OK;
                case 'o':
                        if (!*optarg) {
                                log_error("dump: empty output file name");
                                return EXIT_USAGE;
                        }
                        output = optarg;
                        break;
                case ARG_BUFFER:
                        if (parse_size(optarg, &v) < 0 || v == 0) {
                                log_error("invalid --buffer size '%s' (expected e.g. 64M)", optarg);
                                return EXIT_USAGE;
                        }
                        opts.buffer_size = v;
                        break;
                case ARG_RATE:
                        if (parse_size(optarg, &v) < 0 || v == 0) {
                                log_error("invalid --rate '%s' (expected bytes per second, e.g. 100M)", optarg);
                                return EXIT_USAGE;
                        }
                        opts.rate_limit = v;
                        break;
                case ARG_COMPRESS:
                        opts.compress_level = 3;
                        if (optarg) {
                                if (parse_u64(optarg, &v) < 0 || v < 1 || v > 19) {
                                        log_error("invalid --compress level '%s' (1-19)", optarg);
                                        return EXIT_USAGE;
                                }
                                opts.compress_level = (int)v;
                        }
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_NO_PROGRESS:
                        progress = false;
                        break;
                default:
                        return EXIT_USAGE;
                }

        if (optind + 1 != argc) {
                log_error(optind >= argc ? "dump: missing PID (see 'livesnap dump --help')" :
                                           "dump: too many arguments");
                return EXIT_USAGE;
        }
        if (parse_u64(argv[optind], &v) < 0 || v == 0 || v > INT_MAX) {
                log_error("dump: invalid PID '%s'", argv[optind]);
                return EXIT_USAGE;
        }
        pid = (pid_t)v;

        if (!output) {
                if (asprintf(&default_output, "livesnap-%d.lsnap", (int)pid) < 0)
                        return EXIT_FAILED;
                output = default_output;
        }

        arg_test_stop_at = getenv("LIVESNAP_TEST_STOP_AT");
        ctx.bar = progress_new("Saving", progress && !json);
        opts.progress = dump_progress;
        opts.phase = dump_phase;
        opts.userdata = &ctx;

        r = livesnap_dump(pid, output, &opts, &res);
        ctx.bar = progress_free(ctx.bar);

        if (r < 0) {
                ProcStatus st;
                char who[64] = "";

                if (proc_status_read(pid, 0, &st) >= 0)
                        snprintf(who, sizeof(who), " (%s)", st.name);
                log_error("Failed to dump PID %d%s: %s", (int)pid, who, res.error);
                if (json) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "pid", json_object_new_int(pid));
                        json_object_object_add(o, "error", json_object_new_string(res.error));
                        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                }
                return EXIT_FAILED;
        }

        if (json) {
                json_object *o = json_object_new_object();

                json_object_object_add(o, "pid", json_object_new_int(pid));
                json_object_object_add(o, "image", json_object_new_string(output));
#define NUM(name) json_object_object_add(o, #name, json_object_new_int64((int64_t)res.name))
                NUM(freeze_us);
                NUM(elapsed_ms);
                NUM(pages_saved);
                NUM(pages_zero);
                NUM(pages_discarded);
                NUM(pages_unsaved);
                NUM(pages_faulted);
                NUM(faults);
                NUM(threads);
                NUM(image_bytes);
                NUM(peak_buffer_bytes);
                NUM(throttle_us);
                NUM(prepare_us);
                NUM(prepare_passes);
                NUM(pages_reprotected);
                NUM(private_pages_early);
                NUM(private_pages_frozen);
#undef NUM
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        } else {
                char a[32], b[32], d[32];

                printf("Checkpoint of PID %d written to %s\n", (int)pid, output);
                printf("  freeze:    %.3f ms (%" PRIu64 " threads)", res.freeze_us / 1000.0, res.threads);
                if (res.prepare_us > 0)
                        printf(", after %.1f ms protecting ahead in %" PRIu64 " passes", res.prepare_us / 1000.0,
                               res.prepare_passes);
                printf("\n");
                printf("  elapsed:   %" PRIu64 " ms\n", res.elapsed_ms);
                printf("  pages:     %" PRIu64 " saved (%s), %" PRIu64 " zero, %" PRIu64 " discarded, %" PRIu64
                       " unsaved\n",
                       res.pages_saved, format_bytes(a, sizeof(a), res.pages_saved * 4096), res.pages_zero,
                       res.pages_discarded, res.pages_unsaved);
                printf("  faults:    %" PRIu64 " served, %" PRIu64 " pages saved on write\n", res.faults,
                       res.pages_faulted);
                printf("  image:     %s, buffer peak %s\n", format_bytes(b, sizeof(b), res.image_bytes),
                       format_bytes(d, sizeof(d), res.peak_buffer_bytes));
                if (res.pages_discarded > 0)
                        printf("  note:      %" PRIu64 " pages were discarded by the target before they could "
                               "be saved; they are marked so in the image\n",
                               res.pages_discarded);
        }
        return EXIT_OK;
}

static int run(int argc, char *argv[])
{
        static const struct {
                const char *name;
                int (*fn)(int argc, char *argv[]);
        } verbs[] = {
                { "dump", verb_dump },
                { "info", verb_info },
                { "verify", verb_verify },
                { "cat", verb_cat },
                { "export", verb_export },
                { "checkpoint", verb_checkpoint },
                { "list", verb_list },
                { "show", verb_show },
                { "delete", verb_delete },
                { "jobs", verb_jobs },
                { "cancel", verb_cancel },
        };

        if (argc < 2) {
                help();
                return EXIT_USAGE;
        }
        if (streq(argv[1], "-h") || streq(argv[1], "--help") || streq(argv[1], "help")) {
                help();
                return EXIT_OK;
        }
        if (streq(argv[1], "--version")) {
                printf("livesnap %s\n", LIVESNAP_VERSION);
                return EXIT_OK;
        }

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(argv[1], verbs[i].name))
                        return verbs[i].fn(argc - 1, argv + 1);

        log_error("unknown command '%s' (see 'livesnap --help')", argv[1]);
        return EXIT_USAGE;
}

int main(int argc, char *argv[])
{
        /* A closed pipe on stdout (livesnap cat | head) is an error to report, not a signal to die of. */
        signal(SIGPIPE, SIG_IGN);
        return run(argc, argv);
}

/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* livesnap export SOURCE --format core|image -o FILE: SOURCE is an image file or, when no such file
 * exists and it has the form of one, the id of a checkpoint livesnapd keeps. */

#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>

#include "core.h"
#include "image.h"
#include "progress.h"
#include "util.h"
#include "verbs.h"

static void export_progress(void *userdata, uint64_t done, uint64_t total)
{
        progress_update(userdata, done, total);
}

static bool looks_like_id(const char *s)
{
        if (strlen(s) != 16)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

/* The output is written under a temporary name in its directory and renamed when complete. */
static int open_output(const char *path, char **ret_tmp)
{
        _cleanup_free_ char *copy = strdup(path), *tmp = NULL;
        int fd;

        if (!copy || asprintf(&tmp, "%s/.%s.XXXXXX", dirname(copy), basename((char *)path)) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        (void)fchmod(fd, 0600);
        *ret_tmp = TAKE_PTR(tmp);
        return fd;
}

static int export_via_daemon(const char *id, const char *format, int fd)
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus = NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0) {
                log_error("cannot connect to the system bus: %s", strerror(-r));
                return EXIT_FAILED;
        }
        r = sd_bus_call_method(bus, "org.livesnap1", "/org/livesnap1", "org.livesnap1.Manager", "Export", &error,
                               NULL, "ssh", id, format, fd);
        if (r < 0) {
                log_error("%s: %s", id, error.message ?: strerror(-r));
                r = error.name && streq(error.name, "org.livesnap1.Error.InvalidArgument") ? EXIT_USAGE :
                                                                                               EXIT_FAILED;
        } else
                r = EXIT_OK;
        sd_bus_error_free(&error);
        sd_bus_flush_close_unref(bus);
        return r;
}

int verb_export(int argc, char *argv[])
{
        enum { ARG_FORMAT = 0x100, ARG_NO_PROGRESS };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "output", required_argument, NULL, 'o' },
                { "no-progress", no_argument, NULL, ARG_NO_PROGRESS },
                {},
        };
        const char *format = "core", *output = NULL, *source;
        _cleanup_free_ char *tmp = NULL;
        char err[512] = "";
        bool progress = true;
        struct stat st;
        int c, fd, r, ret = EXIT_FAILED;

        optind = 0;
        while ((c = verb_getopt(argc, argv, "ho:", options)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: livesnap export SOURCE [--format core|image] -o FILE\n\n"
                               "Write a checkpoint as an ELF core file (the default) that gdb and elfutils\n"
                               "read, or as an image. SOURCE is an image file, or the id of a checkpoint\n"
                               "livesnapd keeps.\n");
                        return EXIT_OK;
                case ARG_FORMAT:
                        format = optarg;
                        break;
                case 'o':
                        output = optarg;
                        break;
                case ARG_NO_PROGRESS:
                        progress = false;
                        break;
                default:
                        return EXIT_USAGE;
                }
        if (!streq(format, "core") && !streq(format, "image")) {
                log_error("export: unknown format '%s' (expected core or image)", format);
                return EXIT_USAGE;
        }
        if (optind + 1 != argc || !output || !*output) {
                log_error("export: expected SOURCE and -o FILE (see 'livesnap export --help')");
                return EXIT_USAGE;
        }
        source = argv[optind];

        fd = open_output(output, &tmp);
        if (fd < 0) {
                log_error("%s: cannot create: %s", output, strerror(-fd));
                return EXIT_FAILED;
        }

        if (stat(source, &st) < 0 && errno == ENOENT && looks_like_id(source))
                ret = export_via_daemon(source, format, fd);
        else if (streq(format, "image")) {
                _cleanup_close_ int in = -EBADF;
                ImageReader *rd = NULL;

                /* Check it is an image before copying it (and before opening it: open() of a FIFO
                 * would wait for a writer; image_open() refuses what is not a regular file). */
                r = image_open(source, &rd, err, sizeof(err));
                image_close(rd);
                if (r >= 0)
                        in = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                if (r < 0 || in < 0) {
                        log_error("%s: %s", source, err[0] ? err : strerror(in < 0 ? errno : -r));
                        ret = r == -EBADMSG || r == -EPROTONOSUPPORT ? EXIT_BAD_IMAGE : EXIT_FAILED;
                } else {
                        ret = EXIT_OK;
                        for (;;) {
                                char buf[1 << 16];
                                ssize_t n = read(in, buf, sizeof(buf));
                                if (n == 0)
                                        break;
                                if (n < 0 || write(fd, buf, (size_t)n) != n) {
                                        log_error("%s: copying failed: %m", output);
                                        ret = EXIT_FAILED;
                                        break;
                                }
                        }
                }
        } else {
                ImageReader *rd = NULL;
                ProgressBar *bar;

                r = image_open(source, &rd, err, sizeof(err));
                if (r < 0) {
                        log_error("%s: %s", source, err[0] ? err : strerror(-r));
                        ret = r == -EBADMSG || r == -EPROTONOSUPPORT ? EXIT_BAD_IMAGE : EXIT_FAILED;
                } else {
                        bar = progress_new("Exporting", progress);
                        r = core_write(rd, fd, export_progress, bar, err, sizeof(err));
                        progress_free(bar);
                        if (r < 0) {
                                log_error("%s: %s", output, err);
                                ret = r == -EBADMSG ? EXIT_BAD_IMAGE : EXIT_FAILED;
                        } else
                                ret = EXIT_OK;
                        image_close(rd);
                }
        }

        if (ret == EXIT_OK && (fsync(fd) < 0 || rename(tmp, output) < 0)) {
                log_error("%s: %m", output);
                ret = EXIT_FAILED;
        }
        if (ret != EXIT_OK)
                (void)unlink(tmp);
        safe_close(fd);
        return ret;
}

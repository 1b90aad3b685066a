# livesnap build. `make` builds the CLI and the library; `make check` builds and runs every test.
# BUILD=dir puts every output under dir (default build/), so several builds can live side by side.

BUILD ?= build
PREFIX ?= /usr
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man

CC ?= cc
PKG_CONFIG ?= pkg-config
PKGS := json-c libxxhash libzstd

CFLAGS ?= -O2 -g
WARNINGS := -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral -Werror=implicit-function-declaration
VERSION := 0.1
BASE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -DLIVESNAP_VERSION=\"$(VERSION)\" -fPIC -fvisibility=hidden -pthread $(WARNINGS) -Ilib \
	$(shell $(PKG_CONFIG) --cflags $(PKGS))
LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS)) -pthread

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS))
CLI_SRCS := $(wildcard cli/*.c)
CLI_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRCS))
# livesnapd's modules (everything in daemon/ but its main) also go into an archive the unit tests link.
DAEMON_SRCS := $(filter-out daemon/livesnapd.c,$(wildcard daemon/*.c))
DAEMON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(DAEMON_SRCS))
# sandbox.c: the daemon's own capabilities and seccomp filter.
DAEMON_LIBS := $(shell $(PKG_CONFIG) --libs libseccomp libcap)

UNIT_SRCS := $(wildcard tests/test-*.c)
UNIT_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
VICTIM_SRCS := $(wildcard tests/victims/*.c)
VICTIM_BINS := $(patsubst tests/victims/%.c,$(BUILD)/tests/victims/%,$(VICTIM_SRCS))

all: $(BUILD)/livesnap $(BUILD)/livesnapd $(BUILD)/liblivesnap.so $(BUILD)/liblivesnap.a

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/liblivesnap.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/liblivesnap.so: $(LIB_OBJS) lib/liblivesnap.sym
	$(CC) -shared -Wl,-soname,liblivesnap.so.0 -Wl,--version-script=lib/liblivesnap.sym \
		-Wl,--no-undefined $(CFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJS) $(LIBS)

$(BUILD)/libdaemon.a: $(DAEMON_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/livesnapd: $(BUILD)/daemon/livesnapd.o $(BUILD)/libdaemon.a $(BUILD)/liblivesnap.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) $(DAEMON_LIBS) $(shell $(PKG_CONFIG) --libs libsystemd)

$(BUILD)/livesnap: $(CLI_OBJS) $(BUILD)/liblivesnap.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(BUILD)/liblivesnap.a $(LIBS) $(shell $(PKG_CONFIG) --libs libsystemd)

# Unit tests use cmocka and link the static library (internal API).
$(BUILD)/tests/test-%: tests/test-%.c $(BUILD)/libdaemon.a $(BUILD)/liblivesnap.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -Idaemon -DTOP_SRCDIR=\"$(abspath .)\" $(CFLAGS) -o $@ $< $(BUILD)/libdaemon.a $(BUILD)/liblivesnap.a $(LIBS) $(DAEMON_LIBS) \
		$(shell $(PKG_CONFIG) --cflags --libs cmocka)

# Victims are standalone programs, built with -O1 -g so gdb and the checks see real code.
$(BUILD)/tests/victims/%: tests/victims/%.c tests/victims/victim.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE -O1 -g -pthread -Wall -Wextra -Wno-unused-parameter -o $@ $< -pthread

# The unit tests once more under AddressSanitizer and UndefinedBehaviorSanitizer, built from source with
# the library (no shared objects with the plain build), and the fuzz targets' replay over their corpus.
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_BINS := $(patsubst tests/test-%.c,$(BUILD)/tests/test-asan-%,$(UNIT_SRCS))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz-*.c)
FUZZ_REPLAY_BINS := $(patsubst tests/fuzz/fuzz-%.c,$(BUILD)/tests/test-replay-%,$(FUZZ_SRCS))
# daemon/options.c decodes D-Bus messages: whatever links daemon/*.c from source needs libsystemd.
SYSTEMD_LIBS := $(shell $(PKG_CONFIG) --libs libsystemd)

# The CLI under the same sanitizers, from its own objects under $(BUILD)/asan/ (none shared with the plain
# build), for tests/integration/asan-victims.sh.
ASAN_CLI_OBJS := $(patsubst %.c,$(BUILD)/asan/%.o,$(CLI_SRCS) $(LIB_SRCS))

$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_FLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/asan/livesnap: $(ASAN_CLI_OBJS)
	$(CC) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) $(SYSTEMD_LIBS)

-include $(ASAN_CLI_OBJS:.o=.d)

$(BUILD)/tests/test-asan-%: tests/test-%.c $(LIB_SRCS) $(DAEMON_SRCS) $(wildcard lib/*.h daemon/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -Idaemon -DTOP_SRCDIR=\"$(abspath .)\" $(SAN_FLAGS) -o $@ $< $(LIB_SRCS) $(DAEMON_SRCS) $(LIBS) $(DAEMON_LIBS) $(SYSTEMD_LIBS) $(shell $(PKG_CONFIG) --cflags --libs cmocka)

$(BUILD)/tests/test-replay-%: tests/fuzz/fuzz-%.c tests/fuzz/replay.c $(LIB_SRCS) $(DAEMON_SRCS) $(wildcard lib/*.h daemon/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -Idaemon $(SAN_FLAGS) -DCORPUS_DIR=\"$(abspath tests/fuzz/corpus-$*)\" -o $@ \
		$< tests/fuzz/replay.c $(LIB_SRCS) $(DAEMON_SRCS) $(LIBS) $(DAEMON_LIBS) $(SYSTEMD_LIBS)

# libFuzzer (clang): `make fuzz FUZZ_SECONDS=300` runs each target, adding what it finds to the corpus.
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz/fuzz-%: tests/fuzz/fuzz-%.c $(LIB_SRCS) $(DAEMON_SRCS) $(wildcard lib/*.h daemon/*.h)
	@mkdir -p $(dir $@)
	clang $(BASE_CFLAGS) -Idaemon -O1 -g -fsanitize=fuzzer,address,undefined \
		-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -o $@ $< $(LIB_SRCS) $(DAEMON_SRCS) $(LIBS) $(DAEMON_LIBS) $(SYSTEMD_LIBS)

$(BUILD)/fuzz/gen-seed: tests/fuzz/gen-seed.c $(BUILD)/liblivesnap.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/liblivesnap.a $(LIBS)

fuzz: $(patsubst tests/fuzz/fuzz-%.c,$(BUILD)/fuzz/fuzz-%,$(FUZZ_SRCS)) $(BUILD)/fuzz/gen-seed
	$(BUILD)/fuzz/gen-seed tests/fuzz/corpus-image
	for f in $(patsubst tests/fuzz/fuzz-%.c,%,$(FUZZ_SRCS)); do \
		$(BUILD)/fuzz/fuzz-$$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 tests/fuzz/corpus-$$f || exit 1; \
	done

tests: all units $(UNIT_BINS) $(VICTIM_BINS) $(SAN_BINS) $(FUZZ_REPLAY_BINS) $(BUILD)/asan/livesnap

check: tests
	BUILD=$(abspath $(BUILD)) bash tests/run.sh

# Not part of `make check`: boots systemd as PID 1 in a container with livesnap installed and checks
# the checkpoint timer of a service (tests/system/nspawn-timer.sh; root, systemd-nspawn, about a minute).
check-system: all units $(BUILD)/tests/victims/victim-sweep
	BUILD=$(abspath $(BUILD)) timeout --kill-after=30 900 bash tests/system/nspawn-timer.sh

UNITDIR ?= $(PREFIX)/lib/systemd/system
DBUSPOLICYDIR ?= $(PREFIX)/share/dbus-1/system.d
DBUSSERVICEDIR ?= $(PREFIX)/share/dbus-1/system-services
DOCDIR ?= $(PREFIX)/share/doc/livesnap
SYSCONFDIR ?= /etc
UNITS := livesnapd.service livesnapd-spawner.service livesnapd-spawner.socket livesnap-checkpoint@.service \
	livesnap-checkpoint@.timer
MANPAGES := $(wildcard man/*.[0-9])

# Units with their paths filled in, for installing and for verifying.
$(BUILD)/systemd/%: systemd/% Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' $< >$@

units: $(addprefix $(BUILD)/systemd/,$(UNITS))

install: all units
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(DBUSPOLICYDIR) $(DESTDIR)$(DBUSSERVICEDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/livesnap $(DESTDIR)$(BINDIR)/livesnap
	install -m 0755 $(BUILD)/livesnapd $(DESTDIR)$(SBINDIR)/livesnapd
	install -m 0755 $(BUILD)/liblivesnap.so $(DESTDIR)$(LIBDIR)/liblivesnap.so.0
	ln -sf liblivesnap.so.0 $(DESTDIR)$(LIBDIR)/liblivesnap.so
	install -m 0644 lib/livesnap.h $(DESTDIR)$(INCLUDEDIR)/livesnap.h
	install -m 0644 $(addprefix $(BUILD)/systemd/,$(UNITS)) $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/org.livesnap1.conf $(DESTDIR)$(DBUSPOLICYDIR)/org.livesnap1.conf
	install -m 0644 systemd/org.livesnap1.service $(DESTDIR)$(DBUSSERVICEDIR)/org.livesnap1.service
	install -m 0644 config.example.json $(DESTDIR)$(DOCDIR)/livesnap.json.example
	for m in $(MANPAGES); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/livesnap $(DESTDIR)$(SBINDIR)/livesnapd \
		$(DESTDIR)$(LIBDIR)/liblivesnap.so.0 $(DESTDIR)$(LIBDIR)/liblivesnap.so \
		$(DESTDIR)$(INCLUDEDIR)/livesnap.h $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
		$(DESTDIR)$(DBUSPOLICYDIR)/org.livesnap1.conf $(DESTDIR)$(DBUSSERVICEDIR)/org.livesnap1.service \
		$(DESTDIR)$(DOCDIR)/livesnap.json.example
	for m in $(MANPAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m##*/}; done
	-rmdir $(DESTDIR)$(DOCDIR)

format-check:
	@clang-format --dry-run -Werror $(LIB_SRCS) $(CLI_SRCS) lib/*.h

clean:
	rm -rf $(BUILD)

.PHONY: all tests check check-system clean format-check install uninstall fuzz units

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(BUILD)/daemon/livesnapd.d

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

UNIT_SRCS := $(wildcard tests/test-*.c)
UNIT_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
VICTIM_SRCS := $(wildcard tests/victims/*.c)
VICTIM_BINS := $(patsubst tests/victims/%.c,$(BUILD)/tests/victims/%,$(VICTIM_SRCS))

all: $(BUILD)/livesnap $(BUILD)/liblivesnap.so $(BUILD)/liblivesnap.a

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/liblivesnap.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/liblivesnap.so: $(LIB_OBJS) lib/liblivesnap.sym
	$(CC) -shared -Wl,-soname,liblivesnap.so.0 -Wl,--version-script=lib/liblivesnap.sym \
		-Wl,--no-undefined $(CFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJS) $(LIBS)

$(BUILD)/livesnap: $(CLI_OBJS) $(BUILD)/liblivesnap.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(BUILD)/liblivesnap.a $(LIBS)

# Unit tests use cmocka and link the static library (internal API).
$(BUILD)/tests/test-%: tests/test-%.c $(BUILD)/liblivesnap.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/liblivesnap.a $(LIBS) \
		$(shell $(PKG_CONFIG) --cflags --libs cmocka)

# Victims are standalone programs, built with -O1 -g so gdb and the checks see real code.
$(BUILD)/tests/victims/%: tests/victims/%.c tests/victims/victim.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE -O1 -g -pthread -Wall -Wextra -Wno-unused-parameter -o $@ $< -pthread

tests: all $(UNIT_BINS) $(VICTIM_BINS)

check: tests
	BUILD=$(abspath $(BUILD)) bash tests/run.sh

format-check:
	@clang-format --dry-run -Werror $(LIB_SRCS) $(CLI_SRCS) lib/*.h

clean:
	rm -rf $(BUILD)

.PHONY: all tests check clean format-check install uninstall

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d)

# Build, test and benchmark entry points. `make` builds everything; `make test` installs what is
# missing, builds, and runs every test; `make demo` shows what is built; `make bench` measures.
CC ?= gcc
CLANG ?= clang
BUILD := build
XML_CFLAGS = $(shell pkg-config --cflags libxml-2.0 2>/dev/null || echo -I/usr/include/libxml2)
XML_LIBS = $(shell pkg-config --libs libxml-2.0 2>/dev/null || echo -lxml2)
# libxml2 is loaded at run time, on first use (ploop/lib/xml.c); only its headers are needed here.
LIBS = -luring
WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(XML_CFLAGS) $(FUSE_CFLAGS)
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

PLOOP_LIB_SRCS := $(wildcard ploop/lib/*.c) common/errmsg.c common/openfile.c common/mountinfo.c
PLOOP_CLI_SRCS := $(wildcard ploop/cli/*.c)
PLOOPD_SRCS := $(wildcard ploop/server/*.c)
FUSE_CFLAGS = $(shell pkg-config --cflags fuse3 2>/dev/null || echo -I/usr/include/fuse3)
FUSE_LIBS = $(shell pkg-config --libs fuse3 2>/dev/null || echo -lfuse3)
PLOOP_HDRS := common/errmsg.h common/mountinfo.h common/openfile.h ploop/ploop.h ploop/ploop_format.h ploop/lib/internal.h ploop/lib/xml.h ploop/server/server.h \
	ploop/server/loop.h
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_COMMON := tests/unit/harness.c tests/unit/faultio.c
UNIT_HDRS := tests/unit/harness.h tests/unit/faultio.h

LIB_OBJS := $(PLOOP_LIB_SRCS:%.c=$(BUILD)/%.o)
SAN_LIB_OBJS := $(PLOOP_LIB_SRCS:%.c=$(BUILD)/san/%.o)

# Components beyond ploop/ add their rules in COMPONENT/build.mk: binaries to COMPONENT_BINS (built
# by `make`), anything `make test` needs beyond them to TEST_PREREQS.
.DEFAULT_GOAL := all
COMPONENT_BINS :=
TEST_PREREQS :=
-include $(sort $(wildcard */build.mk))

.PHONY: all deps test unit-test integration-test fuzz fuzz-build bench demo clean
all: $(BUILD)/bin/ploop $(BUILD)/bin/ploopd $(BUILD)/san/bin/ploop $(BUILD)/bin/ploop-io $(BUILD)/unit-tests $(BUILD)/san/unit-tests $(BUILD)/bin/mkcorrupt $(BUILD)/bin/fsync-writer \
	$(COMPONENT_BINS)

deps:
	@./scripts/deps.sh

$(BUILD)/%.o: %.c $(PLOOP_HDRS) $(UNIT_HDRS) ploop/cli/cli.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.c $(PLOOP_HDRS) $(UNIT_HDRS) ploop/cli/cli.h
	@mkdir -p $(dir $@)
	$(CC) $(SAN_FLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(XML_CFLAGS) $(FUSE_CFLAGS) -c $< -o $@

$(BUILD)/libploop.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/san/libploop.a: $(SAN_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bin/ploop: $(PLOOP_CLI_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libploop.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/ploopd: $(PLOOPD_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libploop.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -pthread -o $@ $^ $(LIBS) $(FUSE_LIBS)

# The tool built with AddressSanitizer + UBSan: the bad-input tests run it.
$(BUILD)/san/bin/ploop: $(PLOOP_CLI_SRCS:%.c=$(BUILD)/san/%.o) $(BUILD)/san/libploop.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_FLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/ploop-io: $(BUILD)/tests/tools/ploop-io.o $(BUILD)/libploop.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/mkcorrupt: tests/tools/mkcorrupt.c ploop/ploop_format.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $<

$(BUILD)/bin/fsync-writer: tests/tools/fsync-writer.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -pthread -o $@ $<

$(BUILD)/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/%.o) $(UNIT_COMMON:%.c=$(BUILD)/%.o) $(BUILD)/libploop.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/san/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/san/%.o) $(UNIT_COMMON:%.c=$(BUILD)/san/%.o) $(BUILD)/san/libploop.a
	$(CC) $(SAN_FLAGS) -o $@ $^ $(LIBS)

# ---- fuzzing (clang libFuzzer) ----
FUZZ_TARGETS := fuzz_delta fuzz_descriptor
FUZZ_SECONDS ?= 60
fuzz-build: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(PLOOP_LIB_SRCS) $(PLOOP_HDRS) tests/fuzz/memio.h
	@mkdir -p $(dir $@)
	$(CLANG) -g -O1 -fsanitize=fuzzer,address,undefined $(WARN) -std=gnu11 -D_GNU_SOURCE $(XML_CFLAGS) \
		-o $@ $< $(PLOOP_LIB_SRCS) $(LIBS)
fuzz: deps fuzz-build
	@for t in $(FUZZ_TARGETS); do tests/fuzz/run.sh $(BUILD)/fuzz/$$t $(FUZZ_SECONDS) || exit 1; done

# ---- tests, demo, bench ----
# deps first (it installs the headers the build needs), then the build on every CPU.
NPROC := $(shell nproc 2>/dev/null || echo 1)
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all fuzz-build $(TEST_PREREQS)
	@tests/run

unit-test: all
	@$(BUILD)/unit-tests && $(BUILD)/san/unit-tests

bench: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@tests/bench/run.sh

demo: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@./scripts/demo.sh

clean:
	rm -rf $(BUILD)

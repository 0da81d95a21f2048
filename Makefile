# licproxy - see README.md. `make run` and `make test` are the two commands.

PKGS      = lmdb libcrypto libssl libevent msgpack yaml-0.1 \
            jansson libseccomp libcurl
BUILD     = build
# The one version: binary, `licproxy version`, .deb and .rpm (checked
# against packaging/debian/changelog and packaging/rpm/licproxy.spec).
VERSION  := $(shell cat VERSION)

CC       ?= cc
OPT      ?= -O2
override CFLAGS += -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wshadow \
            -Wno-missing-field-initializers \
            -D_GNU_SOURCE -DLICPROXY_VERSION='"$(VERSION)"' \
            -Icommon -Istore -Iworker -Iserver -I$(BUILD)/gen
ifeq ($(SANITIZE),1)
OPT       = -O1
override CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address,undefined
BUILD     = build-san
endif
# The library again for the fuzz targets (clang, coverage for libFuzzer).
FUZZ_BUILD = build/fuzz
ifeq ($(FUZZ),1)
CC        = clang
OPT       = -O1
override CFLAGS += -fsanitize=fuzzer-no-link,address,undefined \
            -fno-omit-frame-pointer
BUILD     = $(FUZZ_BUILD)
endif
# Recursive (=) so pkg-config runs after `deps` has installed what is missing.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

SRCS      = $(wildcard common/*.c store/*.c worker/*.c server/*.c)
LIBSRCS   = $(filter-out server/main.c,$(SRCS))
LIBOBJS   = $(LIBSRCS:%.c=$(BUILD)/obj/%.o)
UNITSRCS  = $(wildcard tests/unit/test_*.c)
UNITBINS  = $(UNITSRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZSRCS  = $(wildcard tests/fuzz/fuzz_*.c)
FUZZBINS  = $(FUZZSRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)

.PHONY: all deps build test unit integration run clean bench bench-usage fuzz \
        fuzz-build valgrind screenshots soak
.PHONY: deb rpm package-test test-packages

all: deps
	@$(MAKE) --no-print-directory build

deps:
	@./packaging/deps.sh

build: $(BUILD)/licproxy

$(BUILD)/licproxy: $(BUILD)/obj/server/main.o $(BUILD)/liblicproxy.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/obj/server/main.o: VERSION

$(BUILD)/liblicproxy.a: $(LIBOBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

# The dashboard is one self-contained page, compiled in as a C string.
$(BUILD)/gen/dashboard.inc: worker/dashboard.html
	@mkdir -p $(dir $@)
	sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$$/\\n"/' $< > $@

$(BUILD)/obj/worker/status.o: $(BUILD)/gen/dashboard.inc

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/liblicproxy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/liblicproxy.a \
	    $(PKG_LIBS) $$(pkg-config --libs cmocka) -lm

# The integration tests' syscall injector (ptrace; test_sandbox_roles,
# test_hostile_ipc), found next to the binary they run, in $(BUILD)/tests.
# Not part of `build` (the packages): x86_64 only, and a test tool.
SYSINJECT = $(BUILD)/tests/sysinject
test integration valgrind: $(SYSINJECT)
$(SYSINJECT): tests/tools/sysinject.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

test: deps
	@$(MAKE) --no-print-directory build $(UNITBINS)
	@$(MAKE) --no-print-directory fuzz-build
	@BUILD=$(BUILD) FUZZ_BUILD=$(FUZZ_BUILD) ./tests/run.sh

unit: deps
	@$(MAKE) --no-print-directory $(UNITBINS)
	@BUILD=$(BUILD) ./tests/run.sh unit

integration: all
	@BUILD=$(BUILD) ./tests/run.sh integration

run: all
	@./packaging/demo.sh

bench: all
	@./bench/run.sh $(BENCH_ARGS)

bench-usage: all
	@./bench/usage.sh

# Mixed load, kill -9 and upstream outages for SOAK_SECONDS (not in `test`).
SOAK_SECONDS ?= 600
soak: all
	@SOAK_SECONDS=$(SOAK_SECONDS) LICPROXY=$(CURDIR)/$(BUILD)/licproxy \
	    python3 tests/soak/soak.py

# Coverage-guided fuzzing of the parsers that see outside bytes
# (clang/libFuzzer, tests/fuzz/README.md). FUZZ_SECONDS per target, each
# started from its committed corpus; any crash, leak or timeout fails.
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) ./tests/fuzz/run.sh $(FUZZ_SECONDS)

fuzz-build:
	@$(MAKE) --no-print-directory FUZZ=1 $(FUZZBINS)

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/liblicproxy.a
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	    $(FUZZ_BUILD)/liblicproxy.a $(PKG_LIBS) -lm

# The integration tests named below with every licproxy process under
# valgrind memcheck (children too): an invalid access or a definite leak
# in any process fails its test (lp.py reads the reports from the log).
# --vgdb=no: valgrind would mknod its gdb FIFOs in every child, which the
# master's seccomp filter (inherited) refuses.
VALGRIND_TESTS ?= test_smoke test_hostile_ipc test_usage test_authority
VALGRIND = valgrind -q --error-exitcode=99 --leak-check=full \
           --errors-for-leak-kinds=definite --show-leak-kinds=definite \
           --trace-children=yes --num-callers=30 --vgdb=no
valgrind: all
	@command -v valgrind >/dev/null || \
	    apt-get install -y --no-install-recommends valgrind >/dev/null
	@LICPROXY_WRAP="$(VALGRIND)" LICPROXY=$(CURDIR)/$(BUILD)/licproxy \
	    /usr/bin/python3 tests/integration/run.py $(VALGRIND_TESTS) | \
	    tee $(BUILD)/valgrind.out
	@tail -n 1 $(BUILD)/valgrind.out | grep -q ' 0 failed$$'

# docs/dashboard-*.png, taken by the dashboard test from the real page.
screenshots: all
	@LICPROXY_SCREENSHOTS=$(CURDIR)/docs LICPROXY=$(CURDIR)/$(BUILD)/licproxy \
	    /usr/bin/python3 tests/integration/run.py test_dashboard | tail -n 1 | \
	    grep -q '^integration: 1 passed, 0 failed$$'
# Packages, each built from a clean copy of the tree (packaging/build.sh);
# written to dist/.
deb rpm: deps
	@./packaging/build.sh $@

# Builds both packages and installs, upgrades, removes and purges the .deb
# on this machine (as root; see tests/integration/test_packages.py). The
# same tests run in `make test`.
package-test test-packages: all
	@./packaging/build.sh tools
	@LICPROXY=$(CURDIR)/$(BUILD)/licproxy \
	    /usr/bin/python3 tests/integration/run.py test_packages

clean:
	rm -rf build build-san dist

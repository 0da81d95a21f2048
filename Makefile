# licproxy - see README.md. `make run` and `make test` are the two commands.

PKGS      = lmdb libcrypto libssl libevent libevent_openssl msgpack yaml-0.1 \
            jansson libseccomp
BUILD     = build
VERSION   = 0.1.0

CC       ?= cc
OPT      ?= -O2
override CFLAGS += -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wshadow \
            -Wno-missing-field-initializers \
            -D_GNU_SOURCE -DLICPROXY_VERSION='"$(VERSION)"' \
            -Icommon -Istore -Iworker -Iserver
ifeq ($(SANITIZE),1)
OPT       = -O1
override CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address,undefined
BUILD     = build-san
endif
# Recursive (=) so pkg-config runs after `deps` has installed what is missing.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

SRCS      = $(wildcard common/*.c store/*.c worker/*.c server/*.c)
LIBSRCS   = $(filter-out server/main.c,$(SRCS))
LIBOBJS   = $(LIBSRCS:%.c=$(BUILD)/obj/%.o)
UNITSRCS  = $(wildcard tests/unit/test_*.c)
UNITBINS  = $(UNITSRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps build test unit integration run clean bench bench-usage fuzz \
        soak

all: deps
	@$(MAKE) --no-print-directory build

deps:
	@./packaging/deps.sh

build: $(BUILD)/licproxy

$(BUILD)/licproxy: $(BUILD)/obj/server/main.o $(BUILD)/liblicproxy.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/liblicproxy.a: $(LIBOBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/liblicproxy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/liblicproxy.a \
	    $(PKG_LIBS) $$(pkg-config --libs cmocka) -lm

test: deps
	@$(MAKE) --no-print-directory build $(UNITBINS)
	@BUILD=$(BUILD) ./tests/run.sh

unit: deps
	@$(MAKE) --no-print-directory $(UNITBINS)
	@BUILD=$(BUILD) ./tests/run.sh unit

integration: all
	@BUILD=$(BUILD) ./tests/run.sh integration

run: all
	@./packaging/demo.sh

bench: all
	@./bench/run.sh

bench-usage: all
	@./bench/usage.sh

# Mixed load, kill -9 and upstream outages for SOAK_SECONDS (not in `test`).
SOAK_SECONDS ?= 600
soak: all
	@SOAK_SECONDS=$(SOAK_SECONDS) LICPROXY=$(CURDIR)/$(BUILD)/licproxy \
	    python3 tests/soak/soak.py

# Coverage-guided fuzzing of the parsers that face peers (clang/libFuzzer).
# FUZZ_SECONDS per target; crashes land in build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz: deps
	@command -v clang >/dev/null || apt-get install -y --no-install-recommends clang >/dev/null
	@mkdir -p build/fuzz
	@for t in $(FUZZ_TARGETS); do \
	    clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
	        -Icommon -Istore -Iworker tests/fuzz/$$t.c \
	        $$(sed -n 's/^ \* Sources: //p' tests/fuzz/$$t.c) \
	        $$(pkg-config --libs $(PKGS)) -lm -o build/fuzz/$$t || exit 1; \
	    echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	    (cd build/fuzz && ./$$t -max_total_time=$(FUZZ_SECONDS) \
	        -print_final_stats=1 2>&1 | tail -n 5) || exit 1; \
	done

clean:
	rm -rf build build-san

# loraserve - plain GNU Make. Variants are variables: OPT, SAN, BUILD.
OPT   ?= -O2 -g
SAN   ?=
BUILD ?= build
PKGS  := libmicrohttpd libuv libcjson sqlite3 libpcre2-8 libutf8proc openssl libxxhash openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS = -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) -Wall -Wextra -Werror -Iinclude $(PKG_CFLAGS) -MMD -MP
LDLIBS = $(PKG_LIBS) -lpthread -lm
SHARED ?= ../shared
export LORASERVE_SHARED := $(abspath $(SHARED))
MODULES := engine adapters retrieval server
LIB   := $(patsubst %.c,$(BUILD)/%.o,$(filter-out server/main.c,$(wildcard $(MODULES:=/*.c))))
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

# SIMD variants: only these files are compiled for newer CPUs; the engine
# calls into them only after checking the CPU at run time.
$(BUILD)/engine/simd_avx2.o:   CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/engine/simd_avx512.o: CFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512dq \
                                         -mavx512vnni -mavx512bf16 -mavx2 -mfma -mf16c

all: $(BUILD)/loraserve

$(BUILD)/loraserve: $(BUILD)/server/main.o $(LIB)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

# The end-to-end tests' npm packages (the openai client), installed once from the lock file.
node_modules:
	npm ci --no-audit --no-fund

test: all $(TESTS) | node_modules
	@fail=0; for t in $(TESTS); do echo "== $$t"; LORASERVE_BIN=$(BUILD)/loraserve $$t || fail=1; done; \
	if [ -d tests/e2e ]; then LORASERVE_BIN=$(BUILD)/loraserve node --test tests/e2e/ || fail=1; fi; \
	exit $$fail

# LORASERVE_SANITIZER tells the end-to-end tests that memory figures (RSS) are the
# sanitizer's, not the program's.
asan:
	LORASERVE_SANITIZER=address $(MAKE) BUILD=build/asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

tsan:
	LORASERVE_SANITIZER=thread $(MAKE) BUILD=build/tsan OPT="-O1 -g" SAN="-fsanitize=thread" test

# Installs the Debian packages the build (deploy/debian-packages) and the tests
# (deploy/debian-packages-test: fuzzing, the corpus, nginx for the TLS proxy test) need.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
deps:
	$(SUDO) apt-get update -qq
	cat deploy/debian-packages deploy/debian-packages-test | \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive xargs apt-get install -y -qq --no-install-recommends

bench: all $(BUILD)/tests/bench $(BUILD)/tests/bench_retrieval
	$(BUILD)/tests/bench $(BUILD)/loraserve
	node tests/bench_server.mjs $(BUILD)/loraserve $${LORASERVE_BENCH_DIR:-build/bench}/synth-110m-q8_0.gguf
	node tests/bench_adapters.mjs $(BUILD)/loraserve $${LORASERVE_BENCH_DIR:-build/bench}/synth-110m-q8_0.gguf
	$(BUILD)/tests/bench_retrieval $${LORASERVE_BENCH_DIR:-build/bench}/synth-110m-q8_0.gguf $${LORASERVE_BENCH_DIR:-build/bench} \
	  $(SHARED)/models/embed/bert-tiny-random-f16.gguf
	node tests/bench_summary.mjs $${LORASERVE_BENCH_DIR:-build/bench}

clean:
	rm -rf build

.SECONDARY:
.PHONY: all test asan tsan bench clean deps
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- soak
# A soak test bounded in time (tests/soak.mjs): 64 clients for SOAK_SECONDS
# against the built server, then its pass criteria; soak-asan runs it against
# the ASan + UBSan build (make asan's flags and directory).
SOAK_SECONDS ?= 60
soak: all | node_modules
	LORASERVE_BIN=$(BUILD)/loraserve SOAK_SECONDS=$(SOAK_SECONDS) node tests/soak.mjs
soak-asan: | node_modules
	$(MAKE) BUILD=build/asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" build/asan/loraserve
	LORASERVE_SANITIZER=address LORASERVE_BIN=build/asan/loraserve SOAK_SECONDS=$(SOAK_SECONDS) node tests/soak.mjs
.PHONY: soak soak-asan

# ---- fuzzing
# libFuzzer targets (tests/fuzz/fuzz_*.c, one per parser of untrusted bytes) with ASan + UBSan.
# fuzz-build compiles the library with clang and coverage in build/fuzz and links each
# target there; fuzz then replays tests/fuzz/regress/, fuzzes each target for FUZZ_SECONDS
# on a copy of its seed corpus, FUZZ_JOBS at a time, and fails on any crash, leak or
# timeout, naming the reproducer (tests/fuzz/run.sh).
FUZZ_SECONDS ?= 30
FUZZ_JOBS    ?= 2
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz-build:
	$(MAKE) -j2 BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="-O1 -g" \
	  SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)
# Made only by fuzz-build's make, where BUILD is $(FUZZ_BUILD) and CC is clang.
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(LIB)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)
.PHONY: fuzz fuzz-build

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

# Installs the Debian packages the build and tests need (sudo when not root).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive xargs -a deploy/debian-packages apt-get install -y -qq --no-install-recommends

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

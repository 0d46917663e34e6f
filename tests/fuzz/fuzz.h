/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz/ share: where the
 * fixtures are, the base model some targets check inputs against (opened once
 * and kept for the process: libFuzzer never returns from its loop), and
 * FUZZ_CHECK, which aborts so that libFuzzer keeps the input as a crash.
 *
 * Each target is one program, built by `make fuzz-build` with clang and
 * -fsanitize=fuzzer,address,undefined; `build/fuzz/fuzz_X FILE...` replays
 * inputs, `build/fuzz/fuzz_X DIR` fuzzes with DIR as its corpus.
 */
#ifndef LORASERVE_FUZZ_H
#define LORASERVE_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* An invariant the code under test promised: a failure is a bug, kept as a crash. */
#define FUZZ_CHECK(c) do { \
        if (!(c)) { \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
            abort(); \
        } \
    } while (0)

/* The fixtures folder: $LORASERVE_SHARED (the Makefile sets it), or ../shared. */
static inline const char *
fuzz_shared(void)
{
    const char *d = getenv("LORASERVE_SHARED");
    return d && *d ? d : "../shared";
}

/* $LORASERVE_SHARED/rel in buf. */
static inline const char *
fuzz_path(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/%s", fuzz_shared(), rel);
    return buf;
}

/* A fixture the target cannot run without: exits with a message if it is missing. */
static inline void
fuzz_need(int rc, const char *what, const char *err)
{
    if (rc < 0) {
        fprintf(stderr, "fuzz: cannot open %s: %s (set LORASERVE_SHARED)\n", what, err);
        exit(1);
    }
}

/* The kjv-tiny base model (llama SPM vocabulary, n_ctx 256), opened once. */
static inline struct engine_model *
fuzz_model(void)
{
    static struct engine_model *m;
    if (m == NULL) {
        char path[1024], err[256] = "";
        fuzz_path(path, sizeof(path), "models/kjv-tiny-q8_0.gguf");
        fuzz_need(engine_model_open(path, &m, err, sizeof(err)), path, err);
    }
    return m;
}

/* A copy of p[0..n) in a block of exactly n bytes, so ASan sees a read past n. */
static inline char *
fuzz_dup(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);
    FUZZ_CHECK(q != NULL);
    if (n > 0)
        memcpy(q, p, n);
    return q;
}

/*
 * A one-line error message, as every parser promises for bad input. With
 * FUZZ_VERBOSE set, it is printed: what a replayed input was refused for.
 */
static inline int
fuzz_one_line(const char *err)
{
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "refused: %s\n", err);
    return err[0] != '\0' && strchr(err, '\n') == NULL;
}

#endif

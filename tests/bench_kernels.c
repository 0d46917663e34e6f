/*
 * bench_kernels.c - throughput of engine__matmul (not a test; run by hand).
 *
 *   bench_kernels [variant]        matvec GB/s per type and shape, 1 and 2 threads
 *   bench_kernels model [variant]  matmuls of a 110M LLaMA (decode and prefill)
 *   bench_kernels batch [variant]  time per row for m = 1..128, gemv vs sgemm path
 *
 * "cold" rotates through copies of the weights totalling > 256 MB, so they
 * stream from memory as a real model's do; "hot" reuses one copy (cache).
 * BENCH_HUGE=1 puts the weights in 2 MB pages (fewer TLB misses).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../engine/kernels.h"

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const enum gguf_ttype types[] = {
    GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16, GGUF_T_Q8_0, GGUF_T_Q4_0, GGUF_T_Q4_K, GGUF_T_Q6_K,
};
static const char *const type_names[] = { "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k" };
#define N_TYPES 7

/* n_rows random rows of type t, quantized once and copied. */
static char *
make_weights(enum gguf_ttype t, int64_t n_out, int64_t k, int copies)
{
    size_t rs = engine__row_size(t, k), bytes = rs * (size_t)n_out;
    size_t total = (bytes * copies + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    char *w = aligned_alloc(2u << 20, total);
    if (getenv("BENCH_HUGE")) /* 2 MB pages: what a model copied into anonymous memory gets */
        madvise(w, total, MADV_HUGEPAGE);
    float *row = malloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < n_out; i++) {
        for (int64_t j = 0; j < k; j++)
            row[j] = 0.02f * (float)((rand() / (double)RAND_MAX) * 2 - 1);
        engine__quantize_row(t, row, w + i * rs, k);
    }
    for (int c = 1; c < copies; c++)
        memcpy(w + c * bytes, w, bytes);
    free(row);
    return w;
}

static float *
make_x(int64_t n)
{
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((rand() / (double)RAND_MAX) * 2 - 1);
    return x;
}

/* Seconds per matmul, best of a few rounds. */
static double
time_matmul(struct engine_pool *pool, enum gguf_ttype t, const char *w, int copies,
            int64_t n_out, int64_t k, const float *x, int64_t m, float *y)
{
    size_t bytes = engine__row_size(t, k) * (size_t)n_out;
    int reps = 1;
    double best = 1e9;
    for (int round = 0; round < 12; round++) {
        double t0 = now();
        for (int i = 0; i < reps; i++)
            engine__matmul(pool, t, w + (size_t)(i % copies) * bytes, n_out, k, x, m, y);
        double dt = (now() - t0) / reps;
        best = dt < best ? dt : best;
        if (dt * reps < 0.05)
            reps = (int)(0.1 / dt) + 1, round--;
    }
    return best;
}

static const char *only_type; /* BENCH_TYPE=q8_0 limits the runs to one type */

static bool
skip_type(int ti)
{
    return only_type != NULL && strcmp(only_type, type_names[ti]) != 0;
}

static void
bench_matvec(void)
{
    static const int64_t shapes[][2] = { { 2048, 768 }, { 768, 2048 }, { 32000, 768 } };
    printf("matvec (m = 1), kernels %s: GB/s of weights (GFLOP/s)\n", engine__kernels_name());
    printf("%-5s %-11s %18s %18s %18s %18s\n", "type", "n_out x k", "cold 1t", "cold 2t",
           "hot 1t", "hot 2t");
    for (int ti = 0; ti < N_TYPES; ti++) {
        for (int s = 0; s < 3 && !skip_type(ti); s++) {
            int64_t n_out = shapes[s][0], k = shapes[s][1];
            size_t bytes = engine__row_size(types[ti], k) * (size_t)n_out;
            int copies = (int)((256u << 20) / bytes) + 1;
            char *w = make_weights(types[ti], n_out, k, copies);
            float *x = make_x(k), *y = malloc((size_t)n_out * sizeof(float));
            printf("%-5s %5lldx%-5lld", type_names[ti], (long long)n_out, (long long)k);
            for (int hot = 0; hot < 2; hot++) {
                for (int nth = 1; nth <= 2; nth++) {
                    struct engine_pool *pool = NULL;
                    engine__pool_new(nth, &pool);
                    double dt = time_matmul(pool, types[ti], w, hot ? 1 : copies, n_out, k, x,
                                            1, y);
                    printf("   %6.1f (%6.1f)", bytes / dt * 1e-9, 2.0 * n_out * k / dt * 1e-9);
                    engine__pool_free(pool);
                }
            }
            printf("\n");
            free(w), free(x), free(y);
        }
    }
}

/* The matmuls of one forward pass of a 110M LLaMA over m rows. */
struct model {
    enum gguf_ttype t;
    char *layer[12][7];
    char *output;
};

static const int64_t lshape[7][2] = {
    { 768, 768 }, { 768, 768 }, { 768, 768 }, { 768, 768 }, /* wq wk wv wo */
    { 2048, 768 }, { 2048, 768 }, { 768, 2048 },            /* gate up down */
};

static double
forward_matmuls(struct engine_pool *pool, struct model *md, const float *x, int64_t m, float *y,
                bool logits)
{
    double t0 = now();
    for (int l = 0; l < 12; l++)
        for (int j = 0; j < 7; j++)
            engine__matmul(pool, md->t, md->layer[l][j], lshape[j][0], lshape[j][1], x, m, y);
    if (logits) /* the output layer, for the last row only as in prefill */
        engine__matmul(pool, md->t, md->output, 32000, 768, x, 1, y);
    return now() - t0;
}

static void
bench_model(void)
{
    printf("110M model matmuls, kernels %s (tok/s; matmuls only)\n", engine__kernels_name());
    float *x = make_x(128 * 2048), *y = malloc(128 * 32000 * sizeof(float));
    for (int ti = 1; ti < N_TYPES; ti++) {
        if (skip_type(ti))
            continue;
        struct model md = { .t = types[ti] };
        size_t total = 0;
        for (int l = 0; l < 12; l++)
            for (int j = 0; j < 7; j++) {
                md.layer[l][j] = make_weights(md.t, lshape[j][0], lshape[j][1], 1);
                total += engine__row_size(md.t, lshape[j][1]) * lshape[j][0];
            }
        md.output = make_weights(md.t, 32000, 768, 1);
        total += engine__row_size(md.t, 768) * 32000;
        printf("%-5s %4.0f MB:", type_names[ti], total / 1e6);
        for (int nth = 1; nth <= 2; nth++) {
            struct engine_pool *pool = NULL;
            engine__pool_new(nth, &pool);
            double dec = 1e9, pre = 1e9;
            for (int r = 0; r < 10; r++) {
                double d = forward_matmuls(pool, &md, x, 1, y, true);
                dec = d < dec ? d : dec;
            }
            for (int r = 0; r < 3; r++) {
                double d = forward_matmuls(pool, &md, x, 128, y, true);
                pre = d < pre ? d : pre;
            }
            printf("  %dt decode %6.1f tok/s (%5.1f GB/s) prefill128 %6.0f tok/s", nth,
                   1 / dec, total / dec * 1e-9, 128 / pre);
            engine__pool_free(pool);
        }
        printf("\n");
        for (int l = 0; l < 12; l++)
            for (int j = 0; j < 7; j++)
                free(md.layer[l][j]);
        free(md.output);
    }
    free(x), free(y);
}

/* The 110M model's prefill matmuls in a loop, for profiling (BENCH_THREADS, default 1). */
static void
bench_prefill(void)
{
    const char *nt = getenv("BENCH_THREADS");
    int nth = nt ? atoi(nt) : 1;
    float *x = make_x(128 * 2048), *y = malloc(128 * 2048 * sizeof(float));
    struct model md = { .t = GGUF_T_F16 };
    for (int ti = 0; ti < N_TYPES; ti++)
        if (only_type && strcmp(only_type, type_names[ti]) == 0)
            md.t = types[ti];
    for (int l = 0; l < 12; l++)
        for (int j = 0; j < 7; j++)
            md.layer[l][j] = make_weights(md.t, lshape[j][0], lshape[j][1], 1);
    struct engine_pool *pool = NULL;
    engine__pool_new(nth, &pool);
    double best = 1e9;
    for (int r = 0; r < 20; r++) {
        double d = forward_matmuls(pool, &md, x, 128, y, false);
        best = d < best ? d : best;
    }
    printf("prefill128 %d threads: %.0f tok/s\n", nth, 128 / best);
    engine__pool_free(pool);
    for (int l = 0; l < 12; l++)
        for (int j = 0; j < 7; j++)
            free(md.layer[l][j]);
    free(x), free(y);
}

static void
bench_batch(void)
{
    static const int64_t ms[] = { 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128 };
    printf("2048x768 and 768x2048, 2 threads, kernels %s: us per row (gemv | sgemm)\n",
           engine__kernels_name());
    struct engine_pool *pool = NULL;
    engine__pool_new(2, &pool);
    float *x = make_x(128 * 2048), *y = malloc(128 * 2048 * sizeof(float));
    for (int ti = 0; ti < N_TYPES; ti++) {
        if (skip_type(ti))
            continue;
        char *w1 = make_weights(types[ti], 2048, 768, 1);
        char *w2 = make_weights(types[ti], 768, 2048, 1);
        printf("%-5s", type_names[ti]);
        for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
            double t[2];
            for (int path = 0; path < 2; path++) {
                engine__matmul_tune(path ? 1 : 1000000);
                t[path] = time_matmul(pool, types[ti], w1, 1, 2048, 768, x, ms[mi], y) +
                          time_matmul(pool, types[ti], w2, 1, 768, 2048, x, ms[mi], y);
            }
            printf(" m%lld %.1f|%.1f", (long long)ms[mi], t[0] / ms[mi] * 1e6,
                   t[1] / ms[mi] * 1e6);
        }
        printf("\n");
        free(w1), free(w2);
    }
    engine__matmul_tune(0);
    engine__pool_free(pool);
    free(x), free(y);
}

int
main(int argc, char **argv)
{
    engine__kernels_init();
    only_type = getenv("BENCH_TYPE");
    const char *mode = argc > 1 ? argv[1] : "matvec";
    const char *variant = argc > 2 ? argv[2] : argc > 1 && strcmp(mode, "model") != 0 &&
                                               strcmp(mode, "batch") != 0 &&
                                               strcmp(mode, "prefill") != 0 ? argv[1] : NULL;
    if (variant && engine__kernels_force(variant) != 0) {
        fprintf(stderr, "unknown or unsupported variant %s\n", variant);
        return 1;
    }
    if (strcmp(mode, "model") == 0)
        bench_model();
    else if (strcmp(mode, "prefill") == 0)
        bench_prefill();
    else if (strcmp(mode, "batch") == 0)
        bench_batch();
    else
        bench_matvec();
    return 0;
}

/*
 * test_kernels.c - tensor types, kernels, matmul and the thread pool.
 *
 * Expected values are computed here from the formats' definitions (bit
 * formulas, hand-packed blocks, double-precision dots), never by calling the
 * code under test a second way. Every SIMD variant the CPU supports is run
 * against the scalar reference.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../engine/kernels.h"
#include "check.h"
#include "testutil.h"

/* ---- Helpers ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double
rng_uniform(void)
{
    return ((rng_next() >> 11) + 0.5) * 0x1p-53;
}

static float
rng_normal(void)
{
    return (float)(sqrt(-2 * log(rng_uniform())) * cos(2 * M_PI * rng_uniform()));
}

static float *
normal_vec(int64_t n, float std)
{
    float *v = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = std * rng_normal();
    return v;
}

static uint32_t
bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float
from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The f16 value of h from its fields, in double. */
static double
f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static const enum gguf_ttype all_types[] = {
    GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16, GGUF_T_Q8_0, GGUF_T_Q4_0, GGUF_T_Q4_K, GGUF_T_Q6_K,
};
#define N_TYPES (int)(sizeof(all_types) / sizeof(all_types[0]))

static const char *const variants[] = { "scalar", "avx2", "avx512" };

static void
restore_best_variant(void)
{
    for (int v = 2; v >= 0; v--)
        if (engine__kernels_force(variants[v]) == 0)
            return;
}

static bool
is_quantized(enum gguf_ttype t)
{
    return t != GGUF_T_F32 && t != GGUF_T_F16 && t != GGUF_T_BF16;
}

/* A quantized copy of n_rows rows of x (k each); caller frees. */
static void *
quantize_rows(enum gguf_ttype t, const float *x, int64_t n_rows, int64_t k)
{
    size_t rs = engine__row_size(t, k);
    char *q = malloc(rs * (size_t)n_rows);
    for (int64_t r = 0; r < n_rows; r++)
        engine__quantize_row(t, x + r * k, q + r * rs, k);
    return q;
}

/*
 * The bound on |vec_dot - exact dot of the stored row with x| that the 8-bit
 * activation allows: each x_i moves by at most half a step of its block
 * (amax / 254), plus float rounding of the sums.
 */
static double
dot_bound(enum gguf_ttype t, const float *w, const float *x, int64_t k)
{
    int64_t blk = t == GGUF_T_Q4_K || t == GGUF_T_Q6_K ? 256 : 32;
    double bound = 0, mag = 0;
    for (int64_t b = 0; b < k; b += blk) {
        double amax = 0;
        for (int64_t i = b; i < b + blk && i < k; i++)
            amax = fmax(amax, fabs(x[i]));
        for (int64_t i = b; i < b + blk && i < k; i++) {
            bound += is_quantized(t) ? fabs(w[i]) * amax / 254 : 0;
            mag += fabs((double)w[i] * x[i]);
        }
    }
    return bound * 1.01 + 1e-5 * mag + 1e-30;
}

/* ---- Half precision --------------------------------------------------- */

static void
test_f16_known_values(void)
{
    CHECK_EQ(engine__f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ(engine__f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ(engine__f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ(engine__f32_to_f16(65519.0f), 0x7bff);           /* below the tie */
    CHECK_EQ(engine__f32_to_f16(65520.0f), 0x7c00);           /* tie rounds to even: inf */
    CHECK_EQ(engine__f32_to_f16(1e10f), 0x7c00);
    CHECK_EQ(engine__f32_to_f16(INFINITY), 0x7c00);
    CHECK_EQ(engine__f32_to_f16(-INFINITY), 0xfc00);
    CHECK_EQ(engine__f32_to_f16(0x1p-14f), 0x0400);           /* smallest normal */
    CHECK_EQ(engine__f32_to_f16(0x1p-24f), 0x0001);           /* smallest subnormal */
    CHECK_EQ(engine__f32_to_f16(1023 * 0x1p-24f), 0x03ff);    /* largest subnormal */
    CHECK_EQ(engine__f32_to_f16(0x1p-25f), 0x0000);           /* tie between 0 and 1: even */
    CHECK_EQ(engine__f32_to_f16(0x1.000002p-25f), 0x0001);    /* just above the tie */
    CHECK_EQ(engine__f32_to_f16(3 * 0x1p-25f), 0x0002);       /* 1.5 units: even */
    CHECK_EQ(engine__f32_to_f16(5 * 0x1p-25f), 0x0002);       /* 2.5 units: even */
    CHECK_EQ(engine__f32_to_f16(-0.0f), 0x8000);
    CHECK_EQ(engine__f32_to_f16(1 + 0x1p-11f), 0x3c00);       /* tie: to even 0x3c00 */
    CHECK_EQ(engine__f32_to_f16(1 + 3 * 0x1p-11f), 0x3c02);   /* tie: to even 0x3c02 */
    CHECK_EQ(engine__f32_to_f16(1 + 0x1p-11f + 0x1p-20f), 0x3c01);
    CHECK_EQ(engine__f32_to_f16(2047 * 0x1p-11f), 0x3bff);    /* largest below 1 */
    CHECK_EQ(engine__f32_to_f16(4095 * 0x1p-12f), 0x3c00);    /* tie: carries into exponent */
    uint16_t nan = engine__f32_to_f16(NAN);
    CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    uint16_t snan = engine__f32_to_f16(from_bits(0x7f800001)); /* payload only in low bits */
    CHECK((snan & 0x7c00) == 0x7c00 && (snan & 0x3ff) != 0);

    CHECK(engine__f16_to_f32(0x3c00) == 1.0f);
    CHECK(engine__f16_to_f32(0x7bff) == 65504.0f);
    CHECK(engine__f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(engine__f16_to_f32(0x7c00) == INFINITY);
    CHECK(engine__f16_to_f32(0xfc00) == -INFINITY);
    CHECK(isnan(engine__f16_to_f32(0x7e00)) && isnan(engine__f16_to_f32(0x7c01)));
    CHECK(bits(engine__f16_to_f32(0x8000)) == 0x80000000u);
}

static void
test_f16_all_values(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = engine__f16_to_f32((uint16_t)h);
        double want = f16_value((uint16_t)h);
        if (isnan(want)) {
            bad += !isnan(f) || !isnan(engine__f16_to_f32(engine__f32_to_f16(f)));
            continue;
        }
        bad += (double)f != want || ((h & 0x8000) != 0) != (signbit(f) != 0);
        bad += engine__f32_to_f16(f) != h;   /* exact round trip */
    }
    CHECK_EQ(bad, 0);
}

/* f32 -> f16 against the compiler's _Float16 conversion (libgcc, round to nearest even). */
static void
test_f16_random_vs_compiler(void)
{
    int bad = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)rng_next();
        if (i % 2) /* half of them near the f16 range, where rounding is interesting */
            u = (u & 0x80000000u) | (0x33000000u + (u % (0x47800000u - 0x33000000u)));
        float f = from_bits(u);
        if (isnan(f))
            continue;
        _Float16 h = (_Float16)f;
        uint16_t want;
        memcpy(&want, &h, 2);
        bad += engine__f32_to_f16(f) != want;
    }
    CHECK_EQ(bad, 0);
}

static void
test_bf16(void)
{
    CHECK_EQ(engine__f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ(engine__f32_to_bf16(-1.0f), 0xbf80);
    CHECK_EQ(engine__f32_to_bf16(from_bits(0x3f808000)), 0x3f80); /* tie: even */
    CHECK_EQ(engine__f32_to_bf16(from_bits(0x3f818000)), 0x3f82); /* tie: even */
    CHECK_EQ(engine__f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    CHECK_EQ(engine__f32_to_bf16(from_bits(0x3f807fff)), 0x3f80);
    CHECK_EQ(engine__f32_to_bf16(INFINITY), 0x7f80);
    CHECK_EQ(engine__f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  /* FLT_MAX rounds to inf */
    uint16_t n1 = engine__f32_to_bf16(from_bits(0x7f800001)), n2 = engine__f32_to_bf16(NAN);
    CHECK((n1 & 0x7f80) == 0x7f80 && (n1 & 0x7f) != 0);
    CHECK((n2 & 0x7f80) == 0x7f80 && (n2 & 0x7f) != 0);
    CHECK(engine__bf16_to_f32(0x3f80) == 1.0f);
    CHECK(engine__bf16_to_f32(0x4049) == from_bits(0x40490000));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = engine__bf16_to_f32((uint16_t)h);
        bad += bits(f) != h << 16;
        if (!isnan(f))
            bad += engine__f32_to_bf16(f) != h;
    }
    CHECK_EQ(bad, 0);
}

/* ---- Hand-built blocks ------------------------------------------------ */

static void
put16(uint8_t *p, uint16_t v)
{
    p[0] = v & 0xff;
    p[1] = v >> 8;
}

static void
test_dequant_q8_0_block(void)
{
    uint8_t blk[34];
    put16(blk, 0x3800); /* d = 0.5 */
    for (int j = 0; j < 32; j++)
        blk[2 + j] = (uint8_t)(int8_t)(j * 8 - 128); /* -128 .. 120 */
    float out[32];
    engine__dequantize_row(GGUF_T_Q8_0, blk, out, 32);
    int bad = 0;
    for (int j = 0; j < 32; j++)
        bad += out[j] != (j * 8 - 128) * 0.5f;
    CHECK_EQ(bad, 0);
}

static void
test_dequant_q4_0_block(void)
{
    uint8_t blk[18];
    put16(blk, 0x3800); /* d = 0.5 */
    for (int j = 0; j < 16; j++)
        blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float out[32];
    engine__dequantize_row(GGUF_T_Q4_0, blk, out, 32);
    int bad = 0;
    for (int j = 0; j < 16; j++) {
        bad += out[j] != (j - 8) * 0.5f;
        bad += out[j + 16] != ((15 - j) - 8) * 0.5f;
    }
    CHECK_EQ(bad, 0);
}

static const int q4k_sc[8] = { 1, 17, 33, 63, 5, 40, 60, 22 };
static const int q4k_mn[8] = { 0, 63, 2, 30, 48, 7, 16, 33 };

/* Packs a Q4_K block from its parts, following the documented bit layout. */
static void
pack_q4_k(uint8_t *blk, uint16_t d, uint16_t dmin, const int *sc, const int *mn, const int *q)
{
    memset(blk, 0, 144);
    put16(blk, d);
    put16(blk + 2, dmin);
    uint8_t *s = blk + 4, *qs = blk + 16;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    for (int e = 0; e < 256; e++) {
        int c = e / 64, p = e % 64;
        qs[32 * c + p % 32] |= (uint8_t)(p < 32 ? q[e] : q[e] << 4);
    }
}

static void
test_dequant_q4_k_block(void)
{
    int q[256];
    for (int e = 0; e < 256; e++)
        q[e] = (e * 7 + 3) % 16;
    uint8_t blk[144];
    pack_q4_k(blk, 0x3c00, 0x3800, q4k_sc, q4k_mn, q); /* d = 1, dmin = 0.5 */
    float out[256];
    engine__dequantize_row(GGUF_T_Q4_K, blk, out, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        bad += out[e] != 1.0f * q4k_sc[e / 32] * q[e] - 0.5f * q4k_mn[e / 32];
    CHECK_EQ(bad, 0);
}

static void
pack_q6_k(uint8_t *blk, uint16_t d, const int *sc, const int *q)
{
    memset(blk, 0, 210);
    uint8_t *ql = blk, *qh = blk + 128;
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
        int li = 64 * h + l + 32 * (quarter & 1);
        ql[li] |= (uint8_t)(quarter < 2 ? q[e] & 15 : (q[e] & 15) << 4);
        qh[32 * h + l] |= (uint8_t)((q[e] >> 4) << (2 * quarter));
    }
    for (int g = 0; g < 16; g++)
        blk[192 + g] = (uint8_t)(int8_t)sc[g];
    put16(blk + 208, d);
}

static void
test_dequant_q6_k_block(void)
{
    int q[256], sc[16];
    for (int e = 0; e < 256; e++)
        q[e] = (e * 5 + 1) % 64;
    for (int g = 0; g < 16; g++)
        sc[g] = g * 17 - 128; /* -128 .. 127 */
    uint8_t blk[210];
    pack_q6_k(blk, 0x3400, sc, q); /* d = 0.25 */
    float out[256];
    engine__dequantize_row(GGUF_T_Q6_K, blk, out, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        bad += out[e] != 0.25f * sc[e / 16] * (q[e] - 32);
    CHECK_EQ(bad, 0);
}

static void
test_dequant_float_types(void)
{
    uint16_t h[3] = { 0x3c00, 0xc400, 0x3555 };   /* 1, -4, 0.333251953125 */
    uint16_t b[3] = { 0x3f80, 0xc080, 0x3eab };   /* 1, -4, 0.333984375 */
    float f[3] = { 1, -4, 0.25f }, out[3];
    engine__dequantize_row(GGUF_T_F16, h, out, 3);
    CHECK(out[0] == 1 && out[1] == -4 && out[2] == 0.333251953125f);
    engine__dequantize_row(GGUF_T_BF16, b, out, 3);
    CHECK(out[0] == 1 && out[1] == -4 && out[2] == 0.333984375f);
    engine__dequantize_row(GGUF_T_F32, f, out, 3);
    CHECK(memcmp(out, f, sizeof(f)) == 0);
}

static void
test_type_traits(void)
{
    CHECK_EQ(engine__row_size(GGUF_T_Q8_0, 64), 68);
    CHECK_EQ(engine__row_size(GGUF_T_Q4_0, 64), 36);
    CHECK_EQ(engine__row_size(GGUF_T_Q4_K, 512), 288);
    CHECK_EQ(engine__row_size(GGUF_T_Q6_K, 512), 420);
    CHECK_EQ(engine__row_size(GGUF_T_F16, 3), 6);
    CHECK_EQ(engine__row_size(GGUF_T_BF16, 3), 6);
    CHECK_EQ(engine__row_size(GGUF_T_F32, 3), 12);
    CHECK(!engine__type_supported(GGUF_T_Q5_K));
    CHECK(!engine__type_supported((enum gguf_ttype)99));
    CHECK(engine__type_quantizable(GGUF_T_Q6_K));
}

/* ---- Quantization quality --------------------------------------------- */

static double
roundtrip_rmse(enum gguf_ttype t, const float *x, int64_t n)
{
    void *q = quantize_rows(t, x, 1, n);
    float *y = malloc((size_t)n * sizeof(float));
    engine__dequantize_row(t, q, y, n);
    double se = 0;
    for (int64_t i = 0; i < n; i++)
        se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    free(q);
    free(y);
    return sqrt(se / n);
}

static void
test_quantize_rmse(void)
{
    const int64_t n = 256 * 64;
    float *x = normal_vec(n, 1.0f);
    double r[GGUF_T_COUNT];
    for (int i = 0; i < N_TYPES; i++)
        r[all_types[i]] = roundtrip_rmse(all_types[i], x, n);
    printf("     rmse/std: f16 %.5f bf16 %.5f q8_0 %.5f q6_k %.5f q4_k %.5f q4_0 %.5f\n",
           r[GGUF_T_F16], r[GGUF_T_BF16], r[GGUF_T_Q8_0], r[GGUF_T_Q6_K], r[GGUF_T_Q4_K],
           r[GGUF_T_Q4_0]);
    CHECK(r[GGUF_T_F32] == 0);
    CHECK(r[GGUF_T_F16] < 3e-4);
    CHECK(r[GGUF_T_BF16] < 3e-3);
    CHECK(r[GGUF_T_Q8_0] < 0.01);
    CHECK(r[GGUF_T_Q6_K] < 0.02);
    CHECK(r[GGUF_T_Q4_K] < 0.075);
    CHECK(r[GGUF_T_Q4_0] < 0.09);
    CHECK(r[GGUF_T_Q6_K] < 0.4 * r[GGUF_T_Q4_K]);
    CHECK(r[GGUF_T_Q4_K] < r[GGUF_T_Q4_0]);
    free(x);
}

/* Zero, constant and tiny rows must come back finite (and zero stays zero). */
static void
test_quantize_degenerate_rows(void)
{
    const float vals[] = { 0.0f, 0.3f, -2.5f, 1e-30f, 7e4f };
    float x[256], y[256];
    for (size_t v = 0; v < sizeof(vals) / sizeof(vals[0]); v++) {
        for (int i = 0; i < 256; i++)
            x[i] = vals[v];
        for (int t = 0; t < N_TYPES; t++) {
            if (all_types[t] == GGUF_T_F16 && vals[v] > 65504)
                continue;
            void *q = quantize_rows(all_types[t], x, 1, 256);
            engine__dequantize_row(all_types[t], q, y, 256);
            int bad = 0;
            for (int i = 0; i < 256; i++)
                bad += !isfinite(y[i]) || fabsf(y[i] - x[i]) > 0.02f * fabsf(x[i]) + 1e-6f;
            if (bad)
                fprintf(stderr, "type %d value %g: %d bad\n", all_types[t], vals[v], bad);
            CHECK_EQ(bad, 0);
            free(q);
        }
    }
}

/* ---- Dot products ----------------------------------------------------- */

/* vec_dot of every type against a double dot of the dequantized row. */
static void
check_vec_dot_type(enum gguf_ttype t, int64_t k)
{
    float *w = normal_vec(k, 0.05f), *x = normal_vec(k, 1.0f), *wd = malloc(k * sizeof(float));
    if (k > 3)
        x[3] = 9; /* an outlier, as real activations have */
    void *q = quantize_rows(t, w, 1, k);
    engine__dequantize_row(t, q, wd, k);
    double want = test_dot(wd, x, k), got = engine__vec_dot(t, k, q, x);
    double bound = dot_bound(t, wd, x, k);
    if (!(fabs(got - want) <= bound))
        fprintf(stderr, "%s type %d k %lld: got %.9g want %.9g bound %.3g\n",
                engine__kernels_name(), t, (long long)k, got, want, bound);
    CHECK(fabs(got - want) <= bound);
    free(w), free(x), free(wd), free(q);
}

static void
test_vec_dot_all_variants(void)
{
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        if (engine__kernels_force(variants[v]) != 0)
            continue;
        for (int t = 0; t < N_TYPES; t++) {
            check_vec_dot_type(all_types[t], 512);
            check_vec_dot_type(all_types[t], 2048);
            if (!is_quantized(all_types[t]))
                for (int64_t k = 1; k < 40; k += 3) /* tails of every length */
                    check_vec_dot_type(all_types[t], k);
        }
    }
    engine__kernels_force("scalar");
    CHECK_STR(engine__kernels_name(), "scalar");
    CHECK_EQ(engine__kernels_force("nope"), -ENOENT);
    restore_best_variant();
}

/*
 * Each SIMD variant against the scalar one on the same rows: the quantized
 * types sum exact integers per block and do the same float arithmetic, so
 * they must agree to the bit; float rows within rounding (lanes sum in
 * another order). Dequantized rows are equal in every variant.
 */
static void
compare_variant(const char *name, enum gguf_ttype t, int64_t k, int64_t n)
{
    float *w = normal_vec(n * k, 0.05f), *x = normal_vec(k, 1.0f);
    float *ws = malloc(n * k * sizeof(float)), *wv = malloc(n * k * sizeof(float));
    char *q = quantize_rows(t, w, n, k);
    size_t rs = engine__row_size(t, k);
    int bad = 0, deq_bad = 0;
    for (int64_t i = 0; i < n; i++) {
        engine__kernels_force("scalar");
        float s = engine__vec_dot(t, k, q + i * rs, x);
        engine__dequantize_row(t, q + i * rs, ws + i * k, k);
        engine__kernels_force(name);
        float v = engine__vec_dot(t, k, q + i * rs, x);
        engine__dequantize_row(t, q + i * rs, wv + i * k, k);
        bool exact = is_quantized(t);
        double mag = 0;
        for (int64_t j = 0; j < k; j++)
            mag += fabs((double)ws[i * k + j] * x[j]);
        bad += exact ? bits(s) != bits(v) : fabs((double)s - v) > 1e-5 * mag;
        deq_bad += memcmp(ws + i * k, wv + i * k, k * sizeof(float)) != 0;
    }
    if (bad || deq_bad)
        fprintf(stderr, "%s type %d: %d dots, %d rows differ from scalar\n", name, t, bad,
                deq_bad);
    CHECK_EQ(bad, 0);
    CHECK_EQ(deq_bad, 0);
    free(w), free(x), free(ws), free(wv), free(q);
}

static void
test_simd_vs_scalar(void)
{
    for (size_t v = 1; v < sizeof(variants) / sizeof(variants[0]); v++) {
        if (engine__kernels_force(variants[v]) != 0) {
            printf("     (%s not supported here)\n", variants[v]);
            continue;
        }
        for (int t = 0; t < N_TYPES; t++)
            compare_variant(variants[v], all_types[t], 768, 16);
        compare_variant(variants[v], GGUF_T_F16, 37, 4);
    }
    restore_best_variant();
}

/* ---- Matmul ----------------------------------------------------------- */

/*
 * One matmul against references, on each path (gemv kernels, f32 GEMM): each
 * result within the activation bound of the double dot of dequantized
 * weights; the gemv path also equals vec_dot to the bit, whatever m.
 */
static int check_matmul_path(struct engine_pool *pool, enum gguf_ttype t, int64_t n_out,
                             int64_t k, int64_t m, bool gemv);

static int
check_matmul(struct engine_pool *pool, enum gguf_ttype t, int64_t n_out, int64_t k, int64_t m)
{
    engine__matmul_tune(INT64_MAX);
    int bad = check_matmul_path(pool, t, n_out, k, m, true);
    engine__matmul_tune(1);
    bad += check_matmul_path(pool, t, n_out, k, m, false);
    engine__matmul_tune(0);
    return bad;
}

static int
check_matmul_path(struct engine_pool *pool, enum gguf_ttype t, int64_t n_out, int64_t k,
                  int64_t m, bool gemv)
{
    float *w = normal_vec(n_out * k, 0.05f), *x = normal_vec(m * k, 1.0f);
    float *wd = malloc(n_out * k * sizeof(float)), *y = malloc((m * n_out + 1) * sizeof(float));
    char *q = quantize_rows(t, w, n_out, k);
    size_t rs = engine__row_size(t, k);
    for (int64_t i = 0; i < n_out; i++)
        engine__dequantize_row(t, q + i * rs, wd + i * k, k);
    y[m * n_out] = 12345.0f; /* sentinel: nothing past the end is written */
    engine__matmul(pool, t, q, n_out, k, x, m, y);
    int bad = 0;
    for (int64_t r = 0; r < m; r++) {
        for (int64_t i = 0; i < n_out; i++) {
            float got = y[r * n_out + i];
            double want = test_dot(wd + i * k, x + r * k, k);
            bad += !(fabs(got - want) <= dot_bound(t, wd + i * k, x + r * k, k) + 1e-5);
            if (gemv)
                bad += bits(got) != bits(engine__vec_dot(t, k, q + i * rs, x + r * k));
        }
    }
    bad += y[m * n_out] != 12345.0f;
    free(w), free(x), free(wd), free(y), free(q);
    return bad;
}

static void
test_matmul_shapes(void)
{
    static const int64_t ms[] = { 1, 2, 3, 7, 16, 33, 128 };
    for (int nth = 1; nth <= 2; nth++) {
        struct engine_pool *pool = NULL;
        CHECK_EQ(engine__pool_new(nth, &pool), 0);
        for (int t = 0; t < N_TYPES; t++) {
            for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
                int bad = check_matmul(pool, all_types[t], 67, 512, ms[mi]);
                if (bad)
                    fprintf(stderr, "%s threads %d type %d m %lld: %d bad\n",
                            engine__kernels_name(), nth, all_types[t], (long long)ms[mi], bad);
                CHECK_EQ(bad, 0);
            }
            if (!is_quantized(all_types[t])) {
                CHECK_EQ(check_matmul(pool, all_types[t], 5, 37, 3), 0);
                CHECK_EQ(check_matmul(pool, all_types[t], 5, 37, 40), 0);
            }
        }
        engine__pool_free(pool);
    }
}

static void
test_matmul_all_variants(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        if (engine__kernels_force(variants[v]) != 0)
            continue;
        for (int t = 0; t < N_TYPES; t++)
            for (int64_t m = 1; m <= 5; m += 4)
                CHECK_EQ(check_matmul(pool, all_types[t], 33, 256, m), 0);
    }
    engine__pool_free(pool);
    test_simd_vs_scalar(); /* leaves the best variant selected */
}

static void
test_matmul_empty(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    float y = 7, x[32] = { 0 };
    uint8_t w[34] = { 0 };
    engine__matmul(pool, GGUF_T_Q8_0, w, 1, 32, x, 0, &y);
    engine__matmul(pool, GGUF_T_Q8_0, w, 0, 32, x, 1, &y);
    CHECK(y == 7);
    CHECK(engine__matmul_scratch(GGUF_T_Q4_K, 4096, 512) >= 4096);
    CHECK_EQ(engine__pool_reserve(pool, 1 << 20), 0);
    engine__pool_free(pool);
}

/*
 * The x16 layout: every variant's matmul on the packed copy equals the row
 * layout's gemv (hence vec_dot and the scalar reference) to the bit, for
 * partial last groups and any m, and writes nothing past y.
 */
static int
check_x16(struct engine_pool *pool, enum gguf_ttype t, int64_t n_out, int64_t k, int64_t m)
{
    float *w = normal_vec(n_out * k, 0.05f), *x = normal_vec(m * k, 1.0f);
    float *y = malloc((m * n_out + 1) * sizeof(float)), *yr = malloc(m * n_out * sizeof(float));
    char *q = quantize_rows(t, w, n_out, k);
    char *p = malloc(engine__x16_size(t, n_out, k));
    engine__x16_pack(t, q, n_out, k, p);
    struct engine_weight wr = { .type = t, .k = k, .n_out = n_out, .data = q };
    struct engine_weight wp = { .type = t, .k = k, .n_out = n_out, .data = p, .x16 = true };
    engine__matmul_tune(INT64_MAX);
    engine__matmul_w(pool, &wr, x, m, yr);
    engine__matmul_tune(0);
    y[m * n_out] = 12345.0f;
    engine__matmul_w(pool, &wp, x, m, y);
    int bad = y[m * n_out] != 12345.0f;
    for (int64_t i = 0; i < m * n_out; i++)
        bad += bits(y[i]) != bits(yr[i]);
    free(w), free(x), free(y), free(yr), free(q), free(p);
    return bad;
}

static void
test_matmul_x16(void)
{
    static const int64_t shapes[][2] = { { 16, 32 }, { 67, 256 }, { 33, 768 }, { 5, 64 } };
    static const int64_t ms[] = { 1, 3, 8, 9, 17, 40 };
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        if (engine__kernels_force(variants[v]) != 0)
            continue;
        for (int q4 = 0; q4 < 2; q4++)
            for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
                for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
                    int bad = check_x16(pool, q4 ? GGUF_T_Q4_0 : GGUF_T_Q8_0, shapes[si][0],
                                        shapes[si][1], ms[mi]);
                    if (bad)
                        fprintf(stderr, "%s x16 %s %lldx%lld m %lld: %d bad\n", variants[v],
                                q4 ? "q4_0" : "q8_0", (long long)shapes[si][0],
                                (long long)shapes[si][1], (long long)ms[mi], bad);
                    CHECK_EQ(bad, 0);
                }
    }
    restore_best_variant();
    CHECK(engine__x16_size(GGUF_T_Q8_0, 17, 64) == 32 * engine__row_size(GGUF_T_Q8_0, 64));
    engine__pool_free(pool);
}

/*
 * F16 panels (p32): within the f16 bound of the double product, the same bits
 * for a row whatever the batch (m = 1..40, 4-group decode tiles included) and
 * whatever the variant (the scalar and AVX2 ones fall back to the references).
 */
static int
check_p32(struct engine_pool *pool, int64_t n_out, int64_t k, const float *want1, float *got1)
{
    float *w = normal_vec(n_out * k, 0.05f), *x = normal_vec(40 * k, 1.0f);
    uint16_t *rows = quantize_rows(GGUF_T_F16, w, n_out, k);
    uint16_t *p = malloc(engine__p32_size(n_out, k));
    engine__p32_pack(rows, n_out, k, p);
    struct engine_weight wp = { .type = GGUF_T_F16, .k = k, .n_out = n_out, .data = p,
                                .p32 = true };
    float *y = malloc((40 * n_out + 1) * sizeof(float)), *y1 = malloc(n_out * sizeof(float));
    int bad = 0;
    engine__matmul_w(pool, &wp, x, 1, y1);
    for (int64_t i = 0; i < n_out; i++) {
        double d = 0, mag = 0;
        for (int64_t kk = 0; kk < k; kk++) {
            double t = (double)engine__f16_to_f32(rows[i * k + kk]) * x[kk];
            d += t;
            mag += fabs(t);
        }
        bad += !(fabs(y1[i] - d) <= 1e-5 * mag + 1e-6);
        if (want1 != NULL)
            bad += bits(y1[i]) != bits(want1[i]);
    }
    if (got1 != NULL)
        memcpy(got1, y1, n_out * sizeof(float));
    static const int64_t ms[] = { 2, 3, 13, 40 };
    for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
        y[ms[mi] * n_out] = 12345.0f;
        engine__matmul_w(pool, &wp, x, ms[mi], y);
        for (int64_t i = 0; i < n_out; i++)
            bad += bits(y[i]) != bits(y1[i]);
        bad += y[ms[mi] * n_out] != 12345.0f;
    }
    free(w), free(x), free(rows), free(p), free(y), free(y1);
    return bad;
}

static void
test_matmul_p32(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    static const int64_t shapes[][2] = { { 256, 64 }, { 200, 96 }, { 32, 768 }, { 7, 32 } };
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int64_t n_out = shapes[si][0], k = shapes[si][1];
        float *best = malloc(n_out * sizeof(float));
        uint64_t seed = rng_state;
        int bad = check_p32(pool, n_out, k, NULL, best);
        for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
            if (engine__kernels_force(variants[v]) != 0)
                continue;
            rng_state = seed; /* the same weights and inputs: the same bits */
            bad += check_p32(pool, n_out, k, best, NULL);
        }
        restore_best_variant();
        if (bad)
            fprintf(stderr, "p32 %lldx%lld: %d bad\n", (long long)n_out, (long long)k, bad);
        CHECK_EQ(bad, 0);
        free(best);
    }
    engine__pool_free(pool);
}

/* Several weights in one call give what separate calls give, on either path. */
static void
test_matmul_n(void)
{
    static const enum gguf_ttype ts[] = { GGUF_T_Q8_0, GGUF_T_Q4_K, GGUF_T_F32 };
    const int64_t k = 512, n_out[] = { 48, 20, 7 };
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    for (int64_t m = 1; m <= 41; m += 20) {
        float *x = normal_vec(m * k, 1.0f), *y[3], *ys[3];
        struct engine_weight w[3];
        const struct engine_weight *wp[3];
        void *q[3];
        for (int i = 0; i < 3; i++) {
            float *f = normal_vec(n_out[i] * k, 0.05f);
            q[i] = quantize_rows(ts[i], f, n_out[i], k);
            free(f);
            w[i] = (struct engine_weight){ .type = ts[i], .k = k, .n_out = n_out[i], .data = q[i] };
            wp[i] = &w[i];
            y[i] = malloc(m * n_out[i] * sizeof(float));
            ys[i] = malloc(m * n_out[i] * sizeof(float));
            engine__matmul_w(pool, &w[i], x, m, ys[i]);
        }
        engine__matmul_n(pool, 3, wp, x, m, y);
        for (int i = 0; i < 3; i++) {
            CHECK(memcmp(y[i], ys[i], m * n_out[i] * sizeof(float)) == 0);
            free(y[i]), free(ys[i]), free(q[i]);
        }
        free(x);
    }
    engine__pool_free(pool);
}

/* ---- Attention kernels ------------------------------------------------ */

/* |got - want| within rel of the magnitude mag (sum of |terms|), for n values. */
static int
count_far(const float *got, const double *want, const double *mag, int n, double rel)
{
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += !(fabs(got[i] - want[i]) <= rel * mag[i] + 1e-30);
    return bad;
}

/*
 * Element i of a cache tile of type kv, as a float; K(t, d) and V(t, d) of
 * tiles of ENGINE_KV_BLOCK positions, as the cache lays them out.
 */
static float
tile_at(const void *tile, size_t i, enum engine_kv_type kv)
{
    return kv == ENGINE_KV_F16 ? engine__f16_to_f32(((const uint16_t *)tile)[i])
                               : ((const float *)tile)[i];
}

static float
tile_k(const void *const *kt, int t, int d, enum engine_kv_type kv)
{
    return tile_at(kt[t / ENGINE_KV_BLOCK], (size_t)d * ENGINE_KV_BLOCK + t % ENGINE_KV_BLOCK,
                   kv);
}

static float
tile_v(const void *const *vt, int t, int d, int hd, enum engine_kv_type kv)
{
    return tile_at(vt[t / ENGINE_KV_BLOCK], (size_t)(t % ENGINE_KV_BLOCK) * hd + d, kv);
}

/* A random tile of hd x ENGINE_KV_BLOCK elements of type kv (stored with the variant's to_f16). */
static void *
random_tile(const struct engine_attn_kernels *A, int hd, enum engine_kv_type kv)
{
    float *f = normal_vec(hd * ENGINE_KV_BLOCK, 1.0f);
    if (kv == ENGINE_KV_F32)
        return f;
    uint16_t *h = malloc(hd * ENGINE_KV_BLOCK * sizeof(uint16_t));
    A->to_f16(f, h, hd * ENGINE_KV_BLOCK, 1);
    for (int i = 0; i < hd * ENGINE_KV_BLOCK; i++)
        if (h[i] != engine__f32_to_f16(f[i]))
            h[0] = 0x7e00; /* to_f16 must round as the reference does: poison the tile */
    free(f);
    return h;
}

static int
check_attn(const struct engine_attn_kernels *A, int hd, int g, int n, enum engine_kv_type kv)
{
    size_t ld = (size_t)n + 5;
    int nb = (n + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    float *q = normal_vec(g * hd, 1.0f), *s = malloc(g * ld * sizeof(float));
    float *o = malloc(g * hd * sizeof(float));
    const void *kt[nb], *vt[nb];
    for (int j = 0; j < nb; j++) { /* tiles out of order in memory, as a block table gives them */
        kt[nb - 1 - j] = random_tile(A, hd, kv);
        vt[nb - 1 - j] = random_tile(A, hd, kv);
    }
    double *want = malloc((g * ld + g * hd) * sizeof(double));
    double *mag = malloc((g * ld + g * hd) * sizeof(double));
    float scale = 1.0f / sqrtf((float)hd), inv[g];
    A->scores[kv](hd, g, n, q, scale, kt, s, ld);
    int bad = 0;
    for (int h = 0; h < g; h++) {
        for (int t = 0; t < n; t++) {
            want[t] = mag[t] = 0;
            for (int d = 0; d < hd; d++) { /* the scaled query as a float, as the kernel has it */
                double p = (double)(q[h * hd + d] * scale) * tile_k(kt, t, d, kv);
                want[t] += p;
                mag[t] += fabs(p);
            }
        }
        bad += count_far(s + h * ld, want, mag, n, 1e-6);
        float *a = s + h * ld, mx = A->max(a, n);
        double sum = 0, wmax = -INFINITY;
        for (int t = 0; t < n; t++)
            wmax = fmax(wmax, a[t]);
        bad += mx != wmax;
        for (int t = 0; t < n; t++) {
            want[t] = exp((double)(a[t] - mx)); /* the kernel's input: the float difference */
            mag[t] = want[t];
            sum += want[t];
        }
        float got = A->exp(a, n, mx);
        bad += count_far(a, want, mag, n, 1e-6);
        bad += !(fabs(got - sum) <= 1e-6 * sum);
        inv[h] = 1.0f / got;
    }
    A->mix[kv](hd, g, n, s, ld, vt, inv, o);
    for (int i = 0; i < g * hd; i++) {
        want[i] = mag[i] = 0;
        for (int t = 0; t < n; t++) {
            double p = (double)s[(i / hd) * ld + t] * tile_v(vt, t, i % hd, hd, kv) * inv[i / hd];
            want[i] += p;
            mag[i] += fabs(p);
        }
    }
    bad += count_far(o, want, mag, g * hd, 1e-6);
    for (int j = 0; j < nb; j++)
        free((void *)kt[j]), free((void *)vt[j]);
    free(q), free(s), free(o), free(want), free(mag);
    return bad;
}

/* silu(g) * u against double, over the whole float range that matters (and beyond). */
static int
check_silu(void (*silu_mul)(float *, const float *, int64_t))
{
    enum { N = 1003 };
    float g[N], u[N];
    for (int i = 0; i < N; i++) {
        g[i] = (float)(-120.0 + 240.0 * i / (N - 1));
        u[i] = (float)(1 + i % 7);
    }
    double want[N];
    for (int i = 0; i < N; i++)
        want[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    silu_mul(g, u, N);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += !(fabs(g[i] - want[i]) <= 4e-7 * fabs(want[i]) + 1e-30); /* e^88 clamps */
    return bad;
}

/* The LoRA B step on B transposed, against double, for ranks and widths with tails. */
static int
check_rank_update(const struct engine_variant *v, int rank, int64_t w)
{
    size_t ldb = (size_t)w + 3;
    float *t = normal_vec(rank, 1.0f), *bt = normal_vec(rank * (int64_t)ldb, 1.0f);
    float *y = normal_vec(w, 1.0f);
    double *want = malloc(w * sizeof(double)), *mag = malloc(w * sizeof(double));
    for (int64_t c = 0; c < w; c++) {
        double acc = 0, m = 0;
        for (int q = 0; q < rank; q++) {
            acc += (double)t[q] * bt[q * ldb + c];
            m += fabs((double)t[q] * bt[q * ldb + c]);
        }
        want[c] = y[c] + acc;
        mag[c] = m + fabs(y[c]);
    }
    v->rank_update(rank, t, bt, ldb, w, y);
    float *yf = y;
    int bad = count_far(yf, want, mag, (int)w, 1e-6);
    free(t), free(bt), free(y), free(want), free(mag);
    return bad;
}

/* RMSNorm against double, lengths with and without a tail. */
static int
check_rmsnorm(const struct engine_variant *v, int n)
{
    float *x = normal_vec(n, 3.0f), *w = normal_vec(n, 1.0f), *out = malloc(n * sizeof(float));
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / n + 1e-5);
    v->rmsnorm(out, x, w, n, 1e-5f);
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += !(fabs(out[i] - x[i] * scale * w[i]) <= 1e-6 * fabs(x[i] * scale * w[i]) + 1e-30);
    free(x), free(w), free(out);
    return bad;
}

static void
test_attention_kernels(void)
{
    static const int shapes[][2] = { { 64, 1 }, { 64, 4 }, { 80, 2 }, { 128, 1 }, { 3, 3 } };
    static const int ns[] = { 1, 2, 15, 16, 17, 40, 63, 64, 65, 80, 100, 200 };
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        if (engine__kernels_force(variants[v]) != 0)
            continue;
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
            for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
                for (int kv = 0; kv < 2; kv++) {
                    int bad = check_attn(&engine__variant()->attn, shapes[si][0],
                                         shapes[si][1], ns[ni], (enum engine_kv_type)kv);
                    if (bad)
                        fprintf(stderr, "%s attention (%s) hd %d g %d n %d: %d bad\n",
                                variants[v], kv ? "f16" : "f32", shapes[si][0], shapes[si][1],
                                ns[ni], bad);
                    CHECK_EQ(bad, 0);
                }
            }
        CHECK_EQ(check_silu(engine__variant()->silu_mul), 0);
        for (int n = 1; n <= 800; n += 133)
            CHECK_EQ(check_rmsnorm(engine__variant(), n), 0);
        for (int rank = 1; rank <= 64; rank *= 4)
            for (int64_t w = 1; w <= 100; w += 33)
                CHECK_EQ(check_rank_update(engine__variant(), rank, w), 0);
    }
    restore_best_variant();
}

/* ---- Thread pool ------------------------------------------------------ */

struct count_job {
    _Atomic int calls;
    _Atomic int mask;
    int nth_seen;
};

static void
count_task(int ith, int nth, void *arg)
{
    struct count_job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    atomic_fetch_or(&j->mask, 1 << ith);
    if (ith == 0)
        j->nth_seen = nth;
}

static void
test_pool_runs_every_thread(void)
{
    for (int n = 1; n <= 4; n++) {
        struct engine_pool *pool = NULL;
        CHECK_EQ(engine__pool_new(n, &pool), 0);
        CHECK_EQ(engine__pool_size(pool), n);
        struct count_job j = { 0 };
        engine__pool_run(pool, count_task, &j);
        CHECK_EQ(j.calls, n);
        CHECK_EQ(j.mask, (1 << n) - 1);
        CHECK_EQ(j.nth_seen, n);
        engine__pool_free(pool);
    }
    engine__pool_free(NULL);
}

static double
seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
test_pool_many_jobs(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    struct count_job j = { 0 };
    double t0 = seconds();
    for (int i = 0; i < 100000; i++)
        engine__pool_run(pool, count_task, &j);
    double dt = seconds() - t0;
    printf("     100000 jobs on 2 threads: %.1f us each\n", dt * 1e6 / 100000);
    CHECK_EQ(j.calls, 200000);
    CHECK(dt < 60); /* ~0.1 s on a quiet machine; others may hold a core */
    /* after the spin window the worker sleeps; it must still wake for the next job */
    usleep(20000);
    engine__pool_run(pool, count_task, &j);
    CHECK_EQ(j.calls, 200002);
    engine__pool_free(pool);
}

struct claim_job {
    _Atomic int next;
    _Atomic int done;
    _Atomic int calls;
    int items[1000];
};

static void
claim_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct claim_job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < 1000;) {
        j->items[i] += 1;
        atomic_fetch_add(&j->done, 1);
    }
}

/* run_some: every item is claimed exactly once, whoever turns up. */
static void
test_pool_run_some(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(3, &pool), 0);
    int bad = 0, calls = 0;
    for (int rep = 0; rep < 2000; rep++) {
        if (rep == 1000)
            usleep(20000); /* workers fall asleep: thread 0 must not wait for them */
        struct claim_job *j = calloc(1, sizeof(*j));
        engine__pool_run_some(pool, claim_task, j);
        bad += j->done != 1000 || j->calls < 1 || j->calls > 3;
        for (int i = 0; i < 1000; i++)
            bad += j->items[i] != 1;
        calls += j->calls;
        free(j); /* a late worker touching it now would be a use after free */
    }
    CHECK_EQ(bad, 0);
    printf("     run_some: %.2f threads per job on average\n", calls / 2000.0);
    struct count_job c = { 0 };
    engine__pool_run(pool, count_task, &c); /* and run still reaches every thread */
    CHECK_EQ(c.calls, 3);
    engine__pool_free(pool);
}

static void
test_pool_scratch(void)
{
    struct engine_pool *pool = NULL;
    CHECK_EQ(engine__pool_new(2, &pool), 0);
    char *a = engine__pool_scratch(pool, 1, 100);
    CHECK(((uintptr_t)a & 63) == 0);
    memset(a, 1, 100);
    CHECK(engine__pool_scratch(pool, 1, 50) == a); /* no shrinking */
    char *b = engine__pool_scratch(pool, 1, 100000);
    memset(b, 2, 100000);
    CHECK(engine__pool_scratch(pool, 0, 10) != b);
    engine__pool_free(pool);
}

int
main(int argc, char **argv)
{
    engine__kernels_init();
    printf("     kernels: %s\n", engine__kernels_name());
    static const struct check_test tests[] = {
        { "f16_known_values", test_f16_known_values },
        { "f16_all_values", test_f16_all_values },
        { "f16_random_vs_compiler", test_f16_random_vs_compiler },
        { "bf16", test_bf16 },
        { "type_traits", test_type_traits },
        { "dequant_q8_0_block", test_dequant_q8_0_block },
        { "dequant_q4_0_block", test_dequant_q4_0_block },
        { "dequant_q4_k_block", test_dequant_q4_k_block },
        { "dequant_q6_k_block", test_dequant_q6_k_block },
        { "dequant_float_types", test_dequant_float_types },
        { "quantize_rmse", test_quantize_rmse },
        { "quantize_degenerate_rows", test_quantize_degenerate_rows },
        { "vec_dot_all_variants", test_vec_dot_all_variants },
        { "simd_vs_scalar", test_simd_vs_scalar },
        { "matmul_shapes", test_matmul_shapes },
        { "matmul_all_variants", test_matmul_all_variants },
        { "matmul_empty", test_matmul_empty },
        { "matmul_x16", test_matmul_x16 },
        { "matmul_p32", test_matmul_p32 },
        { "matmul_n", test_matmul_n },
        { "attention_kernels", test_attention_kernels },
        { "pool_runs_every_thread", test_pool_runs_every_thread },
        { "pool_many_jobs", test_pool_many_jobs },
        { "pool_run_some", test_pool_run_some },
        { "pool_scratch", test_pool_scratch },
        { NULL, NULL },
    };
    return check_main(tests, argc, argv);
}

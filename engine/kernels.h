/*
 * kernels.h - tensor types and the math hot spots of the engine (internal).
 *
 * Every kernel the forward pass uses goes through these functions: row
 * conversion (quantize / dequantize), dot products, and the matmul that
 * multiplies a batch of activation rows by a weight matrix in its stored
 * type. The SIMD variant (scalar, AVX2, AVX-512) is chosen once by
 * engine__kernels_init() from the CPU's features; the build never depends
 * on the build machine's CPU.
 *
 * Block layouts are ggml's (Q8_0: f16 d + 32 x i8; Q4_0: f16 d + 16 bytes of
 * nibbles; Q4_K, Q6_K: 256-element super-blocks), so files written by
 * llama.cpp and by us are interchangeable.
 */
#ifndef LORASERVE_ENGINE_KERNELS_H
#define LORASERVE_ENGINE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* ---- Thread pool ------------------------------------------------------ */

/*
 * A fixed set of worker threads that spin briefly (2 ms), then sleep, between
 * jobs. engine__pool_run() runs fn(ith, nth, arg) on every thread (the
 * caller is thread 0) and returns when all have finished. Only one thread
 * may call engine__pool_run(), engine__pool_run_some() or engine__matmul()
 * on a pool at a time.
 */
struct engine_pool;
typedef void (*engine_task_cb)(int ith, int nth, void *arg);

/* Caller owns *out; release with engine__pool_free(). Returns 0 or -ENOMEM/-errno. */
int engine__pool_new(int n_threads, struct engine_pool **out);
void engine__pool_free(struct engine_pool *p); /* accepts NULL */
int engine__pool_size(const struct engine_pool *p);
void engine__pool_run(struct engine_pool *p, engine_task_cb fn, void *arg);
/*
 * Like engine__pool_run, for jobs that claim their work dynamically (e.g. from
 * an atomic counter): fn runs on thread 0 and on each worker that arrives
 * before thread 0's call returns, so a worker that is asleep or has lost its
 * core is never waited for. ith is still unique per thread (scratch index).
 */
void engine__pool_run_some(struct engine_pool *p, engine_task_cb fn, void *arg);

/* ---- Types ------------------------------------------------------------ */

/* Chooses the SIMD variant; safe to call more than once, from any thread. */
void engine__kernels_init(void);
/* "scalar", "avx2" or "avx512" (after engine__kernels_init). */
const char *engine__kernels_name(void);

/* Types with dequantize, dot and matmul kernels: F32 F16 BF16 Q8_0 Q4_0 Q4_K Q6_K. */
bool engine__type_supported(enum gguf_ttype t);
/* Types engine__quantize_row can produce: the same set. */
bool engine__type_quantizable(enum gguf_ttype t);

/* n must be a multiple of the type's block size. */
void engine__dequantize_row(enum gguf_ttype t, const void *src, float *dst, int64_t n);
void engine__quantize_row(enum gguf_ttype t, const float *src, void *dst, int64_t n);

/* Half-precision conversions (IEEE binary16 and bfloat16, round to nearest even). */
float engine__f16_to_f32(uint16_t h);
uint16_t engine__f32_to_f16(float f);
float engine__bf16_to_f32(uint16_t h);
uint16_t engine__f32_to_bf16(float f);

/*
 * Dot product of one row of type t (n elements) with f32 vector x. The
 * activation is converted the way engine__matmul converts it (e.g. to 8-bit
 * blocks for Q8_0/Q4_0/Q4_K/Q6_K), so the result matches matmul's exactly.
 */
float engine__vec_dot(enum gguf_ttype t, int64_t n, const void *row, const float *x);

/* ---- Matmul ----------------------------------------------------------- */

/*
 * y (m rows of n_out) = x (m rows of k) . W^T, where W is n_out rows of k
 * elements of type t, rows contiguous (gguf_row_size(t, k) bytes apart), as
 * ggml stores a weight with ne = {k, n_out}. Work is split over the pool's
 * threads. x and y must not overlap. Thread-safe for distinct pools.
 *
 * k must be a multiple of the type's block size (asserted); m = 0 or
 * n_out = 0 does nothing. Below a per-type batch size (the variant's
 * gemm_min_m: 8 rows for float types, 16-24 for Q4_0/Q8_0, 96 for Q4_K, any
 * m for Q6_K on AVX-512) x is converted to 8-bit blocks for the quantized
 * types and each result equals engine__vec_dot of its row bit for bit (and,
 * for the quantized types, the scalar variant's result). From there on, an
 * f32 GEMM runs on dequantized weights with x as is. matmul uses the pool's
 * scratch: one call per pool at a time; reserve engine__matmul_scratch()
 * bytes with engine__pool_reserve() at load time so nothing can fail later.
 */
void engine__matmul(struct engine_pool *pool, enum gguf_ttype t, const void *w,
                    int64_t n_out, int64_t k, const float *x, int64_t m, float *y);

/*
 * Interleaved ("x16") copies of Q8_0 and Q4_0 weights, which the integer
 * kernels read without any horizontal sums: rows in groups of ENGINE_X16
 * (the last group padded with zero rows), a group's blocks in order, and per
 * block the 16 rows' f16 scales followed by their quants, four bytes of each
 * row side by side (c = 0..7 for Q8_0, 0..3 for Q4_0; r = row; j = 0..3):
 *   Q8_0: u8 q[8][16][4], q[c][r][j] = row r's value 4c + j, plus 128;
 *   Q4_0: u8 q[4][16][4], q[c][r][j] = row r's byte 4c + j (value 4c + j in
 *         the low nibble, 16 + 4c + j in the high one, as in the block).
 * A group's block is 16 row blocks long, so group g starts where row 16 g
 * would. Results are those of the row layout, bit for bit.
 */
#define ENGINE_X16 16

/*
 * Panels ("p32") of F16 weights for the variant's own GEMM: rows in groups of
 * ENGINE_GEMM_ROWS (zero rows pad the last), each group k-major, f16
 * p[k][32], as the GEMM's tile reads them; the matmul then takes every m
 * through the GEMM with no packing per call, and a row's result does not
 * depend on its batch.
 */
bool engine__p32_wanted(enum gguf_ttype t);
/* The scalar references of the own GEMM's steps (any variant's fallback on p32 weights). */
void engine__gemm_pack_x_ref(const float *x, int64_t m, int64_t k, int64_t tb, float *xt);
void engine__gemm_tile_f16_ref(int64_t k, const uint16_t *ap, const float *xt, int n_tok,
                               int n_rows, float *y, int64_t ldy);
size_t engine__p32_size(int64_t n_out, int64_t k);
void engine__p32_pack(const uint16_t *rows, int64_t n_out, int64_t k, uint16_t *dst);

/* A weight matrix: n_out rows of k elements of type, in the row, x16 or p32 layout. */
struct engine_weight {
    enum gguf_ttype type;
    int64_t k;
    int64_t n_out;
    const void *data;
    bool x16;
    bool p32;
};

/* Whether the active variant has x16 kernels for t (then packing pays). */
bool engine__x16_wanted(enum gguf_ttype t);
/* Bytes of the x16 copy of n_out rows of k elements. */
size_t engine__x16_size(enum gguf_ttype t, int64_t n_out, int64_t k);
void engine__x16_pack(enum gguf_ttype t, const void *rows, int64_t n_out, int64_t k, void *dst);

/* engine__matmul for a weight in either layout. */
void engine__matmul_w(struct engine_pool *pool, const struct engine_weight *w, const float *x,
                      int64_t m, float *y);
/*
 * y[i] = x . w[i]^T for n <= ENGINE_MM_MAX weights of the same k: one
 * activation conversion and one pass of the pool where the kernels allow,
 * with the results of n separate calls.
 */
#define ENGINE_MM_MAX 4
void engine__matmul_n(struct engine_pool *pool, int n, const struct engine_weight *const *w,
                      const float *x, int64_t m, float *const *y);

/* ---- Additions: type traits, pool scratch, variant choice ------------- */

/* Elements per block and bytes per block of a supported type (0 otherwise). */
int64_t engine__type_blck(enum gguf_ttype t);
size_t engine__type_bsize(enum gguf_ttype t);
/* Bytes of a row of n elements of type t (n a multiple of the block size). */
size_t engine__row_size(enum gguf_ttype t, int64_t n);

/*
 * Per-thread scratch memory of a pool, 64-byte aligned, reused across calls.
 * engine__pool_scratch(p, ith, n) returns thread ith's buffer grown to at
 * least n bytes (old contents are lost when it grows); only thread ith (or
 * the caller, for ith 0, outside engine__pool_run) may use it, and it stays
 * valid until the next call for that thread. It aborts if memory runs out:
 * call engine__pool_reserve() at load time with the largest size you will
 * need (engine__matmul_scratch) to get -ENOMEM there instead.
 */
void *engine__pool_scratch(struct engine_pool *p, int ith, size_t n);
/* Grows every thread's scratch to n bytes. Returns 0 or -ENOMEM. */
int engine__pool_reserve(struct engine_pool *p, size_t n);
/* Per-thread scratch bytes engine__matmul needs for these shapes (m <= m_max). */
size_t engine__matmul_scratch(enum gguf_ttype t, int64_t k, int64_t m_max);

/*
 * Forces a kernel variant ("scalar", "avx2", "avx512") for tests and
 * benchmarks. Returns 0, -ENOENT for an unknown name or -ENOTSUP if this
 * CPU lacks the instructions. Not thread-safe against running matmuls.
 */
int engine__kernels_force(const char *name);

/*
 * Benchmarks only: from gemm_min_m activation rows on, engine__matmul uses
 * dequantized panels and sgemm (0 restores the built-in per-type choice).
 */
void engine__matmul_tune(int64_t gemm_min_m);

/* ---- Block layouts (ggml's) and kernel variants ----------------------- */

#define ENGINE_QK 32    /* elements of a Q8_0 / Q4_0 block */
#define ENGINE_QK_K 256 /* elements of a K-quant super-block */

struct engine_block_q8_0 {
    uint16_t d;                      /* f16 scale */
    int8_t qs[ENGINE_QK];            /* value j = qs[j] * d */
};
struct engine_block_q4_0 {
    uint16_t d;                      /* f16 scale */
    uint8_t qs[ENGINE_QK / 2];       /* j < 16: low nibble of qs[j]; else high of qs[j-16] */
};
struct engine_block_q4_k {
    uint16_t d, dmin;                /* f16 super-scales of the 6-bit scales and mins */
    uint8_t scales[12];              /* 8 x (6-bit scale, 6-bit min), packed */
    uint8_t qs[ENGINE_QK_K / 2];     /* 32-byte chunk c: low nibbles = sub-block 2c, high = 2c+1 */
};
struct engine_block_q6_k {
    uint8_t ql[ENGINE_QK_K / 2];     /* low 4 bits */
    uint8_t qh[ENGINE_QK_K / 4];     /* high 2 bits */
    int8_t scales[ENGINE_QK_K / 16]; /* one per 16 elements */
    uint16_t d;                      /* f16 super-scale */
};
struct engine_block_q8_k {
    float d;
    int8_t qs[ENGINE_QK_K];
    int16_t bsums[ENGINE_QK_K / 16]; /* sums of qs in groups of 16 */
};

_Static_assert(sizeof(struct engine_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(struct engine_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(struct engine_block_q4_k) == 144, "q4_k block is 144 bytes");
_Static_assert(sizeof(struct engine_block_q6_k) == 210, "q6_k block is 210 bytes");
_Static_assert(sizeof(struct engine_block_q8_k) == 292, "q8_k block is 292 bytes");

/* Scale j (0..7) and min j of a Q4_K block's packed 12 bytes. */
static inline void
engine__q4k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/*
 * Activation rows, converted once per matmul for the integer kernels (our own
 * layout, not ggml's; rows are ENGINE_ACT_ALIGN-aligned):
 *   Q8A (for Q8_0, Q4_0 weights): int8 qs[k], pad to 64; float d[k/32];
 *       int32 c[k/32] = -8 * sum of the block's qs (the Q4_0 offset).
 *   Q8K (for Q4_K, Q6_K weights): int8 qs[k], pad to 64; float d[k/256];
 *       int16 bsums[k/16] (sums of qs in groups of 16).
 * Each block of 32 (Q8A) or 256 (Q8K) has d = amax / 127 and
 * qs = round-to-nearest-even(x * (127 / amax)), so |qs| <= 127. Q8A's d is
 * rounded to f16 precision, as ggml's Q8_0 activation blocks store it: with
 * it, kjv-tiny-q8_0 gives the golden greedy tokens for 4 of 5 prompts (3
 * with an f32 d), as llama.cpp does.
 */
enum engine_act { ENGINE_ACT_F32, ENGINE_ACT_Q8A, ENGINE_ACT_Q8K };
#define ENGINE_ACT_ALIGN 64
#define ENGINE_GEMM_NEVER INT64_MAX /* the integer kernels beat the f32 GEMM at any m */

static inline size_t
engine__align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static inline float *
engine__act_d(const void *row, int64_t k)
{
    return (float *)((char *)row + engine__align64((size_t)k));
}

static inline int32_t *
engine__act_c(const void *row, int64_t k)
{
    return (int32_t *)(engine__act_d(row, k) + k / ENGINE_QK);
}

static inline int16_t *
engine__act_bsums(const void *row, int64_t k)
{
    return (int16_t *)(engine__act_d(row, k) + k / ENGINE_QK_K);
}

/* Bytes of one converted activation row of k elements (a multiple of 64). */
size_t engine__act_row_size(enum engine_act a, int64_t k);

/*
 * y[r * ldy + i] = dot(weight row i, activation row r) for i < n, r < m:
 * w holds n rows wstride bytes apart, a holds m converted rows astride bytes
 * apart. Every (i, r) pair is summed in the same order whatever n and m are,
 * so a row's result never depends on the batch it was computed in.
 */
typedef void (*engine_gemv_fn)(int64_t k, const void *w, size_t wstride, int64_t n,
                               const void *a, size_t astride, int64_t m, float *y,
                               int64_t ldy);
typedef void (*engine_row_fn)(const void *src, float *dst, int64_t n);
typedef void (*engine_act_fn)(const float *x, void *dst, int64_t k);

/*
 * A variant's own f32 GEMM for large batches (all NULL: use OpenBLAS). The
 * activation is packed once into blocks of ENGINE_GEMM_TOK rows (each block
 * k x ENGINE_GEMM_TOK floats, zero-padded), weights into groups of
 * ENGINE_GEMM_ROWS rows (k x ENGINE_GEMM_ROWS floats, zero-padded); a tile
 * multiplies one of each into y (64-byte aligned buffers).
 */
#define ENGINE_GEMM_TOK 12
#define ENGINE_GEMM_ROWS 32
/* Packs activation rows [tb * TOK, min(m, (tb + 1) * TOK)) of x into xt (one block). */
typedef void (*engine_pack_x_fn)(const float *x, int64_t m, int64_t k, int64_t tb, float *xt);
/*
 * Packs n <= ROWS rows of k elements, stride bytes apart, into ap; t is
 * F32, F16 or BF16 (other types are dequantized to f32 first).
 */
typedef void (*engine_pack_w_fn)(enum gguf_ttype t, const void *rows, size_t stride, int n,
                                 int64_t k, float *ap);
/* y[t * ldy + i] = sum_kk ap[kk][i] * xt[kk][t] for t < n_tok, i < n_rows. */
typedef void (*engine_tile_fn)(int64_t k, const float *ap, const float *xt, int n_tok,
                               int n_rows, float *y, int64_t ldy);
/* The same on a group of F16 panels (the p32 layout below). */
typedef void (*engine_tile_f16_fn)(int64_t k, const uint16_t *ap, const float *xt, int n_tok,
                                   int n_rows, float *y, int64_t ldy);

/*
 * Attention kernels (vec_simd.h, one source for every variant). The cache
 * comes in blocks of ENGINE_KV_BLOCK positions of f32 or f16 (scores and mix
 * are indexed by enum engine_kv_type): position t is in tile
 * t / KB at t % KB; a K tile is hd rows of KB (transposed), a V tile KB rows
 * of hd.
 *   scores: s[h * lds + t] = sum_d (q[h * hd + d] * scale) * K(t, d), h < g, t < n
 *   max:    the largest of a[0..n)
 *   exp:    a[t] = e^(a[t] - max), t < n; returns the sum
 *   mix:    o[h * hd + d] = (sum_t a[h * lda + t] * V(t, d)) * inv[h], h < g, d < hd
 */
#define ENGINE_KV_BLOCK 16
/* The cache's element: f32, or f16 (half the memory and bandwidth). */
enum engine_kv_type { ENGINE_KV_F32, ENGINE_KV_F16 };
struct engine_attn_kernels {
    void (*scores[2])(int hd, int g, int n, const float *q, float scale, const void *const *kt,
                      float *s, size_t lds);              /* [enum engine_kv_type] */
    float (*max)(const float *a, int n);
    float (*exp)(float *a, int n, float max);
    void (*mix[2])(int hd, int g, int n, const float *a, size_t lda, const void *const *vt,
                   const float *inv, float *o);
    /* y[i * stride] = x[i] as f16 (nearest even), i < n: a K column or V row into the cache. */
    void (*to_f16)(const float *x, uint16_t *y, int n, int stride);
};

/* One SIMD variant: kernels per weight type, and the activation converters. */
struct engine_variant {
    const char *name;
    struct engine_attn_kernels attn;
    void (*silu_mul)(float *g, const float *u, int64_t n);   /* g = silu(g) * u (vec_simd.h) */
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    /* y[c] += sum_q t[q] * bt[q * ldb + c], c < w (a LoRA B step, vec_simd.h) */
    void (*rank_update)(int rank, const float *t, const float *bt, size_t ldb, int64_t w,
                        float *y);
    void (*rank_update_f16)(int rank, const float *t, const uint16_t *bt, size_t ldb,
                            int64_t w, float *y);         /* the same, B in f16 */
    engine_pack_x_fn gemm_pack_x;
    engine_pack_w_fn gemm_pack_w;
    engine_tile_fn gemm_tile;
    engine_tile_f16_fn gemm_tile_f16;     /* on p32 F16 panels, or NULL */
    /* Four whole groups of p32 panels (gs halves apart), n_tok <= 2: as gemm_tile_f16 x 4 */
    void (*gemm_tile4_f16)(int64_t k, const uint16_t *ap, size_t gs, const float *xt, int n_tok,
                           float *y, int64_t ldy);
    engine_act_fn act[3];                 /* by enum engine_act; [F32] unused */
    struct {
        enum engine_act act;              /* format the activation is converted to */
        engine_gemv_fn gemv;
        engine_row_fn dequant;            /* n elements to f32 */
        int64_t gemm_min_m;               /* from this many rows on, use the f32 GEMM */
        engine_gemv_fn gemv_x16;          /* on x16 weights (w at a group start), or NULL */
    } type[GGUF_T_COUNT];
};

extern const struct engine_variant engine__variant_scalar;
extern const struct engine_variant engine__variant_avx2;
extern const struct engine_variant engine__variant_avx512;
/* The scalar x16 kernel for Q8_0 or Q4_0: the reference, and every variant's fallback. */
engine_gemv_fn engine__gemv_x16_ref(enum gguf_ttype t);
/* The variant in use (engine__kernels_init must have run). */
const struct engine_variant *engine__variant(void);

#endif

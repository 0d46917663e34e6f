/*
 * simd_avx512.c - the AVX-512 (F, BW, VL, DQ, VNNI, BF16) kernel variant.
 *
 * This file alone is compiled with -mavx512*; nothing in it runs before
 * engine__kernels_init() has checked the CPU. Float rows use 16 lanes with
 * masked tails. Integer dots use vpdpbusd (u8 x s8 summed into s32) for
 * Q8_0 (sign trick) and Q4_0 (the accumulator starts at the activation's
 * -8 * sum), and maddubs + vpdpwssd (scale applied as s16) for the 6-bit
 * scales of Q4_K and Q6_K, two sub-blocks per 512-bit register.
 *
 * As in the AVX2 variant, each weight row serves up to DOT_ROWS activation
 * rows, every (row, activation) pair is summed in the same order whatever
 * the batch, and Q4_K / Q6_K super-block sums are exact integers added to the
 * float sum exactly as the scalar reference adds them.
 */
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"

#define DOT_ROWS 4
#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Loops over a constant number of rows must become registers, not stack arrays. */
#define UNROLL _Pragma("GCC unroll 16")

/* ---- Helpers ---------------------------------------------------------- */

ALWAYS_INLINE float
hsum_ps256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE float
hsum_ps512(__m512 v)
{
    return hsum_ps256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

ALWAYS_INLINE float
f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Two 32-byte pieces as one 512-bit register. */
ALWAYS_INLINE __m512i
load2x256(const void *lo, const void *hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(lo)),
                              _mm256_loadu_si256(hi), 1);
}

/* The GEMV driver: see simd_avx2.c. */
#define GEMV(name, DOTN)                                                               \
    static void name(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, \
                     size_t astride, int64_t m, float *y, int64_t ldy)                   \
    {                                                                                    \
        for (int64_t i = 0; i < n; i++) {                                                \
            const void *wr = (const char *)w + i * wstride;                              \
            int64_t r = 0;                                                               \
            for (; r + DOT_ROWS <= m; r += DOT_ROWS)                                     \
                DOTN(k, wr, (const char *)a + r * astride, astride, DOT_ROWS,            \
                     y + r * ldy + i, ldy);                                              \
            const char *ar = (const char *)a + r * astride;                              \
            float *yr = y + r * ldy + i;                                                 \
            switch (m - r) {                                                             \
            case 3: DOTN(k, wr, ar, astride, 3, yr, ldy); break;                         \
            case 2: DOTN(k, wr, ar, astride, 2, yr, ldy); break;                         \
            case 1: DOTN(k, wr, ar, astride, 1, yr, ldy); break;                         \
            default: break;                                                              \
            }                                                                            \
        }                                                                                \
    }

/* ---- Float weights ---------------------------------------------------- */

/*
 * 16 weights as f32; m masks the tail. Full-width loads and stores are not
 * masked: masked stores in particular are slow on AMD cores.
 */
ALWAYS_INLINE __m512
load16_f32(const void *p, __mmask16 m)
{
    return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

ALWAYS_INLINE __m256i
load16_u16(const void *p, __mmask16 m)
{
    return m == 0xffff ? _mm256_loadu_si256(p) : _mm256_maskz_loadu_epi16(m, p);
}

ALWAYS_INLINE __m512
load16_f16(const void *p, __mmask16 m)
{
    return _mm512_cvtph_ps(load16_u16(p, m));
}

ALWAYS_INLINE __m512
load16_bf16(const void *p, __mmask16 m)
{
    __m512i v = _mm512_cvtepu16_epi32(load16_u16(p, m));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

ALWAYS_INLINE void
store16_f32(float *p, __mmask16 m, __m512 v)
{
    if (m == 0xffff)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}

/*
 * Float rows: two accumulators of 16 lanes per pair (32 elements a step),
 * then one 16-element step and a masked tail into the first, then a tree sum.
 * The software prefetch 1 KB ahead doubles F16 rows streamed from DRAM
 * (19 -> 35 GB/s on one core for 32000 x 768): the hardware alone lags.
 */
#define DOT_FLOAT(name, T, LOAD16)                                                      \
    ALWAYS_INLINE void name(int64_t k, const void *wr, const char *a, size_t astride,   \
                            int R, float *y, int64_t ldy)                               \
    {                                                                                   \
        const T *w = wr;                                                                \
        __m512 acc0[DOT_ROWS], acc1[DOT_ROWS];                                          \
        UNROLL for (int r = 0; r < R; r++)                                                     \
            acc0[r] = acc1[r] = _mm512_setzero_ps();                                    \
        int64_t i = 0;                                                                  \
        for (; i + 32 <= k; i += 32) {                                                  \
            __builtin_prefetch((const char *)(w + i) + 1024, 0, 3);                     \
            __m512 w0 = LOAD16(w + i, 0xffff), w1 = LOAD16(w + i + 16, 0xffff);         \
            UNROLL for (int r = 0; r < R; r++) {                                               \
                const float *x = (const float *)(a + r * astride) + i;                  \
                acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc0[r]);             \
                acc1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), acc1[r]);        \
            }                                                                           \
        }                                                                               \
        for (; i < k; i += 16) {                                                        \
            __mmask16 m = k - i >= 16 ? 0xffff : (__mmask16)((1u << (k - i)) - 1);      \
            __m512 w0 = LOAD16(w + i, m);                                               \
            UNROLL for (int r = 0; r < R; r++) {                                               \
                const float *x = (const float *)(a + r * astride) + i;                  \
                acc0[r] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x), acc0[r]);    \
            }                                                                           \
        }                                                                               \
        UNROLL for (int r = 0; r < R; r++)                                                     \
            y[r * ldy] = hsum_ps512(_mm512_add_ps(acc0[r], acc1[r]));                   \
    }

DOT_FLOAT(dotn_f32, float, load16_f32)
DOT_FLOAT(dotn_f16, uint16_t, load16_f16)
DOT_FLOAT(dotn_bf16, uint16_t, load16_bf16)
GEMV(gemv_f32, dotn_f32)
GEMV(gemv_f16, dotn_f16)
GEMV(gemv_bf16, dotn_bf16)

/* ---- Q8_0 and Q4_0 against Q8A activations ---------------------------- */

/*
 * Tiles of W weight rows x R activation rows (W * R <= 8 pairs), one block at
 * a time. Each pair's block product is an exact int32 (vpdpbusd); the eight
 * pairs' lanes are summed into one vector (lane p = pair p = i * R + r), and
 * the float work is done once per eight pairs: sum = sum + (dw * dx) * isum,
 * block by block, which is exactly the scalar reference's arithmetic.
 *
 * Q8_0 uses w + 128 (w ^ 0x80) as the unsigned operand, so each block sum is
 * off by 128 * sum(x) = -16 * c; Q4_0 uses its nibbles, off by 8 * sum(x) =
 * -c. Per block, the activation side of a group of R rows (dx and that
 * correction, spread to the pair lanes) is prepared once in a q8a_group for
 * all weight rows.
 */
#define Q8A_CHUNK 128 /* blocks per q8a_group: 8 KB of stack */

struct q8a_group {
    __m256 dx[Q8A_CHUNK];                 /* lane p: dx of activation row p % R */
    __m256i corr[Q8A_CHUNK];              /* lane p: correction of row p % R */
};

static void
q8a_group_fill(struct q8a_group *g, bool q4, const char *a, size_t astride, int64_t k,
               int R, int64_t b0, int64_t b1)
{
    for (int64_t b = b0; b < b1; b++) {
        float dx[8];
        int32_t c[8];
        for (int p = 0; p < 8; p++) {
            const char *row = a + (p % R) * astride;
            dx[p] = engine__act_d(row, k)[b];
            c[p] = engine__act_c(row, k)[b] * (q4 ? 1 : 16);
        }
        g->dx[b - b0] = _mm256_loadu_ps(dx);
        g->corr[b - b0] = _mm256_loadu_si256((const __m256i *)c);
    }
}

/*
 * A tile reads its W rows side by side, a pattern the hardware prefetcher
 * does not follow from memory. So each step also prefetches its share of the
 * next tile's rows (the W * wstride bytes that follow this tile's): by the
 * time this tile ends, the next one is on its way.
 */
ALWAYS_INLINE uintptr_t
prefetch_next(uintptr_t pf, uintptr_t end)
{
    for (; pf < end; pf += 64) /* addresses, not pointers: they may pass the matrix's end */
        __builtin_prefetch((const void *)pf, 0, 3);
    return pf;
}

/* Lane p of the result is the sum of the eight lanes of v[p]. */
ALWAYS_INLINE __m256i
reduce8(const __m256i v[8])
{
    __m256i ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i cd = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    /* ab: lane 0 = v0..v3 summed over their lanes 0-3, lane 1 = over lanes 4-7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                            _mm256_permute2x128_si256(ab, cd, 0x31));
}

/*
 * The f16 at wb (a block scale) of weight row p / R, as f32, for each pair
 * lane p. The W values are inserted one by one (a gather costs about 14
 * cycles here) and spread with a permute.
 */
ALWAYS_INLINE __m256
pair_f16(const char *wb, size_t wstride, int W, int R)
{
    __m128i h = _mm_cvtsi32_si128(*(const uint16_t *)wb);
#define INSERT(i) \
    if (W > i) \
        h = _mm_insert_epi16(h, *(const uint16_t *)(wb + i * wstride), i);
    INSERT(1) INSERT(2) INSERT(3) INSERT(4) INSERT(5) INSERT(6) INSERT(7)
#undef INSERT
    __m256 v = _mm256_cvtph_ps(h);
    if (R == 1)
        return v;
    return _mm256_permutexvar_ps(_mm256_setr_epi32(0 / R, 1 / R, 2 / R, 3 / R, 4 / R, 5 / R,
                                                   6 / R, 7 / R), v);
}

/* Blocks [b0, b1) of a tile; the sums continue from y unless first. */
ALWAYS_INLINE void
q8a_tile(bool q4, int64_t k, const char *w, size_t wstride, const char *a, size_t astride,
         const struct q8a_group *g, int64_t b0, int64_t b1, bool first, int W, int R,
         float *y, int64_t ldy)
{
    const size_t bsize = q4 ? sizeof(struct engine_block_q4_0) : sizeof(struct engine_block_q8_0);
    const __m256i lo4 = _mm256_set1_epi8(0x0f), bias = _mm256_set1_epi8((char)0x80);
    float out[8] = { 0 };
    if (!first)
        UNROLL for (int i = 0; i < W; i++)
            UNROLL for (int r = 0; r < R; r++)
                out[i * R + r] = y[r * ldy + i];
    __m256 acc = _mm256_loadu_ps(out);
    uintptr_t next = (uintptr_t)w + W * wstride + b0 * W * bsize, pf = next;
    for (int64_t b = b0; b < b1; b++) {
        const char *wb = w + b * bsize;
        pf = prefetch_next(pf, next + (b - b0 + 1) * W * bsize);
        __m256i p[8];
        UNROLL for (int i = 0; i < W; i++) {
            __m256i u;
            if (q4) {
                __m128i q = _mm_loadu_si128((const __m128i *)(wb + i * wstride + 2));
                u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lo4);
            } else {
                u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wb + i * wstride + 2)),
                                     bias);
            }
            UNROLL for (int r = 0; r < R; r++)
                p[i * R + r] = _mm256_dpbusd_epi32(
                    _mm256_setzero_si256(), u,
                    _mm256_load_si256((const __m256i *)(a + r * astride) + b));
        }
        UNROLL for (int q = W * R; q < 8; q++)
            p[q] = _mm256_setzero_si256();
        __m256i corr, dx;
        if (R == 1) { /* one activation row: broadcast its values */
            corr = _mm256_set1_epi32(engine__act_c(a, k)[b] * (q4 ? 1 : 16));
            dx = _mm256_castps_si256(_mm256_set1_ps(engine__act_d(a, k)[b]));
        } else {
            corr = g->corr[b - b0];
            dx = _mm256_castps_si256(g->dx[b - b0]);
        }
        __m256i isum = _mm256_add_epi32(reduce8(p), corr);
        __m256 scale = _mm256_mul_ps(pair_f16(wb, wstride, W, R), _mm256_castsi256_ps(dx));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
    }
    _mm256_storeu_ps(out, acc);
    UNROLL for (int i = 0; i < W; i++)
        UNROLL for (int r = 0; r < R; r++)
            y[r * ldy + i] = out[i * R + r];
}

/*
 * One function per tile shape (W * R <= 8, R a power of two), each compiled
 * on its own so its accumulators get registers.
 */
typedef void (*q8a_tile_fn)(int64_t k, const char *w, size_t wstride, const char *a,
                            size_t astride, const struct q8a_group *g, int64_t b0, int64_t b1,
                            bool first, float *y, int64_t ldy);

#define Q8A_TILE(WW, RR)                                                                   \
    static void q8_0_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride, const char *a, \
                                      size_t astride, const struct q8a_group *g,           \
                                      int64_t b0, int64_t b1, bool first, float *y,        \
                                      int64_t ldy)                                         \
    {                                                                                      \
        q8a_tile(false, k, w, wstride, a, astride, g, b0, b1, first, WW, RR, y, ldy);      \
    }                                                                                      \
    static void q4_0_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride, const char *a, \
                                      size_t astride, const struct q8a_group *g,           \
                                      int64_t b0, int64_t b1, bool first, float *y,        \
                                      int64_t ldy)                                         \
    {                                                                                      \
        q8a_tile(true, k, w, wstride, a, astride, g, b0, b1, first, WW, RR, y, ldy);       \
    }

Q8A_TILE(8, 1) Q8A_TILE(7, 1) Q8A_TILE(6, 1) Q8A_TILE(5, 1) Q8A_TILE(4, 1) Q8A_TILE(3, 1)
Q8A_TILE(2, 1) Q8A_TILE(1, 1) Q8A_TILE(4, 2) Q8A_TILE(3, 2) Q8A_TILE(2, 2) Q8A_TILE(1, 2)
Q8A_TILE(2, 4) Q8A_TILE(1, 4) Q8A_TILE(1, 8)

/* [q4][log2 R][W - 1] */
static const q8a_tile_fn q8a_tiles[2][4][8] = {
    { { q8_0_tile_1x1, q8_0_tile_2x1, q8_0_tile_3x1, q8_0_tile_4x1, q8_0_tile_5x1,
        q8_0_tile_6x1, q8_0_tile_7x1, q8_0_tile_8x1 },
      { q8_0_tile_1x2, q8_0_tile_2x2, q8_0_tile_3x2, q8_0_tile_4x2 },
      { q8_0_tile_1x4, q8_0_tile_2x4 },
      { q8_0_tile_1x8 } },
    { { q4_0_tile_1x1, q4_0_tile_2x1, q4_0_tile_3x1, q4_0_tile_4x1, q4_0_tile_5x1,
        q4_0_tile_6x1, q4_0_tile_7x1, q4_0_tile_8x1 },
      { q4_0_tile_1x2, q4_0_tile_2x2, q4_0_tile_3x2, q4_0_tile_4x2 },
      { q4_0_tile_1x4, q4_0_tile_2x4 },
      { q4_0_tile_1x8 } },
};

/*
 * Activation rows in groups of R = 8, 4, 2 or 1 (the largest that fits),
 * weight rows W = 8 / R at a time, Q8A_CHUNK blocks at a time; a chunk of
 * weight rows stays in L2 while the groups pass over it.
 */
static void
gemv_q8a(bool q4, int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
         size_t astride, int64_t m, float *y, int64_t ldy)
{
    struct q8a_group g;
    int64_t nb = k / ENGINE_QK;
    for (int64_t r0 = 0; r0 < m;) {
        int lg = m - r0 >= 8 ? 3 : m - r0 >= 4 ? 2 : m - r0 >= 2 ? 1 : 0, R = 1 << lg, W = 8 / R;
        const char *ar = (const char *)a + r0 * astride;
        for (int64_t b0 = 0; b0 < nb; b0 += Q8A_CHUNK) {
            int64_t b1 = nb - b0 < Q8A_CHUNK ? nb : b0 + Q8A_CHUNK;
            if (R > 1)
                q8a_group_fill(&g, q4, ar, astride, k, R, b0, b1);
            for (int64_t i = 0; i < n; i += W) {
                int wt = (int)(n - i < W ? n - i : W);
                q8a_tiles[q4][lg][wt - 1](k, (const char *)w + i * wstride, wstride, ar, astride,
                                          &g, b0, b1, b0 == 0, y + r0 * ldy + i, ldy);
            }
        }
        r0 += R;
    }
}

static void
gemv_q8_0(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
          int64_t m, float *y, int64_t ldy)
{
    gemv_q8a(false, k, w, wstride, n, a, astride, m, y, ldy);
}

static void
gemv_q4_0(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
          int64_t m, float *y, int64_t ldy)
{
    gemv_q8a(true, k, w, wstride, n, a, astride, m, y, ldy);
}

/* ---- Q8_0 and Q4_0, x16 layout ----------------------------------------- */

/*
 * A tile: one group of 16 interleaved weight rows against R activation rows,
 * all blocks. Per block the group's quants are loaded once (8 registers of
 * four bytes x 16 rows); for each activation row, eight vpdpbusd with its
 * four bytes broadcast give lane r row r's exact block sum (the accumulator
 * starts at the activation's correction: -128 * sum for Q8_0's offset
 * quants, -8 * sum for Q4_0's nibbles), and the float sum takes it as the
 * reference does: sum = sum + (dw * dx) * isum.
 */
ALWAYS_INLINE void
x16_tile(bool q4, int64_t k, const char *grp, const char *a, size_t astride, int R,
         float *y, int64_t ldy, __mmask16 rows)
{
    const size_t gblock = ENGINE_X16 * (q4 ? sizeof(struct engine_block_q4_0)
                                           : sizeof(struct engine_block_q8_0));
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const int64_t nb = k / ENGINE_QK;
    __m512 acc[8];
    UNROLL for (int r = 0; r < R; r++)
        acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const char *blk = grp + b * gblock;
        /*
         * The block 8 ahead: all its lines when several rows make the tile
         * compute-heavy (the hardware prefetcher then falls behind: 8 rows
         * of the 110M model, 3.8 -> 2.6 ms of matmul a step); two when one
         * row streams and the prefetcher keeps up.
         */
        for (size_t o = 0; o < (R >= 4 ? gblock : 128); o += 64)
            __builtin_prefetch(blk + 8 * gblock + o, 0, 3);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512i *qp = (const __m512i *)(blk + ENGINE_X16 * sizeof(uint16_t));
        __m512i q[8];
        if (q4) {
            UNROLL for (int c = 0; c < 4; c++) {
                __m512i v = _mm512_loadu_si512(qp + c);
                q[c] = _mm512_and_si512(v, lo4);
                q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            }
        } else {
            UNROLL for (int c = 0; c < 8; c++)
                q[c] = _mm512_loadu_si512(qp + c);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const char *ar = a + r * astride;
            const int32_t *xq = (const int32_t *)(ar + b * ENGINE_QK);
            /* two chains of four: vpdpbusd's latency, not its throughput, bounds one */
            __m512i i0 = _mm512_set1_epi32(engine__act_c(ar, k)[b] * (q4 ? 1 : 16));
            __m512i i1 = _mm512_setzero_si512();
            UNROLL for (int c = 0; c < 8; c += 2) {
                i0 = _mm512_dpbusd_epi32(i0, q[c], _mm512_set1_epi32(xq[c]));
                i1 = _mm512_dpbusd_epi32(i1, q[c + 1], _mm512_set1_epi32(xq[c + 1]));
            }
            __m512i isum = _mm512_add_epi32(i0, i1);
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(engine__act_d(ar, k)[b]));
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum)));
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        _mm512_mask_storeu_ps(y + r * ldy, rows, acc[r]);
}

typedef void (*x16_tile_fn)(int64_t k, const char *grp, const char *a, size_t astride,
                            float *y, int64_t ldy, __mmask16 rows);

#define X16_TILE(RR)                                                                       \
    static void q8_0_x16_##RR(int64_t k, const char *grp, const char *a, size_t astride,  \
                              float *y, int64_t ldy, __mmask16 rows)                       \
    {                                                                                      \
        x16_tile(false, k, grp, a, astride, RR, y, ldy, rows);                             \
    }                                                                                      \
    static void q4_0_x16_##RR(int64_t k, const char *grp, const char *a, size_t astride,  \
                              float *y, int64_t ldy, __mmask16 rows)                       \
    {                                                                                      \
        x16_tile(true, k, grp, a, astride, RR, y, ldy, rows);                              \
    }

X16_TILE(1) X16_TILE(2) X16_TILE(3) X16_TILE(4) X16_TILE(5) X16_TILE(6) X16_TILE(7)
X16_TILE(8)

static const x16_tile_fn x16_tiles[2][8] = {
    { q8_0_x16_1, q8_0_x16_2, q8_0_x16_3, q8_0_x16_4, q8_0_x16_5, q8_0_x16_6, q8_0_x16_7,
      q8_0_x16_8 },
    { q4_0_x16_1, q4_0_x16_2, q4_0_x16_3, q4_0_x16_4, q4_0_x16_5, q4_0_x16_6, q4_0_x16_7,
      q4_0_x16_8 },
};

/* Groups of 16 weight rows in turn; each against the activation rows, 8 at a time. */
static void
gemv_x16(bool q4, int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
         size_t astride, int64_t m, float *y, int64_t ldy)
{
    for (int64_t i = 0; i < n; i += ENGINE_X16) {
        const char *grp = (const char *)w + i * wstride;
        int64_t left = n - i;
        __mmask16 rows = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        for (int64_t r0 = 0; r0 < m; r0 += 8) {
            int R = (int)(m - r0 < 8 ? m - r0 : 8);
            x16_tiles[q4][R - 1](k, grp, (const char *)a + r0 * astride, astride,
                                 y + r0 * ldy + i, ldy, rows);
        }
    }
}

static void
gemv_q8_0_x16(int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
              size_t astride, int64_t m, float *y, int64_t ldy)
{
    gemv_x16(false, k, w, wstride, n, a, astride, m, y, ldy);
}

static void
gemv_q4_0_x16(int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
              size_t astride, int64_t m, float *y, int64_t ldy)
{
    gemv_x16(true, k, w, wstride, n, a, astride, m, y, ldy);
}

/* ---- Q4_K and Q6_K against Q8K activations ---------------------------- */

/* [sc0..7, mn0..7] of a Q4_K block; see simd_avx2.c. */
ALWAYS_INLINE __m128i
q4k_scales(const uint8_t *s)
{
    uint32_t u[3];
    memcpy(u, s, 12);
    uint32_t sc03 = u[0] & 0x3f3f3f3f, mn03 = u[1] & 0x3f3f3f3f;
    uint32_t sc47 = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
    uint32_t mn47 = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
    return _mm_set_epi32((int)mn47, (int)mn03, (int)sc47, (int)sc03);
}

/* 16-bit element i of v in the low 256 bits and element j in the high 256 bits. */
ALWAYS_INLINE __m512i
spread2(__m512i v, int i, int j)
{
    __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16((short)i), _mm256_set1_epi16((short)j), 1);
    return _mm512_permutexvar_epi16(idx, v);
}

/*
 * Q4_K and Q6_K tiles: W weight rows x R activation rows (W * R <= 8), one
 * super-block at a time. Each pair's super-block gives exact int32 sums (the
 * main sum, and the mins' or the -32 offset's), reduced across the eight
 * pairs into vectors as for Q8_0; the float sums then take, lane by lane,
 * sum = sum + (d * dx) * isum (Q4_K also - (dmin * dx) * msum), which is the
 * scalar reference's arithmetic.
 */

/* 8 lanes: the two 256-bit halves of v added. */
ALWAYS_INLINE __m256i
fold512(__m512i v)
{
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

/* dx of super-block b of activation row p % R, per pair lane p. */
ALWAYS_INLINE __m256
pair_dx(const char *a, size_t astride, int64_t k, int64_t b, int R)
{
    float v[8];
    UNROLL for (int r = 0; r < R; r++)
        v[r] = engine__act_d(a + r * astride, k)[b];
    return R == 1 ? _mm256_set1_ps(v[0])
         : R == 2 ? _mm256_setr_ps(v[0], v[1], v[0], v[1], v[0], v[1], v[0], v[1])
         : R == 4 ? _mm256_setr_ps(v[0], v[1], v[2], v[3], v[0], v[1], v[2], v[3])
                  : _mm256_setr_ps(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
}

/*
 * One Q4_K super-block against R activation rows: the 128 bytes of nibbles
 * as two registers, each holding two 32-byte chunks; low nibbles are
 * sub-blocks (0, 2) and (4, 6), high nibbles (1, 3) and (5, 7). pi[r] gets
 * the scaled products, pm[r] the mins times the activation sums (8 lanes).
 */
ALWAYS_INLINE void
q4k_pairs(const struct engine_block_q4_k *w, const char *a, size_t astride, int64_t k,
          int64_t b, int R, __m256i *pi, __m256i *pm)
{
    __m256i s16 = _mm256_cvtepu8_epi16(q4k_scales(w->scales));    /* sc0..7, mn0..7 */
    __m512i s = _mm512_castsi256_si512(s16);
    __m512i sc[4] = { spread2(s, 0, 2), spread2(s, 1, 3), spread2(s, 4, 6), spread2(s, 5, 7) };
    __m128i mn = _mm256_extracti128_si256(s16, 1);
    __m256i mn2 = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    __m512i q[4];
    UNROLL for (int h = 0; h < 2; h++) {
        __m512i v = _mm512_loadu_si512(w->qs + 64 * h);
        q[2 * h] = _mm512_and_si512(v, lo4);
        q[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
    }
    UNROLL for (int r = 0; r < R; r++) {
        const char *x = a + r * astride + b * ENGINE_QK_K;
        __m512i acc = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 4; j++) {
            /* register j holds sub-blocks s0 = 4(j/2) + (j%2) and s0 + 2 */
            int s0 = 4 * (j / 2) + (j % 2);
            __m512i xv = load2x256(x + 32 * s0, x + 32 * (s0 + 2));
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q[j], xv), sc[j]);
        }
        const int16_t *bs = engine__act_bsums(a + r * astride, k) + 16 * b;
        pi[r] = fold512(acc);
        pm[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), mn2);
    }
}

/*
 * One 128-element half of a Q6_K block as two registers of 6-bit values:
 * q[0] = quarters 0 and 1 (elements 0-63), q[1] = quarters 2 and 3 (64-127).
 * ql holds quarters (0 | 1) in its low nibbles and (2 | 3) in its high
 * nibbles; qh holds quarter i's top bits at bits 2i, 2i+1.
 */
ALWAYS_INLINE void
q6k_unpack(const uint8_t *ql, const uint8_t *qh, __m512i q[2])
{
    const __m512i lo4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(0x30);
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    __m512i l = _mm512_loadu_si512(ql);
    __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
    q[0] = _mm512_or_si512(_mm512_and_si512(l, lo4),
                           _mm512_and_si512(_mm512_sllv_epi16(h, shl), m2));
    q[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), lo4),
                           _mm512_and_si512(_mm512_srlv_epi16(h, shr), m2));
}

/* One Q6_K super-block against R rows: pi[r] = sum_g sc_g q.x, pm[r] = sum_g sc_g bsum_g. */
ALWAYS_INLINE void
q6k_pairs(const struct engine_block_q6_k *w, const char *a, size_t astride, int64_t k,
          int64_t b, int R, __m256i *pi, __m256i *pm)
{
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
    __m512i s = _mm512_castsi256_si512(sc16), sc[4];
    UNROLL for (int j = 0; j < 4; j++) /* groups 4j .. 4j+3, one per 128-bit lane */
        sc[j] = _mm512_permutexvar_epi16(
            _mm512_add_epi16(_mm512_set1_epi16((short)(4 * j)),
                             _mm512_set_epi64(0x0003000300030003, 0x0003000300030003,
                                              0x0002000200020002, 0x0002000200020002,
                                              0x0001000100010001, 0x0001000100010001, 0, 0)),
            s);
    __m512i q[4];
    q6k_unpack(w->ql, w->qh, q);
    q6k_unpack(w->ql + 64, w->qh + 32, q + 2);
    UNROLL for (int r = 0; r < R; r++) {
        const __m512i *x = (const __m512i *)(a + r * astride + b * ENGINE_QK_K);
        __m512i acc = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 4; j++)
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q[j], _mm512_load_si512(x + j)),
                                      sc[j]);
        const int16_t *bs = engine__act_bsums(a + r * astride, k) + 16 * b;
        pi[r] = fold512(acc);
        pm[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), sc16);
    }
}

ALWAYS_INLINE void
kq_tile(bool q6, int64_t k, const char *w, size_t wstride, const char *a, size_t astride,
        int W, int R, float *y, int64_t ldy)
{
    const size_t bsize = q6 ? sizeof(struct engine_block_q6_k) : sizeof(struct engine_block_q4_k);
    __m256 acc = _mm256_setzero_ps();
    uintptr_t next = (uintptr_t)w + W * wstride, pf = next;
    for (int64_t b = 0; b < k / ENGINE_QK_K; b++) {
        const char *wb = w + b * bsize;
        pf = prefetch_next(pf, next + (b + 1) * W * bsize);
        __m256i pi[8], pm[8];
        UNROLL for (int i = 0; i < W; i++) {
            if (q6)
                q6k_pairs((const void *)(wb + i * wstride), a, astride, k, b, R, pi + i * R,
                          pm + i * R);
            else
                q4k_pairs((const void *)(wb + i * wstride), a, astride, k, b, R, pi + i * R,
                          pm + i * R);
        }
        UNROLL for (int q = W * R; q < 8; q++)
            pi[q] = pm[q] = _mm256_setzero_si256();
        __m256 dx = pair_dx(a, astride, k, b, R);
        if (q6) {
            __m256i isum = _mm256_sub_epi32(reduce8(pi), _mm256_slli_epi32(reduce8(pm), 5));
            __m256 d = pair_f16(wb + offsetof(struct engine_block_q6_k, d), wstride, W, R);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(d, dx),
                                                   _mm256_cvtepi32_ps(isum)));
        } else {
            __m256 d = pair_f16(wb, wstride, W, R), dmin = pair_f16(wb + 2, wstride, W, R);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(d, dx),
                                                   _mm256_cvtepi32_ps(reduce8(pi))));
            acc = _mm256_sub_ps(acc, _mm256_mul_ps(_mm256_mul_ps(dmin, dx),
                                                   _mm256_cvtepi32_ps(reduce8(pm))));
        }
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    UNROLL for (int i = 0; i < W; i++)
        UNROLL for (int r = 0; r < R; r++)
            y[r * ldy + i] = out[i * R + r];
}

typedef void (*kq_tile_fn)(int64_t k, const char *w, size_t wstride, const char *a,
                           size_t astride, float *y, int64_t ldy);

#define KQ_TILE(WW, RR)                                                                    \
    static void q4_k_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride,            \
                                      const char *a, size_t astride, float *y, int64_t ldy) \
    {                                                                                      \
        kq_tile(false, k, w, wstride, a, astride, WW, RR, y, ldy);                         \
    }                                                                                      \
    static void q6_k_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride,            \
                                      const char *a, size_t astride, float *y, int64_t ldy) \
    {                                                                                      \
        kq_tile(true, k, w, wstride, a, astride, WW, RR, y, ldy);                          \
    }

KQ_TILE(8, 1) KQ_TILE(7, 1) KQ_TILE(6, 1) KQ_TILE(5, 1) KQ_TILE(4, 1) KQ_TILE(3, 1)
KQ_TILE(2, 1) KQ_TILE(1, 1) KQ_TILE(4, 2) KQ_TILE(3, 2) KQ_TILE(2, 2) KQ_TILE(1, 2)
KQ_TILE(2, 4) KQ_TILE(1, 4) KQ_TILE(1, 8)

/* [q6][log2 R][W - 1] */
static const kq_tile_fn kq_tiles[2][4][8] = {
    { { q4_k_tile_1x1, q4_k_tile_2x1, q4_k_tile_3x1, q4_k_tile_4x1, q4_k_tile_5x1,
        q4_k_tile_6x1, q4_k_tile_7x1, q4_k_tile_8x1 },
      { q4_k_tile_1x2, q4_k_tile_2x2, q4_k_tile_3x2, q4_k_tile_4x2 },
      { q4_k_tile_1x4, q4_k_tile_2x4 },
      { q4_k_tile_1x8 } },
    { { q6_k_tile_1x1, q6_k_tile_2x1, q6_k_tile_3x1, q6_k_tile_4x1, q6_k_tile_5x1,
        q6_k_tile_6x1, q6_k_tile_7x1, q6_k_tile_8x1 },
      { q6_k_tile_1x2, q6_k_tile_2x2, q6_k_tile_3x2, q6_k_tile_4x2 },
      { q6_k_tile_1x4, q6_k_tile_2x4 },
      { q6_k_tile_1x8 } },
};

static void
gemv_kq(bool q6, int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
        size_t astride, int64_t m, float *y, int64_t ldy)
{
    for (int64_t r0 = 0; r0 < m;) {
        int lg = m - r0 >= 8 ? 3 : m - r0 >= 4 ? 2 : m - r0 >= 2 ? 1 : 0, R = 1 << lg, W = 8 / R;
        for (int64_t i = 0; i < n; i += W) {
            int wt = (int)(n - i < W ? n - i : W);
            kq_tiles[q6][lg][wt - 1](k, (const char *)w + i * wstride, wstride,
                                     (const char *)a + r0 * astride, astride,
                                     y + r0 * ldy + i, ldy);
        }
        r0 += R;
    }
}

static void
gemv_q4_k(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
          int64_t m, float *y, int64_t ldy)
{
    gemv_kq(false, k, w, wstride, n, a, astride, m, y, ldy);
}

static void
gemv_q6_k(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
          int64_t m, float *y, int64_t ldy)
{
    gemv_kq(true, k, w, wstride, n, a, astride, m, y, ldy);
}

/* ---- Activation conversion -------------------------------------------- */

ALWAYS_INLINE float
amax_ps(const float *x, int n)
{
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16)
        m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    return _mm512_reduce_max_ps(m);
}

/* 16 values x * id rounded to nearest even, stored as int8; returns them as int32. */
ALWAYS_INLINE __m512i
quant16(const float *x, __m512 id, int8_t *qs)
{
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), id));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(v)); /* |v| <= 127: exact */
    return v;
}

static void
act_q8a(const float *x, void *dst, int64_t k)
{
    int8_t *qs = dst;
    float *d = engine__act_d(dst, k);
    int32_t *c = engine__act_c(dst, k);
    for (int64_t b = 0; b < k / ENGINE_QK; b++, x += ENGINE_QK) {
        float amax = amax_ps(x, ENGINE_QK);
        __m512 id = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0);
        d[b] = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT)); /* f16, as ggml */
        __m512i s = _mm512_add_epi32(quant16(x, id, qs + b * ENGINE_QK),
                                     quant16(x + 16, id, qs + b * ENGINE_QK + 16));
        c[b] = -8 * _mm512_reduce_add_epi32(s);
    }
}

static void
act_q8k(const float *x, void *dst, int64_t k)
{
    int8_t *qs = dst;
    float *d = engine__act_d(dst, k);
    int16_t *bs = engine__act_bsums(dst, k);
    for (int64_t b = 0; b < k / ENGINE_QK_K; b++, x += ENGINE_QK_K) {
        float amax = amax_ps(x, ENGINE_QK_K);
        __m512 id = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0);
        d[b] = amax / 127.0f;
        for (int g = 0; g < 16; g++)
            bs[16 * b + g] = (int16_t)_mm512_reduce_add_epi32(
                quant16(x + 16 * g, id, qs + b * ENGINE_QK_K + 16 * g));
    }
}

/* ---- Dequantization (for sgemm panels) -------------------------------- */

static void
dequant_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

#define DEQUANT_FLOAT(name, T, LOAD16)                                           \
    static void name(const void *src, float *dst, int64_t n)                     \
    {                                                                            \
        const T *s = src;                                                        \
        int64_t i = 0;                                                           \
        for (; i + 16 <= n; i += 16)                                             \
            _mm512_storeu_ps(dst + i, LOAD16(s + i, 0xffff));                    \
        if (i < n) {                                                             \
            __mmask16 m = (__mmask16)((1u << (n - i)) - 1);                      \
            _mm512_mask_storeu_ps(dst + i, m, LOAD16(s + i, m));                 \
        }                                                                        \
    }

DEQUANT_FLOAT(dequant_f16, uint16_t, load16_f16)
DEQUANT_FLOAT(dequant_bf16, uint16_t, load16_bf16)

/* 16 int8 values times d. */
ALWAYS_INLINE void
store16_i8(float *dst, __m128i q, __m512 d)
{
    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d));
}

static void
dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        __m512 d = _mm512_set1_ps(f16(b[i].d));
        store16_i8(dst, _mm_loadu_si128((const __m128i *)b[i].qs), d);
        store16_i8(dst + 16, _mm_loadu_si128((const __m128i *)(b[i].qs + 16)), d);
    }
}

static void
dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_0 *b = src;
    const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        __m512 d = _mm512_set1_ps(f16(b[i].d));
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        store16_i8(dst, _mm_sub_epi8(_mm_and_si128(q, lo4), eight), d);
        store16_i8(dst + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), eight), d);
    }
}

static void
dequant_q4_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_k *b = src;
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++) {
        uint8_t s[16];
        _mm_storeu_si128((__m128i *)s, q4k_scales(b[i].scales));
        float d = f16(b[i].d), dmin = f16(b[i].dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            __m512 ds = _mm512_set1_ps(d * s[j]), dm = _mm512_set1_ps(dmin * s[8 + j]);
            for (int l = 0; l < 32; l += 16) {
                __m128i q = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * (j / 2) + l));
                q = _mm_and_si128(_mm_srli_epi16(q, 4 * (j & 1)), lo4);
                __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                _mm512_storeu_ps(dst + l, _mm512_sub_ps(_mm512_mul_ps(ds, v), dm));
            }
        }
    }
}

static void
dequant_q6_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q6_k *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++, dst += ENGINE_QK_K) {
        float d = f16(b[i].d);
        int8_t v[ENGINE_QK_K];
        __m512i q[4];
        q6k_unpack(b[i].ql, b[i].qh, q);
        q6k_unpack(b[i].ql + 64, b[i].qh + 32, q + 2);
        UNROLL for (int j = 0; j < 4; j++)
            _mm512_storeu_si512(v + 64 * j, _mm512_sub_epi8(q[j], _mm512_set1_epi8(32)));
        for (int g = 0; g < 16; g++)
            store16_i8(dst + 16 * g, _mm_loadu_si128((const __m128i *)(v + 16 * g)),
                       _mm512_set1_ps(d * b[i].scales[g]));
    }
}

/* ---- f32 GEMM on packed panels (large batches) ------------------------ */

/* Transposes 16 rows of 16 floats in place: r[i][j] becomes r[j][i]. */
ALWAYS_INLINE void
transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    UNROLL for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* per lane: a0 b0 a1 b1 */
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* a2 b2 a3 b3 */
    }
    UNROLL for (int i = 0; i < 4; i++) { /* u[4i + j], lane L: column 4L + j of rows 4i..4i+3 */
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    UNROLL for (int j = 0; j < 4; j++) {
        __m512 v = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);    /* lanes 0, 2 of groups 0, 1 */
        __m512 w = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);    /* lanes 1, 3 */
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
        r[j] = _mm512_shuffle_f32x4(v, v2, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(v, v2, 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(w, w2, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(w, w2, 0xdd);
    }
}

/*
 * Copies the n x k matrix src (rows stride bytes apart, elements of type t,
 * n <= 16, zero rows after n) transposed into dst as f32: column kk goes to
 * dst + kk * dstride, width floats (lanes beyond width are not stored).
 */
ALWAYS_INLINE void
pack_transposed_t(enum gguf_ttype t, const void *src, size_t stride, int n, int64_t k,
                  float *dst, int64_t dstride, int width)
{
    __mmask16 wm = (__mmask16)((1u << width) - 1);
    size_t esize = t == GGUF_T_F32 ? 4 : 2;
    int64_t kk = 0;
    for (; kk + 16 <= k; kk += 16) {
        __m512 r[16];
        UNROLL for (int i = 0; i < 16; i++) {
            const char *p = (const char *)src + i * stride + kk * esize;
            r[i] = i >= n ? _mm512_setzero_ps()
                 : t == GGUF_T_F32 ? _mm512_loadu_ps(p)
                 : t == GGUF_T_F16 ? load16_f16(p, 0xffff) : load16_bf16(p, 0xffff);
        }
        transpose16(r);
        UNROLL for (int c = 0; c < 16; c++)
            store16_f32(dst + (kk + c) * dstride, wm, r[c]);
    }
    for (; kk < k; kk++) {
        for (int i = 0; i < width; i++) {
            const char *p = (const char *)src + i * stride;
            float v = i >= n ? 0
                    : t == GGUF_T_F32 ? ((const float *)p)[kk]
                    : t == GGUF_T_F16 ? f16(((const uint16_t *)p)[kk])
                    : engine__bf16_to_f32(((const uint16_t *)p)[kk]);
            dst[kk * dstride + i] = v;
        }
    }
}

static void
gemm_pack_x(const float *x, int64_t m, int64_t k, int64_t tb, float *xt)
{
    int64_t t0 = tb * ENGINE_GEMM_TOK;
    int n = (int)(m - t0 < ENGINE_GEMM_TOK ? m - t0 : ENGINE_GEMM_TOK);
    pack_transposed_t(GGUF_T_F32, x + t0 * k, (size_t)k * sizeof(float), n, k, xt,
                      ENGINE_GEMM_TOK, ENGINE_GEMM_TOK);
}

/* One function per source type, so the loads above are chosen at compile time. */
#define PACK_HALF(name, T)                                                                  \
    static void name(const void *rows, size_t stride, int n, int64_t k, float *ap)         \
    {                                                                                       \
        int lo = n < 16 ? n : 16;                                                           \
        pack_transposed_t(T, rows, stride, lo, k, ap, ENGINE_GEMM_ROWS, 16);                \
        pack_transposed_t(T, n > 16 ? (const char *)rows + 16 * stride : rows, stride,      \
                          n - lo, k, ap + 16, ENGINE_GEMM_ROWS, 16);                        \
    }

PACK_HALF(pack_w_f32, GGUF_T_F32)
PACK_HALF(pack_w_f16, GGUF_T_F16)
PACK_HALF(pack_w_bf16, GGUF_T_BF16)

static void
gemm_pack_w(enum gguf_ttype t, const void *rows, size_t stride, int n, int64_t k, float *ap)
{
    if (t == GGUF_T_F16)
        pack_w_f16(rows, stride, n, k, ap);
    else if (t == GGUF_T_BF16)
        pack_w_bf16(rows, stride, n, k, ap);
    else
        pack_w_f32(rows, stride, n, k, ap);
}

/*
 * 32 weight rows x T tokens: per step kk, two vectors of weights (rows in
 * lanes; f32, or f16 panels converted as they are read) times one broadcast
 * activation per token, 2T accumulators.
 */
ALWAYS_INLINE void
tile_n(int64_t k, const void *apv, bool half, const float *xt, int T, float *y, int64_t ldy,
       __mmask16 m0, __mmask16 m1)
{
    const float *ap = apv;
    const uint16_t *ah = apv;
    __m512 acc0[ENGINE_GEMM_TOK], acc1[ENGINE_GEMM_TOK];
    UNROLL for (int t = 0; t < T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; kk++) {
        __m512 a0, a1;
        if (half) {
            a0 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(ah + kk * ENGINE_GEMM_ROWS)));
            a1 = _mm512_cvtph_ps(
                _mm256_load_si256((const __m256i *)(ah + kk * ENGINE_GEMM_ROWS + 16)));
        } else {
            a0 = _mm512_load_ps(ap + kk * ENGINE_GEMM_ROWS);
            a1 = _mm512_load_ps(ap + kk * ENGINE_GEMM_ROWS + 16);
        }
        UNROLL for (int t = 0; t < T; t++) {
            __m512 b = _mm512_set1_ps(xt[kk * ENGINE_GEMM_TOK + t]);
            acc0[t] = _mm512_fmadd_ps(a0, b, acc0[t]);
            acc1[t] = _mm512_fmadd_ps(a1, b, acc1[t]);
        }
    }
    UNROLL for (int t = 0; t < T; t++) {
        store16_f32(y + t * ldy, m0, acc0[t]);
        store16_f32(y + t * ldy + 16, m1, acc1[t]);
    }
}

ALWAYS_INLINE void
tile_any(int64_t k, const void *ap, bool half, const float *xt, int n_tok, int n_rows, float *y,
         int64_t ldy)
{
    __mmask16 m0 = (__mmask16)(n_rows >= 16 ? 0xffff : (1u << n_rows) - 1);
    __mmask16 m1 = (__mmask16)(n_rows >= 32   ? 0xffff
                               : n_rows > 16 ? (1u << (n_rows - 16)) - 1
                                             : 0);
    switch (n_tok) {
#define TILE_CASE(T) case T: tile_n(k, ap, half, xt, T, y, ldy, m0, m1); break;
    TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9) TILE_CASE(8) TILE_CASE(7)
    TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2) TILE_CASE(1)
#undef TILE_CASE
    default: break;
    }
}

static void
gemm_tile(int64_t k, const float *ap, const float *xt, int n_tok, int n_rows, float *y,
          int64_t ldy)
{
    tile_any(k, ap, false, xt, n_tok, n_rows, y, ldy);
}

static void
gemm_tile_f16(int64_t k, const uint16_t *ap, const float *xt, int n_tok, int n_rows, float *y,
              int64_t ldy)
{
    tile_any(k, ap, true, xt, n_tok, n_rows, y, ldy);
}

/*
 * Four whole groups of F16 panels (128 rows, gs halves apart) against T <= 2
 * tokens: a decode step's tile, whose one chain per output would otherwise
 * wait on the FMA latency; each output is the same chain over kk as in
 * gemm_tile_f16, so results do not depend on which tile computed them.
 */
ALWAYS_INLINE void
tile4_f16(int64_t k, const uint16_t *ap, size_t gs, const float *xt, int T, float *y,
          int64_t ldy)
{
    __m512 acc[2][8];
    UNROLL for (int t = 0; t < T; t++)
        UNROLL for (int v = 0; v < 8; v++)
            acc[t][v] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; kk++) {
        __m512 a[8];
        UNROLL for (int v = 0; v < 8; v++)
            a[v] = _mm512_cvtph_ps(_mm256_load_si256(
                (const __m256i *)(ap + (v / 2) * gs + kk * ENGINE_GEMM_ROWS + (v % 2) * 16)));
        UNROLL for (int t = 0; t < T; t++) {
            __m512 b = _mm512_set1_ps(xt[kk * ENGINE_GEMM_TOK + t]);
            UNROLL for (int v = 0; v < 8; v++)
                acc[t][v] = _mm512_fmadd_ps(a[v], b, acc[t][v]);
        }
    }
    UNROLL for (int t = 0; t < T; t++)
        UNROLL for (int v = 0; v < 8; v++)
            _mm512_storeu_ps(y + t * ldy + v * 16, acc[t][v]);
}

static void
gemm_tile4_f16(int64_t k, const uint16_t *ap, size_t gs, const float *xt, int n_tok, float *y,
               int64_t ldy)
{
    if (n_tok == 1)
        tile4_f16(k, ap, gs, xt, 1, y, ldy);
    else
        tile4_f16(k, ap, gs, xt, 2, y, ldy);
}

/* ---- Attention ----------------------------------------------------------- */

#define VW 16
typedef __m512 vf;
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_HSUM(v) hsum_ps512(v)
#define V_HMAX(v) _mm512_reduce_max_ps(v)
#define V_ROUND(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2I(v) _mm512_castsi512_ps(_mm512_slli_epi32( \
        _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(127)), 23))
#define V_LOADH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define V_STOREH(p, v) \
    _mm256_storeu_si256((__m256i *)(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT))
#define S_F16_TO_F32(h) _cvtsh_ss(h)
#define S_F32_TO_F16(x) _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)
#include "vec_simd.h"

const struct engine_variant engine__variant_avx512 = {
    .name = "avx512",
    .attn = { { attn_scores_f32, attn_scores_f16 }, attn_max, attn_exp,
              { attn_mix_f32, attn_mix_f16 }, to_f16 },
    .silu_mul = silu_mul,
    .rmsnorm = rmsnorm,
    .rank_update = rank_update,
    .rank_update_f16 = rank_update_f16,
    .gemm_pack_x = gemm_pack_x,
    .gemm_pack_w = gemm_pack_w,
    .gemm_tile = gemm_tile,
    .gemm_tile_f16 = gemm_tile_f16,
    .gemm_tile4_f16 = gemm_tile4_f16,
    .act = { [ENGINE_ACT_Q8A] = act_q8a, [ENGINE_ACT_Q8K] = act_q8k },
    .type = {
        [GGUF_T_F32] = { ENGINE_ACT_F32, gemv_f32, dequant_f32, 8, NULL },
        [GGUF_T_F16] = { ENGINE_ACT_F32, gemv_f16, dequant_f16, 8, NULL },
        [GGUF_T_BF16] = { ENGINE_ACT_F32, gemv_bf16, dequant_bf16, 8, NULL },
        [GGUF_T_Q8_0] = { ENGINE_ACT_Q8A, gemv_q8_0, dequant_q8_0, 24, gemv_q8_0_x16 },
        [GGUF_T_Q4_0] = { ENGINE_ACT_Q8A, gemv_q4_0, dequant_q4_0, 16, gemv_q4_0_x16 },
        [GGUF_T_Q4_K] = { ENGINE_ACT_Q8K, gemv_q4_k, dequant_q4_k, 96, NULL },
        [GGUF_T_Q6_K] = { ENGINE_ACT_Q8K, gemv_q6_k, dequant_q6_k, ENGINE_GEMM_NEVER, NULL },
    },
};

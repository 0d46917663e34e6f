/*
 * simd_avx2.c - the AVX2 + FMA + F16C kernel variant.
 *
 * This file alone is compiled with -mavx2 -mfma -mf16c; nothing in it runs
 * before engine__kernels_init() has checked the CPU. Integer dots use
 * maddubs (u8 x s8 -> s16 pairs) then madd (-> s32), with the sign trick for
 * Q8_0 (|w| x sign(x, w)) and the activation's -8 * sum term for Q4_0.
 *
 * The quantized gemv kernels work on tiles of 8 (weight row, activation row)
 * pairs with exact int32 block sums and the scalar reference's float
 * arithmetic (see simd_avx512.c), so they give the scalar results bit for
 * bit, whatever m. Float rows pass over a weight row once for up to four
 * activation rows (DOT_ROWS). Large batches use OpenBLAS (matmul.c).
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
hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE int
hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

ALWAYS_INLINE float
f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Sum of u8 x s8 products in groups of four, as 8 s32 lanes. */
ALWAYS_INLINE __m256i
dot_u8s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/*
 * The gemv driver: for each weight row, the activation rows in groups of
 * DOT_ROWS (then the remainder), calling DOTN with a constant row count so
 * the per-row accumulators live in registers.
 */
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

ALWAYS_INLINE __m256
load8_f32(const void *p)
{
    return _mm256_loadu_ps(p);
}

ALWAYS_INLINE __m256
load8_f16(const void *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128(p));
}

ALWAYS_INLINE __m256
load8_bf16(const void *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/*
 * Float rows: two accumulators of 8 lanes per pair (16 elements a step),
 * summed as a tree at the end, then the k % 16 tail in order. Rows are
 * prefetched 1 KB ahead: the hardware prefetcher alone lags (simd_avx512.c).
 */
#define DOT_FLOAT(name, T, LOAD8, CONV)                                                 \
    ALWAYS_INLINE void name(int64_t k, const void *wr, const char *a, size_t astride,   \
                            int R, float *y, int64_t ldy)                               \
    {                                                                                   \
        const T *w = wr;                                                                \
        __m256 acc0[DOT_ROWS], acc1[DOT_ROWS];                                          \
        UNROLL for (int r = 0; r < R; r++)                                                     \
            acc0[r] = acc1[r] = _mm256_setzero_ps();                                    \
        int64_t i = 0;                                                                  \
        for (; i + 16 <= k; i += 16) {                                                  \
            __builtin_prefetch((const char *)(w + i) + 1024, 0, 3);                     \
            __m256 w0 = LOAD8(w + i), w1 = LOAD8(w + i + 8);                            \
            UNROLL for (int r = 0; r < R; r++) {                                               \
                const float *x = (const float *)(a + r * astride) + i;                  \
                acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc0[r]);             \
                acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), acc1[r]);         \
            }                                                                           \
        }                                                                               \
        UNROLL for (int r = 0; r < R; r++) {                                                   \
            const float *x = (const float *)(a + r * astride);                          \
            float s = hsum_ps(_mm256_add_ps(acc0[r], acc1[r]));                         \
            for (int64_t t = i; t < k; t++)                                             \
                s += CONV(w[t]) * x[t];                                                 \
            y[r * ldy] = s;                                                             \
        }                                                                               \
    }

#define AS_F32(v) (v)
#define BF16(v) engine__bf16_to_f32(v)
DOT_FLOAT(dotn_f32, float, load8_f32, AS_F32)
DOT_FLOAT(dotn_f16, uint16_t, load8_f16, f16)
DOT_FLOAT(dotn_bf16, uint16_t, load8_bf16, BF16)
GEMV(gemv_f32, dotn_f32)
GEMV(gemv_f16, dotn_f16)
GEMV(gemv_bf16, dotn_bf16)

/* ---- Q8_0 and Q4_0 against Q8A activations ---------------------------- */

/*
 * Tiles of W weight rows x R activation rows (W * R <= 8 pairs), one block at
 * a time, as in simd_avx512.c: each pair's block product is an exact int32,
 * the eight pairs' lanes are summed into one vector (lane p = i * R + r), and
 * sum = sum + (dw * dx) * isum is done lane by lane, which is the scalar
 * reference's arithmetic. Q8_0 uses the sign trick (|w| . sign(x, w), exact:
 * no s16 saturation with |w| <= 128, |x| <= 127); Q4_0 adds c = -8 * sum(x).
 * Per block, the activation side of a group of R rows (dx and c, spread to
 * the pair lanes) is prepared once in a q8a_group for all weight rows.
 */
#define Q8A_CHUNK 128 /* blocks per q8a_group: 8 KB of stack */

struct q8a_group {
    __m256 dx[Q8A_CHUNK];                 /* lane p: dx of activation row p % R */
    __m256i corr[Q8A_CHUNK];              /* lane p: c of row p % R (Q4_0) */
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
            c[p] = q4 ? engine__act_c(row, k)[b] : 0;
        }
        g->dx[b - b0] = _mm256_loadu_ps(dx);
        g->corr[b - b0] = _mm256_loadu_si256((const __m256i *)c);
    }
}

/* Each step prefetches its share of the next tile's rows; see simd_avx512.c. */
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
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                            _mm256_permute2x128_si256(ab, cd, 0x31));
}

/* The f16 at wb of weight row p / R, as f32, for each pair lane p. */
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
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0 / R, 1 / R, 2 / R, 3 / R, 4 / R,
                                                         5 / R, 6 / R, 7 / R));
}

/* Blocks [b0, b1) of a tile; the sums continue from y unless first. */
ALWAYS_INLINE void
q8a_tile(bool q4, int64_t k, const char *w, size_t wstride, const char *a, size_t astride,
         const struct q8a_group *g, int64_t b0, int64_t b1, bool first, int W, int R,
         float *y, int64_t ldy)
{
    const size_t bsize = q4 ? sizeof(struct engine_block_q4_0) : sizeof(struct engine_block_q8_0);
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
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
            if (q4) {
                __m128i q = _mm_loadu_si128((const __m128i *)(wb + i * wstride + 2));
                __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lo4);
                UNROLL for (int r = 0; r < R; r++) {
                    __m256i x = _mm256_load_si256((const __m256i *)(a + r * astride) + b);
                    p[i * R + r] = dot_u8s8(u, x);
                }
            } else {
                __m256i q = _mm256_loadu_si256((const __m256i *)(wb + i * wstride + 2));
                __m256i aq = _mm256_sign_epi8(q, q);
                UNROLL for (int r = 0; r < R; r++) {
                    __m256i x = _mm256_load_si256((const __m256i *)(a + r * astride) + b);
                    p[i * R + r] = dot_u8s8(aq, _mm256_sign_epi8(x, q));
                }
            }
        }
        UNROLL for (int q = W * R; q < 8; q++)
            p[q] = _mm256_setzero_si256();
        __m256i isum = reduce8(p);
        __m256 dx;
        if (R == 1) {
            if (q4)
                isum = _mm256_add_epi32(isum, _mm256_set1_epi32(engine__act_c(a, k)[b]));
            dx = _mm256_set1_ps(engine__act_d(a, k)[b]);
        } else {
            isum = _mm256_add_epi32(isum, g->corr[b - b0]);
            dx = g->dx[b - b0];
        }
        __m256 scale = _mm256_mul_ps(pair_f16(wb, wstride, W, R), dx);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
    }
    _mm256_storeu_ps(out, acc);
    UNROLL for (int i = 0; i < W; i++)
        UNROLL for (int r = 0; r < R; r++)
            y[r * ldy + i] = out[i * R + r];
}

/* One function per tile shape, each compiled on its own so its accumulators get registers. */
typedef void (*q8a_tile_fn)(int64_t k, const char *w, size_t wstride, const char *a,
                            size_t astride, const struct q8a_group *g, int64_t b0, int64_t b1,
                            bool first, float *y, int64_t ldy);

#define Q8A_TILE(WW, RR)                                                                      \
    static void q8_0_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride, const char *a, \
                                      size_t astride, const struct q8a_group *g,              \
                                      int64_t b0, int64_t b1, bool first, float *y,           \
                                      int64_t ldy)                                            \
    {                                                                                         \
        q8a_tile(false, k, w, wstride, a, astride, g, b0, b1, first, WW, RR, y, ldy);         \
    }                                                                                         \
    static void q4_0_tile_##WW##x##RR(int64_t k, const char *w, size_t wstride, const char *a, \
                                      size_t astride, const struct q8a_group *g,              \
                                      int64_t b0, int64_t b1, bool first, float *y,           \
                                      int64_t ldy)                                            \
    {                                                                                         \
        q8a_tile(true, k, w, wstride, a, astride, g, b0, b1, first, WW, RR, y, ldy);          \
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

/* Activation rows in groups of R = 8, 4, 2 or 1, weight rows W = 8 / R at a time. */
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

/* ---- Q4_K and Q6_K against Q8K activations ---------------------------- */

/*
 * The 8 scales and 8 mins of a Q4_K block as 16 bytes [sc0..7, mn0..7]:
 * bytes 0-3 hold sc0-3 (low 6 bits) and the top 2 bits of sc4-7, bytes 4-7
 * the same for the mins, bytes 8-11 the low 4 bits of sc4-7 and mn4-7.
 */
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

/* One Q4_K super-block against R rows: pi[r] the scaled products, pm[r] mins x sums (8 lanes). */
ALWAYS_INLINE void
q4k_pairs(const struct engine_block_q4_k *w, const char *a, size_t astride, int64_t k,
          int64_t b, int R, __m256i *pi, __m256i *pm)
{
    __m128i s8 = q4k_scales(w->scales);
    __m256i s16 = _mm256_cvtepu8_epi16(s8);                       /* sc0..7, mn0..7 */
    __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(s16));
    __m128i mn = _mm256_extracti128_si256(s16, 1);
    __m256i mn2 = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
    UNROLL for (int r = 0; r < R; r++)
        pi[r] = _mm256_setzero_si256();
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    UNROLL for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)w->qs + c);
        __m256i ql = _mm256_and_si256(q, lo4), qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
        /* broadcast scale 2c and 2c+1 (16-bit) to every lane */
        __m256i sl = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0100 + 0x0404 * c)));
        __m256i sh = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0302 + 0x0404 * c)));
        UNROLL for (int r = 0; r < R; r++) {
            const __m256i *x = (const __m256i *)(a + r * astride + b * ENGINE_QK_K) + 2 * c;
            __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(ql, _mm256_load_si256(x)), sl);
            __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(qh, _mm256_load_si256(x + 1)), sh);
            pi[r] = _mm256_add_epi32(pi[r], _mm256_add_epi32(pl, ph));
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        const int16_t *bs = engine__act_bsums(a + r * astride, k) + 16 * b;
        pm[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), mn2);
    }
}

/* The four 32-element quarters of one 128-element half of a Q6_K block, 0..63. */
ALWAYS_INLINE void
q6k_unpack(const uint8_t *ql, const uint8_t *qh, __m256i q[4])
{
    const __m256i lo4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, lo4),
                           _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, lo4),
                           _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                           _mm256_and_si256(h, m2));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
}

/* One Q6_K super-block against R rows: pi[r] = sum_g sc_g q.x, pm[r] = sum_g sc_g bsum_g. */
ALWAYS_INLINE void
q6k_pairs(const struct engine_block_q6_k *w, const char *a, size_t astride, int64_t k,
          int64_t b, int R, __m256i *pi, __m256i *pm)
{
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
    UNROLL for (int r = 0; r < R; r++)
        pi[r] = _mm256_setzero_si256();
    UNROLL for (int half = 0; half < 2; half++) {
        __m256i q[4];
        q6k_unpack(w->ql + 64 * half, w->qh + 32 * half, q);
        __m256i sh = _mm256_broadcastsi128_si256(half ? _mm256_extracti128_si256(sc16, 1)
                                                      : _mm256_castsi256_si128(sc16));
        UNROLL for (int j = 0; j < 4; j++) {
            /* low lane: scale of group 2j, high lane: group 2j + 1 (16-bit each) */
            __m256i pick = _mm256_set_m128i(_mm_set1_epi16((short)(0x0302 + 0x0404 * j)),
                                            _mm_set1_epi16((short)(0x0100 + 0x0404 * j)));
            __m256i s = _mm256_shuffle_epi8(sh, pick);
            UNROLL for (int r = 0; r < R; r++) {
                const __m256i *x = (const __m256i *)(a + r * astride + b * ENGINE_QK_K) +
                                   4 * half + j;
                __m256i p = _mm256_maddubs_epi16(q[j], _mm256_load_si256(x));
                pi[r] = _mm256_add_epi32(pi[r], _mm256_madd_epi16(p, s));
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        const int16_t *bs = engine__act_bsums(a + r * astride, k) + 16 * b;
        pm[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), sc16);
    }
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

/* Q4_K and Q6_K tiles: as for Q8_0, per super-block; see simd_avx512.c. */
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

/* Largest |x| of n floats (n a multiple of 32). */
ALWAYS_INLINE float
amax_ps(const float *x, int n)
{
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8)
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + j), abs));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/*
 * Rounds 32 values x * id to nearest even, stores them as int8 and returns
 * the four int32 vectors (elements 0-7, 8-15, 16-23, 24-31).
 */
ALWAYS_INLINE void
quant32(const float *x, __m256 id, int8_t *qs, __m256i v[4])
{
    UNROLL for (int j = 0; j < 4; j++)
        v[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    /* packs interleave the 128-bit lanes: put the 8 dwords back in order */
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_store_si256((__m256i *)qs, p);
}

static void
act_q8a(const float *x, void *dst, int64_t k)
{
    int8_t *qs = dst;
    float *d = engine__act_d(dst, k);
    int32_t *c = engine__act_c(dst, k);
    for (int64_t b = 0; b < k / ENGINE_QK; b++, x += ENGINE_QK) {
        float amax = amax_ps(x, ENGINE_QK);
        __m256i v[4];
        quant32(x, _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0), qs + b * ENGINE_QK, v);
        d[b] = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT)); /* f16, as ggml */
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
        c[b] = -8 * hsum_epi32(s);
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
        __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0);
        d[b] = amax / 127.0f;
        for (int j = 0; j < ENGINE_QK_K / 32; j++) {
            __m256i v[4];
            quant32(x + 32 * j, id, qs + b * ENGINE_QK_K + 32 * j, v);
            bs[16 * b + 2 * j] = (int16_t)hsum_epi32(_mm256_add_epi32(v[0], v[1]));
            bs[16 * b + 2 * j + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(v[2], v[3]));
        }
    }
}

/* ---- Dequantization (for sgemm panels) -------------------------------- */

static void
dequant_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void
dequant_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load8_f16(s + i));
    for (; i < n; i++)
        dst[i] = f16(s[i]);
}

static void
dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load8_bf16(s + i));
    for (; i < n; i++)
        dst[i] = engine__bf16_to_f32(s[i]);
}

/* 8 bytes as int32 lanes, times d. */
ALWAYS_INLINE void
store8_i8(float *dst, const void *q, __m256 d)
{
    __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q));
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
}

static void
dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        __m256 d = _mm256_set1_ps(f16(b[i].d));
        for (int j = 0; j < ENGINE_QK; j += 8)
            store8_i8(dst + j, b[i].qs + j, d);
    }
}

static void
dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_0 *b = src;
    const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        __m256 d = _mm256_set1_ps(f16(b[i].d));
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        int8_t v[32];
        _mm_storeu_si128((__m128i *)v, _mm_sub_epi8(_mm_and_si128(q, lo4), eight));
        _mm_storeu_si128((__m128i *)(v + 16),
                         _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), eight));
        for (int j = 0; j < ENGINE_QK; j += 8)
            store8_i8(dst + j, v + j, d);
    }
}

static void
dequant_q4_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_k *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++) {
        uint8_t s[16];
        _mm_storeu_si128((__m128i *)s, q4k_scales(b[i].scales));
        float d = f16(b[i].d), dmin = f16(b[i].dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            __m256 ds = _mm256_set1_ps(d * s[j]), dm = _mm256_set1_ps(dmin * s[8 + j]);
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l += 8) {
                __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + l)));
                v = _mm256_and_si256(_mm256_srli_epi32(v, 4 * (j & 1)), _mm256_set1_epi32(15));
                __m256 f = _mm256_cvtepi32_ps(v);
                _mm256_storeu_ps(dst + l, _mm256_sub_ps(_mm256_mul_ps(ds, f), dm));
            }
        }
    }
}

static void
dequant_q6_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q6_k *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++) {
        float d = f16(b[i].d);
        UNROLL for (int half = 0; half < 2; half++) {
            __m256i q[4];
            q6k_unpack(b[i].ql + 64 * half, b[i].qh + 32 * half, q);
            int8_t v[128];
            UNROLL for (int j = 0; j < 4; j++)
                _mm256_storeu_si256((__m256i *)(v + 32 * j),
                                    _mm256_sub_epi8(q[j], _mm256_set1_epi8(32)));
            for (int g = 0; g < 8; g++) {
                __m256 s = _mm256_set1_ps(d * b[i].scales[8 * half + g]);
                store8_i8(dst + 16 * g, v + 16 * g, s);
                store8_i8(dst + 16 * g + 8, v + 16 * g + 8, s);
            }
            dst += 128;
        }
    }
}

/* ---- Attention ----------------------------------------------------------- */

ALWAYS_INLINE float
hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

#define VW 8
typedef __m256 vf;
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_HSUM(v) hsum_ps(v)
#define V_HMAX(v) hmax_ps(v)
#define V_ROUND(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2I(v) _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127)), 23))
#define V_LOADH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define V_STOREH(p, v) \
    _mm_storeu_si128((__m128i *)(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT))
#define S_F16_TO_F32(h) _cvtsh_ss(h)
#define S_F32_TO_F16(x) _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)
#include "vec_simd.h"

const struct engine_variant engine__variant_avx2 = {
    .name = "avx2",
    .attn = { { attn_scores_f32, attn_scores_f16 }, attn_max, attn_exp,
              { attn_mix_f32, attn_mix_f16 }, to_f16 },
    .silu_mul = silu_mul,
    .rmsnorm = rmsnorm,
    .rank_update = rank_update,
    .rank_update_f16 = rank_update_f16,
    .act = { [ENGINE_ACT_Q8A] = act_q8a, [ENGINE_ACT_Q8K] = act_q8k },
    .type = {
        [GGUF_T_F32] = { ENGINE_ACT_F32, gemv_f32, dequant_f32, 12, NULL },
        [GGUF_T_F16] = { ENGINE_ACT_F32, gemv_f16, dequant_f16, 12, NULL },
        [GGUF_T_BF16] = { ENGINE_ACT_F32, gemv_bf16, dequant_bf16, 12, NULL },
        [GGUF_T_Q8_0] = { ENGINE_ACT_Q8A, gemv_q8_0, dequant_q8_0, 128, NULL },
        [GGUF_T_Q4_0] = { ENGINE_ACT_Q8A, gemv_q4_0, dequant_q4_0, 64, NULL },
        [GGUF_T_Q4_K] = { ENGINE_ACT_Q8K, gemv_q4_k, dequant_q4_k, ENGINE_GEMM_NEVER, NULL },
        [GGUF_T_Q6_K] = { ENGINE_ACT_Q8K, gemv_q6_k, dequant_q6_k, ENGINE_GEMM_NEVER, NULL },
    },
};

/*
 * scan.c - a store's rows as int8, and the scan that scores a query against
 * all of them.
 *
 * Row r is kept as q8[r] (dim int8) with a scale s8[r], so the row is about
 * s8[r] * q8[r]; a quarter of the float rows' bytes, which is what a scan of
 * every row costs. The scan gives integer dot products with the query
 * quantised the same way; search.c takes the best few hundred of those and
 * scores them again on the float rows, so the order it returns is exact
 * among those. The AVX2 scan is chosen at run time; the scalar one is the
 * reference (the same integers).
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "retrieval_int.h"

void
retrieval__q8_row(const float *v, int dim, int8_t *q, float *scale)
{
    float amax = 0;
    for (int d = 0; d < dim; d++)
        amax = fmaxf(amax, fabsf(v[d]));
    *scale = amax / 127.0f;
    float inv = amax > 0 ? 127.0f / amax : 0;
    for (int d = 0; d < dim; d++)
        q[d] = (int8_t)lrintf(v[d] * inv);
}

static void
scan_ref(const int8_t *rows, long long n, int dim, const int16_t *q, int32_t *out)
{
    for (long long r = 0; r < n; r++) {
        const int8_t *p = rows + r * dim;
        int32_t s = 0;
        for (int d = 0; d < dim; d++)
            s += p[d] * q[d];
        out[r] = s;
    }
}

__attribute__((target("avx2"))) static void
scan_avx2(const int8_t *rows, long long n, int dim, const int16_t *q, int32_t *out)
{
    int full = dim / 16 * 16;
    for (long long r = 0; r < n; r++) {
        const int8_t *p = rows + r * dim;
        __m256i acc = _mm256_setzero_si256();
        for (int d = 0; d < full; d += 16) {
            __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + d)));
            __m256i b = _mm256_loadu_si256((const __m256i *)(q + d));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        int32_t t = _mm_cvtsi128_si32(s);
        for (int d = full; d < dim; d++)
            t += p[d] * q[d];
        out[r] = t;
    }
}

void
retrieval__q8_scan(const int8_t *rows, long long n, int dim, const int16_t *q, int32_t *out)
{
    static int avx2 = -1;
    if (avx2 < 0)
        avx2 = __builtin_cpu_supports("avx2");
    (avx2 ? scan_avx2 : scan_ref)(rows, n, dim, q, out);
}

/*
 * vec_simd.h - the attention and element-wise kernels, written once over a
 * small vector layer and included by each variant file (quant.c with one
 * lane, simd_avx2.c, simd_avx512.c) after it defines, for its width:
 *
 *   VW               floats per vector
 *   vf               the vector type
 *   V_LOAD(p) V_STORE(p, v) V_SET1(x) V_ZERO()
 *   V_FMA(a, b, c)   a * b + c, one rounding
 *   V_MUL V_ADD V_SUB V_DIV V_MAX V_MIN(a, b)
 *   V_HSUM(v) V_HMAX(v)      horizontal sum / max to a float
 *   V_ROUND(v)       to the nearest integer (ties to even), as floats
 *   V_POW2I(v)       2^v for integral v in [-126, 127], as floats
 *   V_LOADH(p)       VW f16 values at p, as floats; V_STOREH(p, v) the other way
 *   S_F16_TO_F32(h) S_F32_TO_F16(x)   one value either way (round to nearest even)
 *
 * Each output element is summed in one fixed order whatever the batch or
 * the number of positions, so a row's attention never depends on the rows
 * it was computed with. The scalar tails use fmaf, the vector body's FMA.
 */
#include <math.h>

enum { KB = ENGINE_KV_BLOCK };

/*
 * e^x, within about an ulp, for x in [-87.3, 88] (clamped there: tiny values
 * stay normal, large ones finite): 2^n * p(r), r = x - n ln 2, |r| <= ln2 / 2.
 */
static inline vf
v_exp(vf x)
{
    x = V_MIN(V_MAX(x, V_SET1(-87.3f)), V_SET1(88.0f));
    vf n = V_ROUND(V_MUL(x, V_SET1(1.44269504088896341f)));
    vf r = V_FMA(n, V_SET1(-0.693145751953125f), x);     /* ln 2, high bits */
    r = V_FMA(n, V_SET1(-1.428606765330187e-06f), r);    /* ln 2, the rest */
    vf p = V_SET1(1.0f / 5040);
    p = V_FMA(p, r, V_SET1(1.0f / 720));
    p = V_FMA(p, r, V_SET1(1.0f / 120));
    p = V_FMA(p, r, V_SET1(1.0f / 24));
    p = V_FMA(p, r, V_SET1(1.0f / 6));
    p = V_FMA(p, r, V_SET1(0.5f));
    p = V_FMA(p, r, V_SET1(1.0f));
    p = V_FMA(p, r, V_SET1(1.0f));
    return V_MUL(p, V_POW2I(n));
}

static float
s_exp(float x)
{
    float v[VW] = { x };
    V_STORE(v, v_exp(V_LOAD(v)));
    return v[0];
}

/* a[t] = e^(a[t] - max) for t < n (every a[t] <= max); returns their sum. */
static float
attn_exp(float *a, int n, float max)
{
    vf sum = V_ZERO(), m = V_SET1(max);
    int t = 0;
    for (; t + VW <= n; t += VW) {
        vf e = v_exp(V_SUB(V_LOAD(a + t), m));
        V_STORE(a + t, e);
        sum = V_ADD(sum, e);
    }
    float s = V_HSUM(sum);
    for (; t < n; t++) {
        a[t] = s_exp(a[t] - max);
        s += a[t];
    }
    return s;
}

/* The largest of a[0..n). */
static float
attn_max(const float *a, int n)
{
    vf m = V_SET1(-INFINITY);
    int t = 0;
    for (; t + VW <= n; t += VW)
        m = V_MAX(m, V_LOAD(a + t));
    float x = V_HMAX(m);
    for (; t < n; t++)
        x = a[t] > x ? a[t] : x;
    return x;
}

#define KV_T float
#define KV_LOAD(p) V_LOAD(p)
#define KV_S(x) (x)
#define KV_NAME(f) f##_f32
#include "vec_attn.h"
#undef KV_T
#undef KV_LOAD
#undef KV_S
#undef KV_NAME

#define KV_T uint16_t
#define KV_LOAD(p) V_LOADH(p)
#define KV_S(x) S_F16_TO_F32(x)
#define KV_NAME(f) f##_f16
#include "vec_attn.h"
#undef KV_T
#undef KV_LOAD
#undef KV_S
#undef KV_NAME

/*
 * y[i * stride] = x[i] rounded to f16, for i < n (a K column or a V row of
 * the cache): VW at a time through the vector conversion, then stored.
 */
static void
to_f16(const float *x, uint16_t *y, int n, int stride)
{
    int i = 0;
    for (; i + VW <= n; i += VW) {
        uint16_t h[VW];
        V_STOREH(h, V_LOAD(x + i));
        for (int l = 0; l < VW; l++)
            y[(size_t)(i + l) * stride] = h[l];
    }
    for (; i < n; i++)
        y[(size_t)i * stride] = S_F32_TO_F16(x[i]);
}

/* g[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u, for i < n (SwiGLU). */
static void
silu_mul(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + VW <= n; i += VW) {
        vf x = V_LOAD(g + i);
        vf e = v_exp(V_SUB(V_ZERO(), x));
        V_STORE(g + i, V_MUL(V_DIV(x, V_ADD(V_SET1(1.0f), e)), V_LOAD(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + s_exp(-g[i])) * u[i];
}

/*
 * y[c] += sum over q of t[q] * bt[q * ldb + c], for c < w: a LoRA B step on
 * B transposed, the rank sum done first (one FMA chain per column) and then
 * added to y. LOADV(p) loads VW elements of B as floats, LOADS(x) one.
 */
#define RANK_UPDATE(name, T, LOADV, LOADS)                                              \
    static void name(int rank, const float *t, const T *bt, size_t ldb, int64_t w,     \
                     float *y)                                                         \
    {                                                                                  \
        int64_t c = 0;                                                                 \
        for (; c + VW <= w; c += VW) {                                                 \
            vf acc = V_ZERO();                                                         \
            for (int q = 0; q < rank; q++)                                             \
                acc = V_FMA(V_SET1(t[q]), LOADV(bt + (size_t)q * ldb + c), acc);       \
            V_STORE(y + c, V_ADD(V_LOAD(y + c), acc));                                 \
        }                                                                              \
        for (; c < w; c++) {                                                           \
            float acc = 0;                                                             \
            for (int q = 0; q < rank; q++)                                             \
                acc = fmaf(t[q], LOADS(bt[(size_t)q * ldb + c]), acc);                 \
            y[c] += acc;                                                               \
        }                                                                              \
    }

#define RANK_F32_S(x) (x)
RANK_UPDATE(rank_update, float, V_LOAD, RANK_F32_S)
/* B held as f16: the same sums, in the same order. */
RANK_UPDATE(rank_update_f16, uint16_t, V_LOADH, S_F16_TO_F32)

/* out = x / sqrt(mean(x^2) + eps) * w (RMSNorm), the squares summed in VW lanes. */
static void
rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    vf acc = V_ZERO();
    int i = 0;
    for (; i + VW <= n; i += VW) {
        vf v = V_LOAD(x + i);
        acc = V_FMA(v, v, acc);
    }
    float ss = V_HSUM(acc);
    for (; i < n; i++)
        ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    vf sc = V_SET1(scale);
    for (i = 0; i + VW <= n; i += VW)
        V_STORE(out + i, V_MUL(V_MUL(V_LOAD(x + i), sc), V_LOAD(w + i)));
    for (; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

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
 *
 * Each output element is summed in one fixed order whatever the batch or
 * the number of positions, so a row's attention never depends on the rows
 * it was computed with. The scalar tails use fmaf, the vector body's FMA.
 */
#include <math.h>

enum { KB = ENGINE_KV_BLOCK };

/*
 * s[h * lds + t] = sum over d of q[h * hd + d] * K(t, d), for h < g, t < n:
 * four whole blocks at a time (independent sums), then one, then the last
 * partial block position by position.
 */
static void
attn_scores(int hd, int g, int n, const float *q, const float *const *kt, float *s, size_t lds)
{
    int full = n / KB;
    for (int h = 0; h < g; h++) {
        const float *qh = q + (size_t)h * hd;
        float *sh = s + (size_t)h * lds;
        int j = 0;
        for (; j + 4 <= full; j += 4)
            for (int v0 = 0; v0 < KB; v0 += VW) {
                const float *k0 = kt[j] + v0, *k1 = kt[j + 1] + v0;
                const float *k2 = kt[j + 2] + v0, *k3 = kt[j + 3] + v0;
                vf a0 = V_ZERO(), a1 = V_ZERO(), a2 = V_ZERO(), a3 = V_ZERO();
                for (int d = 0; d < hd; d++) {
                    vf qd = V_SET1(qh[d]);
                    a0 = V_FMA(qd, V_LOAD(k0 + d * KB), a0);
                    a1 = V_FMA(qd, V_LOAD(k1 + d * KB), a1);
                    a2 = V_FMA(qd, V_LOAD(k2 + d * KB), a2);
                    a3 = V_FMA(qd, V_LOAD(k3 + d * KB), a3);
                }
                V_STORE(sh + j * KB + v0, a0);
                V_STORE(sh + (j + 1) * KB + v0, a1);
                V_STORE(sh + (j + 2) * KB + v0, a2);
                V_STORE(sh + (j + 3) * KB + v0, a3);
            }
        for (; j < full; j++)
            for (int v0 = 0; v0 < KB; v0 += VW) {
                vf a = V_ZERO();
                for (int d = 0; d < hd; d++)
                    a = V_FMA(V_SET1(qh[d]), V_LOAD(kt[j] + d * KB + v0), a);
                V_STORE(sh + j * KB + v0, a);
            }
        for (int t = full * KB; t < n; t++) {
            float a = 0;
            for (int d = 0; d < hd; d++)
                a = fmaf(qh[d], kt[t / KB][d * KB + t % KB], a);
            sh[t] = a;
        }
    }
}

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

/* Row t of the V tiles. */
static inline const float *
v_row(const float *const *vt, int t, int hd)
{
    return vt[t / KB] + (size_t)(t % KB) * hd;
}

/*
 * o[h * hd + d] = sum over t of a[h * lda + t] * V(t, d), for h < g, d < hd:
 * even and odd positions in two sums, added at the end.
 */
static void
attn_mix(int hd, int g, int n, const float *a, size_t lda, const float *const *vt, float *o)
{
    for (int h = 0; h < g; h++) {
        const float *ah = a + (size_t)h * lda;
        float *oh = o + (size_t)h * hd;
        int d = 0;
        for (; d + 2 * VW <= hd; d += 2 * VW) {
            vf e0 = V_ZERO(), e1 = V_ZERO(), o0 = V_ZERO(), o1 = V_ZERO();
            int t = 0;
            for (; t + 2 <= n; t += 2) {
                const float *v0 = v_row(vt, t, hd) + d, *v1 = v_row(vt, t + 1, hd) + d;
                vf x0 = V_SET1(ah[t]), x1 = V_SET1(ah[t + 1]);
                e0 = V_FMA(x0, V_LOAD(v0), e0);
                e1 = V_FMA(x0, V_LOAD(v0 + VW), e1);
                o0 = V_FMA(x1, V_LOAD(v1), o0);
                o1 = V_FMA(x1, V_LOAD(v1 + VW), o1);
            }
            if (t < n) {
                const float *v0 = v_row(vt, t, hd) + d;
                e0 = V_FMA(V_SET1(ah[t]), V_LOAD(v0), e0);
                e1 = V_FMA(V_SET1(ah[t]), V_LOAD(v0 + VW), e1);
            }
            V_STORE(oh + d, V_ADD(e0, o0));
            V_STORE(oh + d + VW, V_ADD(e1, o1));
        }
        for (; d < hd; d++) {
            float e = 0, od = 0;
            int t = 0;
            for (; t + 2 <= n; t += 2) {
                e = fmaf(ah[t], v_row(vt, t, hd)[d], e);
                od = fmaf(ah[t + 1], v_row(vt, t + 1, hd)[d], od);
            }
            if (t < n)
                e = fmaf(ah[t], v_row(vt, t, hd)[d], e);
            oh[d] = e + od;
        }
    }
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

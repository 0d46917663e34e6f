/*
 * vec_attn.h - the attention kernels over the KV cache's tiles, included by
 * vec_simd.h once per cache element type, with:
 *   KV_T          the element type (float, or uint16_t holding f16)
 *   KV_LOAD(p)    VW elements at p as a vector of floats
 *   KV_S(x)       one element as a float
 *   KV_NAME(f)    f with the type's suffix
 */

#ifndef VA_UNROLL /* loops over a constant count unrolled, so the sums stay in registers */
#define VA_UNROLL _Pragma("GCC unroll 8")
/*
 * K tiles scored at once: each score is a chain of hd dependent FMAs, so
 * the group's chains run side by side; as many as the registers hold (a
 * tile is KB / VW vectors).
 */
#define VA_GROUP (ENGINE_KV_BLOCK / VW <= 1 ? 8 : 4)
#endif

/*
 * nb <= VA_GROUP K tiles against one query head (its d-th element times
 * scale, rounded, is what multiplies K(t, d)): every lane of each tile, into
 * tmp. Each score is the same chain of FMAs over d whatever nb is.
 */
static inline __attribute__((always_inline)) void
KV_NAME(score_tiles)(int hd, const float *qh, float scale, const KV_T *const *t, int nb,
                     float *tmp)
{
    for (int v0 = 0; v0 < KB; v0 += VW) {
        vf a[VA_GROUP];
        VA_UNROLL for (int i = 0; i < nb; i++)
            a[i] = V_ZERO();
        for (int d = 0; d < hd; d++) {
            vf qd = V_SET1(qh[d] * scale);
            VA_UNROLL for (int i = 0; i < nb; i++)
                a[i] = V_FMA(qd, KV_LOAD(t[i] + d * KB + v0), a[i]);
        }
        VA_UNROLL for (int i = 0; i < nb; i++)
            V_STORE(tmp + i * KB + v0, a[i]);
    }
}

/* score_tiles with nb a constant in each call, so its loops unroll. */
static void
KV_NAME(score_group)(int hd, const float *qh, float scale, const KV_T *const *t, int nb,
                     float *tmp)
{
    switch (nb) {
#if VA_GROUP > 4
    case 8: KV_NAME(score_tiles)(hd, qh, scale, t, 8, tmp); break;
    case 7: KV_NAME(score_tiles)(hd, qh, scale, t, 7, tmp); break;
    case 6: KV_NAME(score_tiles)(hd, qh, scale, t, 6, tmp); break;
    case 5: KV_NAME(score_tiles)(hd, qh, scale, t, 5, tmp); break;
#endif
    case 4: KV_NAME(score_tiles)(hd, qh, scale, t, 4, tmp); break;
    case 3: KV_NAME(score_tiles)(hd, qh, scale, t, 3, tmp); break;
    case 2: KV_NAME(score_tiles)(hd, qh, scale, t, 2, tmp); break;
    default: KV_NAME(score_tiles)(hd, qh, scale, t, 1, tmp); break;
    }
}

/*
 * s[h * lds + t] = sum over d of (q[h * hd + d] * scale) * K(t, d), for h < g,
 * t < n: VA_GROUP blocks at a time (independent sums), every lane of a tile
 * computed, the positions past n (a partial last block) dropped.
 */
static void
KV_NAME(attn_scores)(int hd, int g, int n, const float *q, float scale, const void *const *ktv,
                     float *s, size_t lds)
{
    const KV_T *const *kt = (const KV_T *const *)ktv;
    int nblk = (n + KB - 1) / KB;
    float tmp[VA_GROUP * KB];
    for (int h = 0; h < g; h++) {
        const float *qh = q + (size_t)h * hd;
        float *sh = s + (size_t)h * lds;
        for (int j = 0; j < nblk; j += VA_GROUP) {
            int nb = nblk - j < VA_GROUP ? nblk - j : VA_GROUP;
            KV_NAME(score_group)(hd, qh, scale, kt + j, nb, tmp);
            int cnt = n - j * KB < nb * KB ? n - j * KB : nb * KB;
            memcpy(sh + j * KB, tmp, (size_t)cnt * sizeof(float));
        }
    }
}

/* Row t of the V tiles. */
static inline const KV_T *
KV_NAME(v_row)(const KV_T *const *vt, int t, int hd)
{
    return vt[t / KB] + (size_t)(t % KB) * hd;
}

/*
 * Columns [d, d + nv * VW) of one head's weighted V sum times inv, nv <= 4:
 * even and odd positions in two sums per vector, added, then multiplied.
 */
static inline __attribute__((always_inline)) void
KV_NAME(mix_cols)(const float *ah, int n, const KV_T *const *vt, int hd, int d, int nv,
                  float inv, float *oh)
{
    vf e[4], od[4];
    VA_UNROLL for (int v = 0; v < nv; v++)
        e[v] = od[v] = V_ZERO();
    int t = 0;
    for (; t + 2 <= n; t += 2) {
        const KV_T *v0 = KV_NAME(v_row)(vt, t, hd) + d;
        const KV_T *v1 = KV_NAME(v_row)(vt, t + 1, hd) + d;
        vf x0 = V_SET1(ah[t]), x1 = V_SET1(ah[t + 1]);
        VA_UNROLL for (int v = 0; v < nv; v++) {
            e[v] = V_FMA(x0, KV_LOAD(v0 + v * VW), e[v]);
            od[v] = V_FMA(x1, KV_LOAD(v1 + v * VW), od[v]);
        }
    }
    if (t < n) {
        const KV_T *v0 = KV_NAME(v_row)(vt, t, hd) + d;
        vf x0 = V_SET1(ah[t]);
        VA_UNROLL for (int v = 0; v < nv; v++)
            e[v] = V_FMA(x0, KV_LOAD(v0 + v * VW), e[v]);
    }
    VA_UNROLL for (int v = 0; v < nv; v++)
        V_STORE(oh + d + v * VW, V_MUL(V_ADD(e[v], od[v]), V_SET1(inv)));
}

/*
 * o[h * hd + d] = (sum over t of a[h * lda + t] * V(t, d)) * inv[h], for h < g,
 * d < hd: even and odd positions in two sums, added, then multiplied.
 */
static void
KV_NAME(attn_mix)(int hd, int g, int n, const float *a, size_t lda, const void *const *vtv,
                  const float *inv, float *o)
{
    const KV_T *const *vt = (const KV_T *const *)vtv;
    for (int h = 0; h < g; h++) {
        const float *ah = a + (size_t)h * lda;
        float *oh = o + (size_t)h * hd;
        int d = 0;
        for (; d + 4 * VW <= hd; d += 4 * VW) /* the widest pass: fewest chains to wait on */
            KV_NAME(mix_cols)(ah, n, vt, hd, d, 4, inv[h], oh);
        for (; d + VW <= hd; d += VW)
            KV_NAME(mix_cols)(ah, n, vt, hd, d, 1, inv[h], oh);
        for (; d < hd; d++) {
            float e = 0, od = 0;
            int t = 0;
            for (; t + 2 <= n; t += 2) {
                e = fmaf(ah[t], KV_S(KV_NAME(v_row)(vt, t, hd)[d]), e);
                od = fmaf(ah[t + 1], KV_S(KV_NAME(v_row)(vt, t + 1, hd)[d]), od);
            }
            if (t < n)
                e = fmaf(ah[t], KV_S(KV_NAME(v_row)(vt, t, hd)[d]), e);
            oh[d] = (e + od) * inv[h];
        }
    }
}


/*
 * quant.c - tensor types: traits, half-precision conversion, and the scalar
 * reference kernels (quantize, dequantize, activation conversion, dot).
 *
 * Block layouts are ggml's (see kernels.h), so rows we write load in
 * llama.cpp and the other way round. The quantizers follow the same ideas as
 * ggml's reference quantizers (Q4_0: d = max / -8; Q4_K: a weighted search
 * for each sub-block's scale and min; Q6_K: a search over scales weighted by
 * x^2) and reach the same error. The scalar kernels are the reference the
 * SIMD variants are tested against; for Q4_K and Q6_K the SIMD variants sum
 * in the same order and give the same bits.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

/* ---- Type traits ------------------------------------------------------ */

struct type_info {
    int64_t blck;
    size_t bsize;
    bool quantizable;
};

static const struct type_info type_table[GGUF_T_COUNT] = {
    [GGUF_T_F32] = { 1, 4, true },
    [GGUF_T_F16] = { 1, 2, true },
    [GGUF_T_BF16] = { 1, 2, true },
    [GGUF_T_Q8_0] = { ENGINE_QK, sizeof(struct engine_block_q8_0), true },
    [GGUF_T_Q4_0] = { ENGINE_QK, sizeof(struct engine_block_q4_0), true },
    [GGUF_T_Q4_K] = { ENGINE_QK_K, sizeof(struct engine_block_q4_k), true },
    [GGUF_T_Q6_K] = { ENGINE_QK_K, sizeof(struct engine_block_q6_k), true },
};

static const struct type_info *
type_info(enum gguf_ttype t)
{
    if ((unsigned)t >= GGUF_T_COUNT || type_table[t].blck == 0)
        return NULL;
    return &type_table[t];
}

bool
engine__type_supported(enum gguf_ttype t)
{
    return type_info(t) != NULL;
}

bool
engine__type_quantizable(enum gguf_ttype t)
{
    return type_info(t) != NULL && type_info(t)->quantizable;
}

int64_t
engine__type_blck(enum gguf_ttype t)
{
    return type_info(t) ? type_info(t)->blck : 0;
}

size_t
engine__type_bsize(enum gguf_ttype t)
{
    return type_info(t) ? type_info(t)->bsize : 0;
}

size_t
engine__row_size(enum gguf_ttype t, int64_t n)
{
    const struct type_info *ti = type_info(t);
    assert(ti != NULL && n >= 0 && n % ti->blck == 0);
    return (size_t)(n / ti->blck) * ti->bsize;
}

size_t
engine__act_row_size(enum engine_act a, int64_t k)
{
    size_t qs = engine__align64((size_t)k);
    switch (a) {
    case ENGINE_ACT_Q8A:
        return engine__align64(qs + (size_t)(k / ENGINE_QK) * 8);
    case ENGINE_ACT_Q8K:
        return engine__align64(qs + (size_t)(k / ENGINE_QK_K) * 4 + (size_t)(k / 16) * 2);
    default:
        return engine__align64((size_t)k * sizeof(float));
    }
}

/* ---- Half precision --------------------------------------------------- */

static uint32_t
f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float
bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float
engine__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) /* zero or subnormal: mant * 2^-24, exact in f32 */
        return bits_f32(sign | f32_bits((float)mant * 0x1p-24f));
    if (exp == 31) /* inf or NaN, payload kept */
        return bits_f32(sign | 0x7f800000 | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Shifts m right by s (1..31), rounding to nearest, ties to even. */
static uint32_t
shift_rne(uint32_t m, int s)
{
    uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

uint16_t
engine__f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) /* NaN: keep the top payload bits, force quiet */
        return sign | 0x7e00 | ((ax >> 13) & 0x3ff);
    if (ax >= 0x477ff000) /* >= 65520 rounds to infinity */
        return sign | 0x7c00;
    if (ax >= 0x38800000) /* normal in f16: rebias, round 13 bits away */
        return sign | (uint16_t)shift_rne(ax - (112u << 23), 13);
    if (ax <= 0x33000000) /* <= 2^-25 rounds to zero (2^-25 is a tie, to even) */
        return sign;
    uint32_t e = ax >> 23, mant = (ax & 0x7fffff) | 0x800000;
    return sign | (uint16_t)shift_rne(mant, 126 - (int)e); /* subnormal */
}

float
engine__bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t
engine__f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---- Dequantization (reference) --------------------------------------- */

#define F16(h) engine__f16_to_f32(h)

static void
dequant_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void
dequant_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = engine__f16_to_f32(s[i]);
}

static void
dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = engine__bf16_to_f32(s[i]);
}

static void
dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        float d = F16(b[i].d);
        for (int j = 0; j < ENGINE_QK; j++)
            dst[j] = b[i].qs[j] * d;
    }
}

static void
dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, dst += ENGINE_QK) {
        float d = F16(b[i].d);
        for (int j = 0; j < ENGINE_QK / 2; j++) {
            dst[j] = ((b[i].qs[j] & 0x0f) - 8) * d;
            dst[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void
dequant_q4_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q4_k *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++) {
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            int sc, mn;
            engine__q4k_scale_min(b[i].scales, j, &sc, &mn);
            float ds = d * sc, dm = dmin * mn;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            int shift = 4 * (j & 1);
            for (int l = 0; l < 32; l++)
                dst[l] = ds * ((q[l] >> shift) & 0x0f) - dm;
        }
    }
}

/* The 6-bit value of element e (0..255) of a Q6_K block, 0..63. */
static int
q6k_get(const struct engine_block_q6_k *b, int e)
{
    int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    uint8_t lo = b->ql[64 * half + l + 32 * (quarter & 1)];
    lo = quarter < 2 ? lo & 0x0f : lo >> 4;
    int hi = (b->qh[32 * half + l] >> (2 * quarter)) & 3;
    return lo | (hi << 4);
}

static void
dequant_q6_k(const void *src, float *dst, int64_t n)
{
    const struct engine_block_q6_k *b = src;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++, dst += ENGINE_QK_K) {
        float d = F16(b[i].d);
        for (int e = 0; e < ENGINE_QK_K; e++)
            dst[e] = d * b[i].scales[e / 16] * (q6k_get(&b[i], e) - 32);
    }
}

/* ---- Quantization (reference) ----------------------------------------- */

/*
 * Round to nearest, ties to even: adding 1.5 * 2^23 leaves the integer in the
 * low mantissa bits (exact for |v| < 2^22; v is clamped so it always holds).
 */
static inline int
round_int(float v)
{
    float t = fminf(fmaxf(v, -4e6f), 4e6f) + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x7fffff) - 0x400000;
}

static int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void
quant_f32(const float *x, void *dst, int64_t n)
{
    memcpy(dst, x, (size_t)n * sizeof(float));
}

static void
quant_f16(const float *x, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = engine__f32_to_f16(x[i]);
}

static void
quant_bf16(const float *x, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = engine__f32_to_bf16(x[i]);
}

static void
quant_q8_0(const float *x, void *dst, int64_t n)
{
    struct engine_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, x += ENGINE_QK) {
        float amax = 0;
        for (int j = 0; j < ENGINE_QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d != 0 ? 1 / d : 0;
        b[i].d = engine__f32_to_f16(d);
        for (int j = 0; j < ENGINE_QK; j++)
            b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* The element of largest magnitude, with its sign. */
static float
signed_max(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void
quant_q4_0(const float *x, void *dst, int64_t n)
{
    struct engine_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / ENGINE_QK; i++, x += ENGINE_QK) {
        /* The extreme value maps to -8, which uses the whole range [-8, 7]. */
        float d = signed_max(x, ENGINE_QK) / -8, id = d != 0 ? 1 / d : 0;
        b[i].d = engine__f32_to_f16(d);
        for (int j = 0; j < ENGINE_QK / 2; j++) {
            int lo = clampi((int)(x[j] * id + 8.5f), 0, 15);
            int hi = clampi((int)(x[j + 16] * id + 8.5f), 0, 15);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/*
 * Least-squares fit of x ~ scale * L + min over n elements with weights w,
 * L in [0, nmax] and min <= 0: start from the value range, then try nstep + 1
 * slightly different steps, and for each rounding solve the 2x2 normal
 * equations for scale and min; keep the best. Writes L, returns scale and
 * stores -min in *neg_min.
 */
struct fit_range {
    float rmin, rdelta;
    int nstep;
};

static float
fit_error(int n, const float *x, const float *w, const uint8_t *L, float scale, float min)
{
    float err = 0;
    for (int i = 0; i < n; i++) {
        float diff = scale * L[i] + min - x[i];
        err += w[i] * diff * diff;
    }
    return err;
}

static void
fit_round(int n, int nmax, const float *x, float min, float iscale, uint8_t *L)
{
    for (int i = 0; i < n; i++)
        L[i] = (uint8_t)clampi(round_int(iscale * (x[i] - min)), 0, nmax);
}

static float
fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
              struct fit_range r)
{
    float min = x[0], max = x[0], sum_w = 0, sum_x = 0;
    for (int i = 0; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    min = fminf(min, 0);
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0;
    }
    float scale = (max - min) / nmax;
    fit_round(n, nmax, x, min, nmax / (max - min), L);
    float best = fit_error(n, x, w, L, scale, min);
    uint8_t Lt[32];
    assert(n <= 32);
    for (int is = 0; is <= r.nstep; is++) {
        fit_round(n, nmax, x, min, (r.rmin + r.rdelta * is + nmax) / (max - min), Lt);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            sl += w[i] * Lt[i];
            sl2 += w[i] * Lt[i] * Lt[i];
            sxl += w[i] * Lt[i] * x[i];
        }
        float D = sum_w * sl2 - sl * sl;
        if (D <= 0)
            continue;
        float s = (sum_w * sxl - sum_x * sl) / D, m = (sl2 * sum_x - sl * sxl) / D;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        float err = fit_error(n, x, w, Lt, s, m);
        if (err < best) {
            memcpy(L, Lt, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *neg_min = -min;
    return scale;
}

static void
q4k_pack_scales(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void
quant_q4_k_block(const float *x, struct engine_block_q4_k *b)
{
    uint8_t L[ENGINE_QK_K], ls[8], lm[8];
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    const struct fit_range range = { -1.0f, 0.1f, 20 };
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) /* weight large values more, but never zero */
            w[l] = av_x + fabsf(xs[l]);
        scales[j] = fit_scale_min(32, 15, xs, w, L + 32 * j, &mins[j], range);
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    float is = max_scale > 0 ? 63 / max_scale : 0, im = max_min > 0 ? 63 / max_min : 0;
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)clampi(round_int(is * scales[j]), 0, 63);
        lm[j] = (uint8_t)clampi(round_int(im * mins[j]), 0, 63);
    }
    q4k_pack_scales(b->scales, ls, lm);
    b->d = engine__f32_to_f16(max_scale / 63);
    b->dmin = engine__f32_to_f16(max_min / 63);
    /* Requantize with the scales as stored (6-bit and f16-rounded). */
    for (int j = 0; j < 8; j++) {
        float d = F16(b->d) * ls[j], dm = F16(b->dmin) * lm[j];
        if (d == 0)
            continue;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clampi(round_int((x[32 * j + l] + dm) / d), 0, 15);
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

static void
quant_q4_k(const float *x, void *dst, int64_t n)
{
    struct engine_block_q4_k *b = dst;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++)
        quant_q4_k_block(x + i * ENGINE_QK_K, &b[i]);
}

/*
 * Symmetric fit x ~ scale * L, L in [-nmax, nmax - 1], weighting each element
 * by x^2 (large values matter most): try 19 steps around nmax / max and keep
 * the one with the best weighted least-squares fit. Writes L + nmax.
 */
static float
fit_scale_sym(int n, int nmax, const float *x, int8_t *L)
{
    float max = signed_max(x, n);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float scale = 0, best = 0;
    for (int is = -9; is <= 9; is++) {
        float iscale = -(nmax + 0.1f * is) / max, slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(round_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            slx += w * x[i] * l;
            sl2 += w * l * l;
        }
        /* first try always taken; later ones if they explain more of x */
        if (sl2 > 0 && (is == -9 || slx * slx > best * sl2)) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clampi(round_int(iscale * x[i]), -nmax, nmax - 1));
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    return scale;
}

static void
q6k_pack(const int8_t *L, struct engine_block_q6_k *b)
{
    for (int half = 0; half < 2; half++) {
        const int8_t *Lh = L + 128 * half;
        uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((Lh[l] & 0x0f) | ((Lh[l + 64] & 0x0f) << 4));
            ql[l + 32] = (uint8_t)((Lh[l + 32] & 0x0f) | ((Lh[l + 96] & 0x0f) << 4));
            qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                              ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
}

static void
quant_q6_k_block(const float *x, struct engine_block_q6_k *b)
{
    int8_t L[ENGINE_QK_K];
    float scales[16], max_scale = 0;
    for (int g = 0; g < 16; g++) {
        scales[g] = fit_scale_sym(16, 32, x + 16 * g, L + 16 * g);
        if (fabsf(scales[g]) > fabsf(max_scale))
            max_scale = scales[g];
    }
    memset(b, 0, sizeof(*b));
    if (fabsf(max_scale) < 1e-15f)
        return;
    float iscale = -128 / max_scale;
    b->d = engine__f32_to_f16(1 / iscale);
    for (int g = 0; g < 16; g++)
        b->scales[g] = (int8_t)clampi(round_int(iscale * scales[g]), -128, 127);
    for (int g = 0; g < 16; g++) {
        float d = F16(b->d) * b->scales[g];
        for (int l = 0; l < 16; l++) {
            int q = d != 0 ? clampi(round_int(x[16 * g + l] / d), -32, 31) : 0;
            L[16 * g + l] = (int8_t)(q + 32);
        }
    }
    q6k_pack(L, b);
}

static void
quant_q6_k(const float *x, void *dst, int64_t n)
{
    struct engine_block_q6_k *b = dst;
    for (int64_t i = 0; i < n / ENGINE_QK_K; i++)
        quant_q6_k_block(x + i * ENGINE_QK_K, &b[i]);
}

static const struct {
    void (*quantize)(const float *x, void *dst, int64_t n);
    engine_row_fn dequantize;
} ref_rows[GGUF_T_COUNT] = {
    [GGUF_T_F32] = { quant_f32, dequant_f32 },
    [GGUF_T_F16] = { quant_f16, dequant_f16 },
    [GGUF_T_BF16] = { quant_bf16, dequant_bf16 },
    [GGUF_T_Q8_0] = { quant_q8_0, dequant_q8_0 },
    [GGUF_T_Q4_0] = { quant_q4_0, dequant_q4_0 },
    [GGUF_T_Q4_K] = { quant_q4_k, dequant_q4_k },
    [GGUF_T_Q6_K] = { quant_q6_k, dequant_q6_k },
};

void
engine__quantize_row(enum gguf_ttype t, const float *src, void *dst, int64_t n)
{
    assert(engine__type_quantizable(t) && n % engine__type_blck(t) == 0);
    ref_rows[t].quantize(src, dst, n);
}

void
engine__dequantize_row(enum gguf_ttype t, const void *src, float *dst, int64_t n)
{
    assert(engine__type_supported(t) && n % engine__type_blck(t) == 0);
    engine__variant()->type[t].dequant(src, dst, n);
}

/* ---- Activation conversion (reference) -------------------------------- */

/* Converts n values with d = amax / 127; returns the sum of the quants. */
static int
act_block(const float *x, int n, int8_t *qs, float *d)
{
    float amax = 0;
    for (int j = 0; j < n; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float id = amax > 0 ? 127.0f / amax : 0;
    *d = amax / 127.0f;
    int sum = 0;
    for (int j = 0; j < n; j++) {
        qs[j] = (int8_t)round_int(x[j] * id);
        sum += qs[j];
    }
    return sum;
}

static void
act_q8a(const float *x, void *dst, int64_t k)
{
    int8_t *qs = dst;
    float *d = engine__act_d(dst, k);
    int32_t *c = engine__act_c(dst, k);
    for (int64_t b = 0; b < k / ENGINE_QK; b++) {
        c[b] = -8 * act_block(x + b * ENGINE_QK, ENGINE_QK, qs + b * ENGINE_QK, &d[b]);
        d[b] = engine__f16_to_f32(engine__f32_to_f16(d[b]));
    }
}

static void
act_q8k(const float *x, void *dst, int64_t k)
{
    int8_t *qs = dst;
    float *d = engine__act_d(dst, k);
    int16_t *bs = engine__act_bsums(dst, k);
    for (int64_t b = 0; b < k / ENGINE_QK_K; b++)
        act_block(x + b * ENGINE_QK_K, ENGINE_QK_K, qs + b * ENGINE_QK_K, &d[b]);
    for (int64_t g = 0; g < k / 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += qs[16 * g + j];
        bs[g] = (int16_t)s;
    }
}

/* ---- Dot products (reference) ----------------------------------------- */

/* Float rows: eight running sums, like a vector of lanes, then a tree sum. */
#define DOT_FLOAT(name, type, conv)                                          \
    static float name(int64_t k, const void *wrow, const void *arow)         \
    {                                                                        \
        const type *w = wrow;                                                \
        const float *x = arow;                                               \
        float acc[8] = { 0 };                                                \
        for (int64_t i = 0; i < k; i++)                                      \
            acc[i % 8] += conv(w[i]) * x[i];                                 \
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +                     \
               ((acc[2] + acc[6]) + (acc[3] + acc[7]));                      \
    }

#define AS_F32(v) (v)
DOT_FLOAT(dot_f32, float, AS_F32)
DOT_FLOAT(dot_f16, uint16_t, engine__f16_to_f32)
DOT_FLOAT(dot_bf16, uint16_t, engine__bf16_to_f32)

static float
dot_q8_0(int64_t k, const void *wrow, const void *arow)
{
    const struct engine_block_q8_0 *w = wrow;
    const int8_t *qs = arow;
    const float *d = engine__act_d(arow, k);
    float sum = 0;
    for (int64_t b = 0; b < k / ENGINE_QK; b++, qs += ENGINE_QK) {
        int isum = 0;
        for (int j = 0; j < ENGINE_QK; j++)
            isum += w[b].qs[j] * qs[j];
        sum += F16(w[b].d) * d[b] * (float)isum;
    }
    return sum;
}

static float
dot_q4_0(int64_t k, const void *wrow, const void *arow)
{
    const struct engine_block_q4_0 *w = wrow;
    const int8_t *qs = arow;
    const float *d = engine__act_d(arow, k);
    const int32_t *c = engine__act_c(arow, k);
    float sum = 0;
    for (int64_t b = 0; b < k / ENGINE_QK; b++, qs += ENGINE_QK) {
        int isum = c[b]; /* -8 * sum(qs): the nibbles' offset */
        for (int j = 0; j < ENGINE_QK / 2; j++)
            isum += (w[b].qs[j] & 0x0f) * qs[j] + (w[b].qs[j] >> 4) * qs[j + 16];
        sum += F16(w[b].d) * d[b] * (float)isum;
    }
    return sum;
}

/*
 * K-quants: each super-block gives an exact integer sum; the float sum takes
 * them in order, sum = sum + (d * dx) * isum (and - (dmin * dx) * msum), which
 * the SIMD variants repeat bit for bit.
 */
static float
dot_q4_k(int64_t k, const void *wrow, const void *arow)
{
    const struct engine_block_q4_k *w = wrow;
    const int8_t *qs = arow;
    const float *dx = engine__act_d(arow, k);
    const int16_t *bs = engine__act_bsums(arow, k);
    float sum = 0;
    for (int64_t b = 0; b < k / ENGINE_QK_K; b++, qs += ENGINE_QK_K, bs += 16) {
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            int sc, mn, s = 0;
            engine__q4k_scale_min(w[b].scales, j, &sc, &mn);
            const uint8_t *q = w[b].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++)
                s += ((q[l] >> (4 * (j & 1))) & 0x0f) * qs[32 * j + l];
            isum += sc * s;
            msum += mn * (bs[2 * j] + bs[2 * j + 1]);
        }
        sum = sum + F16(w[b].d) * dx[b] * (float)isum;
        sum = sum - F16(w[b].dmin) * dx[b] * (float)msum;
    }
    return sum;
}

static float
dot_q6_k(int64_t k, const void *wrow, const void *arow)
{
    const struct engine_block_q6_k *w = wrow;
    const int8_t *qs = arow;
    const float *dx = engine__act_d(arow, k);
    float sum = 0;
    for (int64_t b = 0; b < k / ENGINE_QK_K; b++, qs += ENGINE_QK_K) {
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += (q6k_get(&w[b], 16 * g + l) - 32) * qs[16 * g + l];
            isum += w[b].scales[g] * s;
        }
        sum = sum + F16(w[b].d) * dx[b] * (float)isum;
    }
    return sum;
}

#define GEMV(name, dot)                                                      \
    static void name(int64_t k, const void *w, size_t wstride, int64_t n,    \
                     const void *a, size_t astride, int64_t m, float *y,     \
                     int64_t ldy)                                            \
    {                                                                        \
        for (int64_t i = 0; i < n; i++)                                      \
            for (int64_t r = 0; r < m; r++)                                  \
                y[r * ldy + i] = dot(k, (const char *)w + i * wstride,       \
                                     (const char *)a + r * astride);         \
    }

GEMV(gemv_f32, dot_f32)
GEMV(gemv_f16, dot_f16)
GEMV(gemv_bf16, dot_bf16)
GEMV(gemv_q8_0, dot_q8_0)
GEMV(gemv_q4_0, dot_q4_0)
GEMV(gemv_q4_k, dot_q4_k)
GEMV(gemv_q6_k, dot_q6_k)

/* ---- Attention (one lane) ---------------------------------------------- */

#define VW 1
typedef float vf;
#define V_LOAD(p) (*(p))
#define V_STORE(p, v) (*(p) = (v))
#define V_SET1(x) (x)
#define V_ZERO() 0.0f
#define V_FMA(a, b, c) fmaf(a, b, c)
#define V_MUL(a, b) ((a) * (b))
#define V_ADD(a, b) ((a) + (b))
#define V_SUB(a, b) ((a) - (b))
#define V_MAX(a, b) fmaxf(a, b)
#define V_MIN(a, b) fminf(a, b)
#define V_DIV(a, b) ((a) / (b))
#define V_HSUM(v) (v)
#define V_HMAX(v) (v)
#define V_ROUND(v) nearbyintf(v)
#define V_POW2I(v) ldexpf(1.0f, (int)(v))
#define V_LOADH(p) engine__f16_to_f32(*(p))
#define V_STOREH(p, v) (*(p) = engine__f32_to_f16(v))
#define S_F16_TO_F32(h) engine__f16_to_f32(h)
#define S_F32_TO_F16(x) engine__f32_to_f16(x)
#include "vec_simd.h"

const struct engine_variant engine__variant_scalar = {
    .name = "scalar",
    .attn = { { attn_scores_f32, attn_scores_f16 }, attn_max, attn_exp,
              { attn_mix_f32, attn_mix_f16 }, to_f16 },
    .silu_mul = silu_mul,
    .rmsnorm = rmsnorm,
    .rank_update = rank_update,
    .rank_update_f16 = rank_update_f16,
    .act = { [ENGINE_ACT_Q8A] = act_q8a, [ENGINE_ACT_Q8K] = act_q8k },
    .type = {
        [GGUF_T_F32] = { ENGINE_ACT_F32, gemv_f32, dequant_f32, 4, NULL },
        [GGUF_T_F16] = { ENGINE_ACT_F32, gemv_f16, dequant_f16, 4, NULL },
        [GGUF_T_BF16] = { ENGINE_ACT_F32, gemv_bf16, dequant_bf16, 4, NULL },
        [GGUF_T_Q8_0] = { ENGINE_ACT_Q8A, gemv_q8_0, dequant_q8_0, 4, NULL },
        [GGUF_T_Q4_0] = { ENGINE_ACT_Q8A, gemv_q4_0, dequant_q4_0, 4, NULL },
        [GGUF_T_Q4_K] = { ENGINE_ACT_Q8K, gemv_q4_k, dequant_q4_k, 4, NULL },
        [GGUF_T_Q6_K] = { ENGINE_ACT_Q8K, gemv_q6_k, dequant_q6_k, 4, NULL },
    },
};

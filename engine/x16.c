/*
 * x16.c - the interleaved ("x16") layout of Q8_0 and Q4_0 weights: packing,
 * and the scalar reference kernel the SIMD variants are tested against; and
 * the F16 panel ("p32") layout of the variant's own GEMM.
 *
 * The layout (kernels.h) puts four bytes of each of 16 rows side by side, so
 * one 512-bit vpdpbusd multiplies 16 rows by the same four activation bytes
 * and each lane ends a block holding one row's exact integer sum: no
 * horizontal adds, and the float work is done once per 16 rows.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

static bool
x16_type(enum gguf_ttype t)
{
    return t == GGUF_T_Q8_0 || t == GGUF_T_Q4_0;
}

bool
engine__x16_wanted(enum gguf_ttype t)
{
    return x16_type(t) && engine__variant()->type[t].gemv_x16 != NULL;
}

size_t
engine__x16_size(enum gguf_ttype t, int64_t n_out, int64_t k)
{
    assert(x16_type(t));
    int64_t groups = (n_out + ENGINE_X16 - 1) / ENGINE_X16;
    return (size_t)groups * ENGINE_X16 * engine__row_size(t, k);
}

/* Block b of rows [g * 16, g * 16 + 16) into out (the last group's missing rows are zero). */
static void
pack_block(bool q4, const char *rows, size_t rs, int64_t n_out, int64_t g, int64_t b,
           uint8_t *out)
{
    size_t bsize = q4 ? sizeof(struct engine_block_q4_0) : sizeof(struct engine_block_q8_0);
    int n_c = q4 ? 4 : 8;
    uint8_t *q = out + ENGINE_X16 * sizeof(uint16_t);
    for (int r = 0; r < ENGINE_X16; r++) {
        int64_t row = g * ENGINE_X16 + r;
        uint16_t d = 0;
        uint8_t qs[ENGINE_QK] = { 0 };
        if (row < n_out) {
            const char *src = rows + (size_t)row * rs + (size_t)b * bsize;
            memcpy(&d, src, sizeof(d));
            memcpy(qs, src + sizeof(d), bsize - sizeof(d));
        }
        memcpy(out + r * sizeof(uint16_t), &d, sizeof(d));
        for (int c = 0; c < n_c; c++)
            for (int j = 0; j < 4; j++)
                q[(c * ENGINE_X16 + r) * 4 + j] = q4 ? qs[4 * c + j] : qs[4 * c + j] ^ 0x80;
    }
}

void
engine__x16_pack(enum gguf_ttype t, const void *rows, int64_t n_out, int64_t k, void *dst)
{
    assert(x16_type(t) && k % ENGINE_QK == 0);
    bool q4 = t == GGUF_T_Q4_0;
    size_t rs = engine__row_size(t, k), gblock = ENGINE_X16 * engine__type_bsize(t);
    int64_t nb = k / ENGINE_QK, groups = (n_out + ENGINE_X16 - 1) / ENGINE_X16;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nb; b++)
            pack_block(q4, rows, rs, n_out, g, b, (uint8_t *)dst + (size_t)(g * nb + b) * gblock);
}

/* Row r's value e (0..31) of a packed block's quants, without Q4_0's offset of 8. */
static int
value(bool q4, const uint8_t *q, int r, int e)
{
    if (!q4)
        return (int)q[((e / 4) * ENGINE_X16 + r) * 4 + e % 4] - 128;
    int lo = e % 16;
    uint8_t byte = q[((lo / 4) * ENGINE_X16 + r) * 4 + lo % 4];
    return e < 16 ? byte & 0x0f : byte >> 4;
}

/*
 * The reference: for each (weight row, activation row), block by block, an
 * exact integer sum (Q4_0 adds the activation's -8 * sum, as dot_q4_0 does),
 * then sum = sum + (dw * dx) * isum: the row layout's arithmetic.
 */
static void
gemv_x16(bool q4, int64_t k, const void *w, size_t wstride, int64_t n, const void *a,
         size_t astride, int64_t m, float *y, int64_t ldy)
{
    size_t gblock = ENGINE_X16 * (q4 ? sizeof(struct engine_block_q4_0)
                                     : sizeof(struct engine_block_q8_0));
    int64_t nb = k / ENGINE_QK;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *grp = (const uint8_t *)w + (size_t)(i / ENGINE_X16) * ENGINE_X16 * wstride;
        int r = (int)(i % ENGINE_X16);
        for (int64_t ra = 0; ra < m; ra++) {
            const char *arow = (const char *)a + ra * astride;
            const int8_t *qs = (const int8_t *)arow;
            const float *dx = engine__act_d(arow, k);
            const int32_t *cx = engine__act_c(arow, k);
            float sum = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = grp + (size_t)b * gblock;
                uint16_t d;
                memcpy(&d, blk + r * sizeof(uint16_t), sizeof(d));
                int isum = q4 ? cx[b] : 0;
                for (int e = 0; e < ENGINE_QK; e++)
                    isum += value(q4, blk + ENGINE_X16 * sizeof(uint16_t), r, e) *
                            qs[b * ENGINE_QK + e];
                sum += engine__f16_to_f32(d) * dx[b] * (float)isum;
            }
            y[ra * ldy + i] = sum;
        }
    }
}

static void
gemv_q8_0_x16(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
              int64_t m, float *y, int64_t ldy)
{
    gemv_x16(false, k, w, wstride, n, a, astride, m, y, ldy);
}

static void
gemv_q4_0_x16(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
              int64_t m, float *y, int64_t ldy)
{
    gemv_x16(true, k, w, wstride, n, a, astride, m, y, ldy);
}

engine_gemv_fn
engine__gemv_x16_ref(enum gguf_ttype t)
{
    assert(x16_type(t));
    return t == GGUF_T_Q4_0 ? gemv_q4_0_x16 : gemv_q8_0_x16;
}

/* ---- p32: F16 panels ---------------------------------------------------- */

bool
engine__p32_wanted(enum gguf_ttype t)
{
    return t == GGUF_T_F16 && engine__variant()->gemm_tile_f16 != NULL;
}

size_t
engine__p32_size(int64_t n_out, int64_t k)
{
    int64_t groups = (n_out + ENGINE_GEMM_ROWS - 1) / ENGINE_GEMM_ROWS;
    return (size_t)groups * ENGINE_GEMM_ROWS * (size_t)k * sizeof(uint16_t);
}

void
engine__p32_pack(const uint16_t *rows, int64_t n_out, int64_t k, uint16_t *dst)
{
    int64_t groups = (n_out + ENGINE_GEMM_ROWS - 1) / ENGINE_GEMM_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        uint16_t *p = dst + (size_t)g * ENGINE_GEMM_ROWS * (size_t)k;
        for (int r = 0; r < ENGINE_GEMM_ROWS; r++) {
            int64_t row = g * ENGINE_GEMM_ROWS + r;
            for (int64_t kk = 0; kk < k; kk++)
                p[kk * ENGINE_GEMM_ROWS + r] = row < n_out ? rows[row * k + kk] : 0;
        }
    }
}

void
engine__gemm_pack_x_ref(const float *x, int64_t m, int64_t k, int64_t tb, float *xt)
{
    for (int64_t kk = 0; kk < k; kk++)
        for (int t = 0; t < ENGINE_GEMM_TOK; t++) {
            int64_t row = tb * ENGINE_GEMM_TOK + t;
            xt[kk * ENGINE_GEMM_TOK + t] = row < m ? x[row * k + kk] : 0.0f;
        }
}

/* The AVX-512 tile's arithmetic: per row and token one FMA chain over kk. */
void
engine__gemm_tile_f16_ref(int64_t k, const uint16_t *ap, const float *xt, int n_tok,
                          int n_rows, float *y, int64_t ldy)
{
    for (int t = 0; t < n_tok; t++)
        for (int i = 0; i < n_rows; i++) {
            float acc = 0.0f;
            for (int64_t kk = 0; kk < k; kk++)
                acc = fmaf(engine__f16_to_f32(ap[kk * ENGINE_GEMM_ROWS + i]),
                           xt[kk * ENGINE_GEMM_TOK + t], acc);
            y[t * ldy + i] = acc;
        }
}

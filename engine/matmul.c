/*
 * matmul.c - engine__matmul, the one hot spot of the forward pass, and the
 * choice of kernel variant.
 *
 * Small batches (decode, m < the type's gemm_min_m) convert the activation
 * rows once (to 8-bit blocks for the quantized types) and stream the weight
 * rows through the variant's gemv kernel: pool threads claim chunks of rows
 * from a shared counter, and each weight row is used for all m activation
 * rows while it is in cache. Larger batches (prefill) run an f32 GEMM on
 * dequantized weights: the variant's own packed-panel GEMM if it has one
 * (AVX-512), else each thread dequantizes panels into its scratch and calls
 * OpenBLAS sgemm, single-threaded (set once at init), so math threads never
 * exceed the pool. Every job is claimed dynamically and run with
 * engine__pool_run_some, so a late or descheduled worker is never waited for.
 */
#include <assert.h>
#include <cblas.h>
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* ---- Variant choice --------------------------------------------------- */

static _Atomic(const struct engine_variant *) active;

/* F16C, read from CPUID (leaf 1, ECX): clang's __builtin_cpu_supports does not know it. */
static bool
has_f16c(void)
{
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

static bool
cpu_has(const struct engine_variant *v)
{
    __builtin_cpu_init();
    if (v->type[GGUF_T_F32].gemv == NULL) /* variant not built in */
        return false;
    if (v == &engine__variant_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    if (v == &engine__variant_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    return true;
}

static void
init_once(void)
{
    /* Our pool does the threading; OpenBLAS must not start threads of its own. */
    openblas_set_num_threads(1);
    const struct engine_variant *best = &engine__variant_scalar;
    if (cpu_has(&engine__variant_avx512))
        best = &engine__variant_avx512;
    else if (cpu_has(&engine__variant_avx2))
        best = &engine__variant_avx2;
    /* LORASERVE_KERNELS=scalar|avx2|avx512 picks a lesser variant (for tests and debugging). */
    const char *want = getenv("LORASERVE_KERNELS");
    const struct engine_variant *const all[] = {
        &engine__variant_scalar, &engine__variant_avx2, &engine__variant_avx512,
    };
    for (size_t i = 0; want != NULL && i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(all[i]->name, want) == 0 && cpu_has(all[i]))
            best = all[i];
    atomic_store(&active, best);
}

void
engine__kernels_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_once);
}

const struct engine_variant *
engine__variant(void)
{
    const struct engine_variant *v = atomic_load_explicit(&active, memory_order_acquire);
    if (v != NULL)
        return v;
    engine__kernels_init();
    return atomic_load(&active);
}

const char *
engine__kernels_name(void)
{
    return engine__variant()->name;
}

int
engine__kernels_force(const char *name)
{
    static const struct engine_variant *const all[] = {
        &engine__variant_scalar, &engine__variant_avx2, &engine__variant_avx512,
    };
    engine__kernels_init();
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(all[i]->name, name) != 0)
            continue;
        if (!cpu_has(all[i]))
            return -ENOTSUP;
        atomic_store(&active, all[i]);
        return 0;
    }
    return -ENOENT;
}

/* ---- Shapes and thresholds -------------------------------------------- */

/*
 * From the type's gemm_min_m activation rows on (a property of the variant,
 * measured on Zen 5: tests/bench_kernels.c batch), the f32 GEMM on
 * dequantized panels beats the gemv kernels.
 */
static _Atomic int64_t gemm_min_override;

void
engine__matmul_tune(int64_t gemm_min_m)
{
    atomic_store(&gemm_min_override, gemm_min_m);
}

static int64_t
gemm_min_m(enum gguf_ttype t)
{
    int64_t o = atomic_load_explicit(&gemm_min_override, memory_order_relaxed);
    return o > 0 ? o : engine__variant()->type[t].gemm_min_m;
}

/* Weight rows per sgemm panel: about 256 KB of f32, so it stays in L2. */
static int64_t
panel_rows(int64_t k)
{
    int64_t rows = (256 * 1024 / 4) / k;
    rows = rows < 16 ? 16 : rows > 256 ? 256 : rows;
    return rows & ~(int64_t)15;
}

static size_t own_scratch(int64_t m, int64_t k);

size_t
engine__matmul_scratch(enum gguf_ttype t, int64_t k, int64_t m_max)
{
    const struct engine_variant *v = engine__variant();
    enum engine_act a = v->type[t].act;
    int64_t m_gemv = m_max < gemm_min_m(t) || engine__x16_wanted(t) ? m_max : gemm_min_m(t) - 1;
    size_t act = a == ENGINE_ACT_F32 ? 0 : (size_t)m_gemv * engine__act_row_size(a, k);
    size_t panel = v->gemm_tile ? own_scratch(m_max, k)
                                : (size_t)panel_rows(k) * (size_t)k * sizeof(float);
    return act > panel ? act : panel;
}

float
engine__vec_dot(enum gguf_ttype t, int64_t n, const void *row, const float *x)
{
    assert(engine__type_supported(t) && n > 0 && n % engine__type_blck(t) == 0);
    const struct engine_variant *v = engine__variant();
    enum engine_act a = v->type[t].act;
    void *buf = NULL;
    if (a != ENGINE_ACT_F32) {
        buf = aligned_alloc(ENGINE_ACT_ALIGN, engine__act_row_size(a, n));
        if (buf == NULL) {
            fprintf(stderr, "loraserve: out of memory in engine__vec_dot\n");
            abort();
        }
        v->act[a](x, buf, n);
    }
    float y = 0;
    v->type[t].gemv(n, row, 0, 1, buf ? buf : x, 0, 1, &y, 1);
    free(buf);
    return y;
}

/* ---- Small batches: integer / f32 gemv kernels ------------------------- */

/* One weight of a gemv job: its rows are claimed chunk rows at a time. */
struct mm_part {
    const struct engine_weight *w;
    float *y;
    engine_gemv_fn gemv;
    size_t wstride;
    int64_t chunk, units;
};

struct mm_job {
    struct engine_pool *pool;
    const struct engine_variant *v;
    enum gguf_ttype t;
    const char *w;
    size_t wstride;
    int64_t n_out, k, m;
    const float *x;
    const void *a;                  /* converted activation rows, or x */
    size_t astride;
    float *y;
    int64_t chunk;                  /* weight rows claimed at a time */
    _Atomic int64_t next;           /* first unclaimed weight row (or unit) */
    float *pool_xt;                 /* own GEMM: the packed activation */
    bool p32;                       /* w is in F16 panels (kernels.h): no packing */
    engine_pack_x_fn pack_x;        /* own GEMM: the variant's, or the reference */
    engine_tile_f16_fn tile_f16;
    int n_parts;                    /* gemv: the weights, their units numbered in turn */
    struct mm_part part[ENGINE_MM_MAX];
    int64_t n_units;
};

static bool
claim(struct mm_job *j, int64_t *i0, int64_t *i1)
{
    *i0 = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
    *i1 = *i0 + j->chunk < j->n_out ? *i0 + j->chunk : j->n_out;
    return *i0 < j->n_out;
}

static void
gemv_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct mm_job *j = arg;
    int64_t u;
    while ((u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_units) {
        const struct mm_part *p = j->part;
        for (; u >= p->units; p++)
            u -= p->units;
        int64_t i0 = u * p->chunk, n_out = p->w->n_out;
        int64_t i1 = i0 + p->chunk < n_out ? i0 + p->chunk : n_out;
        p->gemv(j->k, (const char *)p->w->data + i0 * p->wstride, p->wstride, i1 - i0, j->a,
                j->astride, j->m, p->y + i0, n_out);
    }
}

/* Rows per claim: about 8 claims per thread, a multiple of q (a layout's group), at least q. */
static int64_t
gemv_chunk(int64_t n_out, int nth, int64_t q)
{
    int64_t c = (n_out + 8 * nth - 1) / (8 * nth);
    return (c + q - 1) / q * q;
}

static size_t xt_bytes(int64_t m, int64_t k);

/* The variant's own-GEMM steps, or their scalar references (p32 weights under any variant). */
static engine_pack_x_fn
pack_x_of(const struct engine_variant *v)
{
    return v->gemm_pack_x ? v->gemm_pack_x : engine__gemm_pack_x_ref;
}

static engine_tile_f16_fn
tile_f16_of(const struct engine_variant *v)
{
    return v->gemm_tile_f16 ? v->gemm_tile_f16 : engine__gemm_tile_f16_ref;
}

/*
 * Rows [0, n) of p32 panels (w at a group start) against m <= ENGINE_GEMM_TOK
 * packed tokens (a): the GEMM's own tiles, four groups at a time for one or
 * two tokens, so decode and prefill give the same bits.
 */
static void
gemv_p32(int64_t k, const void *w, size_t wstride, int64_t n, const void *a, size_t astride,
         int64_t m, float *y, int64_t ldy)
{
    (void)wstride, (void)astride;
    const struct engine_variant *v = engine__variant();
    engine_tile_f16_fn tile = tile_f16_of(v);
    const uint16_t *p = w;
    size_t gs = (size_t)ENGINE_GEMM_ROWS * (size_t)k;
    int64_t i = 0;
    for (; m <= 2 && v->gemm_tile4_f16 != NULL && i + 4 * ENGINE_GEMM_ROWS <= n;
         i += 4 * ENGINE_GEMM_ROWS)
        v->gemm_tile4_f16(k, p + (size_t)i * k, gs, a, (int)m, y + i, ldy);
    for (; i < n; i += ENGINE_GEMM_ROWS) {
        int rows = (int)(n - i < ENGINE_GEMM_ROWS ? n - i : ENGINE_GEMM_ROWS);
        tile(k, p + (size_t)i * k, a, (int)m, rows, y + i, ldy);
    }
}

/* Converts activation rows claimed four at a time (j->n_out is m here). */
static void
act_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct mm_job *j = arg;
    enum engine_act a = j->v->type[j->t].act;
    int64_t r0, r1;
    while (claim(j, &r0, &r1))
        for (int64_t r = r0; r < r1; r++)
            j->v->act[a](j->x + r * j->k, (char *)j->a + r * j->astride, j->k);
}

/* The activation in the format the gemv kernels take, in thread 0's scratch. */
static void
convert_act(struct mm_job *j)
{
    if (j->p32) { /* one block of packed tokens (m <= ENGINE_GEMM_TOK), as the GEMM's tile takes */
        j->a = engine__pool_scratch(j->pool, 0, xt_bytes(j->m, j->k));
        pack_x_of(j->v)(j->x, j->m, j->k, 0, (float *)j->a);
        return;
    }
    enum engine_act a = j->v->type[j->t].act;
    if (a == ENGINE_ACT_F32) {
        j->a = j->x;
        j->astride = (size_t)j->k * sizeof(float);
        return;
    }
    j->astride = engine__act_row_size(a, j->k);
    j->a = engine__pool_scratch(j->pool, 0, j->astride * (size_t)j->m);
    if (j->m <= 16) { /* not worth waking anyone */
        for (int64_t r = 0; r < j->m; r++)
            j->v->act[a](j->x + r * j->k, (char *)j->a + r * j->astride, j->k);
        return;
    }
    j->n_out = j->m;
    j->chunk = 4;
    atomic_store(&j->next, 0);
    engine__pool_run_some(j->pool, act_task, j);
}

static void
add_part(struct mm_job *j, const struct engine_weight *w, float *y)
{
    struct mm_part *p = &j->part[j->n_parts++];
    p->w = w;
    p->y = y;
    p->wstride = engine__row_size(w->type, w->k);
    p->gemv = w->p32                             ? gemv_p32
              : !w->x16                           ? j->v->type[w->type].gemv
              : j->v->type[w->type].gemv_x16 ? j->v->type[w->type].gemv_x16
                                              : engine__gemv_x16_ref(w->type);
    p->chunk = gemv_chunk(w->n_out, engine__pool_size(j->pool),
                          w->p32 ? 4 * ENGINE_GEMM_ROWS : w->x16 ? ENGINE_X16 : 4);
    p->units = (w->n_out + p->chunk - 1) / p->chunk;
    j->n_units += p->units;
}

/* j->x holds the activation and j->parts the weights (all of one activation format). */
static void
matmul_gemv(struct mm_job *j)
{
    convert_act(j);
    atomic_store(&j->next, 0);
    engine__pool_run_some(j->pool, gemv_task, j);
}

/* ---- Large batches: OpenBLAS sgemm on dequantized panels -------------- */

static void
gemm_task(int ith, int nth, void *arg)
{
    (void)nth;
    struct mm_job *j = arg;
    bool f32 = j->t == GGUF_T_F32;
    float *panel = f32 ? NULL : engine__pool_scratch(j->pool, ith, (size_t)j->chunk *
                                                                  (size_t)j->k * sizeof(float));
    int64_t i0, i1;
    while (claim(j, &i0, &i1)) {
        const float *b = (const float *)(j->w + i0 * j->wstride);
        if (!f32) {
            for (int64_t i = i0; i < i1; i++)
                j->v->type[j->t].dequant(j->w + i * j->wstride, panel + (i - i0) * j->k, j->k);
            b = panel;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->m, (int)(i1 - i0),
                    (int)j->k, 1.0f, j->x, (int)j->k, b, (int)j->k, 0.0f, j->y + i0,
                    (int)j->n_out);
    }
}

/* ---- Large batches: the variant's own packed-panel GEMM --------------- */

/*
 * The variant's own GEMM. The activation is packed once (xt, in thread 0's
 * scratch, shared). The work is then cut into units of one group of
 * ENGINE_GEMM_ROWS weight rows times one chunk of GEMM_CHUNK_TB token
 * blocks, numbered group-major; threads claim runs of units (large runs
 * first, single units at the end, so the threads finish together), and a
 * thread dequantizes and packs a group's rows (ap) only when its run moves to
 * a new group.
 */
#define GEMM_CHUNK_TB 4

static size_t
xt_bytes(int64_t m, int64_t k)
{
    int64_t blocks = (m + ENGINE_GEMM_TOK - 1) / ENGINE_GEMM_TOK;
    return (size_t)blocks * (size_t)k * ENGINE_GEMM_TOK * sizeof(float);
}

static size_t
own_scratch(int64_t m, int64_t k)
{
    size_t group = (size_t)ENGINE_GEMM_ROWS * (size_t)k * sizeof(float);
    return engine__align64(xt_bytes(m, k)) + 2 * group; /* xt | dequantized slab | ap */
}

/* Claims a run of units: a 1/(2 nth) share of what is left, at least one. */
static bool
claim_run(struct mm_job *j, int nth, int64_t n_units, int64_t *u0, int64_t *u1)
{
    int64_t cur = atomic_load_explicit(&j->next, memory_order_relaxed);
    for (;;) {
        if (cur >= n_units)
            return false;
        int64_t n = (n_units - cur) / (2 * nth);
        n = n < 1 ? 1 : n;
        if (atomic_compare_exchange_weak_explicit(&j->next, &cur, cur + n,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *u0 = cur;
            *u1 = cur + n;
            return true;
        }
    }
}

static void
pack_x_task(int ith, int nth, void *arg)
{
    (void)ith;
    struct mm_job *j = arg;
    int64_t n_tb = (j->m + ENGINE_GEMM_TOK - 1) / ENGINE_GEMM_TOK, tb, end;
    while (claim_run(j, nth, n_tb, &tb, &end))
        for (; tb < end; tb++)
            j->pack_x(j->x, j->m, j->k, tb, j->pool_xt + tb * j->k * ENGINE_GEMM_TOK);
}

/*
 * Packs the weight rows of group g into ap. F32, F16 and BF16 rows are
 * converted while they are transposed; other types are dequantized a slab of
 * GEMM_SLAB columns at a time, so the rows stay in L1 until they are packed.
 */
#define GEMM_SLAB 256

static void
pack_group(struct mm_job *j, int64_t g, float *rows, float *ap)
{
    int64_t i0 = g * ENGINE_GEMM_ROWS, n = j->n_out - i0;
    n = n < ENGINE_GEMM_ROWS ? n : ENGINE_GEMM_ROWS;
    const char *w = j->w + i0 * j->wstride;
    if (j->t == GGUF_T_F32 || j->t == GGUF_T_F16 || j->t == GGUF_T_BF16) {
        j->v->gemm_pack_w(j->t, w, j->wstride, (int)n, j->k, ap);
        return;
    }
    for (int64_t c0 = 0; c0 < j->k; c0 += GEMM_SLAB) {
        int64_t cw = j->k - c0 < GEMM_SLAB ? j->k - c0 : GEMM_SLAB;
        size_t off = engine__row_size(j->t, c0); /* c0 is a multiple of every block size */
        for (int64_t i = 0; i < n; i++)
            j->v->type[j->t].dequant(w + i * j->wstride + off, rows + i * cw, cw);
        j->v->gemm_pack_w(GGUF_T_F32, rows, (size_t)cw * sizeof(float), (int)n, cw,
                          ap + c0 * ENGINE_GEMM_ROWS);
    }
}

/* All tiles of group g and token chunk c. */
static void
run_unit(struct mm_job *j, int64_t g, int64_t c, const float *ap)
{
    int64_t i0 = g * ENGINE_GEMM_ROWS, n_tb = (j->m + ENGINE_GEMM_TOK - 1) / ENGINE_GEMM_TOK;
    int n_rows = (int)(j->n_out - i0 < ENGINE_GEMM_ROWS ? j->n_out - i0 : ENGINE_GEMM_ROWS);
    for (int64_t tb = c * GEMM_CHUNK_TB; tb < n_tb && tb < (c + 1) * GEMM_CHUNK_TB; tb++) {
        int64_t t0 = tb * ENGINE_GEMM_TOK;
        int n_tok = (int)(j->m - t0 < ENGINE_GEMM_TOK ? j->m - t0 : ENGINE_GEMM_TOK);
        const float *xt = j->pool_xt + tb * j->k * ENGINE_GEMM_TOK;
        float *y = j->y + t0 * j->n_out + i0;
        if (j->p32)
            j->tile_f16(j->k, (const uint16_t *)j->w + i0 * j->k, xt, n_tok, n_rows, y, j->n_out);
        else
            j->v->gemm_tile(j->k, ap, xt, n_tok, n_rows, y, j->n_out);
    }
}

/*
 * Asks for group g's weight bytes (one contiguous range) to be brought into
 * L2 while the current group is being multiplied: dequantizing a group reads
 * its rows a slab at a time, a pattern the hardware prefetcher does not follow.
 */
static void
prefetch_group(const struct mm_job *j, int64_t g)
{
    int64_t i0 = g * ENGINE_GEMM_ROWS, i1 = i0 + ENGINE_GEMM_ROWS;
    i1 = i1 < j->n_out ? i1 : j->n_out;
    for (const char *p = j->w + i0 * j->wstride; p < j->w + i1 * j->wstride; p += 64)
        __builtin_prefetch(p, 0, 2);
}

static void
own_gemm_task(int ith, int nth, void *arg)
{
    struct mm_job *j = arg;
    char *s = engine__pool_scratch(j->pool, ith, own_scratch(j->m, j->k));
    float *rows = (float *)(s + engine__align64(xt_bytes(j->m, j->k)));
    float *ap = rows + ENGINE_GEMM_ROWS * j->k;
    int64_t n_tb = (j->m + ENGINE_GEMM_TOK - 1) / ENGINE_GEMM_TOK;
    int64_t n_chunks = (n_tb + GEMM_CHUNK_TB - 1) / GEMM_CHUNK_TB;
    int64_t n_groups = (j->n_out + ENGINE_GEMM_ROWS - 1) / ENGINE_GEMM_ROWS;
    int64_t packed = -1, u, end;
    while (claim_run(j, nth, n_groups * n_chunks, &u, &end)) {
        for (; u < end; u++) {
            if (u / n_chunks != packed && !j->p32) {
                pack_group(j, packed = u / n_chunks, rows, ap);
                if ((packed + 1) * n_chunks < end)
                    prefetch_group(j, packed + 1);
            }
            run_unit(j, u / n_chunks, u % n_chunks, ap);
        }
    }
}

static void
matmul_own_gemm(struct mm_job *j)
{
    j->pack_x = pack_x_of(j->v);
    j->tile_f16 = tile_f16_of(j->v);
    /* thread 0's scratch holds xt for everyone; sized once so it does not move */
    j->pool_xt = engine__pool_scratch(j->pool, 0, own_scratch(j->m, j->k));
    if (j->m <= ENGINE_GEMM_TOK) { /* one block of tokens (decode): not worth waking anyone */
        j->pack_x(j->x, j->m, j->k, 0, j->pool_xt);
    } else {
        atomic_store(&j->next, 0);
        engine__pool_run_some(j->pool, pack_x_task, j);
    }
    atomic_store(&j->next, 0);
    engine__pool_run_some(j->pool, own_gemm_task, j);
}

static void
matmul_gemm(struct mm_job *j)
{
    if (j->v->gemm_tile != NULL || j->p32) {
        matmul_own_gemm(j);
        return;
    }
    int nth = engine__pool_size(j->pool);
    if (j->t == GGUF_T_F32) /* no panels to fill: a few big slices */
        j->chunk = (j->n_out + 4 * nth - 1) / (4 * nth);
    else
        j->chunk = panel_rows(j->k);
    engine__pool_run_some(j->pool, gemm_task, j);
}

static bool
use_gemv(const struct engine_weight *w, int64_t m)
{
    if (w->p32)
        return m <= ENGINE_GEMM_TOK;
    return w->x16 || m < gemm_min_m(w->type);
}

static void
check_weight(const struct engine_weight *w, int64_t m)
{
    (void)w, (void)m;
    assert(engine__type_supported(w->type) && (!w->x16 || engine__x16_size(w->type, 1, w->k)));
    assert(w->k > 0 && w->k % engine__type_blck(w->type) == 0 && w->n_out >= 0 && m >= 0);
    assert(w->k <= INT32_MAX && w->n_out <= INT32_MAX && m <= INT32_MAX);
}

void
engine__matmul_n(struct engine_pool *pool, int n, const struct engine_weight *const *w,
                 const float *x, int64_t m, float *const *y)
{
    assert(pool != NULL && n >= 1 && n <= ENGINE_MM_MAX);
    if (m == 0)
        return;
    const struct engine_variant *v = engine__variant();
    struct mm_job g = { .pool = pool, .v = v, .k = w[0]->k, .m = m, .x = x };
    for (int i = 0; i < n; i++) {
        check_weight(w[i], m);
        assert(w[i]->k == w[0]->k);
        if (w[i]->n_out == 0)
            continue;
        if (!use_gemv(w[i], m)) {
            struct mm_job j = {
                .pool = pool, .v = v, .t = w[i]->type, .w = w[i]->data,
                .wstride = engine__row_size(w[i]->type, w[i]->k), .n_out = w[i]->n_out,
                .k = w[i]->k, .m = m, .x = x, .y = y[i], .p32 = w[i]->p32,
            };
            matmul_gemm(&j);
            continue;
        }
        /* one gemv job for weights of one activation format; a weight of another runs alone */
        if (g.n_parts > 0 &&
            (v->type[w[i]->type].act != v->type[g.t].act || w[i]->p32 != g.p32)) {
            struct mm_job j = { .pool = pool, .v = v, .t = w[i]->type, .k = g.k, .m = m,
                                .x = x, .p32 = w[i]->p32 };
            add_part(&j, w[i], y[i]);
            matmul_gemv(&j);
            continue;
        }
        g.t = w[i]->type;
        g.p32 = w[i]->p32;
        add_part(&g, w[i], y[i]);
    }
    if (g.n_parts > 0)
        matmul_gemv(&g);
}

void
engine__matmul_w(struct engine_pool *pool, const struct engine_weight *w, const float *x,
                 int64_t m, float *y)
{
    engine__matmul_n(pool, 1, &w, x, m, &y);
}

void
engine__matmul(struct engine_pool *pool, enum gguf_ttype t, const void *w, int64_t n_out,
               int64_t k, const float *x, int64_t m, float *y)
{
    struct engine_weight wt = { .type = t, .k = k, .n_out = n_out, .data = w };
    engine__matmul_w(pool, &wt, x, m, y);
}

/*
 * lora.c - low-rank adapters as the forward pass applies them, unmerged:
 *     y = W x + sum over the row's adapters of s * B (A x)
 * An engine_lora holds, per layer and target projection, A (rank rows of k)
 * and B (n_out rows of rank) in f32, or in f16 when the file had them so (the
 * kernels sum the same products in the same order either way), with its own
 * scale (alpha / rank, or alpha / sqrt(rank) for rsLoRA). It is built once by
 * a loader (adapters/), then immutable and refcounted: a running request holds
 * a reference, so a replaced or unloaded adapter's memory goes when the
 * last request using it ends, on whichever thread that happens.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

struct lora_mat {
    int rank;                   /* 0: this target has no adapter */
    bool f16;                   /* a and bt hold f16, else f32 */
    float scale;                /* alpha / rank (or rsLoRA's alpha / sqrt(rank)) */
    void *a;                    /* (rank, k) */
    void *bt;                   /* (rank, n_out): B transposed, so the B step adds rows */
};

struct engine_lora {
    atomic_int refs;
    const struct engine_model *m;
    size_t bytes;
    uint64_t id;                /* unique per object, for caches */
    struct lora_mat *mats;      /* (n_layer, ENGINE_LORA_N_TARGETS) */
};

static atomic_uint_fast64_t next_id = 1;
static atomic_uint_fast64_t live_count, live_bytes;    /* engine_lora_live */

/* The base weight an adapter target modifies. */
static const struct engine_weight *
target_weight(const struct engine_model *m, int layer, enum engine_lora_target t)
{
    const struct engine_layer *ly = &m->layers[layer];
    switch (t) {
    case ENGINE_LORA_Q: return &ly->wq;
    case ENGINE_LORA_K: return &ly->wk;
    case ENGINE_LORA_V: return &ly->wv;
    case ENGINE_LORA_O: return &ly->wo;
    case ENGINE_LORA_GATE: return &ly->w_gate;
    case ENGINE_LORA_UP: return &ly->w_up;
    case ENGINE_LORA_DOWN: return &ly->w_down;
    default: return NULL;
    }
}

const char *
engine_lora_target_name(enum engine_lora_target t)
{
    static const char *names[ENGINE_LORA_N_TARGETS] = { "attn_q", "attn_k", "attn_v",
                                                        "attn_output", "ffn_gate", "ffn_up",
                                                        "ffn_down" };
    return (unsigned)t < ENGINE_LORA_N_TARGETS ? names[t] : "?";
}

int
engine_lora_new(const struct engine_model *m, struct engine_lora **out)
{
    *out = NULL;
    struct engine_lora *l = engine__xcalloc(1, sizeof(*l));
    atomic_init(&l->refs, 1);
    l->m = m;
    l->id = atomic_fetch_add(&next_id, 1);
    l->mats = engine__try_alloc((size_t)m->hp.n_layer * ENGINE_LORA_N_TARGETS,
                                sizeof(*l->mats));
    if (l->mats == NULL) {
        free(l);
        return -ENOMEM;
    }
    memset(l->mats, 0, (size_t)m->hp.n_layer * ENGINE_LORA_N_TARGETS * sizeof(*l->mats));
    atomic_fetch_add_explicit(&live_count, 1, memory_order_relaxed);
    *out = l;
    return 0;
}

static bool
all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

/* Element e of a matrix of mat, from f32. */
static void
put(const struct lora_mat *mat, void *p, size_t e, float v)
{
    if (mat->f16)
        ((uint16_t *)p)[e] = engine__f32_to_f16(v);
    else
        ((float *)p)[e] = v;
}

int
engine_lora_add(struct engine_lora *l, int layer, enum engine_lora_target t, int rank,
                float scale, int64_t k, int64_t n_out, const float *a, const float *b,
                bool f16, char *err, size_t errlen)
{
    const struct engine_model *m = l->m;
    if (layer < 0 || layer >= m->hp.n_layer || (unsigned)t >= ENGINE_LORA_N_TARGETS) {
        engine__err(err, errlen, "layer %d is not in the model (0..%d)", layer,
                    m->hp.n_layer - 1);
        return -EINVAL;
    }
    const struct engine_weight *w = target_weight(m, layer, t);
    struct lora_mat *mat = &l->mats[(size_t)layer * ENGINE_LORA_N_TARGETS + t];
    if (rank < 1 || k != w->k || n_out != w->n_out || mat->rank != 0) {
        engine__err(err, errlen, "blk.%d.%s: adapter shape A (%d, %lld), B (%lld, %d) does not "
                    "fit the base weight (%lld, %lld)%s", layer, engine_lora_target_name(t),
                    rank, (long long)k, (long long)n_out, rank, (long long)w->n_out,
                    (long long)w->k, mat->rank != 0 ? " or is given twice" : "");
        return -EINVAL;
    }
    size_t na = (size_t)rank * (size_t)k, nb = (size_t)n_out * (size_t)rank;
    if (!isfinite(scale) || !all_finite(a, na) || !all_finite(b, nb)) {
        engine__err(err, errlen, "blk.%d.%s: adapter weights hold NaN or infinity", layer,
                    engine_lora_target_name(t));
        return -EINVAL;
    }
    size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    mat->a = engine__try_alloc(na, es);
    mat->bt = engine__try_alloc(nb, es);
    if (mat->a == NULL || mat->bt == NULL) {
        free(mat->a), free(mat->bt);
        mat->a = mat->bt = NULL;
        return -ENOMEM;
    }
    mat->f16 = f16;
    for (size_t e = 0; e < na; e++)
        put(mat, mat->a, e, a[e]);
    for (int64_t c = 0; c < n_out; c++)
        for (int q = 0; q < rank; q++)
            put(mat, mat->bt, (size_t)q * (size_t)n_out + (size_t)c,
                b[(size_t)c * (size_t)rank + (size_t)q]);
    mat->rank = rank;
    mat->scale = scale;
    l->bytes += (na + nb) * es;
    atomic_fetch_add_explicit(&live_bytes, (na + nb) * es, memory_order_relaxed);
    return 0;
}

void
engine_lora_ref(struct engine_lora *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

void
engine_lora_unref(struct engine_lora *l)
{
    if (l == NULL)
        return;
    int old = atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel);
    if (old != 1)
        return;
    for (size_t i = 0; i < (size_t)l->m->hp.n_layer * ENGINE_LORA_N_TARGETS; i++) {
        free(l->mats[i].a);
        free(l->mats[i].bt);
    }
    free(l->mats);
    atomic_fetch_sub_explicit(&live_bytes, l->bytes, memory_order_relaxed);
    atomic_fetch_sub_explicit(&live_count, 1, memory_order_relaxed);
    free(l);
}

size_t
engine_lora_bytes(const struct engine_lora *l)
{
    return l->bytes;
}

uint64_t
engine_lora_id(const struct engine_lora *l)
{
    return l->id;
}

void
engine_lora_live(uint64_t *count, uint64_t *bytes)
{
    *count = atomic_load_explicit(&live_count, memory_order_relaxed);
    *bytes = atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

int
engine_lora_max_rank(const struct engine_lora *l)
{
    int r = 0;
    for (size_t i = 0; i < (size_t)l->m->hp.n_layer * ENGINE_LORA_N_TARGETS; i++)
        r = l->mats[i].rank > r ? l->mats[i].rank : r;
    return r;
}

/* ---- Application in the forward pass ---------------------------------- */

/* Grows a scratch array to n elements of size sz; false on failure. */
static bool
grow(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return true;
    void *q = engine__try_alloc(n, sz);
    if (q == NULL)
        return false;
    free(*p);
    *p = q;
    *cap = n;
    return true;
}

static int
cmp_group(const void *a, const void *b)
{
    uint64_t x = ((const struct engine_lora_group *)a)->l->id;
    uint64_t y = ((const struct engine_lora_group *)b)->l->id;
    return x < y ? -1 : x > y;
}

/*
 * Groups the rows of a batch by adapter, once per batch: group g lists the
 * rows that use adapter l and each row's request scale. A row with two
 * adapters is in two groups; their deltas add up.
 */
int
engine__lora_plan(struct engine_lora_plan *p, const struct engine_lora_set *const *set,
                  int rows)
{
    size_t entries = 0;
    for (int r = 0; r < rows; r++)
        entries += set[r] != NULL ? (size_t)set[r]->n : 0;
    p->n = 0;
    if (entries == 0)
        return 0;
    if (!grow((void **)&p->g, &p->cap_g, entries, sizeof(*p->g)) ||
        !grow((void **)&p->row, &p->cap_row, entries, sizeof(int)) ||
        !grow((void **)&p->scale, &p->cap_scale, entries, sizeof(float)))
        return -ENOMEM;
    size_t used = 0;
    for (int r0 = 0; r0 < rows; r0++) {
        for (int j0 = 0; set[r0] != NULL && j0 < set[r0]->n; j0++) {
            const struct engine_lora *l = set[r0]->lora[j0];
            bool seen = false;
            for (int g = 0; g < p->n && !seen; g++)
                seen = p->g[g].l == l;
            if (seen)
                continue;
            struct engine_lora_group *g = &p->g[p->n++];
            *g = (struct engine_lora_group){ l, 0, p->row + used, p->scale + used, 0, 0 };
            for (int r = r0; r < rows; r++)
                for (int j = 0; set[r] != NULL && j < set[r]->n; j++)
                    if (set[r]->lora[j] == l) {
                        g->row[g->n] = r;
                        g->scale[g->n++] = set[r]->scale[j];
                    }
            used += (size_t)g->n;
        }
    }
    qsort(p->g, (size_t)p->n, sizeof(*p->g), cmp_group);
    return 0;
}

/*
 * Applying the adapters of n projections that read the same x (q, k, v;
 * gate, up) takes two pool passes, however many adapters and projections:
 * (A) units of (projection, group): t = x_g . A^T (n_g rows of rank), scaled
 * per row; (B) units of (projection, slice of its output columns): for each
 * group in turn, d = t . B[slice]^T, added to the group's rows of y. A
 * group's rows of x are gathered once, by the caller, when it has more than
 * one. Groups are in adapter-id order, so a row with several adapters always
 * sums their deltas in the same order. Units are claimed one at a time
 * (run_some), so a worker that lost its core is not waited for.
 */
struct lora_job {
    struct engine_lora_plan *p;
    struct engine_pool *pool;
    int layer, n;
    const enum engine_lora_target *t;
    float *const *y;
    const int64_t *n_out;
    size_t toff[ENGINE_LORA_MAX_N];   /* projection i's part of the plan's t */
    const float *x;
    int64_t k;
    int slices;                       /* column slices per projection in (B) */
    _Atomic int next;
};

static const struct lora_mat *
group_mat(const struct lora_job *j, int i, int gi)
{
    return &j->p->g[gi].l->mats[(size_t)j->layer * ENGINE_LORA_N_TARGETS + j->t[i]];
}

static bool
claim(struct lora_job *j, int n_units, int *u)
{
    *u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    return *u < n_units;
}

static void
lora_a_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct lora_job *j = arg;
    const struct engine_variant *v = engine__variant();
    size_t xs = (size_t)j->k * sizeof(float);
    int u;
    while (claim(j, j->n * j->p->n, &u)) {
        int i = u / j->p->n, gi = u % j->p->n;
        const struct engine_lora_group *g = &j->p->g[gi];
        const struct lora_mat *mat = group_mat(j, i, gi);
        if (mat->rank == 0)
            continue;
        const float *xg = g->n > 1 ? j->p->xg + g->xoff : j->x + (size_t)g->row[0] * j->k;
        float *t = j->p->t + j->toff[i] + g->toff;
        enum gguf_ttype ty = mat->f16 ? GGUF_T_F16 : GGUF_T_F32;
        size_t as = (size_t)j->k * (mat->f16 ? sizeof(uint16_t) : sizeof(float));
        v->type[ty].gemv(j->k, mat->a, as, mat->rank, xg, xs, g->n, t, mat->rank);
        for (int r = 0; r < g->n; r++)
            for (int q = 0; q < mat->rank; q++)
                t[(size_t)r * mat->rank + q] *= g->scale[r] * mat->scale;
    }
}

/* Columns [c0, c1) of projection i: each group's delta, added to its rows of y. */
static void
lora_b_slice(struct lora_job *j, int i, int64_t c0, int64_t c1)
{
    const struct engine_variant *v = engine__variant();
    int64_t n_out = j->n_out[i];
    for (int gi = 0; gi < j->p->n; gi++) {
        const struct engine_lora_group *g = &j->p->g[gi];
        const struct lora_mat *mat = group_mat(j, i, gi);
        if (mat->rank == 0)
            continue;
        const float *t = j->p->t + j->toff[i] + g->toff;
        for (int r = 0; r < g->n; r++) {
            const float *tr = t + (size_t)r * mat->rank;
            float *yr = j->y[i] + (size_t)g->row[r] * n_out + c0;
            if (mat->f16)
                v->rank_update_f16(mat->rank, tr, (const uint16_t *)mat->bt + c0,
                                   (size_t)n_out, c1 - c0, yr);
            else
                v->rank_update(mat->rank, tr, (const float *)mat->bt + c0, (size_t)n_out,
                               c1 - c0, yr);
        }
    }
}

static void
lora_b_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct lora_job *j = arg;
    int u;
    while (claim(j, j->n * j->slices, &u)) {
        int i = u / j->slices, sl = u % j->slices;
        int64_t n_out = j->n_out[i];
        int64_t c0 = n_out * sl / j->slices, c1 = n_out * (sl + 1) / j->slices;
        if (c1 > c0)
            lora_b_slice(j, i, c0, c1);
    }
}

/*
 * Places each group's rows in the plan's t (the same place in every
 * projection's part, sized for the largest rank) and, for groups of several
 * rows, in xg, where their rows of x are gathered. Returns 1, 0 (no adapter
 * touches these projections) or -ENOMEM.
 */
static int
lay_out(struct lora_job *j)
{
    struct engine_lora_plan *p = j->p;
    size_t nx = 0, per = 0;
    for (int gi = 0; gi < p->n; gi++) {
        struct engine_lora_group *g = &p->g[gi];
        int rank = 0;
        for (int i = 0; i < j->n; i++) {
            int r = group_mat(j, i, gi)->rank;
            rank = r > rank ? r : rank;
        }
        g->xoff = nx;
        nx += g->n > 1 ? (size_t)g->n * (size_t)j->k : 0;
        g->toff = per;
        per += (size_t)g->n * (size_t)rank;
    }
    if (per == 0)
        return 0;
    for (int i = 0; i < j->n; i++)
        j->toff[i] = (size_t)i * per;
    if (!grow((void **)&p->xg, &p->cap_xg, nx ? nx : 1, sizeof(float)) ||
        !grow((void **)&p->t, &p->cap_t, (size_t)j->n * per, sizeof(float)))
        return -ENOMEM;
    for (int gi = 0; gi < p->n; gi++) {
        const struct engine_lora_group *g = &p->g[gi];
        for (int r = 0; g->n > 1 && r < g->n; r++)
            memcpy(p->xg + g->xoff + (size_t)r * j->k, j->x + (size_t)g->row[r] * j->k,
                   (size_t)j->k * sizeof(float));
    }
    return 1;
}

int
engine__lora_apply(struct engine_pool *pool, struct engine_lora_plan *p, int layer, int n,
                   const enum engine_lora_target *t, const float *x, int64_t k, float *const *y,
                   const int64_t *n_out)
{
    if (p->n == 0)
        return 0;
    struct lora_job j = { .p = p, .pool = pool, .layer = layer, .n = n, .t = t, .y = y,
                          .n_out = n_out, .x = x, .k = k,
                          .slices = 4 * engine__pool_size(pool) };
    int rc = lay_out(&j);
    if (rc <= 0)
        return rc;
    engine__pool_run_some(pool, lora_a_task, &j);
    atomic_store(&j.next, 0);
    engine__pool_run_some(pool, lora_b_task, &j);
    return 0;
}

void
engine__lora_plan_release(struct engine_lora_plan *p)
{
    free(p->g);
    free(p->row);
    free(p->scale);
    free(p->xg);
    free(p->t);
    memset(p, 0, sizeof(*p));
}

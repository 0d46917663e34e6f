/*
 * forward.c - the LLaMA forward pass over a batch of token rows.
 *
 * Reads top to bottom like the math (llama2.c's run.c, batched):
 *   x = embed(tokens)
 *   per layer: x += Wo . attn(rope(Wq . norm(x)), rope(Wk . norm(x)), Wv . norm(x))
 *              x += Wdown . (silu(Wgate . norm(x)) * (Wup . norm(x)))
 *   logits = Wout . norm(x)      (only for the rows that want logits)
 * Every matrix product goes through engine__matmul, once for all rows of the
 * batch. K and V are stored in the cache (f32, one contiguous block of n_ctx
 * positions per sequence and layer) before attention, so a row attends to
 * every earlier position of its own sequence, including rows of this batch.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

struct engine_ctx {
    struct engine_model *m;
    struct engine_pool *pool;
    int n_ctx;
    int n_seq;
    int n_threads;
    struct engine_kv kv;
    int *seq_next;      /* (n_seq) scratch for check_batch */
    bool rows_distinct; /* this batch has at most one row per sequence */
    float *att;         /* (n_threads, att_floats): scores and softmax divisors */
    const void **tiles; /* (n_threads, 2, 2 * kv.max_blocks): K then V tiles, two units */
    /* Activations for up to cap rows, regrown as needed. */
    int cap;
    float *x, *xb, *q, *k, *v, *ao, *hb, *hb2, *xl;
    float *rot;         /* (rows, n_rot): each row's RoPE cosines, then sines */
    struct engine_lora_plan plan;   /* adapter groups of the current batch */
};

/* ---- Context ---------------------------------------------------------- */

static size_t
kv_dim(const struct engine_model *m)
{
    return (size_t)m->hp.n_head_kv * (size_t)m->hp.head_dim;
}

/* Per thread, g = n_head / n_head_kv: g rows of n_ctx scores, g softmax divisors. */
static size_t
att_floats(const struct engine_model *m, int n_ctx)
{
    size_t g = (size_t)(m->hp.n_head / m->hp.n_head_kv);
    return g * (size_t)n_ctx + g;
}

/* AUTO's choice: f32 for f32 weights, f16 for the rest (see engine.h). */
static enum engine_kv_type
kv_type(const struct engine_model *m, enum engine_kv_cache kv)
{
    if (kv != ENGINE_KV_CACHE_AUTO)
        return kv == ENGINE_KV_CACHE_F16 ? ENGINE_KV_F16 : ENGINE_KV_F32;
    return m->layers[0].wq.type == GGUF_T_F32 ? ENGINE_KV_F32 : ENGINE_KV_F16;
}

int
engine_ctx_new(struct engine_model *m, int n_ctx, int n_seq, int n_threads,
               struct engine_ctx **out)
{
    return engine_ctx_new_kv(m, n_ctx, n_seq, n_threads, ENGINE_KV_CACHE_AUTO, out);
}

int
engine_ctx_new_kv(struct engine_model *m, int n_ctx, int n_seq, int n_threads,
                  enum engine_kv_cache kv, struct engine_ctx **out)
{
    return engine_ctx_new_pool(m, n_ctx, n_seq, n_seq, n_threads, kv, out);
}

int
engine_ctx_new_pool(struct engine_model *m, int n_ctx, int n_seq, int pool_seqs, int n_threads,
                    enum engine_kv_cache kv, struct engine_ctx **out)
{
    *out = NULL;
    if (n_ctx < 1 || n_seq < 1 || pool_seqs < 1 || pool_seqs > n_seq || n_threads < 1 ||
        n_threads > 1024 || (unsigned)kv > ENGINE_KV_CACHE_F16)
        return -EINVAL;
    struct engine_ctx *c = engine__xcalloc(1, sizeof(*c));
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_seq = n_seq;
    c->n_threads = n_threads;
    int rc = engine__kv_init(&c->kv, &m->hp, n_ctx, n_seq, pool_seqs, kv_type(m, kv));
    if (rc < 0)
        goto out;
    rc = -ENOMEM;
    c->seq_next = engine__try_alloc((size_t)n_seq, sizeof(int));
    c->att = engine__try_alloc((size_t)n_threads * att_floats(m, n_ctx), sizeof(float));
    c->tiles = engine__try_alloc((size_t)n_threads * 4 * c->kv.max_blocks, sizeof(*c->tiles));
    if (!c->seq_next || !c->att || !c->tiles)
        goto out;
    if ((rc = engine__pool_new(n_threads, &c->pool)) < 0)
        goto out;
    *out = c;
    c = NULL;
    rc = 0;
out:
    engine_ctx_free(c);
    return rc;
}

static void
free_rows(struct engine_ctx *c)
{
    float **bufs[] = { &c->x, &c->xb, &c->q, &c->k, &c->v, &c->ao, &c->hb, &c->hb2, &c->xl,
                       &c->rot };
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    c->cap = 0;
}

void
engine_ctx_free(struct engine_ctx *c)
{
    if (c == NULL)
        return;
    free_rows(c);
    engine__lora_plan_release(&c->plan);
    engine__pool_free(c->pool);
    engine__kv_release(&c->kv);
    free(c->seq_next);
    free(c->att);
    free(c->tiles);
    free(c);
}

struct engine_kv *
engine__ctx_kv(struct engine_ctx *c)
{
    return &c->kv;
}

int
engine_ctx_n_ctx(const struct engine_ctx *c)
{
    return c->n_ctx;
}

void
engine_seq_truncate(struct engine_ctx *c, int seq, int p0)
{
    if (seq >= 0 && seq < c->n_seq && p0 >= 0)
        engine__kv_truncate(&c->kv, seq, p0);
}

/* Makes room for n rows of activations. */
static int
reserve_rows(struct engine_ctx *c, int n)
{
    if (n <= c->cap)
        return 0;
    const struct engine_hparams *hp = &c->m->hp;
    size_t e = (size_t)hp->n_embd, qd = (size_t)hp->n_head * hp->head_dim;
    size_t kd = kv_dim(c->m), f = (size_t)hp->n_ff, nn = (size_t)n;
    free_rows(c);
    c->x = engine__try_alloc(nn * e, sizeof(float));
    c->xb = engine__try_alloc(nn * (e > qd ? e : qd), sizeof(float));
    c->q = engine__try_alloc(nn * qd, sizeof(float));
    c->k = engine__try_alloc(nn * kd, sizeof(float));
    c->v = engine__try_alloc(nn * kd, sizeof(float));
    c->ao = engine__try_alloc(nn * qd, sizeof(float));
    c->hb = engine__try_alloc(nn * f, sizeof(float));
    c->hb2 = engine__try_alloc(nn * f, sizeof(float));
    c->xl = engine__try_alloc(nn * e, sizeof(float));
    c->rot = engine__try_alloc(nn * (size_t)hp->n_rot, sizeof(float));
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->ao || !c->hb || !c->hb2 || !c->xl ||
        !c->rot) {
        free_rows(c);
        return -ENOMEM;
    }
    c->cap = n;
    return 0;
}

/* ---- Building blocks -------------------------------------------------- */

static void
rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    engine__variant()->rmsnorm(out, x, w, n, eps);
}

/*
 * The row-wise steps between matmuls, one row at a time: x += xb (add), then
 * xb = norm(x) (norm != NULL); or hb = silu(hb) * hb2 (silu). Past
 * ROWS_ON_POOL rows (a prompt), rows are claimed four at a time on the pool;
 * fewer are not worth waking anyone for.
 */
#define ROWS_ON_POOL 16

struct rows_job {
    struct engine_ctx *c;
    int n;
    bool add, silu;
    const float *norm;
    _Atomic int next;
};

static void
rows_do(const struct rows_job *j, int r0, int r1)
{
    const struct engine_hparams *hp = &j->c->m->hp;
    struct engine_ctx *c = j->c;
    size_t e = (size_t)hp->n_embd, f = (size_t)hp->n_ff;
    for (int r = r0; r < r1; r++) {
        float *x = c->x + r * e, *xb = c->xb + r * e;
        if (j->silu)
            engine__variant()->silu_mul(c->hb + r * f, c->hb2 + r * f, (int64_t)f);
        for (size_t i = 0; j->add && i < e; i++)
            x[i] += xb[i];
        if (j->norm != NULL)
            rmsnorm(xb, x, j->norm, (int)e, hp->rms_eps);
    }
}

static void
rows_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct rows_job *j = arg;
    int r0;
    while ((r0 = atomic_fetch_add_explicit(&j->next, 4, memory_order_relaxed)) < j->n)
        rows_do(j, r0, r0 + 4 < j->n ? r0 + 4 : j->n);
}

static void
rows(struct engine_ctx *c, int n, bool add, const float *norm, bool silu)
{
    struct rows_job j = { c, n, add, silu, norm, 0 };
    if (n <= ROWS_ON_POOL)
        rows_do(&j, 0, n);
    else
        engine__pool_run_some(c->pool, rows_task, &j);
}

/*
 * The RoPE angles of position pos, pos * base^(-2i/n_rot) (scaled, and
 * divided by rope_freqs if the model has them) for i < n_rot / 2, computed in
 * double as the reference does: their cosines into cs, sines into sn.
 */
static void
rope_angles(const struct engine_model *m, int pos, float *cs, float *sn)
{
    const struct engine_hparams *hp = &m->hp;
    for (int i = 0; i < hp->n_rot / 2; i++) {
        double theta = (double)pos * hp->rope_freq_scale *
                       pow((double)hp->rope_base, -2.0 * i / hp->n_rot);
        if (m->rope_freqs != NULL)
            theta /= m->rope_freqs[i];
        float t = (float)theta;
        cs[i] = cosf(t);
        sn[i] = sinf(t);
    }
}

/*
 * Rotates the first n_rot dimensions of each of n_heads heads of one row by
 * the angles in rot (cosines, then sines). Pairs are (2i, 2i+1), or
 * (i, i + n_rot/2) in NEOX mode.
 */
static void
rope(const struct engine_model *m, float *v, int n_heads, const float *rot)
{
    const struct engine_hparams *hp = &m->hp;
    int half = hp->n_rot / 2;
    const float *cs = rot, *sn = rot + half;
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * hp->head_dim;
        for (int i = 0; i < half; i++) {
            int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
            float x0 = p[a], x1 = p[b];
            p[a] = x0 * cs[i] - x1 * sn[i];
            p[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

static void
add_bias(float *y, const float *b, int rows, int n)
{
    if (b == NULL)
        return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            y[(size_t)r * n + i] += b[i];
}

static void
matmul(struct engine_ctx *c, const struct engine_weight *w, const float *x, int rows, float *y)
{
    engine__matmul_w(c->pool, w, x, rows, y);
}

/*
 * y[i] = x . W[t0 + i]^T for n targets of one layer that read the same x (q,
 * k, v; gate, up), in one pass of the matmul, then each adapter group's
 * low-rank update of each.
 */
static int
project(struct engine_ctx *c, int il, enum engine_lora_target t0, int n, const float *x,
        int rows, float *const *y)
{
    const struct engine_layer *ly = &c->m->layers[il];
    const struct engine_weight *ws[ENGINE_LORA_N_TARGETS] = {
        &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down
    };
    engine__matmul_n(c->pool, n, ws + t0, x, rows, y);
    enum engine_lora_target t[ENGINE_LORA_MAX_N];
    int64_t n_out[ENGINE_LORA_MAX_N];
    for (int i = 0; i < n; i++) {
        t[i] = (enum engine_lora_target)(t0 + i);
        n_out[i] = ws[t0 + i]->n_out;
    }
    return engine__lora_apply(c->pool, &c->plan, il, n, t, x, ws[t0]->k, y, n_out);
}

/* ---- Attention -------------------------------------------------------- */

/*
 * Units of (row, kv head), claimed a few at a time, so a worker that lost
 * its core is not waited for.
 */
struct attn_job {
    struct engine_ctx *c;
    const struct engine_batch *b;
    int layer;
    bool store;                     /* each unit stores its own row's k and v first */
    int chunk;                      /* units claimed at a time */
    _Atomic int next;
};

/* A thread's claimed run of consecutive units [w, end). */
struct attn_run {
    int w, end;
};

/*
 * The next unit: consecutive units are a row's kv heads in order, whose q,
 * k, v and cache tiles lie side by side, so a thread takes them a run at a
 * time (the hardware prefetcher follows; small enough runs still balance).
 */
static bool
claim_unit(struct attn_job *j, struct attn_run *run, int *w)
{
    int n = j->b->n * j->c->m->hp.n_head_kv;
    if (run->w >= run->end) {
        run->w = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
        run->end = run->w + j->chunk < n ? run->w + j->chunk : n;
    }
    *w = run->w++;
    return *w < n;
}

/*
 * One (row, kv head) pair: for each of the g query heads sharing that kv
 * head, softmax(q . K^T / sqrt(d)) . V over positions 0..pos, with the
 * variant's attention kernels: scores against the transposed K cache (each
 * K vector read once for the group), then V rows weighted and summed, and
 * the softmax's division done once per output.
 */
/* Unit w's K and V tiles into kt (K, then V from kt + max_blocks); asks for them in decode. */
static void
unit_tiles(struct engine_ctx *c, const struct attn_job *j, int w, const void **kt)
{
    int n_kv = c->m->hp.n_head_kv, row = w / n_kv;
    engine__kv_tiles(&c->kv, j->layer, j->b->seq[row], w % n_kv, j->b->pos[row] + 1,
                     c->rows_distinct, kt, kt + c->kv.max_blocks);
}

/* kt: the unit's tiles from unit_tiles. */
static void
attend(struct engine_ctx *c, const struct attn_job *j, int row, int kvh, float *att,
       const void **kt)
{
    const struct engine_hparams *hp = &c->m->hp;
    const struct engine_attn_kernels *A = &engine__variant()->attn;
    int hd = hp->head_dim, g = hp->n_head / hp->n_head_kv;
    int n = j->b->pos[row] + 1;
    const float *q = c->q + (size_t)row * hp->n_head * hd + (size_t)kvh * g * hd;
    A->scores[c->kv.type](hd, g, n, q, 1.0f / sqrtf((float)hd), kt, att, (size_t)c->n_ctx);
    float *inv = att + (size_t)g * c->n_ctx;
    for (int h = 0; h < g; h++) {
        float *a = att + (size_t)h * c->n_ctx;
        inv[h] = 1.0f / A->exp(a, n, A->max(a, n));
    }
    float *o = c->ao + (size_t)row * hp->n_head * hd + (size_t)kvh * g * hd;
    A->mix[c->kv.type](hd, g, n, att, (size_t)c->n_ctx, kt + c->kv.max_blocks, inv, o);
}

/* Rotates row r's q heads of kv head h, and its k head h, by the row's position. */
static void
rope_unit(struct engine_ctx *c, int r, int h)
{
    const struct engine_hparams *hp = &c->m->hp;
    int n_kv = hp->n_head_kv, g = hp->n_head / n_kv, hd = hp->head_dim;
    const float *rot = c->rot + (size_t)r * hp->n_rot;
    rope(c->m, c->q + ((size_t)r * hp->n_head + (size_t)h * g) * hd, g, rot);
    rope(c->m, c->k + ((size_t)r * n_kv + h) * hd, 1, rot);
}

/* Caches row r's k and v for kv head h. */
static void
store(struct attn_job *j, int r, int h)
{
    size_t kd = kv_dim(j->c->m), hd = (size_t)j->c->m->hp.head_dim;
    engine__kv_store(&j->c->kv, j->layer, j->b->seq[r], j->b->pos[r], h,
                     j->c->k + r * kd + h * hd, j->c->v + r * kd + h * hd);
}

static void
store_task(int ith, int nth, void *arg)
{
    (void)ith, (void)nth;
    struct attn_job *j = arg;
    struct attn_run run = { 0, 0 };
    int n_kv = j->c->m->hp.n_head_kv, w;
    while (claim_unit(j, &run, &w)) {
        rope_unit(j->c, w / n_kv, w % n_kv);
        store(j, w / n_kv, w % n_kv);
    }
}

/*
 * Attention units. When every row is its own sequence's only row (decode),
 * a unit first stores its own row's k and v: nothing else it reads is new,
 * and the lines it writes are the ones it reads next.
 */
static void
attn_task(int ith, int nth, void *arg)
{
    struct attn_job *j = arg;
    struct engine_ctx *c = j->c;
    (void)nth;
    int n_kv = c->m->hp.n_head_kv, w, next;
    float *att = c->att + (size_t)ith * att_floats(c->m, c->n_ctx);
    const void **set[2] = { c->tiles + (size_t)ith * 4 * c->kv.max_blocks,
                            c->tiles + (size_t)ith * 4 * c->kv.max_blocks + 2 * c->kv.max_blocks };
    struct attn_run run = { 0, 0 };
    bool have = claim_unit(j, &run, &w);
    if (have)
        unit_tiles(c, j, w, set[0]);
    /* the next unit's tiles are asked for while this one computes */
    for (int cur = 0; have; cur ^= 1) {
        bool more = claim_unit(j, &run, &next);
        if (more)
            unit_tiles(c, j, next, set[cur ^ 1]);
        if (j->store) { /* this row's q heads of this kv head, and its k, rotated here */
            rope_unit(c, w / n_kv, w % n_kv);
            store(j, w / n_kv, w % n_kv);
        }
        attend(c, j, w / n_kv, w % n_kv, att, set[cur]);
        w = next;
        have = more;
    }
}

/* ---- The layer -------------------------------------------------------- */

static int
attention_block(struct engine_ctx *c, const struct engine_batch *b, int il)
{
    const struct engine_hparams *hp = &c->m->hp;
    const struct engine_layer *ly = &c->m->layers[il];
    int n = b->n, qd = hp->n_head * hp->head_dim, kd = (int)kv_dim(c->m);

    /* x += the last layer's FFN output; xb = norm(x); q, k, v = xb . W^T (+ adapters, + bias) */
    rows(c, n, il > 0, ly->attn_norm, false);
    float *qkv[3] = { c->q, c->k, c->v };
    int rc = project(c, il, ENGINE_LORA_Q, 3, c->xb, n, qkv);
    if (rc < 0)
        return rc;
    add_bias(c->q, ly->bq, n, qd);
    add_bias(c->k, ly->bk, n, kd);
    add_bias(c->v, ly->bv, n, kd);

    /*
     * Rotate q and k by position and cache k and v: per (row, kv head), in a
     * pass of their own, or in decode by each attention unit first.
     */
    int chunk = n * hp->n_head_kv / (4 * engine__pool_size(c->pool)); /* at most a row */
    chunk = chunk < 1 ? 1 : chunk > hp->n_head_kv ? hp->n_head_kv : chunk;
    struct attn_job job = { c, b, il, c->rows_distinct, chunk, 0 };
    if (!job.store)
        engine__pool_run_some(c->pool, store_task, &job);

    /* Causal attention per (row, head), then xb = ao . Wo^T (added to x by the FFN block) */
    atomic_store(&job.next, 0);
    engine__pool_run_some(c->pool, attn_task, &job);
    return project(c, il, ENGINE_LORA_O, 1, c->ao, n, &c->xb);
}

static int
ffn_block(struct engine_ctx *c, int n, int il)
{
    const struct engine_layer *ly = &c->m->layers[il];

    /*
     * x += the attention's output; xb = Wdown . (silu(Wgate . norm(x)) * (Wup . norm(x))),
     * added to x by the next layer (or before the logits)
     */
    rows(c, n, true, ly->ffn_norm, false);
    float *gate_up[2] = { c->hb, c->hb2 };
    int rc = project(c, il, ENGINE_LORA_GATE, 2, c->xb, n, gate_up);
    if (rc < 0)
        return rc;
    rows(c, n, false, NULL, true);
    return project(c, il, ENGINE_LORA_DOWN, 1, c->hb, n, &c->xb);
}

/* ---- Decode ----------------------------------------------------------- */

/*
 * Checks tokens, sequences and positions (they must extend each cache), then
 * takes the cache blocks the new positions need.
 */
static int
check_batch(struct engine_ctx *c, const struct engine_batch *b)
{
    int *next = c->seq_next;
    memcpy(next, c->kv.len, (size_t)c->n_seq * sizeof(int));
    for (int r = 0; r < b->n; r++) {
        int s = b->seq[r];
        if (b->tokens[r] < 0 || b->tokens[r] >= c->m->hp.n_vocab || s < 0 || s >= c->n_seq)
            return -EINVAL;
        if (b->pos[r] != next[s] || b->pos[r] >= c->n_ctx)
            return -EINVAL;
        next[s]++;
    }
    c->rows_distinct = true;
    for (int r = 0; r < b->n; r++) {
        c->rows_distinct &= next[b->seq[r]] == b->pos[r] + 1 && b->pos[r] == c->kv.len[b->seq[r]];
        int rc = engine__kv_reserve(&c->kv, b->seq[r], b->pos[r] + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void
embed(struct engine_ctx *c, const struct engine_batch *b)
{
    const struct engine_weight *w = &c->m->tok_embd;
    size_t rs = gguf_row_size(w->type, w->k);
    for (int r = 0; r < b->n; r++)
        engine__dequantize_row(w->type, (const char *)w->data + (size_t)b->tokens[r] * rs,
                               c->x + (size_t)r * w->k, w->k);
}

static void
output_logits(struct engine_ctx *c, const struct engine_batch *b, float *out)
{
    const struct engine_hparams *hp = &c->m->hp;
    int e = hp->n_embd, n_out = 0;
    for (int r = 0; r < b->n; r++) {
        if (b->logits != NULL && !b->logits[r])
            continue;
        rmsnorm(c->xl + (size_t)n_out * e, c->x + (size_t)r * e, c->m->output_norm, e,
                hp->rms_eps);
        n_out++;
    }
    if (n_out > 0)
        matmul(c, &c->m->output, c->xl, n_out, out);
}

/* The layers over b: c->x ends as every row's last hidden state. */
static int
forward(struct engine_ctx *c, const struct engine_batch *b)
{
    int rc = check_batch(c, b);
    if (rc < 0 || (rc = reserve_rows(c, b->n)) < 0)
        return rc;
    c->plan.n = 0;
    if (b->lora != NULL && (rc = engine__lora_plan(&c->plan, b->lora, b->n)) < 0)
        return rc;
    embed(c, b);
    for (int r = 0; r < b->n; r++) {
        float *rot = c->rot + (size_t)r * c->m->hp.n_rot;
        rope_angles(c->m, b->pos[r], rot, rot + c->m->hp.n_rot / 2);
    }
    for (int il = 0; il < c->m->hp.n_layer; il++)
        if ((rc = attention_block(c, b, il)) < 0 || (rc = ffn_block(c, b->n, il)) < 0)
            return rc;
    rows(c, b->n, true, NULL, false);
    for (int r = 0; r < b->n; r++)
        c->kv.len[b->seq[r]] = b->pos[r] + 1;
    return 0;
}

int
engine_decode(struct engine_ctx *c, const struct engine_batch *b, float *out)
{
    if (b->n <= 0)
        return b->n == 0 ? 0 : -EINVAL;
    int rc = forward(c, b);
    if (rc == 0)
        output_logits(c, b, out);
    return rc;
}

int
engine_decode_hidden(struct engine_ctx *c, const struct engine_batch *b, float *hidden)
{
    if (b->n <= 0)
        return b->n == 0 ? 0 : -EINVAL;
    int rc = forward(c, b);
    const struct engine_hparams *hp = &c->m->hp;
    for (int r = 0; rc == 0 && r < b->n; r++)
        rmsnorm(hidden + (size_t)r * hp->n_embd, c->x + (size_t)r * hp->n_embd,
                c->m->output_norm, hp->n_embd, hp->rms_eps);
    return rc;
}

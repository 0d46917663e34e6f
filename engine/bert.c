/*
 * bert.c - BERT-family embedding models (encoders), as llama.cpp's "bert"
 * architecture: a GGUF file with a WordPiece vocabulary, absolute position
 * embeddings, post-LayerNorm layers with biases, GELU, no causal mask.
 *
 *   x = token_embd[id] + token_types[0] + position_embd[pos]; x = LN(x)
 *   per layer: q, k, v = x W + b (fused attn_qkv or three matrices)
 *              x = LN(x + softmax(q k^T / sqrt(head_dim)) v Wo + bo)
 *              x = LN(x + GELU(x Wup + bup) Wdown + bdown)
 *   pooled (mean over every token, the first ([CLS]) or the last), L2-normed.
 *
 * Matrices stay in the file's mapping, in any type the kernels take; 1-D
 * tensors and the small embedding tables become f32 copies. Every product,
 * the attention's two included, is an engine__matmul on the encoder's own
 * pool; the element-wise steps run on the pool by rows. One call embeds at a
 * time (a lock); buffers are sized for the context at open, so a call fails
 * only on bad input.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "tokenizer.h"

struct bert_layer {
    struct engine_weight wq, wk, wv, wqkv, wo, up, down;
    float *bq, *bk, *bv, *bqkv, *bo, *b_up, *b_down;
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;   /* attn_output_norm, layer_output_norm */
};

/* Per-call buffers, sized for n_ctx tokens at open. */
struct bert_bufs {
    float *x, *q, *k, *v, *att, *tmp, *ff;  /* n_ctx rows of n_embd (tmp 3 n_embd, ff n_ff) */
    float *qh, *kh, *vt, *s, *oh;           /* one head: n_ctx x head_dim, head_dim x n_ctx, n_ctx^2 */
};

struct engine_encoder {
    struct gguf *gguf;
    struct tokenizer *tok;
    int n_embd, n_head, head_dim, n_ff, n_layer, n_ctx;
    float eps;
    enum engine_pooling pooling;
    struct engine_weight tok_embd;
    float *type0;                           /* token_types row 0, or NULL */
    float *pos;                             /* (n_ctx, n_embd) */
    float *ln0_w, *ln0_b;                   /* token_embd_norm */
    struct bert_layer *layers;
    struct engine_pool *pool;
    struct bert_bufs b;
    pthread_mutex_t lock;
    int64_t n_params;
};

#define BERT_MAX_LAYERS 256
#define BERT_MAX_DIM 16384

/* ---- Loading ---------------------------------------------------------- */

static int
read_pooling(struct engine_loader *L, struct engine_encoder *e)
{
    int p = 1;
    int rc = engine__load_int(L, "bert", "pooling_type", 1, false, 0, 4, &p);
    if (rc < 0)
        return rc;
    if (p == 0 || p == 4) {
        engine__err(L->err, L->errlen, "%s: bert.pooling_type %d (%s) gives no single vector "
                    "per text (expected 1 mean, 2 cls or 3 last)", L->path, p,
                    p == 0 ? "none" : "rank");
        return -EINVAL;
    }
    e->pooling = p == 1 ? ENGINE_POOL_MEAN : p == 2 ? ENGINE_POOL_CLS : ENGINE_POOL_LAST;
    return 0;
}

static int
read_hparams(struct engine_loader *L, struct engine_encoder *e)
{
    struct gguf_str s;
    if (gguf_get_str(L->g, "general.architecture", &s) < 0 || s.len != 4 ||
        memcmp(s.ptr, "bert", 4) != 0) {
        engine__err(L->err, L->errlen, "%s: not a BERT embedding model "
                    "(general.architecture must be 'bert')", L->path);
        return -EINVAL;
    }
    int rc, n_kv = 0;
    if ((rc = engine__load_int(L, "bert", "embedding_length", 0, true, 1, BERT_MAX_DIM,
                               &e->n_embd)) < 0 ||
        (rc = engine__load_int(L, "bert", "block_count", 0, true, 1, BERT_MAX_LAYERS,
                               &e->n_layer)) < 0 ||
        (rc = engine__load_int(L, "bert", "attention.head_count", 0, true, 1, 1024,
                               &e->n_head)) < 0 ||
        (rc = engine__load_int(L, "bert", "attention.head_count_kv", e->n_head, false, 1,
                               1024, &n_kv)) < 0 ||
        (rc = engine__load_int(L, "bert", "feed_forward_length", 0, true, 1, 4 * BERT_MAX_DIM,
                               &e->n_ff)) < 0 ||
        (rc = engine__load_int(L, "bert", "context_length", 0, true, 1, 8192, &e->n_ctx)) < 0 ||
        (rc = engine__load_float(L, "bert", "attention.layer_norm_epsilon", 1e-12f,
                                 &e->eps)) < 0 ||
        (rc = read_pooling(L, e)) < 0)
        return rc;
    if (n_kv != e->n_head || e->n_embd % e->n_head != 0 || !(e->eps >= 0.0f)) {
        engine__err(L->err, L->errlen, "%s: %d heads (%d kv) do not divide embedding_length %d "
                    "evenly, or the epsilon is negative", L->path, e->n_head, n_kv, e->n_embd);
        return -EINVAL;
    }
    e->head_dim = e->n_embd / e->n_head;
    return 0;
}

static int
load_qkv(struct engine_loader *L, struct bert_layer *ly, int il, int64_t d)
{
    char n[6][64];
    const char *sfx[6] = { "attn_qkv.weight", "attn_qkv.bias", "attn_q.weight",
                           "attn_k.weight", "attn_v.weight", "attn_q.bias" };
    for (int i = 0; i < 6; i++)
        snprintf(n[i], sizeof(n[i]), "blk.%d.%s", il, sfx[i]);
    int rc = 0;
    if (gguf_find_tensor(L->g, n[0]) != NULL)
        return (rc = engine__load_weight(L, n[0], d, 3 * d, true, &ly->wqkv)) < 0
                   ? rc : engine__load_vector(L, n[1], 3 * d, true, &ly->bqkv);
    char kb[64], vb[64];
    snprintf(kb, sizeof(kb), "blk.%d.attn_k.bias", il);
    snprintf(vb, sizeof(vb), "blk.%d.attn_v.bias", il);
    if ((rc = engine__load_weight(L, n[2], d, d, true, &ly->wq)) < 0 ||
        (rc = engine__load_weight(L, n[3], d, d, true, &ly->wk)) < 0 ||
        (rc = engine__load_weight(L, n[4], d, d, true, &ly->wv)) < 0 ||
        (rc = engine__load_vector(L, n[5], d, true, &ly->bq)) < 0 ||
        (rc = engine__load_vector(L, kb, d, true, &ly->bk)) < 0)
        return rc;
    return engine__load_vector(L, vb, d, true, &ly->bv);
}

static int
load_layer(struct engine_loader *L, struct engine_encoder *e, int il)
{
    struct bert_layer *ly = &e->layers[il];
    int64_t d = e->n_embd, f = e->n_ff;
    char n[10][64];
    const char *sfx[10] = { "attn_output.weight", "attn_output.bias", "attn_output_norm.weight",
                            "attn_output_norm.bias", "ffn_up.weight", "ffn_up.bias",
                            "ffn_down.weight", "ffn_down.bias", "layer_output_norm.weight",
                            "layer_output_norm.bias" };
    for (int i = 0; i < 10; i++)
        snprintf(n[i], sizeof(n[i]), "blk.%d.%s", il, sfx[i]);
    int rc = load_qkv(L, ly, il, d);
    if (rc < 0 ||
        (rc = engine__load_weight(L, n[0], d, d, true, &ly->wo)) < 0 ||
        (rc = engine__load_vector(L, n[1], d, true, &ly->bo)) < 0 ||
        (rc = engine__load_vector(L, n[2], d, true, &ly->ln1_w)) < 0 ||
        (rc = engine__load_vector(L, n[3], d, true, &ly->ln1_b)) < 0 ||
        (rc = engine__load_weight(L, n[4], d, f, true, &ly->up)) < 0 ||
        (rc = engine__load_vector(L, n[5], f, true, &ly->b_up)) < 0 ||
        (rc = engine__load_weight(L, n[6], f, d, true, &ly->down)) < 0 ||
        (rc = engine__load_vector(L, n[7], d, true, &ly->b_down)) < 0 ||
        (rc = engine__load_vector(L, n[8], d, true, &ly->ln2_w)) < 0)
        return rc;
    return engine__load_vector(L, n[9], d, true, &ly->ln2_b);
}

/* token_types: a few rows of n_embd; llama.cpp always adds row 0 ("sentence A"). */
static int
load_type0(struct engine_loader *L, struct engine_encoder *e)
{
    const struct gguf_tensor *t = gguf_find_tensor(L->g, "token_types.weight");
    if (t == NULL)
        return 0;
    if (t->ne[1] < 1 || t->ne[1] > 16) {
        engine__err(L->err, L->errlen, "%s: token_types.weight has %lld rows (expected 1 to 16)",
                    L->path, (long long)t->ne[1]);
        return -EINVAL;
    }
    return engine__load_matrix_f32(L, "token_types.weight", e->n_embd, t->ne[1], true,
                                   &e->type0); /* row 0 is its start */
}

static int
load_tensors(struct engine_loader *L, struct engine_encoder *e)
{
    int64_t d = e->n_embd;
    int n_vocab = tokenizer_n_vocab(e->tok), rc;
    if ((rc = engine__load_weight(L, "token_embd.weight", d, n_vocab, true, &e->tok_embd)) < 0 ||
        (rc = load_type0(L, e)) < 0 ||
        (rc = engine__load_matrix_f32(L, "position_embd.weight", d, e->n_ctx, true,
                                      &e->pos)) < 0 ||
        (rc = engine__load_vector(L, "token_embd_norm.weight", d, true, &e->ln0_w)) < 0 ||
        (rc = engine__load_vector(L, "token_embd_norm.bias", d, true, &e->ln0_b)) < 0)
        return rc;
    e->layers = engine__xcalloc((size_t)e->n_layer, sizeof(*e->layers));
    for (int il = 0; il < e->n_layer; il++)
        if ((rc = load_layer(L, e, il)) < 0)
            return rc;
    return 0;
}

static int
read_vocab(struct engine_loader *L, struct engine_encoder *e)
{
    char terr[512] = "";
    int rc = tokenizer_new(L->g, &e->tok, terr, sizeof(terr));
    if (rc < 0) {
        engine__err(L->err, L->errlen, "%s: %s", L->path, terr);
        return rc;
    }
    if (strcmp(tokenizer_model_name(e->tok), "bert") != 0) {
        engine__err(L->err, L->errlen, "%s: tokenizer.ggml.model is '%s' (a BERT embedding "
                    "model has 'bert', WordPiece)", L->path, tokenizer_model_name(e->tok));
        return -EINVAL;
    }
    return 0;
}

/* ---- Buffers and the pool --------------------------------------------- */

static size_t
scratch_need(const struct engine_encoder *e)
{
    size_t need = engine__matmul_scratch(GGUF_T_F32, e->head_dim, e->n_ctx);
    size_t s2 = engine__matmul_scratch(GGUF_T_F32, e->n_ctx, e->n_ctx);
    need = s2 > need ? s2 : need;
    for (int il = 0; il < e->n_layer; il++) {
        const struct bert_layer *ly = &e->layers[il];
        const struct engine_weight *w[6] = { &ly->wq, &ly->wqkv, &ly->wo, &ly->up, &ly->down,
                                             &ly->wk };
        for (int i = 0; i < 6; i++) {
            size_t s = w[i]->data ? engine__matmul_scratch(w[i]->type, w[i]->k, e->n_ctx) : 0;
            need = s > need ? s : need;
        }
    }
    return need;
}

static int
alloc_bufs(struct engine_encoder *e)
{
    struct bert_bufs *b = &e->b;
    size_t n = (size_t)e->n_ctx, d = (size_t)e->n_embd, hd = (size_t)e->head_dim;
    float **rows_d[5] = { &b->x, &b->q, &b->k, &b->v, &b->att };
    for (int i = 0; i < 5; i++)
        if ((*rows_d[i] = engine__try_alloc(n * d, sizeof(float))) == NULL)
            return -ENOMEM;
    size_t ff = (size_t)e->n_ff > 3 * d ? (size_t)e->n_ff : 3 * d;
    b->tmp = engine__try_alloc(n * 3 * d, sizeof(float));
    b->ff = engine__try_alloc(n * ff, sizeof(float));
    b->qh = engine__try_alloc(n * hd, sizeof(float));
    b->kh = engine__try_alloc(n * hd, sizeof(float));
    b->vt = engine__try_alloc(n * hd, sizeof(float));
    b->oh = engine__try_alloc(n * hd, sizeof(float));
    b->s = engine__try_alloc(n * n, sizeof(float));
    if (!b->tmp || !b->ff || !b->qh || !b->kh || !b->vt || !b->oh || !b->s)
        return -ENOMEM;
    return 0;
}

static void
free_bufs(struct bert_bufs *b)
{
    float *all[12] = { b->x, b->q, b->k, b->v, b->att, b->tmp, b->ff, b->qh, b->kh, b->vt,
                       b->s, b->oh };
    for (int i = 0; i < 12; i++)
        free(all[i]);
}

/* ---- Forward ---------------------------------------------------------- */

/* A row-wise step on the pool: fn(e, row, arg) for rows [0, n). */
struct rows_job {
    const struct engine_encoder *e;
    int n;
    void (*fn)(const struct engine_encoder *e, int row, void *arg);
    void *arg;
};

static void
rows_task(int ith, int nth, void *arg)
{
    struct rows_job *j = arg;
    for (int r = ith; r < j->n; r += nth)
        j->fn(j->e, r, j->arg);
}

static void
on_rows(struct engine_encoder *e, int n, void (*fn)(const struct engine_encoder *, int, void *),
        void *arg)
{
    struct rows_job j = { e, n, fn, arg };
    engine__pool_run(e->pool, rows_task, &j);
}

static void
layer_norm(float *x, int d, const float *w, const float *b, float eps)
{
    double mean = 0, var = 0;
    for (int i = 0; i < d; i++)
        mean += x[i];
    mean /= d;
    for (int i = 0; i < d; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float inv = (float)(1.0 / sqrt(var / d + eps));
    for (int i = 0; i < d; i++)
        x[i] = ((float)(x[i] - mean) * inv) * w[i] + b[i];
}

static void
embed_row(const struct engine_encoder *e, int r, void *arg)
{
    const int32_t *ids = arg;
    int d = e->n_embd;
    float *x = e->b.x + (size_t)r * d;
    const char *row = (const char *)e->tok_embd.data +
                      (size_t)ids[r] * engine__row_size(e->tok_embd.type, d);
    engine__dequantize_row(e->tok_embd.type, row, x, d);
    const float *p = e->pos + (size_t)r * d;
    for (int i = 0; i < d; i++)
        x[i] += p[i] + (e->type0 ? e->type0[i] : 0.0f);
    layer_norm(x, d, e->ln0_w, e->ln0_b, e->eps);
}

/* x = LN(x + y + bias) with the norm of arg's layer (attention or feed-forward). */
struct resid_arg {
    const float *y, *bias, *w, *b;
};

static void
resid_row(const struct engine_encoder *e, int r, void *arg)
{
    const struct resid_arg *a = arg;
    int d = e->n_embd;
    float *x = e->b.x + (size_t)r * d;
    const float *y = a->y + (size_t)r * d;
    for (int i = 0; i < d; i++)
        x[i] += y[i] + (a->bias ? a->bias[i] : 0.0f);
    layer_norm(x, d, a->w, a->b, e->eps);
}

/* The tanh form of GELU, as llama.cpp computes it (it looks it up in an f16 table). */
static float
gelu(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
}

static void
gelu_row(const struct engine_encoder *e, int r, void *arg)
{
    const float *bias = arg;
    float *h = e->b.ff + (size_t)r * e->n_ff;
    for (int i = 0; i < e->n_ff; i++)
        h[i] = gelu(h[i] + (bias ? bias[i] : 0.0f));
}

static void
add_bias(float *y, int n, int d, const float *bias)
{
    for (int r = 0; bias != NULL && r < n; r++)
        for (int i = 0; i < d; i++)
            y[(size_t)r * d + i] += bias[i];
}

static void
qkv(struct engine_encoder *e, const struct bert_layer *ly, int n)
{
    struct bert_bufs *b = &e->b;
    int d = e->n_embd;
    if (ly->wqkv.data == NULL) {
        const struct engine_weight *w[3] = { &ly->wq, &ly->wk, &ly->wv };
        float *y[3] = { b->q, b->k, b->v };
        engine__matmul_n(e->pool, 3, w, b->x, n, y);
        add_bias(b->q, n, d, ly->bq);
        add_bias(b->k, n, d, ly->bk);
        add_bias(b->v, n, d, ly->bv);
        return;
    }
    engine__matmul_w(e->pool, &ly->wqkv, b->x, n, b->tmp);
    add_bias(b->tmp, n, 3 * d, ly->bqkv);
    for (int r = 0; r < n; r++) {
        const float *t = b->tmp + (size_t)r * 3 * d;
        memcpy(b->q + (size_t)r * d, t, (size_t)d * sizeof(float));
        memcpy(b->k + (size_t)r * d, t + d, (size_t)d * sizeof(float));
        memcpy(b->v + (size_t)r * d, t + 2 * d, (size_t)d * sizeof(float));
    }
}

static void
softmax_rows(float *s, int n, float scale)
{
    for (int r = 0; r < n; r++) {
        float *row = s + (size_t)r * n, mx = -INFINITY;
        for (int j = 0; j < n; j++)
            mx = row[j] * scale > mx ? row[j] * scale : mx;
        double sum = 0;
        for (int j = 0; j < n; j++)
            sum += row[j] = expf(row[j] * scale - mx);
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++)
            row[j] *= inv;
    }
}

/* One head: scores = q k^T (a matmul with k's rows as the weight), softmax, then p v. */
static void
attend_head(struct engine_encoder *e, int h, int n)
{
    struct bert_bufs *b = &e->b;
    int d = e->n_embd, hd = e->head_dim;
    for (int r = 0; r < n; r++) {
        memcpy(b->qh + (size_t)r * hd, b->q + (size_t)r * d + h * hd, (size_t)hd * 4);
        memcpy(b->kh + (size_t)r * hd, b->k + (size_t)r * d + h * hd, (size_t)hd * 4);
        for (int i = 0; i < hd; i++)
            b->vt[(size_t)i * n + r] = b->v[(size_t)r * d + h * hd + i];
    }
    engine__matmul(e->pool, GGUF_T_F32, b->kh, n, hd, b->qh, n, b->s);
    softmax_rows(b->s, n, 1.0f / sqrtf((float)hd));
    engine__matmul(e->pool, GGUF_T_F32, b->vt, hd, n, b->s, n, b->oh);
    for (int r = 0; r < n; r++)
        memcpy(b->att + (size_t)r * d + h * hd, b->oh + (size_t)r * hd, (size_t)hd * 4);
}

static void
layer(struct engine_encoder *e, const struct bert_layer *ly, int n)
{
    struct bert_bufs *b = &e->b;
    qkv(e, ly, n);
    for (int h = 0; h < e->n_head; h++)
        attend_head(e, h, n);
    engine__matmul_w(e->pool, &ly->wo, b->att, n, b->tmp);
    struct resid_arg a1 = { b->tmp, ly->bo, ly->ln1_w, ly->ln1_b };
    on_rows(e, n, resid_row, &a1);
    engine__matmul_w(e->pool, &ly->up, b->x, n, b->ff);
    on_rows(e, n, gelu_row, ly->b_up);
    engine__matmul_w(e->pool, &ly->down, b->ff, n, b->tmp);
    struct resid_arg a2 = { b->tmp, ly->b_down, ly->ln2_w, ly->ln2_b };
    on_rows(e, n, resid_row, &a2);
}

static void
forward(struct engine_encoder *e, const int32_t *ids, int n)
{
    on_rows(e, n, embed_row, (void *)ids);
    for (int il = 0; il < e->n_layer; il++)
        layer(e, &e->layers[il], n);
}

static int
check_tokens(const struct engine_encoder *e, const int32_t *ids, int n)
{
    if (n > e->n_ctx)
        return -E2BIG;
    int n_vocab = tokenizer_n_vocab(e->tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return -EINVAL;
    return n < 1 ? -EINVAL : 0;
}

/* ---- Public ----------------------------------------------------------- */

static int
open_all(struct engine_loader *L, struct engine_encoder *e, int n_threads)
{
    int rc;
    if ((rc = read_hparams(L, e)) < 0 || (rc = read_vocab(L, e)) < 0 ||
        (rc = load_tensors(L, e)) < 0)
        return rc;
    if ((rc = alloc_bufs(e)) < 0 || (rc = engine__pool_new(n_threads, &e->pool)) < 0 ||
        (rc = engine__pool_reserve(e->pool, scratch_need(e))) < 0) {
        engine__err(L->err, L->errlen, "%s: no memory for %d threads' buffers", L->path,
                    n_threads);
        return rc;
    }
    e->n_params = L->n_params;
    return 0;
}

int
engine_encoder_open(const char *path, int n_threads, struct engine_encoder **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    engine__kernels_init();
    struct engine_encoder *e = engine__xcalloc(1, sizeof(*e));
    pthread_mutex_init(&e->lock, NULL);
    struct engine_loader L = { NULL, path, err, errlen, 0 };
    int rc = gguf_open(path, &e->gguf, err, errlen);
    if (rc == 0) {
        L.g = e->gguf;
        rc = open_all(&L, e, n_threads > 0 ? n_threads : 1);
    }
    if (rc < 0) {
        engine_encoder_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void
engine_encoder_free(struct engine_encoder *e)
{
    if (e == NULL)
        return;
    for (int il = 0; e->layers != NULL && il < e->n_layer; il++) {
        struct bert_layer *ly = &e->layers[il];
        float *v[11] = { ly->bq, ly->bk, ly->bv, ly->bqkv, ly->bo, ly->b_up, ly->b_down,
                         ly->ln1_w, ly->ln1_b, ly->ln2_w, ly->ln2_b };
        for (int i = 0; i < 11; i++)
            free(v[i]);
    }
    free(e->layers);
    free(e->type0);
    free(e->pos);
    free(e->ln0_w);
    free(e->ln0_b);
    free_bufs(&e->b);
    engine__pool_free(e->pool);
    tokenizer_free(e->tok);
    gguf_free(e->gguf);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

int
engine_encoder_hidden(struct engine_encoder *e, const int32_t *ids, int n, float *out)
{
    int rc = check_tokens(e, ids, n);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&e->lock);
    forward(e, ids, n);
    memcpy(out, e->b.x, (size_t)n * (size_t)e->n_embd * sizeof(float));
    pthread_mutex_unlock(&e->lock);
    return 0;
}

int
engine_encoder_embed(struct engine_encoder *e, const int32_t *ids, int n,
                     enum engine_pooling pool, float *out)
{
    int rc = check_tokens(e, ids, n);
    if (rc < 0)
        return rc;
    int d = e->n_embd;
    double *acc = calloc((size_t)d, sizeof(double));
    if (acc == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&e->lock);
    forward(e, ids, n);
    int r0 = pool == ENGINE_POOL_LAST ? n - 1 : 0, r1 = pool == ENGINE_POOL_CLS ? 1 : n;
    for (int r = r0; r < r1; r++)
        for (int i = 0; i < d; i++)
            acc[i] += e->b.x[(size_t)r * d + i];
    pthread_mutex_unlock(&e->lock);
    engine__l2_normalize(acc, d, out);
    free(acc);
    return 0;
}

const struct tokenizer *
engine_encoder_tokenizer(const struct engine_encoder *e)
{
    return e->tok;
}

int
engine_encoder_dim(const struct engine_encoder *e)
{
    return e->n_embd;
}

int
engine_encoder_n_ctx(const struct engine_encoder *e)
{
    return e->n_ctx;
}

enum engine_pooling
engine_encoder_pooling(const struct engine_encoder *e)
{
    return e->pooling;
}

int64_t
engine_encoder_n_params(const struct engine_encoder *e)
{
    return e->n_params;
}

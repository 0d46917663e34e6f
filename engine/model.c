/*
 * model.c - loading a LLaMA-family model (llama, qwen2) from a GGUF file.
 *
 * Weights stay in the read-only mapping of the file: a struct engine_weight
 * points into it, except that Q8_0 and Q4_0 matmul weights are copied into
 * the x16 layout and F16 ones into p32 panels (kernels.h) when the CPU's
 * kernels want it. Only the small
 * 1-D tensors (norms, biases, RoPE frequency factors) are converted to owned
 * f32 arrays, whatever their stored type.
 * Every tensor's presence, shape and type is checked here, once, so the
 * forward pass never checks again.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine_int.h"

#define MAX_LAYERS 1024
#define MAX_DIM (1 << 20)

struct loader {
    struct engine_model *m;
    struct engine_loader base;
    const char *path;
    char *err;
    size_t errlen;
};

static int
get_int(struct loader *L, const char *arch, const char *suffix, int def, bool required,
        int lo, int hi, int *out)
{
    return engine__load_int(&L->base, arch, suffix, def, required, lo, hi, out);
}

static int
get_float(struct loader *L, const char *arch, const char *suffix, float def, float *out)
{
    return engine__load_float(&L->base, arch, suffix, def, out);
}

static int
read_arch(struct loader *L)
{
    struct engine_hparams *hp = &L->m->hp;
    struct gguf_str s;
    if (gguf_get_str(L->m->gguf, "general.architecture", &s) < 0) {
        engine__err(L->err, L->errlen, "%s: missing key general.architecture", L->path);
        return -EINVAL;
    }
    if (!((s.len == 5 && memcmp(s.ptr, "llama", 5) == 0) ||
          (s.len == 5 && memcmp(s.ptr, "qwen2", 5) == 0))) {
        engine__err(L->err, L->errlen,
                    "%s: architecture '%.*s' is not supported (expected llama or qwen2)",
                    L->path, (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return -EINVAL;
    }
    memcpy(hp->arch, s.ptr, s.len);
    hp->arch[s.len] = '\0';
    hp->rope_neox = strcmp(hp->arch, "qwen2") == 0;
    hp->qkv_bias = hp->rope_neox;
    return 0;
}

static int
read_rope_scaling(struct loader *L)
{
    struct engine_hparams *hp = &L->m->hp;
    char key[128];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", hp->arch);
    struct gguf_str s = { "none", 4 };
    gguf_get_str(L->m->gguf, key, &s);
    float factor = 1.0f;
    if (get_float(L, hp->arch, "rope.scaling.factor", 1.0f, &factor) < 0)
        return -EINVAL;
    if (factor == 1.0f && get_float(L, hp->arch, "rope.scale_linear", 1.0f, &factor) < 0)
        return -EINVAL;
    bool linear = s.len == 6 && memcmp(s.ptr, "linear", 6) == 0;
    bool none = s.len == 4 && memcmp(s.ptr, "none", 4) == 0;
    if (!linear && !none) {
        engine__err(L->err, L->errlen, "%s: %s '%.*s' is not supported (expected linear or none)",
                    L->path, key, (int)(s.len > 32 ? 32 : s.len), s.ptr);
        return -EINVAL;
    }
    if (!(factor > 0.0f) || factor > 1024.0f) {
        engine__err(L->err, L->errlen, "%s: rope scaling factor %g is out of range (0, 1024]",
                    L->path, factor);
        return -EINVAL;
    }
    hp->rope_freq_scale = linear ? 1.0f / factor : 1.0f;
    return 0;
}

static int
read_hparams(struct loader *L)
{
    struct engine_hparams *hp = &L->m->hp;
    const char *a = hp->arch;
    int rc = 0;
    if ((rc = get_int(L, a, "embedding_length", 0, true, 1, MAX_DIM, &hp->n_embd)) < 0 ||
        (rc = get_int(L, a, "block_count", 0, true, 1, MAX_LAYERS, &hp->n_layer)) < 0 ||
        (rc = get_int(L, a, "attention.head_count", 0, true, 1, 4096, &hp->n_head)) < 0 ||
        (rc = get_int(L, a, "attention.head_count_kv", hp->n_head, false, 1, hp->n_head,
                      &hp->n_head_kv)) < 0 ||
        (rc = get_int(L, a, "feed_forward_length", 0, true, 1, MAX_DIM, &hp->n_ff)) < 0 ||
        (rc = get_int(L, a, "context_length", 2048, false, 1, 1 << 24, &hp->n_ctx_train)) < 0)
        return rc;
    if (hp->n_head % hp->n_head_kv != 0) {
        engine__err(L->err, L->errlen, "%s: head_count %d is not a multiple of head_count_kv %d",
                    L->path, hp->n_head, hp->n_head_kv);
        return -EINVAL;
    }
    int def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    if ((rc = get_int(L, a, "attention.key_length", def_hd, def_hd == 0, 1, 4096,
                      &hp->head_dim)) < 0 ||
        (rc = get_int(L, a, "rope.dimension_count", hp->head_dim, false, 2, hp->head_dim,
                      &hp->n_rot)) < 0)
        return rc;
    if (hp->n_rot % 2 != 0) {
        engine__err(L->err, L->errlen, "%s: rope.dimension_count %d is odd", L->path, hp->n_rot);
        return -EINVAL;
    }
    if ((rc = get_float(L, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps)) < 0 ||
        (rc = get_float(L, a, "rope.freq_base", 10000.0f, &hp->rope_base)) < 0)
        return rc;
    if (!(hp->rope_base > 0.0f) || !(hp->rms_eps >= 0.0f)) {
        engine__err(L->err, L->errlen, "%s: rope.freq_base %g or rms epsilon %g out of range",
                    L->path, hp->rope_base, hp->rms_eps);
        return -EINVAL;
    }
    return read_rope_scaling(L);
}

/* ---- Tensors ---------------------------------------------------------- */

static int
load_weight(struct loader *L, const char *name, int64_t k, int64_t n_out, bool required,
            struct engine_weight *w)
{
    return engine__load_weight(&L->base, name, k, n_out, required, w);
}

static int
load_vector(struct loader *L, const char *name, int64_t n, bool required, float **out)
{
    return engine__load_vector(&L->base, name, n, required, out);
}

static int
load_layer(struct loader *L, int il)
{
    const struct engine_hparams *hp = &L->m->hp;
    struct engine_layer *ly = &L->m->layers[il];
    int64_t e = hp->n_embd, q = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv = (int64_t)hp->n_head_kv * hp->head_dim, f = hp->n_ff;
    char n[12][96];
    const char *sfx[12] = { "attn_norm.weight", "attn_q.weight", "attn_k.weight",
                            "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                            "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
                            "attn_q.bias", "attn_k.bias", "attn_v.bias" };
    for (int i = 0; i < 12; i++)
        snprintf(n[i], sizeof(n[i]), "blk.%d.%s", il, sfx[i]);
    int rc = 0;
    if ((rc = load_vector(L, n[0], e, true, &ly->attn_norm)) < 0 ||
        (rc = load_weight(L, n[1], e, q, true, &ly->wq)) < 0 ||
        (rc = load_weight(L, n[2], e, kv, true, &ly->wk)) < 0 ||
        (rc = load_weight(L, n[3], e, kv, true, &ly->wv)) < 0 ||
        (rc = load_weight(L, n[4], q, e, true, &ly->wo)) < 0 ||
        (rc = load_vector(L, n[5], e, true, &ly->ffn_norm)) < 0 ||
        (rc = load_weight(L, n[6], e, f, true, &ly->w_gate)) < 0 ||
        (rc = load_weight(L, n[7], e, f, true, &ly->w_up)) < 0 ||
        (rc = load_weight(L, n[8], f, e, true, &ly->w_down)) < 0)
        return rc;
    bool need = hp->qkv_bias;
    if ((rc = load_vector(L, n[9], q, need, &ly->bq)) < 0 ||
        (rc = load_vector(L, n[10], kv, need, &ly->bk)) < 0 ||
        (rc = load_vector(L, n[11], kv, need, &ly->bv)) < 0)
        return rc;
    return 0;
}

static int
load_tensors(struct loader *L)
{
    struct engine_model *m = L->m;
    struct engine_hparams *hp = &m->hp;
    int rc = 0;
    if ((rc = load_weight(L, "token_embd.weight", hp->n_embd, hp->n_vocab, true,
                          &m->tok_embd)) < 0 ||
        (rc = load_vector(L, "output_norm.weight", hp->n_embd, true, &m->output_norm)) < 0 ||
        (rc = load_weight(L, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output)) < 0 ||
        (rc = load_vector(L, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freqs)) < 0)
        return rc;
    hp->tied_output = m->output.data == NULL;
    if (hp->tied_output)
        m->output = m->tok_embd;
    m->layers = engine__xcalloc((size_t)hp->n_layer, sizeof(*m->layers));
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = load_layer(L, il)) < 0)
            return rc;
    return 0;
}

static int
read_vocab(struct loader *L)
{
    struct engine_model *m = L->m;
    char terr[512] = "";
    int rc = tokenizer_new(m->gguf, &m->tok, terr, sizeof(terr));
    if (rc < 0) {
        engine__err(L->err, L->errlen, "%s: %s", L->path, terr);
        return rc;
    }
    m->hp.n_vocab = tokenizer_n_vocab(m->tok);
    const struct gguf_tensor *t = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (t != NULL && t->ne[1] != m->hp.n_vocab) {
        engine__err(L->err, L->errlen, "%s: token_embd.weight has %lld rows but the vocabulary "
                    "has %d tokens", L->path, (long long)t->ne[1], m->hp.n_vocab);
        return -EINVAL;
    }
    return 0;
}

/* ---- x16 copies -------------------------------------------------------- */

/* The matmul weights of the model: 7 per layer and the output (n_layer * 7 + 1). */
static int
matmul_weights(struct engine_model *m, struct engine_weight **ws)
{
    int n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        struct engine_layer *ly = &m->layers[il];
        struct engine_weight *l7[7] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo,
                                        &ly->w_gate, &ly->w_up, &ly->w_down };
        memcpy(ws + n, l7, sizeof(l7));
        n += 7;
    }
    ws[n++] = &m->output;
    return n;
}

/* Drops the file's pages under [p, p + n) from this process (they are read again if touched). */
static void
release_pages(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Bytes of w's copy in the layout the kernels want for its type (x16, p32), or 0. */
static size_t
packed_size(const struct engine_weight *w)
{
    if (engine__x16_wanted(w->type))
        return engine__x16_size(w->type, w->n_out, w->k);
    if (engine__p32_wanted(w->type))
        return engine__p32_size(w->n_out, w->k);
    return 0;
}

/*
 * Copies every matmul weight the kernels want in the x16 or p32 layout into one
 * anonymous block (in 2 MB pages where the system allows: fewer TLB misses
 * while decoding streams the weights). The output of a tied model gets its
 * own copy; the token embedding stays as it is.
 */
static int
pack_weights(struct engine_model *m)
{
    struct engine_weight **ws = engine__xcalloc((size_t)m->hp.n_layer * 7 + 1, sizeof(*ws));
    int n = matmul_weights(m, ws);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += engine__align64(packed_size(ws[i]));
    if (total == 0) {
        free(ws);
        return 0;
    }
    size_t huge = (size_t)2 << 20;
    total = (total + huge - 1) & ~(huge - 1);
    void *buf = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        free(ws);
        return -ENOMEM;
    }
    madvise(buf, total, MADV_HUGEPAGE);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        struct engine_weight *w = ws[i];
        size_t size = packed_size(w);
        if (size == 0)
            continue;
        if (engine__x16_wanted(w->type))
            engine__x16_pack(w->type, w->data, w->n_out, w->k, (char *)buf + off);
        else
            engine__p32_pack(w->data, w->n_out, w->k, (uint16_t *)((char *)buf + off));
        if (w->data != m->tok_embd.data)
            release_pages(w->data, engine__row_size(w->type, w->k) * (size_t)w->n_out);
        w->data = (char *)buf + off;
        w->x16 = engine__x16_wanted(w->type);
        w->p32 = !w->x16;
        off += engine__align64(size);
    }
    mprotect(buf, total, PROT_READ);
    m->x16 = buf;
    m->x16_bytes = total;
    free(ws);
    return 0;
}

/* ---- Public ----------------------------------------------------------- */

int
engine_model_open(const char *path, struct engine_model **out, char *err, size_t errlen)
{
    *out = NULL;
    engine__kernels_init();
    struct engine_model *m = engine__xcalloc(1, sizeof(*m));
    struct loader L = { m, { NULL, path, err, errlen, 0 }, path, err, errlen };
    int rc = gguf_open(path, &m->gguf, err, errlen);
    if (rc < 0)
        goto out;
    L.base.g = m->gguf;
    if ((rc = read_arch(&L)) < 0 || (rc = read_hparams(&L)) < 0 || (rc = read_vocab(&L)) < 0 ||
        (rc = load_tensors(&L)) < 0 || (rc = pack_weights(m)) < 0)
        goto out;
    m->n_params = L.base.n_params;
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++)
        m->bytes += gguf_tensor(m->gguf, i)->nbytes;
    *out = m;
    m = NULL;
out:
    engine_model_free(m);
    return rc;
}

void
engine_model_free(struct engine_model *m)
{
    if (m == NULL)
        return;
    for (int il = 0; m->layers != NULL && il < m->hp.n_layer; il++) {
        struct engine_layer *ly = &m->layers[il];
        free(ly->attn_norm);
        free(ly->ffn_norm);
        free(ly->bq);
        free(ly->bk);
        free(ly->bv);
    }
    free(m->layers);
    if (m->x16 != NULL)
        munmap(m->x16, m->x16_bytes);
    free(m->output_norm);
    free(m->rope_freqs);
    tokenizer_free(m->tok);
    gguf_free(m->gguf);
    free(m);
}

const struct engine_hparams *
engine_model_hparams(const struct engine_model *m)
{
    return &m->hp;
}

const struct tokenizer *
engine_model_tokenizer(const struct engine_model *m)
{
    return m->tok;
}

const struct gguf *
engine_model_gguf(const struct engine_model *m)
{
    return m->gguf;
}

size_t
engine_model_bytes(const struct engine_model *m)
{
    return m->bytes;
}

int64_t
engine_model_n_params(const struct engine_model *m)
{
    return m->n_params;
}

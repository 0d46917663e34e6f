/*
 * modelfile.c - writing model files: the quantizer and the synthetic model
 * generator used by the benchmarks.
 *
 * The quantizer keeps every key/value of the input, converts 2-D weights
 * to the target type and keeps 1-D tensors (norms, biases) in F32, as
 * llama-quantize does. q4_k_m gives Q6_K to the output head and to the
 * attn_v / ffn_down weights of the layers that matter most (the first and
 * last eighth, and every third in between), and Q4_K to the rest.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* llama.cpp's general.file_type numbers. */
enum { FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q8_0 = 7, FTYPE_Q4_K_M = 15 };

struct qplan {
    const char *name;
    enum gguf_ttype base;
    int ftype;
};

static const struct qplan plans[] = {
    { "f16", GGUF_T_F16, FTYPE_F16 },
    { "q8_0", GGUF_T_Q8_0, FTYPE_Q8_0 },
    { "q4_0", GGUF_T_Q4_0, FTYPE_Q4_0 },
    { "q4_k_m", GGUF_T_Q4_K, FTYPE_Q4_K_M },
};

/* ---- Choosing a type per tensor --------------------------------------- */

static bool
more_bits(int il, int n_layer)
{
    return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

static int
layer_of(const char *name)
{
    int il = -1;
    return sscanf(name, "blk.%d.", &il) == 1 ? il : -1;
}

static enum gguf_ttype
pick_type(const struct qplan *plan, const struct gguf_tensor *t, int n_layer)
{
    if (t->n_dims < 2)
        return GGUF_T_F32;
    enum gguf_ttype want = plan->base;
    if (want == GGUF_T_Q4_K) {
        int il = layer_of(t->name);
        bool big = strcmp(t->name, "output.weight") == 0 ||
                   ((strstr(t->name, "attn_v.weight") || strstr(t->name, "ffn_down.weight")) &&
                    il >= 0 && more_bits(il, n_layer));
        want = big ? GGUF_T_Q6_K : GGUF_T_Q4_K;
    }
    const char *nm;
    int64_t blck;
    size_t bs;
    gguf_ttype_info(want, &nm, &blck, &bs);
    if (t->ne[0] % blck != 0)       /* rows that do not fill a block: fall back */
        want = t->ne[0] % 32 == 0 ? GGUF_T_Q8_0 : GGUF_T_F16;
    return want;
}

/* ---- Converting ------------------------------------------------------- */

struct qjob {
    const struct gguf_tensor *t;
    enum gguf_ttype to;
    void *dst;
    float *rows;   /* (n_threads, ne0) scratch */
    int64_t n_rows;
};

static void
convert_rows(int ith, int nth, void *arg)
{
    struct qjob *j = arg;
    int64_t k = j->t->ne[0];
    size_t src_rs = gguf_row_size(j->t->type, k), dst_rs = gguf_row_size(j->to, k);
    float *tmp = j->rows + (size_t)ith * k;
    for (int64_t r = ith; r < j->n_rows; r += nth) {
        engine__dequantize_row(j->t->type, (const char *)j->t->data + r * src_rs, tmp, k);
        engine__quantize_row(j->to, tmp, (char *)j->dst + r * dst_rs, k);
    }
}

static int
convert(struct engine_pool *pool, int n_threads, const struct gguf_tensor *t,
        enum gguf_ttype to, void **out, size_t *nbytes)
{
    int64_t n_rows = t->ne[1] * t->ne[2] * t->ne[3];
    *nbytes = gguf_row_size(to, t->ne[0]) * (size_t)n_rows;
    *out = engine__try_alloc(*nbytes, 1);
    float *rows = engine__try_alloc((size_t)n_threads * (size_t)t->ne[0], sizeof(float));
    if (*out == NULL || rows == NULL) {
        free(rows);
        return -ENOMEM;
    }
    struct qjob j = { t, to, *out, rows, n_rows };
    engine__pool_run(pool, convert_rows, &j);
    free(rows);
    return 0;
}

static int
quantize_all(struct gguf_writer *w, const struct gguf *g, const struct qplan *plan,
             int n_threads, void **bufs, char *err, size_t errlen, const char *path)
{
    int64_t n_layer = 0;
    struct gguf_str arch = { "llama", 5 };
    gguf_get_str(g, "general.architecture", &arch);
    char key[96];
    snprintf(key, sizeof(key), "%.*s.block_count", (int)(arch.len > 64 ? 64 : arch.len),
             arch.ptr);
    gguf_get_i64(g, key, &n_layer);
    struct engine_pool *pool = NULL;
    int rc = engine__pool_new(n_threads, &pool);
    for (int64_t i = 0; rc == 0 && i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        if (!engine__type_supported(t->type)) {
            engine__err(err, errlen, "%s: tensor %s has type %s, which cannot be converted",
                        path, t->name, gguf_ttype_name(t->type));
            rc = -EINVAL;
            break;
        }
        enum gguf_ttype to = pick_type(plan, t, (int)n_layer);
        size_t nb = t->nbytes;
        const void *data = t->data;
        if (to != t->type) {
            if ((rc = convert(pool, n_threads, t, to, &bufs[i], &nb)) < 0) {
                engine__err(err, errlen, "%s: out of memory converting %s", path, t->name);
                break;
            }
            data = bufs[i];
        }
        gguf_writer_add_tensor(w, t->name, to, t->n_dims, t->ne, data, nb);
    }
    engine__pool_free(pool);
    return rc;
}

int
engine_quantize_file(const char *in_path, const char *out_path, const char *type,
                     int n_threads, char *err, size_t errlen)
{
    const struct qplan *plan = NULL;
    for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++)
        if (strcmp(type, plans[i].name) == 0)
            plan = &plans[i];
    if (plan == NULL) {
        engine__err(err, errlen, "unknown type '%s' (expected f16, q8_0, q4_0 or q4_k_m)", type);
        return -EINVAL;
    }
    engine__kernels_init();
    struct gguf *g = NULL;
    int rc = gguf_open(in_path, &g, err, errlen);
    if (rc < 0)
        return rc;
    struct gguf_writer *w = gguf_writer_new();
    void **bufs = engine__xcalloc((size_t)gguf_n_tensors(g) + 1, sizeof(void *));
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        gguf_writer_copy_kv(w, g, i);
    gguf_writer_set_u32(w, "general.file_type", (uint32_t)plan->ftype);
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    rc = quantize_all(w, g, plan, n_threads < 1 ? 1 : n_threads, bufs, err, errlen, in_path);
    if (rc == 0)
        rc = gguf_writer_write(w, out_path, err, errlen);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        free(bufs[i]);
    free(bufs);
    gguf_writer_free(w);
    gguf_free(g);
    return rc;
}

/* ---- Synthetic models ------------------------------------------------- */

struct rng {
    uint64_t s;
};

static double
uniform(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * 0x1.0p-53;
}

/* Normal(0, std) by Box-Muller. */
static void
fill_normal(float *v, size_t n, float std, struct rng *r)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = uniform(r), u2 = uniform(r), m = sqrt(-2.0 * log(u1));
        v[i] = (float)(m * cos(2 * M_PI * u2)) * std;
        if (i + 1 < n)
            v[i + 1] = (float)(m * sin(2 * M_PI * u2)) * std;
    }
}

struct synth_tensors {
    struct gguf_writer *w;
    struct rng rng;
    float **bufs;
    int n;
};

static int
add_synth(struct synth_tensors *st, const char *name, int64_t ne0, int64_t ne1, bool ones)
{
    size_t n = (size_t)ne0 * (size_t)(ne1 > 0 ? ne1 : 1);
    float *v = engine__try_alloc(n, sizeof(float));
    if (v == NULL)
        return -ENOMEM;
    if (ones)
        for (size_t i = 0; i < n; i++)
            v[i] = 1.0f;
    else
        fill_normal(v, n, 0.02f, &st->rng);
    st->bufs[st->n++] = v;
    int64_t ne[2] = { ne0, ne1 };
    gguf_writer_add_tensor(st->w, name, GGUF_T_F32, ne1 > 0 ? 2 : 1, ne, v, n * sizeof(float));
    return 0;
}

static void
set_synth_hparams(struct gguf_writer *w, const struct engine_synth *s, int n_vocab)
{
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "general.name", "loraserve-synthetic");
    gguf_writer_set_u32(w, "general.file_type", FTYPE_F32);
    gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)n_vocab);
    gguf_writer_set_u32(w, "llama.context_length", (uint32_t)s->n_ctx);
    gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)s->n_embd);
    gguf_writer_set_u32(w, "llama.block_count", (uint32_t)s->n_layer);
    gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)s->n_ff);
    gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)(s->n_embd / s->n_head));
    gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)s->n_head);
    gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_head_kv);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
}

static int
add_synth_layers(struct synth_tensors *st, const struct engine_synth *s)
{
    int64_t e = s->n_embd, kv = (int64_t)s->n_embd / s->n_head * s->n_head_kv, f = s->n_ff;
    int rc = 0;
    for (int il = 0; il < s->n_layer && rc == 0; il++) {
        struct { const char *sfx; int64_t ne0, ne1; bool ones; } t[9] = {
            { "attn_norm.weight", e, 0, true }, { "attn_q.weight", e, e, false },
            { "attn_k.weight", e, kv, false }, { "attn_v.weight", e, kv, false },
            { "attn_output.weight", e, e, false }, { "ffn_norm.weight", e, 0, true },
            { "ffn_gate.weight", e, f, false }, { "ffn_up.weight", e, f, false },
            { "ffn_down.weight", f, e, false },
        };
        for (int i = 0; i < 9 && rc == 0; i++) {
            char name[64];
            snprintf(name, sizeof(name), "blk.%d.%s", il, t[i].sfx);
            rc = add_synth(st, name, t[i].ne0, t[i].ne1, t[i].ones);
        }
    }
    return rc;
}

static bool
synth_valid(const struct engine_synth *s)
{
    return s->n_embd > 0 && s->n_embd <= 65536 && s->n_layer > 0 && s->n_layer <= 256 &&
           s->n_head > 0 && s->n_embd % s->n_head == 0 && (s->n_embd / s->n_head) % 2 == 0 &&
           s->n_head_kv > 0 && s->n_head % s->n_head_kv == 0 && s->n_ff > 0 &&
           s->n_ff <= 262144 && s->n_ctx > 0;
}

int
engine_mkmodel(const char *out_path, const char *vocab_path, const struct engine_synth *s,
               char *err, size_t errlen)
{
    if (!synth_valid(s)) {
        engine__err(err, errlen, "invalid model shape (n_embd must divide into n_head heads "
                    "of even size, n_head into n_head_kv groups)");
        return -EINVAL;
    }
    struct gguf *g = NULL;
    struct tokenizer *tok = NULL;
    int rc = gguf_open(vocab_path, &g, err, errlen);
    if (rc < 0)
        return rc;
    char terr[400];
    if ((rc = tokenizer_new(g, &tok, terr, sizeof(terr))) < 0) {
        engine__err(err, errlen, "%s: %s", vocab_path, terr);
        gguf_free(g);
        return rc;
    }
    int n_vocab = tokenizer_n_vocab(tok);
    struct gguf_writer *w = gguf_writer_new();
    set_synth_hparams(w, s, n_vocab);
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        if (strncmp(gguf_key(g, i), "tokenizer.", 10) == 0)
            gguf_writer_copy_kv(w, g, i);
    struct synth_tensors st = { w, { s->seed }, NULL, 0 };
    st.bufs = engine__xcalloc((size_t)s->n_layer * 9 + 3, sizeof(float *));
    if ((rc = add_synth(&st, "token_embd.weight", s->n_embd, n_vocab, false)) == 0 &&
        (rc = add_synth(&st, "output_norm.weight", s->n_embd, 0, true)) == 0 &&
        (rc = add_synth(&st, "output.weight", s->n_embd, n_vocab, false)) == 0)
        rc = add_synth_layers(&st, s);
    if (rc == -ENOMEM)
        engine__err(err, errlen, "out of memory building the model");
    if (rc == 0)
        rc = gguf_writer_write(w, out_path, err, errlen);
    for (int i = 0; i < st.n; i++)
        free(st.bufs[i]);
    free(st.bufs);
    gguf_writer_free(w);
    tokenizer_free(tok);
    gguf_free(g);
    return rc;
}

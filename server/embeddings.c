/*
 * embeddings.c - POST /v1/embeddings in OpenAI's shape.
 *
 * The body is checked on the loop (model, input, encoding_format,
 * dimensions); the embedding and the answer are made on the libuv pool
 * (server__op_call), since a batch of long inputs takes a while. The inputs
 * stay in the parsed body until the work is done.
 *
 * model: "hash" (also when absent) is the built-in hash embedder; the served
 * model's id embeds with the model itself (its output-normed last hidden
 * states, pooled as --pooling says, through the scheduler:
 * engine_sched_embed); the --embedding-model's id with that BERT model
 * (engine_encoder_embed, pooled as its file or --embedding-pooling says);
 * any other id is 404.
 * input: a string or an array of 1..2048 strings, none empty; the models also
 * take token ids (an array of ids, or an array of them); an input beyond a
 * model's context is a 400. dimensions: for hash 1..8192, a hash embedder of
 * that size; for a model its n_embd only.
 * encoding_format: "float" (default) or "base64" (little-endian float32,
 * what the official clients ask for and decode).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "server_int.h"
#include "tokenizer.h"

#define EMB_MAX_INPUTS 2048

enum emb_kind { EMB_HASH, EMB_MODEL, EMB_ENCODER };

struct emb {
    struct server *s;
    cJSON *root;                            /* the request; inputs point into it */
    const cJSON *input;                     /* a string, or an array of them */
    int n;
    enum emb_kind kind;
    const struct retrieval_embedder *e;     /* for hash; NULL for the models */
    struct retrieval_embedder *own;         /* made for dimensions=, or NULL */
    bool base64;
    uint32_t tenant;                        /* counted by its limits until done, or 0 */
};

static void
emb_free(void *arg)
{
    struct emb *q = arg;
    if (q->tenant != 0) /* it never ran */
        server__tenant_done(q->s->tenants, q->tenant, 0);
    cJSON_Delete(q->root);
    retrieval_embedder_free(q->own);
    free(q);
}

/* ---- Checking the request (loop) -------------------------------------- */

/* An emb_kind, or an error. */
static int
check_model(struct server *s, const cJSON *root, struct oai_err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (m == NULL || cJSON_IsNull(m))
        return EMB_HASH;
    if (!cJSON_IsString(m))
        return server__fail(e, -EINVAL, "model", "invalid_type", "model: expected a string");
    if (strcmp(m->valuestring, "hash") == 0)
        return EMB_HASH;
    if (strcmp(m->valuestring, s->model_id) == 0)
        return EMB_MODEL;
    if (server__is_encoder(s, m->valuestring))
        return EMB_ENCODER;
    return server__fail(e, -ENOENT, "model", "model_not_found",
                        "the embedding model '%.200s' does not exist (use 'hash', '%s'%s%s%s)",
                        m->valuestring, s->model_id, s->encoder ? " or '" : "",
                        s->encoder ? s->encoder_id : "", s->encoder ? "'" : "");
}

static const struct tokenizer *
tok_of(const struct emb *q)
{
    return q->kind == EMB_ENCODER ? engine_encoder_tokenizer(q->s->encoder) : q->s->tok;
}

/* A text, or (for the model) an array of token ids. */
static int
check_text(const struct emb *q, const cJSON *t, struct oai_err *e)
{
    if (q->kind != EMB_HASH && cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0) {
        int n_vocab = tokenizer_n_vocab(tok_of(q));
        const cJSON *x;
        cJSON_ArrayForEach(x, t) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= n_vocab)
                return server__fail(e, -EINVAL, "input", "invalid_value",
                                    "input: token ids from 0 to %d", n_vocab - 1);
        }
        return 0;
    }
    if (cJSON_IsNumber(t) || cJSON_IsArray(t))
        return server__fail(e, -EINVAL, "input", "invalid_value", "input: token ids need an "
                            "embedding model with a tokenizer; 'hash' takes text");
    if (!cJSON_IsString(t))
        return server__fail(e, -EINVAL, "input", "invalid_type",
                            "input: expected a string or an array of strings");
    if (t->valuestring[0] == '\0')
        return server__fail(e, -EINVAL, "input", "invalid_value",
                            "input: an input must not be empty");
    return 0;
}

static int
check_input(const cJSON *root, struct emb *q, struct oai_err *e)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (in == NULL || cJSON_IsNull(in))
        return server__fail(e, -EINVAL, "input", "missing_required_parameter",
                            "input: required");
    q->input = in;
    if (!cJSON_IsArray(in) || (q->kind != EMB_HASH && cJSON_IsNumber(in->child))) {
        q->n = 1;
        return check_text(q, in, e);
    }
    q->n = cJSON_GetArraySize(in);
    if (q->n < 1 || q->n > EMB_MAX_INPUTS)
        return server__fail(e, -EINVAL, "input", "invalid_value",
                            "input: %d inputs; 1 to %d are allowed", q->n, EMB_MAX_INPUTS);
    int rc = 0;
    for (const cJSON *t = in->child; t != NULL && rc == 0; t = t->next)
        rc = check_text(q, t, e);
    return rc;
}

static int
dim_of(const struct emb *q)
{
    return q->kind == EMB_HASH      ? retrieval_embedder_dim(q->e)
           : q->kind == EMB_ENCODER ? engine_encoder_dim(q->s->encoder)
                                    : engine_model_hparams(q->s->model)->n_embd;
}

static int
check_format(struct server *s, const cJSON *root, struct emb *q, struct oai_err *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (f != NULL && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f) || (strcmp(f->valuestring, "float") != 0 &&
                                   strcmp(f->valuestring, "base64") != 0))
            return server__fail(e, -EINVAL, "encoding_format", "invalid_value",
                                "encoding_format: 'float' or 'base64'");
        q->base64 = strcmp(f->valuestring, "base64") == 0;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "dimensions");
    if (d == NULL || cJSON_IsNull(d))
        return 0;
    int model_dim = dim_of(q);
    if (q->kind != EMB_HASH && !(cJSON_IsNumber(d) && d->valuedouble == model_dim))
        return server__fail(e, -EINVAL, "dimensions", "invalid_value", "dimensions: '%s' "
                            "gives %d", q->kind == EMB_MODEL ? s->model_id : s->encoder_id,
                            model_dim);
    double x = cJSON_IsNumber(d) ? d->valuedouble : NAN;  /* in range before any cast to int */
    if (!(x >= 1 && x <= RETRIEVAL_DIM_MAX) || x != floor(x))
        return server__fail(e, -EINVAL, "dimensions", "invalid_value",
                            "dimensions: an integer from 1 to %d", RETRIEVAL_DIM_MAX);
    if (q->kind != EMB_HASH || d->valueint == retrieval_embedder_dim(s->embedder))
        return 0;
    if (retrieval_hash_new(d->valueint, &q->own) < 0)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory");
    q->e = q->own;
    return 0;
}

/* ---- Embedding (pool) ------------------------------------------------- */

static int
add_vector(struct sbuf *b, const float *v, int dim, bool base64)
{
    char num[32];
    if (base64) {
        size_t n = (size_t)dim * sizeof(float);
        unsigned char *out = malloc(4 * ((n + 2) / 3) + 1);
        if (out == NULL)
            return -ENOMEM;
        int len = EVP_EncodeBlock(out, (const unsigned char *)v, (int)n);
        int rc = server__buf_adds(b, "\"") < 0 || server__buf_add(b, out, (size_t)len) < 0 ||
                 server__buf_adds(b, "\"") < 0 ? -ENOMEM : 0;
        free(out);
        return rc;
    }
    int rc = server__buf_adds(b, "[");
    for (int i = 0; i < dim && rc == 0; i++) {
        int k = snprintf(num, sizeof(num), "%s%.9g", i ? "," : "", (double)v[i]);
        rc = server__buf_add(b, num, (size_t)k);
    }
    return rc < 0 ? rc : server__buf_adds(b, "]");
}

static enum engine_pooling
model_pooling(const struct server *s)
{
    return strcmp(s->cfg->pooling, "last") == 0  ? ENGINE_POOL_LAST
           : strcmp(s->cfg->pooling, "cls") == 0 ? ENGINE_POOL_CLS : ENGINE_POOL_MEAN;
}

/* ids[0..n) through the served model (kind EMB_MODEL) or the embedding model. */
static int
ids_embed(struct server *s, enum emb_kind kind, const int32_t *ids, size_t n, float *v)
{
    if (kind == EMB_ENCODER)
        return engine_encoder_embed(s->encoder, ids, (int)n, s->encoder_pooling, v);
    return engine_sched_embed(s->sched, ids, (int)n, model_pooling(s), v);
}

/*
 * A text through a model: its tokens with the specials the model adds (the
 * embedding model's [CLS] ... [SEP]; special-token text is parsed, as
 * llama.cpp does, for it only). cut: keep the first n_ctx - 1 tokens and
 * the last, as sentence-transformers truncates (for vector stores).
 */
static int
text_embed(struct server *s, enum emb_kind kind, const char *text, size_t len, bool cut,
           float *out, int *n_tokens)
{
    bool enc = kind == EMB_ENCODER;
    const struct tokenizer *tok = enc ? engine_encoder_tokenizer(s->encoder) : s->tok;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(tok, text, len, true, enc, &ids, &n);
    size_t max = enc ? (size_t)engine_encoder_n_ctx(s->encoder) : (size_t)s->n_ctx;
    if (rc == 0 && cut && n > max) {
        ids[max - 1] = ids[n - 1];
        n = max;
    }
    if (rc == 0)
        rc = ids_embed(s, kind, ids, n, out);
    free(ids);
    if (n_tokens != NULL)
        *n_tokens = (int)n;
    return rc == -EINVAL ? -EILSEQ : rc;
}

int
server__model_embed(void *arg, const char *text, size_t len, float *out, int *n_tokens)
{
    return text_embed(arg, EMB_MODEL, text, len, false, out, n_tokens);
}

int
server__encoder_embed(void *arg, const char *text, size_t len, float *out, int *n_tokens)
{
    return text_embed(arg, EMB_ENCODER, text, len, true, out, n_tokens);
}

bool
server__is_encoder(const struct server *s, const char *id)
{
    return s->encoder != NULL && id != NULL && strcmp(id, s->encoder_id) == 0;
}

/* A model's embedding of t (a text or token ids); *n_tok its tokens. */
static int
model_embed(const struct emb *q, const cJSON *t, float *v, int *n_tok)
{
    if (cJSON_IsString(t))
        return text_embed(q->s, q->kind, t->valuestring, strlen(t->valuestring), false, v,
                          n_tok);
    size_t n = 0;
    int32_t *ids = malloc((size_t)cJSON_GetArraySize(t) * sizeof(*ids) + 1);
    if (ids == NULL)
        return -ENOMEM;
    const cJSON *x;
    cJSON_ArrayForEach(x, t)
        ids[n++] = (int32_t)x->valuedouble;
    int rc = ids_embed(q->s, q->kind, ids, n, v);
    free(ids);
    *n_tok = (int)n;
    return rc;
}

/* Appends the data entries; *tokens gets the words (hash) or tokens (model) counted. */
static int
add_data(const struct emb *q, struct sbuf *b, float *v, long long *tokens)
{
    int dim = dim_of(q), i = 0, rc = 0;
    bool one = !cJSON_IsArray(q->input) || cJSON_IsNumber(q->input->child);
    const cJSON *t = one ? q->input : q->input->child;
    for (; t != NULL && rc == 0 && i < q->n; t = t->next, i++) {
        int n_tok = 0;
        char head[80];
        rc = q->kind == EMB_HASH
                 ? retrieval_embed(q->e, t->valuestring, strlen(t->valuestring), v, &n_tok)
                 : model_embed(q, t, v, &n_tok);
        if (rc < 0)
            break;
        *tokens += n_tok;
        snprintf(head, sizeof(head), "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":",
                 i ? "," : "", i);
        if ((rc = server__buf_adds(b, head)) == 0 && (rc = add_vector(b, v, dim, q->base64)) == 0)
            rc = server__buf_adds(b, "}");
    }
    return rc;
}

static void
emb_work(struct op *o, void *arg)
{
    struct emb *q = arg;
    struct sbuf b = SBUF_INIT;
    float *v = malloc((size_t)dim_of(q) * sizeof(float));
    long long tokens = 0;
    int rc = v == NULL ? -ENOMEM : server__buf_adds(&b, "{\"object\":\"list\",\"data\":[");
    rc = rc == 0 ? add_data(q, &b, v, &tokens) : rc;
    if (q->tenant != 0) /* done before the answer goes out: the client may ask again at once */
        server__tenant_done(q->s->tenants, q->tenant, (int)tokens);
    q->tenant = 0;
    if (rc == 0) {
        char tail[400];
        const char *id = q->kind == EMB_HASH ? "hash"
                         : q->kind == EMB_MODEL ? q->s->model_id : q->s->encoder_id;
        snprintf(tail, sizeof(tail), "],\"model\":\"%.256s\",\"usage\":{\"prompt_tokens\":"
                 "%lld,\"total_tokens\":%lld}}", id, tokens, tokens);
        rc = server__buf_adds(&b, tail);
    }
    free(v);
    if (rc == 0) {
        server__op_answer(o, 200, "application/json", b.p);
        return;
    }
    server__buf_release(&b);
    struct oai_err e;
    if (rc == -EILSEQ)
        server__fail(&e, rc, "input", "invalid_encoding", "input: not valid UTF-8");
    else if (rc == -E2BIG)
        server__fail(&e, -EINVAL, "input", "context_length_exceeded",
                     "input: an input has more tokens than the model's context (%d)",
                     q->kind == EMB_ENCODER ? engine_encoder_n_ctx(q->s->encoder) : q->s->n_ctx);
    else if (rc == -ECANCELED)
        server__fail(&e, rc, NULL, "shutting_down", "the server is shutting down");
    else
        server__fail(&e, -ENOMEM, NULL, NULL, "out of memory for the embeddings");
    server__op_answer_error(o, &e);
}

/* The checks of the body: 0 with q filled, or an error in e. */
static int
check_body(struct server *s, const char *body, size_t len, struct emb *q, struct oai_err *e)
{
    int rc = server__parse_object(body, len, &q->root, e);
    if (rc == 0 && (rc = check_model(s, q->root, e)) >= 0) {
        q->kind = (enum emb_kind)rc;
        q->e = q->kind == EMB_HASH ? s->embedder : NULL;
        if ((rc = check_input(q->root, q, e)) == 0)
            rc = check_format(s, q->root, q, e);
    }
    return rc;
}

int
server__embeddings_check(struct server *s, const char *body, size_t len, struct oai_err *e)
{
    struct emb *q = server__xcalloc(1, sizeof(*q));
    q->s = s;
    int rc = check_body(s, body, len, q, e);
    emb_free(q);
    return rc;
}

int
server__embeddings_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                         const char *body, size_t len, struct op **out, struct oai_err *e)
{
    *out = NULL;
    int rc = server__limits_admit(s, who, e);
    if (rc < 0)
        return rc;
    struct emb *q = server__xcalloc(1, sizeof(*q));
    q->s = s;
    q->tenant = who->tenant;
    rc = check_body(s, body, len, q, e);
    if (rc < 0) {
        emb_free(q);
        return rc;
    }
    return server__op_call(s, con, emb_work, q, emb_free, out, e);
}

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
 * states, mean-pooled or the last token's as --pooling says, through the
 * scheduler: engine_sched_embed); any other id is 404.
 * input: a string or an array of 1..2048 strings, none empty; the model also
 * takes token ids (an array of ids, or an array of them). dimensions: for
 * hash 1..8192, a hash embedder of that size; for the model its n_embd only.
 * encoding_format: "float" (default) or "base64" (little-endian float32,
 * what the official clients ask for and decode).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "server_int.h"
#include "tokenizer.h"

#define EMB_MAX_INPUTS 2048

struct emb {
    struct server *s;
    cJSON *root;                            /* the request; inputs point into it */
    const cJSON *input;                     /* a string, or an array of them */
    int n;
    const struct retrieval_embedder *e;     /* hash, or NULL: the served model */
    struct retrieval_embedder *own;         /* made for dimensions=, or NULL */
    bool base64;
};

static void
emb_free(void *arg)
{
    struct emb *q = arg;
    cJSON_Delete(q->root);
    retrieval_embedder_free(q->own);
    free(q);
}

/* ---- Checking the request (loop) -------------------------------------- */

/* 0 for hash, 1 for the served model, or an error. */
static int
check_model(struct server *s, const cJSON *root, struct oai_err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (m == NULL || cJSON_IsNull(m))
        return 0;
    if (!cJSON_IsString(m))
        return server__fail(e, -EINVAL, "model", "invalid_type", "model: expected a string");
    if (strcmp(m->valuestring, "hash") == 0)
        return 0;
    if (strcmp(m->valuestring, s->model_id) == 0)
        return 1;
    return server__fail(e, -ENOENT, "model", "model_not_found",
                        "the embedding model '%.200s' does not exist (use 'hash' or '%s')",
                        m->valuestring, s->model_id);
}

/* A text, or (for the model) an array of token ids. */
static int
check_text(const struct emb *q, const cJSON *t, struct oai_err *e)
{
    if (q->e == NULL && cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0) {
        int n_vocab = tokenizer_n_vocab(q->s->tok);
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
    if (!cJSON_IsArray(in) || (q->e == NULL && cJSON_IsNumber(in->child))) {
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
    int model_dim = engine_model_hparams(s->model)->n_embd;
    if (q->e == NULL && !(cJSON_IsNumber(d) && d->valuedouble == model_dim))
        return server__fail(e, -EINVAL, "dimensions", "invalid_value",
                            "dimensions: '%s' gives %d", s->model_id, model_dim);
    if (!cJSON_IsNumber(d) || d->valuedouble != (double)(int)d->valuedouble ||
        d->valueint < 1 || d->valueint > RETRIEVAL_DIM_MAX)
        return server__fail(e, -EINVAL, "dimensions", "invalid_value",
                            "dimensions: an integer from 1 to %d", RETRIEVAL_DIM_MAX);
    if (q->e == NULL || d->valueint == retrieval_embedder_dim(s->embedder))
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

static int
dim_of(const struct emb *q)
{
    return q->e ? retrieval_embedder_dim(q->e) : engine_model_hparams(q->s->model)->n_embd;
}

static int
model_ids(struct server *s, const int32_t *ids, size_t n, float *v)
{
    enum engine_pooling pool = strcmp(s->cfg->pooling, "last") == 0 ? ENGINE_POOL_LAST
                                                                    : ENGINE_POOL_MEAN;
    return engine_sched_embed(s->sched, ids, (int)n, pool, v);
}

int
server__model_embed(void *arg, const char *text, size_t len, float *out, int *n_tokens)
{
    struct server *s = arg;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(s->tok, text, len, true, false, &ids, &n);
    if (rc == 0)
        rc = model_ids(s, ids, n, out);
    free(ids);
    if (n_tokens != NULL)
        *n_tokens = (int)n;
    return rc == -EINVAL ? -EILSEQ : rc;
}

/* The served model's embedding of t (a text, tokenized as a prompt, or ids); *n_tok its tokens. */
static int
model_embed(const struct emb *q, const cJSON *t, float *v, int *n_tok)
{
    if (cJSON_IsString(t))
        return server__model_embed(q->s, t->valuestring, strlen(t->valuestring), v, n_tok);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    {
        ids = malloc((size_t)cJSON_GetArraySize(t) * sizeof(*ids) + 1);
        rc = ids ? 0 : -ENOMEM;
        const cJSON *x;
        cJSON_ArrayForEach(x, t) {
            if (ids)
                ids[n++] = (int32_t)x->valuedouble;
        }
    }
    if (rc == 0)
        rc = model_ids(q->s, ids, n, v);
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
        rc = q->e ? retrieval_embed(q->e, t->valuestring, strlen(t->valuestring), v, &n_tok)
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
    if (rc == 0 && (rc = add_data(q, &b, v, &tokens)) == 0) {
        char tail[160];
        snprintf(tail, sizeof(tail), "],\"model\":\"%.64s\",\"usage\":{\"prompt_tokens\":"
                 "%lld,\"total_tokens\":%lld}}", q->e ? "hash" : q->s->model_id, tokens, tokens);
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
                     "input: an input has more tokens than the context (%d)", q->s->n_ctx);
    else if (rc == -ECANCELED)
        server__fail(&e, rc, NULL, "shutting_down", "the server is shutting down");
    else
        server__fail(&e, -ENOMEM, NULL, NULL, "out of memory for the embeddings");
    server__op_answer_error(o, &e);
}

int
server__embeddings_start(struct server *s, struct MHD_Connection *con, const char *body,
                         size_t len, struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct emb *q = server__xcalloc(1, sizeof(*q));
    q->s = s;
    int rc = server__parse_object(body, len, &q->root, e);
    if (rc == 0 && (rc = check_model(s, q->root, e)) >= 0) {
        q->e = rc == 1 ? NULL : s->embedder;
        if ((rc = check_input(q->root, q, e)) == 0)
            rc = check_format(s, q->root, q, e);
    }
    if (rc < 0) {
        emb_free(q);
        return rc;
    }
    return server__op_call(s, con, emb_work, q, emb_free, out, e);
}

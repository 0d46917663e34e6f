/*
 * openai.c - OpenAI error objects, and requests: JSON body -> a validated
 * struct oai_request -> token ids checked against the context.
 *
 * Each field is read by one small getter that knows its type and range, so
 * every bad value answers 400 with the field in "param" and a message that
 * shows the bad and the expected value. Unknown fields are ignored; JSON null
 * means "not given", as in OpenAI's API.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

/* ---- Errors ----------------------------------------------------------- */

int
server__fail(struct oai_err *e, int err, const char *param, const char *code,
             const char *fmt, ...)
{
    e->err = err;
    e->retry_after = 0;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return err;
}

int
server__bad_value(struct oai_err *e, const char *param, const char *what)
{
    return server__fail(e, -EINVAL, param, "invalid_value", "%s: expected %s", param, what);
}

int
server__status_from_err(int err)
{
    switch (err) {
    case -EINVAL:
    case -EBADMSG:
    case -EILSEQ:
        return 400;
    case -EACCES:
        return 401;
    case -EPERM:
        return 403;
    case -ENOENT:
        return 404;
    case -EEXIST:
        return 409;
    case -EOPNOTSUPP:
        return 405;
    case -EMSGSIZE:
        return 413;
    case -EAGAIN:
        return 429;
    case -ECANCELED:
    case -ENOSPC:
    case -EBUSY:
        return 503;
    default:
        return 500;
    }
}

static const char *
error_type(int status)
{
    if (status == 429)
        return "rate_limit_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

char *
server__error_json(const struct oai_err *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->msg);
    cJSON_AddStringToObject(o, "type", error_type(server__status_from_err(e->err)));
    if (e->param[0] != '\0')
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    if (e->code[0] != '\0')
        cJSON_AddStringToObject(o, "code", e->code);
    else
        cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ---- Field getters ---------------------------------------------------- */

/* A short rendering of a bad value for messages: at most 40 bytes of its JSON. */
static const char *
shown(const cJSON *v, char *buf, size_t len)
{
    char *s = cJSON_PrintUnformatted(v);
    snprintf(buf, len, "%.40s%s", s ? s : "?", s && strlen(s) > 40 ? "..." : "");
    free(s);
    return buf;
}

static int
bad(struct oai_err *e, const char *param, const char *what, const cJSON *v)
{
    char got[48];
    return server__fail(e, -EINVAL, param, "invalid_type", "%s: expected %s, got %s", param,
                        what, shown(v, got, sizeof(got)));
}

/* Returns 1 and sets *out if name is present (not null), 0 if absent, or -EINVAL. */
static int
get_number(const cJSON *o, const char *name, double lo, double hi, bool integer,
           const char *what, double *out, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x >= lo && x <= hi) || (integer && x != floor(x)))
        return bad(e, name, what, v);
    *out = x;
    return 1;
}

static int
get_int(const cJSON *o, const char *name, int lo, int hi, const char *what, int *out,
        struct oai_err *e)
{
    double x = 0;
    int rc = get_number(o, name, lo, hi, true, what, &x, e);
    if (rc == 1)
        *out = (int)x;
    return rc;
}

static int
get_float(const cJSON *o, const char *name, double lo, double hi, const char *what, float *out,
          struct oai_err *e)
{
    double x = 0;
    int rc = get_number(o, name, lo, hi, false, what, &x, e);
    if (rc == 1)
        *out = (float)x;
    return rc;
}

static int
get_bool(const cJSON *o, const char *name, bool *out, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return bad(e, name, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return 1;
}

static int
get_string(const cJSON *o, const char *name, const char **out, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return bad(e, name, "a string", v);
    *out = v->valuestring;
    return 1;
}

/* ---- Prompts and messages --------------------------------------------- */

static const char prompt_what[] =
    "a string, an array of strings, an array of token ids or an array of arrays of token ids";

/* An array of token ids -> p->ids. */
static int
parse_ids(const cJSON *a, const char *param, int n_vocab, struct oai_prompt *p,
          struct oai_err *e)
{
    int n = cJSON_GetArraySize(a);
    if (n == 0)
        return server__fail(e, -EINVAL, "prompt", "invalid_value",
                            "%s: an empty list of token ids", param);
    p->ids = malloc((size_t)n * sizeof(int32_t));
    if (p->ids == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory for %d token ids", n);
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, a) {
        double x = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!(x >= 0 && x < n_vocab && x == floor(x))) {
            char got[48], what[80];
            snprintf(what, sizeof(what), "token ids from 0 to %d", n_vocab - 1);
            return server__fail(e, -EINVAL, "prompt", "invalid_value",
                                "%s[%d]: expected %s, got %s", param, p->n_ids, what,
                                shown(it, got, sizeof(got)));
        }
        p->ids[p->n_ids++] = (int32_t)x;
    }
    return 0;
}

static int
parse_prompt(struct oai_request *r, int n_vocab, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "prompt");
    if (v == NULL || cJSON_IsNull(v))
        return server__fail(e, -EINVAL, "prompt", "missing_required_parameter",
                            "prompt: required");
    bool one = cJSON_IsString(v) || (cJSON_IsArray(v) && cJSON_IsNumber(v->child));
    int n = one ? 1 : cJSON_GetArraySize(v);
    if (!cJSON_IsString(v) && (!cJSON_IsArray(v) || n == 0))
        return bad(e, "prompt", prompt_what, v);
    if (n > OAI_MAX_CHOICES)
        return server__fail(e, -EINVAL, "prompt", "invalid_value",
                            "prompt: %d prompts, at most %d are taken at once", n,
                            OAI_MAX_CHOICES);
    r->prompts = calloc((size_t)n, sizeof(*r->prompts));
    if (r->prompts == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory for %d prompts", n);
    r->n_prompts = n;
    if (cJSON_IsString(v)) {
        r->prompts[0].text = v->valuestring;
        return 0;
    }
    if (one)
        return parse_ids(v, "prompt", n_vocab, &r->prompts[0], e);
    int i = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, v) {
        char param[32];
        snprintf(param, sizeof(param), "prompt[%d]", i);
        if (cJSON_IsString(it))
            r->prompts[i].text = it->valuestring;
        else if (!cJSON_IsArray(it))
            return bad(e, "prompt", prompt_what, v);
        else if (parse_ids(it, param, n_vocab, &r->prompts[i], e) < 0)
            return e->err;
        i++;
    }
    return 0;
}

/* An array of content parts -> their texts joined by newlines, put back in the tree. */
static int
content_parts(cJSON *msg, const cJSON *parts, int i, const char **out, struct oai_err *e)
{
    struct sbuf b = SBUF_INIT;
    const cJSON *p = NULL;
    int rc = 0;
    cJSON_ArrayForEach(p, parts) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text)) {
            char param[48];
            snprintf(param, sizeof(param), "messages[%d].content", i);
            rc = bad(e, param, "text parts {\"type\":\"text\",\"text\":...}", p);
            goto out;
        }
        if ((b.len > 0 && (rc = server__buf_adds(&b, "\n")) < 0) ||
            (rc = server__buf_adds(&b, text->valuestring)) < 0)
            goto out;
    }
    cJSON *s = cJSON_CreateString(b.p ? b.p : "");
    if (s == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", s)) {
        cJSON_Delete(s);
        rc = -ENOMEM;
        goto out;
    }
    *out = s->valuestring;
out:
    server__buf_release(&b);
    if (rc == -ENOMEM)
        server__fail(e, rc, NULL, NULL, "out of memory for the messages");
    return rc;
}

static int
parse_message(cJSON *m, int i, struct chat_msg *out, struct oai_err *e)
{
    char param[48];
    snprintf(param, sizeof(param), "messages[%d]", i);
    if (!cJSON_IsObject(m))
        return bad(e, param, "an object with role and content", m);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!cJSON_IsString(role)) {
        snprintf(param, sizeof(param), "messages[%d].role", i);
        return bad(e, param, "a string", role ? role : m);
    }
    out->role = role->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (c == NULL || cJSON_IsNull(c))
        return 0;
    if (cJSON_IsString(c)) {
        out->content = c->valuestring;
        return 0;
    }
    if (cJSON_IsArray(c))
        return content_parts(m, c, i, &out->content, e);
    snprintf(param, sizeof(param), "messages[%d].content", i);
    return bad(e, param, "a string or an array of text parts", c);
}

static int
parse_messages(struct oai_request *r, struct oai_err *e)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "messages");
    if (v == NULL || cJSON_IsNull(v))
        return server__fail(e, -EINVAL, "messages", "missing_required_parameter",
                            "messages: required");
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n == 0)
        return bad(e, "messages", "a non-empty array of messages", v);
    r->msgs = calloc((size_t)n, sizeof(*r->msgs));
    if (r->msgs == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory for %d messages", n);
    cJSON *it = NULL;
    cJSON_ArrayForEach(it, v) {
        if (parse_message(it, r->n_msgs, &r->msgs[r->n_msgs], e) < 0)
            return e->err;
        r->n_msgs++;
    }
    return 0;
}

/* ---- Other fields ----------------------------------------------------- */

static int
add_stop(struct oai_request *r, const cJSON *s, struct oai_err *e)
{
    if (!cJSON_IsString(s))
        return bad(e, "stop", "a string or an array of up to 4 strings", s);
    size_t len = strlen(s->valuestring);
    if (len > OAI_MAX_STOP_LEN)
        return server__fail(e, -EINVAL, "stop", "invalid_value",
                            "stop: a sequence of %zu bytes, at most %d are taken", len,
                            OAI_MAX_STOP_LEN);
    if (len > 0)
        r->stop[r->n_stop++] = s->valuestring;
    return 0;
}

static int
parse_stop(struct oai_request *r, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "stop");
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsArray(v))
        return add_stop(r, v, e);
    if (cJSON_GetArraySize(v) > OAI_MAX_STOP)
        return bad(e, "stop", "a string or an array of up to 4 strings", v);
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, v)
        if (add_stop(r, it, e) < 0)
            return e->err;
    return 0;
}

static int
parse_logit_bias(struct oai_request *r, int n_vocab, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "logit_bias");
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsObject(v))
        return bad(e, "logit_bias", "an object of token id -> bias", v);
    int n = cJSON_GetArraySize(v);
    r->bias = calloc((size_t)(n > 0 ? n : 1), sizeof(*r->bias));
    if (r->bias == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory for %d logit biases", n);
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, v) {
        char *end = NULL;
        long id = strtol(it->string, &end, 10);
        if (end == it->string || *end != '\0' || id < 0 || id >= n_vocab)
            return server__fail(e, -EINVAL, "logit_bias", "invalid_value",
                                "logit_bias: key \"%.40s\" is not a token id from 0 to %d",
                                it->string, n_vocab - 1);
        double b = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!(b >= -100 && b <= 100))
            return bad(e, "logit_bias", "biases from -100 to 100", it);
        r->bias[r->sampling.n_bias++] = (struct engine_logit_bias){
            (int32_t)id, b <= -100 ? -INFINITY : (float)b
        };
    }
    r->sampling.bias = r->bias;
    return 0;
}

static int
parse_sampling(struct oai_request *r, struct oai_err *e)
{
    struct engine_sampling *s = &r->sampling;
    *s = (struct engine_sampling)ENGINE_SAMPLING_INIT;
    s->temperature = 1.0f;      /* OpenAI's defaults: plain sampling */
    s->top_k = 0;
    s->top_p = 1.0f;
    s->min_p = 0.0f;
    double seed = 0;
    int rc = 0;
    if ((rc = get_float(r->root, "temperature", 0, 2, "a number from 0 to 2",
                        &s->temperature, e)) < 0 ||
        (rc = get_float(r->root, "top_p", 0, 1, "a number from 0 to 1", &s->top_p, e)) < 0 ||
        (rc = get_int(r->root, "top_k", -1, INT_MAX, "an integer >= -1", &s->top_k, e)) < 0 ||
        (rc = get_float(r->root, "min_p", 0, 1, "a number from 0 to 1", &s->min_p, e)) < 0 ||
        (rc = get_float(r->root, "presence_penalty", -2, 2, "a number from -2 to 2",
                        &s->presence_penalty, e)) < 0 ||
        (rc = get_float(r->root, "frequency_penalty", -2, 2, "a number from -2 to 2",
                        &s->frequency_penalty, e)) < 0 ||
        (rc = get_float(r->root, "repetition_penalty", 0.01, 10, "a number from 0.01 to 10",
                        &s->repeat_penalty, e)) < 0 ||
        (rc = get_number(r->root, "seed", -9.2e18, 1.8e19, true, "an integer", &seed, e)) < 0)
        return rc;
    r->has_seed = rc == 1;
    s->seed = seed < 0 ? (uint64_t)(int64_t)seed : (uint64_t)seed;
    return 0;
}

static int
parse_logprobs(struct oai_request *r, struct oai_err *e)
{
    int rc = 0;
    if (r->kind == OAI_COMPLETIONS) {
        int n = -1;
        rc = get_int(r->root, "logprobs", 0, ENGINE_MAX_TOP_LOGPROBS,
                     "an integer from 0 to 20", &n, e);
        r->logprobs = n >= 0;
        r->top_logprobs = n > 0 ? n : 0;
        return rc < 0 ? rc : 0;
    }
    if ((rc = get_bool(r->root, "logprobs", &r->logprobs, e)) < 0 ||
        (rc = get_int(r->root, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS,
                      "an integer from 0 to 20", &r->top_logprobs, e)) < 0)
        return rc;
    if (r->top_logprobs > 0 && !r->logprobs)
        return server__fail(e, -EINVAL, "top_logprobs", "invalid_value",
                            "top_logprobs: needs logprobs set to true");
    return 0;
}

static int
parse_stream(struct oai_request *r, struct oai_err *e)
{
    int rc = get_bool(r->root, "stream", &r->stream, e);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(r->root, "stream_options");
    if (rc < 0 || so == NULL || cJSON_IsNull(so))
        return rc < 0 ? rc : 0;
    if (!cJSON_IsObject(so))
        return bad(e, "stream_options", "an object", so);
    if (get_bool(so, "include_usage", &r->include_usage, e) < 0)
        return server__fail(e, -EINVAL, "stream_options.include_usage", "invalid_type",
                            "stream_options.include_usage: expected a boolean");
    return 0;
}

static int
parse_misc(struct oai_request *r, struct oai_err *e)
{
    bool echo = false;
    int rc = 0;
    if ((rc = get_string(r->root, "model", &r->model, e)) < 0 ||
        (rc = get_string(r->root, "user", &r->user, e)) < 0 ||
        (rc = get_int(r->root, "n", 1, OAI_MAX_N, "an integer from 1 to 8", &r->n, e)) < 0 ||
        (rc = get_int(r->root, "max_tokens", 1, INT_MAX, "an integer >= 1", &r->max_tokens,
                      e)) < 0 ||
        (rc = get_int(r->root, "max_completion_tokens", 1, INT_MAX, "an integer >= 1",
                      &r->max_tokens, e)) < 0 ||
        (rc = get_bool(r->root, "ignore_eos", &r->ignore_eos, e)) < 0 ||
        (rc = get_bool(r->root, "echo", &echo, e)) < 0)
        return rc;
    if (echo && r->kind == OAI_COMPLETIONS)
        return server__fail(e, -EINVAL, "echo", "unsupported_value",
                            "echo: true is not supported");
    return 0;
}

/* ---- Retrieval -------------------------------------------------------- */

static const char retrieval_what[] = "{\"vector_store_ids\": [1 to 8 ids], \"top_k\": 1..50, "
                                     "\"mode\": \"vector\"|\"keyword\"|\"hybrid\", \"echo\": bool}";

static int
parse_retrieval(struct oai_request *r, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "retrieval"), *it;
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(v, "vector_store_ids");
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(v, "mode");
    int n = cJSON_GetArraySize(ids), rc = 0;
    if (!cJSON_IsObject(v) || !cJSON_IsArray(ids) || n < 1 || n > OAI_MAX_STORES)
        return bad(e, "retrieval", retrieval_what, v);
    r->rtv = (struct oai_retrieval){ .top_k = 4, .mode = RETRIEVAL_HYBRID };
    cJSON_ArrayForEach(it, ids) {
        if (!cJSON_IsString(it))
            return bad(e, "retrieval.vector_store_ids", "strings", it);
        r->rtv.stores[r->rtv.n_stores++] = it->valuestring;
    }
    if ((rc = get_int(v, "top_k", 1, 50, "an integer from 1 to 50", &r->rtv.top_k, e)) < 0 ||
        (rc = get_bool(v, "echo", &r->rtv.echo, e)) < 0)
        return rc;
    if (mode != NULL && !cJSON_IsNull(mode)) {
        const char *m = cJSON_IsString(mode) ? mode->valuestring : "";
        if (strcmp(m, "vector") && strcmp(m, "keyword") && strcmp(m, "hybrid"))
            return bad(e, "retrieval.mode", "\"vector\", \"keyword\" or \"hybrid\"", mode);
        r->rtv.mode = m[0] == 'v' ? RETRIEVAL_VECTOR : m[0] == 'k' ? RETRIEVAL_KEYWORD
                                                               : RETRIEVAL_HYBRID;
    }
    r->has_retrieval = true;
    return 0;
}

/* Retrieval needs words to search with: a chat's user message, or one text prompt. */
static int
check_retrieval(const struct oai_request *r, struct oai_err *e)
{
    if (!r->has_retrieval || server__request_query(r) != NULL)
        return 0;
    return server__fail(e, -EINVAL, "retrieval", "invalid_value", r->kind == OAI_CHAT
                        ? "retrieval: the messages need a user message to search with"
                        : "retrieval: the prompt must be one string to search with");
}

const char *
server__request_query(const struct oai_request *r)
{
    if (r->kind != OAI_CHAT)
        return r->n_prompts == 1 ? r->prompts[0].text : NULL;
    for (int i = r->n_msgs - 1; i >= 0; i--)
        if (strcmp(r->msgs[i].role, "user") == 0)
            return r->msgs[i].content;
    return NULL;
}

/* context, then a blank line and base if there is one (malloc'd), or NULL. */
static char *
joined(const char *context, const char *base)
{
    size_t len = strlen(context) + (base ? strlen(base) + 2 : 0) + 1;
    char *text = malloc(len);
    if (text != NULL)
        snprintf(text, len, "%s%s%s", context, base ? "\n\n" : "", base ? base : "");
    return text;
}

/* The text the context goes before: a chat's system message (NULL if none), or the prompt. */
static const char *
inject_base(const struct oai_request *r, bool *sys)
{
    bool chat = r->kind == OAI_CHAT;
    *sys = chat && r->n_msgs > 0 && strcmp(r->msgs[0].role, "system") == 0;
    return chat ? (*sys ? r->msgs[0].content : NULL) : r->prompts[0].text;
}

int
server__request_measure(const struct oai_request *r, const struct tokenizer *tok,
                        enum chat_family fam, const char *context, int *n_tokens)
{
    bool sys = false, chat = r->kind == OAI_CHAT;
    char *first = joined(context, inject_base(r, &sys)), *text = NULL;
    struct chat_msg *m = chat ? malloc((size_t)(r->n_msgs + 1) * sizeof(*m)) : NULL;
    int rc = first == NULL || (chat && m == NULL) ? -ENOMEM : 0;
    if (rc == 0 && chat) {          /* the messages as server__request_inject would leave them */
        memcpy(m + !sys, r->msgs, (size_t)r->n_msgs * sizeof(*m));
        m[0] = (struct chat_msg){ .role = "system", .content = first };
        int32_t bos = tokenizer_bos(tok), eos = tokenizer_eos(tok);
        char err[256];
        rc = chat_apply(fam, m, (size_t)(r->n_msgs + !sys), true,
                        bos >= 0 ? tokenizer_token_text(tok, bos) : NULL,
                        eos >= 0 ? tokenizer_token_text(tok, eos) : NULL, &text, err,
                        sizeof(err));
    }
    int32_t *ids = NULL;
    size_t n = 0;
    const char *t = chat ? text : first;
    if (rc == 0)
        rc = tokenizer_encode(tok, t, strlen(t), true, chat, &ids, &n);
    *n_tokens = (int)n;
    free(ids);
    free(text);
    free(m);
    free(first);
    return rc;
}

int
server__request_inject(struct oai_request *r, const char *context)
{
    bool chat = r->kind == OAI_CHAT, sys = false;
    char *text = joined(context, inject_base(r, &sys));
    if (text == NULL)
        return -ENOMEM;
    if (chat && !sys) {
        struct chat_msg *m = realloc(r->msgs, (size_t)(r->n_msgs + 1) * sizeof(*m));
        if (m == NULL) {
            free(text);
            return -ENOMEM;
        }
        memmove(m + 1, m, (size_t)r->n_msgs * sizeof(*m));
        m[0].role = "system";
        r->msgs = m;
        r->n_msgs++;
    }
    free(r->injected);
    r->injected = text;
    if (chat)
        r->msgs[0].content = text;
    else
        r->prompts[0].text = text;
    return 0;
}

/* ---- Adapters --------------------------------------------------------- */

static const char adapters_what[] =
    "an array of up to 8 adapter names or {\"name\": string, \"scale\": number} objects";

/* One entry of "adapters": a name, or {"name", "scale"}. */
static int
parse_adapter(const cJSON *it, int i, struct oai_adapter *out, struct oai_err *e)
{
    char param[32];
    snprintf(param, sizeof(param), "adapters[%d]", i);
    *out = (struct oai_adapter){ NULL, 1.0f };
    if (cJSON_IsString(it)) {
        out->name = it->valuestring;
    } else if (cJSON_IsObject(it)) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!cJSON_IsString(name))
            return bad(e, "adapters", "objects with a string \"name\"", it);
        out->name = name->valuestring;
        const cJSON *scale = cJSON_GetObjectItemCaseSensitive(it, "scale");
        double x = cJSON_IsNumber(scale) ? scale->valuedouble : NAN;
        char got[48];
        if (scale != NULL && !cJSON_IsNull(scale) &&
            !(x >= -OAI_MAX_LORA_SCALE && x <= OAI_MAX_LORA_SCALE))
            return server__fail(e, -EINVAL, "adapters", "invalid_type",
                                "%s.scale: expected a number from -10 to 10, got %s", param,
                                shown(scale, got, sizeof(got)));
        if (cJSON_IsNumber(scale))
            out->scale = (float)x;
    } else {
        return bad(e, "adapters", adapters_what, it);
    }
    if (out->name[0] == '\0')
        return server__fail(e, -EINVAL, "adapters", "invalid_value", "%s: an empty name",
                            param);
    return 0;
}

static int
parse_adapters(struct oai_request *r, struct oai_err *e)
{
    int rc = get_float(r->root, "lora_scale", -OAI_MAX_LORA_SCALE, OAI_MAX_LORA_SCALE,
                       "a number from -10 to 10", &r->lora_scale, e);
    if (rc < 0)
        return rc;
    r->has_lora_scale = rc == 1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "adapters");
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > OAI_MAX_ADAPTERS)
        return bad(e, "adapters", adapters_what, v);
    r->has_adapters = true;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, v) {
        struct oai_adapter *a = &r->adapters[r->n_adapters];
        if (parse_adapter(it, r->n_adapters, a, e) < 0)
            return e->err;
        for (int i = 0; i < r->n_adapters; i++)
            if (strcmp(r->adapters[i].name, a->name) == 0)
                return server__fail(e, -EINVAL, "adapters", "invalid_value",
                                    "adapters: '%.100s' is listed twice", a->name);
        r->n_adapters++;
    }
    return 0;
}

int
server__select_adapters(const struct oai_request *r, const char *base_id,
                        struct oai_adapter *out, int *n, struct oai_err *e)
{
    *n = 0;
    bool base = r->model == NULL || strcmp(r->model, base_id) == 0;
    if (!r->has_adapters) {
        if (!base)
            out[(*n)++] = (struct oai_adapter){ r->model, r->has_lora_scale ? r->lora_scale : 1 };
        return 0;
    }
    if (r->has_lora_scale)
        return server__fail(e, -EINVAL, "lora_scale", "invalid_value",
                            "lora_scale: give each adapter's scale in \"adapters\" instead");
    bool listed = base;
    for (int i = 0; i < r->n_adapters; i++) {
        out[(*n)++] = r->adapters[i];
        listed = listed || strcmp(r->adapters[i].name, r->model) == 0;
    }
    if (!listed)
        return server__fail(e, -EINVAL, "model", "invalid_value",
                            "model: with \"adapters\", model must be the base model '%.100s' "
                            "or one of the adapters listed, not '%.100s'", base_id, r->model);
    return 0;
}

/* ---- Requests --------------------------------------------------------- */

int
server__parse_request(enum oai_kind kind, const char *body, size_t len, int n_vocab,
                      struct oai_request *r, struct oai_err *e)
{
    *r = (struct oai_request){ .kind = kind, .n = 1 };
    if (!server__utf8_valid(body, len))
        return server__fail(e, -EILSEQ, NULL, "invalid_encoding",
                            "the request body is not valid UTF-8");
    r->root = cJSON_ParseWithLength(body, len);
    if (r->root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= body && at <= body + len ? (size_t)(at - body) : 0;
        return server__fail(e, -EBADMSG, NULL, "invalid_json",
                            "the request body is not valid JSON (at byte %zu)", off);
    }
    if (!cJSON_IsObject(r->root))
        return server__fail(e, -EINVAL, NULL, "invalid_json",
                            "the request body must be a JSON object");
    int rc = 0;
    if ((rc = parse_misc(r, e)) < 0 || (rc = parse_sampling(r, e)) < 0 ||
        (rc = parse_stop(r, e)) < 0 || (rc = parse_logit_bias(r, n_vocab, e)) < 0 ||
        (rc = parse_logprobs(r, e)) < 0 || (rc = parse_stream(r, e)) < 0 ||
        (rc = parse_adapters(r, e)) < 0 || (rc = parse_retrieval(r, e)) < 0)
        return rc;
    rc = kind == OAI_CHAT ? parse_messages(r, e) : parse_prompt(r, n_vocab, e);
    if (rc < 0 || (rc = check_retrieval(r, e)) < 0)
        return rc;
    if (r->n_prompts * r->n > OAI_MAX_CHOICES)
        return server__fail(e, -EINVAL, "n", "invalid_value",
                            "n: %d prompts x n %d is more than %d choices", r->n_prompts, r->n,
                            OAI_MAX_CHOICES);
    return 0;
}

void
server__request_release(struct oai_request *r)
{
    for (int i = 0; r->prompts != NULL && i < r->n_prompts; i++)
        free(r->prompts[i].ids);
    free(r->prompts);
    free(r->msgs);
    free(r->bias);
    free(r->injected);
    cJSON_Delete(r->root);
    *r = (struct oai_request){ 0 };
}

/* ---- Tokens and the context ------------------------------------------- */

static int
tokenize(struct oai_prompt *p, const struct tokenizer *tok, const char *text, bool special,
         const char *param, struct oai_err *e)
{
    size_t n = 0;
    int rc = tokenizer_encode(tok, text, strlen(text), true, special, &p->ids, &n);
    if (rc == -ENOMEM)
        return server__fail(e, rc, NULL, NULL, "out of memory for the prompt's tokens");
    if (rc < 0 || n == 0 || n > INT_MAX)
        return server__fail(e, -EINVAL, param, "invalid_value", "%s: cannot be tokenized",
                            param);
    p->n_ids = (int)n;
    return 0;
}

/* The chat messages -> one prompt through the template. */
static int
tokenize_chat(struct oai_request *r, const struct tokenizer *tok, enum chat_family fam,
              struct oai_err *e)
{
    char err[256] = "";
    char *text = NULL;
    int32_t bos = tokenizer_bos(tok), eos = tokenizer_eos(tok);
    int rc = chat_apply(fam, r->msgs, (size_t)r->n_msgs, true,
                        bos >= 0 ? tokenizer_token_text(tok, bos) : NULL,
                        eos >= 0 ? tokenizer_token_text(tok, eos) : NULL, &text, err,
                        sizeof(err));
    if (rc < 0)
        return server__fail(e, rc == -ENOMEM ? rc : -EINVAL, "messages", "invalid_value",
                            "%s", err[0] ? err : "messages: cannot be rendered");
    r->prompts = server__xcalloc(1, sizeof(*r->prompts));
    r->n_prompts = 1;
    rc = tokenize(&r->prompts[0], tok, text, true, "messages", e);
    free(text);
    /* A model that does not know the end-of-turn token may still write its text. */
    const char *eot = chat_family_eot(fam);
    if (eot != NULL)
        r->stop[r->n_stop++] = eot;
    return rc;
}

/* Sets max_tokens from the room left, or checks the one asked for. */
static int
check_context(struct oai_request *r, int n_ctx, struct oai_err *e)
{
    const char *param = r->kind == OAI_CHAT ? "messages" : "prompt";
    int longest = 0;
    for (int i = 0; i < r->n_prompts; i++)
        longest = r->prompts[i].n_ids > longest ? r->prompts[i].n_ids : longest;
    if (r->max_tokens == 0) {
        int room = n_ctx - longest;
        r->max_tokens = r->kind == OAI_CHAT ? room : (room < 16 ? room : 16);
        if (room < 1)
            return server__fail(e, -EINVAL, param, "context_length_exceeded",
                                "this model's context is %d tokens; the prompt has %d, "
                                "which leaves no room for the completion", n_ctx, longest);
    }
    if ((long long)longest + r->max_tokens > n_ctx)
        return server__fail(e, -EINVAL, param, "context_length_exceeded",
                            "this model's context is %d tokens; the prompt has %d and "
                            "max_tokens asks for %d", n_ctx, longest, r->max_tokens);
    return 0;
}

int
server__request_tokenize(struct oai_request *r, const struct tokenizer *tok,
                         enum chat_family fam, int n_ctx, struct oai_err *e)
{
    int rc = 0;
    if (r->kind == OAI_CHAT) {
        rc = tokenize_chat(r, tok, fam, e);
    } else {
        for (int i = 0; rc == 0 && i < r->n_prompts; i++)
            if (r->prompts[i].text != NULL)
                rc = tokenize(&r->prompts[i], tok, r->prompts[i].text, false, "prompt", e);
    }
    return rc < 0 ? rc : check_context(r, n_ctx, e);
}

/*
 * respond.c - OpenAI's response shapes: the text_completion and
 * chat.completion bodies, the SSE chunks of a stream, and logprobs.
 *
 * Text from the model may hold bytes that are not UTF-8 (a byte-fallback
 * token on its own); JSON strings get U+FFFD for those, while a chat
 * logprob's "bytes" keeps the raw bytes, as OpenAI does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

/* ---- Pieces ----------------------------------------------------------- */

int
server__piece(const struct tokenizer *tok, int32_t id, struct sbuf *out)
{
    char buf[128];
    int n = tokenizer_piece(tok, id, false, buf, sizeof(buf));
    if (n < 0)
        return n;
    if ((size_t)n <= sizeof(buf))
        return server__buf_add(out, buf, (size_t)n);
    char *big = malloc((size_t)n);
    if (big == NULL)
        return -ENOMEM;
    int rc = tokenizer_piece(tok, id, false, big, (size_t)n);
    rc = rc < 0 ? rc : server__buf_add(out, big, (size_t)n);
    free(big);
    return rc;
}

/*
 * A JSON string of s[0..n), which holds a NUL (s[n] is one too, as in a struct
 * sbuf): a cJSON string would end at the first, so this is raw JSON text with
 * each NUL written as \u0000.
 */
static cJSON *
nul_text_json(const char *s, size_t n)
{
    struct sbuf raw = SBUF_INIT;
    int rc = server__buf_adds(&raw, "\"");
    for (size_t i = 0; rc == 0; i++) {
        cJSON *part = cJSON_CreateString(s + i);    /* up to the next NUL */
        char *q = part ? cJSON_PrintUnformatted(part) : NULL;   /* "part", escaped */
        rc = q ? server__buf_add(&raw, q + 1, strlen(q) - 2) : -ENOMEM;
        free(q);
        cJSON_Delete(part);
        i += strlen(s + i);
        if (i == n)
            break;
        if (rc == 0)
            rc = server__buf_adds(&raw, "\\u0000");
    }
    cJSON *j = rc == 0 && server__buf_adds(&raw, "\"") == 0 ? cJSON_CreateRaw(raw.p) : NULL;
    server__buf_release(&raw);
    return j;
}

/* A JSON string of s[0..n), made valid UTF-8. */
static cJSON *
text_json(const char *s, size_t n)
{
    struct sbuf b = SBUF_INIT;
    cJSON *j = NULL;
    if (server__utf8_sanitize(&b, s, n) == 0)
        j = b.len > 0 && memchr(b.p, '\0', b.len) != NULL ? nul_text_json(b.p, b.len)
                                                         : cJSON_CreateString(b.p ? b.p : "");
    server__buf_release(&b);
    return j;
}

/* Adds "token" (and for chat "bytes") of id to o. */
static void
add_token(cJSON *o, const struct tokenizer *tok, int32_t id, bool bytes)
{
    struct sbuf b = SBUF_INIT;
    server__piece(tok, id, &b);
    cJSON_AddItemToObject(o, "token", text_json(b.p, b.len));
    if (bytes) {
        cJSON *a = cJSON_AddArrayToObject(o, "bytes");
        for (size_t i = 0; i < b.len; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)b.p[i]));
    }
    server__buf_release(&b);
}

/* ---- Logprobs --------------------------------------------------------- */

int
server__choice_n_released(const struct choice *c)
{
    if (c->finish != NULL && !c->tx.stopped)
        return c->n_toks;
    int n = 0;
    while (n < c->n_toks && c->toks[n].off < c->tx.released)
        n++;
    return n;
}

/* Chat: {"content":[{token, logprob, bytes, top_logprobs}], "refusal": null}. */
static cJSON *
chat_logprobs(const struct choice *c, int from, int to, const struct tokenizer *tok)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    for (int i = from; i < to; i++) {
        const struct engine_tok *t = &c->toks[i].t;
        cJSON *e = cJSON_CreateObject();
        add_token(e, tok, t->id, true);
        cJSON_AddNumberToObject(e, "logprob", t->logprob);
        cJSON *tops = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < t->n_top; k++) {
            cJSON *alt = cJSON_CreateObject();
            add_token(alt, tok, t->top_id[k], true);
            cJSON_AddNumberToObject(alt, "logprob", t->top_logprob[k]);
            cJSON_AddItemToArray(tops, alt);
        }
        cJSON_AddItemToArray(content, e);
    }
    cJSON_AddNullToObject(o, "refusal");
    return o;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. */
static cJSON *
completion_logprobs(const struct choice *c, int from, int to, int top,
                    const struct tokenizer *tok)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = from; i < to; i++) {
        const struct engine_tok *t = &c->toks[i].t;
        cJSON *tmp = cJSON_CreateObject();
        add_token(tmp, tok, t->id, false);
        cJSON_AddItemToArray(tokens, cJSON_DetachItemFromObject(tmp, "token"));
        cJSON_Delete(tmp);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)c->toks[i].off));
        if (top == 0) {
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON *alts = cJSON_CreateObject();
        for (int k = 0; k < t->n_top; k++) {
            struct sbuf b = SBUF_INIT, s = SBUF_INIT;
            if (server__piece(tok, t->top_id[k], &b) == 0 &&
                server__utf8_sanitize(&s, b.p, b.len) == 0)
                cJSON_AddNumberToObject(alts, s.p ? s.p : "", t->top_logprob[k]);
            server__buf_release(&b);
            server__buf_release(&s);
        }
        cJSON_AddItemToArray(tops, alts);
    }
    return o;
}

static cJSON *
logprobs_json(const struct oai_meta *m, const struct choice *c, int from, int to,
              const struct tokenizer *tok)
{
    if (!m->logprobs)
        return cJSON_CreateNull();
    return m->kind == OAI_CHAT ? chat_logprobs(c, from, to, tok)
                               : completion_logprobs(c, from, to, m->top_logprobs, tok);
}

/* ---- Bodies ----------------------------------------------------------- */

static cJSON *
envelope(const struct oai_meta *m, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "model", m->model);
    cJSON_AddStringToObject(o, "system_fingerprint", SERVER_FINGERPRINT);
    cJSON_AddArrayToObject(o, "choices");
    return o;
}

static cJSON *
usage_json(const struct oai_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    return o;
}

static cJSON *
choice_json(const struct oai_meta *m, const struct choice *c, const struct tokenizer *tok)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", c->index);
    if (m->kind == OAI_CHAT) {
        cJSON *msg = cJSON_AddObjectToObject(o, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddItemToObject(msg, "content", text_json(c->text.p, c->text.len));
    } else {
        cJSON_AddItemToObject(o, "text", text_json(c->text.p, c->text.len));
    }
    cJSON_AddItemToObject(o, "logprobs",
                          logprobs_json(m, c, 0, server__choice_n_released(c), tok));
    cJSON_AddStringToObject(o, "finish_reason", c->finish ? c->finish : "length");
    return o;
}

char *
server__response_json(const struct oai_meta *m, const struct choice *c, int n,
                      const struct oai_usage *u, const struct tokenizer *tok)
{
    cJSON *o = envelope(m, m->kind == OAI_CHAT ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(o, "choices");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(choices, choice_json(m, &c[i], tok));
    cJSON_AddItemToObject(o, "usage", usage_json(u));
    if (m->retrieval != NULL)
        cJSON_AddItemToObject(o, "retrieval", cJSON_Duplicate(m->retrieval, true));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---- Server-sent events ----------------------------------------------- */

static int
sse_add(struct sbuf *out, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = s == NULL ? -ENOMEM : server__buf_adds(out, "data: ");
    if (rc == 0 && (rc = server__buf_adds(out, s)) == 0)
        rc = server__buf_adds(out, "\n\n");
    free(s);
    return rc;
}

/* The delta (chat) or text (completions) of one chunk. */
static void
chunk_body(cJSON *ch, const struct oai_meta *m, const struct choice *c, enum oai_chunk what)
{
    if (m->kind == OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (what == OAI_CHUNK_ROLE) {
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
        } else if (what == OAI_CHUNK_TEXT) {
            cJSON_AddItemToObject(d, "content", text_json(c->text.p, c->text.len));
        }
    } else {
        cJSON_AddItemToObject(ch, "text", what == OAI_CHUNK_TEXT
                                              ? text_json(c->text.p, c->text.len)
                                              : cJSON_CreateString(""));
    }
}

int
server__sse_chunk(struct sbuf *out, const struct oai_meta *m, const struct choice *c,
                  enum oai_chunk what, int n_lp, const struct tokenizer *tok)
{
    cJSON *o = envelope(m, m->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", c->index);
    chunk_body(ch, m, c, what);
    if (what == OAI_CHUNK_TEXT && m->logprobs)
        cJSON_AddItemToObject(ch, "logprobs", logprobs_json(m, c, c->n_lp_sent, n_lp, tok));
    else
        cJSON_AddNullToObject(ch, "logprobs");
    if (what == OAI_CHUNK_FINAL)
        cJSON_AddStringToObject(ch, "finish_reason", c->finish ? c->finish : "length");
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(o, "choices"), ch);
    if (m->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return sse_add(out, o);
}

int
server__sse_usage(struct sbuf *out, const struct oai_meta *m, const struct oai_usage *u)
{
    cJSON *o = envelope(m, m->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddItemToObject(o, "usage", usage_json(u));
    return sse_add(out, o);
}

int
server__sse_retrieval(struct sbuf *out, const struct oai_meta *m)
{
    cJSON *o = envelope(m, m->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddItemToObject(o, "retrieval", cJSON_Duplicate(m->retrieval, true));
    return sse_add(out, o);
}

int
server__sse_done(struct sbuf *out)
{
    return server__buf_adds(out, "data: [DONE]\n\n");
}

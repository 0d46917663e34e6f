/*
 * rag.c - "retrieval" on completions and chat: the request's question is
 * searched in its vector stores (on the libuv pool), the best chunks are
 * rendered, numbered and with their document ids, into the context that
 * server__request_inject puts first (a chat's system message, a completion's
 * prompt), as many as fit the context with room for the answer, and the
 * response carries them: "retrieval": {"chunks": [{"id", "document_id",
 * "vector_store_id", "score", "text"}], "prompt"? } ("prompt", with echo:
 * true, is the prompt the model saw, decoded from its tokens).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"
#include "tokenizer.h"

#define ANSWER_ROOM 256     /* tokens kept for the answer when max_tokens is not given */
#define TEMPLATE_ROOM 64    /* tokens a chat template may add around the messages */

struct rag_hit {
    struct retrieval_hit h;
    const char *store;      /* borrowed from the request */
};

struct rag {
    struct rag_hit *hits;
    int n;
    char *template;         /* the first store's context template, or NULL */
    int rc;                 /* the search's failure, or 0 */
    char msg[320];
    cJSON *json;            /* the response's "retrieval" object */
};

void
server__rag_free(struct rag *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < g->n; i++) {
        free(g->hits[i].h.text);
        free(g->hits[i].h.metadata);
    }
    free(g->hits);
    free(g->template);
    cJSON_Delete(g->json);
    free(g);
}

static int
by_score(const void *a, const void *b)
{
    float x = ((const struct rag_hit *)a)->h.score, y = ((const struct rag_hit *)b)->h.score;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Appends store's hits to g (taking them). */
static int
take(struct rag *g, const char *store, struct retrieval_hit *h, int n)
{
    struct rag_hit *p = realloc(g->hits, (size_t)(g->n + n + 1) * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    g->hits = p;
    for (int i = 0; i < n; i++)
        g->hits[g->n++] = (struct rag_hit){ h[i], store };
    free(h);
    return 0;
}

struct rag *
server__rag_search(struct server *s, const struct who *who, const struct oai_request *r)
{
    struct rag *g = server__xcalloc(1, sizeof(*g));
    struct retrieval_query q = { server__request_query(r), NULL, 0, r->rtv.top_k, r->rtv.mode,
                                 0, NULL };
    for (int i = 0; i < r->rtv.n_stores && g->rc == 0; i++) {
        struct retrieval_hit *h = NULL;
        struct oai_err e;
        int n = 0;
        if (server__store_access(s, who, r->rtv.stores[i], false, &e) < 0) {
            g->rc = -ENOENT;
            snprintf(g->msg, sizeof(g->msg), "%s", e.msg);
            break;
        }
        server__metrics_search(s->metrics);
        g->rc = retrieval_search(s->stores, r->rtv.stores[i], &q, &h, &n, g->msg,
                                 sizeof(g->msg));
        if (g->rc == 0 && (g->rc = take(g, r->rtv.stores[i], h, n)) < 0)
            retrieval_hits_free(h, n);
    }
    if (g->n > 1)
        qsort(g->hits, (size_t)g->n, sizeof(*g->hits), by_score);
    for (int i = 0; g->rc == 0 && g->template == NULL && i < r->rtv.n_stores; i++)
        retrieval_store_template(s->stores, r->rtv.stores[i], &g->template);
    return g;
}

/* Tokens of text by tok (0 if it cannot tell). */
static int
count(const struct tokenizer *tok, const char *text)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(tok, text, strlen(text), false, false, &ids, &n);
    free(ids);
    return rc < 0 ? 0 : (int)n;
}

/* Tokens the request has before any context. */
static int
base_tokens(const struct oai_request *r, const struct tokenizer *tok)
{
    if (r->kind != OAI_CHAT)
        return count(tok, r->prompts[0].text);
    int n = TEMPLATE_ROOM;
    for (int i = 0; i < r->n_msgs; i++)
        n += count(tok, r->msgs[i].content) + 4;
    return n;
}

static cJSON *
chunk_json(const struct rag_hit *x)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)x->h.chunk);
    cJSON_AddStringToObject(o, "document_id", x->h.document);
    cJSON_AddStringToObject(o, "vector_store_id", x->store);
    cJSON_AddNumberToObject(o, "score", x->h.score);
    cJSON_AddStringToObject(o, "text", x->h.text);
    return o;
}

#define DEFAULT_TEMPLATE "Answer from these passages; cite them by number.\n{chunks}"

/* The template around {chunks}: its text before and after. */
static void
split_template(const char *t, struct sbuf *head, const char **tail)
{
    const char *at = strstr(t, "{chunks}");
    server__buf_add(head, t, (size_t)(at - t));
    *tail = at + strlen("{chunks}");
}

/*
 * The context: the template with the best hits, numbered, at most max of
 * them and while they fit budget tokens by an estimate; *n_shown: how many.
 */
static int
render(struct rag *g, const struct oai_request *r, const struct tokenizer *tok, int budget,
       int max, struct sbuf *out, int *n_shown)
{
    const char *tail = NULL;
    split_template(g->template ? g->template : DEFAULT_TEMPLATE, out, &tail);
    int rc = out->p == NULL && out->len > 0 ? -ENOMEM : 0, shown = 0;
    int used = (out->p ? count(tok, out->p) : 0) + count(tok, tail);
    cJSON_DeleteItemFromObject(g->json, "chunks");
    cJSON *chunks = cJSON_AddArrayToObject(g->json, "chunks");
    for (int i = 0; i < g->n && shown < r->rtv.top_k && shown < max && rc == 0; i++) {
        size_t len = strlen(g->hits[i].h.text) + 96;
        char *entry = malloc(len);
        if (entry == NULL)
            return -ENOMEM;
        snprintf(entry, len, "\n[%d] (document %s) %s\n", shown + 1, g->hits[i].h.document,
                 g->hits[i].h.text);
        int cost = count(tok, entry);
        if (used + cost <= budget) {
            rc = server__buf_adds(out, entry);
            cJSON_AddItemToArray(chunks, chunk_json(&g->hits[i]));
            used += cost;
            shown++;
        }
        free(entry);
    }
    *n_shown = shown;
    return rc < 0 ? rc : server__buf_adds(out, tail);
}

/*
 * The context with as many of the best chunks as fit: the estimate's number
 * first, then one fewer at a time until the prompt as the model will see it
 * (measured exactly) leaves room tokens in the context. *shown 0: none fit.
 */
static int
fit(struct server *s, struct rag *g, const struct oai_request *r, int room, struct sbuf *ctx,
    int *shown)
{
    int budget = s->n_ctx - room - base_tokens(r, s->tok), max = r->rtv.top_k, rc = 0;
    for (;;) {
        server__buf_release(ctx);
        if ((rc = render(g, r, s->tok, budget, max, ctx, shown)) < 0 || *shown == 0)
            return rc;
        int n = 0;
        rc = server__request_measure(r, s->tok, s->chat, ctx->p, &n);
        if (rc < 0 || n + room <= s->n_ctx)
            return rc == -ENOMEM ? rc : 0;
        max = *shown - 1;
    }
}

int
server__rag_apply(struct server *s, struct rag *g, struct oai_request *r, struct oai_err *e)
{
    if (g->rc == -ENOENT)
        return server__fail(e, -ENOENT, "retrieval.vector_store_ids", "not_found", "%s", g->msg);
    if (g->rc < 0)
        return server__fail(e, g->rc == -EINVAL ? -EINVAL : -EIO, "retrieval", NULL, "%s",
                            g->msg[0] ? g->msg : "retrieval failed");
    g->json = cJSON_CreateObject();
    int room = r->max_tokens > 0 ? r->max_tokens : (s->n_ctx / 4 < ANSWER_ROOM ? s->n_ctx / 4
                                                                               : ANSWER_ROOM);
    struct sbuf ctx = SBUF_INIT;
    int shown = 0, rc = g->json ? fit(s, g, r, room, &ctx, &shown) : -ENOMEM;
    if (rc == 0 && shown > 0)
        rc = server__request_inject(r, ctx.p);
    server__buf_release(&ctx);
    return rc < 0 ? server__fail(e, -ENOMEM, NULL, NULL, "out of memory for the context") : 0;
}

/* With echo: the first prompt as the model saw it. */
void
server__rag_echo(struct rag *g, const struct oai_request *r, const struct tokenizer *tok)
{
    if (!r->rtv.echo || g->json == NULL || r->n_prompts < 1)
        return;
    const struct oai_prompt *p = &r->prompts[0];
    int len = tokenizer_decode(tok, p->ids, (size_t)p->n_ids, true, false, NULL, 0);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (text == NULL)
        return;
    tokenizer_decode(tok, p->ids, (size_t)p->n_ids, true, false, text, (size_t)len);
    text[len] = '\0';
    struct sbuf clean = SBUF_INIT;
    if (server__utf8_sanitize(&clean, text, (size_t)len) == 0 && clean.p != NULL)
        cJSON_AddStringToObject(g->json, "prompt", clean.p);
    server__buf_release(&clean);
    free(text);
}

const cJSON *
server__rag_json(const struct rag *g)
{
    return g ? g->json : NULL;
}

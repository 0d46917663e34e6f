/*
 * vector_stores.c - /v1/vector_stores in OpenAI's shape (retrieval.h).
 *
 *   POST   /v1/vector_stores                       {name, metadata, chunking_strategy,
 *                                                   context_template, embedder}
 *   GET    /v1/vector_stores                       the list
 *   GET    /v1/vector_stores/{id}                  one store
 *   DELETE /v1/vector_stores/{id}
 *   POST   /v1/vector_stores/{id}/documents        {documents: [{id, text, metadata}]}
 *   GET    /v1/vector_stores/{id}/documents
 *   DELETE /v1/vector_stores/{id}/documents/{doc}
 *   POST   /v1/vector_stores/{id}/search           {query, max_num_results, filters,
 *                                                   ranking_options.score_threshold, mode}
 *
 * The path and body are checked on the loop; every store call (SQLite,
 * chunking, embedding) runs on the libuv pool through server__op_call, which
 * builds the answer there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

enum vs_kind { VS_CREATE, VS_LIST, VS_GET, VS_DELETE, VS_ADD, VS_DOCS, VS_DOC_DELETE, VS_SEARCH };

struct vs_req {
    struct server *s;
    struct who who;
    enum vs_kind kind;
    char id[RETRIEVAL_ID_MAX], doc[RETRIEVAL_ID_MAX];
    cJSON *root;                    /* the body, or NULL */
    int chunk_tokens, chunk_overlap;
    struct retrieval_query q;
    char *filter;                   /* q.filter's text */
    float *vector;                  /* q.vector's floats */
};

static void
vs_free(void *arg)
{
    struct vs_req *r = arg;
    cJSON_Delete(r->root);
    free(r->filter);
    free(r->vector);
    free(r);
}

/* ---- JSON out (pool) --------------------------------------------------- */

static cJSON *
parse_or_empty(const char *json)
{
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    return o ? o : cJSON_CreateObject();
}

static cJSON *
store_json(const struct retrieval_store_info *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", v->id);
    cJSON_AddStringToObject(o, "object", "vector_store");
    cJSON_AddNumberToObject(o, "created_at", (double)v->created_at);
    if (v->name)
        cJSON_AddStringToObject(o, "name", v->name);
    else
        cJSON_AddNullToObject(o, "name");
    cJSON_AddStringToObject(o, "status", "completed");
    cJSON_AddNumberToObject(o, "usage_bytes", (double)v->usage_bytes);
    cJSON *fc = cJSON_AddObjectToObject(o, "file_counts");
    cJSON_AddNumberToObject(fc, "in_progress", 0);
    cJSON_AddNumberToObject(fc, "completed", (double)v->n_documents);
    cJSON_AddNumberToObject(fc, "failed", 0);
    cJSON_AddNumberToObject(fc, "cancelled", 0);
    cJSON_AddNumberToObject(fc, "total", (double)v->n_documents);
    cJSON_AddItemToObject(o, "metadata", parse_or_empty(v->metadata));
    cJSON *cs = cJSON_AddObjectToObject(o, "chunking_strategy");
    cJSON_AddStringToObject(cs, "type", "static");
    cJSON *st = cJSON_AddObjectToObject(cs, "static");
    cJSON_AddNumberToObject(st, "max_chunk_size_tokens", v->chunk_tokens);
    cJSON_AddNumberToObject(st, "chunk_overlap_tokens", v->chunk_overlap);
    cJSON_AddNumberToObject(o, "dimensions", v->dim);
    cJSON_AddStringToObject(o, "embedder", v->embedder);
    if (v->template)
        cJSON_AddStringToObject(o, "context_template", v->template);
    else
        cJSON_AddNullToObject(o, "context_template");
    cJSON_AddNullToObject(o, "expires_at");
    cJSON_AddNumberToObject(o, "last_active_at", (double)v->created_at);
    return o;
}

/* {"object": "list", "data": data, "first_id", "last_id", "has_more": false} */
static cJSON *
list_json(cJSON *data)
{
    cJSON *o = cJSON_CreateObject(), *first = cJSON_GetArrayItem(data, 0);
    cJSON *last = cJSON_GetArrayItem(data, cJSON_GetArraySize(data) - 1);
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToObject(o, "data", data);
    if (first)
        cJSON_AddStringToObject(o, "first_id", cJSON_GetObjectItem(first, "id")->valuestring);
    else
        cJSON_AddNullToObject(o, "first_id");
    if (last)
        cJSON_AddStringToObject(o, "last_id", cJSON_GetObjectItem(last, "id")->valuestring);
    else
        cJSON_AddNullToObject(o, "last_id");
    cJSON_AddBoolToObject(o, "has_more", false);
    return o;
}

static cJSON *
doc_json(const char *id, int n_chunks, const char *metadata, long long created, long long bytes)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "vector_store.document");
    cJSON_AddNumberToObject(o, "chunks", n_chunks);
    cJSON_AddStringToObject(o, "status", "completed");
    if (metadata)
        cJSON_AddItemToObject(o, "metadata", parse_or_empty(metadata));
    if (created)
        cJSON_AddNumberToObject(o, "created_at", (double)created);
    if (bytes)
        cJSON_AddNumberToObject(o, "usage_bytes", (double)bytes);
    return o;
}

static cJSON *
hits_json(const struct vs_req *r, const struct retrieval_hit *h, int n)
{
    cJSON *o = cJSON_CreateObject(), *data = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "object", "vector_store.search_results.page");
    cJSON *sq = cJSON_GetObjectItem(r->root, "query");
    cJSON_AddItemToObject(o, "search_query", cJSON_Duplicate(sq, true));
    for (int i = 0; i < n; i++) {
        cJSON *d = cJSON_CreateObject(), *c = cJSON_CreateArray(), *t = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "file_id", h[i].document);
        cJSON_AddStringToObject(d, "filename", h[i].document);
        cJSON_AddNumberToObject(d, "score", h[i].score);
        cJSON_AddItemToObject(d, "attributes", parse_or_empty(h[i].metadata));
        cJSON_AddStringToObject(t, "type", "text");
        cJSON_AddStringToObject(t, "text", h[i].text);
        cJSON_AddItemToArray(c, t);
        cJSON_AddItemToObject(d, "content", c);
        cJSON_AddNumberToObject(d, "chunk_id", (double)h[i].chunk);
        cJSON_AddNumberToObject(d, "chunk_index", h[i].seq);
        cJSON_AddItemToArray(data, d);
    }
    cJSON_AddItemToObject(o, "data", data);
    cJSON_AddBoolToObject(o, "has_more", false);
    cJSON_AddNullToObject(o, "next_page");
    return o;
}

/* ---- The calls (pool) --------------------------------------------------- */

static void
answer_rc(struct op *o, int rc, const char *what, const char *msg)
{
    struct oai_err e;
    if (rc == -ENOENT)
        server__fail(&e, rc, NULL, "not_found", "%s", msg[0] ? msg : what);
    else if (rc == -EINVAL || rc == -EILSEQ)
        server__fail(&e, -EINVAL, NULL, "invalid_value", "%s", msg);
    else
        server__fail(&e, rc == -ENOMEM ? rc : -EIO, NULL, NULL, "%s: %s", what,
                     msg[0] ? msg : "cannot read or write the vector stores");
    server__op_answer_error(o, &e);
}

static void
do_stores(struct op *o, struct vs_req *r, struct retrieval_stores *st)
{
    struct retrieval_store_info v, *all = NULL;
    char err[512] = "", what[128];
    int n = 0, rc = 0;
    snprintf(what, sizeof(what), "no vector store '%s'", r->id);
    if (r->kind == VS_LIST && (rc = retrieval_store_list(st, &all, &n)) == 0) {
        cJSON *data = cJSON_CreateArray();
        for (int i = 0; i < n; i++) {
            if (!server__store_visible(&r->who, all[i].owner)) {
                retrieval_store_info_release(&all[i]);
                continue;
            }
            cJSON_AddItemToArray(data, store_json(&all[i]));
            retrieval_store_info_release(&all[i]);
        }
        free(all);
        server__op_answer_json(o, list_json(data));
        return;
    }
    if (r->kind == VS_CREATE) {
        cJSON *name = cJSON_GetObjectItem(r->root, "name"), *meta = cJSON_GetObjectItem(r->root,
                                                                                       "metadata");
        cJSON *tmpl = cJSON_GetObjectItem(r->root, "context_template");
        cJSON *emb = cJSON_GetObjectItem(r->root, "embedder");
        char *m = cJSON_IsObject(meta) ? cJSON_PrintUnformatted(meta) : NULL;
        rc = retrieval_store_create(st, r->who.id, cJSON_IsString(name) ? name->valuestring
                                    : NULL, m,
                                    cJSON_IsString(tmpl) ? tmpl->valuestring : NULL,
                                    cJSON_IsString(emb) ? emb->valuestring : NULL,
                                    r->chunk_tokens, r->chunk_overlap, &v, err, sizeof(err));
        if (rc == -ENOENT) {
            struct oai_err oe;
            server__fail(&oe, -EINVAL, "embedder", "invalid_value", "%s", err);
            server__op_answer_error(o, &oe);
            free(m);
            return;
        }
        free(m);
    } else if (r->kind == VS_GET) {
        rc = retrieval_store_get(st, r->id, &v);
    } else if (r->kind == VS_DELETE && (rc = retrieval_store_delete(st, r->id)) == 0) {
        server__op_answer_json(o, server__deleted_json(r->id, "vector_store.deleted"));
        return;
    }
    if (rc < 0) {
        answer_rc(o, rc, what, err);
        return;
    }
    cJSON *j = store_json(&v);
    retrieval_store_info_release(&v);
    server__op_answer_json(o, j);
}

static void
do_add(struct op *o, struct vs_req *r, struct retrieval_stores *st)
{
    cJSON *docs = cJSON_GetObjectItem(r->root, "documents"), *d;
    int n = cJSON_GetArraySize(docs), i = 0;
    struct retrieval_doc *in = calloc((size_t)n, sizeof(*in));
    struct retrieval_doc_added *out = calloc((size_t)n, sizeof(*out));
    char **meta = calloc((size_t)n, sizeof(*meta)), err[512] = "";
    int rc = in && out && meta ? 0 : -ENOMEM;
    cJSON_ArrayForEach(d, docs) {
        if (rc < 0)
            break;
        cJSON *id = cJSON_GetObjectItem(d, "id"), *text = cJSON_GetObjectItem(d, "text");
        cJSON *m = cJSON_GetObjectItem(d, "metadata");
        meta[i] = cJSON_IsObject(m) ? cJSON_PrintUnformatted(m) : NULL;
        in[i] = (struct retrieval_doc){ cJSON_IsString(id) ? id->valuestring : NULL,
                                        text->valuestring, strlen(text->valuestring), meta[i] };
        i++;
    }
    if (rc == 0)
        rc = retrieval_store_add(st, r->id, in, n, out, err, sizeof(err));
    if (rc == 0) {
        cJSON *data = cJSON_CreateArray();
        for (i = 0; i < n; i++)
            cJSON_AddItemToArray(data, doc_json(out[i].id, out[i].n_chunks, NULL, 0, 0));
        server__op_answer_json(o, list_json(data));
    } else {
        answer_rc(o, rc, "adding documents", err);
    }
    for (i = 0; meta != NULL && i < n; i++)
        free(meta[i]);
    free(meta);
    free(in);
    free(out);
}

static void
do_docs(struct op *o, struct vs_req *r, struct retrieval_stores *st)
{
    char what[160];
    snprintf(what, sizeof(what), "no vector store '%s'", r->id);
    if (r->kind == VS_DOC_DELETE) {
        int rc = retrieval_doc_delete(st, r->id, r->doc);
        if (rc == -ENOENT)
            snprintf(what, sizeof(what), "no document '%s' in vector store '%s'", r->doc, r->id);
        if (rc < 0)
            answer_rc(o, rc, what, "");
        else
            server__op_answer_json(o, server__deleted_json(r->doc, "vector_store.document.deleted"));
        return;
    }
    struct retrieval_doc_info *d = NULL;
    int n = 0, rc = retrieval_docs_list(st, r->id, &d, &n);
    if (rc < 0) {
        answer_rc(o, rc, what, "");
        return;
    }
    cJSON *data = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(data, doc_json(d[i].id, d[i].n_chunks, d[i].metadata,
                                            d[i].created_at, d[i].bytes));
        free(d[i].metadata);
    }
    free(d);
    server__op_answer_json(o, list_json(data));
}

static void
do_search(struct op *o, struct vs_req *r, struct retrieval_stores *st)
{
    struct retrieval_hit *h = NULL;
    int n = 0;
    char err[512] = "";
    server__metrics_search(r->s->metrics);
    int rc = retrieval_search(st, r->id, &r->q, &h, &n, err, sizeof(err));
    if (rc < 0) {
        answer_rc(o, rc, "searching", err);
        return;
    }
    server__op_answer_json(o, hits_json(r, h, n));
    retrieval_hits_free(h, n);
}

bool
server__store_visible(const struct who *who, const char *owner)
{
    return who->admin || owner[0] == '\0' || strcmp(owner, who->id) == 0;
}

int
server__store_access(struct server *s, const struct who *who, const char *id, bool write,
                     struct oai_err *e)
{
    char owner[RETRIEVAL_ID_MAX];
    if (retrieval_store_owner(s->stores, id, owner) < 0 || !server__store_visible(who, owner))
        return server__fail(e, -ENOENT, NULL, "not_found", "no vector store '%.64s'", id);
    if (write && !who->admin && strcmp(owner, who->id) != 0)
        return server__fail(e, -EPERM, NULL, "permission_denied", "the vector store '%.64s' "
                            "is shared by the admin: tenants may search it, not change it", id);
    return 0;
}

static void
vs_work(struct op *o, void *arg)
{
    struct vs_req *r = arg;
    struct retrieval_stores *st = r->s->stores;
    struct oai_err e;
    bool write = r->kind == VS_DELETE || r->kind == VS_ADD || r->kind == VS_DOC_DELETE;
    if (r->kind != VS_CREATE && r->kind != VS_LIST &&
        server__store_access(r->s, &r->who, r->id, write, &e) < 0) {
        server__op_answer_error(o, &e);
        return;
    }
    switch (r->kind) {
    case VS_ADD: do_add(o, r, st); break;
    case VS_DOCS: case VS_DOC_DELETE: do_docs(o, r, st); break;
    case VS_SEARCH: do_search(o, r, st); break;
    default: do_stores(o, r, st); break;
    }
}

/* ---- Checking the request (loop) -------------------------------------- */

#define VS_MAX_DOCS 1000

/* The path after /v1/vector_stores and the method, as a kind with ids; or 404 / 405. */
static int
route(const char *method, const char *rest, struct vs_req *r, struct oai_err *e)
{
    char part[3][RETRIEVAL_ID_MAX] = { "", "", "" };
    int n = 0;
    for (const char *p = rest; *p == '/' && n < 3; n++) {
        size_t len = strcspn(p + 1, "/");
        if (len == 0 || len >= RETRIEVAL_ID_MAX)
            return server__fail(e, -ENOENT, NULL, "not_found", "Invalid URL (%s /v1/vector_stores"
                                "%.200s)", method, rest);
        memcpy(part[n], p + 1, len);
        p += 1 + len;
        if (*p != '\0' && (*p != '/' || n == 2))
            n = 9;
    }
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool del = strcmp(method, "DELETE") == 0, docs = strcmp(part[1], "documents") == 0;
    snprintf(r->id, sizeof(r->id), "%s", part[0]);
    snprintf(r->doc, sizeof(r->doc), "%s", part[2]);
    int k = n == 0 ? (get ? VS_LIST : post ? VS_CREATE : -2)
            : n == 1 ? (get ? VS_GET : del ? VS_DELETE : -2)
            : n == 2 && docs ? (post ? VS_ADD : get ? VS_DOCS : -2)
            : n == 2 && strcmp(part[1], "search") == 0 ? (post ? VS_SEARCH : -2)
            : n == 3 && docs ? (del ? VS_DOC_DELETE : -2) : -1;
    if (k == -1)
        return server__fail(e, -ENOENT, NULL, "not_found", "Invalid URL (%s /v1/vector_stores%.200s)",
                            method, rest);
    if (k == -2)
        return server__fail(e, -EOPNOTSUPP, NULL, "method_not_allowed",
                            "%s is not allowed on /v1/vector_stores%.200s", method, rest);
    r->kind = (enum vs_kind)k;
    return 0;
}

static int
bad(struct oai_err *e, const char *param, const char *what)
{
    return server__fail(e, -EINVAL, param, "invalid_value", "%s: %s", param, what);
}

static int
check_create(const cJSON *root, struct vs_req *r, struct oai_err *e)
{
    const cJSON *name = cJSON_GetObjectItem(root, "name"), *meta = cJSON_GetObjectItem(root,
                                                                                     "metadata");
    const cJSON *cs = cJSON_GetObjectItem(root, "chunking_strategy");
    if (name && !cJSON_IsNull(name) && (!cJSON_IsString(name) || strlen(name->valuestring) > 256))
        return bad(e, "name", "a string of at most 256 bytes");
    if (meta && !cJSON_IsNull(meta) && !cJSON_IsObject(meta))
        return bad(e, "metadata", "an object");
    const cJSON *emb = cJSON_GetObjectItem(root, "embedder");
    if (emb && !cJSON_IsNull(emb) && !cJSON_IsString(emb))
        return bad(e, "embedder", "\"hash\", the served model's or the embedding model's id");
    const cJSON *tmpl = cJSON_GetObjectItem(root, "context_template");
    if (tmpl && !cJSON_IsNull(tmpl) && (!cJSON_IsString(tmpl) ||
                                        strlen(tmpl->valuestring) > RETRIEVAL_TEMPLATE_MAX ||
                                        !strstr(tmpl->valuestring, "{chunks}")))
        return bad(e, "context_template", "a string of at most 4096 bytes with {chunks} in it");
    const cJSON *type = cJSON_GetObjectItem(cs, "type"), *st = cJSON_GetObjectItem(cs, "static");
    if (cs == NULL || cJSON_IsNull(cs) || (cJSON_IsString(type) &&
                                           strcmp(type->valuestring, "auto") == 0))
        return 0;
    const cJSON *size = cJSON_GetObjectItem(st, "max_chunk_size_tokens");
    const cJSON *over = cJSON_GetObjectItem(st, "chunk_overlap_tokens");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "static") != 0 ||
        !cJSON_IsNumber(size) || !cJSON_IsNumber(over) || size->valueint < 1 ||
        size->valueint > 4096 || over->valueint < 0 || over->valueint >= size->valueint)
        return bad(e, "chunking_strategy", "{\"type\": \"auto\"} or {\"type\": \"static\", "
                   "\"static\": {\"max_chunk_size_tokens\": 1..4096, \"chunk_overlap_tokens\":"
                   " less than that}}");
    r->chunk_tokens = size->valueint;
    r->chunk_overlap = over->valueint;
    return 0;
}

static int
check_docs(const cJSON *root, struct oai_err *e)
{
    const cJSON *docs = cJSON_GetObjectItem(root, "documents"), *d;
    int n = cJSON_GetArraySize(docs);
    if (!cJSON_IsArray(docs) || n < 1 || n > VS_MAX_DOCS)
        return bad(e, "documents", "an array of 1 to 1000 {\"id\"?, \"text\", \"metadata\"?}");
    cJSON_ArrayForEach(d, docs) {
        const cJSON *text = cJSON_GetObjectItem(d, "text"), *id = cJSON_GetObjectItem(d, "id");
        const cJSON *m = cJSON_GetObjectItem(d, "metadata");
        if (!cJSON_IsObject(d) || !cJSON_IsString(text) || text->valuestring[0] == '\0')
            return bad(e, "documents", "each needs a non-empty string \"text\"");
        if ((id && !cJSON_IsNull(id) && !cJSON_IsString(id)) ||
            (m && !cJSON_IsNull(m) && !cJSON_IsObject(m)))
            return bad(e, "documents", "\"id\" is a string, \"metadata\" an object");
    }
    return 0;
}

static int
check_query(const cJSON *q, struct vs_req *r, struct oai_err *e)
{
    if (cJSON_IsString(q) && q->valuestring[0] != '\0') {
        r->q.text = q->valuestring;
        return 0;
    }
    int n = cJSON_GetArraySize(q), i = 0;
    if (!cJSON_IsArray(q) || n < 1 || n > RETRIEVAL_DIM_MAX)
        return bad(e, "query", "a non-empty string, or a vector (an array of numbers)");
    r->vector = malloc((size_t)n * sizeof(float));
    if (r->vector == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory");
    const cJSON *x;
    cJSON_ArrayForEach(x, q) {
        if (!cJSON_IsNumber(x))
            return bad(e, "query", "a vector holds numbers only");
        r->vector[i++] = (float)x->valuedouble;
    }
    r->q.vector = r->vector;
    r->q.dim = n;
    r->q.mode = RETRIEVAL_VECTOR;
    return 0;
}

static int
check_search(const cJSON *root, struct vs_req *r, struct oai_err *e)
{
    const cJSON *k = cJSON_GetObjectItem(root, "max_num_results");
    const cJSON *f = cJSON_GetObjectItem(root, "filters"), *mode = cJSON_GetObjectItem(root, "mode");
    const cJSON *th = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "ranking_options"),
                                          "score_threshold");
    r->q.k = 10;
    r->q.mode = RETRIEVAL_HYBRID;
    if (k && !cJSON_IsNull(k) && (!cJSON_IsNumber(k) || k->valueint < 1 || k->valueint > 50))
        return bad(e, "max_num_results", "an integer from 1 to 50");
    if (cJSON_IsNumber(k))
        r->q.k = k->valueint;
    if (th && !cJSON_IsNull(th) && (!cJSON_IsNumber(th) || th->valuedouble < 0 ||
                                    th->valuedouble > 1))
        return bad(e, "ranking_options.score_threshold", "a number from 0 to 1");
    r->q.threshold = cJSON_IsNumber(th) ? (float)th->valuedouble : 0;
    if (mode && !cJSON_IsNull(mode)) {
        const char *m = cJSON_IsString(mode) ? mode->valuestring : "";
        if (strcmp(m, "vector") && strcmp(m, "keyword") && strcmp(m, "hybrid"))
            return bad(e, "mode", "vector, keyword or hybrid");
        r->q.mode = m[0] == 'v' ? RETRIEVAL_VECTOR : m[0] == 'k' ? RETRIEVAL_KEYWORD
                                                               : RETRIEVAL_HYBRID;
    }
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsObject(f) || (r->filter = cJSON_PrintUnformatted(f)) == NULL)
            return bad(e, "filters", "a comparison or compound filter object");
        r->q.filter = r->filter;
    }
    int rc = check_query(cJSON_GetObjectItem(root, "query"), r, e);
    if (rc == 0 && r->q.vector != NULL && mode && !cJSON_IsNull(mode) &&
        r->q.mode != RETRIEVAL_VECTOR)
        return bad(e, "mode", "a query vector searches by vector only");
    if (rc == 0 && r->q.vector != NULL)
        r->q.mode = RETRIEVAL_VECTOR;
    return rc;
}

/* The checks of the method, path and body: 0 with r filled, or an error in e. */
static int
check_request(const char *method, const char *url, const char *body, size_t len,
              struct vs_req *r, struct oai_err *e)
{
    int rc = route(method, url + strlen("/v1/vector_stores"), r, e);
    bool has_body = r->kind == VS_CREATE || r->kind == VS_ADD || r->kind == VS_SEARCH;
    if (rc == 0 && has_body && (rc = server__parse_object(body, len, &r->root, e)) == 0)
        rc = r->kind == VS_CREATE ? check_create(r->root, r, e)
             : r->kind == VS_ADD   ? check_docs(r->root, e)
                                   : check_search(r->root, r, e);
    return rc;
}

int
server__vector_stores_check(struct server *s, const struct who *who, const char *method,
                            const char *url, const char *body, size_t len, struct oai_err *e)
{
    struct vs_req *r = server__xcalloc(1, sizeof(*r));
    r->s = s;
    r->who = *who;
    int rc = check_request(method, url, body, len, r, e);
    vs_free(r);
    return rc;
}

int
server__vector_stores_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                            const char *method, const char *url, const char *body, size_t len,
                            struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct vs_req *r = server__xcalloc(1, sizeof(*r));
    r->s = s;
    r->who = *who;
    int rc = check_request(method, url, body, len, r, e);
    if (rc < 0) {
        vs_free(r);
        return rc;
    }
    return server__op_call(s, con, vs_work, r, vs_free, out, e);
}

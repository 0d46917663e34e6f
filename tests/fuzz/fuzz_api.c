/*
 * fuzz_api.c - the bodies of every request that is not a generation, through
 * the checks the server runs on the loop before it queues any work: the input
 * is one line "METHOD URL" (or "METHOD URL tenant": sent with a tenant's key,
 * else the admin's), then the body. The URL routes by server/routes.c's table (as
 * the server routes) to server__op_check (POST /v1/adapters, DELETE /v1/adapters/NAME,
 * vLLM's load_lora_adapter and unload_lora_adapter),
 * server__embeddings_check, server__vector_stores_check,
 * server__tenants_check, server__experiments_check (and /v1/feedback), or
 * server__parse_request for the two generation routes; every body also goes
 * through server__parse_object.
 *
 * A body that passes goes on where the pool would take it with no socket
 * needed: a search runs on a small in-memory store (its filter and its
 * keyword query included), documents are chunked and embedded and their
 * metadata run through filters, hash embeddings are computed.
 *
 * The server is a struct server with what those checks read: the kjv-tiny
 * model and its tokenizer, an in-memory adapter registry with two adapters,
 * the BERT embedding model, tenants (with an admin key) and experiments in
 * in-memory SQLite. Failures must be a 4xx with a message and a valid error
 * object: a 500 would be a bug.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../retrieval/retrieval_int.h"
#include "../../server/server_int.h"
#include "fuzz.h"
#include "tokenizer.h"

static struct server srv;
static struct who admin = { 0, true, "" }, tenant;
static char store_id[RETRIEVAL_ID_MAX];
static struct vs_filter *filters[6];

static const char *const filter_texts[] = {
    "{\"type\":\"eq\",\"key\":\"book\",\"value\":\"genesis\"}",
    "{\"type\":\"in\",\"key\":\"chapter\",\"value\":[1,2,\"3\"]}",
    "{\"type\":\"gte\",\"key\":\"verse\",\"value\":2}",
    "{\"type\":\"nin\",\"key\":\"tags\",\"value\":[\"light\",true]}",
    "{\"type\":\"and\",\"filters\":[{\"type\":\"ne\",\"key\":\"book\",\"value\":\"exodus\"},"
    "{\"type\":\"or\",\"filters\":[{\"type\":\"lt\",\"key\":\"verse\",\"value\":3},"
    "{\"type\":\"eq\",\"key\":\"canon\",\"value\":true}]}]}",
    "{\"type\":\"lte\",\"key\":\"book\",\"value\":\"m\"}",
};

/* ---- The server's state ----------------------------------------------- */

static void
open_registry(void)
{
    static char lora_dir[1024];
    char path[1024], err[512] = "";
    fuzz_path(lora_dir, sizeof(lora_dir), "models/lora");
    const char *roots[] = { lora_dir };
    struct adapters_params p = { NULL, roots, 1, NULL, 64, 0 };
    fuzz_need(adapters_open(srv.model, &p, &srv.reg, err, sizeof(err)), "registry", err);
    fuzz_path(path, sizeof(path), "models/lora/kjv-tiny-lora-devil.gguf");
    fuzz_need(adapters_load(srv.reg, "devil", path, false, NULL, err, sizeof(err)), path, err);
    char key[ADAPTERS_KEY_MAX + 1];
    snprintf(key, sizeof(key), "%s/jargon", tenant.id);
    fuzz_path(path, sizeof(path), "models/lora/kjv-tiny-lora-jargon.gguf");
    fuzz_need(adapters_load(srv.reg, key, path, false, NULL, err, sizeof(err)), path, err);
}

static void
open_experiments(void)
{
    char err[256] = "";
    fuzz_need(server__experiments_open(":memory:", &srv.experiments, err, sizeof(err)),
              "experiments", err);
    struct exp_info x = { .n = 2, .sticky_user = true };
    snprintf(x.name, sizeof(x.name), "ab-shared");
    snprintf(x.variants[0].model, sizeof(x.variants[0].model), "%s", srv.model_id);
    snprintf(x.variants[1].model, sizeof(x.variants[1].model), "devil");
    x.variants[0].weight = x.variants[1].weight = 1;
    FUZZ_CHECK(server__experiment_put(srv.experiments, &x, true) == 0);
    snprintf(x.owner, sizeof(x.owner), "%s", tenant.id);
    snprintf(x.name, sizeof(x.name), "ab-own");
    snprintf(x.variants[1].model, sizeof(x.variants[1].model), "jargon");
    FUZZ_CHECK(server__experiment_put(srv.experiments, &x, true) == 0);
}

static void
open_stores(void)
{
    static const struct retrieval_doc docs[] = {
        { "d1", "In the beginning God created the heaven and the earth.", 55,
          "{\"book\":\"genesis\",\"chapter\":1,\"verse\":1,\"canon\":true}" },
        { "d2", "And God said, Let there be light: and there was light.", 55,
          "{\"book\":\"genesis\",\"chapter\":1,\"verse\":3,\"tags\":[\"light\"]}" },
        { "d3", "Now these are the names of the children of Israel.", 51,
          "{\"book\":\"exodus\",\"chapter\":\"1\",\"verse\":1}" },
    };
    char err[256] = "";
    struct retrieval_store_info info;
    struct retrieval_doc_added added[3];
    fuzz_need(retrieval_stores_open(NULL, srv.tok, srv.embedder, &srv.stores, err, sizeof(err)),
              "stores", err);
    fuzz_need(retrieval_store_create(srv.stores, "", "kjv", NULL, NULL, NULL, 16, 4, &info, err,
                                     sizeof(err)), "a store", err);
    snprintf(store_id, sizeof(store_id), "%s", info.id);
    retrieval_store_info_release(&info);
    fuzz_need(retrieval_store_add(srv.stores, store_id, docs, 3, added, err, sizeof(err)),
              "documents", err);
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        fuzz_need(retrieval__filter_parse(filter_texts[i], &filters[i], err, sizeof(err)),
                  filter_texts[i], err);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const struct server_config cfg = SERVER_CONFIG_INIT;
    char path[1024], err[256] = "";
    srv.cfg = &cfg;
    srv.model = fuzz_model();
    srv.tok = engine_model_tokenizer(srv.model);
    srv.n_ctx = 256;
    snprintf(srv.model_id, sizeof(srv.model_id), "kjv-tiny-q8_0");
    fuzz_path(path, sizeof(path), "models/embed/bert-tiny-random-f16.gguf");
    fuzz_need(engine_encoder_open(path, 1, &srv.encoder, err, sizeof(err)), path, err);
    snprintf(srv.encoder_id, sizeof(srv.encoder_id), "bert-tiny-random-f16");
    FUZZ_CHECK(retrieval_hash_new(384, &srv.embedder) == 0);
    fuzz_need(server__tenants_open(":memory:", "sk-admin", &srv.tenants, err, sizeof(err)),
              "tenants", err);
    struct tenant_limits lim = { 0, 0, 0 };
    struct tenant_info ti;
    FUZZ_CHECK(server__tenant_create(srv.tenants, "acme", &lim, &ti) == 0);
    tenant = (struct who){ ti.no, false, "" };
    snprintf(tenant.id, sizeof(tenant.id), "%s", ti.id);
    open_registry();
    open_experiments();
    open_stores();
    return 0;
}

/* ---- Checks of the answers -------------------------------------------- */

static void
check_error(int rc, const struct oai_err *e)
{
    int status = server__status_from_err(rc);
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "%d: %s (%s)\n", status, e->msg, e->param);
    FUZZ_CHECK(rc < 0 && e->err == rc && e->msg[0] != '\0');
    FUZZ_CHECK(status >= 400 && status < 500);
    char *json = server__error_json(e);
    cJSON *back = json ? cJSON_Parse(json) : NULL;
    FUZZ_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(back, "error")));
    cJSON_Delete(back);
    free(json);
}

/* ---- Past the checks: what the pool would do -------------------------- */

/* The search the checked body asks for, on the fixture store. */
static void
search(const cJSON *root)
{
    const cJSON *k = cJSON_GetObjectItem(root, "max_num_results");
    const cJSON *mode = cJSON_GetObjectItem(root, "mode");
    const cJSON *th = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "ranking_options"),
                                          "score_threshold");
    const cJSON *f = cJSON_GetObjectItem(root, "filters"), *q = cJSON_GetObjectItem(root, "query");
    struct retrieval_query rq = { .k = cJSON_IsNumber(k) ? k->valueint : 10,
                                  .mode = RETRIEVAL_HYBRID };
    rq.threshold = cJSON_IsNumber(th) ? (float)th->valuedouble : 0;
    if (cJSON_IsString(mode))
        rq.mode = mode->valuestring[0] == 'v' ? RETRIEVAL_VECTOR
                  : mode->valuestring[0] == 'k' ? RETRIEVAL_KEYWORD : RETRIEVAL_HYBRID;
    char *filter = cJSON_IsObject(f) ? cJSON_PrintUnformatted(f) : NULL;
    rq.filter = filter;
    float *vec = NULL;
    if (cJSON_IsString(q)) {
        rq.text = q->valuestring;
    } else {
        rq.dim = cJSON_GetArraySize(q);
        vec = malloc((size_t)rq.dim * sizeof(float));
        FUZZ_CHECK(vec != NULL);
        const cJSON *x;
        int i = 0;
        cJSON_ArrayForEach(x, q)
            vec[i++] = (float)x->valuedouble;
        rq.vector = vec;
        rq.mode = RETRIEVAL_VECTOR;
    }
    struct retrieval_hit *hits = NULL;
    int n = -1;
    char err[256] = "";
    int rc = retrieval_search(srv.stores, store_id, &rq, &hits, &n, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || (rc == -EINVAL && fuzz_one_line(err)));
    if (rc == 0) {
        FUZZ_CHECK(n >= 0 && n <= rq.k);
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(hits[i].text != NULL && hits[i].score >= rq.threshold &&
                       (i == 0 || hits[i].score <= hits[i - 1].score));
        retrieval_hits_free(hits, n);
    }
    /* The filter alone, against metadata that is not the store's. */
    struct vs_filter *vf = NULL;
    if (filter != NULL && retrieval__filter_parse(filter, &vf, err, sizeof(err)) == 0) {
        retrieval__filter_match(vf, "{}");
        retrieval__filter_match(vf, filter);
        retrieval__filter_free(vf);
    }
    free(filter);
    free(vec);
}

/* Documents as the pool adds them: chunked and embedded; their metadata filtered. */
static void
chunk_documents(const cJSON *root)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(root, "documents")) {
        const char *text = cJSON_GetObjectItem(d, "text")->valuestring;
        struct vs_chunk *chunks = NULL;
        int n = -1;
        int rc = retrieval__chunk(srv.tok, srv.embedder, text, strlen(text), 16, 4, &chunks, &n);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ);
        for (int i = 0; rc == 0 && i < n; i++)
            FUZZ_CHECK(chunks[i].text != NULL && chunks[i].len > 0 && chunks[i].vec != NULL);
        if (rc == 0)
            retrieval__chunks_free(chunks, n);
        const cJSON *m = cJSON_GetObjectItem(d, "metadata");
        char *meta = cJSON_IsObject(m) ? cJSON_PrintUnformatted(m) : NULL;
        for (size_t i = 0; meta != NULL && i < sizeof(filters) / sizeof(filters[0]); i++)
            retrieval__filter_match(filters[i], meta);
        free(meta);
    }
}

/* Hash embeddings of the checked body's texts. */
static void
embed(const cJSON *root)
{
    const cJSON *m = cJSON_GetObjectItem(root, "model"), *in = cJSON_GetObjectItem(root, "input");
    if (cJSON_IsString(m) && strcmp(m->valuestring, "hash") != 0)
        return;
    float v[384];
    int n_tok = 0;
    const cJSON *t = cJSON_IsArray(in) ? in->child : in;
    for (; t != NULL; t = cJSON_IsArray(in) ? t->next : NULL)
        if (cJSON_IsString(t))
            FUZZ_CHECK(retrieval_embed(srv.embedder, t->valuestring, strlen(t->valuestring), v,
                                       &n_tok) == 0);
}

/* ---- Routing, by server/http.c's table (server__route) --------------- */

static int
generate(enum oai_kind kind, const char *body, size_t len, struct oai_err *e)
{
    struct oai_request r;
    int rc = server__parse_request(kind, body, len, tokenizer_n_vocab(srv.tok), &r, e);
    server__request_release(&r);
    return rc;
}

/* The checks http.c runs on the body of url's route; 1: a route without a body. */
static int
route(const char *method, const char *url, const struct who *who, const char *body,
      size_t len, struct oai_err *e)
{
    char allow[32];
    switch (server__route(method, url, allow, sizeof(allow))) {
    case ROUTE_ADAPTER_LOAD:
        return server__op_check(&srv, who, OP_LOAD, NULL, body, len, e);
    case ROUTE_ADAPTER_DELETE:
        return server__op_check(&srv, who, OP_UNLOAD, url + strlen("/v1/adapters/"), body,
                                len, e);
    case ROUTE_VLLM_LOAD:
        return server__op_check(&srv, who, OP_VLLM_LOAD, NULL, body, len, e);
    case ROUTE_VLLM_UNLOAD:
        return server__op_check(&srv, who, OP_VLLM_UNLOAD, NULL, body, len, e);
    case ROUTE_EMBEDDINGS:
        return server__embeddings_check(&srv, body, len, e);
    case ROUTE_VECTOR_STORES:
        return server__vector_stores_check(&srv, who, method, url, body, len, e);
    case ROUTE_TENANTS:
        return server__tenants_check(&srv, who, method, url, body, len, e);
    case ROUTE_EXPERIMENTS:
        return server__experiments_check(&srv, who, method, url, body, len, e);
    case ROUTE_COMPLETIONS:
        return generate(OAI_COMPLETIONS, body, len, e);
    case ROUTE_CHAT:
        return generate(OAI_CHAT, body, len, e);
    default:
        return 1;
    }
}

/* After a body passed its route's checks. */
static void
go_on(const char *method, const char *url, cJSON *root)
{
    if (root == NULL || strcmp(method, "POST") != 0)
        return;
    size_t n = strlen(url);
    if (strncmp(url, "/v1/vector_stores/", 18) == 0 && n > 7 &&
        strcmp(url + n - 7, "/search") == 0)
        search(root);
    else if (strncmp(url, "/v1/vector_stores/", 18) == 0 && n > 10 &&
             strcmp(url + n - 10, "/documents") == 0)
        chunk_documents(root);
    else if (strcmp(url, "/v1/embeddings") == 0)
        embed(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL || nl - data > 512 || memchr(data, '\0', (size_t)(nl - data)) != NULL)
        return 0;
    char line[513], method[16] = "", url[513] = "", who_s[16] = "";
    memcpy(line, data, (size_t)(nl - data));
    line[nl - data] = '\0';
    if (sscanf(line, "%15s %512s %15s", method, url, who_s) < 2)
        return 0;
    const struct who *who = strcmp(who_s, "tenant") == 0 ? &tenant : &admin;
    size_t len = size - (size_t)(nl + 1 - data);
    char *body = fuzz_dup(nl + 1, len);

    struct oai_err e;
    memset(&e, 0, sizeof(e));
    cJSON *root = NULL;
    int rc = server__parse_object(body, len, &root, &e);
    FUZZ_CHECK(rc == 0 ? cJSON_IsObject(root) : root == NULL);
    if (rc < 0)
        check_error(rc, &e);
    memset(&e, 0, sizeof(e));
    int routed = route(method, url, who, body, len, &e);
    if (routed < 0)
        check_error(routed, &e);
    else if (routed == 0)
        go_on(method, url, root);
    cJSON_Delete(root);
    free(body);
    return 0;
}

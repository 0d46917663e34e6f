/*
 * manage.c - LoRA adapters over HTTP: the /v1/models cards, GET, POST and
 * DELETE /v1/adapters, vLLM's load_lora_adapter and unload_lora_adapter, and
 * the adapter figures in /health.
 *
 * Listing reads a snapshot of the registry (adapters_list does not block), so
 * it runs on the loop. A change reads files and writes SQLite, so it runs on
 * the libuv pool: the connection is suspended, the work fills in the op's
 * answer, and the after-work callback resumes the connection, which sends it.
 * If the request is over by then (client gone, shutdown), the after-work
 * callback frees the op instead: an op has one owner at a time, the
 * connection while no work runs, the work while it does. Other slow answers
 * (embeddings) run the same way through server__op_call with a work
 * function of their own.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>

#include "server_int.h"

struct op {
    uv_work_t work;
    struct server *s;
    struct MHD_Connection *con;     /* NULL once the request is over */
    struct op *prev, *next;         /* s->ops while the connection is suspended */
    enum op_kind kind;
    bool running, listed, pin, inplace;
    char name[ADAPTERS_KEY_MAX + 1];  /* the registry key */
    const char *shown;              /* the name the client knows it by (in name) */
    char *path;                     /* as the client gave it */
    int status;                     /* the answer */
    const char *ctype;
    char *body;
    server_op_fn fn;                /* server__op_call's work, or NULL: an adapter change */
    void *arg;
    void (*arg_free)(void *arg);
};

/* ---- JSON of adapters ------------------------------------------------- */

static cJSON *
targets_json(unsigned targets)
{
    cJSON *a = cJSON_CreateArray();
    for (int t = 0; t < ENGINE_LORA_N_TARGETS; t++)
        if (targets & (1u << t))
            cJSON_AddItemToArray(a, cJSON_CreateString(
                engine_lora_target_name((enum engine_lora_target)t)));
    return a;
}

/* ---- Whose adapters ---------------------------------------------------- */

void
server__adapter_key(const struct server *s, const struct who *who, const char *name, bool own,
                    char *key, size_t len)
{
    if (!who->admin && strchr(name, '/') != NULL) {
        snprintf(key, len, "%s", ""); /* another owner's key: no such adapter */
        return;
    }
    if (!who->admin) {
        snprintf(key, len, "%s/%s", who->id, name);
        if (own || adapters_has(s->reg, key))
            return;
    }
    snprintf(key, len, "%s", name);
}

const char *
server__adapter_shown(const struct who *who, const char *key)
{
    const char *slash = strchr(key, '/');
    if (slash == NULL || who->admin)
        return key;
    size_t n = strlen(who->id);
    bool own = (size_t)(slash - key) == n && strncmp(key, who->id, n) == 0;
    return own ? slash + 1 : NULL;
}

static cJSON *
entry_json(const struct adapters_entry *e, const char *shown)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", shown);
    cJSON_AddStringToObject(o, "object", "adapter");
    cJSON_AddNumberToObject(o, "version", (double)e->version);
    cJSON_AddStringToObject(o, "path", e->path);
    cJSON_AddStringToObject(o, "format", e->info.format);
    cJSON_AddStringToObject(o, "sha256", e->info.sha256);
    cJSON_AddNumberToObject(o, "rank", e->info.rank);
    cJSON_AddNumberToObject(o, "alpha", e->info.alpha);
    cJSON_AddBoolToObject(o, "rslora", e->info.rslora);
    cJSON_AddItemToObject(o, "targets", targets_json(e->info.targets));
    cJSON_AddStringToObject(o, "status", adapters_status_name(e->status));
    if (e->error[0] != '\0')
        cJSON_AddStringToObject(o, "error", e->error);
    cJSON_AddBoolToObject(o, "pinned", e->pinned);
    cJSON_AddNumberToObject(o, "bytes", (double)e->bytes);
    cJSON_AddNumberToObject(o, "file_bytes", (double)e->info.file_bytes);
    cJSON_AddNumberToObject(o, "users", e->users);
    cJSON_AddNumberToObject(o, "created_at", (double)e->created_at);
    cJSON_AddNumberToObject(o, "updated_at", (double)e->updated_at);
    cJSON_AddNumberToObject(o, "last_used_at", (double)e->last_used_at);
    return o;
}

/* The entry of key in a fresh snapshot, as JSON (named shown); NULL if it is not registered. */
static cJSON *
find_entry(struct adapters *reg, const char *key, const char *shown)
{
    struct adapters_entry *list = NULL;
    int n = 0;
    cJSON *o = NULL;
    if (adapters_list(reg, &list, &n) < 0)
        return NULL;
    for (int i = 0; i < n && o == NULL; i++)
        if (strcmp(list[i].name, key) == 0)
            o = entry_json(&list[i], shown);
    adapters_list_free(list);
    return o;
}

cJSON *
server__adapter_json(struct server *s, const struct who *who, const char *name)
{
    char key[ADAPTERS_KEY_MAX + 1];
    server__adapter_key(s, who, name, false, key, sizeof(key));
    const char *shown = server__adapter_shown(who, key);
    return shown ? find_entry(s->reg, key, shown) : NULL;
}

char *
server__adapters_json(struct server *s, const struct who *who)
{
    struct adapters_entry *list = NULL;
    int n = 0;
    if (adapters_list(s->reg, &list, &n) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (int i = 0; i < n; i++) {
        const char *shown = server__adapter_shown(who, list[i].name);
        if (shown != NULL)
            cJSON_AddItemToArray(data, entry_json(&list[i], shown));
    }
    adapters_list_free(list);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return body;
}

/* A /v1/models card as OpenAI and vLLM write it (root, parent: NULL gives null). */
static cJSON *
card(const char *id, long long created, const char *root, const char *parent, int max_len)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "loraserve");
    if (root != NULL)
        cJSON_AddStringToObject(m, "root", root);
    else
        cJSON_AddNullToObject(m, "root");
    if (parent != NULL)
        cJSON_AddStringToObject(m, "parent", parent);
    else
        cJSON_AddNullToObject(m, "parent");
    cJSON_AddNumberToObject(m, "max_model_len", max_len);
    return m;
}

static cJSON *
base_card(const struct server *s)
{
    return card(s->model_id, s->started, s->cfg->model_path, NULL, s->n_ctx);
}

/* An adapter as vLLM lists it: parent is the base model, root its path. */
static cJSON *
adapter_card(const struct server *s, const struct adapters_entry *e, const char *shown)
{
    return card(shown, e->created_at, e->path, s->model_id, s->n_ctx);
}

/* The --embedding-model, for /v1/embeddings only. */
static cJSON *
encoder_card(const struct server *s)
{
    cJSON *m = card(s->encoder_id, s->started, s->cfg->embedding_model, NULL,
                    engine_encoder_n_ctx(s->encoder));
    cJSON_AddNumberToObject(m, "dimensions", engine_encoder_dim(s->encoder));
    return m;
}

/* An experiment: requests naming it go to one of its variants. */
static cJSON *
experiment_card(const struct server *s, const struct exp_info *x)
{
    cJSON *m = card(x->name, x->created_at, NULL, s->model_id, s->n_ctx);
    cJSON *v = cJSON_AddArrayToObject(m, "experiment_variants");
    for (int i = 0; i < x->n; i++)
        cJSON_AddItemToArray(v, cJSON_CreateString(x->variants[i].model));
    return m;
}

static void
add_experiments(struct server *s, const struct who *who, cJSON *a)
{
    struct exp_info *all = NULL;
    int n = 0;
    if (server__experiment_list(s->experiments, who, &all, &n) < 0)
        return;
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, experiment_card(s, &all[i]));
    free(all);
}

cJSON *
server__models_json(struct server *s, const struct who *who)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, base_card(s));
    if (s->encoder != NULL)
        cJSON_AddItemToArray(a, encoder_card(s));
    add_experiments(s, who, a);
    struct adapters_entry *list = NULL;
    int n = 0;
    if (adapters_list(s->reg, &list, &n) < 0)
        return a;
    for (int i = 0; i < n; i++) {
        const char *shown = server__adapter_shown(who, list[i].name);
        if (shown != NULL)
            cJSON_AddItemToArray(a, adapter_card(s, &list[i], shown));
    }
    adapters_list_free(list);
    return a;
}

cJSON *
server__model_json(struct server *s, const struct who *who, const char *id)
{
    if (strcmp(id, s->model_id) == 0)
        return base_card(s);
    if (server__is_encoder(s, id))
        return encoder_card(s);
    struct adapters_entry *list = NULL;
    int n = 0;
    cJSON *m = NULL;
    char key[ADAPTERS_KEY_MAX + 1];
    server__adapter_key(s, who, id, false, key, sizeof(key));
    const char *shown = server__adapter_shown(who, key);
    if (shown == NULL || adapters_list(s->reg, &list, &n) < 0)
        return NULL;
    for (int i = 0; i < n && m == NULL; i++)
        if (strcmp(list[i].name, key) == 0)
            m = adapter_card(s, &list[i], shown);
    adapters_list_free(list);
    return m;
}

void
server__adapters_count(struct server *s, int *registered, int *loaded)
{
    struct adapters_entry *list = NULL;
    *registered = *loaded = 0;
    if (adapters_list(s->reg, &list, registered) == 0)
        for (int i = 0; i < *registered; i++)
            *loaded += list[i].status == ADAPTERS_LOADED;
    adapters_list_free(list);
}

cJSON *
server__adapters_health(struct server *s)
{
    int n = 0, loaded = 0;
    server__adapters_count(s, &n, &loaded);
    uint64_t resident = 0, budget = 0, live = 0, live_bytes = 0;
    adapters_memory(s->reg, &resident, &budget);
    engine_lora_live(&live, &live_bytes);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "registered", n);
    cJSON_AddNumberToObject(o, "loaded", loaded);
    cJSON_AddNumberToObject(o, "resident_bytes", (double)resident);
    cJSON_AddNumberToObject(o, "max_memory", (double)budget);
    /* Every version alive, replaced ones that requests still hold included. */
    cJSON_AddNumberToObject(o, "live", (double)live);
    cJSON_AddNumberToObject(o, "live_bytes", (double)live_bytes);
    return o;
}

/* ---- Giving freed memory back ---------------------------------------- */

/*
 * An adapter version is many small matrices; glibc keeps their pages once
 * they are freed (in the middle of a heap, or in another thread's arena), so
 * without this the resident size would stay at its peak after a burst of
 * replacements.
 */
static void
trim_work(uv_work_t *w)
{
    (void)w;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void
trim_done(uv_work_t *w, int status)
{
    struct server *s = w->data;
    (void)status;
    s->trim_running = false;
}

void
server__adapters_tick(uv_timer_t *t)
{
    struct server *s = t->data;
    if (s->trim_running || (s->churn == s->trim_churn && !s->trim_again))
        return;
    /* Once more on the next tick: the last ref may drop on the scheduler after the job's. */
    s->trim_again = s->churn != s->trim_churn;
    s->trim_churn = s->churn;
    s->trim_work.data = s;
    s->trim_running = uv_queue_work(&s->loop, &s->trim_work, trim_work, trim_done) == 0;
}

/* ---- Answers of changes (pool thread: they touch only the op) --------- */

static void
answer(struct op *o, int status, const char *ctype, char *body)
{
    o->status = status;
    o->ctype = ctype;
    o->body = body;
}

static void
answer_error(struct op *o, const struct oai_err *e)
{
    answer(o, server__status_from_err(e->err), "application/json", server__error_json(e));
}

void
server__op_answer(struct op *o, int status, const char *ctype, char *body)
{
    answer(o, status, ctype, body);
}

void
server__op_answer_error(struct op *o, const struct oai_err *e)
{
    answer_error(o, e);
}

void
server__op_answer_json(struct op *o, cJSON *j)
{
    char *body = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (body != NULL) {
        answer(o, 200, "application/json", body);
        return;
    }
    struct oai_err e;
    server__fail(&e, -ENOMEM, NULL, NULL, "out of memory for the answer");
    answer_error(o, &e);
}

cJSON *
server__deleted_json(const char *id, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddBoolToObject(o, "deleted", true);
    return o;
}

/* vLLM answers its changes with a line of plain text. */
static void
answer_text(struct op *o, const char *what)
{
    char *body = malloc(ADAPTERS_NAME_MAX + 64);
    if (body != NULL)
        snprintf(body, ADAPTERS_NAME_MAX + 64, "Success: LoRA adapter '%s' %s successfully.",
                 o->shown, what);
    answer(o, 200, "text/plain; charset=utf-8", body);
}

/* A load that failed: the loader's line, with the status of DESIGN.md's table. */
static void
load_failed(struct op *o, int rc, const char *msg)
{
    struct oai_err e;
    if (rc == -EACCES)      /* the same words whether or not the file exists */
        server__fail(&e, -EINVAL, "path", "path_not_allowed", "%.200s: not inside the "
                     "adapter roots (--adapter-dir and --adapter paths)", o->path);
    else if (rc == -ENOENT)
        server__fail(&e, -EINVAL, "path", "file_not_found", "%s", msg);
    else if (rc == -ENOMEM)
        server__fail(&e, -ENOSPC, NULL, "adapter_memory_full", "%s", msg);
    else if (rc == -EIO)
        server__fail(&e, -EIO, NULL, NULL, "%s", msg);
    else
        server__fail(&e, -EINVAL, "path", "invalid_adapter", "%s", msg);
    answer_error(o, &e);
}

static void
unload_failed(struct op *o, int rc, const char *msg)
{
    struct oai_err e;
    if (rc == -ENOENT && o->kind == OP_VLLM_UNLOAD)
        server__fail(&e, rc, "lora_name", "adapter_not_found",
                     "The lora adapter '%s' cannot be found.", o->shown);
    else if (rc == -ENOENT)
        server__fail(&e, rc, "name", "adapter_not_found", "the adapter '%s' does not exist",
                     o->shown);
    else
        server__fail(&e, rc == -ENOMEM ? rc : -EIO, NULL, NULL, "%s", msg);
    answer_error(o, &e);
}

static void
op_work(uv_work_t *w)
{
    struct op *o = w->data;
    if (o->fn != NULL) {
        o->fn(o, o->arg);
        return;
    }
    struct adapters *reg = o->s->reg;
    char msg[512] = "";
    if (o->kind == OP_LOAD || o->kind == OP_VLLM_LOAD) {
        int rc = adapters_load(reg, o->name, o->path, o->pin, NULL, msg, sizeof(msg));
        if (rc < 0)
            load_failed(o, rc, msg);
        else if (o->kind == OP_VLLM_LOAD)
            answer_text(o, "added");
        else
            server__op_answer_json(o, find_entry(reg, o->name, o->shown));
        return;
    }
    int rc = adapters_unload(reg, o->name, msg, sizeof(msg));
    if (rc < 0) {
        unload_failed(o, rc, msg);
    } else if (o->kind == OP_VLLM_UNLOAD) {
        answer_text(o, "removed");
    } else {
        server__op_answer_json(o, server__deleted_json(o->shown, "adapter"));
    }
}

/* ---- Lifetime of a change (loop thread) ------------------------------- */

static void
op_free(struct op *o)
{
    if (o->arg_free != NULL)
        o->arg_free(o->arg);
    free(o->path);
    free(o->body);
    free(o);
}

static void
unlist(struct op *o)
{
    if (!o->listed)
        return;
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        o->s->ops = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    o->listed = false;
}

static void
resume(struct op *o)
{
    if (!o->listed)
        return;
    unlist(o);
    MHD_resume_connection(o->con);
}

static void
op_done(uv_work_t *w, int status)
{
    struct op *o = w->data;
    o->running = false;
    o->s->churn++;
    if (status < 0 && o->body == NULL) {
        struct oai_err e;
        server__fail(&e, -ECANCELED, NULL, "shutting_down", "the server is shutting down");
        answer_error(o, &e);
    }
    if (o->con == NULL) {
        unlist(o);
        op_free(o);
        return;
    }
    resume(o);
    server__http_kick(o->s);
}

void
server__op_detach(struct op *o)
{
    unlist(o);
    o->con = NULL;
    if (!o->running)
        op_free(o);
}

void
server__ops_resume_all(struct server *s)
{
    while (s->ops != NULL)
        resume(s->ops);
}

char *
server__op_reply(struct op *o, int *status, const char **ctype)
{
    char *body = o->body;
    o->body = NULL;
    *status = o->status;
    *ctype = o->ctype;
    if (body == NULL) {     /* out of memory while answering */
        struct oai_err e;
        server__fail(&e, -ENOMEM, NULL, NULL, "out of memory for the answer");
        *status = 500;
        *ctype = "application/json";
        body = server__error_json(&e);
    }
    return body;
}

/* ---- Starting a change ------------------------------------------------ */

/* A string field: 1 if present (non-empty), 0 if absent, -EINVAL if of another type. */
static int
str_field(const cJSON *root, const char *key, const char **out, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return server__fail(e, -EINVAL, key, "invalid_type", "%s: expected a string", key);
    *out = v->valuestring[0] ? v->valuestring : NULL;
    return *out != NULL;
}

static int
bool_field(const cJSON *root, const char *key, bool *out, struct oai_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return server__fail(e, -EINVAL, key, "invalid_type", "%s: expected a boolean", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

int
server__parse_object(const char *body, size_t len, cJSON **out, struct oai_err *e)
{
    *out = NULL;
    if (!server__utf8_valid(body, len))
        return server__fail(e, -EILSEQ, NULL, "invalid_encoding",
                            "the request body is not valid UTF-8");
    *out = cJSON_ParseWithLength(body, len);
    if (*out == NULL)
        return server__fail(e, -EBADMSG, NULL, "invalid_json",
                            "the request body is not valid JSON");
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return server__fail(e, -EINVAL, NULL, "invalid_json",
                            "the request body must be a JSON object");
    }
    return 0;
}

/* vLLM refuses a name it has unless load_inplace is set; we only replace when asked, too. */
static int
check_vllm_load(struct server *s, struct op *o, struct oai_err *e)
{
    if (o->inplace || !adapters_has(s->reg, o->name))
        return 0;
    return server__fail(e, -EINVAL, "lora_name", "adapter_exists",
                        "The lora adapter '%s' has already been loaded. If you want to load "
                        "the adapter in place, set 'load_inplace' to True.", o->shown);
}

/* Sets o's key and shown name for name as who owns it. */
static void
set_name(struct server *s, const struct who *who, const char *name, struct op *o)
{
    server__adapter_key(s, who, name, true, o->name, sizeof(o->name));
    o->shown = server__adapter_shown(who, o->name);
}

static bool
name_ok(const struct who *who, const char *name)
{
    return who->admin ? adapters_key_valid(name) : adapters_name_valid(name);
}

static int
parse_load(struct server *s, const struct who *who, const cJSON *root, struct op *o,
           struct oai_err *e)
{
    bool vllm = o->kind == OP_VLLM_LOAD;
    const char *nkey = vllm ? "lora_name" : "name", *pkey = vllm ? "lora_path" : "path";
    const char *name = NULL, *path = NULL;
    int rc = 0;
    if ((rc = str_field(root, nkey, &name, e)) < 0 || (rc = str_field(root, pkey, &path, e)) < 0 ||
        (rc = bool_field(root, vllm ? "load_inplace" : "pin", vllm ? &o->inplace : &o->pin,
                         e)) < 0)
        return rc;
    if (vllm && (name == NULL || path == NULL))
        return server__fail(e, -EINVAL, name ? pkey : nkey, "missing_required_parameter",
                            "Both 'lora_name' and 'lora_path' must be provided.");
    if (name == NULL || path == NULL)
        return server__fail(e, -EINVAL, name ? pkey : nkey, "missing_required_parameter",
                            "%s: required", name ? pkey : nkey);
    if (!name_ok(who, name))
        return server__fail(e, -EINVAL, nkey, "invalid_value", "%s: \"%.64s\" is not a valid "
                            "adapter name (1 to %d of A-Z a-z 0-9 . _ : -, not starting with "
                            "'.')", nkey, name, ADAPTERS_NAME_MAX);
    if (strcmp(name, s->model_id) == 0 || server__is_encoder(s, name))
        return server__fail(e, -EINVAL, nkey, "invalid_value", "%s: '%s' is the %s model's id",
                            nkey, name, strcmp(name, s->model_id) == 0 ? "base" : "embedding");
    set_name(s, who, name, o);
    o->path = strdup(path);
    if (o->path == NULL)
        return server__fail(e, -ENOMEM, NULL, NULL, "out of memory");
    return vllm ? check_vllm_load(s, o, e) : 0;
}

static int
parse_unload(struct server *s, const struct who *who, const cJSON *root, const char *url_name,
             struct op *o, struct oai_err *e)
{
    const char *name = url_name;
    int rc = 0;
    if (o->kind == OP_VLLM_UNLOAD && (rc = str_field(root, "lora_name", &name, e)) <= 0)
        return rc < 0 ? rc : server__fail(e, -EINVAL, "lora_name",
                                          "missing_required_parameter",
                                          "lora_name: required");
    if (!name_ok(who, name))
        return server__fail(e, -ENOENT, o->kind == OP_VLLM_UNLOAD ? "lora_name" : "name",
                            "adapter_not_found", "the adapter '%.64s' does not exist", name);
    set_name(s, who, name, o);
    return 0;
}

/* The checks of a change of o->kind: 0 with o's name and path set, or an error in e. */
static int
parse_op(struct server *s, const struct who *who, const char *url_name, const char *body,
         size_t len, struct op *o, struct oai_err *e)
{
    cJSON *root = NULL;
    int rc = o->kind == OP_UNLOAD ? 0 : server__parse_object(body, len, &root, e);
    if (rc == 0 && (o->kind == OP_LOAD || o->kind == OP_VLLM_LOAD))
        rc = parse_load(s, who, root, o, e);
    else if (rc == 0)
        rc = parse_unload(s, who, root, url_name, o, e);
    cJSON_Delete(root);
    return rc;
}

static int queue(struct server *s, struct op *o, struct op **out, struct oai_err *e);

int
server__op_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                 enum op_kind kind, const char *url_name, const char *body, size_t len,
                 struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct op *o = server__xcalloc(1, sizeof(*o));
    o->s = s;
    o->con = con;
    o->kind = kind;
    int rc = parse_op(s, who, url_name, body, len, o, e);
    return rc < 0 ? (op_free(o), rc) : queue(s, o, out, e);
}

int
server__op_check(struct server *s, const struct who *who, enum op_kind kind,
                 const char *url_name, const char *body, size_t len, struct oai_err *e)
{
    struct op *o = server__xcalloc(1, sizeof(*o));
    o->s = s;
    o->kind = kind;
    int rc = parse_op(s, who, url_name, body, len, o, e);
    op_free(o);
    return rc;
}

int
server__op_call(struct server *s, struct MHD_Connection *con, server_op_fn fn, void *arg,
                void (*arg_free)(void *arg), struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct op *o = server__xcalloc(1, sizeof(*o));
    o->s = s;
    o->con = con;
    o->fn = fn;
    o->arg = arg;
    o->arg_free = arg_free;
    return queue(s, o, out, e);
}

/* Queues o's work and suspends its connection: 0 with *out, or an error (o freed). */
static int
queue(struct server *s, struct op *o, struct op **out, struct oai_err *e)
{
    o->work.data = o;
    if (uv_queue_work(&s->loop, &o->work, op_work, op_done) < 0) {
        op_free(o);
        return server__fail(e, -ENOMEM, NULL, NULL, "cannot queue the work");
    }
    o->running = true;
    o->listed = true;
    o->next = s->ops;
    if (s->ops != NULL)
        s->ops->prev = o;
    s->ops = o;
    MHD_suspend_connection(o->con);
    *out = o;
    return 0;
}

/*
 * experiments_api.c - the experiments API (experiments.c) and feedback.
 *
 *   POST   /v1/experiments          {name, variants: [{model, weight}], sticky: "user"|"none"}
 *   GET    /v1/experiments          the caller's and the shared ones
 *   GET    /v1/experiments/{name}   with each variant's figures and the comparisons
 *   PATCH  /v1/experiments/{name}   {variants}: new weights (or models) at once
 *   DELETE /v1/experiments/{name}   with its records
 *   POST   /v1/feedback             {id: a completion's id, score: 0..1}
 *
 * An experiment is its creator's: a tenant's are its own, the admin's are
 * shared (tenants route by them and read them, not change them: 403).
 * Another tenant's experiment or completion is 404. A variant's model is
 * the base model's id or an adapter its owner has. GET of one compares each
 * variant's feedback with the first variant's (the control): Welch's t-test,
 * two-sided p-value and the 95% confidence interval of the difference.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

enum xkind { X_CREATE, X_LIST, X_GET, X_PATCH, X_DELETE, X_FEEDBACK };

struct xreq {
    struct server *s;
    struct who who;
    enum xkind kind;
    struct exp_info x;              /* create, patch: the new state */
    char id[96];                    /* feedback: the completion's id */
    double score;
};

/* ---- JSON out (pool) --------------------------------------------------- */

static cJSON *
mean_p95(double mean, double p95)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean", mean);
    cJSON_AddNumberToObject(o, "p95", p95);
    return o;
}

static cJSON *
stats_json(const struct exp_stats *st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests", (double)st->requests);
    cJSON_AddNumberToObject(o, "errors", (double)st->errors);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)st->tokens);
    cJSON_AddItemToObject(o, "latency", mean_p95(st->latency_mean, st->latency_p95));
    cJSON_AddItemToObject(o, "time_to_first_token", mean_p95(st->ttft_mean, st->ttft_p95));
    cJSON *f = cJSON_AddObjectToObject(o, "feedback");
    cJSON_AddNumberToObject(f, "count", (double)st->fb_n);
    if (st->fb_n > 0)
        cJSON_AddNumberToObject(f, "mean", st->fb_mean);
    else
        cJSON_AddNullToObject(f, "mean");
    return o;
}

static cJSON *
exp_json(const struct exp_info *x, const struct who *who, const struct exp_stats *st)
{
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "id", x->name);
    cJSON_AddStringToObject(o, "object", "experiment");
    cJSON_AddStringToObject(o, "name", x->name);
    cJSON_AddBoolToObject(o, "shared", x->owner[0] == '\0');
    if (who->admin)
        cJSON_AddStringToObject(o, "owner", x->owner);
    for (int i = 0; i < x->n; i++) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "model", x->variants[i].model);
        cJSON_AddNumberToObject(v, "weight", x->variants[i].weight);
        if (st != NULL)
            cJSON_AddItemToObject(v, "stats", stats_json(&st[i]));
        cJSON_AddItemToArray(a, v);
    }
    cJSON_AddItemToObject(o, "variants", a);
    cJSON_AddStringToObject(o, "sticky", x->sticky_user ? "user" : "none");
    cJSON_AddNumberToObject(o, "created_at", (double)x->created_at);
    cJSON_AddNumberToObject(o, "updated_at", (double)x->updated_at);
    return o;
}

/* Variant i's feedback against the control's (variant 0). */
static cJSON *
comparison_json(const struct exp_info *x, const struct exp_stats *st, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "metric", "feedback");
    cJSON_AddStringToObject(o, "control", x->variants[0].model);
    cJSON_AddStringToObject(o, "variant", x->variants[i].model);
    const struct exp_stats *a = &st[0], *b = &st[i];
    double va = a->fb_n > 1 ? a->fb_m2 / (double)(a->fb_n - 1) : 0;
    double vb = b->fb_n > 1 ? b->fb_m2 / (double)(b->fb_n - 1) : 0;
    struct stats_welch w;
    int rc = server__welch(a->fb_mean, va, a->fb_n, b->fb_mean, vb, b->fb_n, 0.95, &w);
    if (rc < 0) {
        cJSON_AddNullToObject(o, "difference");
        cJSON_AddNullToObject(o, "p_value");
        cJSON_AddNullToObject(o, "confidence_interval");
        cJSON_AddStringToObject(o, "note", "needs at least 2 scores per variant, not all equal");
        return o;
    }
    cJSON_AddNumberToObject(o, "difference", w.diff);
    cJSON_AddNumberToObject(o, "p_value", w.p);
    cJSON *ci = cJSON_AddArrayToObject(o, "confidence_interval");
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(w.lo));
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(w.hi));
    cJSON_AddNumberToObject(o, "confidence", 0.95);
    cJSON_AddNumberToObject(o, "t", w.t);
    cJSON_AddNumberToObject(o, "df", w.df);
    cJSON_AddStringToObject(o, "test", "welch_t_two_sided");
    return o;
}

static void
answer_rc(struct op *o, const struct xreq *r, int rc)
{
    struct oai_err e;
    if (rc == -ENOENT && r->kind == X_FEEDBACK)
        server__fail(&e, rc, "id", "not_found", "no request of an experiment has the id "
                     "'%.80s'", r->id);
    else if (rc == -ENOENT)
        server__fail(&e, rc, NULL, "experiment_not_found", "the experiment '%s' does not "
                     "exist", r->x.name);
    else if (rc == -EEXIST)
        server__fail(&e, rc, "name", "experiment_exists", "the experiment '%s' exists; PATCH "
                     "it to change its variants", r->x.name);
    else
        server__fail(&e, rc == -ENOMEM ? rc : -EIO, NULL, NULL, "the experiments' database "
                     "failed: %s", strerror(-rc));
    server__op_answer_error(o, &e);
}

static void
get_work(struct op *o, struct xreq *r)
{
    struct exp_stats st[EXP_MAX_VARIANTS];
    struct exp_info x;
    int rc = server__experiment_get(r->s->experiments, &r->who, r->x.name, &x);
    if (rc == 0)
        rc = server__experiment_stats(r->s->experiments, &x, st);
    if (rc < 0) {
        answer_rc(o, r, rc);
        return;
    }
    cJSON *j = exp_json(&x, &r->who, st), *cmp = cJSON_CreateArray();
    for (int i = 1; i < x.n; i++)
        cJSON_AddItemToArray(cmp, comparison_json(&x, st, i));
    cJSON_AddItemToObject(j, "comparisons", cmp);
    server__op_answer_json(o, j);
}

static void
list_work(struct op *o, struct xreq *r)
{
    struct exp_info *all = NULL;
    int n = 0, rc = server__experiment_list(r->s->experiments, &r->who, &all, &n);
    if (rc < 0) {
        answer_rc(o, r, rc);
        return;
    }
    cJSON *j = cJSON_CreateObject(), *data = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "object", "list");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(data, exp_json(&all[i], &r->who, NULL));
    cJSON_AddItemToObject(j, "data", data);
    free(all);
    server__op_answer_json(o, j);
}

static void
feedback_work(struct op *o, struct xreq *r)
{
    struct exp_pick p;
    int rc = server__experiment_feedback(r->s->experiments, &r->who, r->id, r->score, &p);
    if (rc < 0) {
        answer_rc(o, r, rc);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", r->id);
    cJSON_AddStringToObject(j, "object", "feedback");
    cJSON_AddNumberToObject(j, "score", r->score);
    cJSON_AddStringToObject(j, "experiment", p.name);
    cJSON_AddStringToObject(j, "variant", p.variant);
    server__op_answer_json(o, j);
}

static void
x_work(struct op *o, void *arg)
{
    struct xreq *r = arg;
    struct experiments *X = r->s->experiments;
    int rc = 0;
    switch (r->kind) {
    case X_GET: get_work(o, r); return;
    case X_LIST: list_work(o, r); return;
    case X_FEEDBACK: feedback_work(o, r); return;
    case X_CREATE: rc = server__experiment_put(X, &r->x, true); break;
    case X_PATCH: rc = server__experiment_put(X, &r->x, false); break;
    case X_DELETE: rc = server__experiment_delete(X, r->x.owner, r->x.name); break;
    }
    if (rc < 0) {
        answer_rc(o, r, rc);
    } else if (r->kind == X_DELETE) {
        server__op_answer_json(o, server__deleted_json(r->x.name, "experiment.deleted"));
    } else {
        server__op_answer_json(o, exp_json(&r->x, &r->who, NULL));
    }
}

/* ---- Checking the request (loop) ------------------------------------- */

/* A variant's model: the base model, or an adapter of the experiment's owner. */
static int
check_model(struct server *s, const struct who *who, const char *model, struct oai_err *e)
{
    char key[ADAPTERS_KEY_MAX + 1];
    if (strcmp(model, s->model_id) == 0)
        return 0;
    server__adapter_key(s, who, model, false, key, sizeof(key));
    if (adapters_has(s->reg, key))
        return 0;
    return server__fail(e, -EINVAL, "variants", "model_not_found", "variants: the model '%.100s' "
                        "is neither '%s' nor an adapter you have", model, s->model_id);
}

static int
parse_variants(struct server *s, const struct who *who, const cJSON *vs, struct exp_info *x,
               struct oai_err *e)
{
    int n = cJSON_GetArraySize(vs);
    double total = 0;
    if (!cJSON_IsArray(vs) || n < 1 || n > EXP_MAX_VARIANTS)
        return server__bad_value(e, "variants", "an array of 1 to 8 {model, weight} objects");
    x->n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, vs) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "model");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "weight");
        if (!cJSON_IsString(m) || strlen(m->valuestring) > ADAPTERS_NAME_MAX ||
            (w != NULL && (!cJSON_IsNumber(w) || !(w->valuedouble >= 0) ||
                           w->valuedouble > 1e9)))
            return server__bad_value(e, "variants", "{model: a model's id, weight: a number >= 0}");
        for (int i = 0; i < x->n; i++)
            if (strcmp(x->variants[i].model, m->valuestring) == 0)
                return server__bad_value(e, "variants", "each model once");
        int rc = check_model(s, who, m->valuestring, e);
        if (rc < 0)
            return rc;
        snprintf(x->variants[x->n].model, sizeof(x->variants[0].model), "%s", m->valuestring);
        x->variants[x->n++].weight = w ? w->valuedouble : 1.0;
        total += w ? w->valuedouble : 1.0;
    }
    return total > 0 ? 0 : server__bad_value(e, "variants", "weights that are not all 0");
}

static int
check_name(struct server *s, const struct who *who, const char *name, struct oai_err *e)
{
    char key[ADAPTERS_KEY_MAX + 1];
    if (!adapters_name_valid(name))
        return server__bad_value(e, "name",
                                 "1 to 128 of A-Z a-z 0-9 . _ : -, not starting with '.'");
    server__adapter_key(s, who, name, false, key, sizeof(key));
    if (strcmp(name, s->model_id) == 0 || server__is_encoder(s, name) ||
        strcmp(name, "hash") == 0 || adapters_has(s->reg, key))
        return server__fail(e, -EINVAL, "name", "invalid_value", "name: '%s' is already a "
                            "model's or an adapter's name", name);
    return 0;
}

static int
parse_body(struct xreq *r, const char *body, size_t len, struct oai_err *e)
{
    cJSON *root = NULL;
    int rc = server__parse_object(body, len, &root, e);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *sticky = cJSON_GetObjectItemCaseSensitive(root, "sticky");
    if (rc == 0 && r->kind == X_CREATE && !cJSON_IsString(name))
        rc = server__bad_value(e, "name", "a string");
    if (rc == 0 && r->kind == X_CREATE && (rc = check_name(r->s, &r->who, name->valuestring,
                                                           e)) == 0)
        snprintf(r->x.name, sizeof(r->x.name), "%s", name->valuestring);
    if (rc == 0 && r->kind == X_PATCH && (name != NULL || sticky != NULL))
        rc = server__fail(e, -EINVAL, name ? "name" : "sticky", "invalid_value", "PATCH "
                          "changes the variants only");
    if (rc == 0 && sticky != NULL && !cJSON_IsNull(sticky) &&
        (!cJSON_IsString(sticky) || (strcmp(sticky->valuestring, "user") != 0 &&
                                     strcmp(sticky->valuestring, "none") != 0)))
        rc = server__bad_value(e, "sticky", "\"user\" or \"none\"");
    r->x.sticky_user = !cJSON_IsString(sticky) || strcmp(sticky->valuestring, "user") == 0;
    if (rc == 0)
        rc = parse_variants(r->s, &r->who, cJSON_GetObjectItemCaseSensitive(root, "variants"),
                            &r->x, e);
    cJSON_Delete(root);
    return rc;
}

static int
parse_feedback(struct xreq *r, const char *body, size_t len, struct oai_err *e)
{
    cJSON *root = NULL;
    int rc = server__parse_object(body, len, &root, e);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(root, "score");
    if (rc == 0 && (!cJSON_IsString(id) || id->valuestring[0] == '\0' ||
                    strlen(id->valuestring) >= sizeof(r->id)))
        rc = server__bad_value(e, "id", "the id of a completion");
    if (rc == 0 && (!cJSON_IsNumber(score) || !(score->valuedouble >= 0) ||
                    score->valuedouble > 1))
        rc = server__bad_value(e, "score", "a number from 0 to 1");
    if (rc == 0) {
        snprintf(r->id, sizeof(r->id), "%s", id->valuestring);
        r->score = score->valuedouble;
    }
    cJSON_Delete(root);
    return rc;
}

/* The kind, and the name in r->x; 404/405 in e. */
static int
parse_path(struct xreq *r, const char *method, const char *url, struct oai_err *e)
{
    const char *p = url + strlen("/v1/experiments");
    bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
    bool patch = strcmp(method, "PATCH") == 0, del = strcmp(method, "DELETE") == 0;
    if (*p == '\0') {
        r->kind = post ? X_CREATE : X_LIST;
        return post || get ? 0 : server__fail(e, -EOPNOTSUPP, NULL, "method_not_allowed",
                                              "%s is not allowed on %s", method, url);
    }
    if (*p != '/' || p[1] == '\0' || strchr(p + 1, '/') != NULL ||
        strlen(p + 1) >= sizeof(r->x.name))
        return server__fail(e, -ENOENT, NULL, "not_found", "Invalid URL (%s %.200s)", method,
                            url);
    snprintf(r->x.name, sizeof(r->x.name), "%s", p + 1);
    r->kind = get ? X_GET : patch ? X_PATCH : X_DELETE;
    return get || patch || del ? 0 : server__fail(e, -EOPNOTSUPP, NULL, "method_not_allowed",
                                                  "%s is not allowed on %s", method, url);
}

/* PATCH and DELETE change who's own experiment: a shared one is the admin's to change. */
static int
check_owner(struct xreq *r, struct oai_err *e)
{
    struct exp_info cur;
    if (server__experiment_get(r->s->experiments, &r->who, r->x.name, &cur) < 0)
        return server__fail(e, -ENOENT, NULL, "experiment_not_found", "the experiment '%s' "
                            "does not exist", r->x.name);
    if (strcmp(cur.owner, r->who.id) != 0)
        return server__fail(e, -EPERM, NULL, "permission_denied", "the experiment '%s' is "
                            "shared by the admin: only the admin changes it", r->x.name);
    r->x.sticky_user = cur.sticky_user;
    return 0;
}

/* The checks of the method, path and body: 0 with r filled, or an error in e. */
static int
check_request(const char *method, const char *url, const char *body, size_t len,
              struct xreq *r, struct oai_err *e)
{
    int rc = strcmp(url, "/v1/feedback") == 0 ? (r->kind = X_FEEDBACK, 0)
                                               : parse_path(r, method, url, e);
    if (rc == 0 && (r->kind == X_PATCH || r->kind == X_DELETE))
        rc = check_owner(r, e);
    if (rc == 0 && (r->kind == X_CREATE || r->kind == X_PATCH))
        rc = parse_body(r, body, len, e);
    if (rc == 0 && r->kind == X_FEEDBACK)
        rc = parse_feedback(r, body, len, e);
    return rc;
}

/* A new request of who's to s, before its checks. */
static struct xreq *
xreq_new(struct server *s, const struct who *who)
{
    struct xreq *r = server__xcalloc(1, sizeof(*r));
    r->s = s;
    r->who = *who;
    snprintf(r->x.owner, sizeof(r->x.owner), "%s", who->id);
    return r;
}

int
server__experiments_check(struct server *s, const struct who *who, const char *method,
                          const char *url, const char *body, size_t len, struct oai_err *e)
{
    struct xreq *r = xreq_new(s, who);
    int rc = check_request(method, url, body, len, r, e);
    free(r);
    return rc;
}

int
server__experiments_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                          const char *method, const char *url, const char *body, size_t len,
                          struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct xreq *r = xreq_new(s, who);
    int rc = check_request(method, url, body, len, r, e);
    if (rc < 0) {
        free(r);
        return rc;
    }
    return server__op_call(s, con, x_work, r, free, out, e);
}

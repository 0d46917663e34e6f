/*
 * http.c - the loop thread: libuv drives libmicrohttpd, routes requests and
 * answers them, and shuts down on SIGTERM / SIGINT.
 *
 * libmicrohttpd runs with no threads of its own (MHD_USE_EPOLL): a uv_poll on
 * its epoll fd and a uv_timer set from MHD_get_timeout() call MHD_run(), so
 * every socket and every handler runs here and no handler blocks. A request's
 * state (struct conn) is made when its headers arrive and freed when
 * libmicrohttpd reports it completed; that is also where a generating job is
 * cancelled, so a client that goes away frees its slot.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <microhttpd.h>

#include "server_int.h"

/* One request, from its headers to its completion. */
struct conn {
    enum route route;
    char allow[32];             /* for 405: "GET, POST" */
    struct oai_err err;         /* err.err != 0: answer this once the body is in */
    struct who who;             /* from the Authorization header */
    struct sbuf body;
    struct job *job;
    struct op *op;              /* an adapter change or embeddings on the pool */
};

/* ---- Replies ---------------------------------------------------------- */

/* A response's extra header, or none when name is NULL. */
struct hdr {
    const char *name, *value;
};

/*
 * Traffic should move elsewhere: a shutdown, its --drain, or POST /drain.
 * /health answers 503 and every answer closes its connection.
 */
static bool
winding_down(const struct server *s)
{
    return s->draining || s->leaving || s->paused;
}

/* Queues body (malloc'd, consumed) with status, content type and extra headers h[0..n). */
static enum MHD_Result
reply_hdrs(struct server *s, struct MHD_Connection *con, int status, char *body,
           const char *ctype, const struct hdr *h, int n)
{
    if (body == NULL)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    for (int i = 0; i < n; i++)
        if (h[i].name != NULL && h[i].value != NULL)
            MHD_add_response_header(r, h[i].name, h[i].value);
    if (winding_down(s) || server__conn_over(con))
        MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(con, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
reply_as(struct server *s, struct MHD_Connection *con, int status, char *body, const char *ctype,
         struct hdr extra)
{
    return reply_hdrs(s, con, status, body, ctype, &extra, 1);
}

/* Queues a JSON body (malloc'd, consumed) with status. */
static enum MHD_Result
reply(struct server *s, struct MHD_Connection *con, int status, char *body, const char *allow)
{
    return reply_as(s, con, status, body, "application/json", (struct hdr){ "Allow", allow });
}

static enum MHD_Result
reply_error(struct server *s, struct MHD_Connection *con, const struct conn *c)
{
    struct hdr h = { NULL, NULL };
    if (c->err.err == -EOPNOTSUPP)
        h = (struct hdr){ "Allow", c->allow };
    else if (c->err.err == -EACCES)
        h = (struct hdr){ "WWW-Authenticate", "Bearer" };
    char secs[16];
    if (c->err.err == -EAGAIN) {
        snprintf(secs, sizeof(secs), "%d", c->err.retry_after > 0 ? c->err.retry_after : 1);
        h = (struct hdr){ "Retry-After", secs };
    }
    return reply_as(s, con, server__status_from_err(c->err.err), server__error_json(&c->err),
                    "application/json", h);
}

static char *
print_free(cJSON *o)
{
    char *p = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return p;
}

static enum MHD_Result
reply_health(struct server *s, struct MHD_Connection *con)
{
    int waiting = 0, running = 0;
    engine_sched_load(s->sched, &waiting, &running);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", s->draining || s->leaving ? "shutting_down"
                                         : s->paused ? "draining" : "ok");
    cJSON_AddStringToObject(o, "model", s->model_id);
    cJSON *slots = cJSON_AddObjectToObject(o, "slots");
    cJSON_AddNumberToObject(slots, "total", s->cfg->parallel);
    cJSON_AddNumberToObject(slots, "busy", running);
    cJSON_AddNumberToObject(slots, "idle", s->cfg->parallel - running);
    cJSON_AddNumberToObject(o, "waiting", waiting);
    cJSON_AddNumberToObject(o, "requests", s->n_inflight);
    cJSON *pc = cJSON_AddObjectToObject(o, "prefix_cache");
    cJSON_AddNumberToObject(pc, "hit_tokens", (double)engine_sched_prefix_hits(s->sched));
    cJSON_AddItemToObject(o, "adapters", server__adapters_health(s));
    return reply(s, con, winding_down(s) ? 503 : 200, print_free(o), NULL);
}

static enum MHD_Result
reply_models(struct server *s, struct MHD_Connection *con, const struct conn *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToObject(o, "data", server__models_json(s, &c->who));
    return reply(s, con, 200, print_free(o), NULL);
}

static enum MHD_Result
reply_model(struct server *s, struct MHD_Connection *con, const char *url, struct conn *c)
{
    const char *id = url + strlen("/v1/models/");
    cJSON *m = server__model_json(s, &c->who, id);
    if (m != NULL)
        return reply(s, con, 200, print_free(m), NULL);
    server__fail(&c->err, -ENOENT, "model", "model_not_found",
                 "the model '%.100s' does not exist", id);
    return reply_error(s, con, c);
}

/* GET /v1/adapters/{name}: one entry of the list. */
static enum MHD_Result
reply_adapter(struct server *s, struct MHD_Connection *con, const char *url, struct conn *c)
{
    const char *name = url + strlen("/v1/adapters/");
    cJSON *a = server__adapter_json(s, &c->who, name);
    if (a != NULL)
        return reply(s, con, 200, print_free(a), NULL);
    server__fail(&c->err, -ENOENT, "name", "adapter_not_found",
                 "the adapter '%.100s' does not exist", name);
    return reply_error(s, con, c);
}

/* ---- Adapter changes -------------------------------------------------- */

/* The answer of the pool work c->op, once it is done. */
static enum MHD_Result
reply_op(struct server *s, struct MHD_Connection *con, struct conn *c)
{
    int status = 500;
    const char *ctype = "application/json";
    char *body = server__op_reply(c->op, &status, &ctype);
    return reply_as(s, con, status, body, ctype, (struct hdr){ NULL, NULL });
}

static enum MHD_Result
change(struct server *s, struct MHD_Connection *con, const char *url, struct conn *c)
{
    if (c->op == NULL) {
        static const enum op_kind kinds[] = {
            [ROUTE_ADAPTER_LOAD] = OP_LOAD, [ROUTE_ADAPTER_DELETE] = OP_UNLOAD,
            [ROUTE_VLLM_LOAD] = OP_VLLM_LOAD, [ROUTE_VLLM_UNLOAD] = OP_VLLM_UNLOAD,
        };
        const char *name = c->route == ROUTE_ADAPTER_DELETE ? url + strlen("/v1/adapters/")
                                                            : NULL;
        int rc = server__op_start(s, con, &c->who, kinds[c->route], name, c->body.p ? c->body.p : "",
                                  c->body.len, &c->op, &c->err);
        server__buf_release(&c->body);
        return rc < 0 ? reply_error(s, con, c) : MHD_YES;
    }
    return reply_op(s, con, c);
}

static enum MHD_Result
vector_stores(struct server *s, struct MHD_Connection *con, const char *method, const char *url,
              struct conn *c)
{
    if (c->op != NULL)
        return reply_op(s, con, c);
    int rc = server__vector_stores_start(s, con, &c->who, method, url, c->body.p ? c->body.p : "",
                                         c->body.len, &c->op, &c->err);
    server__buf_release(&c->body);
    if (rc == -EOPNOTSUPP) /* a method this kind of path does not take */
        snprintf(c->allow, sizeof(c->allow), "%s", strstr(url, "/documents/") ? "DELETE"
                 : strstr(url, "/documents") ? "GET, POST" : strstr(url, "/search") ? "POST"
                 : "GET, DELETE");
    return rc < 0 ? reply_error(s, con, c) : MHD_YES;
}

static enum MHD_Result
embeddings(struct server *s, struct MHD_Connection *con, struct conn *c)
{
    if (c->op != NULL)
        return reply_op(s, con, c);
    int rc = server__embeddings_start(s, con, &c->who, c->body.p ? c->body.p : "", c->body.len,
                                      &c->op, &c->err);
    server__buf_release(&c->body);
    return rc < 0 ? reply_error(s, con, c) : MHD_YES;
}

static enum MHD_Result
tenants(struct server *s, struct MHD_Connection *con, const char *method, const char *url,
        struct conn *c)
{
    if (c->op != NULL)
        return reply_op(s, con, c);
    int rc = server__tenants_start(s, con, &c->who, method, url, c->body.p ? c->body.p : "",
                                   c->body.len, &c->op, &c->err);
    server__buf_release(&c->body);
    if (rc == -EOPNOTSUPP)
        snprintf(c->allow, sizeof(c->allow), "%s", server__tenants_allow(url));
    return rc < 0 ? reply_error(s, con, c) : MHD_YES;
}

static enum MHD_Result
experiments(struct server *s, struct MHD_Connection *con, const char *method, const char *url,
            struct conn *c)
{
    if (c->op != NULL)
        return reply_op(s, con, c);
    int rc = server__experiments_start(s, con, &c->who, method, url,
                                       c->body.p ? c->body.p : "", c->body.len, &c->op,
                                       &c->err);
    server__buf_release(&c->body);
    if (rc == -EOPNOTSUPP)
        snprintf(c->allow, sizeof(c->allow), "%s",
                 strcmp(url, "/v1/experiments") == 0 ? "GET, POST" : "GET, PATCH, DELETE");
    return rc < 0 ? reply_error(s, con, c) : MHD_YES;
}

/*
 * POST /drain: take no new work (503 "draining"; /health says 503 so load
 * balancers and probes move traffic away) while what runs finishes; the
 * server keeps running. DELETE /drain takes work again. The admin's only.
 */
static enum MHD_Result
drain(struct server *s, struct MHD_Connection *con, const char *method, struct conn *c)
{
    if (!c->who.admin) {
        server__fail(&c->err, -EPERM, NULL, "permission_denied", "draining needs the admin key");
        return reply_error(s, con, c);
    }
    s->paused = strcmp(method, "POST") == 0;
    fprintf(stderr, "loraserve: %s\n", s->paused ? "draining: no new work; running requests "
            "finish" : "drain ended: taking work again");
    int waiting = 0, running = 0;
    engine_sched_load(s->sched, &waiting, &running);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "draining", s->paused);
    cJSON_AddNumberToObject(o, "running", running);
    cJSON_AddNumberToObject(o, "waiting", waiting);
    cJSON_AddNumberToObject(o, "requests", s->n_inflight - 1);
    return reply(s, con, 200, print_free(o), NULL);
}

/* ---- Generate requests ------------------------------------------------ */

static enum MHD_Result
queue_stream(struct server *s, struct MHD_Connection *con, struct job *j)
{
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16 * 1024, server__job_read, j, server__job_read_done);
    if (r == NULL)
        return MHD_NO;
    server__job_ref(j);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    if (server__job_adapter_header(j) != NULL)
        MHD_add_response_header(r, SERVER_ADAPTER_HEADER, server__job_adapter_header(j));
    if (server__job_variant(j) != NULL)
        MHD_add_response_header(r, SERVER_VARIANT_HEADER, server__job_variant(j));
    if (winding_down(s))
        MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(con, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
queue_body(struct server *s, struct MHD_Connection *con, struct job *j)
{
    char iters[16];
    snprintf(iters, sizeof(iters), "%d", server__job_ttft_iterations(j));
    struct hdr h[3] = { { SERVER_ADAPTER_HEADER, server__job_adapter_header(j) },
                        { SERVER_VARIANT_HEADER, server__job_variant(j) },
                        { "x-loraserve-ttft-iterations", iters } };
    return reply_hdrs(s, con, 200, server__job_body(j), "application/json", h, 3);
}

static enum MHD_Result
generate(struct server *s, struct MHD_Connection *con, struct conn *c)
{
    if (c->job == NULL) {
        enum oai_kind kind = c->route == ROUTE_CHAT ? OAI_CHAT : OAI_COMPLETIONS;
        int rc = server__job_start(s, con, &c->who, kind, c->body.p ? c->body.p : "", c->body.len,
                                   &c->job, &c->err);
        server__buf_release(&c->body);
        if (rc < 0)
            return reply_error(s, con, c);
    }
    if (server__job_gone(c->job))
        return MHD_NO;
    if (server__job_pending(c->job)) {
        server__job_set_suspended(c->job, true);
        return MHD_YES;
    }
    if (server__job_failed(c->job, &c->err))
        return reply_error(s, con, c);
    /* A stream's response is queued once; libmicrohttpd then reads it from the job. */
    if (server__job_stream(c->job))
        return queue_stream(s, con, c->job);
    if (server__job_done(c->job))
        return queue_body(s, con, c->job);
    server__job_set_suspended(c->job, true);
    return MHD_YES;
}

/* ---- Routing and bodies ----------------------------------------------- */

/* Picks the route, or fills c->err with 404 / 405. */
static void
route(struct conn *c, const char *method, const char *url)
{
    c->route = server__route(method, url, c->allow, sizeof(c->allow));
    if (c->route != ROUTE_NONE)
        return;
    if (c->allow[0] != '\0')
        server__fail(&c->err, -EOPNOTSUPP, NULL, "method_not_allowed",
                     "%s is not allowed on %.200s (use %s)", method, url, c->allow);
    else
        server__fail(&c->err, -ENOENT, NULL, "not_found", "Invalid URL (%s %.200s)", method,
                     url);
}

/*
 * Who sent it: every route but /health and /metrics (what probes and scrapers
 * read, as with vLLM) needs a key once there is an admin key.
 */
static void
authenticate(struct server *s, struct MHD_Connection *con, struct conn *c)
{
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (server__tenants_auth(s->tenants, auth, &c->who) == 0 || c->route == ROUTE_HEALTH ||
        c->route == ROUTE_METRICS)
        return;
    if (auth == NULL)
        server__fail(&c->err, -EACCES, NULL, "missing_api_key", "You didn't provide an API "
                     "key. Send it in an Authorization header: 'Authorization: Bearer KEY'.");
    else
        server__fail(&c->err, -EACCES, NULL, "invalid_api_key", "Incorrect API key provided.");
}

/* Who may come in: connections, the key, a drain or a shutdown (the probes always may). */
static void
gate(struct server *s, struct MHD_Connection *con, struct conn *c)
{
    bool probe = c->route == ROUTE_HEALTH || c->route == ROUTE_METRICS;
    if (server__conn_over(con) && c->route != ROUTE_HEALTH)
        server__fail(&c->err, -EBUSY, NULL, "too_many_connections", "the server has "
                     "--max-connections %d connections open; try again", s->cfg->max_connections);
    if (c->err.err == 0)
        authenticate(s, con, c);
    if (c->err.err == 0 && s->paused && !probe && c->route != ROUTE_DRAIN)
        server__fail(&c->err, -EBUSY, NULL, "draining", "the server is draining (POST /drain): "
                     "it takes no new requests; try another replica");
    if (c->err.err == 0 && s->draining && !probe)
        server__fail(&c->err, -ECANCELED, NULL, "shutting_down", "the server is shutting down");
}

/* Headers are in: route, and refuse what is known to be wrong before any body. */
static enum MHD_Result
on_headers(struct server *s, struct MHD_Connection *con, const char *url, const char *method,
           struct conn *c)
{
    route(c, method, url);
    if (c->err.err == 0)
        gate(s, con, c);
    const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
    long long len = cl ? strtoll(cl, NULL, 10) : 0;
    if (c->err.err == 0 && len > s->cfg->max_body)
        server__fail(&c->err, -EMSGSIZE, NULL, "request_too_large",
                     "the request body has %lld bytes; the limit is %lld (--max-body)", len,
                     s->cfg->max_body);
    /*
     * A client that waits for "100 Continue", or that would make us read a
     * huge body only to drop it, gets its answer now; others get it once
     * their body is read (answering early makes them see a reset instead).
     */
    const char *expect = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Expect");
    if (c->err.err != 0 && (expect != NULL || len > 8 * s->cfg->max_body))
        return reply_error(s, con, c);
    return MHD_YES;
}

/* A piece of the body: kept while within --max-body, dropped after. */
static void
on_body(struct server *s, struct conn *c, const char *data, size_t size)
{
    if (c->err.err != 0)
        return;
    if (c->body.len + size > (size_t)s->cfg->max_body) {
        server__fail(&c->err, -EMSGSIZE, NULL, "request_too_large",
                     "the request body is larger than the limit of %lld bytes (--max-body)",
                     s->cfg->max_body);
        server__buf_release(&c->body);
        return;
    }
    if (server__buf_add(&c->body, data, size) < 0)
        server__fail(&c->err, -ENOMEM, NULL, NULL, "out of memory for the request body");
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **req_cls)
{
    struct server *s = cls;
    struct conn *c = *req_cls;
    (void)version;
    if (c == NULL) {
        c = server__xcalloc(1, sizeof(*c));
        *req_cls = c;
        s->n_inflight++;
        return on_headers(s, con, url, method, c);
    }
    if (*upload_data_size > 0) {
        on_body(s, c, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    server__conn_busy(con, true);       /* the request is in: its answer may take long */
    if (c->err.err != 0)
        return reply_error(s, con, c);
    switch (c->route) {
    case ROUTE_HEALTH:
        return reply_health(s, con);
    case ROUTE_DRAIN:
        return drain(s, con, method, c);
    case ROUTE_METRICS:
        return reply_as(s, con, 200, server__metrics_text(s),
                        "text/plain; version=0.0.4; charset=utf-8", (struct hdr){ NULL, NULL });
    case ROUTE_MODELS:
        return reply_models(s, con, c);
    case ROUTE_MODEL:
        return reply_model(s, con, url, c);
    case ROUTE_COMPLETIONS:
    case ROUTE_CHAT:
        return generate(s, con, c);
    case ROUTE_ADAPTERS:
        return reply(s, con, 200, server__adapters_json(s, &c->who), NULL);
    case ROUTE_ADAPTER:
        return reply_adapter(s, con, url, c);
    case ROUTE_ADAPTER_LOAD:
    case ROUTE_ADAPTER_DELETE:
    case ROUTE_VLLM_LOAD:
    case ROUTE_VLLM_UNLOAD:
        return change(s, con, url, c);
    case ROUTE_EMBEDDINGS:
        return embeddings(s, con, c);
    case ROUTE_VECTOR_STORES:
        return vector_stores(s, con, method, url, c);
    case ROUTE_TENANTS:
        return tenants(s, con, method, url, c);
    case ROUTE_EXPERIMENTS:
        return experiments(s, con, method, url, c);
    default:
        return MHD_NO;
    }
}

static void
on_completed(void *cls, struct MHD_Connection *con, void **req_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct conn *c = *req_cls;
    (void)toe;
    if (c == NULL)
        return;
    server__conn_busy(con, false);      /* its next request's clock starts */
    if (c->job != NULL)
        server__job_close(c->job);
    if (c->op != NULL)
        server__op_detach(c->op);
    server__buf_release(&c->body);
    free(c);
    *req_cls = NULL;
    s->n_inflight--;
}

/* ---- Driving libmicrohttpd -------------------------------------------- */

static void stop(struct server *s);

static void on_mhd_timer(uv_timer_t *t);

static void
run_mhd(struct server *s)
{
    if (s->stopped)
        return;
    MHD_run(s->mhd);
    if (s->draining && s->n_inflight == 0) {
        stop(s);
        return;
    }
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
        uv_timer_start(&s->mhd_timer, on_mhd_timer, ms, 0);
    else
        uv_timer_stop(&s->mhd_timer);
}

static void
on_mhd_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void
on_mhd_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run_mhd(p->data);
}

static void
on_doorbell(uv_async_t *a)
{
    struct server *s = a->data;
    if (s->stopped)
        return;
    server__jobs_drain(s);
    run_mhd(s);
}

/* ---- Shutdown --------------------------------------------------------- */

/* Closes every connection and leaves uv_run(); the handles stay for server__http_close(). */
static void
stop(struct server *s)
{
    if (s->stopped)
        return;
    s->stopped = true;
    server__jobs_resume_all(s);     /* libmicrohttpd must not stop with suspended ones */
    server__ops_resume_all(s);
    uv_poll_stop(&s->mhd_poll);
    uv_timer_stop(&s->mhd_timer);
    uv_timer_stop(&s->deadline);
    uv_timer_stop(&s->trim);
    uv_timer_stop(&s->sweep);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    uv_stop(&s->loop);
}

static void
on_deadline(uv_timer_t *t)
{
    struct server *s = t->data;
    fprintf(stderr, "loraserve: shutdown deadline passed; closing %d requests\n",
            s->n_inflight);
    server__jobs_cancel_all(s);
    stop(s);
}

/* Stops accepting connections; what runs gets --shutdown-timeout seconds. */
static void
shut(struct server *s, const char *why)
{
    s->draining = true;
    fprintf(stderr, "loraserve: %s: no new connections; waiting for %d requests (at most %d s)\n",
            why, s->n_inflight, s->cfg->shutdown_timeout);
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    uv_timer_start(&s->deadline, on_deadline, (uint64_t)s->cfg->shutdown_timeout * 1000, 0);
    run_mhd(s);
}

static void
on_drain_over(uv_timer_t *t)
{
    shut(t->data, "drain over");
}

/*
 * The first signal: with --drain, keep serving for that long while /health
 * answers 503 and answers close their connections, so balancers move away
 * before the listener closes; then shut(). A second signal stops at once.
 */
static void
on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    if (s->draining || s->leaving) {
        fprintf(stderr, "loraserve: second signal; stopping now\n");
        on_deadline(&s->deadline);
        return;
    }
    if (s->cfg->drain == 0) {
        shut(s, strsignal(signum));
        return;
    }
    s->leaving = true;
    fprintf(stderr, "loraserve: %s: draining for %d s (serving; /health 503), then stopping\n",
            strsignal(signum), s->cfg->drain);
    uv_timer_start(&s->deadline, on_drain_over, (uint64_t)s->cfg->drain * 1000, 0);
}

/* ---- Start and close -------------------------------------------------- */

static int
resolve(const struct server_config *cfg, struct sockaddr_storage *ss, bool *v6)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "loraserve: cannot resolve --host %s: %s\n", cfg->host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

static int
start_mhd(struct server *s)
{
    struct sockaddr_storage ss;
    bool v6 = false;
    int rc = resolve(s->cfg, &ss, &v6);
    if (rc < 0)
        return rc;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0);
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, server__conns_notify, s,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                              MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)s->cfg->max_connections + 64, /* room to say 503 */
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                              (unsigned)s->cfg->max_connections_per_ip,
                              MHD_OPTION_END);
    if (s->mhd == NULL) {
        fprintf(stderr, "loraserve: cannot listen on %s port %d: %s\n", s->cfg->host,
                s->cfg->port, strerror(errno ? errno : EADDRINUSE));
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = pi ? pi->port : s->cfg->port;
    return 0;
}

int
server__http_start(struct server *s)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->loop);
    uv_timer_init(&s->loop, &s->mhd_timer);
    uv_timer_init(&s->loop, &s->deadline);
    uv_timer_init(&s->loop, &s->trim);
    uv_timer_init(&s->loop, &s->sweep);
    uv_async_init(&s->loop, &s->doorbell, on_doorbell);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->mhd_timer.data = s->deadline.data = s->doorbell.data = s->trim.data = s->sweep.data = s;
    s->sigterm.data = s->sigint.data = s;
    int rc = start_mhd(s);
    if (rc < 0)
        return rc;
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (ei == NULL || uv_poll_init(&s->loop, &s->mhd_poll, ei->epoll_fd) < 0) {
        fprintf(stderr, "loraserve: cannot poll libmicrohttpd's epoll fd\n");
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        return -EIO;
    }
    s->mhd_poll.data = s;
    s->poll_ready = true;
    uv_poll_start(&s->mhd_poll, UV_READABLE, on_mhd_poll);
    uv_timer_start(&s->trim, server__adapters_tick, 1000, 1000);
    uv_timer_start(&s->sweep, server__conns_sweep, 1000, 1000);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    return 0;
}

void
server__http_kick(struct server *s)
{
    run_mhd(s);
}

int
server__http_run(struct server *s)
{
    run_mhd(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return 0;
}

static void
close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void
server__http_close(struct server *s)
{
    if (s->mhd != NULL) {
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
    if (s->poll_ready)
        close_handle((uv_handle_t *)&s->mhd_poll);
    close_handle((uv_handle_t *)&s->mhd_timer);
    close_handle((uv_handle_t *)&s->deadline);
    close_handle((uv_handle_t *)&s->trim);
    close_handle((uv_handle_t *)&s->sweep);
    close_handle((uv_handle_t *)&s->doorbell);
    close_handle((uv_handle_t *)&s->sigterm);
    close_handle((uv_handle_t *)&s->sigint);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    /* On the way out: a late SIGTERM must not turn exit status 0 into a kill. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (uv_loop_close(&s->loop) != 0)
        fprintf(stderr, "loraserve: the loop still had open handles at exit\n");
}

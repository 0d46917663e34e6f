/*
 * job.c - one completion or chat request from submit to its last byte.
 *
 * A job owns its parsed request and one engine request per choice. The
 * scheduler thread rings the server's doorbell (the notify argument is the
 * server, never the job: the engine may ring after the job is gone); the loop
 * thread then drains every job, turns tokens into released text (stop
 * sequences, UTF-8) and either queues SSE chunks or keeps the text for the
 * final body, and resumes the suspended connections that have something new.
 *
 * Adapters: the request's adapter names are resolved to refcounted versions
 * before anything is submitted. Resident ones are taken on the loop at once
 * (adapters_try_get); if one must be read from disk, the job is pending and
 * adapters_get runs on the libuv pool, and the job is submitted in the
 * after-work callback. The job holds its adapter refs until it is freed, so
 * each is dropped exactly once whatever the ending (done, error, hang-up).
 *
 * References: the connection holds one until libmicrohttpd reports the
 * request completed (server__job_close), a streaming response holds one until
 * libmicrohttpd frees it, the disconnect watch holds one until its handle is
 * closed, and a pool lookup holds one until its after-work callback. Engine
 * requests are released once, in server__job_close.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <microhttpd.h>

#include "server_int.h"

#define TAKE_BATCH 32

struct job {
    struct server *srv;
    struct MHD_Connection *con;
    struct job *prev, *next;        /* srv->jobs, while listed */
    int refs;
    bool listed, suspended, done, closed, gone;
    struct oai_request req;
    struct oai_meta meta;
    struct choice *choices;         /* (n_choices) */
    int n_choices;
    int prompt_tokens;
    struct sbuf out;                /* SSE bytes not yet sent */
    uv_poll_t *watch;               /* client disconnects while suspended */
    /* Adapters: what was asked for, the versions got (owned refs), the engine's set. */
    struct oai_adapter want[OAI_MAX_ADAPTERS];
    char key[OAI_MAX_ADAPTERS][ADAPTERS_KEY_MAX + 1];   /* want[i]'s registry key */
    int n_want;
    struct who who;
    struct who ns;                  /* whose adapter names the model is in (a shared experiment's: the admin's) */
    bool admitted;                  /* counted by the tenant's limits */
    int charged;                    /* tokens its tenant was charged at submission */
    bool routed, noted, gen_error;  /* by an experiment; its record left; a generation failed */
    bool counted;                   /* in /metrics */
    struct exp_pick pick;
    double t_start;                 /* monotonic seconds */
    struct adapter *ads[OAI_MAX_ADAPTERS];
    struct engine_lora_set lora;
    char *adapter_header;           /* "NAME@VERSION,...", or NULL */
    bool pending, failed;           /* adapters loading on the pool; failed after that */
    struct rag *rag;                /* retrieval's chunks (rag.c), or NULL */
    struct oai_err err;             /* why it failed */
    uv_work_t work;                 /* the pool lookup */
    int work_rc;
    int work_at;                    /* the want[] the lookup failed on */
    char work_msg[256];
};

static struct oai_usage usage(const struct job *j);

/* The first choice's time to first token in seconds (0 if none came). */
static double
job_ttft(const struct job *j)
{
    int n_prompt = 0, n_gen = 0;
    double ttft = 0;
    if (j->n_choices > 0 && j->choices[0].er != NULL)
        engine_req_stats(j->choices[0].er, &n_prompt, &n_gen, &ttft);
    return ttft;
}

/* An experiment's request has ended (done, failed or abandoned): its record. */
static void
exp_note(struct job *j, bool error)
{
    if (!j->routed || j->noted)
        return;
    j->noted = true;
    struct exp_record r = { .latency = server__mono_s() - j->t_start, .error = error };
    if (j->meta.id[0] != '\0')
        snprintf(r.id, sizeof(r.id), "%s", j->meta.id);
    else
        snprintf(r.id, sizeof(r.id), "failed-%p-%.6f", (void *)j, j->t_start);
    snprintf(r.owner, sizeof(r.owner), "%s", j->pick.owner);
    snprintf(r.experiment, sizeof(r.experiment), "%s", j->pick.name);
    snprintf(r.variant, sizeof(r.variant), "%s", j->pick.variant);
    snprintf(r.user, sizeof(r.user), "%s", j->req.user ? j->req.user : "");
    snprintf(r.tenant, sizeof(r.tenant), "%s", j->who.id);
    r.tokens = usage(j).completion_tokens;
    r.ttft = job_ttft(j);
    server__experiment_record(j->srv->experiments, &r);
}

/* The request's line in /metrics, once: status as answered (499: the client left first). */
static void
job_count(struct job *j, int status)
{
    if (j->counted)
        return;
    j->counted = true;
    struct oai_usage u = usage(j);
    /* a name that served nothing is not a label: clients could make series without end */
    const char *model = status == 404 || status == 400 ? "unknown"
                        : j->req.model ? j->req.model : j->srv->model_id;
    struct metric_req q = { model, j->who.id, status, u.prompt_tokens, u.completion_tokens,
                            server__mono_s() - j->t_start, job_ttft(j) };
    server__metrics_request(j->srv->metrics, &q);
}

/* Runs on the scheduler thread: keep it short. */
static void
ring(void *arg)
{
    struct server *s = arg;
    uv_async_send(&s->doorbell);
}

/* ---- Lifetime --------------------------------------------------------- */

/* The request no longer counts against its tenant's limits (its tokens do). */
static void
job_unadmit(struct job *j)
{
    if (!j->admitted)
        return;
    j->admitted = false;
    struct oai_usage u = usage(j);
    server__tenant_done(j->srv->tenants, j->who.tenant,
                        u.prompt_tokens + u.completion_tokens - j->charged);
}

static void
job_free(struct job *j)
{
    exp_note(j, true);
    job_count(j, j->failed ? server__status_from_err(j->err.err) : j->done ? 200 : 499);
    job_unadmit(j);
    for (int i = 0; i < j->n_choices; i++) {
        struct choice *c = &j->choices[i];
        engine_req_release(c->er);
        server__textout_release(&c->tx);
        server__buf_release(&c->text);
        free(c->toks);
    }
    free(j->choices);
    for (int i = 0; i < j->n_want; i++)
        adapter_unref(j->ads[i]);
    j->srv->churn += j->n_want > 0;
    free(j->adapter_header);
    server__request_release(&j->req);
    server__rag_free(j->rag);
    server__buf_release(&j->out);
    free(j);
}

void
server__job_unref(struct job *j)
{
    if (j != NULL && --j->refs == 0)
        job_free(j);
}

static void
unlist(struct job *j)
{
    if (!j->listed)
        return;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        j->srv->jobs = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->listed = false;
}

static void
watch_closed(uv_handle_t *h)
{
    struct job *j = h->data;
    free(h);
    server__job_unref(j);
}

void
server__job_close(struct job *j)
{
    j->closed = true;
    for (int i = 0; i < j->n_choices; i++) {
        engine_req_release(j->choices[i].er);
        j->choices[i].er = NULL;
    }
    unlist(j);
    if (j->watch != NULL)
        uv_close((uv_handle_t *)j->watch, watch_closed);
    j->watch = NULL;
    server__job_unref(j);
}

bool
server__job_stream(const struct job *j)
{
    return j->req.stream;
}

bool
server__job_done(const struct job *j)
{
    return j->done;
}

bool
server__job_pending(const struct job *j)
{
    return j->pending;
}

bool
server__job_failed(const struct job *j, struct oai_err *e)
{
    if (j->failed)
        *e = j->err;
    return j->failed;
}

const char *
server__job_adapter_header(const struct job *j)
{
    return j->adapter_header;
}

const char *
server__job_variant(const struct job *j)
{
    return j->routed ? j->pick.variant : NULL;
}

int
server__job_ttft_iterations(const struct job *j)
{
    return j->n_choices > 0 && j->choices[0].er ? engine_req_ttft_iterations(j->choices[0].er)
                                                : -1;
}

/* Appends name to list (comma-separated) unless it is there. */
static void
add_name(char *list, size_t len, const char *name)
{
    size_t n = strlen(name), at = strlen(list);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return;
    if (at + n + 2 <= len)
        snprintf(list + at, len - at, "%s%s", at ? "," : "", name);
}

void
server__jobs_lora(struct server *s, char *running, size_t rlen, char *waiting, size_t wlen)
{
    running[0] = waiting[0] = '\0';
    for (const struct job *j = s->jobs; j != NULL; j = j->next) {
        bool run = false, live = j->n_choices == 0 && j->pending; /* adapters loading */
        for (int i = 0; i < j->n_choices; i++) {
            run |= j->choices[i].er != NULL && engine_req_running(j->choices[i].er);
            live |= j->choices[i].finish == NULL;
        }
        for (int i = 0; live && i < j->n_want; i++) {
            const char *shown = j->ads[i] ? server__adapter_shown(&j->ns,
                                                                  adapter_name(j->ads[i]))
                                          : j->want[i].name;
            add_name(run ? running : waiting, run ? rlen : wlen, shown ? shown : "");
        }
    }
}

/* ---- Suspend and resume ----------------------------------------------- */

/* The client hung up while its connection was suspended: stop generating. */
static void
on_disconnect(uv_poll_t *h, int status, int events)
{
    struct job *j = h->data;
    (void)status;
    (void)events;
    uv_poll_stop(h);
    j->gone = true;
    for (int i = 0; i < j->n_choices; i++)
        engine_req_cancel(j->choices[i].er);
    server__job_set_suspended(j, false);
}

static void
watch_start(struct job *j)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(j->con, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    if (j->watch == NULL) {
        j->watch = server__xcalloc(1, sizeof(*j->watch));
        if (uv_poll_init_socket(&j->srv->loop, j->watch, ci->connect_fd) < 0) {
            free(j->watch);
            j->watch = NULL;
            return;
        }
        j->watch->data = j;
        j->refs++;
    }
    uv_poll_start(j->watch, UV_DISCONNECT, on_disconnect);
}

void
server__job_set_suspended(struct job *j, bool on)
{
    if (on == j->suspended)
        return;
    j->suspended = on;
    if (on) {
        MHD_suspend_connection(j->con);
        watch_start(j);
    } else {
        /* Stop watching before libmicrohttpd may close the socket. */
        if (j->watch != NULL)
            uv_poll_stop(j->watch);
        MHD_resume_connection(j->con);
    }
}

/* ---- Start ------------------------------------------------------------ */

static int
unknown_model(const char *name, struct oai_err *e)
{
    return server__fail(e, -ENOENT, "model", "model_not_found",
                        "the model '%.100s' does not exist", name);
}

static int
submit_error(int rc, struct oai_err *e)
{
    if (rc == -EAGAIN)
        return server__fail(e, rc, NULL, "queue_full",
                            "the server is busy: the request queue is full, try again later");
    if (rc == -ECANCELED)
        return server__fail(e, rc, NULL, "shutting_down", "the server is shutting down");
    if (rc == -EINVAL)
        return server__fail(e, rc, NULL, "invalid_value", "the engine refused the request");
    return server__fail(e, rc, NULL, NULL, "out of memory for the request");
}

static uint64_t
random_seed(struct server *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^ s->next_id;
}

/* One engine request per prompt x n. */
static int
submit_all(struct job *j, struct oai_err *e)
{
    struct oai_request *r = &j->req;
    j->n_choices = r->n_prompts * r->n;
    j->choices = server__xcalloc((size_t)j->n_choices, sizeof(*j->choices));
    uint64_t seed = r->has_seed ? r->sampling.seed : random_seed(j->srv);
    for (int i = 0; i < j->n_choices; i++) {
        struct choice *c = &j->choices[i];
        const struct oai_prompt *p = &r->prompts[i / r->n];
        c->index = i;
        c->prompt = i / r->n;
        server__textout_init(&c->tx, r->stop, r->n_stop);
        struct engine_req_params ep = {
            p->ids, p->n_ids, r->max_tokens, r->sampling, r->ignore_eos, r->top_logprobs,
            r->logprobs, ring, j->srv, &j->lora, j->who.tenant
        };
        ep.sampling.seed = seed + (uint64_t)(i % r->n);
        int rc = engine_sched_submit(j->srv->sched, &ep, &c->er);
        if (rc < 0)
            return submit_error(rc, e);
    }
    for (int i = 0; i < r->n_prompts; i++)
        j->prompt_tokens += r->prompts[i].n_ids;
    /* as OpenAI counts: the prompt and max_tokens at once, the unused part given back */
    j->charged = j->prompt_tokens + j->n_choices * r->max_tokens;
    if (j->admitted)
        server__tenant_charge(j->srv->tenants, j->who.tenant, j->charged);
    return 0;
}

static void
fill_meta(struct job *j)
{
    struct server *s = j->srv;
    struct oai_meta *m = &j->meta;
    m->kind = j->req.kind;
    uint64_t x = random_seed(s) ^ (s->next_id++ * 0xD1B54A32D192ED03ull);
    snprintf(m->id, sizeof(m->id), "%s%016llx%08x", m->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-",
             (unsigned long long)x, (unsigned)s->next_id);
    m->model = j->req.model != NULL ? j->req.model : s->model_id;     /* the name asked for */
    m->created = (long long)time(NULL);
    m->logprobs = j->req.logprobs;
    m->top_logprobs = j->req.top_logprobs;
    m->include_usage = j->req.stream && j->req.include_usage;
}

/* The engine's adapter set and the version header, from the refs the job holds. */
static int
adapter_set(struct job *j, struct oai_err *e)
{
    struct sbuf h = SBUF_INIT;
    int rc = 0;
    for (int i = 0; i < j->n_want && rc == 0; i++) {
        char v[ADAPTERS_KEY_MAX + 32];
        const char *shown = server__adapter_shown(&j->ns, adapter_name(j->ads[i]));
        snprintf(v, sizeof(v), "%s%s@%lld", i > 0 ? "," : "", shown ? shown : "",
                 (long long)adapter_version(j->ads[i]));
        rc = server__buf_adds(&h, v);
        j->lora.lora[i] = adapter_lora(j->ads[i]);
        j->lora.scale[i] = j->want[i].scale;
    }
    j->lora.n = j->n_want;
    j->adapter_header = h.p;
    if (rc < 0)
        return server__fail(e, rc, NULL, NULL, "out of memory for the request");
    return 0;
}

/* Adapters resolved: submit, and queue a stream's retrieval chunk and a chat's role chunks. */
static int
start_generating(struct job *j, struct oai_err *e)
{
    int rc = adapter_set(j, e);
    if (rc == 0)
        rc = submit_all(j, e);
    if (rc == 0 && j->req.stream && j->meta.retrieval != NULL)
        server__sse_retrieval(&j->out, &j->meta);
    for (int i = 0; rc == 0 && j->req.kind == OAI_CHAT && j->req.stream && i < j->n_choices; i++)
        server__sse_chunk(&j->out, &j->meta, &j->choices[i], OAI_CHUNK_ROLE, 0, j->srv->tok);
    return rc;
}

/* An adapter the pool could not get: why, as the client sees it. */
static int
adapter_error(struct job *j, struct oai_err *e)
{
    const char *name = j->want[j->work_at].name;
    switch (j->work_rc) {
    case -ENOENT:
    case -EACCES:       /* DIR/NAME leads outside the roots: say no more than "unknown" */
        return unknown_model(name, e);
    case -ENOMEM:
        return server__fail(e, -ENOSPC, "model", "adapter_memory_full",
                            "adapter '%.100s' does not fit in --max-adapter-memory now: %s",
                            name, j->work_msg);
    case -EAGAIN:
        return server__fail(e, -EBUSY, "model", "adapter_busy",
                            "adapter '%.100s' kept changing while it was loaded; try again",
                            name);
    case -EIO:
        return server__fail(e, -EIO, NULL, NULL, "adapter '%.100s': %s", name, j->work_msg);
    default:
        return server__fail(e, -EINVAL, "model", "invalid_adapter",
                            "adapter '%.100s' cannot be loaded: %s", name, j->work_msg);
    }
}

/* Pool thread: loads the adapters that were not resident. Touches only its own fields. */
static void
lookup_work(uv_work_t *w)
{
    struct job *j = w->data;
    if (j->req.has_retrieval)
        j->rag = server__rag_search(j->srv, &j->who, &j->req);
    for (int i = 0; i < j->n_want && j->work_rc == 0; i++) {
        if (j->ads[i] != NULL)
            continue;
        j->work_rc = adapters_get(j->srv->reg, j->key[i], &j->ads[i], j->work_msg,
                                  sizeof(j->work_msg));
        j->work_at = i;
    }
}

/* Retrieval's chunks into the request, then its tokens (deferred until the search was done). */
static int
with_context(struct job *j, struct oai_err *e)
{
    if (j->rag == NULL)
        return 0;
    struct server *s = j->srv;
    int rc = server__rag_apply(s, j->rag, &j->req, e);
    if (rc == 0)
        rc = server__request_tokenize(&j->req, s->tok, s->chat, s->n_ctx, e);
    if (rc == 0) {
        server__rag_echo(j->rag, &j->req, s->tok);
        j->meta.retrieval = server__rag_json(j->rag);
    }
    return rc;
}

/* Loop thread: the adapters are in (or not); submit, and wake the suspended connection. */
static void
lookup_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    j->pending = false;
    if (!j->closed) {
        if (status < 0)
            j->failed = server__fail(&j->err, -ECANCELED, NULL, "shutting_down",
                                     "the server is shutting down") < 0;
        else if (j->work_rc < 0)
            j->failed = adapter_error(j, &j->err) < 0;
        else
            j->failed = with_context(j, &j->err) < 0 || start_generating(j, &j->err) < 0;
        server__job_set_suspended(j, false);
        server__http_kick(j->srv);
    }
    server__job_unref(j);
}

/*
 * Takes the resident adapters now. Returns 0 (all taken), 1 (some must be
 * loaded on the pool) or -ENOENT with e filled.
 */
static int
adapters_now(struct job *j, struct oai_err *e)
{
    bool later = false;
    for (int i = 0; i < j->n_want; i++) {
        server__adapter_key(j->srv, &j->ns, j->want[i].name, false, j->key[i],
                            sizeof(j->key[i]));
        int rc = adapters_try_get(j->srv->reg, j->key[i], &j->ads[i]);
        if (rc == -EWOULDBLOCK)
            later = true;
        else if (rc < 0)
            return unknown_model(j->want[i].name, e);
    }
    return later ? 1 : 0;
}

static void
list_job(struct job *j)
{
    struct server *s = j->srv;
    j->next = s->jobs;
    if (s->jobs != NULL)
        s->jobs->prev = j;
    s->jobs = j;
    j->listed = true;
}

/* Some adapters must be read from disk: the job waits for the pool, holding a ref. */
static int
queue_lookup(struct job *j, struct oai_err *e)
{
    j->work.data = j;
    if (uv_queue_work(&j->srv->loop, &j->work, lookup_work, lookup_done) < 0)
        return server__fail(e, -ENOMEM, NULL, NULL, "cannot queue the adapter lookup");
    j->pending = true;
    j->refs++;
    return 0;
}

int
server__job_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                  enum oai_kind kind, const char *body, size_t len, struct job **out,
                  struct oai_err *e)
{
    *out = NULL;
    struct job *j = server__xcalloc(1, sizeof(*j));
    j->srv = s;
    j->who = *who;
    j->ns = *who;
    j->t_start = server__mono_s();
    j->con = con;
    j->refs = 1;
    int later = 0;
    int rc = server__limits_admit(s, who, e);
    j->admitted = rc == 0;
    if (rc == 0)
        rc = server__parse_request(kind, body, len, tokenizer_n_vocab(s->tok), &j->req, e);
    if (rc == 0 && server__is_encoder(s, j->req.model))
        rc = server__fail(e, -EINVAL, "model", "invalid_value", "model: '%.200s' is an "
                          "embedding model; it answers /v1/embeddings only", j->req.model);
    if (rc == 0 && server__experiment_pick(s->experiments, who, j->req.model, j->req.user,
                                           &j->pick) == 1) {
        j->routed = true;
        j->req.model = j->pick.variant;     /* the response names the variant served */
        if (j->pick.owner[0] == '\0')
            j->ns = (struct who){ 0, true, "" };
    }
    if (rc == 0)
        rc = server__select_adapters(&j->req, s->model_id, j->want, &j->n_want, e);
    if (rc == 0 && (later = adapters_now(j, e)) < 0)
        rc = later;
    if (rc == 0 && !j->req.has_retrieval) /* with retrieval, once the context is in */
        rc = server__request_tokenize(&j->req, s->tok, s->chat, s->n_ctx, e);
    if (rc == 0) {
        fill_meta(j);
        rc = later || j->req.has_retrieval ? queue_lookup(j, e) : start_generating(j, e);
    }
    if (rc < 0) {
        job_count(j, server__status_from_err(rc));
        job_free(j);
        return rc;
    }
    list_job(j);
    *out = j;
    return 0;
}

/* ---- Tokens -> text --------------------------------------------------- */

static void
choice_end(struct choice *c, const char *finish)
{
    c->finish = finish;
    engine_req_cancel(c->er);
}

static void
choice_token(struct job *j, struct choice *c, const struct engine_tok *t)
{
    c->n_gen++;
    if (j->meta.logprobs) {
        if (c->n_toks == c->cap_toks) {
            int cap = c->cap_toks ? 2 * c->cap_toks : 16;
            struct tok_rec *n = realloc(c->toks, (size_t)cap * sizeof(*n));
            if (n == NULL) {
                choice_end(c, "length");
                return;
            }
            c->toks = n;
            c->cap_toks = cap;
        }
        c->toks[c->n_toks++] = (struct tok_rec){ *t, c->tx.pushed };
    }
    struct sbuf p = SBUF_INIT;
    int rc = server__piece(j->srv->tok, t->id, &p);
    if (rc == 0)
        rc = server__textout_push(&c->tx, p.p, p.len, &c->text);
    server__buf_release(&p);
    if (rc != 0)
        choice_end(c, rc == 1 ? "stop" : "length");
}

static void
choice_drain(struct job *j, struct choice *c)
{
    struct engine_tok toks[TAKE_BATCH];
    enum engine_finish f = ENGINE_FINISH_NONE;
    int n = 0;
    do {
        n = engine_req_take(c->er, toks, TAKE_BATCH, &f);
        for (int i = 0; i < n && c->finish == NULL; i++)
            choice_token(j, c, &toks[i]);
    } while (n == TAKE_BATCH && c->finish == NULL);
    if (c->finish != NULL || f == ENGINE_FINISH_NONE)
        return;
    if (server__textout_flush(&c->tx, &c->text) < 0)
        f = ENGINE_FINISH_ERROR;
    if (f == ENGINE_FINISH_STOP)
        c->n_gen++;                 /* the end-of-generation token, as llama.cpp counts */
    if (f == ENGINE_FINISH_ERROR)
        fprintf(stderr, "loraserve: %s: generation failed after %d tokens\n", j->meta.id,
                c->n_gen);
    j->gen_error |= f == ENGINE_FINISH_ERROR;
    c->finish = f == ENGINE_FINISH_STOP ? "stop" : "length";
}

/* Stream: the chunks of c that are new since the last drain. */
static void
choice_emit(struct job *j, struct choice *c)
{
    int n_lp = server__choice_n_released(c);
    if (c->text.len > 0 || n_lp > c->n_lp_sent) {
        server__sse_chunk(&j->out, &j->meta, c, OAI_CHUNK_TEXT, n_lp, j->srv->tok);
        c->n_lp_sent = n_lp;
        server__buf_consume(&c->text, c->text.len);
    }
    if (c->finish != NULL && !c->final_sent) {
        server__sse_chunk(&j->out, &j->meta, c, OAI_CHUNK_FINAL, n_lp, j->srv->tok);
        c->final_sent = true;
    }
}

static struct oai_usage
usage(const struct job *j)
{
    struct oai_usage u = { j->prompt_tokens, 0 };
    for (int i = 0; i < j->n_choices; i++)
        u.completion_tokens += j->choices[i].n_gen;
    return u;
}

static void
job_drain(struct job *j)
{
    bool all = true;
    for (int i = 0; i < j->n_choices; i++) {
        struct choice *c = &j->choices[i];
        if (c->finish == NULL)
            choice_drain(j, c);
        if (j->req.stream)
            choice_emit(j, c);
        all = all && c->finish != NULL;
    }
    if (!all)
        return;
    j->done = true;
    exp_note(j, j->gen_error);
    job_count(j, j->gen_error ? 500 : 200);
    job_unadmit(j);
    if (!j->req.stream)
        return;
    struct oai_usage u = usage(j);
    if (j->meta.include_usage)
        server__sse_usage(&j->out, &j->meta, &u);
    server__sse_done(&j->out);
}

void
server__jobs_drain(struct server *s)
{
    for (struct job *j = s->jobs; j != NULL; j = j->next) {
        if (j->pending || j->failed)
            continue;
        if (!j->done)
            job_drain(j);
        if (j->suspended && (j->out.len > 0 || j->done))
            server__job_set_suspended(j, false);
    }
}

void
server__jobs_cancel_all(struct server *s)
{
    for (struct job *j = s->jobs; j != NULL; j = j->next)
        for (int i = 0; i < j->n_choices; i++)
            engine_req_cancel(j->choices[i].er);
}

void
server__jobs_resume_all(struct server *s)
{
    for (struct job *j = s->jobs; j != NULL; j = j->next)
        server__job_set_suspended(j, false);
}

/* ---- Output ----------------------------------------------------------- */

char *
server__job_body(struct job *j)
{
    struct oai_usage u = usage(j);
    return server__response_json(&j->meta, j->choices, j->n_choices, &u, j->srv->tok);
}

bool
server__job_gone(const struct job *j)
{
    return j->gone;
}

ssize_t
server__job_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct job *j = cls;
    (void)pos;
    if (j->gone || j->closed)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (j->out.len > 0) {
        size_t n = j->out.len < max ? j->out.len : max;
        memcpy(buf, j->out.p, n);
        server__buf_consume(&j->out, n);
        return (ssize_t)n;
    }
    if (j->done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    server__job_set_suspended(j, true);
    return 0;
}

void
server__job_read_done(void *cls)
{
    server__job_unref(cls);
}

void
server__job_ref(struct job *j)
{
    j->refs++;
}

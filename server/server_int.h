/*
 * server_int.h - what the files of server/ share: byte buffers, UTF-8 checks,
 * OpenAI error objects, request parsing, the text released to clients (stop
 * sequences and UTF-8 holdback), response and SSE building, and the server
 * and job structs owned by the loop thread.
 *
 * Everything here runs on the loop thread unless it says otherwise; the
 * parsing and building functions touch no server state, so the unit tests in
 * tests/test_server.c call them without sockets.
 */
#ifndef LORASERVE_SERVER_INT_H
#define LORASERVE_SERVER_INT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include <microhttpd.h>

#include "adapters.h"
#include "chat.h"
#include "engine.h"
#include "retrieval.h"
#include "server.h"

#define SERVER_VERSION "0.1.0"
#define SERVER_FINGERPRINT "fp_loraserve_" SERVER_VERSION

/* ---- Byte buffers (util.c) -------------------------------------------- */

/* A growable byte string, always NUL-terminated once non-empty. */
struct sbuf {
    char *p;
    size_t len, cap;
};
#define SBUF_INIT { NULL, 0, 0 }

int server__buf_add(struct sbuf *b, const void *p, size_t n);     /* 0 or -ENOMEM */
int server__buf_adds(struct sbuf *b, const char *s);
void server__buf_consume(struct sbuf *b, size_t n);               /* drops the first n bytes */
void server__buf_release(struct sbuf *b);

/* Fixed-size bookkeeping: aborts with a message when memory is out. */
void *server__xcalloc(size_t n, size_t size);

/* Seconds on the monotonic clock. */
double server__mono_s(void);

/* ---- SQLite (db.c) ----------------------------------------------------- */

struct sqlite3;
/* Opens (creating) path as every module does (WAL, 5 s busy wait) and runs schema. 0 or -EIO. */
int server__db_open(const char *path, const char *schema, struct sqlite3 **db);
/*
 * Runs sql with parameters, a letter of types each: 't' text (NULL binds
 * NULL), 'i' long long, 'd' double, 'b' a blob (pointer, then int length).
 * 0, -ENOMEM or -EIO.
 */
int server__db_exec(struct sqlite3 *db, const char *sql, const char *types, ...);

/* ---- UTF-8 (util.c) ---------------------------------------------------- */

/* Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF. */
bool server__utf8_valid(const char *s, size_t n);
/* Appends s[0..n) with every invalid byte replaced by U+FFFD. */
int server__utf8_sanitize(struct sbuf *out, const char *s, size_t n);

/* ---- Errors (openai.c) ------------------------------------------------- */

/*
 * One failed request: err is a negative errno that server__status_from_err()
 * maps to the HTTP status; param and code are "" for JSON null.
 */
struct oai_err {
    int err;
    char param[64];
    char code[40];
    char msg[320];
    int retry_after;            /* seconds, for a 429's Retry-After (0: 1) */
};

/* Fills e and returns err. */
int server__fail(struct oai_err *e, int err, const char *param, const char *code,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* -EINVAL, invalid_value: "PARAM: expected WHAT". */
int server__bad_value(struct oai_err *e, const char *param, const char *what);
/*
 * The one mapping from errors to statuses: -EINVAL, -EBADMSG, -EILSEQ 400,
 * -EACCES 401 (no or a wrong key), -EPERM 403 (not the admin), -ENOENT 404, -EEXIST 409, -EOPNOTSUPP 405, -EMSGSIZE 413, -EAGAIN 429, -ECANCELED,
 * -ENOSPC (adapter memory full), -EBUSY 503, anything else 500.
 */
int server__status_from_err(int err);
/* {"error":{"message","type","param","code"}}; caller frees. */
char *server__error_json(const struct oai_err *e);

/* ---- Requests (openai.c) ----------------------------------------------- */

#define OAI_MAX_STOP 4              /* stop sequences a client may give */
#define OAI_MAX_STOP_LEN 256        /* bytes in one of them */
#define OAI_MAX_N 8
#define OAI_MAX_CHOICES 64          /* prompts x n */

enum oai_kind { OAI_COMPLETIONS, OAI_CHAT };

/* One adapter a request asks for (name borrowed from the request's JSON tree). */
struct oai_adapter {
    const char *name;
    float scale;
};
#define OAI_MAX_ADAPTERS ENGINE_LORA_MAX_SET
#define OAI_MAX_LORA_SCALE 10.0

struct oai_prompt {
    const char *text;               /* borrowed from the JSON tree; NULL for token ids */
    int32_t *ids;                   /* owned */
    int n_ids;
};

/* "retrieval": {"vector_store_ids", "top_k", "mode", "echo"} (see rag.c). */
#define OAI_MAX_STORES 8
struct oai_retrieval {
    const char *stores[OAI_MAX_STORES];     /* borrowed */
    int n_stores;
    int top_k;
    enum retrieval_mode mode;
    bool echo;                              /* answer with the prompt the model saw */
};

/*
 * A parsed and validated request. Strings are borrowed from root, which the
 * request owns; release with server__request_release().
 */
struct oai_request {
    enum oai_kind kind;
    cJSON *root;
    const char *model;              /* NULL: not given */
    const char *user;               /* the end user's id, or NULL (experiments stick to it) */
    struct oai_prompt *prompts;     /* (n_prompts) */
    int n_prompts;
    struct chat_msg *msgs;          /* (n_msgs), chat only */
    int n_msgs;
    int max_tokens;                 /* 0: not given */
    struct engine_sampling sampling;
    struct engine_logit_bias *bias; /* owned; sampling.bias points here */
    bool has_seed;
    const char *stop[OAI_MAX_STOP + 1];   /* + the chat template's end of turn */
    int n_stop;
    int n;
    bool stream, include_usage, ignore_eos;
    bool logprobs;                  /* chosen token's logprob */
    int top_logprobs;
    /* "adapters": [{"name", "scale"}] (has_adapters: given, maybe empty) and "lora_scale" */
    struct oai_adapter adapters[OAI_MAX_ADAPTERS];
    int n_adapters;
    bool has_adapters, has_lora_scale;
    float lora_scale;
    bool has_retrieval;
    struct oai_retrieval rtv;
    char *injected;                 /* owned: the system message or prompt with the context */
};

/*
 * Retrieval's context goes into r: a chat's first system message (made if
 * there is none) or a completion's prompt starts with context. Call before
 * server__request_tokenize. 0 or -ENOMEM.
 */
int server__request_inject(struct oai_request *r, const char *context);
/*
 * How many tokens r's (first) prompt would have with context injected, as
 * server__request_inject and server__request_tokenize would make it (the
 * chat template, BOS and all): 0 with *n_tokens, or -ENOMEM, -EINVAL.
 */
int server__request_measure(const struct oai_request *r, const struct tokenizer *tok,
                            enum chat_family fam, const char *context, int *n_tokens);
/* The text retrieval searches with: the last user message, or the prompt. */
const char *server__request_query(const struct oai_request *r);

/*
 * Parses body[0..len) as a request of kind. n_vocab bounds token ids and
 * logit_bias keys. Returns 0, or a negative errno with e filled: -EILSEQ
 * (invalid UTF-8), -EBADMSG (malformed JSON), -EINVAL (a field of the wrong
 * type or range, named in e->param). r is always safe to release.
 */
int server__parse_request(enum oai_kind kind, const char *body, size_t len, int n_vocab,
                          struct oai_request *r, struct oai_err *e);
void server__request_release(struct oai_request *r);

/*
 * The adapters request r runs with, by the rules in README ("Choosing an
 * adapter"): without "adapters", a model other than base_id is an adapter
 * name used at lora_scale (default 1); with "adapters", those are used and
 * model must be absent, base_id or one of their names. Fills out[0..*n)
 * (names borrowed from r). Returns 0, or -EINVAL with e filled. Whether the
 * names exist is not checked here.
 */
int server__select_adapters(const struct oai_request *r, const char *base_id,
                            struct oai_adapter *out, int *n, struct oai_err *e);

/*
 * Turns the prompts (or the messages, through chat template fam) into token
 * ids and checks them and max_tokens against a context of n_ctx; sets
 * max_tokens when it was not given. Returns 0 or -EINVAL with e filled.
 */
int server__request_tokenize(struct oai_request *r, const struct tokenizer *tok,
                             enum chat_family fam, int n_ctx, struct oai_err *e);

/* ---- Text released to the client (textout.c) --------------------------- */

/*
 * Generated bytes go in token by token; what comes out never ends inside a
 * UTF-8 character, never contains a stop sequence, and holds back the longest
 * tail that could still become one.
 */
struct textout {
    const char *const *stop;        /* borrowed, non-empty strings */
    int n_stop;
    struct sbuf hold;               /* pushed but not yet released */
    size_t pushed, released;        /* byte counts since the start */
    bool stopped;
};

void server__textout_init(struct textout *t, const char *const *stop, int n_stop);
void server__textout_release(struct textout *t);
/*
 * Appends p[0..n) and releases what is safe onto out. Returns 1 if a stop
 * sequence matched (the text before it was released, the rest dropped; push
 * nothing more), 0, or -ENOMEM.
 */
int server__textout_push(struct textout *t, const char *p, size_t n, struct sbuf *out);
/* End of generation: releases everything held. */
int server__textout_flush(struct textout *t, struct sbuf *out);

/* ---- Choices and responses (openai.c) --------------------------------- */

/* A generated token kept for logprobs, with where its text starts. */
struct tok_rec {
    struct engine_tok t;
    size_t off;                     /* byte offset in the choice's generated text */
};

/* One choice of a response: one engine request. */
struct choice {
    int index;
    int prompt;                     /* index into the request's prompts */
    struct engine_req *er;          /* owned reference; NULL if not submitted */
    struct textout tx;
    struct sbuf text;               /* released text (stream: since the last chunk) */
    struct tok_rec *toks;           /* (n_toks), when logprobs are asked for */
    int n_toks, cap_toks;
    int n_lp_sent;                  /* toks already sent in chunks */
    int n_gen;                      /* tokens generated, the end token included */
    const char *finish;             /* NULL while running, "stop" or "length" */
    bool final_sent;
};

struct oai_meta {
    enum oai_kind kind;
    char id[48];
    const char *model;
    long long created;
    bool logprobs;
    int top_logprobs;
    bool include_usage;
    const cJSON *retrieval;         /* the response's "retrieval" object, or NULL */
};

struct oai_usage {
    int prompt_tokens, completion_tokens;
};

/* The whole non-streaming response body; caller frees. NULL when out of memory. */
char *server__response_json(const struct oai_meta *m, const struct choice *c, int n,
                            const struct oai_usage *u, const struct tokenizer *tok);
/*
 * Appends "data: {chunk}\n\n" for choice c: with role (chat's first chunk),
 * or the released text c->text and logprobs of c->toks[n_lp_sent..n_lp), or
 * (final) an empty delta with c->finish. 0 or -ENOMEM.
 */
enum oai_chunk { OAI_CHUNK_ROLE, OAI_CHUNK_TEXT, OAI_CHUNK_FINAL };
int server__sse_chunk(struct sbuf *out, const struct oai_meta *m, const struct choice *c,
                      enum oai_chunk what, int n_lp, const struct tokenizer *tok);
/* The usage chunk (choices []), and "data: [DONE]\n\n". */
int server__sse_usage(struct sbuf *out, const struct oai_meta *m, const struct oai_usage *u);
/* ---- Retrieval on generation requests (rag.c) -------------------------- */

struct server;
struct rag;
struct who;
/*
 * Pool thread: searches r's vector stores (those who may use) with its
 * question (a failure is kept for apply).
 */
struct rag *server__rag_search(struct server *s, const struct who *who,
                               const struct oai_request *r);
/*
 * Loop thread, before tokenizing: the search's failure in e (404 for an
 * unknown store), or the best chunks that fit put into r as its context.
 */
int server__rag_apply(struct server *s, struct rag *g, struct oai_request *r, struct oai_err *e);
/* After tokenizing: with echo, the prompt the model sees goes into the answer. */
void server__rag_echo(struct rag *g, const struct oai_request *r, const struct tokenizer *tok);
/* The response's "retrieval" object, or NULL. */
const cJSON *server__rag_json(const struct rag *g);
void server__rag_free(struct rag *g);

/* The first chunk of a stream with retrieval: no choices, the "retrieval" object. */
int server__sse_retrieval(struct sbuf *out, const struct oai_meta *m);
int server__sse_done(struct sbuf *out);
/* Appends the raw bytes of token id. 0, -EINVAL or -ENOMEM. */
int server__piece(const struct tokenizer *tok, int32_t id, struct sbuf *out);
/* Tokens of c whose text has been released (logprobs to report). */
int server__choice_n_released(const struct choice *c);

/* ---- Tenants, keys and limits (tenants.c) ----------------------------- */

#define TENANT_ID_MAX 32            /* "ten_" / "key_" ids, NUL included */
#define TENANT_NAME_MAX 256
#define TENANT_KEY_MAX 64           /* a key's text, NUL included */

/* A tenant's limits; 0 means none. */
struct tenant_limits {
    int max_concurrent, requests_per_minute, tokens_per_minute;
};

struct tenant_info {
    uint32_t no;                    /* 1, 2, ...: the engine's tenant number */
    char id[TENANT_ID_MAX];         /* "ten_" + 16 hex */
    char name[TENANT_NAME_MAX + 1];
    struct tenant_limits limits;
    long long created_at;
    int n_keys;
};

/* Who sent a request: the admin (tenant 0; everyone in open mode) or a tenant. */
struct who {
    uint32_t tenant;
    bool admin;
    char id[TENANT_ID_MAX];         /* the tenant's id, "" for the admin */
};

struct tenants;
struct server;
struct MHD_Connection;
struct op;
/* Opens the tables in db; admin_key NULL or "": open mode. 0, or -errno with err. */
int server__tenants_open(const char *db, const char *admin_key, struct tenants **out, char *err,
                         size_t errlen);
void server__tenants_close(struct tenants *t);     /* accepts NULL */
bool server__tenants_open_mode(const struct tenants *t);
/* Who an Authorization header value (or NULL) stands for: 0, or -EACCES. Any thread. */
int server__tenants_auth(struct tenants *t, const char *authorization, struct who *out);
/*
 * A request of tenant (spending tokens tokens now) starts: 0, or -EAGAIN
 * with the seconds to wait and the name of the limit that refused it. Each
 * admitted request ends with server__tenant_done (tokens: those it spent
 * beyond what it was charged; negative gives the rest back).
 */
int server__tenant_admit(struct tenants *t, uint32_t tenant, int tokens, int *retry_after,
                         char *what, size_t len);
void server__tenant_done(struct tenants *t, uint32_t tenant, int tokens);
/* Spends tokens (or gives them back, if negative) from tenant's tokens per minute. */
void server__tenant_charge(struct tenants *t, uint32_t tenant, int tokens);
/* The admin API's changes (they write SQLite: call on the pool). 0, -ENOENT, -EIO, -ENOMEM. */
int server__tenant_create(struct tenants *t, const char *name, const struct tenant_limits *lim,
                          struct tenant_info *out);
int server__tenant_get(struct tenants *t, const char *id, struct tenant_info *out);
int server__tenant_list(struct tenants *t, struct tenant_info **out, int *n);  /* free() it */
int server__tenant_update(struct tenants *t, const char *id, const struct tenant_limits *lim,
                          struct tenant_info *out);
int server__tenant_delete(struct tenants *t, const char *id);
/* A new key of tenant id: key_id (TENANT_ID_MAX) and the key itself (TENANT_KEY_MAX, shown once). */
int server__tenant_key_create(struct tenants *t, const char *id, char *key_id, char *key,
                              long long *created_at);
int server__tenant_key_delete(struct tenants *t, const char *id, const char *key_id);
/* /v1/tenants and below (tenants_api.c), for the admin only; errors in e as usual. */
int server__tenants_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                          const char *method, const char *url, const char *body, size_t len,
                          struct op **out, struct oai_err *e);
/*
 * A generation or embedding request of who starts: 0 (then
 * server__tenant_done when it ends), or 429 in e with retry_after.
 */
int server__limits_admit(struct server *s, const struct who *who, struct oai_err *e);
int server__tenants_check(struct server *s, const struct who *who, const char *method,
                          const char *url, const char *body, size_t len, struct oai_err *e);
/* The methods a /v1/tenants path takes (for 405's Allow). */
const char *server__tenants_allow(const char *url);

/* ---- A/B experiments (experiments.c, experiments_api.c) --------------- */

#define EXP_MAX_VARIANTS 8
#define EXP_NAME_MAX 128

struct exp_info {
    char owner[TENANT_ID_MAX];      /* the tenant's id; "" the admin's, shared */
    char name[EXP_NAME_MAX + 1];
    struct {
        char model[ADAPTERS_NAME_MAX + 1];  /* the base model's id or an adapter of owner's */
        double weight;
    } variants[EXP_MAX_VARIANTS];
    int n;
    bool sticky_user;               /* route by a hash of "user" when given */
    long long created_at, updated_at;
};

/* Where a request went. */
struct exp_pick {
    char owner[TENANT_ID_MAX];
    char name[EXP_NAME_MAX + 1];
    char variant[ADAPTERS_NAME_MAX + 1];
};

/* What a routed request left behind. */
struct exp_record {
    char id[96];                    /* the completion's id */
    char owner[TENANT_ID_MAX];
    char experiment[EXP_NAME_MAX + 1];
    char variant[ADAPTERS_NAME_MAX + 1];
    char user[129];                 /* "" none */
    char tenant[TENANT_ID_MAX];     /* who sent it ("" the admin): who may score it */
    double latency, ttft;           /* seconds */
    int tokens;                     /* completion tokens */
    int error;
};

/* A variant's figures (latency and TTFT of the requests without error). */
struct exp_stats {
    long long requests, errors, tokens;
    double latency_mean, latency_p95, ttft_mean, ttft_p95;
    long fb_n;                      /* feedback scores: count, mean, sum of squared deviations */
    double fb_mean, fb_m2;
};

struct experiments;
int server__experiments_open(const char *db, struct experiments **out, char *err,
                             size_t errlen);
void server__experiments_close(struct experiments *x);     /* flushes; accepts NULL */
/*
 * Loop: if name is an experiment who can use (its own, else a shared one),
 * picks a variant (by user's hash when sticky, else at random): 1 with *out,
 * else 0.
 */
int server__experiment_pick(struct experiments *x, const struct who *who, const char *name,
                            const char *user, struct exp_pick *out);
/* Loop: keeps r until the next flush (which anything reading records does first). */
void server__experiment_record(struct experiments *x, const struct exp_record *r);
/* The rest reads or writes SQLite: call on the pool. */
void server__experiments_flush(struct experiments *x);
int server__experiment_get(struct experiments *x, const struct who *who, const char *name,
                           struct exp_info *out);
int server__experiment_list(struct experiments *x, const struct who *who,
                            struct exp_info **out, int *n);      /* free() it */
/* create: -EEXIST if it exists; else -ENOENT if it does not. Sets the times. */
int server__experiment_put(struct experiments *x, struct exp_info *e, bool create);
int server__experiment_delete(struct experiments *x, const char *owner, const char *name);
/* Sets the feedback of completion id (who's own request): 0 with where it went, or -ENOENT. */
int server__experiment_feedback(struct experiments *x, const struct who *who, const char *id,
                                double score, struct exp_pick *out);
/* The figures of each of e's variants, into out[0..e->n). */
int server__experiment_stats(struct experiments *x, const struct exp_info *e,
                             struct exp_stats *out);
char *server__exp_variants_text(const struct exp_info *x);     /* JSON; free() it */
/* /v1/experiments... and /v1/feedback: checks, then runs on the pool as server__op_call does. */
int server__experiments_start(struct server *s, struct MHD_Connection *con,
                              const struct who *who, const char *method, const char *url,
                              const char *body, size_t len, struct op **out,
                              struct oai_err *e);
int server__experiments_check(struct server *s, const struct who *who, const char *method,
                              const char *url, const char *body, size_t len,
                              struct oai_err *e);

/* ---- Metrics (metrics.c) ---------------------------------------------- */

/* One generation request, as it ended. */
struct metric_req {
    const char *model;              /* what served it: the base, an adapter, a variant */
    const char *tenant;             /* its id; "" the admin */
    int status;                     /* the HTTP status (499: the client went away) */
    int prompt_tokens, gen_tokens;
    double latency, ttft;           /* seconds; ttft 0 if no token came */
};

struct metrics;
struct metrics *server__metrics_new(void);
void server__metrics_free(struct metrics *m);      /* accepts NULL */
void server__metrics_request(struct metrics *m, const struct metric_req *q);    /* any thread */
void server__metrics_search(struct metrics *m);    /* a vector store was searched; any thread */
/* GET /metrics' body (loop thread), or NULL when out of memory; caller frees. */
char *server__metrics_text(struct server *s);
/*
 * job.c, for vllm:lora_requests_info: the adapters (as their owners name
 * them) of the jobs that are running and of those still waiting, each list
 * comma-separated, without repeats.
 */
void server__jobs_lora(struct server *s, char *running, size_t rlen, char *waiting,
                       size_t wlen);

/* ---- The server (serve.c, http.c, job.c) ------------------------------ */

struct MHD_Daemon;
struct MHD_Connection;
struct job;
struct op;

struct server {
    const struct server_config *cfg;
    struct engine_model *model;
    const struct tokenizer *tok;
    struct engine_sched *sched;
    struct adapters *reg;           /* named LoRA adapters */
    struct retrieval_embedder *embedder;    /* "hash", for /v1/embeddings */
    struct retrieval_embedder *model_embedder;  /* the served model, by its id */
    struct engine_encoder *encoder;         /* --embedding-model, or NULL */
    struct retrieval_embedder *encoder_embedder;    /* it, by encoder_id */
    char encoder_id[256];                   /* its file name without .gguf */
    enum engine_pooling encoder_pooling;
    struct retrieval_stores *stores;        /* /v1/vector_stores */
    struct tenants *tenants;                /* keys and limits */
    struct experiments *experiments;        /* A/B tests */
    struct metrics *metrics;                /* /metrics */
    enum chat_family chat;
    int n_ctx;
    char model_id[256];
    long long started;

    uv_loop_t loop;
    uv_poll_t mhd_poll;             /* libmicrohttpd's epoll fd */
    uv_timer_t mhd_timer;           /* libmicrohttpd's timeouts */
    uv_async_t doorbell;            /* rung by the scheduler thread */
    uv_signal_t sigterm, sigint;
    uv_timer_t deadline;            /* end of --drain, then of the shutdown grace period */
    uv_timer_t trim;                /* returns freed adapter memory to the system */
    uv_work_t trim_work;
    bool trim_running, trim_again;
    uint64_t churn;                 /* + 1 when a job that used adapters or a change ends */
    uint64_t trim_churn;            /* churn at the last trim */
    struct MHD_Daemon *mhd;
    int port;

    struct job *jobs;               /* generating requests, a doubly linked list */
    struct op *ops;                 /* adapter changes running on the pool, likewise */
    int n_inflight;                 /* requests between their headers and completion */
    struct tconn *tconns;           /* every open connection (conns.c) */
    int n_conns;
    uv_timer_t sweep;               /* closes those past --request-timeout */
    unsigned long long n_timeouts, n_timeouts_said;
    bool poll_ready, draining, stopped;
    bool paused;                    /* POST /drain: no new work, keeps running */
    bool leaving;                   /* SIGTERM with --drain: serving, /health 503, then stop */
    uint64_t next_id;
};

/* routes.c: the routes of the HTTP API. */
enum route {
    ROUTE_NONE, ROUTE_HEALTH, ROUTE_METRICS, ROUTE_DRAIN, ROUTE_MODELS, ROUTE_MODEL,
    ROUTE_COMPLETIONS, ROUTE_CHAT, ROUTE_ADAPTERS, ROUTE_ADAPTER, ROUTE_ADAPTER_LOAD,
    ROUTE_ADAPTER_DELETE, ROUTE_VLLM_LOAD, ROUTE_VLLM_UNLOAD, ROUTE_EMBEDDINGS,
    ROUTE_VECTOR_STORES, ROUTE_TENANTS, ROUTE_EXPERIMENTS
};

/*
 * The route of method (HEAD counts as GET) on url, or ROUTE_NONE; then allow
 * holds the methods the path takes ("GET, POST"), or "" if no route has it.
 */
enum route server__route(const char *method, const char *url, char *allow, size_t allow_size);

/*
 * conns.c: each connection must send its request whole within
 * --request-timeout seconds of opening or of its previous answer. notify is
 * libmicrohttpd's connection callback (cls: the server); busy stops the clock
 * while a request is answered; sweep (a 1 s timer) shuts the late ones.
 */
struct tconn;
void server__conns_notify(void *cls, struct MHD_Connection *c, void **ctx,
                          enum MHD_ConnectionNotificationCode code);
void server__conn_busy(struct MHD_Connection *c, bool busy);
/* Whether c was opened beyond --max-connections (its request gets 503). */
bool server__conn_over(struct MHD_Connection *c);
void server__conns_sweep(uv_timer_t *timer);

/* http.c: sets up the loop and the daemon, serves until drained. 0 or -errno. */
int server__http_start(struct server *s);
int server__http_run(struct server *s);
/* Closes the loop's handles; call after the scheduler is freed. */
void server__http_close(struct server *s);
/* Runs libmicrohttpd now: after a pool callback resumed a connection. */
void server__http_kick(struct server *s);

/*
 * job.c: one generate request. server__job_start() parses, picks the
 * adapters, tokenizes and submits; on success the caller owns one reference
 * to *out. Errors fill e. A job whose adapters must first be loaded is
 * pending (its connection stays suspended) until the pool has them; then it
 * is submitted, or failed with an error to answer.
 */
int server__job_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                      enum oai_kind kind, const char *body, size_t len, struct job **out,
                      struct oai_err *e);
/* Takes new tokens of every job; resumes connections that have output. */
void server__jobs_drain(struct server *s);
/* The connection is gone or done: cancels and releases the engine requests, drops a ref. */
void server__job_close(struct job *j);
void server__job_ref(struct job *j);
void server__job_unref(struct job *j);
bool server__job_stream(const struct job *j);
bool server__job_done(const struct job *j);
bool server__job_pending(const struct job *j);
/* Whether the job failed after it was pending; if so, copies the error to e. */
bool server__job_failed(const struct job *j, struct oai_err *e);
/* "NAME@VERSION,..." of the adapter versions it runs on, or NULL for the base model. */
const char *server__job_adapter_header(const struct job *j);
/* The experiment variant it was routed to (x-loraserve-variant), or NULL. */
const char *server__job_variant(const struct job *j);
#define SERVER_VARIANT_HEADER "x-loraserve-variant"
/* The first choice's time to first token in scheduler iterations (a response header), or -1. */
int server__job_ttft_iterations(const struct job *j);
/* The client hung up while the job was suspended. */
bool server__job_gone(const struct job *j);
void server__job_set_suspended(struct job *j, bool on);
/* Non-streaming: the response body (caller frees) or NULL when out of memory. */
char *server__job_body(struct job *j);
/* Streaming: libmicrohttpd's content reader and its free callback (cls = job). */
ssize_t server__job_read(void *cls, uint64_t pos, char *buf, size_t max);
void server__job_read_done(void *cls);
/* Cancels every running request (shutdown deadline); resumes every suspended one. */
void server__jobs_cancel_all(struct server *s);
void server__jobs_resume_all(struct server *s);

/* ---- Adapters over HTTP (manage.c) ------------------------------------ */

#define SERVER_ADAPTER_HEADER "x-loraserve-adapter-version"

/*
 * Tenants' adapters: a tenant's adapter NAME is the registry key
 * "TENANT_ID/NAME"; the admin's keys have no owner and are shared. For name
 * as who uses it: the key of who's own adapter (own: always; else only if
 * registered), else the shared one; a tenant's name with '/' gives "".
 */
void server__adapter_key(const struct server *s, const struct who *who, const char *name,
                         bool own, char *key, size_t len);
/* The name who knows key by, or NULL if it is another tenant's (the admin sees every key). */
const char *server__adapter_shown(const struct who *who, const char *key);
/* The /v1/models cards who sees: base and adapters; one card, or NULL if id is unknown. */
cJSON *server__models_json(struct server *s, const struct who *who);
cJSON *server__model_json(struct server *s, const struct who *who, const char *id);
/* GET /v1/adapters' body for who, or NULL when out of memory; caller frees. */
char *server__adapters_json(struct server *s, const struct who *who);
/* One adapter's entry, or NULL if who has no adapter of that name. */
cJSON *server__adapter_json(struct server *s, const struct who *who, const char *name);
/* Adapters registered, and resident among them. */
void server__adapters_count(struct server *s, int *registered, int *loaded);
/* /health's "adapters" object: counts and bytes. */
cJSON *server__adapters_health(struct server *s);
/*
 * The trim timer's callback (every second): once adapter versions have come
 * and gone since the last look, malloc_trim runs on the pool, so the pages of
 * freed versions go back to the system and the resident size follows the
 * adapters actually alive.
 */
void server__adapters_tick(uv_timer_t *t);

/*
 * The changes, run on the libuv pool: POST /v1/adapters, DELETE
 * /v1/adapters/{name}, vLLM's load_lora_adapter and unload_lora_adapter.
 */
enum op_kind { OP_LOAD, OP_UNLOAD, OP_VLLM_LOAD, OP_VLLM_UNLOAD };
/*
 * Checks the request and queues the change: 0 with *out, the connection
 * suspended until the change is done; or an error in e (answer it now).
 * url_name is the {name} of DELETE, else NULL.
 */
int server__op_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                     enum op_kind kind, const char *url_name, const char *body, size_t len,
                     struct op **out, struct oai_err *e);
int server__op_check(struct server *s, const struct who *who, enum op_kind kind,
                     const char *url_name, const char *body, size_t len, struct oai_err *e);
/*
 * Any other slow answer runs the same way: fn(o, arg) on the pool sets the
 * answer with server__op_answer (body malloc'd, taken) or
 * server__op_answer_error; arg_free(arg) runs when the op is freed. 0 with
 * *out and the connection suspended, or an error in e (arg_free has run).
 */
typedef void (*server_op_fn)(struct op *o, void *arg);
int server__op_call(struct server *s, struct MHD_Connection *con, server_op_fn fn, void *arg,
                    void (*arg_free)(void *arg), struct op **out, struct oai_err *e);
void server__op_answer(struct op *o, int status, const char *ctype, char *body);
/* A 200 with j's text (j deleted; NULL or no memory: a 500). */
void server__op_answer_json(struct op *o, cJSON *j);
/* {"id", "object", "deleted": true}, what a DELETE answers. */
cJSON *server__deleted_json(const char *id, const char *object);
void server__op_answer_error(struct op *o, const struct oai_err *e);
/*
 * The served model as a retrieval_embed_fn (arg: the server): the text
 * tokenized as a prompt, through engine_sched_embed (waits: off the loop).
 */
int server__model_embed(void *arg, const char *text, size_t len, float *out, int *n_tokens);
/* The same with the embedding model (arg: the server); texts beyond its context are cut. */
int server__encoder_embed(void *arg, const char *text, size_t len, float *out, int *n_tokens);
/* Whether id names the embedding model (which cannot generate). */
bool server__is_encoder(const struct server *s, const char *id);
/*
 * POST /v1/embeddings (embeddings.c): checks the body and embeds on the pool
 * as server__op_call does; or an error in e.
 */
int server__embeddings_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                             const char *body, size_t len, struct op **out, struct oai_err *e);
/*
 * The *_check functions run exactly the checks their *_start function makes
 * of a request (path and body) and answer 0 or the error in e, without
 * queueing any work: for the fuzz targets (tests/fuzz) and tests.
 */
int server__embeddings_check(struct server *s, const char *body, size_t len, struct oai_err *e);
/*
 * /v1/vector_stores and everything under it (vector_stores.c): checks the
 * method, path and body, and runs the store call on the pool as
 * server__op_call does; or an error in e (404, 405, 400).
 */
int server__vector_stores_start(struct server *s, struct MHD_Connection *con,
                                const struct who *who, const char *method, const char *url,
                                const char *body, size_t len, struct op **out,
                                struct oai_err *e);
int server__vector_stores_check(struct server *s, const struct who *who, const char *method,
                                const char *url, const char *body, size_t len,
                                struct oai_err *e);
/* Whether who sees a store of owner: its own, a shared one ("" owner), or any for the admin. */
bool server__store_visible(const struct who *who, const char *owner);
/*
 * Whether who may use store id (write: change it, which a shared store allows
 * only the admin): 0, or 404 (unknown or another tenant's) / 403 in e. Takes
 * the stores' lock: call on the pool.
 */
int server__store_access(struct server *s, const struct who *who, const char *id, bool write,
                         struct oai_err *e);
/* A request body that must be a JSON object: 0 with *out (caller deletes), or 400 in e. */
int server__parse_object(const char *body, size_t len, cJSON **out, struct oai_err *e);
/* A done change's answer: its status and content type, and the body (caller frees). */
char *server__op_reply(struct op *o, int *status, const char **ctype);
/* The request is over: frees o now, or when its work ends. */
void server__op_detach(struct op *o);
/* Shutdown: resumes the connections of every running change. */
void server__ops_resume_all(struct server *s);

/* ---- Statistics for A/B experiments (stats.c) ------------------------- */

/*
 * Pure functions of their arguments: any thread. Scores are feedback in
 * [0, 1], but nothing here depends on that.
 */

/* Welch's two-sample t-test of mean_b - mean_a (two-sided), from summary statistics. */
struct stats_welch {
    double diff;        /* mean_b - mean_a */
    double t, df;       /* Welch's t and its Welch-Satterthwaite degrees of freedom */
    double p;           /* two-sided p-value: 1 when the means are equal */
    double lo, hi;      /* the conf (e.g. 0.95) confidence interval of diff */
};
/*
 * var_* are sample variances (n - 1 in the denominator). 0 with *out filled,
 * or -EINVAL (and *out untouched) if a mean or variance is NaN or infinite, a
 * variance is negative, n_a or n_b < 2, conf not in (0, 1), or both variances
 * are 0 (then t is undefined). One variance 0 is fine.
 */
int server__welch(double mean_a, double var_a, long n_a, double mean_b, double var_b, long n_b,
                  double conf, struct stats_welch *out);
/*
 * Student's t distribution with df > 0 degrees of freedom (INFINITY: the
 * normal): P(T <= t), better than 1e-10 relative in either tail (1e-12 for df
 * from 1 to 1e14, |t| <= 50); a tail beyond the doubles is 0, never NaN. NaN
 * for a NaN argument or df <= 0.
 */
double server__t_cdf(double t, double df);
/*
 * Its inverse: the t with P(T <= t) = p, for p in (0, 1), better than 1e-9
 * relative; -+INFINITY if that t is beyond the doubles (p < 1e-308 for df = 1);
 * NaN for p outside (0, 1), a NaN argument or df <= 0.
 */
double server__t_quantile(double p, double df);
/* Running mean and sample variance (Welford), for feeding server__welch. */
struct stats_acc {
    long n;
    double mean, m2;    /* m2: the sum of squared deviations from mean */
};
#define STATS_ACC_INIT { 0, 0, 0 }
void server__acc_add(struct stats_acc *a, double x);
double server__acc_var(const struct stats_acc *a);   /* sample variance, 0 if n < 2 */

#endif

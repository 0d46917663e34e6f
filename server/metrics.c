/*
 * metrics.c - GET /metrics in Prometheus' text format (version 0.0.4).
 *
 * Counters kept here (under mu: jobs count on the loop, searches on the
 * pool): requests by model, tenant and status; prompt and generated tokens
 * by model and tenant; latency and time-to-first-token histograms by model;
 * retrieval searches. The rest is read when scraped: the scheduler's queue,
 * running sequences, KV blocks, iterations and preemptions; the adapters'
 * memory, loads and evictions. The series the Kubernetes Gateway API
 * Inference Extension (llm-d) reads from vLLM are written under vLLM's exact
 * names, so a loraserve pod routes adapter-aware with vLLM's mapping:
 * vllm:num_requests_waiting, vllm:num_requests_running,
 * vllm:kv_cache_usage_perc (0..1), vllm:cache_config_info and
 * vllm:lora_requests_info (value: the time of the update, adapters as
 * comma-separated lists).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "server_int.h"

static const double lat_bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                     120 };
#define N_BOUNDS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

struct hist {
    uint64_t bucket[N_BOUNDS];      /* counts per bound (not cumulative) */
    uint64_t count;
    double sum;
};

struct series {
    char model[ADAPTERS_NAME_MAX + 1];
    char tenant[TENANT_ID_MAX];
    int status;                     /* requests; 0 for the token and histogram rows */
    uint64_t n, prompt, gen;
    struct hist latency, ttft;
};

struct metrics {
    pthread_mutex_t mu;
    struct series *v;
    int n, cap;
    uint64_t searches;
};

struct metrics *
server__metrics_new(void)
{
    struct metrics *m = server__xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void
server__metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->v);
    free(m);
}

/* The row of (model, tenant, status), made if new; NULL when out of memory. */
static struct series *
row(struct metrics *m, const char *model, const char *tenant, int status)
{
    for (int i = 0; i < m->n; i++)
        if (m->v[i].status == status && strcmp(m->v[i].model, model) == 0 &&
            strcmp(m->v[i].tenant, tenant) == 0)
            return &m->v[i];
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        struct series *v = realloc(m->v, (size_t)cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        m->v = v, m->cap = cap;
    }
    struct series *r = &m->v[m->n++];
    *r = (struct series){ .status = status };
    snprintf(r->model, sizeof(r->model), "%s", model);
    snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
    return r;
}

static void
observe(struct hist *h, double x)
{
    size_t i = 0;
    while (i < N_BOUNDS && x > lat_bounds[i])
        i++;
    if (i < N_BOUNDS)
        h->bucket[i]++;
    h->count++;
    h->sum += x;
}

void
server__metrics_request(struct metrics *m, const struct metric_req *q)
{
    const char *tenant = q->tenant[0] ? q->tenant : "admin";
    pthread_mutex_lock(&m->mu);
    struct series *r = row(m, q->model, tenant, q->status);
    if (r != NULL)
        r->n++;
    struct series *t = q->status == 200 ? row(m, q->model, tenant, 0) : NULL;
    if (t != NULL) {
        t->prompt += (uint64_t)q->prompt_tokens;
        t->gen += (uint64_t)q->gen_tokens;
        observe(&t->latency, q->latency);
        if (q->ttft > 0)
            observe(&t->ttft, q->ttft);
    }
    pthread_mutex_unlock(&m->mu);
}

void
server__metrics_search(struct metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->searches++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- Text out -------------------------------------------------------- */

static void
out(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
out(struct sbuf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        server__buf_add(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A label value with \, " and newlines escaped (at most 511 bytes of it). */
static const char *
esc(const char *s, char *buf, size_t len)
{
    size_t j = 0;
    for (; *s && j + 3 < len; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            buf[j++] = '\\';
            buf[j++] = *s == '\n' ? 'n' : *s;
        } else {
            buf[j++] = *s;
        }
    }
    buf[j] = '\0';
    return buf;
}

static void
head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    out(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
hist_out(struct sbuf *b, const char *name, const char *labels, const struct hist *h)
{
    uint64_t acc = 0;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        acc += h->bucket[i];
        out(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, lat_bounds[i],
            (unsigned long long)acc);
    }
    out(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
    out(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
        (unsigned long long)h->count);
}

static void
counters_out(struct sbuf *b, struct metrics *m)
{
    char e1[512], e2[128], labels[700];
    pthread_mutex_lock(&m->mu);
    head(b, "loraserve_requests_total", "counter",
         "Generation requests by model (base, adapter or experiment variant), tenant, status.");
    for (int i = 0; i < m->n; i++)
        if (m->v[i].status != 0)
            out(b, "loraserve_requests_total{model=\"%s\",tenant=\"%s\",status=\"%d\"} %llu\n",
                esc(m->v[i].model, e1, sizeof(e1)), esc(m->v[i].tenant, e2, sizeof(e2)),
                m->v[i].status, (unsigned long long)m->v[i].n);
    const char *tok[2] = { "loraserve_prompt_tokens_total", "loraserve_generation_tokens_total" };
    for (int k = 0; k < 2; k++) {
        head(b, tok[k], "counter", k ? "Tokens generated." : "Prompt tokens processed.");
        for (int i = 0; i < m->n; i++)
            if (m->v[i].status == 0)
                out(b, "%s{model=\"%s\",tenant=\"%s\"} %llu\n", tok[k],
                    esc(m->v[i].model, e1, sizeof(e1)), esc(m->v[i].tenant, e2, sizeof(e2)),
                    (unsigned long long)(k ? m->v[i].gen : m->v[i].prompt));
    }
    const char *hn[2] = { "loraserve_request_latency_seconds",
                          "loraserve_time_to_first_token_seconds" };
    for (int k = 0; k < 2; k++) {
        head(b, hn[k], "histogram", k ? "Time to the first token." : "Time to the last token.");
        for (int i = 0; i < m->n; i++) {
            if (m->v[i].status != 0)
                continue;
            snprintf(labels, sizeof(labels), "model=\"%s\",tenant=\"%s\"",
                     esc(m->v[i].model, e1, sizeof(e1)), esc(m->v[i].tenant, e2, sizeof(e2)));
            hist_out(b, hn[k], labels, k ? &m->v[i].ttft : &m->v[i].latency);
        }
    }
    head(b, "loraserve_retrieval_searches_total", "counter", "Vector store searches.");
    out(b, "loraserve_retrieval_searches_total %llu\n", (unsigned long long)m->searches);
    pthread_mutex_unlock(&m->mu);
}

static void
engine_out(struct sbuf *b, struct server *s, const struct engine_sched_stats *st)
{
    double usage = st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0;
    const struct { const char *name, *type, *help; double v; } g[] = {
        { "loraserve_queue_depth", "gauge", "Requests waiting for a slot.", st->waiting },
        { "loraserve_running_sequences", "gauge", "Sequences in slots.", st->running },
        { "loraserve_slots", "gauge", "Slots (--parallel).", st->n_slots },
        { "loraserve_kv_cache_usage_ratio", "gauge", "KV blocks in use, 0 to 1.", usage },
        { "loraserve_kv_cache_blocks", "gauge", "KV blocks in the pool.", st->kv_blocks_total },
        { "loraserve_scheduler_iterations_total", "counter", "Forward passes run.",
          (double)st->iterations },
        { "loraserve_preemptions_total", "counter", "Sequences preempted for fairness.",
          (double)st->preemptions },
        { "loraserve_prefix_cache_hit_tokens_total", "counter",
          "Prompt positions served from the prefix cache.",
          (double)engine_sched_prefix_hits(s->sched) },
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        head(b, g[i].name, g[i].type, g[i].help);
        out(b, "%s %.17g\n", g[i].name, g[i].v);
    }
}

static void
adapters_out(struct sbuf *b, struct server *s)
{
    uint64_t resident = 0, budget = 0, loads = 0, evictions = 0;
    adapters_memory(s->reg, &resident, &budget);
    adapters_counters(s->reg, &loads, &evictions);
    int n = 0, loaded = 0;
    server__adapters_count(s, &n, &loaded);
    const struct { const char *name, *type, *help; double v; } g[] = {
        { "loraserve_adapters_registered", "gauge", "Adapters registered.", n },
        { "loraserve_adapters_loaded", "gauge", "Adapters resident in memory.", loaded },
        { "loraserve_adapter_memory_bytes", "gauge", "Bytes of resident adapters.",
          (double)resident },
        { "loraserve_adapter_memory_limit_bytes", "gauge", "--max-adapter-memory (0: none).",
          (double)budget },
        { "loraserve_adapter_loads_total", "counter", "Adapter versions loaded.", (double)loads },
        { "loraserve_adapter_evictions_total", "counter", "Adapters evicted for memory.",
          (double)evictions },
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        head(b, g[i].name, g[i].type, g[i].help);
        out(b, "%s %.17g\n", g[i].name, g[i].v);
    }
}

/* The series vLLM exports under these names, as the inference gateway reads them. */
static void
vllm_out(struct sbuf *b, struct server *s, const struct engine_sched_stats *st)
{
    char model[600], running[1024] = "", waiting[1024] = "";
    esc(s->model_id, model, sizeof(model));
    head(b, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    out(b, "vllm:num_requests_waiting{model_name=\"%s\"} %d\n", model, st->waiting);
    head(b, "vllm:num_requests_running", "gauge", "Number of requests in model execution.");
    out(b, "vllm:num_requests_running{model_name=\"%s\"} %d\n", model, st->running);
    head(b, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
    out(b, "vllm:kv_cache_usage_perc{model_name=\"%s\"} %.6f\n", model,
        st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0);
    head(b, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig.");
    out(b, "vllm:cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%d\","
        "num_cpu_blocks=\"0\",cache_dtype=\"%s\"} 1.0\n", st->kv_block_size, st->kv_blocks_total,
        s->cfg->kv_type);
    server__jobs_lora(s, running, sizeof(running), waiting, sizeof(waiting));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char r2[1100], w2[1100];
    head(b, "vllm:lora_requests_info", "gauge", "Running stats on lora requests.");
    out(b, "vllm:lora_requests_info{max_lora=\"%d\",running_lora_adapters=\"%s\","
        "waiting_lora_adapters=\"%s\"} %.6f\n", st->n_slots, esc(running, r2, sizeof(r2)),
        esc(waiting, w2, sizeof(w2)), (double)tv.tv_sec + (double)tv.tv_usec * 1e-6);
}

char *
server__metrics_text(struct server *s)
{
    struct sbuf b = SBUF_INIT;
    struct engine_sched_stats st;
    engine_sched_stats(s->sched, &st);
    counters_out(&b, s->metrics);
    engine_out(&b, s, &st);
    adapters_out(&b, s);
    vllm_out(&b, s, &st);
    return b.p;
}

/*
 * serve.c - `loraserve serve`: flags and LORASERVE_* variables -> a server
 * config, then the model, the scheduler and the HTTP loop, torn down in the
 * reverse order (the scheduler before the doorbell it rings).
 *
 * Every flag --foo-bar also comes from the variable LORASERVE_FOO_BAR; a flag
 * given on the command line wins over the variable. A repeatable flag
 * (--adapter) takes a comma-separated list from its variable, and any use of
 * the flag replaces the whole list.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "server_int.h"

/* ---- Setup ------------------------------------------------------------ */

static int
pick_chat(struct server *s)
{
    const char *name = s->cfg->chat_template;
    if (name != NULL) {
        if (chat_family_from_name(name, &s->chat) == 0)
            return 0;
        fprintf(stderr, "loraserve: unknown --chat-template '%s' (one of:", name);
        for (int f = 0; f < CHAT_FAMILY_COUNT; f++)
            fprintf(stderr, " %s", chat_family_name((enum chat_family)f));
        fprintf(stderr, ")\n");
        return -EINVAL;
    }
    struct gguf_str t = { NULL, 0 };
    bool known = false;
    if (gguf_get_str(engine_model_gguf(s->model), "tokenizer.chat_template", &t) < 0)
        t.ptr = NULL;
    s->chat = chat_family_detect(t.ptr, (size_t)t.len, &known);
    if (t.ptr != NULL && !known)
        fprintf(stderr, "loraserve: the model's chat template is not one we know; using "
                "chatml (see --chat-template)\n");
    return 0;
}

/* The file name of path without its directory and ".gguf". */
static void
file_id(const char *path, char *id, size_t len)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    snprintf(id, len, "%.*s", (int)n, base);
}

static void
default_id(struct server *s)
{
    const char *id = s->cfg->model_id;
    if (id != NULL)
        snprintf(s->model_id, sizeof(s->model_id), "%s", id);
    else
        file_id(s->cfg->model_path, s->model_id, sizeof(s->model_id));
}

static enum engine_pooling
pooling_of(const char *name)
{
    return strcmp(name, "cls") == 0 ? ENGINE_POOL_CLS
           : strcmp(name, "last") == 0 ? ENGINE_POOL_LAST : ENGINE_POOL_MEAN;
}

/* --embedding-model: a BERT GGUF for /v1/embeddings and vector stores, by its file name. */
static int
open_encoder(struct server *s)
{
    const struct server_config *cfg = s->cfg;
    char err[512] = "";
    if (cfg->embedding_model == NULL)
        return 0;
    file_id(cfg->embedding_model, s->encoder_id, sizeof(s->encoder_id));
    if (strcmp(s->encoder_id, s->model_id) == 0 || strcmp(s->encoder_id, "hash") == 0) {
        fprintf(stderr, "loraserve: --embedding-model %s: its id '%s' is taken (by the served "
                "model or the hash embedder)\n", cfg->embedding_model, s->encoder_id);
        return -EINVAL;
    }
    int rc = engine_encoder_open(cfg->embedding_model, cfg->threads, &s->encoder, err,
                                 sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return rc;
    }
    s->encoder_pooling = cfg->embedding_pooling ? pooling_of(cfg->embedding_pooling)
                                                : engine_encoder_pooling(s->encoder);
    rc = retrieval_fn_new(s->encoder_id, engine_encoder_dim(s->encoder), server__encoder_embed,
                          s, &s->encoder_embedder);
    if (rc == 0)
        rc = retrieval_stores_add_embedder(s->stores, s->encoder_embedder);
    if (rc < 0)
        fprintf(stderr, "loraserve: cannot use '%s' as an embedder: %s\n", s->encoder_id,
                strerror(-rc));
    return rc;
}

/* mkdir -p: path and its missing parents. 0 or -errno. */
static int
make_dirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return mkdir(buf, 0750) < 0 && errno != EEXIST ? -errno : 0;
}

/* "NAME=PATH" -> name and the absolute path (PATH_MAX). 0, or -EINVAL with a line on stderr. */
static int
split_adapter(const char *arg, char *name, size_t len, char *path)
{
    const char *eq = strchr(arg, '=');
    int n = eq ? (int)(eq - arg) : 0;
    if (eq == NULL || (size_t)n >= len || eq[1] == '\0') {
        fprintf(stderr, "loraserve: --adapter '%s': expected NAME=PATH\n", arg);
        return -EINVAL;
    }
    snprintf(name, len, "%.*s", n, arg);
    if (realpath(eq + 1, path) == NULL) {
        fprintf(stderr, "loraserve: --adapter %s: %s: %s\n", name, eq + 1, strerror(errno));
        return -EINVAL;
    }
    return 0;
}

/* Loads the --adapter flags: each must load, or the server does not start. */
static int
load_flag_adapters(struct server *s, char (*names)[ADAPTERS_NAME_MAX + 1], char **paths)
{
    for (int i = 0; i < s->cfg->n_adapters; i++) {
        char err[512] = "";
        struct adapter *a = NULL;
        int rc = strcmp(names[i], s->model_id) == 0 ? -EINVAL
                 : adapters_load(s->reg, names[i], paths[i], false, &a, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "loraserve: --adapter %s: %s\n", names[i],
                    err[0] ? err : "the name is the base model's id");
            return rc;
        }
        fprintf(stderr, "loraserve: adapter %s version %lld (%s, rank %d) from %s\n", names[i],
                (long long)adapter_version(a), adapter_info(a)->format, adapter_info(a)->rank,
                paths[i]);
        adapter_unref(a);
    }
    return 0;
}

/* <data-dir>/loraserve.db: the adapter registry's and the vector stores' database. */
static void
db_path(const struct server_config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/loraserve.db", cfg->data_dir);
}

/*
 * Opens the registry in <data-dir>/loraserve.db with the --adapter paths and
 * --adapter-dir as roots, then loads the --adapter flags.
 */
static int
open_adapters(struct server *s)
{
    const struct server_config *cfg = s->cfg;
    int n = cfg->n_adapters, rc = 0;
    char (*names)[ADAPTERS_NAME_MAX + 1] = server__xcalloc((size_t)n + 1, sizeof(*names));
    char **paths = server__xcalloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n && rc == 0; i++) {
        paths[i] = server__xcalloc(PATH_MAX, 1);
        rc = split_adapter(cfg->adapters[i], names[i], sizeof(names[i]), paths[i]);
    }
    char db[PATH_MAX + 16], err[512] = "";
    db_path(cfg, db, sizeof(db));
    struct adapters_params p = { db, (const char *const *)paths, n, cfg->adapter_dir,
                                 cfg->max_lora_rank, cfg->max_adapter_memory };
    if (rc == 0 && (rc = adapters_open(s->model, &p, &s->reg, err, sizeof(err))) < 0)
        fprintf(stderr, "loraserve: %s\n", err);
    if (rc == 0)
        rc = load_flag_adapters(s, names, paths);
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(names);
    return rc;
}

static int open_scheduler(struct server *s);

static int
open_all(struct server *s)
{
    const struct server_config *cfg = s->cfg;
    char err[512] = "";
    int rc = engine_model_open(cfg->model_path, &s->model, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return rc;
    }
    s->tok = engine_model_tokenizer(s->model);
    if ((rc = pick_chat(s)) < 0)
        return rc;
    int train = engine_model_hparams(s->model)->n_ctx_train;
    s->n_ctx = cfg->ctx > 0 ? cfg->ctx : (train > 0 && train < 4096 ? train : 4096);
    default_id(s);
    if ((rc = make_dirs(cfg->data_dir)) < 0) {
        fprintf(stderr, "loraserve: cannot create --data-dir %s: %s\n", cfg->data_dir,
                strerror(-rc));
        return rc;
    }
    if ((rc = open_adapters(s)) < 0)
        return rc;
    if ((rc = retrieval_hash_new(cfg->embedding_dim, &s->embedder)) < 0) {
        fprintf(stderr, "loraserve: cannot make the hash embedder: %s\n", strerror(-rc));
        return rc;
    }
    char db[PATH_MAX + 16];
    db_path(cfg, db, sizeof(db));
    if ((rc = retrieval_stores_open(db, s->tok, s->embedder, &s->stores, err, sizeof(err))) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return rc;
    }
    if ((rc = server__tenants_open(db, cfg->admin_key, &s->tenants, err, sizeof(err))) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return rc;
    }
    s->metrics = server__metrics_new();
    if ((rc = server__experiments_open(db, &s->experiments, err, sizeof(err))) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return rc;
    }
    if (server__tenants_open_mode(s->tenants))
        fprintf(stderr, "loraserve: no --admin-key: the API is open to anyone who can reach "
                "it, with no tenants\n");
    if ((rc = open_encoder(s)) < 0)
        return rc;
    return open_scheduler(s);
}

/* The scheduler, and the served model as an embedder vector stores can be made with. */
static int
open_scheduler(struct server *s)
{
    const struct server_config *cfg = s->cfg;
    int rc = retrieval_fn_new(s->model_id, engine_model_hparams(s->model)->n_embd,
                              server__model_embed, s, &s->model_embedder);
    if (rc == 0 && strcmp(s->model_id, "hash") != 0) /* "hash" stays the built-in one */
        rc = retrieval_stores_add_embedder(s->stores, s->model_embedder);
    if (rc < 0) {
        fprintf(stderr, "loraserve: cannot use the model '%s' as an embedder: %s\n",
                s->model_id, strerror(-rc));
        return rc;
    }
    enum engine_kv_cache kv = strcmp(cfg->kv_type, "f16") == 0   ? ENGINE_KV_CACHE_F16
                              : strcmp(cfg->kv_type, "f32") == 0 ? ENGINE_KV_CACHE_F32
                                                                 : ENGINE_KV_CACHE_AUTO;
    struct engine_sched_params sp = { s->n_ctx, cfg->parallel, cfg->threads, cfg->queue,
                                      cfg->batch, kv };
    if ((rc = engine_sched_new(s->model, &sp, &s->sched)) < 0)
        fprintf(stderr, "loraserve: cannot start the scheduler (%d slots of %d positions): "
                "%s\n", cfg->parallel, s->n_ctx, strerror(-rc));
    return rc;
}

int
server_run(const struct server_config *cfg)
{
    struct server s = { 0 };
    s.cfg = cfg;
    s.started = (long long)time(NULL);
    s.next_id = (uint64_t)s.started;
    int rc = open_all(&s);
    bool loop = false;
    if (rc == 0) {
        loop = true;
        rc = server__http_start(&s);
    }
    if (rc == 0) {
        bool v6 = strchr(cfg->host, ':') != NULL;
        fprintf(stderr, "loraserve: listening on http://%s%s%s:%d (model %s, %s template, "
                "context %d, %d slots)\n", v6 ? "[" : "", cfg->host, v6 ? "]" : "", s.port,
                s.model_id, chat_family_name(s.chat), s.n_ctx, cfg->parallel);
        rc = server__http_run(&s);
    }
    engine_sched_stop(s.sched);     /* no more doorbells after this; embeddings refused */
    if (loop)
        server__http_close(&s);     /* runs the pool's last work and after-work callbacks */
    adapters_close(s.reg);
    retrieval_stores_close(s.stores);
    server__tenants_close(s.tenants);
    server__experiments_close(s.experiments);
    server__metrics_free(s.metrics);
    engine_sched_free(s.sched);     /* pool work that embedded is over */
    retrieval_embedder_free(s.model_embedder);
    retrieval_embedder_free(s.encoder_embedder);
    engine_encoder_free(s.encoder);
    retrieval_embedder_free(s.embedder);
    engine_model_free(s.model);
    if (rc == 0)
        fprintf(stderr, "loraserve: stopped\n");
    return rc;
}

/* ---- Flags ------------------------------------------------------------ */

/* "--max-body" -> "LORASERVE_MAX_BODY". */
static void
env_name(const char *flag, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "LORASERVE_%s", flag + 2);
    for (size_t i = 10; i < n && i < len; i++)
        buf[i] = buf[i] == '-' ? '_' : (char)toupper((unsigned char)buf[i]);
}

/* Whether argv sets flag f (then a list flag ignores its variable). */
static bool
given(const struct cli_flag *f, int argc, char **argv)
{
    size_t n = strlen(f->name);
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], f->name, n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
            return true;
    return false;
}

/* Appends "flag=value" to out[*n]. */
static void
push_arg(char **out, int *n, const char *flag, const char *v, size_t vlen)
{
    size_t len = strlen(flag) + vlen + 2;
    out[*n] = server__xcalloc(len, 1);
    snprintf(out[(*n)++], len, "%s=%.*s", flag, (int)vlen, v);
}

/* Items in a variable's comma-separated list (an upper bound for the array). */
static int
count_items(const char *v)
{
    int n = 1;
    for (; *v; v++)
        n += *v == ',';
    return n;
}

/* argv with "--flag=$LORASERVE_FLAG" first for each variable set; see free_argv(). */
static char **
env_argv(const struct cli_flag *flags, int argc, char **argv, int *n, int *n_env)
{
    int n_max = argc + 1;
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        char var[64];
        env_name(f->name, var, sizeof(var));
        n_max += getenv(var) ? count_items(getenv(var)) : 0;
    }
    char **out = server__xcalloc((size_t)n_max, sizeof(char *));
    *n = 0;
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        char var[64];
        env_name(f->name, var, sizeof(var));
        const char *v = f->kind == CLI_BOOL ? NULL : getenv(var);
        if (v == NULL || (f->kind == CLI_LIST && given(f, argc, argv)))
            continue;
        if (f->kind != CLI_LIST) {
            push_arg(out, n, f->name, v, strlen(v));
            continue;
        }
        for (const char *p = v, *end = NULL; *p; p = *end ? end + 1 : end) {
            end = strchr(p, ',') ? strchr(p, ',') : p + strlen(p);
            if (end > p)
                push_arg(out, n, f->name, p, (size_t)(end - p));
        }
    }
    *n_env = *n;
    for (int i = 0; i < argc; i++)
        out[(*n)++] = argv[i];
    return out;
}

/* Frees what env_argv() made: the first n_env strings and the array. */
static void
free_argv(char **a, int n_env)
{
    for (int i = 0; i < n_env; i++)
        free(a[i]);
    free(a);
}

static void
usage(const struct cli_flag *flags)
{
    printf("usage: loraserve serve --model M.gguf [options]\n"
           "       loraserve --model M.gguf [options]\n\n"
           "Serves the model over an OpenAI-compatible HTTP API until SIGTERM or SIGINT.\n"
           "Each option can also be set by the environment variable shown; the option wins.\n\n"
           "options:\n");
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        char names[48], var[64];
        snprintf(names, sizeof(names), "%s%s%s", f->alias ? f->alias : "",
                 f->alias ? ", " : "", f->name);
        env_name(f->name, var, sizeof(var));
        printf("  %-26s %s\n  %-26s [%s]\n", names, f->help, "",
               f->kind == CLI_BOOL ? "no variable" : var);
    }
}

static bool
pooling_valid(const char *p)
{
    return strcmp(p, "mean") == 0 || strcmp(p, "cls") == 0 || strcmp(p, "last") == 0;
}

static int
check_config(const struct server_config *c, int max_body)
{
    const char *bad = c->model_path == NULL ? "--model is required"
        : c->port < 0 || c->port > 65535 ? "--port must be 0..65535"
        : c->threads < 1 || c->threads > 256 ? "--threads must be 1..256"
        : c->ctx < 0 ? "--ctx must be >= 0"
        : c->parallel < 1 || c->parallel > 1024 ? "--parallel must be 1..1024"
        : c->queue < 0 ? "--queue must be >= 0"
        : c->batch < 1 || c->batch > 65536 ? "--batch must be 1..65536"
        : max_body < 1 ? "--max-body must be >= 1"
        : c->shutdown_timeout < 0 ? "--shutdown-timeout must be >= 0"
        : c->drain < 0 || c->drain > 3600 ? "--drain must be 0..3600"
        : c->max_lora_rank < 1 || c->max_lora_rank > 4096 ? "--max-lora-rank must be 1..4096"
        : strcmp(c->kv_type, "auto") != 0 && strcmp(c->kv_type, "f16") != 0 &&
          strcmp(c->kv_type, "f32") != 0 ? "--kv-type must be auto, f16 or f32"
        : c->request_timeout < 1 ? "--request-timeout must be >= 1"
        : c->max_connections < 1 || c->max_connections > 65536
            ? "--max-connections must be 1..65536"
        : c->max_connections_per_ip < 0 ? "--max-connections-per-ip must be >= 0"
        : c->embedding_dim < 1 || c->embedding_dim > RETRIEVAL_DIM_MAX
            ? "--embedding-dim must be 1..8192"
        : !pooling_valid(c->pooling) ? "--pooling must be mean, cls or last"
        : c->embedding_pooling && !pooling_valid(c->embedding_pooling)
            ? "--embedding-pooling must be mean, cls or last"
        : NULL;
    if (bad != NULL)
        fprintf(stderr, "loraserve serve: %s (see --help)\n", bad);
    return bad ? -EINVAL : 0;
}

int
server_main(int argc, char **argv)
{
    struct server_config c = SERVER_CONFIG_INIT;
    c.threads = cli_default_threads();
    int max_body = (int)c.max_body;
    bool help = false;
    struct cli_list adapters = { { NULL }, 0 };
    const struct cli_flag flags[] = {
        { "--model", "-m", CLI_STR, &c.model_path, "GGUF model file (required)" },
        { "--host", NULL, CLI_STR, &c.host, "address to listen on (default 127.0.0.1)" },
        { "--port", "-p", CLI_INT, &c.port, "TCP port, 0 = any free one (default 8080)" },
        { "--threads", "-t", CLI_INT, &c.threads, "math threads (default: all cores)" },
        { "--ctx", "-c", CLI_INT, &c.ctx, "context per slot (default: the model's, <= 4096)" },
        { "--parallel", "-np", CLI_INT, &c.parallel, "slots: sequences at once (default 4)" },
        { "--queue", NULL, CLI_INT, &c.queue, "max waiting requests, more => 429 (default 64)" },
        { "--batch", NULL, CLI_INT, &c.batch, "rows per forward pass (default 512)" },
        { "--data-dir", NULL, CLI_STR, &c.data_dir, "state directory (default ./loraserve-data)" },
        { "--max-body", NULL, CLI_INT, &max_body, "max request body bytes (default 1048576)" },
        { "--chat-template", NULL, CLI_STR, &c.chat_template,
          "chatml, llama2, llama3, mistral-v7, zephyr, phi3, gemma, ... (default: from GGUF)" },
        { "--model-id", "--alias", CLI_STR, &c.model_id,
          "model id in the API (default: file name without .gguf)" },
        { "--shutdown-timeout", NULL, CLI_INT, &c.shutdown_timeout,
          "seconds to finish requests after SIGTERM (default 30)" },
        { "--drain", NULL, CLI_INT, &c.drain,
          "seconds after SIGTERM still serving with /health 503, before the\n"
          "                             listener closes (default 0)" },
        { "--adapter", NULL, CLI_LIST, &adapters,
          "NAME=PATH: adapter (GGUF-LoRA file or PEFT dir) loaded at start;\n"
          "                             repeatable; the variable takes NAME=PATH,NAME=PATH" },
        { "--adapter-dir", NULL, CLI_STR, &c.adapter_dir,
          "adapters directory: a request for unknown NAME loads DIR/NAME" },
        { "--max-lora-rank", NULL, CLI_INT, &c.max_lora_rank,
          "adapters of a larger rank are refused (default 64)" },
        { "--max-adapter-memory", NULL, CLI_BYTES, &c.max_adapter_memory,
          "resident adapter bytes (K/M/G), LRU eviction beyond (default 0: no limit)" },
        { "--kv-type", NULL, CLI_STR, &c.kv_type,
          "KV cache: f16, f32, or auto = f32 for f32 models, else f16 (default auto)" },
        { "--embedding-dim", NULL, CLI_INT, &c.embedding_dim,
          "dimension of the hash embedder's vectors (default 384)" },
        { "--pooling", NULL, CLI_STR, &c.pooling,
          "the served model's embeddings: mean, cls (first token) or last (default mean)" },
        { "--embedding-model", NULL, CLI_STR, &c.embedding_model,
          "BERT GGUF embedding model for /v1/embeddings and vector stores (id: file name)" },
        { "--embedding-pooling", NULL, CLI_STR, &c.embedding_pooling,
          "its pooling: mean, cls or last (default: the file's bert.pooling_type)" },
        { "--request-timeout", NULL, CLI_INT, &c.request_timeout,
          "seconds a connection has to send a whole request (default 60)" },
        { "--max-connections", NULL, CLI_INT, &c.max_connections,
          "open connections at once; more are refused (default 1024)" },
        { "--max-connections-per-ip", NULL, CLI_INT, &c.max_connections_per_ip,
          "open connections from one address (default 0: no limit)" },
        { "--admin-key", NULL, CLI_STR, &c.admin_key,
          "the admin's API key: turns on tenants and keys (default: none, the API is open)" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    int n = 0, n_env = 0, n_pos = 0;
    char **all = env_argv(flags, argc, argv, &n, &n_env);
    const char *pos[1];
    int status = 2;
    if (cli_parse("serve", n, all, flags, pos, 0, &n_pos) < 0)
        goto out;
    if (help) {
        usage(flags);
        status = 0;
        goto out;
    }
    c.max_body = max_body;
    c.adapters = adapters.v;
    c.n_adapters = adapters.n;
    if (check_config(&c, max_body) < 0)
        goto out;
    status = server_run(&c) < 0 ? 1 : 0;
out:
    free_argv(all, n_env);
    return status;
}

/*
 * serve.c - `loraserve serve`: flags and LORASERVE_* variables -> a server
 * config, then the model, the scheduler and the HTTP loop, torn down in the
 * reverse order (the scheduler before the doorbell it rings).
 *
 * Every flag --foo-bar also comes from the variable LORASERVE_FOO_BAR; a flag
 * given on the command line wins over the variable.
 */
#include <ctype.h>
#include <errno.h>
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

/* The file name without its directory and ".gguf". */
static void
default_id(struct server *s)
{
    const char *id = s->cfg->model_id;
    if (id != NULL) {
        snprintf(s->model_id, sizeof(s->model_id), "%s", id);
        return;
    }
    const char *base = strrchr(s->cfg->model_path, '/');
    base = base ? base + 1 : s->cfg->model_path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    snprintf(s->model_id, sizeof(s->model_id), "%.*s", (int)n, base);
}

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
    if (mkdir(cfg->data_dir, 0750) < 0 && errno != EEXIST) {
        fprintf(stderr, "loraserve: cannot create --data-dir %s: %s\n", cfg->data_dir,
                strerror(errno));
        return -errno;
    }
    struct engine_sched_params sp = { s->n_ctx, cfg->parallel, cfg->threads, cfg->queue,
                                      cfg->batch };
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
    engine_sched_free(s.sched);     /* no more doorbells after this */
    if (loop)
        server__http_close(&s);
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

/* argv with "--flag=$LORASERVE_FLAG" first for each variable set; see free_argv(). */
static char **
env_argv(const struct cli_flag *flags, int argc, char **argv, int *n, int *n_env)
{
    int n_flags = 0;
    while (flags[n_flags].name != NULL)
        n_flags++;
    char **out = server__xcalloc((size_t)(n_flags + argc + 1), sizeof(char *));
    *n = 0;
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        char var[64];
        env_name(f->name, var, sizeof(var));
        const char *v = f->kind == CLI_BOOL ? NULL : getenv(var);
        if (v == NULL)
            continue;
        size_t len = strlen(f->name) + strlen(v) + 2;
        out[*n] = server__xcalloc(len, 1);
        snprintf(out[(*n)++], len, "%s=%s", f->name, v);
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
        : c->shutdown_timeout < 0 ? "--shutdown-timeout must be >= 0" : NULL;
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
    if (check_config(&c, max_body) < 0)
        goto out;
    status = server_run(&c) < 0 ? 1 : 0;
out:
    free_argv(all, n_env);
    return status;
}

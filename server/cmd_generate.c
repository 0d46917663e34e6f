/*
 * cmd_generate.c - "loraserve generate": prompt in, generated text streamed
 * to stdout (never the prompt), one timing line on stderr at the end.
 *
 * The prompt is evaluated in chunks of up to 512 tokens (batched prefill);
 * then one token at a time. Bytes of a token that end inside a UTF-8
 * character are held back until the character is complete.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "engine.h"

#define PREFILL_CHUNK 512

struct gen_opts {
    const char *model, *prompt;
    int n_predict, threads, ctx, top_k, repeat_last_n;
    float temp, top_p, min_p, repeat_penalty, presence, frequency;
    uint64_t seed;
    bool ignore_eos, special, help;
};

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes the complete UTF-8 prefix of pending text; keeps the rest. */
static void
flush_text(char *buf, size_t *len, bool final)
{
    size_t n = final ? *len : tokenizer_utf8_complete(buf, *len);
    fwrite(buf, 1, n, stdout);
    fflush(stdout);
    memmove(buf, buf + n, *len - n);
    *len -= n;
}

static int
prefill(struct engine_ctx *ctx, const int32_t *ids, int n, float *logits)
{
    int32_t pos[PREFILL_CHUNK], seq[PREFILL_CHUNK];
    bool want[PREFILL_CHUNK];
    for (int off = 0; off < n; off += PREFILL_CHUNK) {
        int m = n - off < PREFILL_CHUNK ? n - off : PREFILL_CHUNK;
        for (int i = 0; i < m; i++) {
            pos[i] = off + i;
            seq[i] = 0;
            want[i] = off + i == n - 1;
        }
        struct engine_batch b = { m, ids + off, pos, seq, want, NULL };
        int rc = engine_decode(ctx, &b, logits);
        if (rc < 0)
            return rc;
    }
    return 0;
}

struct gen_state {
    struct engine_ctx *ctx;
    const struct tokenizer *tok;
    struct engine_sampler *smp;
    float *logits;
    int n_vocab;
};

static void
ban_eog(const struct gen_state *g)
{
    for (int i = 0; i < g->n_vocab; i++)
        if (tokenizer_is_eog(g->tok, i))
            g->logits[i] = -INFINITY;
}

/* Generates up to n tokens after a prompt of n_prompt; returns forwards done or -errno. */
static int
decode_loop(struct gen_state *g, const struct gen_opts *o, int n_prompt, int n)
{
    char text[4096];
    size_t len = 0;
    int pos = n_prompt, steps = 0;
    for (int i = 0; i < n; i++) {
        if (o->ignore_eos)
            ban_eog(g);
        int32_t id = engine_sampler_sample(g->smp, g->logits);
        if (!o->ignore_eos && tokenizer_is_eog(g->tok, id))
            break;
        engine_sampler_accept(g->smp, id);
        int k = tokenizer_piece(g->tok, id, false, text + len, sizeof(text) - len);
        if (k > 0 && (size_t)k <= sizeof(text) - len)
            len += (size_t)k;
        flush_text(text, &len, false);
        if (i + 1 == n || pos >= engine_ctx_n_ctx(g->ctx))
            break;
        int32_t seq = 0;
        struct engine_batch b = { 1, &id, &pos, &seq, NULL, NULL };
        int rc = engine_decode(g->ctx, &b, g->logits);
        if (rc < 0)
            return rc;
        pos++;
        steps++;
    }
    flush_text(text, &len, true);
    return steps;
}

static int
run(const struct gen_opts *o, struct engine_model *m)
{
    const struct engine_hparams *hp = engine_model_hparams(m);
    const struct tokenizer *tok = engine_model_tokenizer(m);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = tokenizer_encode(tok, o->prompt, strlen(o->prompt), true, o->special, &ids, &n_ids);
    if (rc < 0) {
        fprintf(stderr, "loraserve: the prompt is not valid UTF-8\n");
        return 1;
    }
    int n_ctx = o->ctx > 0 ? o->ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (n_ids == 0 || (int)n_ids >= n_ctx) {
        fprintf(stderr, "loraserve: the prompt has %zu tokens; the context holds %d\n", n_ids,
                n_ctx);
        free(ids);
        return 1;
    }
    struct engine_sampling sp = {
        o->temp, o->top_k, o->top_p, o->min_p, o->repeat_penalty, o->repeat_last_n,
        o->presence, o->frequency, o->seed, NULL, 0
    };
    struct gen_state g = { NULL, tok, NULL, NULL, hp->n_vocab };
    g.logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int status = 1;
    if (g.logits == NULL || engine_ctx_new(m, n_ctx, 1, o->threads, &g.ctx) < 0 ||
        engine_sampler_new(&sp, hp->n_vocab, &g.smp) < 0) {
        fprintf(stderr, "loraserve: out of memory for a context of %d tokens\n", n_ctx);
        goto out;
    }
    for (size_t i = 0; i < n_ids; i++)
        engine_sampler_accept(g.smp, ids[i]);
    double t0 = now_s();
    if ((rc = prefill(g.ctx, ids, (int)n_ids, g.logits)) < 0)
        goto fail;
    double t1 = now_s();
    int steps = decode_loop(&g, o, (int)n_ids, o->n_predict);
    if ((rc = steps) < 0)
        goto fail;
    double t2 = now_s();
    fprintf(stderr, "\nprompt %zu tokens %.1f tok/s, decode %d tokens %.1f tok/s\n", n_ids,
            (double)n_ids / (t1 - t0), steps, steps > 0 ? steps / (t2 - t1) : 0.0);
    status = 0;
    goto out;
fail:
    fprintf(stderr, "loraserve: forward pass failed: %s\n", strerror(-rc));
out:
    engine_sampler_free(g.smp);
    engine_ctx_free(g.ctx);
    free(g.logits);
    free(ids);
    return status;
}

int
cli_generate(int argc, char **argv)
{
    struct gen_opts o = { NULL, NULL, 128, cli_default_threads(), 0, 40, 64, 0.8f, 0.95f, 0.05f,
                          1.0f, 0.0f, 0.0f, 0, false, false, false };
    o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const struct cli_flag flags[] = {
        { "--model", "-m", CLI_STR, &o.model, "GGUF model file (required)" },
        { "--prompt", "-p", CLI_STR, &o.prompt, "prompt text (required)" },
        { "--n-predict", "-n", CLI_INT, &o.n_predict, "tokens to generate (default 128)" },
        { "--temp", NULL, CLI_FLOAT, &o.temp, "temperature, 0 = greedy (default 0.8)" },
        { "--seed", "-s", CLI_U64, &o.seed, "random seed (default: from the clock)" },
        { "--top-k", NULL, CLI_INT, &o.top_k, "top-k, 0 = off (default 40)" },
        { "--top-p", NULL, CLI_FLOAT, &o.top_p, "top-p, 1 = off (default 0.95)" },
        { "--min-p", NULL, CLI_FLOAT, &o.min_p, "min-p, 0 = off (default 0.05)" },
        { "--repeat-penalty", NULL, CLI_FLOAT, &o.repeat_penalty, "default 1 (off)" },
        { "--repeat-last-n", NULL, CLI_INT, &o.repeat_last_n, "penalty window (default 64)" },
        { "--presence-penalty", NULL, CLI_FLOAT, &o.presence, "default 0" },
        { "--frequency-penalty", NULL, CLI_FLOAT, &o.frequency, "default 0" },
        { "--threads", "-t", CLI_INT, &o.threads, "math threads (default: all cores)" },
        { "--ctx", "-c", CLI_INT, &o.ctx, "context size (default: the model's, at most 4096)" },
        { "--ignore-eos", NULL, CLI_BOOL, &o.ignore_eos, "keep generating past end-of-text" },
        { "--special", NULL, CLI_BOOL, &o.special, "parse special-token text in the prompt" },
        { "--help", "-h", CLI_BOOL, &o.help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("generate", argc, argv, flags, pos, 0, &n_pos) < 0)
        return 2;
    if (o.help) {
        cli_usage("generate", "--model M.gguf --prompt TEXT [options]", flags);
        return 0;
    }
    if (o.model == NULL || o.prompt == NULL || o.n_predict < 0 || o.threads < 1 ||
        o.threads > 256 || o.ctx < 0) {
        fprintf(stderr, "loraserve generate: need --model and --prompt, -n >= 0, "
                "1 <= --threads <= 256 (see --help)\n");
        return 2;
    }
    char err[512] = "";
    struct engine_model *m = NULL;
    if (engine_model_open(o.model, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return 1;
    }
    int status = run(&o, m);
    engine_model_free(m);
    return status;
}

/*
 * cmd_tools.c - the model-file commands: info, tokenize, detokenize,
 * quantize and mkmodel. tokenize and detokenize need only a vocabulary, so
 * they work on vocabulary-only GGUF files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine.h"

/* ---- info ------------------------------------------------------------- */

static void
print_tensor_types(const struct gguf *g)
{
    int64_t count[GGUF_T_COUNT] = { 0 };
    size_t bytes[GGUF_T_COUNT] = { 0 };
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        count[t->type]++;
        bytes[t->type] += t->nbytes;
    }
    printf("tensor types:");
    for (int t = 0; t < GGUF_T_COUNT; t++)
        if (count[t] > 0)
            printf(" %s x %lld (%.2f MiB)", gguf_ttype_name((enum gguf_ttype)t),
                   (long long)count[t], (double)bytes[t] / (1 << 20));
    printf("\n");
}

static void
print_model(const struct engine_model *m)
{
    const struct engine_hparams *hp = engine_model_hparams(m);
    printf("architecture: %s\n", hp->arch);
    printf("parameters: %lld (%.2f M), tensor data %.2f MiB\n",
           (long long)engine_model_n_params(m), engine_model_n_params(m) / 1e6,
           (double)engine_model_bytes(m) / (1 << 20));
    printf("n_vocab %d, n_ctx_train %d, n_embd %d, n_layer %d, n_head %d, n_head_kv %d, "
           "head_dim %d, n_ff %d\n", hp->n_vocab, hp->n_ctx_train, hp->n_embd, hp->n_layer,
           hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff);
    printf("rope: n_rot %d, base %g, freq_scale %g, %s; rms_eps %g; output %s\n", hp->n_rot,
           hp->rope_base, hp->rope_freq_scale, hp->rope_neox ? "neox" : "normal", hp->rms_eps,
           hp->tied_output ? "tied to token_embd" : "separate");
}

static bool
is_adapter(const struct gguf *g)
{
    struct gguf_str s;
    return gguf_get_str(g, "general.type", &s) == 0 && s.len == 7 &&
           memcmp(s.ptr, "adapter", 7) == 0;
}

static int
info_file(const char *path, bool all)
{
    char err[512] = "";
    struct gguf *g = NULL;
    struct tokenizer *tok = NULL;
    struct engine_model *m = NULL;
    int status = 1;
    if (gguf_open(path, &g, err, sizeof(err)) < 0)
        goto out;
    bool model = gguf_n_tensors(g) > 0 && !is_adapter(g);
    if (model && engine_model_open(path, &m, err, sizeof(err)) < 0)
        goto out;
    char terr[400] = "";
    if (!model && gguf_find_key(g, "tokenizer.ggml.model") >= 0 &&
        tokenizer_new(g, &tok, terr, sizeof(terr)) < 0) {
        snprintf(err, sizeof(err), "%s: %s", path, terr);
        goto out;
    }
    printf("file: %s (GGUF v%u, %lld tensors, %lld metadata keys, alignment %zu)\n", path,
           gguf_version(g), (long long)gguf_n_tensors(g), (long long)gguf_n_kv(g),
           gguf_alignment(g));
    if (m != NULL)
        print_model(m);
    const struct tokenizer *t = m != NULL ? engine_model_tokenizer(m) : tok;
    if (t != NULL)
        printf("tokenizer: %s, pre-tokenizer %s, %d tokens, bos %d, eos %d\n",
               tokenizer_model_name(t), tokenizer_pre_name(t), tokenizer_n_vocab(t),
               tokenizer_bos(t), tokenizer_eos(t));
    print_tensor_types(g);
    for (int64_t i = 0; all && i < gguf_n_kv(g); i++) {
        char buf[256];
        printf("  %-48s %s\n", gguf_key(g, i), gguf_kv_format(g, i, buf, sizeof(buf)));
    }
    for (int64_t i = 0; all && i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *x = gguf_tensor(g, i);
        printf("  %-48s %-6s [%lld, %lld, %lld, %lld]\n", x->name, gguf_ttype_name(x->type),
               (long long)x->ne[0], (long long)x->ne[1], (long long)x->ne[2],
               (long long)x->ne[3]);
    }
    status = 0;
out:
    if (status != 0)
        fprintf(stderr, "loraserve: %s\n", err);
    engine_model_free(m);
    tokenizer_free(tok);
    gguf_free(g);
    return status;
}

int
cli_info(int argc, char **argv)
{
    bool all = false, help = false;
    const struct cli_flag flags[] = {
        { "--all", "-a", CLI_BOOL, &all, "also list every metadata key and tensor" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("info", argc, argv, flags, pos, 1, &n_pos) < 0)
        return 2;
    if (help || n_pos != 1) {
        cli_usage("info", "FILE.gguf [--all]", flags);
        return help ? 0 : 2;
    }
    return info_file(pos[0], all);
}

/* ---- tokenize / detokenize -------------------------------------------- */

static struct tokenizer *
open_vocab(const char *path)
{
    char err[512] = "", terr[400] = "";
    struct gguf *g = NULL;
    struct tokenizer *t = NULL;
    if (gguf_open(path, &g, err, sizeof(err)) < 0)
        fprintf(stderr, "loraserve: %s\n", err);
    else if (tokenizer_new(g, &t, terr, sizeof(terr)) < 0)
        fprintf(stderr, "loraserve: %s: %s\n", path, terr);
    gguf_free(g);
    return t;
}

static char *
read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf != NULL && (k = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

int
cli_tokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool bos = false, special = false, help = false;
    const struct cli_flag flags[] = {
        { "--model", "-m", CLI_STR, &model, "GGUF model or vocabulary file (required)" },
        { "--bos", NULL, CLI_BOOL, &bos, "add BOS/EOS as the vocabulary says" },
        { "--special", NULL, CLI_BOOL, &special, "parse special-token text" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("tokenize", argc, argv, flags, pos, 0, &n_pos) < 0)
        return 2;
    if (help || model == NULL) {
        cli_usage("tokenize", "--model M.gguf [--bos] [--special] < text", flags);
        return help ? 0 : 2;
    }
    struct tokenizer *t = open_vocab(model);
    if (t == NULL)
        return 1;
    size_t len = 0, n = 0;
    char *text = read_stdin(&len);
    int32_t *ids = NULL;
    int rc = text ? tokenizer_encode(t, text, len, bos, special, &ids, &n) : -ENOMEM;
    if (rc < 0)
        fprintf(stderr, "loraserve: %s\n",
                rc == -EINVAL ? "input is not valid UTF-8" : "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    if (rc == 0)
        printf("\n");
    free(ids);
    free(text);
    tokenizer_free(t);
    return rc < 0;
}

/* Parses whitespace-separated ids; returns the count or -1 with a message. */
static long
parse_ids(const char *text, int32_t n_vocab, int32_t **out)
{
    size_t cap = 64, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    const char *p = text;
    while (ids != NULL) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= n_vocab) {
            fprintf(stderr, "loraserve: '%.20s' is not a token id in [0, %d)\n", p, n_vocab);
            free(ids);
            return -1;
        }
        if (n == cap) {
            int32_t *ni = realloc(ids, cap * 2 * sizeof(*ids));
            if (ni == NULL)
                break;
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    return (long)n;
}

int
cli_detokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool special = false, help = false;
    const struct cli_flag flags[] = {
        { "--model", "-m", CLI_STR, &model, "GGUF model or vocabulary file (required)" },
        { "--special", NULL, CLI_BOOL, &special, "render control tokens as text" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("detokenize", argc, argv, flags, pos, 0, &n_pos) < 0)
        return 2;
    if (help || model == NULL) {
        cli_usage("detokenize", "--model M.gguf [--special] < ids", flags);
        return help ? 0 : 2;
    }
    struct tokenizer *t = open_vocab(model);
    if (t == NULL)
        return 1;
    size_t len = 0;
    char *text = read_stdin(&len);
    int32_t *ids = NULL;
    long n = -1;
    if (text != NULL) {
        text[len < 1 ? 0 : len - (len > 0 && text[len - 1] == '\0')] = '\0';
        n = parse_ids(text, tokenizer_n_vocab(t), &ids);
    }
    int status = 1;
    int need = n >= 0 ? tokenizer_decode(t, ids, (size_t)n, special, false, NULL, 0) : -1;
    char *out = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (out != NULL) {
        tokenizer_decode(t, ids, (size_t)n, special, false, out, (size_t)need + 1);
        fwrite(out, 1, (size_t)need, stdout);
        status = 0;
    }
    free(out);
    free(ids);
    free(text);
    tokenizer_free(t);
    return status;
}

/* ---- quantize / mkmodel ----------------------------------------------- */

int
cli_quantize(int argc, char **argv)
{
    int threads = cli_default_threads();
    bool help = false;
    const struct cli_flag flags[] = {
        { "--threads", "-t", CLI_INT, &threads, "threads (default: all cores)" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[3];
    int n_pos = 0;
    if (cli_parse("quantize", argc, argv, flags, pos, 3, &n_pos) < 0)
        return 2;
    if (help || n_pos != 3 || threads < 1 || threads > 256) {
        cli_usage("quantize", "IN.gguf OUT.gguf TYPE   (TYPE: f16, q8_0, q4_0, q4_k_m)", flags);
        return help ? 0 : 2;
    }
    char err[512] = "";
    if (engine_quantize_file(pos[0], pos[1], pos[2], threads, err, sizeof(err)) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return 1;
    }
    return 0;
}

int
cli_mkmodel(int argc, char **argv)
{
    struct engine_synth s = ENGINE_SYNTH_INIT;
    const char *vocab = NULL;
    bool help = false;
    const struct cli_flag flags[] = {
        { "--vocab", NULL, CLI_STR, &vocab, "GGUF file whose tokenizer to copy (required)" },
        { "--n-embd", NULL, CLI_INT, &s.n_embd, "embedding size (default 768)" },
        { "--n-layer", NULL, CLI_INT, &s.n_layer, "layers (default 12)" },
        { "--n-head", NULL, CLI_INT, &s.n_head, "attention heads (default 12)" },
        { "--n-head-kv", NULL, CLI_INT, &s.n_head_kv, "key/value heads (default 12)" },
        { "--n-ff", NULL, CLI_INT, &s.n_ff, "feed-forward size (default 2048)" },
        { "--ctx", NULL, CLI_INT, &s.n_ctx, "training context (default 2048)" },
        { "--seed", NULL, CLI_U64, &s.seed, "random seed (default 1234)" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("mkmodel", argc, argv, flags, pos, 1, &n_pos) < 0)
        return 2;
    if (help || n_pos != 1 || vocab == NULL) {
        cli_usage("mkmodel", "OUT.gguf --vocab V.gguf [shape options]", flags);
        return help ? 0 : 2;
    }
    char err[512] = "";
    if (engine_mkmodel(pos[0], vocab, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "loraserve: %s\n", err);
        return 1;
    }
    return 0;
}

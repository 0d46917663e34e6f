/*
 * cmd_mkadapter.c - `loraserve mkadapter`: a GGUF-LoRA adapter with seeded
 * random weights for a given base model, for benchmarks and tests.
 *
 * For each adapted projection W (n_out rows of k) of each layer it writes
 * A (rank rows of k) ~ N(0, 1/k) and B (n_out rows of rank) ~ N(0, b^2), with
 * alpha = rank (scale 1). For random x, |B A x| / |W x| is then about
 * sqrt(rank) * b * (1/sqrt(k)) / sigma_W, where sigma_W is the RMS of W (read
 * from its first rows); b is chosen to make that --strength (default 0.3), so
 * the adapter visibly changes outputs without swamping the base model.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine.h"

#define SIGMA_ROWS 16       /* rows of a base weight sampled for its RMS */

struct mkad {
    const struct engine_model *m;
    int rank;
    float strength;
    uint64_t rng;
    unsigned targets;       /* bit t: adapt engine_lora_target t */
    struct gguf_writer *w;
    float **bufs;           /* data the writer borrows until it writes */
    int n_bufs;
};

/* splitmix64 -> a uniform double in (0, 1). */
static double
uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * 0x1.0p-53;
}

/* n values from N(0, std^2), by Box-Muller. */
static void
fill_normal(float *v, size_t n, double std, uint64_t *s)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = uniform(s), u2 = uniform(s), r = sqrt(-2.0 * log(u1));
        v[i] = (float)(r * cos(2 * M_PI * u2) * std);
        if (i + 1 < n)
            v[i + 1] = (float)(r * sin(2 * M_PI * u2) * std);
    }
}

/* RMS of the first rows of a base weight (any type the engine reads); 0 if unreadable. */
static double
weight_rms(const struct gguf_tensor *t)
{
    int64_t rows = t->ne[1] < SIGMA_ROWS ? t->ne[1] : SIGMA_ROWS, n = rows * t->ne[0];
    float *v = malloc((size_t)n * sizeof(float));
    double sum = 0;
    if (v != NULL && engine_tensor_to_f32(t->type, t->data, v, n) == 0)
        for (int64_t i = 0; i < n; i++)
            sum += (double)v[i] * v[i];
    free(v);
    return sqrt(sum / (double)n);
}

static float *
add_matrix(struct mkad *c, const char *name, int64_t ne0, int64_t ne1, double std)
{
    float *v = malloc((size_t)(ne0 * ne1) * sizeof(float));
    if (v == NULL)
        return NULL;
    fill_normal(v, (size_t)(ne0 * ne1), std, &c->rng);
    c->bufs[c->n_bufs++] = v;
    int64_t ne[2] = { ne0, ne1 };
    gguf_writer_add_tensor(c->w, name, GGUF_T_F32, 2, ne, v, (size_t)(ne0 * ne1) * sizeof(float));
    return v;
}

/* The lora_a / lora_b pair of one projection of one layer. */
static int
add_pair(struct mkad *c, int layer, enum engine_lora_target t, char *err, size_t errlen)
{
    char base[96], name[128];
    snprintf(base, sizeof(base), "blk.%d.%s.weight", layer, engine_lora_target_name(t));
    const struct gguf_tensor *w = gguf_find_tensor(engine_model_gguf(c->m), base);
    if (w == NULL || w->n_dims != 2) {
        snprintf(err, errlen, "the model has no 2-D tensor %s", base);
        return -EINVAL;
    }
    int64_t k = w->ne[0], n_out = w->ne[1];
    double sigma = weight_rms(w), std_a = 1.0 / sqrt((double)k);
    /* |B A x| ~ sqrt(rank) std_b std_a sqrt(k) |x|rms; |W x| ~ sigma sqrt(k) |x|rms. */
    double std_b = c->strength * sigma / (sqrt((double)c->rank) * std_a);
    snprintf(name, sizeof(name), "%s.lora_a", base);
    bool ok = add_matrix(c, name, k, c->rank, std_a) != NULL;
    snprintf(name, sizeof(name), "%s.lora_b", base);
    ok = ok && add_matrix(c, name, c->rank, n_out, std_b) != NULL;
    if (!ok)
        snprintf(err, errlen, "out of memory");
    return ok ? 0 : -ENOMEM;
}

/* "all", or a comma-separated list of attn_q, ..., ffn_down (q_proj, ... also work). */
static int
parse_targets(const char *s, unsigned *out)
{
    static const char *const peft[ENGINE_LORA_N_TARGETS] = {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    };
    *out = 0;
    if (strcmp(s, "all") == 0) {
        *out = (1u << ENGINE_LORA_N_TARGETS) - 1;
        return 0;
    }
    for (const char *p = s, *end = NULL; *p; p = *end ? end + 1 : end) {
        end = strchr(p, ',') ? strchr(p, ',') : p + strlen(p);
        int found = -1;
        for (int t = 0; t < ENGINE_LORA_N_TARGETS && found < 0; t++) {
            const char *a = engine_lora_target_name((enum engine_lora_target)t), *b = peft[t];
            if ((strlen(a) == (size_t)(end - p) && strncmp(a, p, (size_t)(end - p)) == 0) ||
                (strlen(b) == (size_t)(end - p) && strncmp(b, p, (size_t)(end - p)) == 0))
                found = t;
        }
        if (found < 0)
            return -EINVAL;
        *out |= 1u << found;
    }
    return *out != 0 ? 0 : -EINVAL;
}

static int
write_adapter(struct mkad *c, const char *out, char *err, size_t errlen)
{
    const struct engine_hparams *hp = engine_model_hparams(c->m);
    c->w = gguf_writer_new();
    c->bufs = calloc((size_t)hp->n_layer * ENGINE_LORA_N_TARGETS * 2, sizeof(float *));
    int rc = c->bufs ? 0 : -ENOMEM;
    gguf_writer_set_str(c->w, "general.architecture", hp->arch);
    gguf_writer_set_str(c->w, "general.type", "adapter");
    gguf_writer_set_str(c->w, "general.name", "loraserve-mkadapter");
    gguf_writer_set_str(c->w, "adapter.type", "lora");
    gguf_writer_set_f32(c->w, "adapter.lora.alpha", (float)c->rank);
    for (int il = 0; il < hp->n_layer && rc == 0; il++)
        for (int t = 0; t < ENGINE_LORA_N_TARGETS && rc == 0; t++)
            if (c->targets & (1u << t))
                rc = add_pair(c, il, (enum engine_lora_target)t, err, errlen);
    if (rc == -ENOMEM && err[0] == '\0')
        snprintf(err, errlen, "out of memory");
    if (rc == 0)
        rc = gguf_writer_write(c->w, out, err, errlen);
    for (int i = 0; i < c->n_bufs; i++)
        free(c->bufs[i]);
    free(c->bufs);
    gguf_writer_free(c->w);
    return rc;
}

int
cli_mkadapter(int argc, char **argv)
{
    const char *model = NULL, *targets = "attn_q,attn_v";
    int rank = 16;
    float strength = 0.3f;
    uint64_t seed = 1;
    bool help = false;
    const struct cli_flag flags[] = {
        { "--model", "-m", CLI_STR, &model, "the base model (GGUF) it adapts (required)" },
        { "--rank", "-r", CLI_INT, &rank, "rank (default 16); alpha = rank" },
        { "--seed", NULL, CLI_U64, &seed, "random seed (default 1)" },
        { "--targets", NULL, CLI_STR, &targets,
          "all, or a list of attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down "
          "(default attn_q,attn_v)" },
        { "--strength", NULL, CLI_FLOAT, &strength,
          "|delta W x| / |W x| for random x (default 0.3)" },
        { "--help", "-h", CLI_BOOL, &help, "show this help" },
        { NULL, NULL, 0, NULL, NULL },
    };
    const char *pos[1];
    int n_pos = 0;
    if (cli_parse("mkadapter", argc, argv, flags, pos, 1, &n_pos) < 0)
        return 2;
    struct mkad c = { .rank = rank, .strength = strength, .rng = seed };
    bool bad = n_pos != 1 || model == NULL || rank < 1 || rank > 4096 ||
               !(strength >= 0 && strength <= 100) || parse_targets(targets, &c.targets) < 0;
    if (!help && n_pos == 1 && model != NULL && parse_targets(targets, &c.targets) < 0)
        fprintf(stderr, "loraserve mkadapter: unknown --targets '%s'\n", targets);
    if (help || bad) {
        cli_usage("mkadapter", "OUT.gguf --model M.gguf [--rank 16] [--seed S] [--targets all]",
                  flags);
        return help ? 0 : 2;
    }
    char err[512] = "";
    struct engine_model *m = NULL;
    int rc = engine_model_open(model, &m, err, sizeof(err));
    c.m = m;
    if (rc == 0)
        rc = write_adapter(&c, pos[0], err, sizeof(err));
    engine_model_free(m);
    if (rc < 0)
        fprintf(stderr, "loraserve mkadapter: %s\n", err);
    return rc < 0 ? 1 : 0;
}

/*
 * peft.c - Hugging Face PEFT adapter directories: adapter_config.json and
 * adapter_model.safetensors.
 *
 * Weights are named base_model.model.model.layers.N.{self_attn,mlp}.X.lora_{A,B}.weight
 * in the Hugging Face layout: lora_A is (r, in) and lora_B is (out, r), the
 * same row-major matrices the engine takes. Module X maps to the engine's
 * targets (q/k/v/o_proj -> attn_q/k/v/output, gate/up/down_proj ->
 * ffn_gate/up/down). A llama GGUF base stores its Q and K rows permuted for
 * llama.cpp's RoPE (convert_hf_to_gguf's LlamaModel.permute), so the rows of
 * q_proj's and k_proj's lora_B are permuted the same way; qwen2 bases keep the
 * Hugging Face order. The scale is lora_alpha / r (lora_alpha / sqrt(r) with
 * use_rslora), per module when rank_pattern / alpha_pattern say so.
 *
 * The weights decide what is adapted; the config must agree with them. Any
 * option that would change the math in a way the engine does not do (bias,
 * DoRA, modules_to_save, fan_in_fan_out, ...) is refused, never ignored.
 * sha256 is taken over the config's bytes followed by the safetensors' bytes.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapters_int.h"

#define MAX_CONFIG_BYTES (1u << 20)

static const struct {
    const char *group;      /* self_attn or mlp */
    const char *proj;
    enum engine_lora_target t;
} modules[] = {
    { "self_attn", "q_proj", ENGINE_LORA_Q },    { "self_attn", "k_proj", ENGINE_LORA_K },
    { "self_attn", "v_proj", ENGINE_LORA_V },    { "self_attn", "o_proj", ENGINE_LORA_O },
    { "mlp", "gate_proj", ENGINE_LORA_GATE },    { "mlp", "up_proj", ENGINE_LORA_UP },
    { "mlp", "down_proj", ENGINE_LORA_DOWN },
};
#define N_MODULES ((int)(sizeof(modules) / sizeof(modules[0])))
#define MODULE_LIST "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"

struct pctx {
    const struct engine_model *m;
    const struct engine_hparams *hp;
    int max_rank;
    char cfg_path[PATH_MAX + 32];
    char st_path[PATH_MAX + 32];
    const void *cfg_buf, *st_buf;
    size_t cfg_len, st_len;
    /* adapter_config.json */
    cJSON *cfg;
    int r;
    double alpha;
    bool rslora;
    const cJSON *targets;       /* array of module names; NULL with all_linear or target_re */
    bool all_linear;
    pcre2_code *target_re;      /* target_modules given as a regular expression */
    const cJSON *rank_pattern;  /* objects, or NULL */
    const cJSON *alpha_pattern;
    /* adapter_model.safetensors */
    struct adapters_st *st;
    struct engine_lora *l;
    struct adapters_info *info;
    char *err;
    size_t errlen;
};

static int
fail(struct pctx *c, int rc, const char *file, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s", file, msg);
    adapters__one_line(c->err);
    return rc;
}

/* ---- Regular expressions (target_modules as a string, *_pattern keys) -- */

/* Whole-string match of key against a compiled pattern. */
static bool
re_match(const pcre2_code *re, const char *key)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int n = md ? pcre2_match(re, (PCRE2_SPTR)key, strlen(key), 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    return n >= 0;
}

/* Compiles "^(?:prefix)(?:pattern)$" (Python's re.fullmatch); NULL with err set. */
static pcre2_code *
re_compile(struct pctx *c, const char *prefix, const char *pattern)
{
    size_t n = strlen(prefix) + strlen(pattern) + 16;
    char *full = malloc(n);
    if (full == NULL) {
        fail(c, -ENOMEM, c->cfg_path, "out of memory");
        return NULL;
    }
    snprintf(full, n, "^(?:%s)(?:%s)$", prefix, pattern);
    int code = 0;
    PCRE2_SIZE at = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)full, PCRE2_ZERO_TERMINATED, 0, &code, &at,
                                   NULL);
    free(full);
    if (re == NULL) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        fail(c, -EINVAL, c->cfg_path, "pattern \"%.64s\" is not a regular expression: %s",
             pattern, (const char *)msg);
    }
    return re;
}

/*
 * The value of the first key of a rank_pattern / alpha_pattern object that
 * matches module key (PEFT's get_pattern_key: "(.*\.)?(KEY)$"), or NULL.
 */
static int
pattern_value(struct pctx *c, const cJSON *patterns, const char *key, const cJSON **out)
{
    *out = NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, patterns) {
        if (strcmp(e->string, key) == 0) {
            *out = e;
            return 0;
        }
        pcre2_code *re = re_compile(c, "(?:.*\\.)?", e->string);
        if (re == NULL)
            return -EINVAL;
        bool hit = re_match(re, key);
        pcre2_code_free(re);
        if (hit) {
            *out = e;
            return 0;
        }
    }
    return 0;
}

/* ---- adapter_config.json ---------------------------------------------- */

/* A boolean option that is absent or null (def), or true/false. */
static int
cfg_bool(struct pctx *c, const char *key, bool def, bool *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->cfg, key);
    *out = def;
    if (j == NULL || cJSON_IsNull(j))
        return 0;
    if (!cJSON_IsBool(j))
        return fail(c, -EINVAL, c->cfg_path, "%s is not true or false", key);
    *out = cJSON_IsTrue(j);
    return 0;
}

/* A string option equal to want, or absent or null when not required. */
static int
cfg_string_is(struct pctx *c, const char *key, const char *want, bool required)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->cfg, key);
    if ((j == NULL || cJSON_IsNull(j)) && !required)
        return 0;
    if (!cJSON_IsString(j))
        return fail(c, -EINVAL, c->cfg_path, "%s is not a string (expected \"%s\")", key, want);
    if (strcmp(j->valuestring, want) != 0)
        return fail(c, -EINVAL, c->cfg_path, "%s is \"%.40s\"; loraserve supports only \"%s\"",
                    key, j->valuestring, want);
    return 0;
}

static bool
cfg_is_empty(const cJSON *j)
{
    return j == NULL || cJSON_IsNull(j) || ((cJSON_IsArray(j) || cJSON_IsObject(j)) &&
                                            cJSON_GetArraySize(j) == 0);
}

/* Options whose math the engine does not do are refused, not ignored. */
static int
check_unsupported(struct pctx *c)
{
    bool fan_in_fan_out = false, dora = false, lora_bias = false;
    int rc = 0;
    if ((rc = cfg_string_is(c, "peft_type", "LORA", false)) < 0 ||
        (rc = cfg_string_is(c, "task_type", "CAUSAL_LM", false)) < 0 ||
        (rc = cfg_string_is(c, "bias", "none", false)) < 0 ||
        (rc = cfg_bool(c, "fan_in_fan_out", false, &fan_in_fan_out)) < 0 ||
        (rc = cfg_bool(c, "use_dora", false, &dora)) < 0 ||
        (rc = cfg_bool(c, "lora_bias", false, &lora_bias)) < 0)
        return rc;
    if (fan_in_fan_out)
        return fail(c, -EINVAL, c->cfg_path, "fan_in_fan_out is true (Conv1D weights); LLaMA "
                    "adapters have it false");
    if (dora)
        return fail(c, -EINVAL, c->cfg_path, "use_dora is true; DoRA adapters are not supported");
    if (lora_bias)
        return fail(c, -EINVAL, c->cfg_path, "lora_bias is true; LoRA biases are not supported");
    if (!cfg_is_empty(cJSON_GetObjectItemCaseSensitive(c->cfg, "modules_to_save")))
        return fail(c, -EINVAL, c->cfg_path, "modules_to_save is set; loraserve applies LoRA "
                    "deltas only, not full copies of modules");
    if (!cfg_is_empty(cJSON_GetObjectItemCaseSensitive(c->cfg, "layer_replication")))
        return fail(c, -EINVAL, c->cfg_path, "layer_replication is not supported");
    return 0;
}

/* A rank: a positive integer up to max_rank. */
static int
check_rank(struct pctx *c, const char *what, const cJSON *j, int *out)
{
    if (j == NULL)
        return fail(c, -EINVAL, c->cfg_path, "%s is missing", what);
    if (!cJSON_IsNumber(j))
        return fail(c, -EINVAL, c->cfg_path, "%s is not a number", what);
    double d = j->valuedouble;
    if (!(d >= 1.0) || d != floor(d))
        return fail(c, -EINVAL, c->cfg_path, "%s must be a positive integer (got %g)", what, d);
    if (d > c->max_rank)
        return fail(c, -EINVAL, c->cfg_path, "%s %.0f is above the maximum rank %d "
                    "(--max-lora-rank)", what, d, c->max_rank);
    *out = (int)d;
    return 0;
}

static int
check_alpha(struct pctx *c, const char *what, const cJSON *j, double *out)
{
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || fabs(j->valuedouble) > 1e6)
        return fail(c, -EINVAL, c->cfg_path, "%s is not a number in [-1e6, 1e6]", what);
    *out = j->valuedouble;
    return 0;
}

/* A target_modules entry names a module by its last dotted component. */
static bool
adaptable(const char *name)
{
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    for (int i = 0; i < N_MODULES; i++)
        if (strcmp(last, modules[i].proj) == 0)
            return true;
    return false;
}

static int
parse_targets(struct pctx *c)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->cfg, "target_modules");
    if (cJSON_IsString(j) && strcmp(j->valuestring, "all-linear") == 0) {
        c->all_linear = true;
        return 0;
    }
    if (cJSON_IsString(j)) {
        if ((c->target_re = re_compile(c, "", j->valuestring)) == NULL)
            return -EINVAL;
        static const char *other[] = { "model.embed_tokens", "lm_head" };
        for (int i = 0; i < 2; i++)
            if (re_match(c->target_re, other[i]))
                return fail(c, -EINVAL, c->cfg_path, "target_modules matches %s, which "
                            "loraserve cannot adapt (" MODULE_LIST ")", other[i]);
        return 0;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0)
        return fail(c, -EINVAL, c->cfg_path, "target_modules is not a list of module names");
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsString(e))
            return fail(c, -EINVAL, c->cfg_path, "target_modules holds a non-string");
        if (!adaptable(e->valuestring))
            return fail(c, -EINVAL, c->cfg_path, "target module \"%.64s\" is not one loraserve "
                        "can adapt (" MODULE_LIST ")", e->valuestring);
    }
    c->targets = j;
    return 0;
}

/* Whether module key (e.g. model.layers.0.self_attn.q_proj) is targeted, as PEFT decides. */
static bool
targeted(const struct pctx *c, const char *key)
{
    if (c->all_linear)
        return true;
    if (c->target_re != NULL)
        return re_match(c->target_re, key);
    const cJSON *e;
    size_t kl = strlen(key);
    cJSON_ArrayForEach(e, c->targets) {
        size_t tl = strlen(e->valuestring);
        if (strcmp(key, e->valuestring) == 0 ||
            (kl > tl && key[kl - tl - 1] == '.' && strcmp(key + kl - tl, e->valuestring) == 0))
            return true;
    }
    return false;
}

static int
parse_patterns(struct pctx *c)
{
    c->rank_pattern = cJSON_GetObjectItemCaseSensitive(c->cfg, "rank_pattern");
    c->alpha_pattern = cJSON_GetObjectItemCaseSensitive(c->cfg, "alpha_pattern");
    const cJSON *p[2] = { c->rank_pattern, c->alpha_pattern };
    const char *what[2] = { "rank_pattern", "alpha_pattern" };
    for (int i = 0; i < 2; i++) {
        if (p[i] != NULL && !cJSON_IsNull(p[i]) && !cJSON_IsObject(p[i]))
            return fail(c, -EINVAL, c->cfg_path, "%s is not an object", what[i]);
        const cJSON *e, *obj = cJSON_IsObject(p[i]) ? p[i] : NULL;
        cJSON_ArrayForEach(e, obj) {
            char w[96];
            snprintf(w, sizeof(w), "%s[\"%.40s\"]", what[i], e->string);
            int r = 0, rc = 0;
            double a = 0.0;
            if ((rc = i == 0 ? check_rank(c, w, e, &r) : check_alpha(c, w, e, &a)) < 0)
                return rc;
        }
    }
    if (!cJSON_IsObject(c->rank_pattern))
        c->rank_pattern = NULL;
    if (!cJSON_IsObject(c->alpha_pattern))
        c->alpha_pattern = NULL;
    return 0;
}

static int
parse_config(struct pctx *c)
{
    const char *end = NULL;
    c->cfg = cJSON_ParseWithLengthOpts(c->cfg_buf ? c->cfg_buf : "", c->cfg_len, &end, 0);
    if (c->cfg == NULL || !cJSON_IsObject(c->cfg))
        return fail(c, -EINVAL, c->cfg_path, "not a JSON object");
    int rc = check_unsupported(c);
    if (rc == 0)
        rc = check_rank(c, "r", cJSON_GetObjectItemCaseSensitive(c->cfg, "r"), &c->r);
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(c->cfg, "lora_alpha");
    c->alpha = 8.0;     /* PEFT's default */
    if (rc == 0 && alpha != NULL)
        rc = check_alpha(c, "lora_alpha", alpha, &c->alpha);
    if (rc == 0)
        rc = cfg_bool(c, "use_rslora", false, &c->rslora);
    if (rc == 0)
        rc = parse_targets(c);
    if (rc == 0)
        rc = parse_patterns(c);
    return rc;
}

/* ---- Weights ---------------------------------------------------------- */

/* Shape (n_out, k) of the base weight a target adapts. */
static void
base_dims(const struct engine_hparams *hp, enum engine_lora_target t, int64_t *k,
          int64_t *n_out)
{
    int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    switch (t) {
    case ENGINE_LORA_Q: *k = hp->n_embd, *n_out = q; break;
    case ENGINE_LORA_K:
    case ENGINE_LORA_V: *k = hp->n_embd, *n_out = kv; break;
    case ENGINE_LORA_O: *k = q, *n_out = hp->n_embd; break;
    case ENGINE_LORA_GATE:
    case ENGINE_LORA_UP: *k = hp->n_embd, *n_out = hp->n_ff; break;
    default: *k = hp->n_ff, *n_out = hp->n_embd; break;
    }
}

/*
 * A weight's module key ("model.layers.N.GROUP.PROJ"), layer, target and
 * whether it is lora_A. Returns 0 or -EINVAL with a message.
 */
struct wname {
    char key[160];
    bool is_a;
    int layer;
    enum engine_lora_target t;
};

static int
parse_weight_name(struct pctx *c, const char *name, struct wname *w)
{
    static const char prefix[] = "base_model.model.";
    size_t n = strlen(name), pl = sizeof(prefix) - 1, sl = strlen(".lora_A.weight");
    bool a = n > pl + sl && strcmp(name + n - sl, ".lora_A.weight") == 0;
    bool b = n > pl + sl && strcmp(name + n - sl, ".lora_B.weight") == 0;
    if (strncmp(name, prefix, pl) != 0 || (!a && !b) || n - pl - sl >= sizeof(w->key))
        return fail(c, -EINVAL, c->st_path, "tensor %.96s is not a LoRA weight (base_model."
                    "model.<module>.lora_A.weight or .lora_B.weight)", name);
    memcpy(w->key, name + pl, n - pl - sl);
    w->key[n - pl - sl] = '\0';
    w->is_a = a;
    char group[16] = "", proj[16] = "";
    int layer = -1, used = 0;
    int got = sscanf(w->key, "model.layers.%9d.%15[a-z_].%15[a-z_]%n", &layer, group, proj,
                     &used);
    if (got == 3 && (size_t)used == strlen(w->key) && layer >= 0) {
        for (int i = 0; i < N_MODULES; i++) {
            if (strcmp(group, modules[i].group) == 0 && strcmp(proj, modules[i].proj) == 0) {
                w->layer = layer;
                w->t = modules[i].t;
                return 0;
            }
        }
    }
    return fail(c, -EINVAL, c->st_path, "tensor %.96s: module %.64s is not one loraserve can "
                "adapt (" MODULE_LIST " of model.layers.N)", name, w->key);
}

/* Permutes B's rows as llama.cpp permutes Q/K: (n, 2, hd/2, r) -> (n, hd/2, 2, r). */
static int
permute_rows(float *b, int64_t n_out, int64_t r, int n_head)
{
    int64_t hd = n_out / n_head, half = hd / 2;
    float *tmp = malloc((size_t)(n_out * r) * sizeof(float));
    if (tmp == NULL)
        return -ENOMEM;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(tmp + (h * hd + 2 * i + j) * r, b + (h * hd + j * half + i) * r,
                       (size_t)r * sizeof(float));
    memcpy(b, tmp, (size_t)(n_out * r) * sizeof(float));
    free(tmp);
    return 0;
}

/* Rank and scale of a module, from r / lora_alpha and the patterns. */
static int
module_scale(struct pctx *c, const struct wname *w, int *rank, float *scale)
{
    const cJSON *rp = NULL, *ap = NULL;
    int rc = pattern_value(c, c->rank_pattern, w->key, &rp);
    if (rc == 0)
        rc = pattern_value(c, c->alpha_pattern, w->key, &ap);
    if (rc < 0)
        return rc;
    *rank = rp ? (int)rp->valuedouble : c->r;
    double alpha = ap ? ap->valuedouble : c->alpha;
    *scale = (float)(c->rslora ? alpha / sqrt((double)*rank) : alpha / *rank);
    return 0;
}

/* Checks the pair's shapes against each other, the config and the base. */
static int
check_pair(struct pctx *c, const struct wname *w, const struct adapters_st_tensor *a,
           const struct adapters_st_tensor *b, int rank)
{
    if (a->n_dims != 2 || b->n_dims != 2)
        return fail(c, -EINVAL, c->st_path, "tensor %.96s: lora_A and lora_B must be 2-D",
                    a->name);
    int64_t r = a->shape[0], k = 0, n_out = 0;
    if (b->shape[1] != r)
        return fail(c, -EINVAL, c->st_path, "%.64s: lora_A is (%lld, %lld) and lora_B (%lld, "
                    "%lld): their ranks differ", w->key, (long long)r, (long long)a->shape[1],
                    (long long)b->shape[0], (long long)b->shape[1]);
    if (r < 1 || r > c->max_rank)
        return fail(c, -EINVAL, c->st_path, "%.64s: rank %lld is out of range [1, %d]", w->key,
                    (long long)r, c->max_rank);
    if (r != rank)
        return fail(c, -EINVAL, c->st_path, "%.64s: rank %lld differs from the config's %d",
                    w->key, (long long)r, rank);
    base_dims(c->hp, w->t, &k, &n_out);
    if (a->shape[1] != k || b->shape[0] != n_out)
        return fail(c, -EINVAL, c->st_path, "%.64s: lora_A is (%lld, %lld) and lora_B (%lld, "
                    "%lld), but the base weight is (%lld, %lld): the adapter was made for "
                    "another base model", w->key, (long long)r, (long long)a->shape[1],
                    (long long)b->shape[0], (long long)r, (long long)n_out, (long long)k);
    return 0;
}

static int
add_pair(struct pctx *c, const struct wname *w, const struct adapters_st_tensor *a,
         const struct adapters_st_tensor *b)
{
    int rank = 0, rc = 0;
    float scale = 0.0f;
    if ((rc = module_scale(c, w, &rank, &scale)) < 0 || (rc = check_pair(c, w, a, b, rank)) < 0)
        return rc;
    float *fa = adapters__st_to_f32(a), *fb = fa ? adapters__st_to_f32(b) : NULL;
    int64_t n_out = b->shape[0];
    bool permute = strcmp(c->hp->arch, "llama") == 0 &&
                   (w->t == ENGINE_LORA_Q || w->t == ENGINE_LORA_K);
    int n_head = w->t == ENGINE_LORA_Q ? c->hp->n_head : c->hp->n_head_kv;
    if (fb == NULL || (permute && permute_rows(fb, n_out, rank, n_head) < 0)) {
        rc = fail(c, -ENOMEM, c->st_path, "out of memory");
    } else {
        char e[256] = "";
        bool f16 = a->type == GGUF_T_F16 && b->type == GGUF_T_F16;     /* kept as f16 */
        rc = engine_lora_add(c->l, w->layer, w->t, rank, scale, a->shape[1], n_out, fa, fb,
                             f16, e, sizeof(e));
        if (rc < 0)
            fail(c, rc, c->st_path, "%s (%.64s)", e, w->key);
    }
    free(fa);
    free(fb);
    if (rc == 0) {
        c->info->rank = rank > c->info->rank ? rank : c->info->rank;
        c->info->targets |= 1u << w->t;
    }
    return rc;
}

/* The name of a weight's partner (lora_A <-> lora_B). */
static void
partner_name(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s", name);
    char *p = strstr(out + strlen(out) - strlen(".lora_A.weight"), ".lora_");
    p[6] = p[6] == 'A' ? 'B' : 'A';
}

static int
one_weight(struct pctx *c, const struct adapters_st_tensor *t)
{
    struct wname w;
    int rc = parse_weight_name(c, t->name, &w);
    if (rc < 0)
        return rc;
    if (w.layer >= c->hp->n_layer)
        return fail(c, -EINVAL, c->st_path, "%.64s: layer %d is beyond the model's %d layers",
                    w.key, w.layer, c->hp->n_layer);
    if (!targeted(c, w.key))
        return fail(c, -EINVAL, c->st_path, "%.64s has weights but is not in target_modules",
                    w.key);
    char other[256];
    partner_name(t->name, other, sizeof(other));
    const struct adapters_st_tensor *p = adapters__st_find(c->st, other);
    if (p == NULL)
        return fail(c, -EINVAL, c->st_path, "%.64s: %s has no matching %s", w.key,
                    w.is_a ? "lora_A" : "lora_B", w.is_a ? "lora_B" : "lora_A");
    return w.is_a ? add_pair(c, &w, t, p) : 0;
}

static int
load_weights(struct pctx *c)
{
    int n = adapters__st_n_tensors(c->st), rc = 0;
    if (n == 0)
        return fail(c, -EINVAL, c->st_path, "holds no LoRA weights");
    if ((rc = engine_lora_new(c->m, &c->l)) < 0)
        return fail(c, rc, c->st_path, "out of memory");
    for (int i = 0; i < n && rc == 0; i++)
        rc = one_weight(c, adapters__st_tensor(c->st, i));
    return rc;
}

/* ---- Files ------------------------------------------------------------ */

/* The two files' names in dir, as messages show them. */
static int
set_paths(struct pctx *c, const char *dir)
{
    if ((size_t)snprintf(c->cfg_path, sizeof(c->cfg_path), "%s/adapter_config.json", dir) >=
            sizeof(c->cfg_path) ||
        (size_t)snprintf(c->st_path, sizeof(c->st_path), "%s/adapter_model.safetensors", dir) >=
            sizeof(c->st_path))
        return fail(c, -ENAMETOOLONG, dir, "path is too long");
    return 0;
}

static int
map_files(struct pctx *c, const char *dir)
{
    int rc = set_paths(c, dir);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(c->cfg_path, &st) != 0)
        return fail(c, -EINVAL, dir, "not a PEFT adapter directory (no adapter_config.json)");
    if (st.st_size > MAX_CONFIG_BYTES)
        return fail(c, -EINVAL, c->cfg_path, "%lld bytes is above the limit of %u",
                    (long long)st.st_size, MAX_CONFIG_BYTES);
    char bin[PATH_MAX + 32];
    snprintf(bin, sizeof(bin), "%s/adapter_model.bin", dir);
    if (stat(c->st_path, &st) != 0 && stat(bin, &st) == 0)
        return fail(c, -EINVAL, bin, "pickled weights are not supported; save the adapter "
                    "with safe_serialization=True (adapter_model.safetensors)");
    rc = adapters__map(c->cfg_path, &c->cfg_buf, &c->cfg_len, c->err, c->errlen);
    if (rc == 0)
        rc = adapters__map(c->st_path, &c->st_buf, &c->st_len, c->err, c->errlen);
    return rc == -ENOENT ? -EINVAL : rc;
}

/* A context for loading onto m; NULL when out of memory. */
static struct pctx *
pctx_new(const struct engine_model *m, int max_rank, struct adapters_info *info, char *err,
         size_t errlen)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->format, sizeof(info->format), "peft");
    struct pctx *c = calloc(1, sizeof(*c));
    if (c != NULL)
        *c = (struct pctx){ .m = m, .hp = engine_model_hparams(m), .max_rank = max_rank,
                            .info = info, .err = err, .errlen = errlen };
    return c;
}

/* The config and the weights, in memory: the adapter in *out, or an error in c->err. */
static int
load_bytes(struct pctx *c, struct engine_lora **out)
{
    int rc = parse_config(c);
    if (rc == 0)
        rc = adapters__st_parse(c->st_buf, c->st_len, c->st_path, &c->st, c->err, c->errlen);
    if (rc == 0)
        rc = load_weights(c);
    if (rc == 0) {
        adapters__sha256_hex(c->cfg_buf, c->cfg_len, c->st_buf, c->st_len, c->info->sha256);
        c->info->file_bytes = c->cfg_len + c->st_len;
        c->info->alpha = (float)c->alpha;
        c->info->rslora = c->rslora;
        *out = c->l;
        c->l = NULL;
    }
    return rc;
}

/* Frees c and what it holds, but not the buffers. */
static void
pctx_free(struct pctx *c)
{
    engine_lora_unref(c->l);
    adapters__st_free(c->st);
    pcre2_code_free(c->target_re);
    cJSON_Delete(c->cfg);
    free(c);
}

static int
no_memory(const char *dir, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: out of memory", dir);
    return -ENOMEM;
}

int
adapters__load_peft(const struct engine_model *m, const char *dir, int max_rank,
                    struct engine_lora **out, struct adapters_info *info, char *err,
                    size_t errlen)
{
    *out = NULL;
    struct pctx *c = pctx_new(m, max_rank, info, err, errlen);
    if (c == NULL)
        return no_memory(dir, err, errlen);
    int rc = map_files(c, dir);
    if (rc == 0)
        rc = load_bytes(c, out);
    adapters__unmap(c->cfg_buf, c->cfg_len);
    adapters__unmap(c->st_buf, c->st_len);
    pctx_free(c);
    return rc;
}

int
adapters__load_peft_bytes(const struct engine_model *m, const char *dir, const void *cfg,
                          size_t cfg_len, const void *st, size_t st_len, int max_rank,
                          struct engine_lora **out, struct adapters_info *info, char *err,
                          size_t errlen)
{
    *out = NULL;
    struct pctx *c = pctx_new(m, max_rank, info, err, errlen);
    if (c == NULL)
        return no_memory(dir, err, errlen);
    int rc = set_paths(c, dir);
    if (rc == 0 && cfg_len > MAX_CONFIG_BYTES)
        rc = fail(c, -EINVAL, c->cfg_path, "%zu bytes is above the limit of %u", cfg_len,
                  MAX_CONFIG_BYTES);
    c->cfg_buf = cfg;
    c->cfg_len = cfg_len;
    c->st_buf = st;
    c->st_len = st_len;
    if (rc == 0)
        rc = load_bytes(c, out);
    pctx_free(c);
    return rc;
}

/*
 * sampler.c - choosing the next token from logits.
 *
 * The order is llama.cpp's: logit bias, penalties (repetition, presence,
 * frequency) over the last repeat_last_n tokens, then either greedy argmax
 * (temperature <= 0; lowest id on ties) or top-k, top-p, min-p, temperature,
 * softmax and a draw from a seeded xoshiro256** generator. Same seed and same
 * inputs give the same tokens.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

struct cand {
    int32_t id;
    float logit;
    float p;
};

struct engine_sampler {
    struct engine_sampling p;
    struct engine_logit_bias *bias;
    int n_vocab;
    int32_t *hist;        /* generated/accepted tokens, ring of hist_cap */
    int hist_cap;
    int64_t hist_n;
    int *count;           /* (n_vocab) occurrences in the window, scratch */
    struct cand *cands;   /* (n_vocab) scratch */
    uint64_t rng[4];
};

/* ---- Random numbers --------------------------------------------------- */

static uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
next_u64(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1). */
static double
next_unit(uint64_t s[4])
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

/* ---- Lifecycle -------------------------------------------------------- */

int
engine_sampler_new(const struct engine_sampling *p, int n_vocab, struct engine_sampler **out)
{
    *out = NULL;
    if (n_vocab < 1 || p->n_bias < 0)
        return -EINVAL;
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias[i].token < 0 || p->bias[i].token >= n_vocab)
            return -EINVAL;
    struct engine_sampler *s = engine__xcalloc(1, sizeof(*s));
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist_cap = p->repeat_last_n < 0 ? 4096 : (p->repeat_last_n > 0 ? p->repeat_last_n : 1);
    s->bias = engine__try_alloc((size_t)p->n_bias, sizeof(*s->bias));
    s->hist = engine__try_alloc((size_t)s->hist_cap, sizeof(int32_t));
    s->count = engine__try_alloc((size_t)n_vocab, sizeof(int));
    s->cands = engine__try_alloc((size_t)n_vocab, sizeof(struct cand));
    if (!s->bias || !s->hist || !s->count || !s->cands) {
        engine_sampler_free(s);
        return -ENOMEM;
    }
    if (p->n_bias > 0)
        memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof(*s->bias));
    s->p.bias = s->bias;
    memset(s->count, 0, (size_t)n_vocab * sizeof(int));
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void
engine_sampler_free(struct engine_sampler *s)
{
    if (s == NULL)
        return;
    free(s->bias);
    free(s->hist);
    free(s->count);
    free(s->cands);
    free(s);
}

void
engine_sampler_accept(struct engine_sampler *s, int32_t id)
{
    s->hist[s->hist_n % s->hist_cap] = id;
    s->hist_n++;
}

/* ---- Logit transforms ------------------------------------------------- */

static void
apply_penalties(struct engine_sampler *s, float *logits)
{
    const struct engine_sampling *p = &s->p;
    if (p->repeat_last_n == 0 ||
        (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f &&
         p->frequency_penalty == 0.0f))
        return;
    int64_t n = s->hist_n < s->hist_cap ? s->hist_n : s->hist_cap;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = s->hist[i];
        if (id >= 0 && id < s->n_vocab)
            s->count[id]++;
    }
    for (int64_t i = 0; i < n; i++) {
        int32_t id = s->hist[i];
        if (id < 0 || id >= s->n_vocab || s->count[id] == 0)
            continue;
        float *l = &logits[id];
        *l = *l <= 0.0f ? *l * p->repeat_penalty : *l / p->repeat_penalty;
        *l -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
        s->count[id] = 0;     /* each token once; also leaves count zeroed */
    }
}

/*
 * The first index of the largest logit (0 if none is a number above -inf):
 * the maximum in eight independent lanes (a vocabulary is read in a few
 * microseconds instead of one compare-and-branch chain), then its first
 * occurrence.
 */
static int32_t
argmax(const float *logits, int n)
{
    float m[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                   -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            m[l] = logits[i + l] > m[l] ? logits[i + l] : m[l];
    for (; i < n; i++)
        m[0] = logits[i] > m[0] ? logits[i] : m[0];
    float best = m[0];
    for (int l = 1; l < 8; l++)
        best = m[l] > best ? m[l] : best;
    for (i = 0; i < n; i++)
        if (logits[i] == best)
            return i;
    return 0;
}

static int
cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Sorts the candidates by logit, descending. Only the prefix that top-k or
 * top-p can keep needs to be in order: first try the tokens within 30 nats of
 * the best (a tiny set), which holds all but e^-30 of the mass.
 */
static int
sort_prefix(struct cand *c, int n, float max, bool need_all)
{
    if (need_all) {
        qsort(c, (size_t)n, sizeof(*c), cmp_cand);
        return n;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].logit >= max - 30.0f) {
            struct cand t = c[m];
            c[m++] = c[i];
            c[i] = t;
        }
    }
    qsort(c, (size_t)m, sizeof(*c), cmp_cand);
    return m;
}

/* softmax of c[0..n) logits / temp into c[].p; returns nothing. */
static void
softmax(struct cand *c, int n, float temp)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - max) / temp);
        sum += c[i].p;
    }
    for (int i = 0; i < n; i++)
        c[i].p = (float)(c[i].p / sum);
}

/* Keeps the top-k, top-p and min-p prefix of the candidates; returns its length. */
static int
truncate_cands(struct engine_sampler *s, struct cand *c, int n, float max)
{
    const struct engine_sampling *p = &s->p;
    bool k_on = p->top_k > 0 && p->top_k < n, p_on = p->top_p < 1.0f, m_on = p->min_p > 0.0f;
    if (!k_on && !p_on && !m_on)
        return n;
    n = sort_prefix(c, n, max, k_on && p->top_k > n / 2);
    if (k_on && p->top_k < n)
        n = p->top_k;
    softmax(c, n, 1.0f);
    if (p_on) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (m_on) {
        float floor = c[0].p * p->min_p;
        int keep = 1;
        while (keep < n && c[keep].p >= floor)
            keep++;
        n = keep;
    }
    return n;
}

int32_t
engine_sampler_sample(struct engine_sampler *s, float *logits)
{
    const struct engine_sampling *p = &s->p;
    for (int i = 0; i < p->n_bias; i++)
        logits[p->bias[i].token] += p->bias[i].bias;
    apply_penalties(s, logits);
    if (p->temperature <= 0.0f)
        return argmax(logits, s->n_vocab);

    struct cand *c = s->cands;
    int n = 0;
    float max = -INFINITY;
    for (int i = 0; i < s->n_vocab; i++) {
        if (isnan(logits[i]) || logits[i] == -INFINITY)
            continue;
        c[n++] = (struct cand){ i, logits[i], 0.0f };
        max = logits[i] > max ? logits[i] : max;
    }
    if (n == 0)
        return argmax(logits, s->n_vocab);
    n = truncate_cands(s, c, n, max);
    softmax(c, n, p->temperature);
    double r = next_unit(s->rng), cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum)
            return c[i].id;
    }
    return c[n - 1].id;
}

/*
 * load.c - loading a LoRA adapter from a path: the format dispatch, and the
 * llama.cpp GGUF-LoRA reader.
 *
 * A GGUF-LoRA file (general.type = "adapter", adapter.type = "lora") holds,
 * for each adapted base weight W named "blk.N.X.weight", two tensors
 * "blk.N.X.weight.lora_a" with ne = {k, rank} (A: rank rows of k) and
 * "blk.N.X.weight.lora_b" with ne = {rank, n_out} (B: n_out rows of rank),
 * and the scale alpha / rank with alpha in adapter.lora.alpha (no alpha:
 * scale 1, as llama.cpp).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters_int.h"

void
adapters__one_line(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

void
adapters__sha256_hex(const void *buf, size_t len, const void *buf2, size_t len2, char hex[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              (len == 0 || EVP_DigestUpdate(ctx, buf, len) == 1) &&
              (len2 == 0 || EVP_DigestUpdate(ctx, buf2, len2) == 1) &&
              EVP_DigestFinal_ex(ctx, md, &n) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(md, 0, sizeof(md));  /* only if OpenSSL cannot allocate its context */
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

int
adapters__map(const char *path, const void **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    int rc = 0;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        rc = -EINVAL;
    } else if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = -errno;
            snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        } else {
            *buf = p;
            *len = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

void
adapters__unmap(const void *buf, size_t len)
{
    if (buf != NULL)
        munmap((void *)buf, len);
}

bool
adapters__parse_target(const char *name, size_t len, int *layer, enum engine_lora_target *t)
{
    char buf[128];
    if (len >= sizeof(buf) || strncmp(name, "blk.", 4) != 0)
        return false;
    memcpy(buf, name, len);
    buf[len] = '\0';
    char *end = NULL;
    long il = strtol(buf + 4, &end, 10);
    if (end == buf + 4 || *end != '.' || il < 0 || il > 100000)
        return false;
    for (int i = 0; i < ENGINE_LORA_N_TARGETS; i++) {
        const char *tn = engine_lora_target_name((enum engine_lora_target)i);
        size_t tl = strlen(tn);
        if (strncmp(end + 1, tn, tl) == 0 && strcmp(end + 1 + tl, ".weight") == 0) {
            *layer = (int)il;
            *t = (enum engine_lora_target)i;
            return true;
        }
    }
    return false;
}

/* ---- GGUF-LoRA -------------------------------------------------------- */

struct gctx {
    const struct engine_model *m;
    const struct gguf *g;
    const char *path;
    int max_rank;
    float alpha;
    struct engine_lora *l;
    struct adapters_info *info;
    char *err;
    size_t errlen;
};

static int
fail(struct gctx *c, int rc, const char *msg, const char *name)
{
    snprintf(c->err, c->errlen, "%s: %s%s%s", c->path, name ? name : "", name ? ": " : "", msg);
    adapters__one_line(c->err);
    return rc;
}

static bool
str_is(const struct gguf *g, const char *key, const char *want)
{
    struct gguf_str s;
    return gguf_get_str(g, key, &s) == 0 && s.len == strlen(want) &&
           memcmp(s.ptr, want, s.len) == 0;
}

static int
check_header(struct gctx *c)
{
    const struct engine_hparams *hp = engine_model_hparams(c->m);
    if (!str_is(c->g, "general.type", "adapter") || !str_is(c->g, "adapter.type", "lora"))
        return fail(c, -EINVAL, "not a LoRA adapter (general.type must be \"adapter\" and "
                    "adapter.type \"lora\")", NULL);
    if (!str_is(c->g, "general.architecture", hp->arch)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "adapter is for another architecture (the base is %s)",
                 hp->arch);
        return fail(c, -EINVAL, msg, NULL);
    }
    double alpha = 0.0;
    int rc = gguf_get_f64(c->g, "adapter.lora.alpha", &alpha);
    if ((rc < 0 && rc != -ENOENT) || !(alpha >= 0.0) || alpha > 1e6)
        return fail(c, -EINVAL, "adapter.lora.alpha is not a number in [0, 1e6]", NULL);
    c->alpha = (float)alpha;
    return 0;
}

/* Converts a tensor to a new f32 array; NULL with err set on failure. */
static float *
to_f32(struct gctx *c, const struct gguf_tensor *t, int *rc)
{
    int64_t n = t->ne[0] * t->ne[1];
    if (t->type != GGUF_T_F32 && t->type != GGUF_T_F16 && t->type != GGUF_T_BF16) {
        char msg[128];
        snprintf(msg, sizeof(msg), "type %s is not supported for adapters (f32, f16, bf16)",
                 gguf_ttype_name(t->type));
        *rc = fail(c, -EINVAL, msg, t->name);
        return NULL;
    }
    float *v = malloc((size_t)n * sizeof(float));
    if (v == NULL) {
        *rc = fail(c, -ENOMEM, "out of memory", t->name);
        return NULL;
    }
    engine_tensor_to_f32(t->type, t->data, v, n);
    return v;
}

/* Adds the pair for tensor a (named BASE.lora_a). */
static int
add_pair(struct gctx *c, const struct gguf_tensor *a)
{
    size_t base_len = strlen(a->name) - strlen(".lora_a");
    char bname[256];
    snprintf(bname, sizeof(bname), "%.*s.lora_b", (int)base_len, a->name);
    const struct gguf_tensor *b = gguf_find_tensor(c->g, bname);
    int layer = 0;
    enum engine_lora_target t = 0;
    if (b == NULL)
        return fail(c, -EINVAL, "has no matching lora_b tensor", a->name);
    if (!adapters__parse_target(a->name, base_len, &layer, &t))
        return fail(c, -EINVAL, "adapts a weight loraserve cannot adapt (q, k, v, o, gate, "
                    "up and down projections of blk.N)", a->name);
    int64_t k = a->ne[0], r = a->ne[1], n_out = b->ne[1];
    if (a->n_dims != 2 || b->n_dims != 2 || b->ne[0] != r)
        return fail(c, -EINVAL, "lora_a and lora_b shapes do not agree on the rank", a->name);
    if (r < 1 || r > c->max_rank) {
        char msg[96];
        snprintf(msg, sizeof(msg), "rank %lld is out of range [1, %d]", (long long)r,
                 c->max_rank);
        return fail(c, -EINVAL, msg, a->name);
    }
    int rc = 0;
    float *fa = to_f32(c, a, &rc), *fb = fa ? to_f32(c, b, &rc) : NULL;
    char e[256] = "";
    float scale = c->alpha > 0.0f ? c->alpha / (float)r : 1.0f;
    bool f16 = a->type == GGUF_T_F16 && b->type == GGUF_T_F16;     /* kept as f16 */
    if (fb != NULL && (rc = engine_lora_add(c->l, layer, t, (int)r, scale, k, n_out, fa, fb,
                                            f16, e, sizeof(e))) < 0)
        fail(c, rc, e, NULL);
    free(fa);
    free(fb);
    if (rc == 0) {
        c->info->rank = (int)r > c->info->rank ? (int)r : c->info->rank;
        c->info->targets |= 1u << t;
    }
    return rc;
}

static bool
has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static int
load_tensors(struct gctx *c)
{
    int n_pairs = 0, rc = 0;
    for (int64_t i = 0; i < gguf_n_tensors(c->g) && rc == 0; i++) {
        const struct gguf_tensor *t = gguf_tensor(c->g, i);
        if (has_suffix(t->name, ".lora_a"))
            rc = add_pair(c, t), n_pairs++;
        else if (!has_suffix(t->name, ".lora_b"))
            rc = fail(c, -EINVAL, "is not a LoRA tensor (.lora_a / .lora_b)", t->name);
    }
    if (rc == 0 && 2 * n_pairs != gguf_n_tensors(c->g))
        rc = fail(c, -EINVAL, "has lora_b tensors without lora_a", NULL);
    if (rc == 0 && n_pairs == 0)
        rc = fail(c, -EINVAL, "holds no LoRA tensors", NULL);
    return rc;
}

int
adapters__load_gguf(const struct engine_model *m, const char *path, int max_rank,
                    struct engine_lora **out, struct adapters_info *info, char *err,
                    size_t errlen)
{
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, errlen);
    if (rc < 0)
        return rc;
    rc = adapters__load_gguf_parsed(m, g, path, max_rank, out, info, err, errlen);
    gguf_free(g);
    return rc;
}

int
adapters__load_gguf_parsed(const struct engine_model *m, const struct gguf *g,
                           const char *path, int max_rank, struct engine_lora **out,
                           struct adapters_info *info, char *err, size_t errlen)
{
    *out = NULL;
    memset(info, 0, sizeof(*info));
    snprintf(info->format, sizeof(info->format), "gguf");
    struct gctx c = { m, g, path, max_rank, 0.0f, NULL, info, err, errlen };
    int rc = 0;
    if ((rc = check_header(&c)) == 0 && (rc = engine_lora_new(m, &c.l)) == 0)
        rc = load_tensors(&c);
    if (rc == 0) {
        size_t len = 0;
        const void *buf = gguf_buffer(g, &len);
        adapters__sha256_hex(buf, len, NULL, 0, info->sha256);
        info->file_bytes = len;
        info->alpha = c.alpha > 0.0f ? c.alpha : (float)info->rank;
        *out = c.l;
        c.l = NULL;
    }
    engine_lora_unref(c.l);
    return rc;
}

/* ---- Dispatch --------------------------------------------------------- */

int
adapters_load_path(const struct engine_model *m, const char *path, int max_rank,
                   struct engine_lora **out, struct adapters_info *info, char *err,
                   size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: no such file or directory", path);
        return -ENOENT;
    }
    if (S_ISDIR(st.st_mode))
        return adapters__load_peft(m, path, max_rank, out, info, err, errlen);
    return adapters__load_gguf(m, path, max_rank, out, info, err, errlen);
}

/*
 * loader.c - reading hyperparameters and tensors out of a GGUF file with
 * every key, shape and type checked (for model.c's LLaMA models and
 * bert.c's encoders).
 *
 * Matrices stay where the file maps them (a struct engine_weight points into
 * it); 1-D tensors are converted to owned f32 arrays whatever their stored
 * type, and must be finite. Each failure leaves one line naming the file and
 * the key or tensor in L->err.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

int
engine__load_int(struct engine_loader *L, const char *arch, const char *suffix, int def,
                 bool required, int lo, int hi, int *out)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int64_t v = 0;
    int rc = gguf_get_i64(L->g, key, &v);
    if (rc == -ENOENT && !required) {
        *out = def;
        return 0;
    }
    if (rc == -ENOENT) {
        engine__err(L->err, L->errlen, "%s: missing key %s", L->path, key);
        return -EINVAL;
    }
    if (rc < 0 || v < lo || v > hi) {
        engine__err(L->err, L->errlen, "%s: %s = %lld is out of range [%d, %d]", L->path, key,
                    (long long)v, lo, hi);
        return -EINVAL;
    }
    *out = (int)v;
    return 0;
}

int
engine__load_float(struct engine_loader *L, const char *arch, const char *suffix, float def,
                   float *out)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    double v = def;
    int rc = gguf_get_f64(L->g, key, &v);
    if (rc < 0 && rc != -ENOENT) {
        engine__err(L->err, L->errlen, "%s: %s is not a number", L->path, key);
        return -EINVAL;
    }
    if (!isfinite(v)) {
        engine__err(L->err, L->errlen, "%s: %s = %g is not finite", L->path, key, v);
        return -EINVAL;
    }
    *out = (float)v;
    return 0;
}

const struct gguf_tensor *
engine__load_find(struct engine_loader *L, const char *name, bool required, int *rc)
{
    const struct gguf_tensor *t = gguf_find_tensor(L->g, name);
    if (t == NULL && required && *rc == 0) {
        engine__err(L->err, L->errlen, "%s: missing tensor %s", L->path, name);
        *rc = -EINVAL;
    }
    return t;
}

static int
check_shape(struct engine_loader *L, const struct gguf_tensor *t, int64_t ne0, int64_t ne1)
{
    int64_t want_dims = ne1 > 0 ? 2 : 1;
    bool ok = t->ne[0] == ne0 && (ne1 > 0 ? t->ne[1] == ne1 : t->ne[1] == 1) &&
              t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok) {
        engine__err(L->err, L->errlen,
                    "%s: tensor %s has shape [%lld, %lld, %lld, %lld], expected [%lld%s%lld]",
                    L->path, t->name, (long long)t->ne[0], (long long)t->ne[1],
                    (long long)t->ne[2], (long long)t->ne[3], (long long)ne0,
                    want_dims == 2 ? ", " : "", want_dims == 2 ? (long long)ne1 : 0LL);
        return -EINVAL;
    }
    if (!engine__type_supported(t->type)) {
        engine__err(L->err, L->errlen, "%s: tensor %s has type %s, which is not supported "
                    "(f32, f16, bf16, q8_0, q4_0, q4_K, q6_K)", L->path, t->name,
                    gguf_ttype_name(t->type));
        return -EINVAL;
    }
    return 0;
}

int
engine__load_weight(struct engine_loader *L, const char *name, int64_t k, int64_t n_out,
                    bool required, struct engine_weight *w)
{
    int rc = 0;
    const struct gguf_tensor *t = engine__load_find(L, name, required, &rc);
    if (t == NULL)
        return rc;
    if ((rc = check_shape(L, t, k, n_out)) < 0)
        return rc;
    *w = (struct engine_weight){ .type = t->type, .k = k, .n_out = n_out, .data = t->data };
    L->n_params += k * n_out;
    return 0;
}

/* Converts rows x n elements of t (checked) to an owned f32 array; all must be finite. */
static int
load_f32(struct engine_loader *L, const struct gguf_tensor *t, int64_t n, int64_t rows,
         float **out)
{
    float *v = engine__try_alloc((size_t)(n * rows), sizeof(float));
    if (v == NULL)
        return -ENOMEM;
    size_t row = engine__row_size(t->type, n);
    for (int64_t r = 0; r < rows; r++)
        engine__dequantize_row(t->type, (const char *)t->data + (size_t)r * row, v + r * n, n);
    for (int64_t i = 0; i < n * rows; i++) {
        if (!isfinite(v[i])) {
            engine__err(L->err, L->errlen, "%s: tensor %s holds a non-finite value at %lld",
                        L->path, t->name, (long long)i);
            free(v);
            return -EINVAL;
        }
    }
    *out = v;
    L->n_params += n * rows;
    return 0;
}

int
engine__load_vector(struct engine_loader *L, const char *name, int64_t n, bool required,
                    float **out)
{
    return engine__load_matrix_f32(L, name, n, 0, required, out);
}

int
engine__load_matrix_f32(struct engine_loader *L, const char *name, int64_t n, int64_t rows,
                        bool required, float **out)
{
    int rc = 0;
    *out = NULL;
    const struct gguf_tensor *t = engine__load_find(L, name, required, &rc);
    if (t == NULL)
        return rc;
    if ((rc = check_shape(L, t, n, rows)) < 0)
        return rc;
    return load_f32(L, t, n, rows > 0 ? rows : 1, out);
}

/*
 * util.c - allocation and error-message helpers of the engine.
 *
 * Bookkeeping of fixed size aborts on allocation failure (there is nothing
 * sensible to do); sizes taken from input go through engine__try_alloc and
 * fail with -ENOMEM instead.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

static void
oom(size_t n)
{
    fprintf(stderr, "loraserve: out of memory allocating %zu bytes\n", n);
    abort();
}

void *
engine__xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *
engine__xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

char *
engine__xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = engine__xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void *
engine__try_alloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return NULL;
    return malloc(total ? total : 1);
}

void
engine__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* One line, whatever bytes a token or name from the file brought in. */
    for (char *p = err; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

int
engine_tensor_to_f32(enum gguf_ttype t, const void *src, float *dst, int64_t n)
{
    if (!engine__type_supported(t))
        return -EINVAL;
    engine__kernels_init();
    engine__dequantize_row(t, src, dst, n);
    return 0;
}

void
engine__l2_normalize(const double *v, int n, float *out)
{
    double norm = 0;
    for (int i = 0; i < n; i++)
        norm += v[i] * v[i];
    for (int i = 0; i < n; i++)
        out[i] = norm > 0 ? (float)(v[i] / sqrt(norm)) : 0.0f;
}

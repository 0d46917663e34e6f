/*
 * fuzz_gguf.c - the GGUF reader on arbitrary bytes: gguf_parse(), then a walk
 * of everything it returned (keys, values, arrays, tensor infos and data),
 * and what is built from a parsed file: the tokenizer from the tokenizer.*
 * metadata (tokenizer_new, then a short encode and decode), the chat family
 * from tokenizer.chat_template, and a GGUF-LoRA adapter checked against the
 * kjv-tiny base (adapters__load_gguf_parsed).
 *
 * gguf.h promises that a parsed struct gguf can be walked without further
 * checks: every string, array and tensor lies inside the buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../adapters/adapters_int.h"
#include "chat.h"
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"

static const char *buf_lo, *buf_hi;     /* the input, for "inside the buffer" checks */

static int
inside(const void *p, uint64_t n)
{
    const char *c = p;
    return c >= buf_lo && c <= buf_hi && n <= (uint64_t)(buf_hi - c);
}

/* Checksums of what was read, so that reading it cannot be optimised away. */
static volatile unsigned sink;
static volatile uint64_t isink;
static volatile double dsink;

static void
touch(const void *p, uint64_t n)
{
    const unsigned char *c = p;
    unsigned s = 0;
    for (uint64_t i = 0; i < n; i++)
        s += c[i];
    sink += s;
}

static void
walk_arr(const struct gguf_arr *a)
{
    FUZZ_CHECK(a->type < GGUF_VT_COUNT && a->type != GGUF_VT_ARRAY);
    if (a->type == GGUF_VT_STRING) {
        for (uint64_t j = 0; j < a->n; j++) {
            FUZZ_CHECK(inside(a->strs[j].ptr, a->strs[j].len));
            touch(a->strs[j].ptr, a->strs[j].len);
        }
        return;
    }
    FUZZ_CHECK(inside(a->data, a->n * gguf_vtype_size(a->type)));
    for (uint64_t j = 0; j < a->n; j++) {
        isink += (uint64_t)gguf_arr_i64(a, j);
        dsink += gguf_arr_f64(a, j);
    }
}

static void
walk_kv(const struct gguf *g, int64_t i)
{
    const char *key = gguf_key(g, i);
    FUZZ_CHECK(key != NULL);
    int64_t at = gguf_find_key(g, key);
    FUZZ_CHECK(at >= 0 && strcmp(gguf_key(g, at), key) == 0);
    enum gguf_vtype t = gguf_kv_type(g, i);
    FUZZ_CHECK(t < GGUF_VT_COUNT);
    char text[256];
    FUZZ_CHECK(gguf_kv_format(g, i, text, sizeof(text)) == text);
    FUZZ_CHECK(strlen(text) < sizeof(text));
    struct gguf_str s;
    struct gguf_arr a;
    int64_t v = 0;
    double d = 0;
    if (gguf_kv_str(g, i, &s) == 0) {
        FUZZ_CHECK(t == GGUF_VT_STRING && inside(s.ptr, s.len));
        touch(s.ptr, s.len);
    }
    if (gguf_kv_arr(g, i, &a) == 0) {
        FUZZ_CHECK(t == GGUF_VT_ARRAY);
        walk_arr(&a);
    }
    if (gguf_kv_i64(g, i, &v) == 0)
        isink += (uint64_t)v;
    if (gguf_kv_f64(g, i, &d) == 0)
        dsink += d;
    /* The getters by key answer for the first key of that name. */
    uint32_t u = 0;
    float f = 0;
    bool b = false;
    gguf_get_i64(g, key, &v);
    gguf_get_u32(g, key, &u);
    gguf_get_f64(g, key, &d);
    gguf_get_f32(g, key, &f);
    gguf_get_bool(g, key, &b);
    if (gguf_get_str(g, key, &s) == 0)
        FUZZ_CHECK(inside(s.ptr, s.len));
    if (gguf_get_arr(g, key, &a) == 0)
        walk_arr(&a);
}

static void
walk_tensor(const struct gguf *g, int64_t i)
{
    const struct gguf_tensor *t = gguf_tensor(g, i);
    FUZZ_CHECK(t != NULL && t->name != NULL);
    FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
    const char *name = NULL;
    int64_t blck = 0, n = 1;
    size_t bsize = 0;
    FUZZ_CHECK(gguf_ttype_info(t->type, &name, &blck, &bsize));
    for (int k = 0; k < GGUF_MAX_DIMS; k++) {
        FUZZ_CHECK(t->ne[k] >= 0 && (k < (int)t->n_dims || t->ne[k] == 1));
        FUZZ_CHECK(t->ne[k] == 0 || n <= INT64_MAX / t->ne[k]);
        n *= t->ne[k];
    }
    FUZZ_CHECK(blck > 0 && t->ne[0] % blck == 0);
    FUZZ_CHECK(t->nbytes == (size_t)(n / blck) * bsize);
    FUZZ_CHECK(t->offset % gguf_alignment(g) == 0);
    FUZZ_CHECK(inside(t->data, t->nbytes));
    FUZZ_CHECK((const char *)t->data == buf_lo + gguf_data_offset(g) + t->offset);
    const unsigned char *bytes = t->data;
    if (t->nbytes > 0)
        sink += bytes[0] + bytes[t->nbytes - 1];
    const struct gguf_tensor *by_name = gguf_find_tensor(g, t->name);
    FUZZ_CHECK(by_name != NULL && strcmp(by_name->name, t->name) == 0);
}

/* What the server builds from a model file's metadata. */
static void
use_metadata(const struct gguf *g)
{
    char err[256] = "";
    struct tokenizer *tok = NULL;
    int rc = tokenizer_new(g, &tok, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || ((rc == -EINVAL || rc == -ENOMEM) && fuzz_one_line(err)));
    FUZZ_CHECK((rc == 0) == (tok != NULL));
    if (tok != NULL) {
        static const char text[] = "In the beginning <s> </s> [CLS] caf\xc3\xa9 \xe4\xbd\xa0\n";
        int32_t *ids = NULL;
        size_t n = 0;
        rc = tokenizer_encode(tok, text, sizeof(text) - 1, true, true, &ids, &n);
        FUZZ_CHECK(rc == 0 || rc == -ENOMEM || rc == -EINVAL);
        int32_t nv = tokenizer_n_vocab(tok);
        for (size_t i = 0; rc == 0 && i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
        char out[512];
        if (rc == 0)
            FUZZ_CHECK(tokenizer_decode(tok, ids, n, true, true, out, sizeof(out)) >= 0);
        free(ids);
        tokenizer_free(tok);
    }
    struct gguf_str tmpl;
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl) == 0) {
        bool recognised = false;
        enum chat_family f = chat_family_detect(tmpl.ptr, tmpl.len, &recognised);
        FUZZ_CHECK(f < CHAT_FAMILY_COUNT);
    }
    struct engine_lora *l = NULL;
    struct adapters_info info;
    err[0] = '\0';
    rc = adapters__load_gguf_parsed(fuzz_model(), g, "fuzz.gguf", 64, &l, &info, err,
                                    sizeof(err));
    FUZZ_CHECK(rc == 0 || fuzz_one_line(err));
    FUZZ_CHECK((rc == 0) == (l != NULL));
    engine_lora_unref(l);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_model();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    struct gguf *g = (struct gguf *)1;
    int rc = gguf_parse(data, size, "fuzz.gguf", &g, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK((rc == -EBADMSG || rc == -ENOMEM) && g == NULL && fuzz_one_line(err));
        return 0;
    }
    buf_lo = (const char *)data;
    buf_hi = buf_lo + size;
    size_t len = 0;
    FUZZ_CHECK(gguf_buffer(g, &len) == data && len == size);
    FUZZ_CHECK(gguf_version(g) == 2 || gguf_version(g) == 3);
    FUZZ_CHECK(gguf_alignment(g) > 0 && gguf_data_offset(g) <= size);
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        walk_kv(g, i);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        walk_tensor(g, i);
    use_metadata(g);
    gguf_free(g);
    return 0;
}

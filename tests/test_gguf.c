/*
 * test_gguf.c - tests of the GGUF reader and writer (engine/gguf.c).
 *
 * Round trips through the writer; the real model and vocabulary files under
 * $LORASERVE_SHARED; and a table of corrupt files, each built here byte by
 * byte as a small valid file with one field changed, with the message it must
 * give. When $LORASERVE_BIN is set, the same files go through the CLI, which
 * must fail with one clean line. Run under ASan, the truncation test proves
 * the reader never reads past the end of its buffer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "gguf.h"

extern char **environ;

/* ======================================================================= */
/* Helpers                                                                 */
/* ======================================================================= */

static char tmpdir[64];

/* A path in this run's temporary directory (created on first use); valid until the next call. */
static const char *
tmp_path(const char *name)
{
    static char path[256];
    if (tmpdir[0] == '\0') {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_gguf.XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            exit(2);
        }
    }
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    return path;
}

static void
remove_tmpdir(void)
{
    DIR *d = tmpdir[0] != '\0' ? opendir(tmpdir) : NULL;
    struct dirent *e = NULL;
    char path[512];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(tmpdir);
}

static const char *
shared_path(const char *rel)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", test_shared_dir(), rel);
    return path;
}

static bool
str_eq(struct gguf_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

static void
write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK_EQ(fwrite(p, 1, n, f), n);
    CHECK_EQ(fclose(f), 0);
}

static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    long n = 0;

    *len = 0;
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc(n > 0 ? (size_t)n : 1);
    if (p != NULL && fread(p, 1, (size_t)n, f) == (size_t)n)
        *len = (size_t)n;
    fclose(f);
    return p;
}

/* Deterministic bytes for tensor data. */
static void
fill(void *p, size_t n, uint32_t seed)
{
    uint8_t *q = p;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        q[i] = (uint8_t)(seed >> 24);
    }
}

/* ======================================================================= */
/* Types                                                                   */
/* ======================================================================= */

static void
test_type_traits(void)
{
    static const struct {
        uint32_t t;
        const char *name;
        int64_t blck;
        size_t bsize;
    } want[] = {
        {0, "f32", 1, 4}, {1, "f16", 1, 2}, {2, "q4_0", 32, 18}, {3, "q4_1", 32, 20},
        {6, "q5_0", 32, 22}, {7, "q5_1", 32, 24}, {8, "q8_0", 32, 34}, {9, "q8_1", 32, 36},
        {10, "q2_K", 256, 84}, {11, "q3_K", 256, 110}, {12, "q4_K", 256, 144},
        {13, "q5_K", 256, 176}, {14, "q6_K", 256, 210}, {15, "q8_K", 256, 292},
        {16, "iq2_xxs", 256, 66}, {17, "iq2_xs", 256, 74}, {18, "iq3_xxs", 256, 98},
        {19, "iq1_s", 256, 50}, {20, "iq4_nl", 32, 18}, {21, "iq3_s", 256, 110},
        {22, "iq2_s", 256, 82}, {23, "iq4_xs", 256, 136}, {24, "i8", 1, 1},
        {25, "i16", 1, 2}, {26, "i32", 1, 4}, {27, "i64", 1, 8}, {28, "f64", 1, 8},
        {29, "iq1_m", 256, 56}, {30, "bf16", 1, 2}, {34, "tq1_0", 256, 54},
        {35, "tq2_0", 256, 66}, {39, "mxfp4", 32, 17},
    };
    static const uint32_t invalid[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 99, UINT32_MAX};

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *name = NULL;
        int64_t blck = 0;
        size_t bsize = 0;
        CHECK(gguf_ttype_info(want[i].t, &name, &blck, &bsize));
        CHECK_STR(name, want[i].name);
        CHECK_EQ(blck, want[i].blck);
        CHECK_EQ(bsize, want[i].bsize);
        CHECK_STR(gguf_ttype_name(want[i].t), want[i].name);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        CHECK(!gguf_ttype_info(invalid[i], NULL, NULL, NULL));
    CHECK_EQ(gguf_row_size(GGUF_T_Q8_0, 256), 8 * 34);
    CHECK_EQ(gguf_row_size(GGUF_T_Q4_K, 512), 2 * 144);
    CHECK_EQ(gguf_row_size(GGUF_T_F16, 7), 14);
    CHECK_EQ(gguf_vtype_size(GGUF_VT_UINT16), 2);
    CHECK_EQ(gguf_vtype_size(GGUF_VT_FLOAT64), 8);
    CHECK_EQ(gguf_vtype_size(GGUF_VT_STRING), 0);
    CHECK_EQ(gguf_vtype_size(GGUF_VT_ARRAY), 0);
    CHECK_STR(gguf_vtype_name(GGUF_VT_STRING), "string");
    CHECK_STR(gguf_vtype_name(GGUF_VT_INT32), "i32");
    CHECK_STR(gguf_vtype_name(GGUF_VT_COUNT), "unknown");
}

/* ======================================================================= */
/* Writer round trips                                                      */
/* ======================================================================= */

static const enum gguf_vtype scalar_types[] = {
    GGUF_VT_UINT8, GGUF_VT_INT8, GGUF_VT_UINT16, GGUF_VT_INT16, GGUF_VT_UINT32, GGUF_VT_INT32,
    GGUF_VT_FLOAT32, GGUF_VT_BOOL, GGUF_VT_UINT64, GGUF_VT_INT64, GGUF_VT_FLOAT64,
};
#define N_SCALAR_TYPES (sizeof(scalar_types) / sizeof(scalar_types[0]))

struct rt_tensor {
    const char *name;
    enum gguf_ttype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
};

static const struct rt_tensor rt_tensors[] = {
    {"f32.vec", GGUF_T_F32, 1, {7}},
    {"f16.mat", GGUF_T_F16, 2, {3, 5}},
    {"q8_0.mat", GGUF_T_Q8_0, 2, {64, 3}},
    {"q4_K.mat", GGUF_T_Q4_K, 2, {256, 2}},
    {"i32.4d", GGUF_T_I32, 4, {2, 2, 2, 2}},
    {"bf16.one", GGUF_T_BF16, 1, {1}},
    {"mxfp4.row", GGUF_T_MXFP4, 3, {32, 1, 1}},
};
#define N_RT_TENSORS (sizeof(rt_tensors) / sizeof(rt_tensors[0]))

static size_t
rt_nbytes(const struct rt_tensor *t)
{
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    return gguf_row_size(t->type, n);
}

static const struct gguf_str rt_strs[] = {
    {"<unk>", 5}, {"", 0}, {"a\0b", 3}, {"\xc4\xa0the", 5},
};

/* One scalar of each type, with values at the edges of their range. */
static void
rt_scalar(enum gguf_vtype t, uint8_t v[8])
{
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    uint32_t u32 = 4000000000u; int32_t i32 = INT32_MIN; float f32 = 1.5f; uint8_t b = 1;
    uint64_t u64 = UINT64_MAX; int64_t i64 = INT64_MIN; double f64 = -2.25e300;
    const void *src[GGUF_VT_COUNT] = {
        [GGUF_VT_UINT8] = &u8, [GGUF_VT_INT8] = &i8, [GGUF_VT_UINT16] = &u16,
        [GGUF_VT_INT16] = &i16, [GGUF_VT_UINT32] = &u32, [GGUF_VT_INT32] = &i32,
        [GGUF_VT_FLOAT32] = &f32, [GGUF_VT_BOOL] = &b, [GGUF_VT_UINT64] = &u64,
        [GGUF_VT_INT64] = &i64, [GGUF_VT_FLOAT64] = &f64,
    };
    memset(v, 0, 8);
    memcpy(v, src[t], gguf_vtype_size(t));
}

static void
rt_write(const char *path, uint8_t *data[N_RT_TENSORS])
{
    struct gguf_writer *w = gguf_writer_new();
    char key[64], err[256];
    uint8_t v[8], arr[5 * 8];

    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "s.empty", "");
    gguf_writer_set_str(w, "s.quoted", "say \"hi\"\n");
    for (size_t i = 0; i < N_SCALAR_TYPES; i++) {
        enum gguf_vtype t = scalar_types[i];
        rt_scalar(t, v);
        snprintf(key, sizeof(key), "scalar.%s", gguf_vtype_name(t));
        gguf_writer_set_scalar(w, key, t, v);
        fill(arr, sizeof(arr), (uint32_t)t);
        if (t == GGUF_VT_BOOL)
            for (size_t j = 0; j < 5; j++)
                arr[j] &= 1;
        snprintf(key, sizeof(key), "array.%s", gguf_vtype_name(t));
        gguf_writer_set_arr(w, key, t, arr, 5);
    }
    gguf_writer_set_arr(w, "array.empty", GGUF_VT_UINT8, NULL, 0);
    gguf_writer_set_arr_str(w, "array.string", rt_strs, 4);
    gguf_writer_set_u32(w, "conv.u32", 7);
    gguf_writer_set_i32(w, "conv.i32", -7);
    gguf_writer_set_f32(w, "conv.f32", 1e-5f);
    gguf_writer_set_bool(w, "conv.bool", false);
    for (size_t i = 0; i < N_RT_TENSORS; i++) {
        const struct rt_tensor *t = &rt_tensors[i];
        data[i] = malloc(rt_nbytes(t));
        fill(data[i], rt_nbytes(t), 100 + (uint32_t)i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data[i], rt_nbytes(t));
    }
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    gguf_writer_free(w);
}

static void
rt_check_scalars(const struct gguf *g)
{
    char key[64], text[128];
    uint8_t v[8];
    int64_t i64 = 0;
    double f64 = 0;

    for (size_t i = 0; i < N_SCALAR_TYPES; i++) {
        enum gguf_vtype t = scalar_types[i];
        snprintf(key, sizeof(key), "scalar.%s", gguf_vtype_name(t));
        int64_t k = gguf_find_key(g, key);
        CHECK(k >= 0);
        if (k < 0)
            continue;
        CHECK_EQ(gguf_kv_type(g, k), t);
        rt_scalar(t, v);
        gguf_kv_format(g, k, text, sizeof(text));
        if (t == GGUF_VT_UINT64)
            CHECK_STR(text, "18446744073709551615");
        else if (t == GGUF_VT_FLOAT32 || t == GGUF_VT_FLOAT64)
            CHECK(gguf_kv_f64(g, k, &f64) == 0 &&
                  f64 == (t == GGUF_VT_FLOAT32 ? 1.5 : -2.25e300));
        else if (t == GGUF_VT_BOOL)
            CHECK_STR(text, "true");
        else
            CHECK(gguf_kv_i64(g, k, &i64) == 0 && memcmp(&i64, v, gguf_vtype_size(t)) == 0);
    }
}

static void
rt_check_arrays(const struct gguf *g)
{
    char key[64];
    uint8_t arr[5 * 8];
    struct gguf_arr a;

    for (size_t i = 0; i < N_SCALAR_TYPES; i++) {
        enum gguf_vtype t = scalar_types[i];
        snprintf(key, sizeof(key), "array.%s", gguf_vtype_name(t));
        fill(arr, sizeof(arr), (uint32_t)t);
        if (t == GGUF_VT_BOOL)
            for (size_t j = 0; j < 5; j++)
                arr[j] &= 1;
        CHECK_EQ(gguf_get_arr(g, key, &a), 0);
        CHECK_EQ(a.type, t);
        CHECK_EQ(a.n, 5);
        CHECK(memcmp(a.data, arr, 5 * gguf_vtype_size(t)) == 0);
    }
    CHECK_EQ(gguf_get_arr(g, "array.empty", &a), 0);
    CHECK_EQ(a.n, 0);
    CHECK_EQ(gguf_get_arr(g, "array.string", &a), 0);
    CHECK_EQ(a.type, GGUF_VT_STRING);
    CHECK_EQ(a.n, 4);
    for (uint64_t j = 0; j < 4 && j < a.n; j++) {
        CHECK_EQ(a.strs[j].len, rt_strs[j].len);
        CHECK(memcmp(a.strs[j].ptr, rt_strs[j].ptr, rt_strs[j].len) == 0);
    }
}

static void
rt_check_other_kvs(const struct gguf *g)
{
    struct gguf_str s;
    uint32_t u = 0;
    int64_t i = 0;
    float f = 0;
    bool b = true;

    CHECK(gguf_get_str(g, "general.architecture", &s) == 0 && str_eq(s, "llama"));
    CHECK(gguf_get_str(g, "s.empty", &s) == 0 && s.len == 0);
    CHECK(gguf_get_str(g, "s.quoted", &s) == 0 && str_eq(s, "say \"hi\"\n"));
    CHECK(gguf_get_u32(g, "conv.u32", &u) == 0 && u == 7);
    CHECK(gguf_get_i64(g, "conv.i32", &i) == 0 && i == -7);
    CHECK(gguf_get_f32(g, "conv.f32", &f) == 0 && f == 1e-5f);
    CHECK(gguf_get_bool(g, "conv.bool", &b) == 0 && !b);
    CHECK_STR(gguf_key(g, 0), "general.architecture");
    CHECK_STR(gguf_key(g, gguf_n_kv(g) - 1), "conv.bool");
}

static void
rt_check_tensors(const struct gguf *g, uint8_t *data[N_RT_TENSORS])
{
    uint64_t prev_end = 0;

    CHECK_EQ(gguf_n_tensors(g), N_RT_TENSORS);
    CHECK_EQ(gguf_data_offset(g) % 32, 0);
    for (size_t i = 0; i < N_RT_TENSORS && (int64_t)i < gguf_n_tensors(g); i++) {
        const struct rt_tensor *want = &rt_tensors[i];
        const struct gguf_tensor *t = gguf_tensor(g, (int64_t)i);
        CHECK(gguf_find_tensor(g, want->name) == t);
        CHECK_STR(t->name, want->name);
        CHECK_EQ(t->type, want->type);
        CHECK_EQ(t->n_dims, want->n_dims);
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
            CHECK_EQ(t->ne[d], d < want->n_dims ? want->ne[d] : 1);
        CHECK_EQ(t->nbytes, rt_nbytes(want));
        CHECK_EQ(t->offset % 32, 0);
        CHECK(t->offset >= prev_end);           /* laid out in the order added */
        prev_end = t->offset + t->nbytes;
        CHECK(memcmp(t->data, data[i], t->nbytes) == 0);
    }
}

static void
test_round_trip(void)
{
    uint8_t *data[N_RT_TENSORS] = { NULL };
    struct gguf *g = NULL;
    char path[256], err[256] = "";
    struct stat st;

    snprintf(path, sizeof(path), "%s", tmp_path("roundtrip.gguf"));
    rt_write(path, data);
    CHECK(stat(tmp_path("roundtrip.gguf.tmp"), &st) != 0);
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    if (g == NULL) {
        fprintf(stderr, "  %s\n", err);
    } else {
        CHECK_EQ(gguf_version(g), 3);
        CHECK_EQ(gguf_alignment(g), 32);
        CHECK_EQ(gguf_n_kv(g), 3 + 2 * N_SCALAR_TYPES + 2 + 4);
        rt_check_scalars(g);
        rt_check_arrays(g);
        rt_check_other_kvs(g);
        rt_check_tensors(g, data);
    }
    gguf_free(g);
    for (size_t i = 0; i < N_RT_TENSORS; i++)
        free(data[i]);
}

static void
test_writer_replaces_in_place(void)
{
    const char *path = tmp_path("replace.gguf");
    struct gguf_writer *w = gguf_writer_new();
    struct gguf *g = NULL;
    char err[256] = "";
    float f = 0;

    gguf_writer_set_u32(w, "a", 1);
    gguf_writer_set_str(w, "b", "x");
    gguf_writer_set_f32(w, "a", 2.5f);
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    gguf_writer_free(w);
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    if (g != NULL) {
        CHECK_EQ(gguf_n_kv(g), 2);
        CHECK_STR(gguf_key(g, 0), "a");
        CHECK_STR(gguf_key(g, 1), "b");
        CHECK_EQ(gguf_kv_type(g, 0), GGUF_VT_FLOAT32);
        CHECK(gguf_get_f32(g, "a", &f) == 0 && f == 2.5f);
        CHECK_EQ(gguf_n_tensors(g), 0);
    }
    gguf_free(g);
}

static void
test_writer_alignment(void)
{
    const char *path = tmp_path("align64.gguf");
    struct gguf_writer *w = gguf_writer_new();
    struct gguf *g = NULL;
    char err[256] = "";
    uint8_t data[3 * 4] = { 1, 2, 3 };
    int64_t ne[1] = { 3 };

    gguf_writer_set_u32(w, "general.alignment", 64);
    gguf_writer_add_tensor(w, "a", GGUF_T_F32, 1, ne, data, sizeof(data));
    gguf_writer_add_tensor(w, "b", GGUF_T_F32, 1, ne, data, sizeof(data));
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    if (g != NULL) {
        CHECK_EQ(gguf_alignment(g), 64);
        CHECK_EQ(gguf_data_offset(g) % 64, 0);
        CHECK_EQ(gguf_tensor(g, 0)->offset, 0);
        CHECK_EQ(gguf_tensor(g, 1)->offset, 64);
        CHECK(memcmp(gguf_tensor(g, 1)->data, data, sizeof(data)) == 0);
    }
    gguf_free(g);

    gguf_writer_set_u32(w, "general.alignment", 3);
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "general.alignment 3") != NULL);
    gguf_writer_set_str(w, "general.alignment", "32");
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "general.alignment has type string (expected u32)") != NULL);
    gguf_writer_free(w);
}

static void
test_writer_io_error(void)
{
    struct gguf_writer *w = gguf_writer_new();
    char err[256] = "";

    gguf_writer_set_u32(w, "a", 1);
    CHECK_EQ(gguf_writer_write(w, "/nonexistent-dir/x.gguf", err, sizeof(err)), -ENOENT);
    CHECK(strstr(err, "/nonexistent-dir/x.gguf.tmp: cannot create") != NULL);
    gguf_writer_free(w);
}

/* Many tensors exercise the name hash table (growth, probing). */
static void
test_many_tensors(void)
{
    const char *path = tmp_path("many.gguf");
    struct gguf_writer *w = gguf_writer_new();
    struct gguf *g = NULL;
    char name[32], err[256] = "";
    static uint32_t data[3000];
    int64_t ne[1] = { 1 };

    for (uint32_t i = 0; i < 3000; i++) {
        data[i] = i;
        snprintf(name, sizeof(name), "blk.%u.weight", i);
        gguf_writer_add_tensor(w, name, GGUF_T_I32, 1, ne, &data[i], 4);
    }
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    gguf_writer_free(w);
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    for (uint32_t i = 0; g != NULL && i < 3000; i++) {
        snprintf(name, sizeof(name), "blk.%u.weight", i);
        const struct gguf_tensor *t = gguf_find_tensor(g, name);
        CHECK(t != NULL && t == gguf_tensor(g, i) && memcmp(t->data, &i, 4) == 0);
    }
    CHECK(g == NULL || gguf_find_tensor(g, "blk.3000.weight") == NULL);
    gguf_free(g);
}

/* ======================================================================= */
/* Getters and formatting                                                  */
/* ======================================================================= */

static struct gguf *
open_written(const char *name, struct gguf_writer *w)
{
    const char *path = tmp_path(name);
    struct gguf *g = NULL;
    char err[256] = "";

    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    gguf_writer_free(w);
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    return g;
}

static struct gguf *
getters_file(void)
{
    struct gguf_writer *w = gguf_writer_new();
    uint64_t u64 = UINT64_MAX;
    double big = 1e300;
    float fa[3] = { 1e30f, NAN, -2.5f };
    int16_t ia[2] = { -3, 4 };

    gguf_writer_set_i32(w, "neg", -1);
    gguf_writer_set_scalar(w, "u64max", GGUF_VT_UINT64, &u64);
    gguf_writer_set_scalar(w, "big", GGUF_VT_FLOAT64, &big);
    gguf_writer_set_str(w, "str", "x");
    gguf_writer_set_arr(w, "fa", GGUF_VT_FLOAT32, fa, 3);
    gguf_writer_set_arr(w, "ia", GGUF_VT_INT16, ia, 2);
    return open_written("getters.gguf", w);
}

static void
test_getters(void)
{
    struct gguf *g = getters_file();
    uint32_t u = 42;
    int64_t i = 42;
    float f = 42;
    double d = 0;
    bool b = false;
    struct gguf_str s = { "default", 7 };

    if (g == NULL)
        return;
    CHECK_EQ(gguf_get_u32(g, "neg", &u), -ERANGE);
    CHECK_EQ(gguf_get_u32(g, "absent", &u), -ENOENT);
    CHECK_EQ(u, 42);                            /* untouched on error */
    CHECK(gguf_get_i64(g, "neg", &i) == 0 && i == -1);
    CHECK_EQ(gguf_get_i64(g, "u64max", &i), -ERANGE);
    CHECK_EQ(gguf_get_i64(g, "str", &i), -EINVAL);
    CHECK(gguf_get_f64(g, "neg", &d) == 0 && d == -1.0);
    CHECK(gguf_get_f64(g, "u64max", &d) == 0 && d == 18446744073709551616.0);
    CHECK_EQ(gguf_get_f32(g, "big", &f), -ERANGE);
    CHECK_EQ(f, 42);
    CHECK_EQ(gguf_get_bool(g, "neg", &b), -EINVAL);
    CHECK_EQ(gguf_get_str(g, "neg", &s), -EINVAL);
    CHECK_EQ(gguf_get_str(g, "absent", &s), -ENOENT);
    CHECK(str_eq(s, "default"));
    CHECK_EQ(gguf_find_key(g, "absent"), -1);
    gguf_free(g);
}

static void
test_array_getters(void)
{
    struct gguf *g = getters_file();
    struct gguf_arr a;

    if (g == NULL)
        return;
    CHECK_EQ(gguf_get_arr(g, "str", &a), -EINVAL);
    CHECK_EQ(gguf_get_arr(g, "fa", &a), 0);
    CHECK_EQ(gguf_arr_i64(&a, 0), INT64_MAX);   /* saturated */
    CHECK_EQ(gguf_arr_i64(&a, 1), 0);           /* NaN */
    CHECK_EQ(gguf_arr_i64(&a, 2), -2);
    CHECK(gguf_arr_f64(&a, 2) == -2.5);
    CHECK_EQ(gguf_get_arr(g, "ia", &a), 0);
    CHECK_EQ(gguf_arr_i64(&a, 0), -3);
    CHECK(gguf_arr_f64(&a, 1) == 4.0);
    gguf_free(g);
}

static void
test_kv_format(void)
{
    struct gguf_writer *w = gguf_writer_new();
    int32_t ia[10] = { 0, -1, 2, 3, 4, 5, 6, 7, 8, 9 };
    struct gguf_str sa[2] = { {"<s>", 3}, {"a\"b", 3} };
    char long_str[300];
    int8_t i8 = -5;

    memset(long_str, 'z', sizeof(long_str) - 1);
    long_str[sizeof(long_str) - 1] = '\0';
    gguf_writer_set_str(w, "s", "tab\there \"q\"\n");
    gguf_writer_set_str(w, "long", long_str);
    gguf_writer_set_str(w, "utf8", "\xc3\xa9\xc3\xa9\xc3\xa9");
    gguf_writer_set_arr(w, "ia", GGUF_VT_INT32, ia, 10);
    gguf_writer_set_arr_str(w, "sa", sa, 2);
    gguf_writer_set_arr(w, "empty", GGUF_VT_UINT8, NULL, 0);
    gguf_writer_set_f32(w, "eps", 1e-5f);
    gguf_writer_set_bool(w, "yes", true);
    gguf_writer_set_scalar(w, "i8", GGUF_VT_INT8, &i8);
    struct gguf *g = open_written("format.gguf", w);
    if (g == NULL)
        return;

    char buf[128], small[12], tiny[9];
    CHECK_STR(gguf_kv_format(g, 0, buf, sizeof(buf)), "\"tab\\there \\\"q\\\"\\n\"");
    gguf_kv_format(g, 1, buf, sizeof(buf));
    CHECK_EQ(strlen(buf), sizeof(buf) - 1);         /* cut to fill the buffer */
    CHECK(buf[0] == '"' && strstr(buf, "zzz...\"") != NULL);
    CHECK_STR(gguf_kv_format(g, 1, small, sizeof(small)), "\"zzzzzz...\"");
    CHECK_STR(gguf_kv_format(g, 2, tiny, sizeof(tiny)), "\"\xc3\xa9...\"");  /* whole chars */
    CHECK_STR(gguf_kv_format(g, 3, buf, sizeof(buf)), "[10 x i32] 0, -1, 2, 3, ...");
    CHECK_STR(gguf_kv_format(g, 4, buf, sizeof(buf)), "[2 x string] \"<s>\", \"a\\\"b\"");
    CHECK_STR(gguf_kv_format(g, 5, buf, sizeof(buf)), "[0 x u8]");
    CHECK_STR(gguf_kv_format(g, 6, buf, sizeof(buf)), "1e-05");
    CHECK_STR(gguf_kv_format(g, 7, buf, sizeof(buf)), "true");
    CHECK_STR(gguf_kv_format(g, 8, buf, sizeof(buf)), "-5");
    CHECK_STR(gguf_kv_format(g, 3, small, sizeof(small)), "[10 x i32] ");
    gguf_free(g);
}

/* ======================================================================= */
/* The real files                                                          */
/* ======================================================================= */

static struct gguf *
open_shared(const char *rel)
{
    struct gguf *g = NULL;
    char err[512] = "";
    int rc = gguf_open(shared_path(rel), &g, err, sizeof(err));
    CHECK_EQ(rc, 0);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err);
    return g;
}

/* Checks what every kjv-tiny file holds, whatever its tensor types. */
static void
check_kjv(const struct gguf *g)
{
    struct gguf_arr a;
    struct gguf_str s;
    int64_t n = 0;
    uint32_t u = 0;
    float eps = 0;
    bool bos = false;
    char buf[128];

    CHECK_EQ(gguf_version(g), 3);
    CHECK_EQ(gguf_n_tensors(g), 57);
    CHECK_EQ(gguf_n_kv(g), 27);
    CHECK(gguf_get_i64(g, "llama.block_count", &n) == 0 && n == 6);
    CHECK(gguf_get_u32(g, "llama.embedding_length", &u) == 0 && u == 256);
    CHECK(gguf_get_str(g, "general.architecture", &s) == 0 && str_eq(s, "llama"));
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0);
    CHECK(fabsf(eps - 1e-5f) < 1e-9f);
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bos) == 0 && bos);
    CHECK_EQ(gguf_get_arr(g, "tokenizer.ggml.tokens", &a), 0);
    CHECK_EQ(a.type, GGUF_VT_STRING);
    CHECK_EQ(a.n, 2048);
    CHECK(a.n > 2 && str_eq(a.strs[0], "<unk>") && str_eq(a.strs[1], "<s>"));
    int64_t k = gguf_find_key(g, "tokenizer.ggml.tokens");
    CHECK(k >= 0 && strncmp(gguf_kv_format(g, k, buf, sizeof(buf)),
                            "[2048 x string] \"<unk>\", \"<s>\", \"</s>\"", 37) == 0);
    k = gguf_find_key(g, "llama.attention.layer_norm_rms_epsilon");
    CHECK(k >= 0 && strcmp(gguf_kv_format(g, k, buf, sizeof(buf)), "1e-05") == 0);
    CHECK_EQ(gguf_get_arr(g, "tokenizer.ggml.scores", &a), 0);
    CHECK(a.type == GGUF_VT_FLOAT32 && a.n == 2048);
    CHECK(gguf_find_tensor(g, "no.such.tensor") == NULL);
}

/* Every tensor lies inside the buffer, aligned, and no two overlap (they are in order here). */
static void
check_tensor_placement(const struct gguf *g)
{
    size_t len = 0;
    const uint8_t *buf = gguf_buffer(g, &len);
    const uint8_t *data = buf + gguf_data_offset(g);

    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        CHECK(gguf_find_tensor(g, t->name) == t);
        CHECK_EQ(t->offset % gguf_alignment(g), 0);
        CHECK((const uint8_t *)t->data == data + t->offset);
        CHECK(t->offset + t->nbytes <= len - gguf_data_offset(g));
    }
}

static void
test_read_kjv_f32(void)
{
    struct gguf *g = open_shared("models/kjv-tiny-f32.gguf");
    if (g == NULL)
        return;
    check_kjv(g);
    check_tensor_placement(g);
    const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL && t->type == GGUF_T_F32 && t->n_dims == 2);
    CHECK(t != NULL && t->ne[0] == 256 && t->ne[1] == 2048 && t->nbytes == 256 * 2048 * 4);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        CHECK_EQ(gguf_tensor(g, i)->type, GGUF_T_F32);
    gguf_free(g);
}

static void
test_read_kjv_q8_0(void)
{
    struct gguf *g = open_shared("models/kjv-tiny-q8_0.gguf");
    if (g == NULL)
        return;
    check_kjv(g);
    check_tensor_placement(g);
    const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL && t->type == GGUF_T_Q8_0 && t->ne[0] == 256 && t->ne[1] == 2048);
    CHECK(t != NULL && t->nbytes == 2048 * 8 * 34);
    t = gguf_find_tensor(g, "output_norm.weight");
    CHECK(t != NULL && t->type == GGUF_T_F32 && t->n_dims == 1 && t->nbytes == 1024);
    t = gguf_find_tensor(g, "blk.5.ffn_down.weight");
    CHECK(t != NULL && t->type == GGUF_T_Q8_0 && t->ne[0] == 768 && t->ne[1] == 256);
    gguf_free(g);
}

static void
test_read_vocab_gpt2(void)
{
    struct gguf *g = open_shared("fixtures/tokenizer/ggml-vocab-gpt-2.gguf");
    struct gguf_arr a;
    struct gguf_str s;
    size_t len = 0;

    if (g == NULL)
        return;
    gguf_buffer(g, &len);
    CHECK_EQ(gguf_n_tensors(g), 0);
    CHECK_EQ(gguf_n_kv(g), 16);
    CHECK(gguf_data_offset(g) <= len);          /* the file ends without padding */
    CHECK(gguf_get_str(g, "tokenizer.ggml.model", &s) == 0 && str_eq(s, "gpt2"));
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &a) == 0 && a.n == 50257);
    CHECK(a.n > 0 && str_eq(a.strs[0], "!"));
    CHECK(gguf_get_arr(g, "tokenizer.ggml.merges", &a) == 0 && a.n == 50000);
    CHECK(a.n > 0 && str_eq(a.strs[0], "\xc4\xa0 t"));
    gguf_free(g);
}

/* Copying every kv and tensor through the writer reproduces llama.cpp's bytes. */
static void
copy_file(const char *rel, const char *out)
{
    struct gguf *g = open_shared(rel);
    struct gguf_writer *w = gguf_writer_new();
    char err[256] = "";
    size_t len = 0, n = 0;

    for (int64_t i = 0; g != NULL && i < gguf_n_kv(g); i++)
        gguf_writer_copy_kv(w, g, i);
    for (int64_t i = 0; g != NULL && i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    CHECK_EQ(gguf_writer_write(w, tmp_path(out), err, sizeof(err)), 0);
    const uint8_t *orig = g != NULL ? gguf_buffer(g, &len) : NULL;
    uint8_t *copy = read_file(tmp_path(out), &n);
    CHECK(copy != NULL && n >= len && n - len < 32);
    CHECK(copy != NULL && orig != NULL && memcmp(copy, orig, n < len ? n : len) == 0);
    free(copy);
    gguf_writer_free(w);
    gguf_free(g);
}

static void
test_copy_real_files(void)
{
    copy_file("fixtures/tokenizer/ggml-vocab-gpt-2.gguf", "copy-gpt2.gguf");
    copy_file("models/kjv-tiny-q8_0.gguf", "copy-q8_0.gguf");
}

static void
test_open_errors(void)
{
    struct gguf *g = (struct gguf *)1;
    char err[256] = "";

    CHECK_EQ(gguf_open("/nonexistent/model.gguf", &g, err, sizeof(err)), -ENOENT);
    CHECK(g == NULL);
    CHECK(strncmp(err, "/nonexistent/model.gguf: cannot open", 36) == 0);
    CHECK_EQ(gguf_open("/tmp", &g, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "not a regular file") != NULL);
    write_file(tmp_path("empty.gguf"), "", 0);
    CHECK_EQ(gguf_open(tmp_path("empty.gguf"), &g, err, sizeof(err)), -EBADMSG);
    CHECK(strstr(err, "empty.gguf: truncated reading magic") != NULL);
    CHECK(g == NULL);
}

/* ======================================================================= */
/* Corrupt files                                                           */
/* ======================================================================= */

/* Fields of the small valid file whose offsets the builder records. */
enum field {
    F_NONE, F_MAGIC, F_VERSION, F_N_TENSORS, F_N_KV, F_ALIGN_TYPE, F_ALIGN_VAL, F_KEY1_LEN,
    F_STR_LEN, F_ARR_TYPE, F_ARR_N, F_STRS_N, F_X_TYPE, F_Y_CHAR, F_T0_NAME, F_T0_NDIMS,
    F_T0_NE0, F_T0_TYPE, F_T0_OFF, F_T1_CHAR, F_T1_NE0, F_T1_NE1, F_T1_OFF, F_HDR_END, F_DATA,
    F_COUNT
};

struct buf {
    uint8_t *p;
    size_t len, cap;
};

/* Appends n bytes and returns the offset where they start. */
static size_t
put(struct buf *b, const void *p, size_t n)
{
    size_t at = b->len;
    if (b->cap - b->len < n) {
        b->cap = (b->cap + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return at;
}

static size_t put_u8(struct buf *b, uint8_t v) { return put(b, &v, 1); }
static size_t put_u32(struct buf *b, uint32_t v) { return put(b, &v, 4); }
static size_t put_u64(struct buf *b, uint64_t v) { return put(b, &v, 8); }

static size_t
put_str(struct buf *b, const char *s)
{
    size_t at = put_u64(b, strlen(s));
    put(b, s, strlen(s));
    return at;
}

/*
 * A small valid v3 file: 6 kvs (general.alignment = 32, a string, a u16
 * array, a string array, two u8) and two f32 tensors, t0 [8] at 0 and
 * t1 [4, 2] at 32. pos[] receives the offset of each field.
 */
static struct buf
build_small(size_t pos[F_COUNT])
{
    struct buf b = { NULL, 0, 0 };
    uint16_t u16s[3] = { 1, 2, 3 };

    pos[F_MAGIC] = put(&b, "GGUF", 4);
    pos[F_VERSION] = put_u32(&b, 3);
    pos[F_N_TENSORS] = put_u64(&b, 2);
    pos[F_N_KV] = put_u64(&b, 6);
    put_str(&b, "general.alignment");
    pos[F_ALIGN_TYPE] = put_u32(&b, GGUF_VT_UINT32);
    pos[F_ALIGN_VAL] = put_u32(&b, 32);
    pos[F_KEY1_LEN] = put_str(&b, "a.str");
    put_u32(&b, GGUF_VT_STRING);
    pos[F_STR_LEN] = put_str(&b, "hello");
    put_str(&b, "a.arr");
    put_u32(&b, GGUF_VT_ARRAY);
    pos[F_ARR_TYPE] = put_u32(&b, GGUF_VT_UINT16);
    pos[F_ARR_N] = put_u64(&b, 3);
    put(&b, u16s, sizeof(u16s));
    put_str(&b, "a.strs");
    put_u32(&b, GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_STRING);
    pos[F_STRS_N] = put_u64(&b, 2);
    put_str(&b, "x");
    put_str(&b, "yz");
    put_str(&b, "a.x");
    pos[F_X_TYPE] = put_u32(&b, GGUF_VT_UINT8);
    put_u8(&b, 1);
    pos[F_Y_CHAR] = put_str(&b, "a.y") + 8 + 2;
    put_u32(&b, GGUF_VT_UINT8);
    put_u8(&b, 2);

    pos[F_T0_NAME] = put_str(&b, "t0");
    pos[F_T0_NDIMS] = put_u32(&b, 1);
    pos[F_T0_NE0] = put_u64(&b, 8);
    pos[F_T0_TYPE] = put_u32(&b, GGUF_T_F32);
    pos[F_T0_OFF] = put_u64(&b, 0);
    pos[F_T1_CHAR] = put_str(&b, "t1") + 8 + 1;
    put_u32(&b, 2);
    pos[F_T1_NE0] = put_u64(&b, 4);
    pos[F_T1_NE1] = put_u64(&b, 2);
    put_u32(&b, GGUF_T_F32);
    pos[F_T1_OFF] = put_u64(&b, 32);
    pos[F_HDR_END] = b.len;
    while (b.len % 32 != 0)
        put_u8(&b, 0);
    pos[F_DATA] = b.len;
    for (int i = 0; i < 16; i++) {
        float f = (float)i;
        put(&b, &f, 4);
    }
    return b;
}

static void
patch(struct buf *b, size_t at, int width, uint64_t v)
{
    memcpy(b->p + at, &v, (size_t)width);       /* little-endian host */
}

struct bad {
    const char *name;
    struct { enum field f; int width; uint64_t v; } p[2];
    enum field cut;             /* the buffer ends one byte after this field's offset */
    const char *expect;         /* in the message, after "crafted.gguf: " */
};

#define P1(f, w, v) { { f, w, v }, { F_NONE, 0, 0 } }
#define P2(f, w, v, g, x, y) { { f, w, v }, { g, x, y } }
#define NOP { { F_NONE, 0, 0 }, { F_NONE, 0, 0 } }

static const struct bad bad_files[] = {
    {"bad magic", P1(F_MAGIC, 4, 0x58554747), 0, "bad magic 0x58554747 (expected 0x46554747"},
    {"version 1", P1(F_VERSION, 4, 1), 0, "unsupported gguf version 1 (expected 2 or 3)"},
    {"version 4", P1(F_VERSION, 4, 4), 0, "unsupported gguf version 4"},
    {"big-endian", P1(F_VERSION, 4, 0x03000000), 0, "big-endian gguf file"},
    {"huge n_kv", P1(F_N_KV, 8, 1ull << 60), 0, "n_kv 1152921504606846976 is too large"},
    {"n_kv max", P1(F_N_KV, 8, UINT64_MAX), 0, "n_kv 18446744073709551615 is too large"},
    {"huge n_tensors", P1(F_N_TENSORS, 8, 1ull << 60), 0,
     "n_tensors 1152921504606846976 is too large"},
    {"more tensors than present", P1(F_N_TENSORS, 8, 3), 0, "tensor 2"},
    {"huge key length", P1(F_KEY1_LEN, 8, 1ull << 62), 0,
     "kv 1: key length 4611686018427387904 at offset"},
    {"key length max", P1(F_KEY1_LEN, 8, UINT64_MAX), 0, "key length 18446744073709551615"},
    {"empty key", P1(F_KEY1_LEN, 8, 0), 0, "kv 1: empty key"},
    {"huge string length", P1(F_STR_LEN, 8, 1ull << 62), 0,
     "kv 1 (a.str): string length 4611686018427387904 at offset"},
    {"unknown value type", P1(F_X_TYPE, 4, 13), 0, "kv 4 (a.x): unknown value type 13"},
    {"nested array", P1(F_ARR_TYPE, 4, GGUF_VT_ARRAY), 0, "kv 2 (a.arr): nested array"},
    {"unknown array type", P1(F_ARR_TYPE, 4, 200), 0, "unknown array element type 200"},
    {"huge array count", P1(F_ARR_N, 8, 1ull << 62), 0, "array of 4611686018427387904 u16"},
    {"array size overflow", P1(F_ARR_N, 8, UINT64_MAX), 0, "array of 18446744073709551615 u16"},
    {"huge string array", P1(F_STRS_N, 8, 1ull << 61), 0,
     "kv 3 (a.strs): array of 2305843009213693952 strings is too large"},
    {"duplicate key", P1(F_Y_CHAR, 1, 'x'), 0, "kv 5 (a.x): duplicate key (also kv 4)"},
    {"alignment 0", P1(F_ALIGN_VAL, 4, 0), 0, "general.alignment 0 is not a power of two"},
    {"alignment 3", P1(F_ALIGN_VAL, 4, 3), 0, "general.alignment 3 is not a power of two"},
    {"alignment 2^31", P1(F_ALIGN_VAL, 4, 1u << 31), 0,
     "general.alignment 2147483648 is larger than 1 MiB"},
    {"alignment not u32", P1(F_ALIGN_TYPE, 4, GGUF_VT_INT32), 0,
     "general.alignment has type i32 (expected u32)"},
    {"empty tensor name", P1(F_T0_NAME, 8, 0), 0, "tensor 0: empty tensor name"},
    {"tensor name over 64 KiB", P1(F_T0_NAME, 8, 70000), 0,
     "tensor 0: tensor name length 70000 exceeds 65536"},
    {"duplicate tensor name", P1(F_T1_CHAR, 1, '0'), 0,
     "tensor 1 (t0): duplicate tensor name (also tensor 0)"},
    {"n_dims 0", P1(F_T0_NDIMS, 4, 0), 0, "tensor 0 (t0): n_dims 0 out of range (expected 1..4)"},
    {"n_dims 5", P1(F_T0_NDIMS, 4, 5), 0, "tensor 0 (t0): n_dims 5 out of range"},
    {"zero dimension", P1(F_T1_NE1, 8, 0), 0, "tensor 1 (t1): ne[1] = 0 (expected > 0)"},
    {"negative dimension", P1(F_T0_NE0, 8, UINT64_MAX), 0, "ne[0] = -1 (expected > 0)"},
    {"element count overflow", P2(F_T1_NE0, 8, 1ull << 32, F_T1_NE1, 8, 1ull << 32), 0,
     "tensor 1 (t1): element count overflows int64"},
    {"byte size overflow", P2(F_T0_TYPE, 4, GGUF_T_F64, F_T0_NE0, 8, 1ull << 62), 0,
     "byte size of 4611686018427387904 f64 elements overflows size_t"},
    {"byte size overflow after padding", P2(F_T0_TYPE, 4, GGUF_T_F16, F_T0_NE0, 8, INT64_MAX),
     0, "byte size 18446744073709551614 overflows size_t after padding to the alignment 32"},
    {"unknown tensor type 99", P1(F_T0_TYPE, 4, 99), 0, "tensor 0 (t0): unknown tensor type 99"},
    {"removed tensor type 4", P1(F_T0_TYPE, 4, 4), 0, "unknown tensor type 4"},
    {"removed tensor type 31", P1(F_T0_TYPE, 4, 31), 0, "unknown tensor type 31"},
    {"removed tensor type 36", P1(F_T0_TYPE, 4, 36), 0, "unknown tensor type 36"},
    {"q8_0 row of 33", P2(F_T0_TYPE, 4, GGUF_T_Q8_0, F_T0_NE0, 8, 33), 0,
     "ne[0] = 33 is not a multiple of the q8_0 block size 32"},
    {"offset not aligned", P1(F_T1_OFF, 8, 33), 0,
     "tensor 1 (t1): offset 33 is not a multiple of the alignment 32"},
    {"offset past the end", P1(F_T1_OFF, 8, 1024), 0,
     "tensor 1 (t1): data at offset 1024 (32 bytes) runs past the end of the data section"},
    {"offset + size overflow", P1(F_T1_OFF, 8, UINT64_MAX - 31), 0, "runs past the end"},
    {"overlapping tensors", P1(F_T0_NE0, 8, 16), 0,
     "tensors t0 and t1 overlap (t0 is [0, 64), t1 starts at 32)"},
    {"data section past the end", NOP, F_HDR_END, "data section starts at"},
    {"truncated tensor offset", NOP, F_T1_OFF, "truncated reading tensor offset"},
    {"truncated data", NOP, F_DATA, "tensor 0 (t0): data at offset 0 (32 bytes) runs past"},
};
#define N_BAD (sizeof(bad_files) / sizeof(bad_files[0]))

/* The corrupt file of case c, in a malloc'd buffer of its exact size. */
static uint8_t *
make_bad(const struct bad *c, size_t *len)
{
    size_t pos[F_COUNT] = { 0 };
    struct buf b = build_small(pos);
    uint8_t *p = NULL;

    for (int i = 0; i < 2; i++)
        if (c->p[i].f != F_NONE)
            patch(&b, pos[c->p[i].f], c->p[i].width, c->p[i].v);
    *len = c->cut != F_NONE ? pos[c->cut] + 1 : b.len;
    p = malloc(*len);
    memcpy(p, b.p, *len);
    free(b.p);
    return p;
}

/* Parses buf[0..len) expecting a one-line -EBADMSG whose text after "NAME: " contains expect. */
static void
expect_bad(const uint8_t *buf, size_t len, const char *what, const char *expect)
{
    struct gguf *g = (struct gguf *)1;
    char err[512] = "";
    int rc = gguf_parse(buf, len, "crafted.gguf", &g, err, sizeof(err));
    int was = check_failed_;

    check_failed_ = 0;
    CHECK_EQ(rc, -EBADMSG);
    CHECK(g == NULL);
    CHECK(strncmp(err, "crafted.gguf: ", 14) == 0);
    CHECK(strchr(err, '\n') == NULL && err[strlen(err) - 1] != '.');
    CHECK(expect == NULL || strstr(err, expect) != NULL);
    if (check_failed_)
        fprintf(stderr, "  case \"%s\" (len %zu): got \"%s\", want \"%s\"\n", what, len, err,
                expect != NULL ? expect : "");
    check_failed_ |= was;
    if (rc == 0)
        gguf_free(g);
}

static void
test_small_file_is_valid(void)
{
    size_t pos[F_COUNT] = { 0 };
    struct buf b = build_small(pos);
    struct gguf *g = NULL;
    char err[256] = "";
    struct gguf_arr a;

    CHECK_EQ(gguf_parse(b.p, b.len, "small.gguf", &g, err, sizeof(err)), 0);
    CHECK(pos[F_HDR_END] % 32 != 0 && pos[F_HDR_END] % 32 != 31);  /* needed by the table */
    if (g != NULL) {
        CHECK_EQ(gguf_n_kv(g), 6);
        CHECK_EQ(gguf_n_tensors(g), 2);
        CHECK_EQ(gguf_data_offset(g), pos[F_DATA]);
        CHECK(gguf_get_arr(g, "a.strs", &a) == 0 && a.n == 2 && str_eq(a.strs[1], "yz"));
        CHECK(gguf_tensor(g, 1)->data == b.p + pos[F_DATA] + 32);
    }
    gguf_free(g);

    /* Version 2 has the same layout. */
    patch(&b, pos[F_VERSION], 4, 2);
    CHECK_EQ(gguf_parse(b.p, b.len, "small.gguf", &g, err, sizeof(err)), 0);
    CHECK(g != NULL && gguf_version(g) == 2);
    gguf_free(g);

    /* Tensors may lie in the data section in any order. */
    patch(&b, pos[F_T0_OFF], 8, 32);
    patch(&b, pos[F_T1_OFF], 8, 0);
    CHECK_EQ(gguf_parse(b.p, b.len, "small.gguf", &g, err, sizeof(err)), 0);
    CHECK(g != NULL && gguf_tensor(g, 0)->data == b.p + pos[F_DATA] + 32);
    gguf_free(g);
    free(b.p);
}

static void
test_corrupt_files(void)
{
    CHECK(N_BAD >= 25);
    for (size_t i = 0; i < N_BAD; i++) {
        size_t len = 0;
        uint8_t *p = make_bad(&bad_files[i], &len);
        expect_bad(p, len, bad_files[i].name, bad_files[i].expect);
        free(p);
    }
}

/* Every proper prefix of a valid file fails cleanly; each sits in its own exact-size buffer. */
static void
test_truncated_everywhere(void)
{
    size_t pos[F_COUNT] = { 0 };
    struct buf b = build_small(pos);
    char what[32];

    for (size_t n = 0; n < b.len; n++) {
        uint8_t *p = malloc(n);
        if (n > 0)
            memcpy(p, b.p, n);
        snprintf(what, sizeof(what), "prefix %zu", n);
        expect_bad(n > 0 ? p : NULL, n, what, NULL);
        free(p);
    }
    free(b.p);
}

/* A vocabulary-only file may end right after its header, without padding. */
static void
test_no_tensors_no_padding(void)
{
    size_t pos[F_COUNT] = { 0 };
    struct buf b = build_small(pos);
    struct gguf *g = NULL;
    char err[256] = "";

    patch(&b, pos[F_N_TENSORS], 8, 0);
    CHECK_EQ(gguf_parse(b.p, pos[F_T0_NAME], "vocab.gguf", &g, err, sizeof(err)), 0);
    CHECK(g != NULL && gguf_data_offset(g) == pos[F_T0_NAME]);
    gguf_free(g);
    free(b.p);
}

/* ======================================================================= */
/* The CLI on corrupt files                                                */
/* ======================================================================= */

/* Runs argv with stderr captured; checks exit status 1 and one clean line naming path. */
static void
check_cli(char *const argv[], const char *path)
{
    const char *errpath = tmp_path("stderr.txt");
    posix_spawn_file_actions_t fa;
    pid_t pid = 0;
    int status = 0, was = check_failed_;
    size_t n = 0;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    check_failed_ = 0;
    CHECK_EQ(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    CHECK(waitpid(pid, &status, 0) == pid);
    char *text = (char *)read_file(errpath, &n);
    text = realloc(text, n + 1);
    text[n] = '\0';
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    CHECK(n > 0 && text[n - 1] == '\n' && strchr(text, '\n') == text + n - 1);
    CHECK(strstr(text, path) != NULL);
    CHECK(strstr(text, "AddressSanitizer") == NULL && strstr(text, "runtime error") == NULL &&
          strstr(text, "LeakSanitizer") == NULL);
    if (check_failed_)
        fprintf(stderr, "  %s %s %s: status 0x%x, stderr:\n%s\n", argv[0], argv[1], path,
                status, text);
    check_failed_ |= was;
    free(text);
}

static void
cli_case(const char *bin, const uint8_t *p, size_t len, const char *file)
{
    char path[256];
    snprintf(path, sizeof(path), "%s", tmp_path(file));
    write_file(path, p, len);
    char *info[] = { (char *)bin, "info", path, NULL };
    char *gen[] = { (char *)bin, "generate", "--model", path, "--prompt", "hi", "-n", "1", NULL };
    check_cli(info, path);
    check_cli(gen, path);
    unlink(path);
}

static void
test_cli_rejects_corrupt_files(void)
{
    const char *bin = getenv("LORASERVE_BIN");
    char file[64];

    if (bin == NULL || bin[0] == '\0') {
        printf("note: LORASERVE_BIN is not set; the CLI checks were skipped\n");
        CHECK(getenv("LORASERVE_REQUIRE_BIN") == NULL);
        return;
    }
    for (size_t i = 0; i < N_BAD; i++) {
        size_t len = 0;
        uint8_t *p = make_bad(&bad_files[i], &len);
        snprintf(file, sizeof(file), "bad-%02zu.gguf", i);
        cli_case(bin, p, len, file);
        free(p);
    }
    size_t pos[F_COUNT] = { 0 };
    struct buf b = build_small(pos);
    for (size_t n = 0; n < b.len; n += 37) {
        snprintf(file, sizeof(file), "prefix-%zu.gguf", n);
        cli_case(bin, b.p, n, file);
    }
    free(b.p);
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        {"type_traits", test_type_traits},
        {"round_trip", test_round_trip},
        {"writer_replaces_in_place", test_writer_replaces_in_place},
        {"writer_alignment", test_writer_alignment},
        {"writer_io_error", test_writer_io_error},
        {"many_tensors", test_many_tensors},
        {"getters", test_getters},
        {"array_getters", test_array_getters},
        {"kv_format", test_kv_format},
        {"read_kjv_f32", test_read_kjv_f32},
        {"read_kjv_q8_0", test_read_kjv_q8_0},
        {"read_vocab_gpt2", test_read_vocab_gpt2},
        {"copy_real_files", test_copy_real_files},
        {"open_errors", test_open_errors},
        {"small_file_is_valid", test_small_file_is_valid},
        {"corrupt_files", test_corrupt_files},
        {"truncated_everywhere", test_truncated_everywhere},
        {"no_tensors_no_padding", test_no_tensors_no_padding},
        {"cli_rejects_corrupt_files", test_cli_rejects_corrupt_files},
        {NULL, NULL},
    };
    int rc = check_main(tests, argc, argv);
    remove_tmpdir();
    return rc;
}

/*
 * gguf.c - GGUF v2/v3 reader and v3 writer.
 *
 * File layout (little-endian), as in gguf.h:
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 value type, value },
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 tensor type, u64 offset },
 *   padding to general.alignment (default 32), then the data section.
 *
 * The reader walks the buffer once with a cursor that checks every read
 * against the bytes left, so nothing outside buf[0..len) is ever touched.
 * Every count is checked against the bytes left before anything is allocated
 * for it, and all size arithmetic is overflow-checked. Keys and tensor names
 * are copied; values and tensor data stay in the buffer. Keys and tensor
 * names are found through open-addressing hash tables (XXH3).
 */
#include "gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian fields with memcpy and needs a little-endian host"
#endif

#define GGUF_MAGIC 0x46554747u      /* "GGUF" read as a little-endian u32 */
#define MAX_NAME 65536              /* longest tensor name accepted, as ggml */
#define MAX_ALIGNMENT (1u << 20)
#define MIN_KV_BYTES 14             /* u64 key length, 1-byte key, u32 type, 1-byte value */
#define MIN_TENSOR_BYTES 33         /* u64 + 1-byte name, u32 n_dims, u64 ne, u32 type, u64 off */
#define MSG_NAME 100                /* bytes of a key or tensor name shown in a message */
#define FORMAT_ELEMS 4              /* array elements shown by gguf_kv_format() */
#define FORMAT_STR 32               /* bytes of each string element shown by gguf_kv_format() */

static const uint8_t zeros[4096];   /* padding written by the writer, in chunks */

/* ======================================================================= */
/* Types                                                                   */
/* ======================================================================= */

/* Block sizes and bytes per block, as ggml's type_traits (ggml-common.h block structs). */
static const struct {
    const char *name;
    int64_t blck;
    size_t bsize;
} ttraits[GGUF_T_COUNT] = {
    [GGUF_T_F32] = {"f32", 1, 4},
    [GGUF_T_F16] = {"f16", 1, 2},
    [GGUF_T_Q4_0] = {"q4_0", 32, 18},
    [GGUF_T_Q4_1] = {"q4_1", 32, 20},
    [GGUF_T_Q5_0] = {"q5_0", 32, 22},
    [GGUF_T_Q5_1] = {"q5_1", 32, 24},
    [GGUF_T_Q8_0] = {"q8_0", 32, 34},
    [GGUF_T_Q8_1] = {"q8_1", 32, 36},
    [GGUF_T_Q2_K] = {"q2_K", 256, 84},
    [GGUF_T_Q3_K] = {"q3_K", 256, 110},
    [GGUF_T_Q4_K] = {"q4_K", 256, 144},
    [GGUF_T_Q5_K] = {"q5_K", 256, 176},
    [GGUF_T_Q6_K] = {"q6_K", 256, 210},
    [GGUF_T_Q8_K] = {"q8_K", 256, 292},
    [GGUF_T_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [GGUF_T_IQ2_XS] = {"iq2_xs", 256, 74},
    [GGUF_T_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [GGUF_T_IQ1_S] = {"iq1_s", 256, 50},
    [GGUF_T_IQ4_NL] = {"iq4_nl", 32, 18},
    [GGUF_T_IQ3_S] = {"iq3_s", 256, 110},
    [GGUF_T_IQ2_S] = {"iq2_s", 256, 82},
    [GGUF_T_IQ4_XS] = {"iq4_xs", 256, 136},
    [GGUF_T_I8] = {"i8", 1, 1},
    [GGUF_T_I16] = {"i16", 1, 2},
    [GGUF_T_I32] = {"i32", 1, 4},
    [GGUF_T_I64] = {"i64", 1, 8},
    [GGUF_T_F64] = {"f64", 1, 8},
    [GGUF_T_IQ1_M] = {"iq1_m", 256, 56},
    [GGUF_T_BF16] = {"bf16", 1, 2},
    [GGUF_T_TQ1_0] = {"tq1_0", 256, 54},
    [GGUF_T_TQ2_0] = {"tq2_0", 256, 66},
    [GGUF_T_MXFP4] = {"mxfp4", 32, 17},
};

static const struct {
    const char *name;
    size_t size;
} vtraits[GGUF_VT_COUNT] = {
    [GGUF_VT_UINT8] = {"u8", 1},
    [GGUF_VT_INT8] = {"i8", 1},
    [GGUF_VT_UINT16] = {"u16", 2},
    [GGUF_VT_INT16] = {"i16", 2},
    [GGUF_VT_UINT32] = {"u32", 4},
    [GGUF_VT_INT32] = {"i32", 4},
    [GGUF_VT_FLOAT32] = {"f32", 4},
    [GGUF_VT_BOOL] = {"bool", 1},
    [GGUF_VT_STRING] = {"string", 0},
    [GGUF_VT_ARRAY] = {"array", 0},
    [GGUF_VT_UINT64] = {"u64", 8},
    [GGUF_VT_INT64] = {"i64", 8},
    [GGUF_VT_FLOAT64] = {"f64", 8},
};

size_t
gguf_vtype_size(enum gguf_vtype t)
{
    return (unsigned)t < GGUF_VT_COUNT ? vtraits[t].size : 0;
}

const char *
gguf_vtype_name(enum gguf_vtype t)
{
    return (unsigned)t < GGUF_VT_COUNT ? vtraits[t].name : "unknown";
}

bool
gguf_ttype_info(uint32_t t, const char **name, int64_t *blck, size_t *bsize)
{
    if (t >= GGUF_T_COUNT || ttraits[t].name == NULL)
        return false;
    if (name != NULL)
        *name = ttraits[t].name;
    if (blck != NULL)
        *blck = ttraits[t].blck;
    if (bsize != NULL)
        *bsize = ttraits[t].bsize;
    return true;
}

const char *
gguf_ttype_name(enum gguf_ttype t)
{
    const char *name = "unknown";
    gguf_ttype_info(t, &name, NULL, NULL);
    return name;
}

size_t
gguf_row_size(enum gguf_ttype t, int64_t n)
{
    int64_t blck = 1;
    size_t bsize = 0;
    bool known = gguf_ttype_info(t, NULL, &blck, &bsize);
    assert(known && n >= 0 && n % blck == 0);
    (void)known;
    return (size_t)(n / blck) * bsize;
}

static bool
is_int(enum gguf_vtype t)
{
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_UINT16: case GGUF_VT_INT16:
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_UINT64: case GGUF_VT_INT64:
        return true;
    default:
        return false;
    }
}

static bool
is_float(enum gguf_vtype t)
{
    return t == GGUF_VT_FLOAT32 || t == GGUF_VT_FLOAT64;
}

/* A scalar value copied out of the buffer (fields are little-endian, as the host). */
union scalar {
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
};

static union scalar
load(enum gguf_vtype t, const void *p)
{
    union scalar v = { .u64 = 0 };
    memcpy(&v, p, gguf_vtype_size(t));     /* values in the buffer may be unaligned */
    return v;
}

/*
 * Reads an integer or bool of type t at p. A u64 above INT64_MAX gives
 * INT64_MAX and sets *big.
 */
static int64_t
load_int(enum gguf_vtype t, const void *p, bool *big)
{
    union scalar v = load(t, p);

    *big = t == GGUF_VT_UINT64 && v.u64 > INT64_MAX;
    switch (t) {
    case GGUF_VT_BOOL:
    case GGUF_VT_UINT8: return v.u8;
    case GGUF_VT_INT8: return v.i8;
    case GGUF_VT_UINT16: return v.u16;
    case GGUF_VT_INT16: return v.i16;
    case GGUF_VT_UINT32: return v.u32;
    case GGUF_VT_INT32: return v.i32;
    case GGUF_VT_INT64: return v.i64;
    case GGUF_VT_UINT64: return *big ? INT64_MAX : (int64_t)v.u64;
    default: return 0;
    }
}

/* Reads any numeric or bool value of type t at p as a double. */
static double
load_num(enum gguf_vtype t, const void *p)
{
    union scalar v = load(t, p);
    bool big = false;

    switch (t) {
    case GGUF_VT_FLOAT32: return v.f32;
    case GGUF_VT_FLOAT64: return v.f64;
    case GGUF_VT_UINT64: return (double)v.u64;
    default: return (double)load_int(t, p, &big);
    }
}

/* Converts with saturation; NaN gives 0 (a plain cast would be undefined). */
static int64_t
saturate_i64(double d)
{
    if (d != d)
        return 0;
    if (d >= 9223372036854775808.0)
        return INT64_MAX;
    if (d < -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

/* ======================================================================= */
/* Messages                                                                */
/* ======================================================================= */

static void
vappend(char *buf, size_t len, const char *fmt, va_list ap)
{
    size_t n = strlen(buf);
    if (n + 1 < len)
        vsnprintf(buf + n, len - n, fmt, ap);
}

/* Appends to the NUL-terminated text in buf[0..len), clipping to fit. */
__attribute__((format(printf, 3, 4)))
static void
append(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(buf, len, fmt, ap);
    va_end(ap);
}

/* Keeps a message on one line whatever bytes a file name or key holds. */
static void
one_line(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

/* Writes "name: message" into err (if any) and returns rc. */
__attribute__((format(printf, 5, 6)))
static int
report(char *err, size_t errlen, int rc, const char *name, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return rc;
    snprintf(err, errlen, "%s: ", name);
    va_start(ap, fmt);
    vappend(err, errlen, fmt, ap);
    va_end(ap);
    one_line(err);
    return rc;
}

/* ======================================================================= */
/* The parsed file                                                         */
/* ======================================================================= */

struct kv {
    char *key;                  /* NUL-terminated copy */
    enum gguf_vtype type;
    const uint8_t *raw;         /* the value's bytes in the buffer, as in the file */
    size_t raw_len;
    struct gguf_str str;        /* GGUF_VT_STRING */
    struct gguf_arr arr;        /* GGUF_VT_ARRAY; arr.strs is owned */
};

/* One slot of an open-addressing hash table; idx1 is the entry's index + 1, 0 if empty. */
struct slot {
    uint64_t hash;
    const char *name;
    int64_t idx1;
};

struct index {
    struct slot *slots;         /* a power of two of them, at most half full */
    size_t mask;
};

struct gguf {
    const uint8_t *buf;
    size_t len;
    void *map;                  /* gguf_open()'s mapping, or NULL */
    size_t map_len;
    uint32_t version;
    size_t alignment;
    size_t data_offset;         /* <= len */
    int64_t n_kv;
    int64_t n_tensors;
    struct kv *kvs;             /* n_kv of them, in file order */
    struct gguf_tensor *tensors; /* n_tensors of them, in file order */
    struct index kv_index;
    struct index tensor_index;
};

/* ---- Hash index ------------------------------------------------------- */

/* n is bounded by the buffer size (checked by the caller), so 2n cannot overflow. */
static int
index_init(struct index *ix, int64_t n)
{
    size_t cap = 8;
    while (cap < (size_t)n * 2)
        cap *= 2;
    ix->slots = calloc(cap, sizeof(*ix->slots));
    ix->mask = cap - 1;
    return ix->slots != NULL ? 0 : -ENOMEM;
}

/* Returns the slot holding name, or the empty slot where it would go. */
static struct slot *
index_slot(const struct index *ix, const char *name, uint64_t hash)
{
    size_t i = hash & ix->mask;
    while (ix->slots[i].idx1 != 0 &&
           (ix->slots[i].hash != hash || strcmp(ix->slots[i].name, name) != 0))
        i = (i + 1) & ix->mask;
    return &ix->slots[i];
}

/* Adds name (borrowed) as entry idx; returns the index of an entry already so named, or -1. */
static int64_t
index_add(struct index *ix, const char *name, int64_t idx)
{
    uint64_t hash = XXH3_64bits(name, strlen(name));
    struct slot *s = index_slot(ix, name, hash);
    if (s->idx1 != 0)
        return s->idx1 - 1;
    *s = (struct slot){ hash, name, idx + 1 };
    return -1;
}

static int64_t
index_find(const struct index *ix, const char *name)
{
    if (ix->slots == NULL)
        return -1;
    return index_slot(ix, name, XXH3_64bits(name, strlen(name)))->idx1 - 1;
}

/* ======================================================================= */
/* Reading                                                                 */
/* ======================================================================= */

struct cursor {
    const uint8_t *buf;
    size_t len;
    size_t pos;                 /* <= len at all times */
    const char *name;           /* the file, for messages */
    char *err;
    size_t errlen;
    const char *what;           /* "kv", "tensor" or NULL: the item being read */
    int64_t item;
    const char *item_name;      /* its key or name once known */
};

static size_t
left(const struct cursor *c)
{
    return c->len - c->pos;
}

/* Writes "NAME: [kv 3 (key): ]message" and returns -EBADMSG. */
__attribute__((format(printf, 2, 3)))
static int
fail(struct cursor *c, const char *fmt, ...)
{
    va_list ap;
    if (c->err == NULL || c->errlen == 0)
        return -EBADMSG;
    snprintf(c->err, c->errlen, "%s: ", c->name);
    if (c->what != NULL && c->item_name != NULL)
        append(c->err, c->errlen, "%s %" PRId64 " (%.*s): ", c->what, c->item,
               MSG_NAME, c->item_name);
    else if (c->what != NULL)
        append(c->err, c->errlen, "%s %" PRId64 ": ", c->what, c->item);
    va_start(ap, fmt);
    vappend(c->err, c->errlen, fmt, ap);
    va_end(ap);
    one_line(c->err);
    return -EBADMSG;
}

static int
nomem(struct cursor *c, size_t n)
{
    fail(c, "out of memory (%zu bytes)", n);
    return -ENOMEM;
}

/* Checks that n more bytes can be read at the cursor. */
static int
need(struct cursor *c, uint64_t n, const char *field)
{
    if (n <= left(c))
        return 0;
    return fail(c, "truncated reading %s at offset %zu (need %" PRIu64 " bytes, %zu left)",
                field, c->pos, n, left(c));
}

static int
rd_u32(struct cursor *c, uint32_t *v, const char *field)
{
    int rc = need(c, sizeof(*v), field);
    if (rc == 0) {
        memcpy(v, c->buf + c->pos, sizeof(*v));
        c->pos += sizeof(*v);
    }
    return rc;
}

static int
rd_u64(struct cursor *c, uint64_t *v, const char *field)
{
    int rc = need(c, sizeof(*v), field);
    if (rc == 0) {
        memcpy(v, c->buf + c->pos, sizeof(*v));
        c->pos += sizeof(*v);
    }
    return rc;
}

/* Takes n bytes at the cursor as a string (n was just read as its length). */
static int
take_str(struct cursor *c, uint64_t n, const char *field, struct gguf_str *s)
{
    if (n > left(c))
        return fail(c, "%s length %" PRIu64 " at offset %zu exceeds the %zu bytes left",
                    field, n, c->pos - 8, left(c));
    s->ptr = (const char *)c->buf + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

static int
rd_str(struct cursor *c, struct gguf_str *s, const char *field)
{
    uint64_t n = 0;
    int rc = rd_u64(c, &n, field);
    return rc != 0 ? rc : take_str(c, n, field, s);
}

/* Reads a key or tensor name (non-empty, at most max bytes, no NUL) into a new *out. */
static int
rd_name(struct cursor *c, const char *field, uint64_t max, char **out)
{
    uint64_t n = 0;
    struct gguf_str s = { NULL, 0 };
    int rc = rd_u64(c, &n, field);
    if (rc != 0)
        return rc;
    if (n == 0)
        return fail(c, "empty %s", field);
    if (n > max)
        return fail(c, "%s length %" PRIu64 " exceeds %" PRIu64, field, n, max);
    if ((rc = take_str(c, n, field, &s)) != 0)
        return rc;
    if (memchr(s.ptr, '\0', s.len) != NULL)
        return fail(c, "%s contains a NUL byte", field);
    if ((*out = malloc(s.len + 1)) == NULL)
        return nomem(c, s.len + 1);
    memcpy(*out, s.ptr, s.len);
    (*out)[s.len] = '\0';
    return 0;
}

/* ---- Header ----------------------------------------------------------- */

static int
check_version(struct cursor *c, uint32_t v)
{
    if (v == 2 || v == 3)
        return 0;
    /* A big-endian file stores a small version number byte-swapped. */
    if ((v & 0xffff) == 0 && v != 0)
        return fail(c, "big-endian gguf file (version field 0x%08" PRIx32 "), "
                    "only little-endian files are supported", v);
    return fail(c, "unsupported gguf version %" PRIu32 " (expected 2 or 3)", v);
}

static int
parse_header(struct cursor *c, struct gguf *g)
{
    uint32_t magic = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    int rc = rd_u32(c, &magic, "magic");
    if (rc == 0 && magic != GGUF_MAGIC)
        rc = fail(c, "bad magic 0x%08" PRIx32 " (expected 0x%08x, \"GGUF\")", magic, GGUF_MAGIC);
    if (rc == 0)
        rc = rd_u32(c, &g->version, "version");
    if (rc == 0)
        rc = check_version(c, g->version);
    if (rc == 0)
        rc = rd_u64(c, &n_tensors, "n_tensors");
    if (rc == 0)
        rc = rd_u64(c, &n_kv, "n_kv");
    if (rc != 0)
        return rc;
    /* Counts must be plausible before anything is allocated for them. */
    if (n_kv > left(c) / MIN_KV_BYTES)
        return fail(c, "n_kv %" PRIu64 " is too large for the %zu bytes left (%d or more each)",
                    n_kv, left(c), MIN_KV_BYTES);
    if (n_tensors > (left(c) - n_kv * MIN_KV_BYTES) / MIN_TENSOR_BYTES)
        return fail(c, "n_tensors %" PRIu64 " is too large for the %zu bytes left "
                    "(%d or more each)", n_tensors, left(c), MIN_TENSOR_BYTES);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return 0;
}

/* ---- Key/value pairs -------------------------------------------------- */

static int
parse_str_array(struct cursor *c, struct kv *kv)
{
    uint64_t n = kv->arr.n;
    struct gguf_str *strs = NULL;
    int rc = 0;

    if (n > left(c) / 8)
        return fail(c, "array of %" PRIu64 " strings is too large for the %zu bytes left "
                    "(8 or more each)", n, left(c));
    if ((strs = malloc(n > 0 ? n * sizeof(*strs) : 1)) == NULL)
        return nomem(c, n * sizeof(*strs));
    kv->arr.strs = strs;
    for (uint64_t j = 0; j < n && rc == 0; j++)
        rc = rd_str(c, &strs[j], "string");
    return rc;
}

static int
parse_array(struct cursor *c, struct kv *kv)
{
    uint32_t t = 0;
    uint64_t n = 0, size = 0;
    int rc = rd_u32(c, &t, "array type");
    if (rc == 0)
        rc = rd_u64(c, &n, "array count");
    if (rc != 0)
        return rc;
    if (t == GGUF_VT_ARRAY)
        return fail(c, "nested array (arrays of arrays are not supported)");
    if (t >= GGUF_VT_COUNT)
        return fail(c, "unknown array element type %" PRIu32 " (expected 0..%d)",
                    t, GGUF_VT_COUNT - 1);
    kv->arr = (struct gguf_arr){ t, n, c->buf + c->pos, NULL };
    if (t == GGUF_VT_STRING)
        return parse_str_array(c, kv);
    if (__builtin_mul_overflow(n, vtraits[t].size, &size) || size > left(c))
        return fail(c, "array of %" PRIu64 " %s needs more than the %zu bytes left",
                    n, vtraits[t].name, left(c));
    c->pos += size;
    return 0;
}

static int
parse_value(struct cursor *c, struct kv *kv)
{
    size_t size = vtraits[kv->type].size;
    int rc = 0;

    if (kv->type == GGUF_VT_STRING)
        return rd_str(c, &kv->str, "string");
    if (kv->type == GGUF_VT_ARRAY)
        return parse_array(c, kv);
    if ((rc = need(c, size, "value")) == 0)
        c->pos += size;
    return rc;
}

static int
parse_kv(struct cursor *c, struct gguf *g, int64_t i)
{
    struct kv *kv = &g->kvs[i];
    uint32_t type = 0;
    int64_t dup = -1;
    size_t start = 0;

    c->what = "kv";
    c->item = i;
    c->item_name = NULL;
    int rc = rd_name(c, "key", UINT64_MAX, &kv->key);
    if (rc != 0)
        return rc;
    c->item_name = kv->key;
    if ((dup = index_add(&g->kv_index, kv->key, i)) >= 0)
        return fail(c, "duplicate key (also kv %" PRId64 ")", dup);
    if ((rc = rd_u32(c, &type, "value type")) != 0)
        return rc;
    if (type >= GGUF_VT_COUNT)
        return fail(c, "unknown value type %" PRIu32 " (expected 0..%d)", type, GGUF_VT_COUNT - 1);
    kv->type = type;
    start = c->pos;
    rc = parse_value(c, kv);
    kv->raw = c->buf + start;
    kv->raw_len = c->pos - start;
    return rc;
}

static int
parse_kvs(struct cursor *c, struct gguf *g)
{
    size_t n = (size_t)g->n_kv;
    int rc = 0;

    if (index_init(&g->kv_index, g->n_kv) != 0)
        return nomem(c, n * 2 * sizeof(struct slot));
    if ((g->kvs = calloc(n > 0 ? n : 1, sizeof(*g->kvs))) == NULL)
        return nomem(c, n * sizeof(*g->kvs));
    for (int64_t i = 0; i < g->n_kv && rc == 0; i++)
        rc = parse_kv(c, g, i);
    c->what = NULL;
    return rc;
}

static int
parse_alignment(struct cursor *c, struct gguf *g)
{
    int64_t i = index_find(&g->kv_index, "general.alignment");
    uint32_t a = 0;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return 0;
    if (g->kvs[i].type != GGUF_VT_UINT32)
        return fail(c, "general.alignment has type %s (expected u32)",
                    vtraits[g->kvs[i].type].name);
    memcpy(&a, g->kvs[i].raw, sizeof(a));
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(c, "general.alignment %" PRIu32 " is not a power of two", a);
    if (a > MAX_ALIGNMENT)
        return fail(c, "general.alignment %" PRIu32 " is larger than 1 MiB (%u)",
                    a, MAX_ALIGNMENT);
    g->alignment = a;
    return 0;
}

/* ---- Tensor infos ----------------------------------------------------- */

static int
parse_dims(struct cursor *c, struct gguf_tensor *t)
{
    uint32_t n_dims = 0;
    uint64_t ne = 1;
    int rc = rd_u32(c, &n_dims, "n_dims");
    if (rc != 0)
        return rc;
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
        return fail(c, "n_dims %" PRIu32 " out of range (expected 1..%d)", n_dims, GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        ne = 1;
        if (d < n_dims && (rc = rd_u64(c, &ne, "ne")) != 0)
            return rc;
        if (ne == 0 || ne > INT64_MAX)
            return fail(c, "ne[%" PRIu32 "] = %" PRId64 " (expected > 0)", d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
    }
    return 0;
}

/* Checks the type and shape and sets t->nbytes; every product is overflow-checked. */
static int
check_size(struct cursor *c, struct gguf_tensor *t, uint32_t type, size_t align)
{
    const char *tname = NULL;
    int64_t blck = 1, nel = 1;
    size_t bsize = 0, nbytes = 0, padded = 0;

    if (!gguf_ttype_info(type, &tname, &blck, &bsize))
        return fail(c, "unknown tensor type %" PRIu32, type);
    t->type = type;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(nel, t->ne[d], &nel))
            return fail(c, "element count overflows int64 (ne = [%" PRId64 ", %" PRId64
                        ", %" PRId64 ", %" PRId64 "])", t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    if (t->ne[0] % blck != 0)
        return fail(c, "ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                    t->ne[0], tname, blck);
    if (__builtin_mul_overflow((uint64_t)(nel / blck), bsize, &nbytes))
        return fail(c, "byte size of %" PRId64 " %s elements overflows size_t", nel, tname);
    if (__builtin_add_overflow(nbytes, align - 1, &padded))
        return fail(c, "byte size %zu overflows size_t after padding to the alignment %zu",
                    nbytes, align);
    t->nbytes = nbytes;
    return 0;
}

static int
parse_tensor(struct cursor *c, struct gguf *g, int64_t i)
{
    struct gguf_tensor *t = &g->tensors[i];
    char *name = NULL;
    uint32_t type = 0;
    int64_t dup = -1;

    c->what = "tensor";
    c->item = i;
    c->item_name = NULL;
    int rc = rd_name(c, "tensor name", MAX_NAME, &name);
    if (rc != 0)
        return rc;
    t->name = c->item_name = name;
    if ((dup = index_add(&g->tensor_index, name, i)) >= 0)
        return fail(c, "duplicate tensor name (also tensor %" PRId64 ")", dup);
    if ((rc = parse_dims(c, t)) == 0 && (rc = rd_u32(c, &type, "tensor type")) == 0 &&
        (rc = check_size(c, t, type, g->alignment)) == 0)
        rc = rd_u64(c, &t->offset, "tensor offset");
    return rc;
}

static int
parse_tensors(struct cursor *c, struct gguf *g)
{
    size_t n = (size_t)g->n_tensors;
    int rc = 0;

    if (index_init(&g->tensor_index, g->n_tensors) != 0)
        return nomem(c, n * 2 * sizeof(struct slot));
    if ((g->tensors = calloc(n > 0 ? n : 1, sizeof(*g->tensors))) == NULL)
        return nomem(c, n * sizeof(*g->tensors));
    for (int64_t i = 0; i < g->n_tensors && rc == 0; i++)
        rc = parse_tensor(c, g, i);
    c->what = NULL;
    return rc;
}

/* ---- Data section ----------------------------------------------------- */

static int
place_tensor(struct cursor *c, const struct gguf *g, int64_t i)
{
    struct gguf_tensor *t = &g->tensors[i];
    size_t size = g->len - g->data_offset;
    uint64_t end = 0;

    c->what = "tensor";
    c->item = i;
    c->item_name = t->name;
    if (t->offset % g->alignment != 0)
        return fail(c, "offset %" PRIu64 " is not a multiple of the alignment %zu",
                    t->offset, g->alignment);
    if (__builtin_add_overflow(t->offset, t->nbytes, &end) || end > size)
        return fail(c, "data at offset %" PRIu64 " (%zu bytes) runs past the end of the "
                    "data section (%zu bytes)", t->offset, t->nbytes, size);
    t->data = g->buf + g->data_offset + t->offset;
    return 0;
}

static int
place_data(struct cursor *c, struct gguf *g)
{
    size_t start = 0;
    int rc = 0;

    /* pos <= len and alignment <= 1 MiB, so this only fails for buffers near SIZE_MAX. */
    if (__builtin_add_overflow(c->pos, g->alignment - 1, &start))
        return fail(c, "data section start overflows size_t");
    start &= ~(g->alignment - 1);
    if (start > c->len) {
        if (g->n_tensors > 0)
            return fail(c, "data section starts at %zu, past the end of the buffer (%zu bytes)",
                        start, c->len);
        start = c->len;         /* vocabulary-only files end right after the header */
    }
    g->data_offset = start;
    for (int64_t i = 0; i < g->n_tensors && rc == 0; i++)
        rc = place_tensor(c, g, i);
    c->what = NULL;
    return rc;
}

static int
by_offset(const void *a, const void *b)
{
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
    const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Tensors may lie in any order in the data section, but must not overlap. */
static int
check_overlaps(struct cursor *c, const struct gguf *g)
{
    size_t n = (size_t)g->n_tensors;
    const struct gguf_tensor **order = malloc(n > 0 ? n * sizeof(*order) : 1);
    int rc = 0;

    if (order == NULL)
        return nomem(c, n * sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = &g->tensors[i];
    qsort(order, n, sizeof(*order), by_offset);
    for (size_t i = 1; i < n && rc == 0; i++) {
        const struct gguf_tensor *a = order[i - 1], *b = order[i];
        if (a->offset + a->nbytes > b->offset)
            rc = fail(c, "tensors %.*s and %.*s overlap (%.*s is [%" PRIu64 ", %" PRIu64
                      "), %.*s starts at %" PRIu64 ")", MSG_NAME, a->name, MSG_NAME, b->name,
                      MSG_NAME, a->name, a->offset, a->offset + a->nbytes, MSG_NAME, b->name,
                      b->offset);
    }
    free(order);
    return rc;
}

static int
parse(struct cursor *c, struct gguf *g)
{
    int rc = parse_header(c, g);
    if (rc == 0)
        rc = parse_kvs(c, g);
    if (rc == 0)
        rc = parse_alignment(c, g);
    if (rc == 0)
        rc = parse_tensors(c, g);
    if (rc == 0)
        rc = place_data(c, g);
    if (rc == 0)
        rc = check_overlaps(c, g);
    return rc;
}

int
gguf_parse(const void *buf, size_t len, const char *name, struct gguf **out,
           char *err, size_t errlen)
{
    struct cursor c = { .buf = buf, .len = len, .name = name != NULL ? name : "gguf",
                        .err = err, .errlen = errlen };
    struct gguf *g = calloc(1, sizeof(*g));
    int rc = 0;

    assert(buf != NULL || len == 0);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (g == NULL) {
        rc = nomem(&c, sizeof(*g));
        goto out;
    }
    g->buf = buf;
    g->len = len;
    rc = parse(&c, g);
out:
    if (rc != 0) {
        gguf_free(g);
        g = NULL;
    }
    *out = g;
    return rc;
}

/* Maps path read-only; an empty file gives *map = NULL and *len = 0. */
static int
map_file(const char *path, void **map, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return report(err, errlen, -errno, path, "cannot open (%s)", strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = report(err, errlen, -errno, path, "cannot stat (%s)", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = report(err, errlen, -EINVAL, path, "not a regular file");
        goto out;
    }
    *len = (size_t)st.st_size;
    if (*len > 0 && (*map = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        *map = NULL;
        rc = report(err, errlen, -errno, path, "cannot map (%s)", strerror(errno));
    }
out:
    close(fd);
    return rc;
}

int
gguf_open(const char *path, struct gguf **out, char *err, size_t errlen)
{
    void *map = NULL;
    size_t len = 0;
    int rc = map_file(path, &map, &len, err, errlen);

    *out = NULL;
    if (rc != 0)
        return rc;
    rc = gguf_parse(map, len, path, out, err, errlen);
    if (rc != 0) {
        if (map != NULL)
            munmap(map, len);
        return rc;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return 0;
}

void
gguf_free(struct gguf *g)
{
    if (g == NULL)
        return;
    for (int64_t i = 0; g->kvs != NULL && i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free((void *)g->kvs[i].arr.strs);
    }
    for (int64_t i = 0; g->tensors != NULL && i < g->n_tensors; i++)
        free((void *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    if (g->map != NULL)
        munmap(g->map, g->map_len);
    free(g);
}

/* ======================================================================= */
/* Accessors                                                               */
/* ======================================================================= */

uint32_t gguf_version(const struct gguf *g) { return g->version; }
size_t gguf_alignment(const struct gguf *g) { return g->alignment; }
size_t gguf_data_offset(const struct gguf *g) { return g->data_offset; }
int64_t gguf_n_kv(const struct gguf *g) { return g->n_kv; }
int64_t gguf_n_tensors(const struct gguf *g) { return g->n_tensors; }

const void *
gguf_buffer(const struct gguf *g, size_t *len)
{
    if (len != NULL)
        *len = g->len;
    return g->buf;
}

static const struct kv *
kv_at(const struct gguf *g, int64_t i)
{
    assert(i >= 0 && i < g->n_kv);
    return &g->kvs[i];
}

int64_t
gguf_find_key(const struct gguf *g, const char *key)
{
    return index_find(&g->kv_index, key);
}

const char *gguf_key(const struct gguf *g, int64_t i) { return kv_at(g, i)->key; }
enum gguf_vtype gguf_kv_type(const struct gguf *g, int64_t i) { return kv_at(g, i)->type; }

const struct gguf_tensor *
gguf_tensor(const struct gguf *g, int64_t i)
{
    assert(i >= 0 && i < g->n_tensors);
    return &g->tensors[i];
}

const struct gguf_tensor *
gguf_find_tensor(const struct gguf *g, const char *name)
{
    int64_t i = index_find(&g->tensor_index, name);
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---- Typed getters: *out is written only on success ------------------- */

int
gguf_kv_i64(const struct gguf *g, int64_t i, int64_t *out)
{
    const struct kv *kv = kv_at(g, i);
    bool big = false;
    int64_t v = 0;

    if (!is_int(kv->type))
        return -EINVAL;
    v = load_int(kv->type, kv->raw, &big);
    if (big)
        return -ERANGE;
    *out = v;
    return 0;
}

int
gguf_kv_f64(const struct gguf *g, int64_t i, double *out)
{
    const struct kv *kv = kv_at(g, i);
    if (!is_int(kv->type) && !is_float(kv->type))
        return -EINVAL;
    *out = load_num(kv->type, kv->raw);
    return 0;
}

int
gguf_kv_str(const struct gguf *g, int64_t i, struct gguf_str *out)
{
    const struct kv *kv = kv_at(g, i);
    if (kv->type != GGUF_VT_STRING)
        return -EINVAL;
    *out = kv->str;
    return 0;
}

int
gguf_kv_arr(const struct gguf *g, int64_t i, struct gguf_arr *out)
{
    const struct kv *kv = kv_at(g, i);
    if (kv->type != GGUF_VT_ARRAY)
        return -EINVAL;
    *out = kv->arr;
    return 0;
}

int
gguf_get_i64(const struct gguf *g, const char *key, int64_t *out)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? -ENOENT : gguf_kv_i64(g, i, out);
}

int
gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out)
{
    int64_t v = 0;
    int rc = gguf_get_i64(g, key, &v);
    if (rc == 0 && (v < 0 || v > UINT32_MAX))
        rc = -ERANGE;
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int
gguf_get_f64(const struct gguf *g, const char *key, double *out)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? -ENOENT : gguf_kv_f64(g, i, out);
}

int
gguf_get_f32(const struct gguf *g, const char *key, float *out)
{
    int64_t i = gguf_find_key(g, key);
    double d = 0;
    int rc = i < 0 ? -ENOENT : gguf_kv_f64(g, i, &d);

    /* A finite value too large for a float is out of range; inf and NaN pass. */
    if (rc == 0 && isfinite(d) && (d > FLT_MAX || d < -FLT_MAX))
        rc = -ERANGE;
    if (rc == 0)
        *out = (float)d;
    return rc;
}

int
gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return -ENOENT;
    if (g->kvs[i].type != GGUF_VT_BOOL)
        return -EINVAL;
    *out = g->kvs[i].raw[0] != 0;
    return 0;
}

int
gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? -ENOENT : gguf_kv_str(g, i, out);
}

int
gguf_get_arr(const struct gguf *g, const char *key, struct gguf_arr *out)
{
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? -ENOENT : gguf_kv_arr(g, i, out);
}

static const void *
arr_elem(const struct gguf_arr *a, uint64_t j)
{
    assert(j < a->n && gguf_vtype_size(a->type) > 0);
    return (const uint8_t *)a->data + j * gguf_vtype_size(a->type);
}

int64_t
gguf_arr_i64(const struct gguf_arr *a, uint64_t j)
{
    const void *p = arr_elem(a, j);
    bool big = false;
    return is_float(a->type) ? saturate_i64(load_num(a->type, p)) : load_int(a->type, p, &big);
}

double
gguf_arr_f64(const struct gguf_arr *a, uint64_t j)
{
    return load_num(a->type, arr_elem(a, j));
}

/* ---- Formatting ------------------------------------------------------- */

/* Writes the escape for byte ch into out (at most 4 bytes + NUL); returns its length. */
static size_t
escape(unsigned char ch, char out[5])
{
    if (ch == '"' || ch == '\\')
        return (size_t)snprintf(out, 5, "\\%c", ch);
    if (ch == '\n')
        return (size_t)snprintf(out, 5, "\\n");
    if (ch == '\t')
        return (size_t)snprintf(out, 5, "\\t");
    if (ch < 0x20 || ch == 0x7f)
        return (size_t)snprintf(out, 5, "\\x%02x", ch);
    out[0] = (char)ch;
    out[1] = '\0';
    return 1;
}

/*
 * Appends s[0..n) in double quotes, escaped, cut with "..." after at most max
 * bytes of output or where the buffer ends (never inside a UTF-8 character).
 */
static void
append_quoted(char *buf, size_t len, const char *s, uint64_t n, size_t max)
{
    size_t pos = strlen(buf), room = len - 1 - pos, budget = 0, used = 0, k = 0;
    char e[5];

    if (room < 6) {
        append(buf, len, "...");
        return;
    }
    budget = room - 5 < max ? room - 5 : max;       /* leave room for quotes and "..." */
    while (k < n && used + escape((unsigned char)s[k], e) <= budget)
        used += escape((unsigned char)s[k++], e);
    if (k < n)
        while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
    append(buf, len, "\"");
    for (size_t j = 0; j < k; j++) {
        escape((unsigned char)s[j], e);
        append(buf, len, "%s", e);
    }
    append(buf, len, k < n ? "...\"" : "\"");
}

static void
append_scalar(char *buf, size_t len, enum gguf_vtype t, const void *p)
{
    bool big = false;

    if (is_float(t))
        append(buf, len, "%g", load_num(t, p));
    else if (t == GGUF_VT_BOOL)
        append(buf, len, "%s", load_int(t, p, &big) != 0 ? "true" : "false");
    else if (t == GGUF_VT_UINT64)
        append(buf, len, "%" PRIu64, load(t, p).u64);
    else
        append(buf, len, "%" PRId64, load_int(t, p, &big));
}

static void
append_array(char *buf, size_t len, const struct gguf_arr *a)
{
    append(buf, len, "[%" PRIu64 " x %s]", a->n, gguf_vtype_name(a->type));
    for (uint64_t j = 0; j < a->n && j < FORMAT_ELEMS; j++) {
        append(buf, len, j == 0 ? " " : ", ");
        if (a->type == GGUF_VT_STRING)
            append_quoted(buf, len, a->strs[j].ptr, a->strs[j].len, FORMAT_STR);
        else
            append_scalar(buf, len, a->type, arr_elem(a, j));
    }
    if (a->n > FORMAT_ELEMS)
        append(buf, len, ", ...");
}

const char *
gguf_kv_format(const struct gguf *g, int64_t i, char *buf, size_t len)
{
    const struct kv *kv = kv_at(g, i);

    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (kv->type == GGUF_VT_STRING)
        append_quoted(buf, len, kv->str.ptr, kv->str.len, SIZE_MAX);
    else if (kv->type == GGUF_VT_ARRAY)
        append_array(buf, len, &kv->arr);
    else
        append_scalar(buf, len, kv->type, kv->raw);
    return buf;
}

/* ======================================================================= */
/* Writing                                                                 */
/* ======================================================================= */

/* Bookkeeping allocations of the writer: failure aborts (STYLE.md C.5). */
static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n > 0 ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "gguf: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static char *
xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

/* Grows *p (an array of *cap elements of size bytes) to hold at least n + 1. */
static void *
xgrow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap > 0 ? *cap * 2 : 16;
    assert(*cap <= SIZE_MAX / size);
    return xrealloc(p, *cap * size);
}

/* A growing byte string. */
struct bytes {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void
put(struct bytes *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    assert(n <= SIZE_MAX / 2 - b->len);
    if (b->cap - b->len < n) {
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u32(struct bytes *b, uint32_t v) { put(b, &v, sizeof(v)); }
static void put_u64(struct bytes *b, uint64_t v) { put(b, &v, sizeof(v)); }

static void
put_str(struct bytes *b, const char *s, uint64_t n)
{
    put_u64(b, n);
    put(b, s, n);
}

struct wkv {
    char *key;
    enum gguf_vtype type;
    struct bytes val;           /* the value as written in the file */
};

struct wtensor {
    char *name;
    enum gguf_ttype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;           /* borrowed until gguf_writer_write() */
    size_t nbytes;
};

struct gguf_writer {
    struct wkv *kvs;            /* in insertion order */
    size_t n_kv, cap_kv;
    struct wtensor *tensors;    /* in insertion order, which is the data order */
    size_t n_tensors, cap_tensors;
};

struct gguf_writer *
gguf_writer_new(void)
{
    struct gguf_writer *w = xrealloc(NULL, sizeof(*w));
    *w = (struct gguf_writer){ 0 };
    return w;
}

void
gguf_writer_free(struct gguf_writer *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val.p);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

static struct wkv *
find_wkv(const struct gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            return &w->kvs[i];
    return NULL;
}

/* Sets key to type t and the serialized value val (consumed). */
static void
set_value(struct gguf_writer *w, const char *key, enum gguf_vtype t, struct bytes val)
{
    struct wkv *kv = find_wkv(w, key);

    assert(key[0] != '\0');
    if (kv == NULL) {
        w->kvs = xgrow(w->kvs, &w->cap_kv, w->n_kv, sizeof(*w->kvs));
        kv = &w->kvs[w->n_kv++];
        kv->key = xstrdup(key);
    } else {
        free(kv->val.p);
    }
    kv->type = t;
    kv->val = val;
}

void
gguf_writer_set_scalar(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *v)
{
    struct bytes b = { 0 };
    assert(gguf_vtype_size(t) > 0);
    put(&b, v, gguf_vtype_size(t));
    set_value(w, key, t, b);
}

void
gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    gguf_writer_set_scalar(w, key, GGUF_VT_UINT32, &v);
}

void
gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    gguf_writer_set_scalar(w, key, GGUF_VT_INT32, &v);
}

void
gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
    gguf_writer_set_scalar(w, key, GGUF_VT_FLOAT32, &v);
}

void
gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v;
    gguf_writer_set_scalar(w, key, GGUF_VT_BOOL, &b);
}

void
gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v)
{
    struct bytes b = { 0 };
    put_str(&b, v, strlen(v));
    set_value(w, key, GGUF_VT_STRING, b);
}

void
gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t,
                    const void *data, uint64_t n)
{
    struct bytes b = { 0 };
    size_t size = 0;
    bool overflow = __builtin_mul_overflow(n, gguf_vtype_size(t), &size);

    assert(gguf_vtype_size(t) > 0 && !overflow);
    (void)overflow;
    put_u32(&b, t);
    put_u64(&b, n);
    put(&b, data, size);
    set_value(w, key, GGUF_VT_ARRAY, b);
}

void
gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
                        const struct gguf_str *strs, uint64_t n)
{
    struct bytes b = { 0 };
    put_u32(&b, GGUF_VT_STRING);
    put_u64(&b, n);
    for (uint64_t j = 0; j < n; j++)
        put_str(&b, strs[j].ptr, strs[j].len);
    set_value(w, key, GGUF_VT_ARRAY, b);
}

void
gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i)
{
    const struct kv *kv = kv_at(g, i);
    struct bytes b = { 0 };
    put(&b, kv->raw, kv->raw_len);      /* the value's bytes are the same in any version */
    set_value(w, kv->key, kv->type, b);
}

void
gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum gguf_ttype type,
                       uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes)
{
    struct wtensor t = { .type = type, .n_dims = n_dims, .data = data, .nbytes = nbytes };
    int64_t nel = 1;
    bool overflow = false;

    assert(name[0] != '\0' && strlen(name) <= MAX_NAME);
    assert(n_dims >= 1 && n_dims <= GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        assert(t.ne[d] > 0);
        overflow |= __builtin_mul_overflow(nel, t.ne[d], &nel);
    }
    assert(!overflow && gguf_row_size(type, t.ne[0]) > 0);
    assert(nbytes == gguf_row_size(type, nel));
    for (size_t i = 0; i < w->n_tensors; i++)
        assert(strcmp(w->tensors[i].name, name) != 0);
    t.name = xstrdup(name);
    w->tensors = xgrow(w->tensors, &w->cap_tensors, w->n_tensors, sizeof(*w->tensors));
    w->tensors[w->n_tensors++] = t;
}

/* ---- Writing the file ------------------------------------------------- */

static size_t
pad_to(size_t n, size_t align)
{
    return (n + align - 1) & ~(align - 1);
}

static int
writer_alignment(const struct gguf_writer *w, const char *path, size_t *align,
                 char *err, size_t errlen)
{
    const struct wkv *kv = find_wkv(w, "general.alignment");
    uint32_t a = GGUF_DEFAULT_ALIGNMENT;

    if (kv != NULL && kv->type != GGUF_VT_UINT32)
        return report(err, errlen, -EINVAL, path, "general.alignment has type %s (expected u32)",
                      gguf_vtype_name(kv->type));
    if (kv != NULL)
        memcpy(&a, kv->val.p, sizeof(a));
    if (a == 0 || (a & (a - 1)) != 0 || a > MAX_ALIGNMENT)
        return report(err, errlen, -EINVAL, path, "general.alignment %" PRIu32
                      " is not a power of two up to 1 MiB", a);
    *align = a;
    return 0;
}

static void
put_zeros(struct bytes *b, size_t n)
{
    for (size_t k = 0; k < n; k += sizeof(zeros))
        put(b, zeros, n - k < sizeof(zeros) ? n - k : sizeof(zeros));
}

static void
serialize_header(const struct gguf_writer *w, size_t align, struct bytes *b)
{
    uint64_t offset = 0;

    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, w->n_tensors);
    put_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(b, w->kvs[i].key, strlen(w->kvs[i].key));
        put_u32(b, w->kvs[i].type);
        put(b, w->kvs[i].val.p, w->kvs[i].val.len);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        put_str(b, t->name, strlen(t->name));
        put_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(b, (uint64_t)t->ne[d]);
        put_u32(b, t->type);
        put_u64(b, offset);
        offset += pad_to(t->nbytes, align);
    }
    put_zeros(b, pad_to(b->len, align) - b->len);
}

static int
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = write(fd, q, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

static int
write_zeros(int fd, size_t n)
{
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k += sizeof(zeros))
        rc = write_all(fd, zeros, n - k < sizeof(zeros) ? n - k : sizeof(zeros));
    return rc;
}

/* Writes the header and each tensor's data padded with zeros, then syncs. */
static int
write_body(int fd, const struct gguf_writer *w, const struct bytes *hdr, size_t align)
{
    int rc = write_all(fd, hdr->p, hdr->len);

    for (size_t i = 0; i < w->n_tensors && rc == 0; i++) {
        const struct wtensor *t = &w->tensors[i];
        rc = write_all(fd, t->data, t->nbytes);
        if (rc == 0)
            rc = write_zeros(fd, pad_to(t->nbytes, align) - t->nbytes);
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

int
gguf_writer_write(struct gguf_writer *w, const char *path, char *err, size_t errlen)
{
    struct bytes hdr = { 0 };
    size_t align = GGUF_DEFAULT_ALIGNMENT;
    char *tmp = xrealloc(NULL, strlen(path) + sizeof(".tmp"));
    int fd = -1;
    int rc = writer_alignment(w, path, &align, err, errlen);

    if (err != NULL && errlen > 0 && rc == 0)
        err[0] = '\0';
    sprintf(tmp, "%s.tmp", path);
    if (rc != 0)
        goto out;
    serialize_header(w, align, &hdr);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        rc = report(err, errlen, -errno, tmp, "cannot create (%s)", strerror(errno));
        goto out;
    }
    rc = write_body(fd, w, &hdr, align);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        report(err, errlen, rc, tmp, "cannot write (%s)", strerror(-rc));
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        rc = report(err, errlen, -errno, path, "cannot rename %s into place (%s)", tmp,
                    strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    free(hdr.p);
    return rc;
}

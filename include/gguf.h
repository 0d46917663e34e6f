/*
 * gguf.h - reading and writing GGUF files (versions 2 and 3).
 *
 * File layout (little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 value type, value },
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 tensor type, u64 offset },
 *   padding to general.alignment (default 32), then the data section.
 * A string is a u64 length and that many bytes (not NUL-terminated). An array
 * value is u32 element type, u64 count, then the elements. Tensor offsets are
 * relative to the data section and multiples of the alignment.
 *
 * gguf_parse() checks every count, length, offset, size and dimension product
 * against the buffer before use (overflow-safe), so a parsed struct gguf can be
 * walked without further checks. The buffer must outlive the struct gguf:
 * string values and tensor data point into it. gguf_open() maps a file
 * read-only and the struct gguf then owns the mapping.
 *
 * All functions are thread-safe on a parsed struct gguf (it never changes).
 */
#ifndef LORASERVE_GGUF_H
#define LORASERVE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* Value types of metadata, as numbered in the file. */
enum gguf_vtype {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
    GGUF_VT_COUNT
};

/* Tensor types, numbered as ggml numbers them. */
enum gguf_ttype {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q4_0 = 2,
    GGUF_T_Q4_1 = 3,
    GGUF_T_Q5_0 = 6,
    GGUF_T_Q5_1 = 7,
    GGUF_T_Q8_0 = 8,
    GGUF_T_Q8_1 = 9,
    GGUF_T_Q2_K = 10,
    GGUF_T_Q3_K = 11,
    GGUF_T_Q4_K = 12,
    GGUF_T_Q5_K = 13,
    GGUF_T_Q6_K = 14,
    GGUF_T_Q8_K = 15,
    GGUF_T_IQ2_XXS = 16,
    GGUF_T_IQ2_XS = 17,
    GGUF_T_IQ3_XXS = 18,
    GGUF_T_IQ1_S = 19,
    GGUF_T_IQ4_NL = 20,
    GGUF_T_IQ3_S = 21,
    GGUF_T_IQ2_S = 22,
    GGUF_T_IQ4_XS = 23,
    GGUF_T_I8 = 24,
    GGUF_T_I16 = 25,
    GGUF_T_I32 = 26,
    GGUF_T_I64 = 27,
    GGUF_T_F64 = 28,
    GGUF_T_IQ1_M = 29,
    GGUF_T_BF16 = 30,
    GGUF_T_TQ1_0 = 34,
    GGUF_T_TQ2_0 = 35,
    GGUF_T_MXFP4 = 39,
    GGUF_T_COUNT = 40
};

/* A string inside the buffer: not NUL-terminated. */
struct gguf_str {
    const char *ptr;
    uint64_t len;
};

/*
 * An array value. Numeric element j starts at data + j * gguf_vtype_size(type)
 * and may be unaligned: read it with gguf_arr_i64() / gguf_arr_f64().
 * For string arrays, strs[j] is element j (strs is owned by the struct gguf).
 */
struct gguf_arr {
    enum gguf_vtype type;
    uint64_t n;
    const void *data;
    const struct gguf_str *strs;
};

/* One tensor, as described by the file. Borrowed from the struct gguf. */
struct gguf_tensor {
    const char *name;         /* NUL-terminated, owned by the struct gguf */
    enum gguf_ttype type;
    uint32_t n_dims;          /* 1..GGUF_MAX_DIMS */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused dims are 1 */
    uint64_t offset;          /* from the start of the data section */
    size_t nbytes;
    const void *data;         /* into the buffer */
};

struct gguf;

/* ---- Reading ---------------------------------------------------------- */

/*
 * Parses a GGUF file held in buf[0..len). name is used in error messages.
 * Returns 0, or -EBADMSG (corrupt or unsupported file) / -ENOMEM with a
 * one-line message "NAME: what is wrong" in err. The caller owns *out and
 * releases it with gguf_free(); buf must outlive it.
 */
int gguf_parse(const void *buf, size_t len, const char *name, struct gguf **out,
               char *err, size_t errlen);

/* Maps path read-only and parses it; *out owns the mapping. -errno on I/O error. */
int gguf_open(const char *path, struct gguf **out, char *err, size_t errlen);

/* Accepts NULL. */
void gguf_free(struct gguf *g);

uint32_t gguf_version(const struct gguf *g);
size_t gguf_alignment(const struct gguf *g);
/*
 * Offset of the data section in the buffer, and the buffer itself. The offset
 * is at most len: a file without tensors may end before the header's padding.
 */
size_t gguf_data_offset(const struct gguf *g);
const void *gguf_buffer(const struct gguf *g, size_t *len);

/* Metadata by index (0 <= i < gguf_n_kv). */
int64_t gguf_n_kv(const struct gguf *g);
int64_t gguf_find_key(const struct gguf *g, const char *key); /* -1 if absent */
const char *gguf_key(const struct gguf *g, int64_t i);        /* NUL-terminated */
enum gguf_vtype gguf_kv_type(const struct gguf *g, int64_t i);

/*
 * Typed getters by key. Return 0, -ENOENT if the key is absent, -EINVAL if
 * the value has another type, -ERANGE if it does not fit; *out is written
 * only on success, so it may hold a default.
 * gguf_get_i64 accepts every integer type; gguf_get_f64 accepts float32,
 * float64 and integers.
 */
int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_f64(const struct gguf *g, const char *key, double *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
int gguf_get_arr(const struct gguf *g, const char *key, struct gguf_arr *out);

/* The same by index (i valid). */
int gguf_kv_i64(const struct gguf *g, int64_t i, int64_t *out);
int gguf_kv_f64(const struct gguf *g, int64_t i, double *out);
int gguf_kv_str(const struct gguf *g, int64_t i, struct gguf_str *out);
int gguf_kv_arr(const struct gguf *g, int64_t i, struct gguf_arr *out);

/* Element j of a numeric array (j < a->n); integers, floats and bools. */
int64_t gguf_arr_i64(const struct gguf_arr *a, uint64_t j);
double gguf_arr_f64(const struct gguf_arr *a, uint64_t j);

/* Renders value i as text ("llama", "[2048 x string]", "1e-05"); returns buf. */
const char *gguf_kv_format(const struct gguf *g, int64_t i, char *buf, size_t len);

/* Tensors by index (0 <= i < gguf_n_tensors), or by name (NULL if absent). */
int64_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor *gguf_tensor(const struct gguf *g, int64_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);

/* ---- Types ------------------------------------------------------------ */

/* Size in bytes of one scalar value type (0 for string and array). */
size_t gguf_vtype_size(enum gguf_vtype t);
const char *gguf_vtype_name(enum gguf_vtype t);

/*
 * Tensor type traits: name ("q8_0"), elements per block and bytes per block.
 * Returns false for numbers that are not a known ggml type.
 */
bool gguf_ttype_info(uint32_t t, const char **name, int64_t *blck, size_t *bsize);
const char *gguf_ttype_name(enum gguf_ttype t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t gguf_row_size(enum gguf_ttype t, int64_t n);

/* ---- Writing ---------------------------------------------------------- */

struct gguf_writer;

/* Caller owns the result; release with gguf_writer_free(). Never fails. */
struct gguf_writer *gguf_writer_new(void);
void gguf_writer_free(struct gguf_writer *w);

/* Setting a key that is already set replaces its value in place. */
void gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
void gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
void gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
void gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
/* A scalar of any numeric or bool type t; v points to one value of that type. */
void gguf_writer_set_scalar(struct gguf_writer *w, const char *key, enum gguf_vtype t,
                            const void *v);
/* Numeric array of n elements of type t, copied. */
void gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t,
                         const void *data, uint64_t n);
void gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
                             const struct gguf_str *strs, uint64_t n);
/* Copies key/value i of g (any type, arrays included). */
void gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i);

/*
 * Adds a tensor (name unique). data (nbytes, which must equal the type's size
 * for ne) is borrowed until gguf_writer_write() returns.
 */
void gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum gguf_ttype type,
                            uint32_t n_dims, const int64_t *ne, const void *data,
                            size_t nbytes);

/*
 * Writes a GGUF v3 file to path (through a temporary file renamed into place).
 * Alignment is general.alignment if set, else 32. Returns 0 or -errno with a
 * message in err.
 */
int gguf_writer_write(struct gguf_writer *w, const char *path, char *err, size_t errlen);

#endif

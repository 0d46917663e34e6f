/*
 * adapters_int.h - shared inside adapters/ only.
 */
#ifndef LORASERVE_ADAPTERS_INT_H
#define LORASERVE_ADAPTERS_INT_H

#include "adapters.h"
#include "gguf.h"

/* Loaders, by format. Same contract as adapters_load_path. */
int adapters__load_gguf(const struct engine_model *m, const char *path, int max_rank,
                        struct engine_lora **out, struct adapters_info *info, char *err,
                        size_t errlen);
int adapters__load_peft(const struct engine_model *m, const char *dir, int max_rank,
                        struct engine_lora **out, struct adapters_info *info, char *err,
                        size_t errlen);
/*
 * What adapters__load_peft does once it has mapped the files: the same checks
 * of adapter_config.json in cfg[0..cfg_len) and of the safetensors in
 * st[0..st_len), and the same adapter. dir only names the files in messages.
 * The buffers are borrowed for the call. For the fuzz targets and tests.
 */
int adapters__load_peft_bytes(const struct engine_model *m, const char *dir, const void *cfg,
                              size_t cfg_len, const void *st, size_t st_len, int max_rank,
                              struct engine_lora **out, struct adapters_info *info, char *err,
                              size_t errlen);
/*
 * What adapters__load_gguf does once it has parsed the file: the same checks of
 * a GGUF-LoRA's metadata and tensors against m. path names it in messages; g
 * is borrowed for the call.
 */
int adapters__load_gguf_parsed(const struct engine_model *m, const struct gguf *g,
                               const char *path, int max_rank, struct engine_lora **out,
                               struct adapters_info *info, char *err, size_t errlen);

/* "blk.N.attn_q" style base names -> layer and target; false if not an adaptable weight. */
bool adapters__parse_target(const char *name, size_t len, int *layer,
                            enum engine_lora_target *t);

/*
 * Keeps an error message on one line whatever bytes a name in it came with:
 * control characters become '?' (as engine/gguf.c does).
 */
void adapters__one_line(char *s);

/* sha256 of buf[0..len) followed by buf2[0..len2) (buf2 may be NULL) as lowercase hex. */
void adapters__sha256_hex(const void *buf, size_t len, const void *buf2, size_t len2,
                          char hex[65]);

/*
 * Maps path read-only (a regular file; an empty file gives *buf = NULL,
 * *len = 0). Returns 0 or -errno with "PATH: what is wrong" in err. Release
 * with adapters__unmap.
 */
int adapters__map(const char *path, const void **buf, size_t *len, char *err, size_t errlen);
void adapters__unmap(const void *buf, size_t len);

/* ---- safetensors (safetensors.c) -------------------------------------- */

/*
 * A safetensors file: u64 little-endian N, N bytes of JSON header
 * {"NAME": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]},
 *  ..., "__metadata__": {"key": "value"}}, then the data section. Offsets are
 * relative to the data section; the tensors tile it exactly (no overlap, no
 * gap, nothing after the last), as the reference implementation requires.
 * Only F32, F16 and BF16 tensors are accepted.
 */
#define ADAPTERS_ST_MAX_HEADER (100u << 20)
#define ADAPTERS_ST_MAX_DIMS 8

struct adapters_st_tensor {
    const char *name;           /* NUL-terminated, owned by the struct adapters_st */
    enum gguf_ttype type;       /* GGUF_T_F32, GGUF_T_F16 or GGUF_T_BF16 */
    int n_dims;                 /* 0..ADAPTERS_ST_MAX_DIMS */
    int64_t shape[ADAPTERS_ST_MAX_DIMS];    /* row-major: the last dim is the row */
    uint64_t begin, end;        /* in the data section */
    const void *data;           /* into the buffer; may be unaligned */
    size_t nbytes;
};

struct adapters_st;

/*
 * Parses the safetensors file held in buf[0..len); name is used in error
 * messages. Every length, offset, shape and dtype is checked against the
 * buffer (overflow-safe) before use. Returns 0, or -EBADMSG (corrupt or
 * unsupported) / -ENOMEM with one line "NAME: what is wrong" in err. The
 * caller owns *out (release with adapters__st_free); buf must outlive it.
 */
int adapters__st_parse(const void *buf, size_t len, const char *name, struct adapters_st **out,
                       char *err, size_t errlen);
void adapters__st_free(struct adapters_st *st);    /* accepts NULL */
int adapters__st_n_tensors(const struct adapters_st *st);
/* Tensors sorted by name; borrowed from st. */
const struct adapters_st_tensor *adapters__st_tensor(const struct adapters_st *st, int i);
const struct adapters_st_tensor *adapters__st_find(const struct adapters_st *st,
                                                   const char *name);   /* NULL if absent */

/*
 * Converts a tensor to a new f32 array (caller frees), or NULL if out of
 * memory. The data may be unaligned.
 */
float *adapters__st_to_f32(const struct adapters_st_tensor *t);

/* ---- The registry's table (registry_db.c) ----------------------------- */

/*
 * One SQLite connection and its prepared statements. Not thread-safe: the
 * registry serializes every call with its db lock. Functions return 0 or
 * -EIO with "DB: what sqlite says" in err (-ENOMEM when out of memory).
 */
struct adapters_db;

/* path NULL: an in-memory database. Caller owns *out; release with adapters__db_close. */
int adapters__db_open(const char *path, struct adapters_db **out, char *err, size_t errlen);
void adapters__db_close(struct adapters_db *d);     /* accepts NULL */

/* Rows that say "loaded" become "evicted" (a new process has nothing resident). */
int adapters__db_reset_loaded(struct adapters_db *d, char *err, size_t errlen);
int adapters__db_begin(struct adapters_db *d, char *err, size_t errlen);
int adapters__db_commit(struct adapters_db *d, char *err, size_t errlen);
void adapters__db_rollback(struct adapters_db *d);

/* Inserts or replaces the row of row->name (every field; users is not stored). */
int adapters__db_put(struct adapters_db *d, const struct adapters_entry *row, char *err,
                     size_t errlen);
int adapters__db_set_status(struct adapters_db *d, const char *name, enum adapters_status s,
                            const char *error, int64_t now, char *err, size_t errlen);
int adapters__db_set_pinned(struct adapters_db *d, const char *name, bool pinned,
                            int64_t now, char *err, size_t errlen);
int adapters__db_set_used(struct adapters_db *d, const char *name, int64_t last_used_at,
                          char *err, size_t errlen);
int adapters__db_delete(struct adapters_db *d, const char *name, char *err, size_t errlen);

/*
 * Calls row_cb for every row, sorted by name (the row and its strings are
 * valid during the call only); a non-zero return stops the scan and is
 * returned.
 */
int adapters__db_scan(struct adapters_db *d,
                      int (*row_cb)(const struct adapters_entry *row, void *arg), void *arg,
                      char *err, size_t errlen);

#endif

/*
 * engine_int.h - struct bodies and helpers shared inside engine/ only.
 */
#ifndef LORASERVE_ENGINE_INT_H
#define LORASERVE_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "kernels.h"

struct engine_layer {
    float *attn_norm;              /* (n_embd) */
    struct engine_weight wq;       /* (n_head * head_dim, n_embd) */
    struct engine_weight wk;       /* (n_head_kv * head_dim, n_embd) */
    struct engine_weight wv;       /* (n_head_kv * head_dim, n_embd) */
    struct engine_weight wo;       /* (n_embd, n_head * head_dim) */
    float *bq, *bk, *bv;           /* qwen2 only */
    float *ffn_norm;               /* (n_embd) */
    struct engine_weight w_gate;   /* (n_ff, n_embd) */
    struct engine_weight w_up;     /* (n_ff, n_embd) */
    struct engine_weight w_down;   /* (n_embd, n_ff) */
};

struct engine_model {
    struct gguf *gguf;
    struct tokenizer *tok;
    struct engine_hparams hp;
    struct engine_weight tok_embd; /* (n_vocab, n_embd) */
    struct engine_weight output;   /* (n_vocab, n_embd); tok_embd if tied */
    float *output_norm;            /* (n_embd) */
    float *rope_freqs;             /* (n_rot / 2) frequency divisors, or NULL */
    struct engine_layer *layers;   /* (n_layer) */
    void *x16;                     /* the x16 copies of the matmul weights, or NULL */
    size_t x16_bytes;
    size_t bytes;
    int64_t n_params;
};

/* ---- KV cache in blocks, and the prefix cache (kvcache.c) ---- */

/* A block's prefix-cache entry (valid while published). */
struct engine_kv_meta {
    uint64_t key;                   /* chained hash of the prefix up to this block */
    uint64_t lora;                  /* adapters hash of the requests that made it */
    int32_t tok[ENGINE_KV_BLOCK];   /* its tokens (checked on a match) */
    int32_t next_hash;              /* next block in its hash chain */
    int32_t prev, next_lru;         /* unreferenced published blocks, oldest first */
    bool published;
};

struct engine_kv {
    int n_layer, kv_dim, head_dim;
    int n_seq, max_blocks;          /* blocks a sequence can hold: n_ctx / ENGINE_KV_BLOCK, up */
    int n_blocks;                   /* in the pool */
    enum engine_kv_type type;
    size_t esize;                   /* bytes per element: 4 or 2 */
    size_t bytes;                   /* of k, and of v */
    char *k;                        /* (n_layer, n_blocks, kv_dim, ENGINE_KV_BLOCK) */
    char *v;                        /* (n_layer, n_blocks, n_head_kv, ENGINE_KV_BLOCK, head_dim) */
    int32_t *table;                 /* (n_seq, max_blocks): a sequence's blocks in order */
    uint64_t *seq_keys;             /* (n_seq, max_blocks): its prompt blocks' keys */
    int *len;                       /* (n_seq) positions cached */
    int *n_alloc;                   /* (n_seq) blocks held */
    int *n_pub;                     /* (n_seq) leading blocks whose keys are known */
    int32_t *free;                  /* unused block ids, a stack of n_free */
    int n_free;
    int32_t *ref;                   /* (n_blocks) sequences holding each block */
    struct engine_kv_meta *meta;    /* (n_blocks) */
    int32_t *bucket;                /* (n_bucket) first block of each hash chain */
    int n_bucket;
    int32_t lru_head, lru_tail;
    int n_lru;                      /* blocks on the LRU list: published, held by none */
};

/* Room for n_seq sequences of n_ctx positions of type. Returns 0 or -ENOMEM. */
int engine__kv_init(struct engine_kv *kv, const struct engine_hparams *hp, int n_ctx, int n_seq,
                    int pool_seqs,
                    enum engine_kv_type type);
void engine__kv_release(struct engine_kv *kv);
/* Blocks for positions [0, len) of seq. Returns 0, -EINVAL (beyond n_ctx) or -ENOMEM. */
int engine__kv_reserve(struct engine_kv *kv, int seq, int len);
/* Forgets positions from p0 on and gives back the blocks no longer needed. */
void engine__kv_truncate(struct engine_kv *kv, int seq, int p0);
/*
 * Prefix cache. attach: for an empty sequence about to take prompt tok[0..n)
 * with adapters hash lora, shares the published blocks of the longest cached
 * prefix (leaving at least one position to compute); returns the positions
 * now cached. publish: makes the sequence's full blocks among its first n
 * positions (tok, lora as given to attach) available to later sequences.
 */
int engine__kv_attach(struct engine_kv *kv, int seq, uint64_t lora, const int32_t *tok, int n);
void engine__kv_publish(struct engine_kv *kv, int seq, uint64_t lora, const int32_t *tok, int n);
/* Blocks held by sequences, and published blocks held by none (the rest are free). */
void engine__kv_usage(const struct engine_kv *kv, int *used, int *cached);
/* Kv head h's K and V tiles of seq's first n positions (one per block), in order. */
void engine__kv_tiles(const struct engine_kv *kv, int layer, int seq, int h, int n,
                      bool prefetch, const void **kt, const void **vt);
/* Stores kv head h's k and v (head_dim each) at position pos (reserved) of seq. */
void engine__kv_store(struct engine_kv *kv, int layer, int seq, int pos, int h, const float *k,
                      const float *v);
/* The context's cache (for the scheduler's prefix cache). */
struct engine_kv *engine__ctx_kv(struct engine_ctx *c);

/* ---- LoRA in the forward pass (lora.c) ---- */

/* The rows of one batch that use adapter l, with each row's total scale. */
struct engine_lora_group {
    const struct engine_lora *l;
    int n;
    int *row;
    float *scale;
    size_t xoff, toff;          /* this group's place in the plan's xg and t */
};

/* Groups of a batch plus scratch buffers, reused across batches. */
struct engine_lora_plan {
    int n;
    struct engine_lora_group *g;
    int *row;
    float *scale;
    float *xg, *t;
    size_t cap_g, cap_row, cap_scale, cap_xg, cap_t;
};

int engine__lora_plan(struct engine_lora_plan *p, const struct engine_lora_set *const *set,
                      int rows);
/*
 * y[i] += the low-rank updates of projection t[i] (n_out[i] columns) of the
 * batch's adapters, for n <= ENGINE_LORA_MAX_N projections that read the
 * same x (k columns). Returns 0 or -ENOMEM.
 */
#define ENGINE_LORA_MAX_N 4
int engine__lora_apply(struct engine_pool *pool, struct engine_lora_plan *p, int layer, int n,
                       const enum engine_lora_target *t, const float *x, int64_t k,
                       float *const *y, const int64_t *n_out);
void engine__lora_plan_release(struct engine_lora_plan *p);

/* ---- Reading a GGUF file's keys and tensors, checked (loader.c) ---- */

struct engine_loader {
    const struct gguf *g;
    const char *path;               /* for messages */
    char *err;
    size_t errlen;
    int64_t n_params;               /* elements of the tensors loaded so far */
};

/* Key "arch.suffix" as an int in [lo, hi]; def if absent and not required. 0 or -EINVAL. */
int engine__load_int(struct engine_loader *L, const char *arch, const char *suffix, int def,
                     bool required, int lo, int hi, int *out);
/* Key "arch.suffix" as a finite float; def if absent. 0 or -EINVAL. */
int engine__load_float(struct engine_loader *L, const char *arch, const char *suffix,
                       float def, float *out);
/* Tensor name, or NULL; a missing required one sets *rc (if still 0) to -EINVAL. */
const struct gguf_tensor *engine__load_find(struct engine_loader *L, const char *name,
                                            bool required, int *rc);
/* A matrix of n_out rows of k, left in the file: 0, -EINVAL (shape, type); absent: w untouched. */
int engine__load_weight(struct engine_loader *L, const char *name, int64_t k, int64_t n_out,
                        bool required, struct engine_weight *w);
/* A 1-D tensor of n as an owned f32 array (NULL if absent): 0, -EINVAL, -ENOMEM. */
int engine__load_vector(struct engine_loader *L, const char *name, int64_t n, bool required,
                        float **out);
/* The same for rows of n (rows 0: a 1-D tensor). */
int engine__load_matrix_f32(struct engine_loader *L, const char *name, int64_t n, int64_t rows,
                            bool required, float **out);

/* out[i] = v[i] / |v| (zeros if v is all zeros): an embedding's last step. */
void engine__l2_normalize(const double *v, int n, float *out);

/* Fixed-size bookkeeping allocations: abort with a message on failure. */
void *engine__xmalloc(size_t n);
void *engine__xcalloc(size_t n, size_t size);
char *engine__xstrdup(const char *s);

/* Allocation of a size that comes from input: NULL on failure or overflow. */
void *engine__try_alloc(size_t n, size_t size);

/*
 * Formats "prefix: message" into err (snprintf-like, always NUL-terminated), on
 * one line: control characters become '?'.
 */
void engine__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

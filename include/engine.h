/*
 * engine.h - a LLaMA-family model loaded from GGUF, its forward pass, and
 * sampling.
 *
 * Lifetimes: a struct engine_model maps the file read-only and owns its
 * tokenizer; it is immutable after engine_model_open() and may be shared by
 * any number of threads. A struct engine_ctx holds the KV cache and scratch
 * buffers of up to n_seq sequences and the engine's math threads; one thread
 * at a time drives it (the scheduler). A struct engine_sampler belongs to one
 * sequence.
 */
#ifndef LORASERVE_ENGINE_H
#define LORASERVE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "tokenizer.h"

/* ---- Model ------------------------------------------------------------ */

struct engine_model;

/* Shape of a loaded model, read from "<arch>.*" metadata. */
struct engine_hparams {
    char arch[32];          /* "llama" or "qwen2" */
    int n_vocab;
    int n_ctx_train;
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;           /* n_embd / n_head */
    int n_ff;
    int n_rot;              /* rotary dimensions per head */
    float rms_eps;
    float rope_base;
    float rope_freq_scale;  /* 1 / linear scaling factor */
    bool rope_neox;         /* rotate (i, i + n_rot/2) pairs instead of (2i, 2i+1) */
    bool tied_output;       /* output projection is token_embd */
    bool qkv_bias;
};

/*
 * Opens a GGUF model file: validates the file, the architecture, every
 * tensor's presence, shape and type, and builds the tokenizer. Returns 0, or
 * a negative errno with one line "FILE: what is wrong" in err. The caller owns
 * *out; release with engine_model_free().
 */
int engine_model_open(const char *path, struct engine_model **out, char *err, size_t errlen);
void engine_model_free(struct engine_model *m); /* accepts NULL */

const struct engine_hparams *engine_model_hparams(const struct engine_model *m);
const struct tokenizer *engine_model_tokenizer(const struct engine_model *m);
const struct gguf *engine_model_gguf(const struct engine_model *m);
/* Bytes of all tensor data in the file, and the number of parameters. */
size_t engine_model_bytes(const struct engine_model *m);
int64_t engine_model_n_params(const struct engine_model *m);

/* ---- Forward pass ----------------------------------------------------- */

struct engine_ctx;

/*
 * A context with a KV cache of n_ctx positions for each of n_seq sequences,
 * and n_threads math threads. Returns 0, -EINVAL (bad sizes) or -ENOMEM.
 * The model must outlive the context. Caller owns *out.
 */
int engine_ctx_new(struct engine_model *m, int n_ctx, int n_seq, int n_threads,
                   struct engine_ctx **out);
void engine_ctx_free(struct engine_ctx *c); /* accepts NULL */
int engine_ctx_n_ctx(const struct engine_ctx *c);

/*
 * One forward step over n token rows. Row i is token tokens[i] at position
 * pos[i] of sequence seq[i]; rows of one sequence must have consecutive
 * positions that continue what the cache holds. Logits are written for the
 * rows with logits[i] set (all rows if logits is NULL), n_vocab floats each,
 * in row order, to out.
 * Returns 0, or -EINVAL (bad token, position or sequence), -ENOMEM.
 */
struct engine_batch {
    int n;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const bool *logits;
};
int engine_decode(struct engine_ctx *c, const struct engine_batch *b, float *out);

/* Forgets the cached positions of sequence seq from position p0 on. */
void engine_seq_truncate(struct engine_ctx *c, int seq, int p0);

/* ---- Sampling --------------------------------------------------------- */

struct engine_logit_bias {
    int32_t token;
    float bias;             /* -INFINITY bans the token */
};

/* Defaults (ENGINE_SAMPLING_INIT): greedy when temperature <= 0. */
struct engine_sampling {
    float temperature;
    int top_k;              /* <= 0: off */
    float top_p;            /* >= 1: off */
    float min_p;            /* <= 0: off */
    float repeat_penalty;   /* 1: off */
    int repeat_last_n;      /* tokens looked back for the penalties; -1 = all */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
    const struct engine_logit_bias *bias;
    int n_bias;
};
#define ENGINE_SAMPLING_INIT { 0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0.0f, 0.0f, 0, NULL, 0 }

struct engine_sampler;

/*
 * Caller owns *out; release with engine_sampler_free(). The bias list is
 * copied. Returns 0, -EINVAL (a bias token out of range) or -ENOMEM.
 */
int engine_sampler_new(const struct engine_sampling *p, int n_vocab,
                       struct engine_sampler **out);
void engine_sampler_free(struct engine_sampler *s);
/* Adds a token (prompt or generated) to the history the penalties look at. */
void engine_sampler_accept(struct engine_sampler *s, int32_t id);
/* Picks the next token from n_vocab logits (modified in place). */
int32_t engine_sampler_sample(struct engine_sampler *s, float *logits);

/* ---- Model files ------------------------------------------------------ */

/*
 * Writes a copy of the model at in_path with its weights converted to type,
 * one of "f16", "q8_0", "q4_0", "q4_k_m" (norms and 1-D tensors stay F32;
 * q4_k_m mixes Q4_K and Q6_K as llama.cpp does). Returns 0 or -errno with a
 * message in err.
 */
int engine_quantize_file(const char *in_path, const char *out_path, const char *type,
                         int n_threads, char *err, size_t errlen);

/* Shape of a synthetic model for benchmarks (defaults: the 110M model). */
struct engine_synth {
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    uint64_t seed;
};
#define ENGINE_SYNTH_INIT { 768, 12, 12, 12, 2048, 2048, 1234 }

/*
 * Writes an F32 LLaMA GGUF of the given shape with seeded random normal
 * weights (std 0.02), norms of ones, and the tokenizer of vocab_path.
 */
int engine_mkmodel(const char *out_path, const char *vocab_path, const struct engine_synth *s,
                   char *err, size_t errlen);

#endif

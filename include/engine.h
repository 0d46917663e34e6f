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

/* ---- LoRA adapters ---------------------------------------------------- */

/*
 * An adapter as the forward pass applies it, unmerged: for each projection it
 * targets, y += s * B (A x) with A (rank, k) and B (n_out, rank) in f32 or
 * f16 (as the file held them), computed in f32.
 * Built by a loader (adapters/) with engine_lora_new + engine_lora_add, then
 * immutable and refcounted: any thread may ref or unref it; the memory goes
 * with the last reference. The model must outlive it.
 */
enum engine_lora_target {
    ENGINE_LORA_Q,
    ENGINE_LORA_K,
    ENGINE_LORA_V,
    ENGINE_LORA_O,
    ENGINE_LORA_GATE,
    ENGINE_LORA_UP,
    ENGINE_LORA_DOWN,
    ENGINE_LORA_N_TARGETS
};

struct engine_lora;

/* "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down". */
const char *engine_lora_target_name(enum engine_lora_target t);

/* A new adapter with no matrices yet. Caller owns the one reference. 0 or -ENOMEM. */
int engine_lora_new(const struct engine_model *m, struct engine_lora **out);

/*
 * Copies A (rank rows of k) and B (n_out rows of rank) for one projection of
 * one layer, applied as scale * B (A x) (scale = alpha / rank, or rsLoRA's
 * alpha / sqrt(rank)). k and n_out must be those of the base weight; values
 * must be finite; each projection at most once. With f16 they are kept as
 * f16 (half the memory and the bandwidth; exact when they were read from f16
 * tensors), else as f32. Returns 0, -EINVAL with a message, or -ENOMEM. Only
 * before the adapter is shared.
 */
int engine_lora_add(struct engine_lora *l, int layer, enum engine_lora_target t, int rank,
                    float scale, int64_t k, int64_t n_out, const float *a, const float *b,
                    bool f16, char *err, size_t errlen);

void engine_lora_ref(struct engine_lora *l);
void engine_lora_unref(struct engine_lora *l);     /* accepts NULL */
size_t engine_lora_bytes(const struct engine_lora *l);
int engine_lora_max_rank(const struct engine_lora *l);
/* Unique per object for the life of the process (never reused). */
uint64_t engine_lora_id(const struct engine_lora *l);
/*
 * Adapters alive in this process (every engine_lora not yet freed, whoever
 * holds it) and their bytes: a replaced version that requests still use
 * counts until its last unref. For /health and leak checks. Any thread.
 */
void engine_lora_live(uint64_t *count, uint64_t *bytes);

/* The adapters one request uses, each with its own scale; their deltas add. */
#define ENGINE_LORA_MAX_SET 8
struct engine_lora_set {
    int n;
    struct engine_lora *lora[ENGINE_LORA_MAX_SET];
    float scale[ENGINE_LORA_MAX_SET];
};

/* ---- Forward pass ----------------------------------------------------- */

struct engine_ctx;

/*
 * A context with a KV cache of n_ctx positions for each of n_seq sequences,
 * and n_threads math threads. Returns 0, -EINVAL (bad sizes) or -ENOMEM.
 * The model must outlive the context. Caller owns *out.
 */
int engine_ctx_new(struct engine_model *m, int n_ctx, int n_seq, int n_threads,
                   struct engine_ctx **out);
/*
 * The KV cache's element type. AUTO: f16 (half the memory and the bandwidth
 * attention reads; llama.cpp's default) unless the model's weights are f32,
 * whose users asked for full precision.
 */
enum engine_kv_cache { ENGINE_KV_CACHE_AUTO, ENGINE_KV_CACHE_F32, ENGINE_KV_CACHE_F16 };
/* engine_ctx_new with the cache type chosen (engine_ctx_new takes AUTO). */
int engine_ctx_new_kv(struct engine_model *m, int n_ctx, int n_seq, int n_threads,
                      enum engine_kv_cache kv, struct engine_ctx **out);
/*
 * engine_ctx_new_kv whose cache pool holds pool_seqs x n_ctx positions
 * (1 <= pool_seqs <= n_seq): the sequences share it; one that finds it full
 * of positions in use gets -ENOMEM from engine_decode.
 */
int engine_ctx_new_pool(struct engine_model *m, int n_ctx, int n_seq, int pool_seqs,
                        int n_threads, enum engine_kv_cache kv, struct engine_ctx **out);
void engine_ctx_free(struct engine_ctx *c); /* accepts NULL */
int engine_ctx_n_ctx(const struct engine_ctx *c);

/*
 * One forward step over n token rows. Row i is token tokens[i] at position
 * pos[i] of sequence seq[i]; rows of one sequence must have consecutive
 * positions that continue what the cache holds. Logits are written for the
 * rows with logits[i] set (all rows if logits is NULL), n_vocab floats each,
 * in row order, to out. Row i applies the adapters of lora[i] (none if lora or
 * lora[i] is NULL); rows with different adapters share the base matmuls.
 * Returns 0, or -EINVAL (bad token, position or sequence), -ENOMEM.
 */
struct engine_batch {
    int n;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const bool *logits;
    const struct engine_lora_set *const *lora;  /* per row (entries may be NULL), or NULL */
};
int engine_decode(struct engine_ctx *c, const struct engine_batch *b, float *out);
/*
 * engine_decode without the logits: hidden[r * n_embd ..] gets row r's last
 * hidden state after the output norm (what the logits are made from), for
 * every row; b->logits is ignored. For embeddings.
 */
int engine_decode_hidden(struct engine_ctx *c, const struct engine_batch *b, float *hidden);

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

/* ---- Scheduler -------------------------------------------------------- */

/*
 * The scheduler owns one engine_ctx and a thread that runs iterations: each
 * admits waiting requests into free slots, builds one batch from every
 * running sequence (one decode row each, plus chunks of prompts still being
 * prefilled, within a row budget so streams keep flowing), runs the forward
 * pass, samples, and appends tokens to each request's output. Requests join
 * and leave the batch at every iteration.
 *
 * Tenants: each has its own FIFO queue. A free slot goes to the waiting
 * tenant with the fewest running sequences, ties to the one served least
 * recently; with one tenant this is plain FIFO. When requests wait and no
 * slot is free, a tenant running more than one sequence more than the
 * tenant next in line loses its most recently admitted sequence to it
 * (recompute preemption, as vLLM's): that request goes back to the front of
 * its tenant's queue and, admitted again, computes its prompt and the
 * tokens it had generated again (from the prefix cache where it can) and
 * goes on; its output continues with no token repeated or lost.
 *
 * A request is shared by the submitter and the scheduler: it lives until
 * engine_req_release() has been called and the scheduler is done with it.
 * Any thread may call the engine_req_* functions; notify is called on the
 * scheduler thread (keep it short: e.g. uv_async_send).
 */
struct engine_sched;
struct engine_req;

struct engine_sched_params {
    int n_ctx;          /* positions per slot */
    int n_slots;        /* sequences running at once */
    int n_threads;      /* math threads */
    int max_queue;      /* waiting requests beyond the slots; more => -EAGAIN */
    int batch_rows;     /* rows per iteration (prefill chunk budget), e.g. 512 */
    enum engine_kv_cache kv;   /* cache element type */
};

/*
 * Stops the scheduler thread: running and queued requests finish as
 * cancelled (their notify runs now), later submits and embeddings get
 * -ECANCELED; the memory stays until engine_sched_free (which stops first).
 */
void engine_sched_stop(struct engine_sched *s);      /* accepts NULL */
/* Caller owns *out; release with engine_sched_free(). Returns 0, -EINVAL, -ENOMEM. */
int engine_sched_new(struct engine_model *m, const struct engine_sched_params *p,
                     struct engine_sched **out);
/*
 * Stops the thread after its current iteration; requests still queued or
 * running finish with ENGINE_FINISH_CANCELLED. Accepts NULL.
 */
void engine_sched_free(struct engine_sched *s);

/* Requests waiting + running, and slots busy (for /health and metrics). */
void engine_sched_load(struct engine_sched *s, int *waiting, int *running);

/*
 * Counters since engine_sched_new and a snapshot of the queue and the KV
 * pool, for metrics. prompt_tokens counts positions the forward pass
 * prefilled: prefix-cache hits (engine_sched_prefix_hits) are not in it,
 * recomputation after a preemption is. generated_tokens counts tokens
 * appended to outputs (never an end-of-generation token: it is not
 * returned).
 *
 * The pool has kv_blocks_total blocks of kv_block_size (16) positions,
 * shared by the slots. A block is used (held by a sequence, running or
 * embedding, shared or not), cached (published in the prefix cache and held
 * by none: the pool takes it back when it needs one) or free. used / total
 * is vLLM's "KV cache usage", which also counts cached blocks as free: they
 * fill the pool over time, so counting them would pin usage near 1. The KV
 * figures are those after the latest iteration.
 *
 * Any thread; the fields are read one by one, not as one snapshot.
 */
struct engine_sched_stats {
    uint64_t iterations;        /* forward passes run (embeddings not counted) */
    uint64_t preemptions;       /* sequences preempted for another tenant */
    uint64_t prompt_tokens;     /* positions prefilled, see above */
    uint64_t generated_tokens;
    int waiting, running, n_slots;      /* requests queued, slots busy, slots */
    int kv_blocks_total, kv_blocks_used, kv_block_size;
    int kv_blocks_cached;       /* published, held by no sequence */
};
void engine_sched_stats(struct engine_sched *s, struct engine_sched_stats *out);

/*
 * The embedding of tokens[0..n) (1 <= n <= the slots' context) by the served
 * model: its output-normed last hidden states, averaged over the tokens
 * (MEAN), the first token's (CLS) or the last one's (LAST), scaled to length
 * 1, into out[n_embd].
 * Runs on the scheduler thread between its steps; the caller waits (call it
 * off the loop). 0, -EINVAL (a token out of range), -E2BIG, -ECANCELED
 * (stopping), -ENOMEM.
 */
enum engine_pooling { ENGINE_POOL_MEAN, ENGINE_POOL_CLS, ENGINE_POOL_LAST };
int engine_sched_embed(struct engine_sched *s, const int32_t *tokens, int n,
                       enum engine_pooling pool, float *out);
/*
 * Prompt positions served from the prefix cache so far: full blocks of 16 a
 * request shares with an earlier one of the same tenant, the same tokens and
 * the same adapters (each adapter object, version and scale). A preempted
 * request admitted again counts the blocks it finds again. Any thread.
 */
uint64_t engine_sched_prefix_hits(struct engine_sched *s);

#define ENGINE_MAX_TOP_LOGPROBS 20

struct engine_req_params {
    const int32_t *prompt;      /* copied */
    int n_prompt;
    int max_tokens;             /* >= 1; generation also stops at the slot's context */
    struct engine_sampling sampling;  /* bias list copied */
    bool ignore_eos;
    int n_top_logprobs;         /* 0..ENGINE_MAX_TOP_LOGPROBS alternatives per token */
    bool logprobs;              /* compute the chosen token's logprob */
    void (*notify)(void *arg);  /* new output or finished; scheduler thread */
    void *arg;
    /*
     * Adapters (NULL or n = 0: the base model). Copied; the request takes a
     * reference on each adapter and drops it when the request is freed.
     */
    const struct engine_lora_set *lora;
    /*
     * Who asks (0: the default or admin tenant). Admission is fair across
     * tenants, and tenants never share prefix-cache blocks (the time to the
     * first token would tell one what another asked).
     */
    uint32_t tenant;
};

/*
 * Queues a request. Returns 0, -EINVAL (empty prompt, prompt + max_tokens
 * beyond n_ctx, bad sampling), -EAGAIN (queue full), -ECANCELED (shutting
 * down), -ENOMEM. On success the caller owns one reference to *out.
 */
int engine_sched_submit(struct engine_sched *s, const struct engine_req_params *p,
                        struct engine_req **out);

enum engine_finish {
    ENGINE_FINISH_NONE = 0,     /* still running */
    ENGINE_FINISH_STOP,         /* end-of-generation token */
    ENGINE_FINISH_LENGTH,       /* max_tokens or the context */
    ENGINE_FINISH_CANCELLED,    /* engine_req_cancel or shutdown */
    ENGINE_FINISH_ERROR
};

struct engine_tok {
    int32_t id;
    float logprob;              /* of the raw distribution (log-softmax of logits) */
    int n_top;
    int32_t top_id[ENGINE_MAX_TOP_LOGPROBS];
    float top_logprob[ENGINE_MAX_TOP_LOGPROBS];
};

/*
 * Copies up to max generated tokens not yet taken into out and returns how
 * many. The end-of-generation token itself is never returned. *finish tells
 * whether the request has ended (after its last token was taken, nothing
 * more will come).
 */
int engine_req_take(struct engine_req *r, struct engine_tok *out, int max,
                    enum engine_finish *finish);
/* Prompt tokens evaluated and time to first token (seconds, 0 if none yet). */
void engine_req_stats(struct engine_req *r, int *n_prompt, int *n_generated, double *ttft);
/*
 * Asks the scheduler to stop the request: within one iteration it finishes as
 * cancelled, running or queued (also when queued again after a preemption),
 * and its slot, if it had one, is free.
 */
void engine_req_cancel(struct engine_req *r);
/* Whether the request holds a slot now (not waiting, preempted or finished). Any thread. */
bool engine_req_running(struct engine_req *r);
/*
 * Forward passes from its submission to the one that gave its first token
 * (1: the very next one), or -1 before that: time to first token in
 * iterations, which does not depend on the machine's speed. Any thread.
 */
int engine_req_ttft_iterations(struct engine_req *r);
/* Drops the submitter's reference (cancels first if still running). Accepts NULL. */
void engine_req_release(struct engine_req *r);

/*
 * Converts n values of a tensor of type t (F32, F16, BF16 or a quantized
 * type the engine supports; n a multiple of its block size) to f32.
 * Returns 0 or -EINVAL for a type the engine cannot read.
 */
int engine_tensor_to_f32(enum gguf_ttype t, const void *src, float *dst, int64_t n);

/* ---- Embedding models (encoders) ------------------------------------- */

/*
 * A BERT-family embedding model from a GGUF file (llama.cpp's "bert"
 * architecture: WordPiece vocabulary, absolute positions, post-LayerNorm,
 * GELU, no causal mask), with a pool of n_threads threads of its own. Its
 * tokenizer gives the ids ([CLS] ... [SEP] with add_special). Every function
 * may be called from any thread; embeddings are computed one at a time.
 * 0, or -EINVAL/-EBADMSG/-ENOENT/-ENOMEM with one line naming the file in err.
 */
struct engine_encoder;
int engine_encoder_open(const char *path, int n_threads, struct engine_encoder **out,
                        char *err, size_t errlen);
void engine_encoder_free(struct engine_encoder *e); /* accepts NULL */
const struct tokenizer *engine_encoder_tokenizer(const struct engine_encoder *e);
int engine_encoder_dim(const struct engine_encoder *e);     /* n_embd */
int engine_encoder_n_ctx(const struct engine_encoder *e);   /* most tokens per text */
/* The file's bert.pooling_type: MEAN, CLS or LAST. */
enum engine_pooling engine_encoder_pooling(const struct engine_encoder *e);
int64_t engine_encoder_n_params(const struct engine_encoder *e);
/*
 * ids[0..n) pooled as asked, L2-normalised, into out[dim]: 0, -EINVAL (n < 1,
 * an id out of range), -E2BIG (n beyond n_ctx), -ENOMEM.
 */
int engine_encoder_embed(struct engine_encoder *e, const int32_t *ids, int n,
                         enum engine_pooling pool, float *out);
/* The last layer's hidden states of ids[0..n), n x dim, not normalised (for tests). */
int engine_encoder_hidden(struct engine_encoder *e, const int32_t *ids, int n, float *out);

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

/*
 * kernels.h - tensor types and the math hot spots of the engine (internal).
 *
 * Every kernel the forward pass uses goes through these functions: row
 * conversion (quantize / dequantize), dot products, and the matmul that
 * multiplies a batch of activation rows by a weight matrix in its stored
 * type. The SIMD variant (scalar, AVX2, AVX-512) is chosen once by
 * engine__kernels_init() from the CPU's features; the build never depends
 * on the build machine's CPU.
 *
 * Block layouts are ggml's (Q8_0: f16 d + 32 x i8; Q4_0: f16 d + 16 bytes of
 * nibbles; Q4_K, Q6_K: 256-element super-blocks), so files written by
 * llama.cpp and by us are interchangeable.
 */
#ifndef LORASERVE_ENGINE_KERNELS_H
#define LORASERVE_ENGINE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* ---- Thread pool ------------------------------------------------------ */

/*
 * A fixed set of worker threads that spin briefly, then sleep, between jobs.
 * engine__pool_run() runs fn(ith, nth, arg) on every thread (the caller is
 * thread 0) and returns when all have finished. Only one thread may call
 * engine__pool_run() on a pool at a time.
 */
struct engine_pool;
typedef void (*engine_task_cb)(int ith, int nth, void *arg);

/* Caller owns *out; release with engine__pool_free(). Returns 0 or -ENOMEM/-errno. */
int engine__pool_new(int n_threads, struct engine_pool **out);
void engine__pool_free(struct engine_pool *p); /* accepts NULL */
int engine__pool_size(const struct engine_pool *p);
void engine__pool_run(struct engine_pool *p, engine_task_cb fn, void *arg);

/* ---- Types ------------------------------------------------------------ */

/* Chooses the SIMD variant; safe to call more than once, from any thread. */
void engine__kernels_init(void);
/* "scalar", "avx2" or "avx512" (after engine__kernels_init). */
const char *engine__kernels_name(void);

/* Types with dequantize, dot and matmul kernels: F32 F16 BF16 Q8_0 Q4_0 Q4_K Q6_K. */
bool engine__type_supported(enum gguf_ttype t);
/* Types engine__quantize_row can produce: the same set. */
bool engine__type_quantizable(enum gguf_ttype t);

/* n must be a multiple of the type's block size. */
void engine__dequantize_row(enum gguf_ttype t, const void *src, float *dst, int64_t n);
void engine__quantize_row(enum gguf_ttype t, const float *src, void *dst, int64_t n);

/* Half-precision conversions (IEEE binary16 and bfloat16, round to nearest even). */
float engine__f16_to_f32(uint16_t h);
uint16_t engine__f32_to_f16(float f);
float engine__bf16_to_f32(uint16_t h);
uint16_t engine__f32_to_bf16(float f);

/*
 * Dot product of one row of type t (n elements) with f32 vector x. The
 * activation is converted the way engine__matmul converts it (e.g. to 8-bit
 * blocks for Q8_0/Q4_0/Q4_K/Q6_K), so the result matches matmul's exactly.
 */
float engine__vec_dot(enum gguf_ttype t, int64_t n, const void *row, const float *x);

/* ---- Matmul ----------------------------------------------------------- */

/*
 * y (m rows of n_out) = x (m rows of k) . W^T, where W is n_out rows of k
 * elements of type t, rows contiguous (gguf_row_size(t, k) bytes apart), as
 * ggml stores a weight with ne = {k, n_out}. Work is split over the pool's
 * threads. x and y must not overlap. Thread-safe for distinct pools.
 */
void engine__matmul(struct engine_pool *pool, enum gguf_ttype t, const void *w,
                    int64_t n_out, int64_t k, const float *x, int64_t m, float *y);

#endif

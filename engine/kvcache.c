/*
 * kvcache.c - the KV cache in blocks of ENGINE_KV_BLOCK positions.
 *
 * A sequence's positions live in blocks taken from one pool as it grows and
 * given back when it is truncated or freed, so memory follows the lengths
 * actually cached; freed blocks are reused last-in first-out, so a new
 * request lands on pages that are already mapped and warm. Block b of layer
 * l holds, for its 16 positions, K transposed (kv_dim rows of 16: the
 * attention's scores read 16 positions per vector) and V per head in rows
 * (16 rows of head_dim); one head's tile of either is contiguous. A block id
 * covers every layer, as vLLM's do. Elements are f32, or f16 (rounded to
 * nearest even when stored) for half the memory and the bandwidth attention
 * reads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

int
engine__kv_init(struct engine_kv *kv, const struct engine_hparams *hp, int n_ctx, int n_seq,
                enum engine_kv_type type)
{
    memset(kv, 0, sizeof(*kv));
    kv->type = type;
    kv->esize = type == ENGINE_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    kv->n_layer = hp->n_layer;
    kv->head_dim = hp->head_dim;
    kv->kv_dim = hp->n_head_kv * hp->head_dim;
    kv->n_seq = n_seq;
    kv->max_blocks = (n_ctx + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    kv->n_blocks = n_seq * kv->max_blocks;
    size_t per_layer, total;
    if (__builtin_mul_overflow((size_t)kv->n_blocks, (size_t)kv->kv_dim * ENGINE_KV_BLOCK,
                               &per_layer) ||
        __builtin_mul_overflow(per_layer, (size_t)kv->n_layer, &total))
        return -ENOMEM;
    kv->k = engine__try_alloc(total, kv->esize);
    kv->v = engine__try_alloc(total, kv->esize);
    kv->table = engine__try_alloc((size_t)kv->n_blocks, sizeof(int32_t));
    kv->len = engine__try_alloc((size_t)n_seq, sizeof(int));
    kv->n_alloc = engine__try_alloc((size_t)n_seq, sizeof(int));
    kv->free = engine__try_alloc((size_t)kv->n_blocks, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->table || !kv->len || !kv->n_alloc || !kv->free) {
        engine__kv_release(kv);
        return -ENOMEM;
    }
    memset(kv->len, 0, (size_t)n_seq * sizeof(int));
    memset(kv->n_alloc, 0, (size_t)n_seq * sizeof(int));
    for (int i = 0; i < kv->n_blocks; i++) /* block 0 on top */
        kv->free[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    return 0;
}

void
engine__kv_release(struct engine_kv *kv)
{
    free(kv->k);
    free(kv->v);
    free(kv->table);
    free(kv->len);
    free(kv->n_alloc);
    free(kv->free);
    memset(kv, 0, sizeof(*kv));
}

int
engine__kv_reserve(struct engine_kv *kv, int seq, int len)
{
    int need = (len + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    if (need > kv->max_blocks)
        return -EINVAL;
    int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    while (kv->n_alloc[seq] < need) {
        if (kv->n_free == 0)
            return -ENOMEM;
        t[kv->n_alloc[seq]++] = kv->free[--kv->n_free];
    }
    return 0;
}

void
engine__kv_truncate(struct engine_kv *kv, int seq, int p0)
{
    if (p0 < kv->len[seq])
        kv->len[seq] = p0;
    int keep = (kv->len[seq] + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    const int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    while (kv->n_alloc[seq] > keep)
        kv->free[kv->n_free++] = t[--kv->n_alloc[seq]];
}

/* The K tile (head_dim rows of 16) or V tile (16 rows of head_dim) of kv head h. */
static size_t
tile(const struct engine_kv *kv, int layer, int seq, int j, int h)
{
    int32_t b = kv->table[(size_t)seq * kv->max_blocks + j];
    return (((size_t)layer * kv->n_blocks + (size_t)b) * kv->kv_dim + (size_t)h * kv->head_dim) *
           ENGINE_KV_BLOCK;
}

/*
 * The tiles are scattered over the pool, where the hardware prefetcher does
 * not follow: all of them are asked for at once here, so their misses
 * overlap instead of coming one tile at a time.
 */
void
engine__kv_tiles(const struct engine_kv *kv, int layer, int seq, int h, int n,
                 const void **kt, const void **vt)
{
    size_t bytes = (size_t)kv->head_dim * ENGINE_KV_BLOCK * kv->esize;
    for (int j = 0; j < (n + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK; j++) {
        size_t off = tile(kv, layer, seq, j, h) * kv->esize;
        kt[j] = kv->k + off;
        vt[j] = kv->v + off;
        for (size_t b = 0; b < bytes; b += 64) {
            __builtin_prefetch(kv->k + off + b, 0, 3);
            __builtin_prefetch(kv->v + off + b, 0, 3);
        }
    }
}

void
engine__kv_store(struct engine_kv *kv, int layer, int seq, int pos, int h, const float *k,
                 const float *v)
{
    size_t off = tile(kv, layer, seq, pos / ENGINE_KV_BLOCK, h);
    int i = pos % ENGINE_KV_BLOCK, hd = kv->head_dim;
    if (kv->type == ENGINE_KV_F16) {
        const struct engine_attn_kernels *A = &engine__variant()->attn;
        A->to_f16(k, (uint16_t *)kv->k + off + i, hd, ENGINE_KV_BLOCK);
        A->to_f16(v, (uint16_t *)kv->v + off + (size_t)i * hd, hd, 1);
        return;
    }
    float *kt = (float *)kv->k + off + i;
    for (int d = 0; d < hd; d++)
        kt[d * ENGINE_KV_BLOCK] = k[d];
    memcpy((float *)kv->v + off + (size_t)i * hd, v, (size_t)hd * sizeof(float));
}

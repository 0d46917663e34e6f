/*
 * kvcache.c - the KV cache in blocks of ENGINE_KV_BLOCK positions, and the
 * prefix cache over them.
 *
 * A sequence's positions live in blocks taken from one pool as it grows and
 * given back when it is truncated or freed; freed blocks are reused
 * last-in first-out, so a new request lands on lines likely still cached.
 * The pool (n_seq x n_ctx positions) is mapped and touched when it is made,
 * as vLLM and llama.cpp allocate theirs. Block b of layer
 * l holds, for its 16 positions, K transposed (kv_dim rows of 16: the
 * attention's scores read 16 positions per vector) and V per head in rows
 * (16 rows of head_dim); one head's tile of either is contiguous. A block id
 * covers every layer, as vLLM's do. Elements are f32, or f16 (rounded to
 * nearest even when stored) for half the memory and the bandwidth attention
 * reads.
 *
 * Prefix cache: a full block of prompt positions, once computed, is
 * published under a key chained from its predecessor's: XXH3 of (previous
 * key, the request's adapters hash, the block's 16 tokens). The adapters
 * hash covers each adapter's process-unique id (a replaced adapter is a new
 * object) and scale, and the scheduler mixes the tenant into it, so K and V
 * are never shared across adapters, versions, scales or tenants. A new
 * sequence attaches the published blocks of its prompt's longest cached
 * prefix (checking tokens and adapters, not just the hash) and computes
 * only the rest. Blocks are counted by reference; a block no sequence holds
 * stays published, in least-recently-released order, until the pool needs
 * it. A shared block is never written: positions are only appended, and a
 * truncation into one copies it first.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "engine_int.h"

#define NONE (-1)

/* ---- Pool ------------------------------------------------------------- */

/*
 * The K or V array: anonymous memory in 2 MB pages where the system allows.
 * A step touches a few KB in each of thousands of tiles spread over the
 * whole pool, one page each with 4 KB pages: more than the TLB holds (8
 * streams at 32 slots took 8.7 ms a step against 7.3 ms at 8 slots). Every
 * page is faulted in here: one first touched inside a step zeroes 2 MB there
 * (the prefix cache keeps released prompt blocks, so fresh ones keep being
 * taken until the whole pool has been used: 8 streams at 32 slots, 5.2 ms a
 * step against 4.6 ms with the pool touched).
 */
static char *
big_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
        return p;
    if (errno != EINVAL) { /* the memory is not there: say so now, not in a step */
        munmap(p, bytes);
        return NULL;
    }
#endif
    memset(p, 0, bytes); /* kernels before 5.14 */
    return p;
}

static int
alloc_arrays(struct engine_kv *kv, size_t total)
{
    size_t nb = (size_t)kv->n_blocks, ns = (size_t)kv->n_seq, nt = ns * kv->max_blocks;
    kv->bytes = total * kv->esize;
    kv->k = big_alloc(kv->bytes);
    kv->v = big_alloc(kv->bytes);
    kv->table = engine__try_alloc(nt, sizeof(int32_t));
    kv->seq_keys = engine__try_alloc(nt, sizeof(uint64_t));
    kv->len = engine__try_alloc(ns, sizeof(int));
    kv->n_alloc = engine__try_alloc(ns, sizeof(int));
    kv->n_pub = engine__try_alloc(ns, sizeof(int));
    kv->free = engine__try_alloc(nb, sizeof(int32_t));
    kv->ref = engine__try_alloc(nb, sizeof(int32_t));
    kv->meta = engine__try_alloc(nb, sizeof(*kv->meta));
    kv->bucket = engine__try_alloc((size_t)kv->n_bucket, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->table || !kv->seq_keys || !kv->len || !kv->n_alloc ||
        !kv->n_pub || !kv->free || !kv->ref || !kv->meta || !kv->bucket)
        return -ENOMEM;
    memset(kv->len, 0, ns * sizeof(int));
    memset(kv->n_alloc, 0, ns * sizeof(int));
    memset(kv->n_pub, 0, ns * sizeof(int));
    memset(kv->ref, 0, nb * sizeof(int32_t));
    memset(kv->meta, 0, nb * sizeof(*kv->meta));
    for (int i = 0; i < kv->n_bucket; i++)
        kv->bucket[i] = NONE;
    return 0;
}

int
engine__kv_init(struct engine_kv *kv, const struct engine_hparams *hp, int n_ctx, int n_seq,
                int pool_seqs,
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
    kv->n_blocks = pool_seqs * kv->max_blocks;
    for (kv->n_bucket = 64; kv->n_bucket < kv->n_blocks; kv->n_bucket *= 2)
        ;
    size_t per_layer, total;
    if (__builtin_mul_overflow((size_t)kv->n_blocks, (size_t)kv->kv_dim * ENGINE_KV_BLOCK,
                               &per_layer) ||
        __builtin_mul_overflow(per_layer, (size_t)kv->n_layer, &total) ||
        alloc_arrays(kv, total) < 0) {
        engine__kv_release(kv);
        return -ENOMEM;
    }
    for (int i = 0; i < kv->n_blocks; i++) /* block 0 on top */
        kv->free[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    kv->lru_head = kv->lru_tail = NONE;
    return 0;
}

void
engine__kv_release(struct engine_kv *kv)
{
    if (kv->k != NULL)
        munmap(kv->k, kv->bytes);
    if (kv->v != NULL)
        munmap(kv->v, kv->bytes);
    void *arrays[] = { kv->table, kv->seq_keys, kv->len, kv->n_alloc,
                       kv->n_pub, kv->free, kv->ref, kv->meta, kv->bucket };
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    memset(kv, 0, sizeof(*kv));
}

/* ---- Published blocks: hash chains and the LRU list ------------------- */

static void
lru_unlink(struct engine_kv *kv, int32_t b)
{
    struct engine_kv_meta *m = &kv->meta[b];
    if (m->prev != NONE)
        kv->meta[m->prev].next_lru = m->next_lru;
    else
        kv->lru_head = m->next_lru;
    if (m->next_lru != NONE)
        kv->meta[m->next_lru].prev = m->prev;
    else
        kv->lru_tail = m->prev;
    kv->n_lru--;
}

static void
lru_push(struct engine_kv *kv, int32_t b)
{
    struct engine_kv_meta *m = &kv->meta[b];
    m->prev = kv->lru_tail;
    m->next_lru = NONE;
    if (kv->lru_tail != NONE)
        kv->meta[kv->lru_tail].next_lru = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void
unpublish(struct engine_kv *kv, int32_t b)
{
    int32_t *p = &kv->bucket[kv->meta[b].key & (uint64_t)(kv->n_bucket - 1)];
    while (*p != b)
        p = &kv->meta[*p].next_hash;
    *p = kv->meta[b].next_hash;
    kv->meta[b].published = false;
}

/* The published block with this key, tokens and adapters, or NONE. */
static int32_t
lookup(const struct engine_kv *kv, uint64_t key, uint64_t lora, const int32_t *tok)
{
    for (int32_t b = kv->bucket[key & (uint64_t)(kv->n_bucket - 1)]; b != NONE;
         b = kv->meta[b].next_hash) {
        const struct engine_kv_meta *m = &kv->meta[b];
        if (m->key == key && m->lora == lora &&
            memcmp(m->tok, tok, sizeof(m->tok)) == 0)
            return b;
    }
    return NONE;
}

static uint64_t
block_key(uint64_t prev, uint64_t lora, const int32_t *tok)
{
    uint64_t buf[2 + ENGINE_KV_BLOCK / 2];
    buf[0] = prev;
    buf[1] = lora;
    memcpy(buf + 2, tok, ENGINE_KV_BLOCK * sizeof(int32_t));
    return XXH3_64bits(buf, sizeof(buf));
}

/* ---- Taking and giving back blocks ------------------------------------ */

/* A block for one more reference: a free one, else the least recently released published one. */
static int32_t
acquire(struct engine_kv *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free[--kv->n_free];
    } else if (kv->lru_head != NONE) {
        b = kv->lru_head;
        lru_unlink(kv, b);
        unpublish(kv, b);
    } else {
        return NONE;
    }
    kv->ref[b] = 1;
    return b;
}

static void
give_back(struct engine_kv *kv, int32_t b)
{
    if (--kv->ref[b] > 0)
        return;
    if (kv->meta[b].published)
        lru_push(kv, b);
    else
        kv->free[kv->n_free++] = b;
}

int
engine__kv_reserve(struct engine_kv *kv, int seq, int len)
{
    int need = (len + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    if (need > kv->max_blocks)
        return -EINVAL;
    int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    while (kv->n_alloc[seq] < need) {
        int32_t b = acquire(kv);
        if (b == NONE)
            return -ENOMEM;
        t[kv->n_alloc[seq]++] = b;
    }
    return 0;
}

/* Copies block src's contents, every layer, into dst. */
static void
copy_block(struct engine_kv *kv, int32_t dst, int32_t src)
{
    size_t per = (size_t)kv->kv_dim * ENGINE_KV_BLOCK * kv->esize;
    for (int l = 0; l < kv->n_layer; l++) {
        size_t row = (size_t)l * kv->n_blocks;
        memcpy(kv->k + (row + dst) * per, kv->k + (row + src) * per, per);
        memcpy(kv->v + (row + dst) * per, kv->v + (row + src) * per, per);
    }
}

/*
 * The last block kept by a truncation to len will be written again: if
 * another sequence shares it, this one takes a copy; if it is published,
 * it stops being so.
 */
static void
make_writable(struct engine_kv *kv, int seq, int len)
{
    if (len % ENGINE_KV_BLOCK == 0)
        return;
    int32_t *slot = &kv->table[(size_t)seq * kv->max_blocks + len / ENGINE_KV_BLOCK];
    int32_t b = *slot;
    if (kv->ref[b] > 1) {
        int32_t nb = acquire(kv); /* the pool has room: this sequence held b */
        copy_block(kv, nb, b);
        give_back(kv, b);
        *slot = nb;
    } else if (kv->meta[b].published) {
        unpublish(kv, b);
    }
}

void
engine__kv_truncate(struct engine_kv *kv, int seq, int p0)
{
    if (p0 < kv->len[seq])
        kv->len[seq] = p0;
    int len = kv->len[seq], keep = (len + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK;
    const int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    while (kv->n_alloc[seq] > keep)
        give_back(kv, t[--kv->n_alloc[seq]]);
    if (kv->n_pub[seq] > len / ENGINE_KV_BLOCK)
        kv->n_pub[seq] = len / ENGINE_KV_BLOCK;
    if (keep > 0)
        make_writable(kv, seq, len);
}

/* ---- Prefix cache ------------------------------------------------------ */

int
engine__kv_attach(struct engine_kv *kv, int seq, uint64_t lora, const int32_t *tok, int n)
{
    if (kv->len[seq] != 0 || kv->n_alloc[seq] != 0)
        return 0;
    int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    uint64_t *keys = kv->seq_keys + (size_t)seq * kv->max_blocks, prev = 0;
    int j = 0, max = (n - 1) / ENGINE_KV_BLOCK; /* one position at least is left to compute */
    max = max < kv->max_blocks ? max : kv->max_blocks;
    for (; j < max; j++) {
        uint64_t key = block_key(prev, lora, tok + j * ENGINE_KV_BLOCK);
        int32_t b = lookup(kv, key, lora, tok + j * ENGINE_KV_BLOCK);
        if (b == NONE)
            break;
        if (kv->ref[b]++ == 0)
            lru_unlink(kv, b);
        t[j] = b;
        keys[j] = prev = key;
    }
    kv->n_alloc[seq] = kv->n_pub[seq] = j;
    kv->len[seq] = j * ENGINE_KV_BLOCK;
    return j * ENGINE_KV_BLOCK;
}

void
engine__kv_publish(struct engine_kv *kv, int seq, uint64_t lora, const int32_t *tok, int n)
{
    int full = (n < kv->len[seq] ? n : kv->len[seq]) / ENGINE_KV_BLOCK;
    const int32_t *t = kv->table + (size_t)seq * kv->max_blocks;
    uint64_t *keys = kv->seq_keys + (size_t)seq * kv->max_blocks;
    for (int j = kv->n_pub[seq]; j < full; j++) {
        const int32_t *bt = tok + j * ENGINE_KV_BLOCK;
        uint64_t key = block_key(j > 0 ? keys[j - 1] : 0, lora, bt);
        keys[j] = key;
        int32_t b = t[j];
        kv->n_pub[seq] = j + 1;
        if (kv->meta[b].published || lookup(kv, key, lora, bt) != NONE)
            continue; /* the same prefix is already published by another block */
        struct engine_kv_meta *m = &kv->meta[b];
        m->key = key;
        m->lora = lora;
        memcpy(m->tok, bt, sizeof(m->tok));
        int32_t *head = &kv->bucket[key & (uint64_t)(kv->n_bucket - 1)];
        m->next_hash = *head;
        *head = b;
        m->published = true;
    }
}

void
engine__kv_usage(const struct engine_kv *kv, int *used, int *cached)
{
    *cached = kv->n_lru;
    *used = kv->n_blocks - kv->n_free - kv->n_lru;
}

/* ---- Tiles ------------------------------------------------------------ */

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
 * not follow: with prefetch, all of them are asked for at once, so their
 * misses overlap instead of coming one tile at a time (worth it in decode;
 * in a prompt's rows the tiles are hot from the row before).
 */
void
engine__kv_tiles(const struct engine_kv *kv, int layer, int seq, int h, int n, bool prefetch,
                 const void **kt, const void **vt)
{
    size_t bytes = (size_t)kv->head_dim * ENGINE_KV_BLOCK * kv->esize;
    for (int j = 0; j < (n + ENGINE_KV_BLOCK - 1) / ENGINE_KV_BLOCK; j++) {
        size_t off = tile(kv, layer, seq, j, h) * kv->esize;
        kt[j] = kv->k + off;
        vt[j] = kv->v + off;
        for (size_t b = 0; prefetch && b < bytes; b += 64) {
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

/*
 * tokenizer_bpe.c - byte-level BPE ("gpt2" vocabularies), as in llama.cpp's
 * llm_tokenizer_bpe_session.
 *
 * The pre-tokenizer splits the text into words; each word's bytes are
 * mapped to printable code points (GPT-2's bytes_to_unicode) and split into
 * one symbol per code point. Adjacent pairs listed in tokenizer.ggml.merges
 * are queued by rank (the merge's line number); the lowest rank, leftmost
 * on ties, merges first, until nothing merges. With ignore_merges, a word
 * that is itself a vocabulary token is taken whole. A final symbol that is
 * not a token falls back to the tokens of its single bytes, if any.
 *
 * Ranks live in a hash table keyed by the (left, right) strings, so looking
 * a pair up costs one hash of its bytes and no allocation.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "gguf.h"
#include "tokenizer_int.h"

/* ---- GPT-2 bytes_to_unicode ---------------------------------------------- */

static size_t
put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Printable Latin-1 bytes stand for themselves; the rest take 256, 257, ... */
static void
init_byte_maps(struct tokenizer *t)
{
    memset(t->byte_dec, 0xff, sizeof(t->byte_dec));
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        uint32_t cp = printable ? (uint32_t)b : next++;
        size_t n = put_utf8(cp, t->byte_enc[b]);
        t->byte_enc[b][n] = '\0';
        t->byte_dec[cp] = (int16_t)b;
    }
}

/*
 * Decodes one code point as llama.cpp's unicode_cpt_from_utf8 does (lenient
 * about overlong forms); an invalid sequence yields U+FFFD and one byte.
 */
static uint32_t
get_cpt(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    size_t n = c < 0x80 ? 1 : c < 0xc0 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf8 ? 4 : 0;
    if (n == 0 || *i + n > len) {
        *i += 1;
        return 0xfffd;
    }
    uint32_t cp = n == 1 ? c : c & (0xff >> (n + 1));
    for (size_t k = 1; k < n; k++) {
        if ((s[*i + k] & 0xc0) != 0x80) {
            *i += 1;
            return 0xfffd;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3f);
    }
    *i += n;
    return cp;
}

size_t
tokenizer__bpe_unmap(const struct tokenizer *t, const char *s, size_t len, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = get_cpt(u, len, &i);
        if (cp < sizeof(t->byte_dec) / sizeof(t->byte_dec[0]) && t->byte_dec[cp] >= 0) {
            if (out)
                out[n] = (char)t->byte_dec[cp];
            n++;
            continue;
        }
        /* llama.cpp's llama_decode_text marks a code point that is no byte so. */
        char enc[4], tmp[32];
        size_t el = put_utf8(cp, enc);
        size_t m = (size_t)snprintf(tmp, sizeof(tmp), "[UNK_BYTE_0x");
        for (size_t k = 0; k < el; k++)
            m += (size_t)snprintf(tmp + m, sizeof(tmp) - m, "%02x", (unsigned char)enc[k]);
        if (out) {
            memcpy(out + n, tmp, m);
            memcpy(out + n + m, s, len);
            out[n + m + len] = ']';
        }
        n += m + len + 1;
    }
    return n;
}

/* ---- Merges --------------------------------------------------------------- */

static uint64_t
pair_hash(const char *l, size_t ln, const char *r, size_t rn)
{
    return XXH3_64bits_withSeed(r, rn, XXH3_64bits(l, ln));
}

static bool
merge_is(const struct tokenizer *t, int32_t rank, const char *l, size_t ln, const char *r,
         size_t rn)
{
    const char *m = t->merges + t->merge_off[rank];
    return t->merge_llen[rank] == ln && t->merge_rlen[rank] == rn && memcmp(m, l, ln) == 0 &&
           memcmp(m + ln + 1, r, rn) == 0;
}

/* The rank of merging l and r, or -1. */
static int32_t
find_rank(const struct tokenizer *t, const char *l, size_t ln, const char *r, size_t rn)
{
    size_t i = pair_hash(l, ln, r, rn) & t->merge_map.mask;
    for (;; i = (i + 1) & t->merge_map.mask) {
        int32_t rank = t->merge_map.slots[i];
        if (rank < 0 || merge_is(t, rank, l, ln, r, rn))
            return rank;
    }
}

/* Adds merge rank unless the same pair came earlier (llama.cpp keeps the first). */
static void
insert_rank(struct tokenizer *t, int32_t rank)
{
    const char *m = t->merges + t->merge_off[rank];
    size_t ln = t->merge_llen[rank], rn = t->merge_rlen[rank];
    size_t i = pair_hash(m, ln, m + ln + 1, rn) & t->merge_map.mask;
    for (;; i = (i + 1) & t->merge_map.mask) {
        int32_t other = t->merge_map.slots[i];
        if (other < 0) {
            t->merge_map.slots[i] = rank;
            return;
        }
        if (merge_is(t, other, m, ln, m + ln + 1, rn))
            return;
    }
}

static int
merges_array(const struct gguf *g, struct gguf_arr *a, char *err, size_t errlen)
{
    int rc = gguf_get_arr(g, "tokenizer.ggml.merges", a);
    if (rc == -ENOENT) {
        tokenizer__err(err, errlen, "tokenizer.ggml.merges: missing (required for 'gpt2')");
        return -EINVAL;
    }
    if (rc != 0 || a->type != GGUF_VT_STRING) {
        tokenizer__err(err, errlen, "tokenizer.ggml.merges: expected an array of strings");
        return -EINVAL;
    }
    if (a->n > INT32_MAX) {
        tokenizer__err(err, errlen, "tokenizer.ggml.merges: %llu entries (at most %d)",
                       (unsigned long long)a->n, INT32_MAX);
        return -EINVAL;
    }
    return 0;
}

/* Checks every merge is "a b" (split at the first space after the first byte). */
static int
check_merges(const struct gguf_arr *a, size_t *total, char *err, size_t errlen)
{
    *total = 0;
    for (uint64_t i = 0; i < a->n; i++) {
        const struct gguf_str *s = &a->strs[i];
        const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
        if (sp == NULL || sp + 1 == s->ptr + s->len || s->len > UINT32_MAX) {
            tokenizer__err(err, errlen,
                           "tokenizer.ggml.merges: merge %llu '%.*s' is not two non-empty "
                           "parts separated by a space",
                           (unsigned long long)i, (int)(s->len > 64 ? 64 : s->len), s->ptr);
            return -EINVAL;
        }
        *total += s->len + 1;
    }
    return 0;
}

static int
load_merges(struct tokenizer *t, const struct gguf_arr *a, size_t total)
{
    size_t n = a->n;
    t->merges = malloc(total ? total : 1);
    t->merge_off = malloc((n ? n : 1) * sizeof(*t->merge_off));
    t->merge_llen = malloc((n ? n : 1) * sizeof(*t->merge_llen));
    t->merge_rlen = malloc((n ? n : 1) * sizeof(*t->merge_rlen));
    if (!t->merges || !t->merge_off || !t->merge_llen || !t->merge_rlen ||
        tokenizer__map_init(&t->merge_map, n) != 0)
        return -ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const struct gguf_str *s = &a->strs[i];
        const char *sp = memchr(s->ptr + 1, ' ', s->len - 1);
        memcpy(t->merges + off, s->ptr, s->len);
        t->merges[off + s->len] = '\0';
        t->merge_off[i] = off;
        t->merge_llen[i] = (uint32_t)(sp - s->ptr);
        t->merge_rlen[i] = (uint32_t)(s->len - t->merge_llen[i] - 1);
        off += s->len + 1;
        t->n_merges = (int32_t)i + 1;
        insert_rank(t, (int32_t)i);
    }
    return 0;
}

int
tokenizer__bpe_load(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    init_byte_maps(t);
    struct gguf_arr a;
    size_t total = 0;
    int rc = merges_array(g, &a, err, errlen);
    if (rc == 0)
        rc = check_merges(&a, &total, err, errlen);
    if (rc == 0)
        rc = load_merges(t, &a, total);
    return rc;
}

/* ---- Encoding ------------------------------------------------------------- */

struct bpe {
    const struct tokenizer *t;
    char *word; /* the current word after byte mapping */
    size_t len, cap;
    struct tok_sym *syms;
    size_t n_syms, cap_syms;
    struct tok_heap heap;
};

static int
map_word(struct bpe *b, const char *s, size_t n)
{
    if (n > (UINT32_MAX - 1) / 2)
        return -ENOMEM; /* symbol offsets are 32-bit */
    if (2 * n > b->cap) {
        char *p = realloc(b->word, 2 * n);
        if (p == NULL)
            return -ENOMEM;
        b->word = p;
        b->cap = 2 * n;
    }
    b->len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = b->t->byte_enc[(unsigned char)s[i]];
        size_t el = e[1] ? 2 : 1;
        memcpy(b->word + b->len, e, el);
        b->len += el;
    }
    return 0;
}

static int
add_bigram(struct bpe *b, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const struct tok_sym *l = &b->syms[left], *r = &b->syms[right];
    int32_t rank = find_rank(b->t, b->word + l->off, l->n, b->word + r->off, r->n);
    if (rank < 0)
        return 0;
    struct tok_bigram bg = {(double)rank, left, right, l->n + r->n};
    return tokenizer__heap_push(&b->heap, bg);
}

static int
merge_word(struct bpe *b)
{
    b->heap.n = 0;
    int rc = tokenizer__syms_init(&b->syms, &b->cap_syms, b->word, b->len, &b->n_syms);
    for (size_t i = 1; i < b->n_syms && rc == 0; i++)
        rc = add_bigram(b, (int32_t)i - 1, (int32_t)i);
    struct tok_bigram bg;
    while (rc == 0 && tokenizer__heap_pop(&b->heap, &bg)) {
        if (!tokenizer__sym_merge(b->syms, &bg))
            continue;
        rc = add_bigram(b, b->syms[bg.left].prev, bg.left);
        if (rc == 0)
            rc = add_bigram(b, bg.left, b->syms[bg.left].next);
    }
    return rc;
}

/* A symbol with no token: the tokens of its single bytes, where they exist. */
static int
emit_symbol(const struct bpe *b, const struct tok_sym *s, struct tok_ids *out)
{
    int32_t id = tokenizer__find(b->t, b->word + s->off, s->n);
    if (id >= 0)
        return tokenizer__push(out, id);
    for (uint32_t j = 0; j < s->n; j++) {
        id = tokenizer__find(b->t, b->word + s->off + j, 1);
        int rc = id >= 0 ? tokenizer__push(out, id) : 0;
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
encode_word(struct bpe *b, const char *s, size_t n, struct tok_ids *out)
{
    int rc = map_word(b, s, n);
    if (rc != 0)
        return rc;
    if (b->t->ignore_merges) {
        int32_t id = tokenizer__find(b->t, b->word, b->len);
        if (id >= 0)
            return tokenizer__push(out, id);
    }
    rc = merge_word(b);
    for (int32_t i = b->n_syms ? 0 : -1; rc == 0 && i != -1; i = b->syms[i].next)
        rc = emit_symbol(b, &b->syms[i], out);
    return rc;
}

int
tokenizer__bpe_encode(const struct tokenizer *t, const char *text, size_t len,
                      struct tok_ids *out)
{
    struct tok_spans words = {0};
    struct bpe b = {.t = t};
    int rc = tokenizer__pre_split(t->pre, text, len, &words);
    for (size_t i = 0; i < words.n && rc == 0; i++)
        rc = encode_word(&b, text + words.v[i].off, words.v[i].len, out);
    free(words.v);
    free(b.word);
    free(b.syms);
    free(b.heap.v);
    return rc;
}

/*
 * tokenizer_spm.c - SentencePiece-style BPE ("llama" vocabularies), as in
 * llama.cpp's llm_tokenizer_spm_session.
 *
 * The fragment (with a leading space if asked) has every space replaced by
 * U+2581 and is split into one symbol per UTF-8 character. Every adjacent
 * pair whose concatenation is a vocabulary token is queued with that token's
 * score; the best pair (leftmost on ties) is merged and its new neighbours
 * are queued, until nothing merges. Each final symbol is then resegmented:
 * a vocabulary token as is, else back through the merges that built it, and
 * a lone character with no token falls back to one <0xNN> token per byte.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_int.h"

/* One performed merge: symbol left (then left_n bytes) absorbed symbol right. */
struct spm_rec {
    int32_t left, right;
    uint32_t left_n, right_n;
    int32_t left_prev;  /* the record that built symbol left before, or -1 */
    int32_t right_last; /* the record that built symbol right, or -1 */
};

struct spm {
    const struct tokenizer *t;
    char *text;
    struct tok_sym *syms;
    size_t n_syms, cap_syms;
    struct tok_heap heap;
    struct spm_rec *rec;
    size_t n_rec, cap_rec;
    int32_t *last; /* (n_syms) the latest record of each symbol, or -1 */
};

static void
spm_release(struct spm *s)
{
    free(s->text);
    free(s->syms);
    free(s->heap.v);
    free(s->rec);
    free(s->last);
}

/* The working text: optional leading space, then spaces as U+2581. */
static int
escape_text(struct spm *s, const char *text, size_t len, bool prefix, size_t *out_len)
{
    if (len > (UINT32_MAX - 3) / 3)
        return -ENOMEM; /* symbol offsets are 32-bit */
    char *p = malloc(3 * len + 3);
    if (p == NULL)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len + prefix; i++) {
        char c = i < prefix ? ' ' : text[i - prefix];
        if (c == ' ') {
            memcpy(p + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            p[n++] = c;
        }
    }
    s->text = p;
    *out_len = n;
    return 0;
}

static int
try_add_bigram(struct spm *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const struct tok_sym *l = &s->syms[left], *r = &s->syms[right];
    int32_t id = tokenizer__find(s->t, s->text + l->off, l->n + r->n);
    if (id < 0)
        return 0;
    struct tok_bigram b = {-(double)s->t->score[id], left, right, l->n + r->n};
    return tokenizer__heap_push(&s->heap, b);
}

static int
record_merge(struct spm *s, const struct tok_bigram *b, uint32_t left_n)
{
    if (s->n_rec == s->cap_rec) {
        size_t cap = s->cap_rec ? 2 * s->cap_rec : 64;
        struct spm_rec *v = realloc(s->rec, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        s->rec = v;
        s->cap_rec = cap;
    }
    s->rec[s->n_rec] = (struct spm_rec){b->left, b->right, left_n, b->size - left_n,
                                        s->last[b->left], s->last[b->right]};
    s->last[b->left] = (int32_t)s->n_rec++;
    return 0;
}

static int
merge_all(struct spm *s)
{
    int rc = 0;
    for (size_t i = 1; i < s->n_syms && rc == 0; i++)
        rc = try_add_bigram(s, (int32_t)i - 1, (int32_t)i);
    struct tok_bigram b;
    while (rc == 0 && tokenizer__heap_pop(&s->heap, &b)) {
        uint32_t left_n = s->syms[b.left].n;
        if (!tokenizer__sym_merge(s->syms, &b))
            continue;
        rc = record_merge(s, &b, left_n);
        if (rc == 0)
            rc = try_add_bigram(s, s->syms[b.left].prev, b.left);
        if (rc == 0)
            rc = try_add_bigram(s, b.left, s->syms[b.left].next);
    }
    return rc;
}

/* Emits bytes [off, off + n) of the working text, built by record rec (-1: none). */
static int
resegment(struct spm *s, uint32_t off, uint32_t n, int32_t rec, struct tok_ids *out)
{
    int32_t id = tokenizer__find(s->t, s->text + off, n);
    if (id >= 0)
        return tokenizer__push(out, id);
    if (rec < 0) {
        for (uint32_t j = 0; j < n; j++) {
            int32_t b = s->t->byte_token[(unsigned char)s->text[off + j]];
            int rc = b >= 0 ? tokenizer__push(out, b) : 0;
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    const struct spm_rec r = s->rec[rec];
    int rc = resegment(s, off, r.left_n, r.left_prev, out);
    return rc ? rc : resegment(s, off + r.left_n, r.right_n, r.right_last, out);
}

int
tokenizer__spm_encode(const struct tokenizer *t, const char *text, size_t len, bool prefix,
                      struct tok_ids *out)
{
    struct spm s = {.t = t};
    size_t n = 0;
    int rc = escape_text(&s, text, len, prefix, &n);
    if (rc == 0)
        rc = tokenizer__syms_init(&s.syms, &s.cap_syms, s.text, n, &s.n_syms);
    if (rc == 0 && s.n_syms > 0) {
        s.last = malloc(s.n_syms * sizeof(*s.last));
        rc = s.last ? 0 : -ENOMEM;
    }
    if (rc == 0 && s.n_syms > 0) {
        memset(s.last, 0xff, s.n_syms * sizeof(*s.last));
        rc = merge_all(&s);
    }
    for (int32_t i = s.n_syms ? 0 : -1; rc == 0 && i != -1; i = s.syms[i].next)
        rc = resegment(&s, s.syms[i].off, s.syms[i].n, s.last[i], out);
    spm_release(&s);
    return rc;
}

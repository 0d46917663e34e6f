/*
 * tokenizer_sym.c - the machinery both merge loops share: a doubly linked
 * list of symbols over a working text, and a binary heap of candidate
 * bigrams ordered by key (lowest first) and then by left index (leftmost
 * first), which is how llama.cpp's priority queues break ties.
 *
 * A bigram goes stale when either symbol changes after it was queued; it is
 * recognised at pop time because the sizes no longer add up (a symbol only
 * grows by absorbing its right neighbour, so equal sizes mean equal text).
 */
#include <errno.h>
#include <stdlib.h>

#include "tokenizer_int.h"

static size_t
utf8_len(unsigned char c)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

int
tokenizer__syms_init(struct tok_sym **syms, size_t *cap, const char *text, size_t len,
                     size_t *n)
{
    if (len > *cap) {
        struct tok_sym *p = realloc(*syms, len * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        *syms = p;
        *cap = len;
    }
    size_t count = 0;
    for (size_t off = 0; off < len;) {
        size_t cl = utf8_len((unsigned char)text[off]);
        if (cl > len - off)
            cl = len - off;
        struct tok_sym *s = &(*syms)[count];
        s->prev = (int32_t)count - 1;
        s->off = (uint32_t)off;
        s->n = (uint32_t)cl;
        off += cl;
        s->next = off == len ? -1 : (int32_t)count + 1;
        count++;
    }
    *n = count;
    return 0;
}

static bool
before(const struct tok_bigram *a, const struct tok_bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

int
tokenizer__heap_push(struct tok_heap *h, struct tok_bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct tok_bigram *v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&b, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = b;
    return 0;
}

bool
tokenizer__heap_pop(struct tok_heap *h, struct tok_bigram *b)
{
    if (h->n == 0)
        return false;
    *b = h->v[0];
    struct tok_bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0)
        h->v[i] = last;
    return true;
}

bool
tokenizer__sym_merge(struct tok_sym *syms, const struct tok_bigram *b)
{
    struct tok_sym *l = &syms[b->left], *r = &syms[b->right];
    if (l->n == 0 || r->n == 0 || l->n + r->n != b->size)
        return false;
    l->n += r->n;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0)
        syms[r->next].prev = b->left;
    return true;
}

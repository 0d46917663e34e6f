/*
 * chunk.c - a document cut into overlapping windows of tokens, each with its
 * embedding.
 *
 * The served model's tokenizer counts the tokens (so a chunk's size is what
 * it costs in a prompt); each window is decoded back to text. Windows start
 * every size - overlap tokens; the last one ends at the document's end, so a
 * short tail is never a chunk of its own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval_int.h"
#include "tokenizer.h"

void
retrieval__chunks_free(struct vs_chunk *c, int n)
{
    for (int i = 0; c != NULL && i < n; i++) {
        free(c[i].text);
        free(c[i].vec);
    }
    free(c);
}

/* Window [a, b) of ids as text, embedded. */
static int
make_chunk(const struct tokenizer *tok, const struct retrieval_embedder *e, const int32_t *ids,
           size_t a, size_t b, struct vs_chunk *c)
{
    int len = tokenizer_decode(tok, ids + a, b - a, false, true, NULL, 0);
    if (len < 0)
        return len;
    c->text = malloc((size_t)len + 1);
    c->vec = malloc((size_t)retrieval_embedder_dim(e) * sizeof(float));
    if (c->text == NULL || c->vec == NULL)
        return -ENOMEM;
    tokenizer_decode(tok, ids + a, b - a, false, true, c->text, (size_t)len);
    c->text[len] = '\0';
    c->len = (size_t)len;
    return retrieval_embed(e, c->text, c->len, c->vec, NULL);
}

int
retrieval__chunk(const struct tokenizer *tok, const struct retrieval_embedder *e,
                 const char *text, size_t len, int size, int overlap, struct vs_chunk **out,
                 int *n)
{
    *out = NULL;
    *n = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = tokenizer_encode(tok, text, len, false, false, &ids, &n_ids);
    if (rc < 0)
        return rc == -EINVAL ? -EILSEQ : rc;
    size_t step = (size_t)(size - overlap), count = 0;
    for (size_t a = 0; a < n_ids; a += step) {
        count++;
        if (a + (size_t)size >= n_ids)
            break;
    }
    struct vs_chunk *c = count ? calloc(count, sizeof(*c)) : NULL;
    if (count == 0 || c == NULL) {
        free(ids);
        return count == 0 ? -EINVAL : -ENOMEM;
    }
    size_t a = 0;
    for (size_t i = 0; i < count && rc == 0; i++, a += step) {
        size_t b = a + (size_t)size < n_ids && i + 1 < count ? a + (size_t)size : n_ids;
        rc = make_chunk(tok, e, ids, a, b, &c[i]);
    }
    free(ids);
    if (rc < 0) {
        retrieval__chunks_free(c, (int)count);
        return rc;
    }
    *out = c;
    *n = (int)count;
    return 0;
}

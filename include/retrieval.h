/*
 * retrieval.h - turning text into vectors (embedders), for /v1/embeddings
 * and the vector stores.
 *
 * An embedder maps UTF-8 text to an L2-normalised vector of a fixed
 * dimension. It is immutable once made, so any thread may embed with it at
 * once; embedding may take a while on long texts: call it off the loop and
 * scheduler threads.
 *
 * The hash embedder needs no model: the text is normalised (NFKC, case
 * folded, accents stripped: utf8proc), split into words (Unicode letters and
 * digits), and common English function words are set aside when anything
 * else is left; each remaining word, each pair of neighbouring words and each
 * character trigram of a word (with ^ and $ at its ends) is hashed (XXH3)
 * to a dimension and a sign (feature hashing), the counts are damped by a
 * square root and the vector normalised. Texts sharing distinctive words
 * share features, so a question lands near the passage that holds its key
 * words; nothing is learned, so synonyms do not.
 */
#ifndef LORASERVE_RETRIEVAL_H
#define LORASERVE_RETRIEVAL_H

#include <stddef.h>

#define RETRIEVAL_HASH_DIM 384      /* the hash embedder's default dimension */
#define RETRIEVAL_DIM_MAX 8192

struct retrieval_embedder;

/*
 * A hash embedder of dim dimensions (1..RETRIEVAL_DIM_MAX). Returns 0 with
 * the caller owning *out (release with retrieval_embedder_free), -EINVAL for
 * a dimension out of range, -ENOMEM.
 */
int retrieval_hash_new(int dim, struct retrieval_embedder **out);
void retrieval_embedder_free(struct retrieval_embedder *e);        /* accepts NULL */

int retrieval_embedder_dim(const struct retrieval_embedder *e);
/* "hash" */
const char *retrieval_embedder_kind(const struct retrieval_embedder *e);

/*
 * Embeds text[0..n) into out[0..dim): 0, -EILSEQ (not valid UTF-8), -ENOMEM.
 * *n_tokens (if not NULL) gets the number of words the text has: what
 * /v1/embeddings counts as its usage. A text with no words embeds as zeros.
 */
int retrieval_embed(const struct retrieval_embedder *e, const char *text, size_t n, float *out,
                    int *n_tokens);

#endif

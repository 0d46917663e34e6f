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

/*
 * An embedder made of a function: fn(arg, text, n, out, n_tokens) fills
 * out[0..dim) (length 1) as retrieval_embed does, and may block (the served
 * model's embedder waits for the scheduler). kind is its name (at most 63
 * bytes), what vector stores record. 0, -EINVAL, -ENOMEM.
 */
typedef int (*retrieval_embed_fn)(void *arg, const char *text, size_t n, float *out,
                                  int *n_tokens);
int retrieval_fn_new(const char *kind, int dim, retrieval_embed_fn fn, void *arg,
                     struct retrieval_embedder **out);

int retrieval_embedder_dim(const struct retrieval_embedder *e);
/* "hash", or the kind a function embedder was given */
const char *retrieval_embedder_kind(const struct retrieval_embedder *e);

/*
 * Embeds text[0..n) into out[0..dim): 0, -EILSEQ (not valid UTF-8), -ENOMEM.
 * *n_tokens (if not NULL) gets the number of words the text has: what
 * /v1/embeddings counts as its usage. A text with no words embeds as zeros.
 */
int retrieval_embed(const struct retrieval_embedder *e, const char *text, size_t n, float *out,
                    int *n_tokens);

/* ---- Vector stores ----------------------------------------------------- */

/*
 * Vector stores live in SQLite (WAL; the server's loraserve.db): stores,
 * documents (text and a metadata JSON object), their chunks (windows of
 * chunk_tokens tokens of the served model's tokenizer, overlapping by
 * chunk_overlap) with each chunk's embedding as a BLOB, and an FTS5 index of
 * the chunk text for keyword (BM25) search. Every change is one transaction.
 * Each store's vectors are also kept in memory, contiguous, rebuilt at open
 * and changed with every write; vector search is an exact scan of them.
 * All functions may be called from any thread (a lock inside orders them;
 * embedding and chunking happen outside it); they block on SQLite, so call
 * them off the loop and scheduler threads.
 */
struct tokenizer;
struct retrieval_stores;

#define RETRIEVAL_ID_MAX 64         /* bytes of a store or document id, NUL included */

struct retrieval_store_info {
    char id[RETRIEVAL_ID_MAX];      /* "vs_" and 24 hex digits */
    char *name;                     /* malloc'd */
    char *metadata;                 /* a JSON object's text, malloc'd */
    char *template;                 /* the context template, malloc'd, or NULL */
    char embedder[64];              /* the kind of embedder its vectors come from */
    char owner[RETRIEVAL_ID_MAX];   /* the tenant it belongs to; "" the admin's, shared */
    long long created_at;           /* Unix seconds */
    long long usage_bytes;          /* document text and embeddings */
    long long n_documents, n_chunks;
    int chunk_tokens, chunk_overlap, dim;
};
void retrieval_store_info_release(struct retrieval_store_info *info);

/*
 * Opens (creating them if needed) the stores in the SQLite file path (NULL:
 * in memory), chunking with tok and embedding with e (both must outlive the
 * stores). 0, or a negative errno with one line in err.
 */
int retrieval_stores_open(const char *path, const struct tokenizer *tok,
                          const struct retrieval_embedder *e, struct retrieval_stores **out,
                          char *err, size_t errlen);
void retrieval_stores_close(struct retrieval_stores *st);       /* accepts NULL */
/*
 * Another embedder a store may be made with (by its kind; e outlives the
 * stores); call before using the stores. 0, -EINVAL (its kind is known), -ENOSPC.
 */
int retrieval_stores_add_embedder(struct retrieval_stores *st,
                                  const struct retrieval_embedder *e);

/*
 * A new store of owner (NULL or "": the admin's, shared by every tenant;
 * recorded, not enforced here): name may be NULL, metadata a JSON object's text or NULL,
 * embedder NULL (the stores' first) or the kind of one they have (else
 * -ENOENT),
 * template NULL or the text a request's context is rendered into, with
 * "{chunks}" where the numbered chunks go (at most RETRIEVAL_TEMPLATE_MAX
 * bytes); chunk_tokens >= 1 and 0 <= chunk_overlap < chunk_tokens (0, 0:
 * OpenAI's 800 and 400). 0 with *out filled, -EINVAL, -EIO (err says why).
 */
#define RETRIEVAL_TEMPLATE_MAX 4096
int retrieval_store_create(struct retrieval_stores *st, const char *owner, const char *name,
                           const char *metadata, const char *template, const char *embedder,
                           int chunk_tokens, int chunk_overlap, struct retrieval_store_info *out,
                           char *err, size_t errlen);
/* Store id's owner (RETRIEVAL_ID_MAX bytes; "" shared), from memory: 0 or -ENOENT. */
int retrieval_store_owner(struct retrieval_stores *st, const char *id, char *owner);
/* 0 with *out, or -ENOENT. */
int retrieval_store_get(struct retrieval_stores *st, const char *id,
                        struct retrieval_store_info *out);
/* Store id's context template (malloc'd, NULL if it has none), from memory: 0, -ENOENT, -ENOMEM. */
int retrieval_store_template(struct retrieval_stores *st, const char *id, char **out);
/* Every store, oldest first: 0 with *out (n entries, release each, then free()). */
int retrieval_store_list(struct retrieval_stores *st, struct retrieval_store_info **out, int *n);
/* 0, -ENOENT, -EIO. */
int retrieval_store_delete(struct retrieval_stores *st, const char *id);

/* One document to add: id NULL for a made one ("doc_" and 24 hex digits). */
struct retrieval_doc {
    const char *id;
    const char *text;
    size_t len;
    const char *metadata;           /* a JSON object's text, or NULL */
};
struct retrieval_doc_added {
    char id[RETRIEVAL_ID_MAX];
    int n_chunks;
};
/*
 * Adds docs[0..n) to store id in one transaction (all or none): each is
 * chunked and embedded first, outside the lock. A document whose id is
 * already in the store is replaced. out[i] says what became of docs[i].
 * 0, -ENOENT (no store), -EINVAL (an empty text, a bad id; err names it),
 * -EILSEQ (not UTF-8), -ENOMEM, -EIO.
 */
int retrieval_store_add(struct retrieval_stores *st, const char *id,
                        const struct retrieval_doc *docs, int n, struct retrieval_doc_added *out,
                        char *err, size_t errlen);

struct retrieval_doc_info {
    char id[RETRIEVAL_ID_MAX];
    char *metadata;                 /* malloc'd */
    long long created_at, bytes;
    int n_chunks;
};
/* The documents of store id, oldest first (release each metadata, then free()). */
int retrieval_docs_list(struct retrieval_stores *st, const char *id,
                        struct retrieval_doc_info **out, int *n);
/* 0, -ENOENT (no such store or document), -EIO. */
int retrieval_doc_delete(struct retrieval_stores *st, const char *id, const char *doc_id);

enum retrieval_mode { RETRIEVAL_VECTOR, RETRIEVAL_KEYWORD, RETRIEVAL_HYBRID };

struct retrieval_query {
    const char *text;               /* the question (embedded unless vector is set) */
    const float *vector;            /* or a query vector of the store's dimension, */
    int dim;                        /* its length */
    int k;                          /* results wanted, 1..50 */
    enum retrieval_mode mode;
    float threshold;                /* drop hits scoring below (0: keep all) */
    const char *filter;             /* OpenAI's filter object as JSON text, or NULL */
};
struct retrieval_hit {
    long long chunk;                /* the chunk's id */
    char document[RETRIEVAL_ID_MAX];
    int seq;                        /* the chunk's place in its document */
    float score;                    /* cosine (vector), 1/(60 + rank) sums (hybrid), BM25 */
    char *text;                     /* malloc'd */
    char *metadata;                 /* the document's, malloc'd */
};
/*
 * The best hits of store id for q, best first: 0 with *out (n entries,
 * release with retrieval_hits_free), -ENOENT, -EINVAL (a bad filter, a
 * vector of another dimension; err says why), -EIO.
 */
int retrieval_search(struct retrieval_stores *st, const char *id,
                     const struct retrieval_query *q, struct retrieval_hit **out, int *n,
                     char *err, size_t errlen);
void retrieval_hits_free(struct retrieval_hit *hits, int n);

#endif

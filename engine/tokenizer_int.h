/*
 * tokenizer_int.h - the inside of struct tokenizer, shared by tokenizer*.c.
 *
 * tokenizer.c loads the vocabulary (texts, scores, attributes, special ids,
 * the piece cache) and drives encoding: special-token partition, BOS/EOS.
 * tokenizer_spm.c, tokenizer_bpe.c and tokenizer_wpm.c turn one plain-text
 * fragment into ids; tokenizer_pre.c holds the byte-level pre-tokenizer
 * regexes (PCRE2) and tokenizer_sym.c the symbol list and priority queue
 * both merge loops use.
 * Everything here is immutable after tokenizer_new(); per-call state lives
 * in the caller's stack frame or in buffers freed before returning.
 */
#ifndef LORASERVE_TOKENIZER_INT_H
#define LORASERVE_TOKENIZER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine_int.h"
#include "tokenizer.h"

struct gguf;

enum tok_kind {
    TOK_SPM, /* "llama": SentencePiece-style merges by score */
    TOK_BPE, /* "gpt2": byte-level BPE merges by rank */
    TOK_WPM  /* "bert": WordPiece, greedy longest match */
};

/* llama.cpp's token attributes (llama_token_attr), a bit set per token. */
enum {
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_LSTRIP = 1 << 7,
    TOK_ATTR_RSTRIP = 1 << 8
};

/*
 * An open-addressing hash table of int32 values keyed by byte strings that
 * the owner stores elsewhere; the owner supplies hashing and comparison.
 * slots[i] is -1 when empty. The load factor stays at or below 1/2.
 */
struct tok_map {
    int32_t *slots;
    size_t mask;
};

/* A growable array of token ids (the output of encoding). */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};

/* Byte ranges [off, off + len) of a text: fragments or pre-tokenized words. */
struct tok_span {
    size_t off, len;
};

struct tok_spans {
    struct tok_span *v;
    size_t n, cap;
};

struct tok_pre; /* a compiled pre-tokenizer (tokenizer_pre.c) */

struct tokenizer {
    enum tok_kind kind;
    char *pre_name;            /* "default" when the key is absent (and for "llama") */
    int32_t n_vocab;

    char *text;                /* every token text, each NUL-terminated */
    size_t *text_off;          /* (n_vocab) */
    uint32_t *text_len;        /* (n_vocab) */
    float *score;              /* (n_vocab) */
    uint32_t *attr;            /* (n_vocab) TOK_ATTR_* bits, after llama.cpp's fix-ups */
    struct tok_map vocab;      /* text -> id */

    char *piece;               /* token_to_piece(id, special = true) of every id */
    size_t *piece_off;         /* (n_vocab) */
    uint32_t *piece_len;       /* (n_vocab) */

    int32_t *special;          /* control/user-defined/unknown ids, longest text first */
    size_t n_special;
    uint8_t *eog;              /* (n_vocab) 1 if the id ends generation */

    int32_t bos, eos, eot, eom, unk, sep, pad, mask;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix;
    uint32_t max_token_len;    /* the longest token text, in bytes */

    /* SPM: the id for each byte in byte fallback (-1: emit nothing). */
    int32_t byte_token[256];

    /* BPE */
    char *merges;              /* "a b" texts, each NUL-terminated */
    size_t *merge_off;         /* (n_merges) */
    uint32_t *merge_llen;      /* (n_merges) length of "a" */
    uint32_t *merge_rlen;      /* (n_merges) length of "b" */
    int32_t n_merges;
    struct tok_map merge_map;  /* (a, b) -> rank, first occurrence wins */
    struct tok_pre *pre;
    bool ignore_merges;
    char byte_enc[256][3];     /* GPT-2 bytes_to_unicode, as UTF-8 (1 or 2 bytes + NUL) */
    int16_t byte_dec[0x144];   /* code point -> byte, -1 if not a byte mark */

    /* WPM: tokenizer.ggml.normalizer.lowercase and .strip_accents */
    bool wpm_lowercase, wpm_strip_accents;
};

/* ---- tokenizer.c ------------------------------------------------------- */

/* The id of the token whose text is s[0..n), or -1. */
int32_t tokenizer__find(const struct tokenizer *t, const char *s, size_t n);
/* Appends id; -ENOMEM on allocation failure. */
int tokenizer__push(struct tok_ids *out, int32_t id);
int tokenizer__span_push(struct tok_spans *s, size_t off, size_t len);
/* One-line error messages: engine__err (engine_int.h). */
#define tokenizer__err engine__err

/* Hash tables: create for n entries, free. -ENOMEM on failure. */
int tokenizer__map_init(struct tok_map *m, size_t n);
void tokenizer__map_release(struct tok_map *m);
uint64_t tokenizer__hash(const void *s, size_t n);

/* ---- tokenizer_special.c ----------------------------------------------- */

/* A piece of the text to encode: plain text [off, off + len), or token id. */
struct tok_frag {
    size_t off, len;
    int32_t id; /* -1 for text */
};

struct tok_frags {
    struct tok_frag *v;
    size_t n, cap;
};

/*
 * After the vocabulary and the special ids are loaded: finds EOT/EOM/FIM
 * tokens by text, fixes their attributes, builds the EOG set and the list of
 * special tokens to match in text. g gives general.name and friends for the
 * per-model lstrip/rstrip rules. Returns 0 or -ENOMEM.
 */
int tokenizer__special_init(struct tokenizer *t, const struct gguf *g);
/*
 * Splits text[0..len) at the special tokens it contains, as llama.cpp's
 * tokenizer_st_partition: longest tokens first, every occurrence, left to
 * right. Without parse_special only user-defined tokens are matched.
 * Appends to out; returns 0 or -ENOMEM.
 */
int tokenizer__partition(const struct tokenizer *t, const char *text, size_t len,
                         bool parse_special, struct tok_frags *out);

/* ---- tokenizer_codec.c ------------------------------------------------- */

/* Builds the piece cache (token_to_piece with special = true). 0 or -ENOMEM. */
int tokenizer__pieces_init(struct tokenizer *t);

/* ---- tokenizer_spm.c --------------------------------------------------- */

/*
 * Appends the SentencePiece-style tokens of text[0..len) to out. prefix
 * puts a space before the text (add_space_prefix at the start of the text
 * or after a special token). Returns 0 or -ENOMEM.
 */
int tokenizer__spm_encode(const struct tokenizer *t, const char *text, size_t len, bool prefix,
                          struct tok_ids *out);

/* ---- tokenizer_bpe.c --------------------------------------------------- */

/* Reads and checks tokenizer.ggml.merges, fills the byte maps. -EINVAL/-ENOMEM. */
int tokenizer__bpe_load(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen);
/* Appends the byte-level BPE tokens of text[0..len). 0, -ENOMEM or -EINVAL. */
int tokenizer__bpe_encode(const struct tokenizer *t, const char *text, size_t len,
                          struct tok_ids *out);
/*
 * Writes the bytes a byte-level token text s[0..len) stands for (llama.cpp's
 * llama_decode_text) to out, or only measures them if out is NULL. Returns
 * the length.
 */
size_t tokenizer__bpe_unmap(const struct tokenizer *t, const char *s, size_t len, char *out);

/* ---- tokenizer_wpm.c --------------------------------------------------- */

/*
 * Appends the WordPiece tokens of text[0..len) (valid UTF-8) to out, as
 * llama.cpp's llm_tokenizer_wpm_session: normalise and split into words one
 * code point at a time, then match each U+2581 + word greedily, longest
 * first; a word with any unmatched position becomes one unk. 0 or -ENOMEM.
 */
int tokenizer__wpm_encode(const struct tokenizer *t, const char *text, size_t len,
                          struct tok_ids *out);

/* ---- tokenizer_pre.c --------------------------------------------------- */

/* Pre-tokenizer options that llama.cpp ties to the pre-tokenizer name. */
enum {
    TOK_PRE_IGNORE_MERGES = 1 << 0, /* a whole word in the vocabulary is one token */
    TOK_PRE_ADD_BOS = 1 << 1,       /* add_bos defaults to true */
    TOK_PRE_NO_BOS = 1 << 2         /* the default BOS id is unset */
};

/*
 * Compiles the regexes of the pre-tokenizer named name. Returns 0, -EINVAL
 * ("unknown pre-tokenizer 'X'") or -ENOMEM. Caller owns *out; release with
 * tokenizer__pre_free().
 */
int tokenizer__pre_new(const char *name, struct tok_pre **out, char *err, size_t errlen);
void tokenizer__pre_free(struct tok_pre *p);
unsigned tokenizer__pre_flags(const struct tok_pre *p);
/*
 * Splits text[0..len) into words, applying each regex in turn to the pieces
 * the previous one left (matches and the gaps between them both become
 * pieces). Appends to words. Returns 0, -ENOMEM or -EINVAL (regex failure).
 */
int tokenizer__pre_split(const struct tok_pre *p, const char *text, size_t len,
                         struct tok_spans *words);

/* ---- tokenizer_sym.c --------------------------------------------------- */

/* A symbol of a merge loop: bytes [off, off + n) of the working text. */
struct tok_sym {
    int32_t prev, next;
    uint32_t off, n;
};

/* A candidate merge of symbols left and right; lowest key first, then leftmost. */
struct tok_bigram {
    double key;
    int32_t left, right;
    uint32_t size;
};

struct tok_heap {
    struct tok_bigram *v;
    size_t n, cap;
};

/*
 * Splits text[0..len) (valid UTF-8) into one symbol per character, replacing
 * syms (whose buffer is reused). Returns 0 or -ENOMEM.
 */
int tokenizer__syms_init(struct tok_sym **syms, size_t *cap, const char *text, size_t len,
                         size_t *n);
int tokenizer__heap_push(struct tok_heap *h, struct tok_bigram b);
/* Removes the first bigram into *b; false if the heap is empty. */
bool tokenizer__heap_pop(struct tok_heap *h, struct tok_bigram *b);
/* Merges symbol b.right into b.left if the bigram is still current. */
bool tokenizer__sym_merge(struct tok_sym *syms, const struct tok_bigram *b);

#endif

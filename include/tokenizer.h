/*
 * tokenizer.h - text <-> token ids, built from a GGUF file's tokenizer.* metadata.
 *
 * Three kinds, as llama.cpp implements them:
 *   - "llama": SentencePiece-style BPE over the vocabulary scores, U+2581 for
 *     spaces, optional leading space, <0xNN> byte fallback;
 *   - "gpt2": byte-level BPE with ranked merges, after a pre-tokenizer chosen
 *     by tokenizer.ggml.pre and run with PCRE2 (UTF + UCP);
 *   - "bert": WordPiece (BERT-style embedding models): lowercase, strip
 *     accents, split at spaces and punctuation, then greedy longest match of
 *     U+2581 + word; a word that cannot be matched becomes [UNK].
 * Special (control / user-defined) tokens are recognised in text only when
 * asked to. A struct tokenizer copies what it needs from the GGUF metadata and
 * is immutable after tokenizer_new(): every function may be called from any
 * thread at once.
 */
#ifndef LORASERVE_TOKENIZER_H
#define LORASERVE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct tokenizer;

/* Token attributes, from tokenizer.ggml.token_type (llama.cpp's numbering). */
enum tokenizer_ttype {
    TOKENIZER_UNDEFINED = 0,
    TOKENIZER_NORMAL = 1,
    TOKENIZER_UNKNOWN = 2,
    TOKENIZER_CONTROL = 3,
    TOKENIZER_USER_DEFINED = 4,
    TOKENIZER_UNUSED = 5,
    TOKENIZER_BYTE = 6
};

/*
 * Builds the tokenizer described by g's metadata. g may be freed afterwards.
 * Returns 0, -EINVAL (unknown model or pre-tokenizer, missing or malformed
 * metadata, e.g. a bad "<0x..>" byte token) or -ENOMEM, with a one-line
 * message in err. The caller owns *out; release with tokenizer_free().
 * Stricter than llama.cpp, which warns and goes on: a special token id out
 * of range (-1 or 0xFFFFFFFF mean "none"), a scores/token_type array whose
 * length differs from the token count, a duplicate token, a merge that is
 * not "a b", or a "bert" vocabulary without a BOS ([CLS]), separator or
 * unknown id (llama.cpp would fail only when encoding) are errors.
 */
int tokenizer_new(const struct gguf *g, struct tokenizer **out, char *err, size_t errlen);
void tokenizer_free(struct tokenizer *t); /* accepts NULL */

/*
 * Encodes text[0..len). add_special adds BOS (and EOS) where the vocabulary
 * says so (tokenizer.ggml.add_bos_token / add_eos_token); for "bert" it
 * always puts [CLS] (the BOS id) first and [SEP] last, as llama.cpp does,
 * whatever those flags say. parse_special turns the text of control and
 * user-defined tokens into those tokens.
 * As in llama.cpp, user-defined tokens are split out even without
 * parse_special, and for "llama" a leading space goes before the text and
 * before text that follows a special token (when add_space_prefix).
 * Returns 0 and a malloc'd array the caller frees with free() (not NULL even
 * when empty), or -ENOMEM, or -EINVAL if text is not valid UTF-8 (or, in
 * theory, if PCRE2 gives up on a pre-tokenizer regex).
 */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
                     bool add_special, bool parse_special, int32_t **ids, size_t *n_ids);

/*
 * Writes the bytes that token id stands for into buf (no NUL): spaces for
 * U+2581 or byte-level marks, the raw byte of <0xNN>. Control tokens give ""
 * unless special is true. Returns the number of bytes (which may exceed len:
 * then nothing is written) or -EINVAL for an id out of range.
 * The bytes of one token may be part of a UTF-8 character only; see
 * tokenizer_utf8_complete().
 */
int tokenizer_piece(const struct tokenizer *t, int32_t id, bool special, char *buf, size_t len);

/*
 * Decodes ids into buf as llama.cpp's detokenizer does (for "llama", the
 * leading space of the first piece is dropped if the vocabulary adds one and
 * remove_leading_space is set; a BOS first takes that strip, printing
 * nothing). The result is the pieces joined: llama.cpp's clean_spaces pass
 * for some BPE vocabularies (" ?" -> "?") is not applied. Returns the length
 * (may exceed len: then buf holds a prefix; buf may be NULL if len is 0), or
 * -EINVAL for an id out of range.
 */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool special,
                     bool remove_leading_space, char *buf, size_t len);

/*
 * For streaming: the length of the longest prefix of buf[0..len) that does
 * not end inside an incomplete UTF-8 sequence. Bytes after it should be held
 * back until the next token arrives (or flushed at the end).
 */
size_t tokenizer_utf8_complete(const char *buf, size_t len);

int32_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const struct tokenizer *t); /* -1 if none */
bool tokenizer_add_bos(const struct tokenizer *t);
/* End of generation: EOS, EOT, <|im_end|> and the like. */
bool tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* The vocabulary string of id, NUL-terminated; NULL if out of range. */
const char *tokenizer_token_text(const struct tokenizer *t, int32_t id);
enum tokenizer_ttype tokenizer_token_type(const struct tokenizer *t, int32_t id);
/* "llama", "gpt2" or "bert", and the pre-tokenizer name ("default" unless "gpt2"). */
const char *tokenizer_model_name(const struct tokenizer *t);
const char *tokenizer_pre_name(const struct tokenizer *t);

#endif

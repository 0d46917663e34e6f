/*
 * tokenizer_codec.c - text to ids and back: the encode driver (UTF-8 check,
 * special-token partition, BOS/EOS or WordPiece's CLS/SEP, one fragment at a
 * time), the piece cache and decoding, as llama.cpp's tokenize(),
 * token_to_piece() and detokenize().
 *
 * Every token's piece with special = true is computed once at load, so
 * decoding is a copy: SPM and WordPiece text with U+2581 as a space (a bare
 * WordPiece continuation piece stays bare), <0xNN> as its byte,
 * byte-level BPE marks back to bytes, control/user-defined text verbatim.
 * Decoding does not apply llama.cpp's clean_spaces pass (" ?" -> "?" and the
 * like for some BPE vocabularies): the output is the pieces joined, which is
 * what a streamed completion shows and what round-trips a prompt.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_int.h"

/* ---- Piece cache ------------------------------------------------------------- */

static const uint32_t attr_special = TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL;

/* Writes the piece of id to out (if not NULL); returns its length. */
static size_t
make_piece(const struct tokenizer *t, int32_t id, char *out)
{
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    uint32_t a = t->attr[id];
    if (a & (attr_special | TOK_ATTR_USER_DEFINED)) {
        if (out)
            memcpy(out, s, n);
        return n;
    }
    if ((a & TOK_ATTR_NORMAL) && t->kind == TOK_BPE)
        return tokenizer__bpe_unmap(t, s, n, out);
    if (a & TOK_ATTR_NORMAL) { /* SPM and WPM: U+2581 is a space */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            bool sp = i + 2 < n && memcmp(s + i, "\xe2\x96\x81", 3) == 0;
            if (out)
                out[m] = sp ? ' ' : s[i];
            m++;
            i += sp ? 2 : 0;
        }
        return m;
    }
    if ((a & TOK_ATTR_BYTE) && n == 6 && memcmp(s, "<0x", 3) == 0) {
        if (out)
            out[0] = (char)strtol((char[3]){s[3], s[4], '\0'}, NULL, 16);
        return 1;
    }
    return 0; /* unused and undefined tokens print as nothing */
}

int
tokenizer__pieces_init(struct tokenizer *t)
{
    size_t n = (size_t)t->n_vocab, total = 0;
    t->piece_off = malloc(n * sizeof(*t->piece_off));
    t->piece_len = malloc(n * sizeof(*t->piece_len));
    if (t->piece_off == NULL || t->piece_len == NULL)
        return -ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t len = make_piece(t, i, NULL);
        if (len > INT32_MAX || total > SIZE_MAX - len)
            return -ENOMEM;
        t->piece_off[i] = total;
        t->piece_len[i] = (uint32_t)len;
        total += len;
    }
    t->piece = malloc(total ? total : 1);
    if (t->piece == NULL)
        return -ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++)
        make_piece(t, i, t->piece + t->piece_off[i]);
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 (strict: no overlongs, surrogates). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

static bool
utf8_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t
tokenizer_utf8_complete(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t back = 0;
    while (back < 3 && back < len && (s[len - 1 - back] & 0xc0) == 0x80)
        back++;
    if (back == len)
        return len; /* only continuation bytes: nothing to wait for */
    size_t lead = len - 1 - back;
    unsigned char c = s[lead];
    size_t need = c >= 0xf0 && c <= 0xf7 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (c >= 0xf8)
        need = 1; /* not a lead byte: hold nothing back */
    return need > back + 1 ? lead : len;
}

/* ---- Encoding ---------------------------------------------------------------- */

static int
encode_fragments(const struct tokenizer *t, const char *text, const struct tok_frags *f,
                 struct tok_ids *out)
{
    bool prev_special = true; /* the text's start counts as after a special token */
    int rc = 0;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        const struct tok_frag *fr = &f->v[i];
        if (fr->id >= 0) {
            rc = tokenizer__push(out, fr->id);
            prev_special = true;
        } else if (t->kind == TOK_SPM) {
            bool prefix = t->add_space_prefix && prev_special;
            rc = tokenizer__spm_encode(t, text + fr->off, fr->len, prefix, out);
            prev_special = false;
        } else if (t->kind == TOK_WPM) {
            rc = tokenizer__wpm_encode(t, text + fr->off, fr->len, out);
        } else {
            rc = tokenizer__bpe_encode(t, text + fr->off, fr->len, out);
        }
    }
    return rc;
}

/* The id add_special puts last, or -1: WordPiece always ends with [SEP], as in llama.cpp. */
static int32_t
last_special(const struct tokenizer *t)
{
    if (t->kind == TOK_WPM)
        return t->sep;
    return t->add_eos ? t->eos : -1;
}

int
tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special,
                 bool parse_special, int32_t **ids, size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (len > 0 && !utf8_valid(text, len))
        return -EINVAL;
    struct tok_frags frags = {0};
    struct tok_ids out = {0};
    int rc = tokenizer__partition(t, text, len, parse_special, &frags);
    if (rc == 0 && add_special && t->add_bos)
        rc = tokenizer__push(&out, t->bos);
    if (rc == 0)
        rc = encode_fragments(t, text, &frags, &out);
    if (rc == 0 && add_special && last_special(t) >= 0)
        rc = tokenizer__push(&out, last_special(t));
    if (rc == 0 && out.v == NULL) { /* an empty result is still an array to free() */
        out.v = malloc(sizeof(*out.v));
        rc = out.v ? 0 : -ENOMEM;
    }
    free(frags.v);
    if (rc != 0) {
        free(out.v);
        return rc;
    }
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}

/* ---- Decoding ---------------------------------------------------------------- */

/* The cached piece of id, empty for control/unknown tokens unless special. */
static const char *
piece_of(const struct tokenizer *t, int32_t id, bool special, size_t *n)
{
    *n = !special && (t->attr[id] & attr_special) ? 0 : t->piece_len[id];
    return t->piece + t->piece_off[id];
}

int
tokenizer_piece(const struct tokenizer *t, int32_t id, bool special, char *buf, size_t len)
{
    if (id < 0 || id >= t->n_vocab)
        return -EINVAL;
    size_t n = 0;
    const char *p = piece_of(t, id, special, &n);
    if (n <= len && n > 0)
        memcpy(buf, p, n);
    return (int)n;
}

int
tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool special,
                 bool remove_leading_space, char *buf, size_t len)
{
    bool strip = remove_leading_space && t->add_space_prefix;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return -EINVAL;
        size_t pn = 0;
        const char *p = piece_of(t, ids[i], special, &pn);
        if (strip && pn > 0 && p[0] == ' ')
            p++, pn--;
        strip = false; /* only the first token's space, even if it printed nothing */
        if (total < len)
            memcpy(buf + total, p, pn < len - total ? pn : len - total);
        total += pn;
        if (total > INT_MAX)
            return -EOVERFLOW;
    }
    return (int)total;
}

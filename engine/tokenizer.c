/*
 * tokenizer.c - loading a tokenizer from GGUF metadata, as llama.cpp's
 * llama_vocab::impl::load() reads it, with every count and id checked.
 *
 * Keys: tokenizer.ggml.model ("llama" | "gpt2" | "bert"), .pre, .tokens,
 * .scores, .token_type, .merges (gpt2), the *_token_id keys, add_bos_token,
 * add_eos_token, add_space_prefix and, for bert, normalizer.lowercase and
 * normalizer.strip_accents. Token texts are copied into one NUL-terminated
 * arena and indexed by an open-addressing hash table (xxHash), so nothing
 * points into the GGUF buffer afterwards. Defaults follow llama.cpp: SPM
 * adds BOS (id 1) and a leading space; byte-level BPE adds neither unless
 * its pre-tokenizer or the file says so; WordPiece always puts [CLS] (the
 * BOS id, default 101) first and [SEP] (default 102) last, whatever the
 * add_*_token flags say.
 *
 * Stricter than llama.cpp, which warns and goes on: an id out of range, a
 * scores/token_type count that differs from the token count, a malformed
 * SPM byte token or merge is an -EINVAL with a one-line message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "gguf.h"
#include "tokenizer_int.h"

/* ---- Small shared helpers ------------------------------------------------ */

int
tokenizer__push(struct tok_ids *out, int32_t id)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 64;
        int32_t *v = realloc(out->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        out->v = v;
        out->cap = cap;
    }
    out->v[out->n++] = id;
    return 0;
}

int
tokenizer__span_push(struct tok_spans *s, size_t off, size_t len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        struct tok_span *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct tok_span){off, len};
    return 0;
}

uint64_t
tokenizer__hash(const void *s, size_t n)
{
    return XXH3_64bits(s, n);
}

int
tokenizer__map_init(struct tok_map *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->slots = malloc(cap * sizeof(*m->slots));
    if (m->slots == NULL)
        return -ENOMEM;
    memset(m->slots, 0xff, cap * sizeof(*m->slots));
    m->mask = cap - 1;
    return 0;
}

void
tokenizer__map_release(struct tok_map *m)
{
    free(m->slots);
    m->slots = NULL;
}

static bool
text_is(const struct tokenizer *t, int32_t id, const char *s, size_t n)
{
    return t->text_len[id] == n && memcmp(t->text + t->text_off[id], s, n) == 0;
}

int32_t
tokenizer__find(const struct tokenizer *t, const char *s, size_t n)
{
    size_t i = tokenizer__hash(s, n) & t->vocab.mask;
    for (;; i = (i + 1) & t->vocab.mask) {
        int32_t id = t->vocab.slots[i];
        if (id < 0 || text_is(t, id, s, n))
            return id;
    }
}

/* Inserts id; returns the id already holding the same text, or -1. */
static int32_t
vocab_insert(struct tokenizer *t, int32_t id)
{
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    size_t i = tokenizer__hash(s, n) & t->vocab.mask;
    for (;; i = (i + 1) & t->vocab.mask) {
        int32_t other = t->vocab.slots[i];
        if (other < 0) {
            t->vocab.slots[i] = id;
            return -1;
        }
        if (text_is(t, other, s, n))
            return other;
    }
}

/* ---- Model and pre-tokenizer names --------------------------------------- */

static int
read_model(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    struct gguf_str s;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &s);
    if (rc != 0) {
        tokenizer__err(err, errlen, "tokenizer.ggml.model: %s",
                       rc == -ENOENT ? "missing" : "expected a string");
        return -EINVAL;
    }
    int n = (int)(s.len > 64 ? 64 : s.len);
    if (s.len == 5 && memcmp(s.ptr, "llama", 5) == 0) {
        t->kind = TOK_SPM;
    } else if (s.len == 4 && memcmp(s.ptr, "gpt2", 4) == 0) {
        t->kind = TOK_BPE;
    } else if (s.len == 4 && memcmp(s.ptr, "bert", 4) == 0) {
        t->kind = TOK_WPM;
    } else {
        tokenizer__err(err, errlen,
                       "tokenizer.ggml.model: unknown tokenizer model '%.*s' "
                       "(expected 'llama', 'gpt2' or 'bert')", n, s.ptr);
        return -EINVAL;
    }
    return 0;
}

/* The pre-tokenizer name; "default" when absent, as llama.cpp falls back. */
static int
read_pre(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    struct gguf_str s = {"default", 7};
    int rc = t->kind == TOK_BPE ? gguf_get_str(g, "tokenizer.ggml.pre", &s) : -ENOENT;
    if (rc == -ENOENT) {
        s = (struct gguf_str){"default", 7};
    } else if (rc != 0) {
        tokenizer__err(err, errlen, "tokenizer.ggml.pre: expected a string");
        return -EINVAL;
    }
    if (s.len == 0 || s.len > 256 || memchr(s.ptr, '\0', s.len) != NULL) {
        tokenizer__err(err, errlen, "tokenizer.ggml.pre: unknown pre-tokenizer '%.*s'",
                       (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return -EINVAL;
    }
    t->pre_name = strndup(s.ptr, s.len);
    return t->pre_name ? 0 : -ENOMEM;
}

/* ---- Tokens, scores, types ----------------------------------------------- */

static int
tokens_array(const struct gguf *g, struct gguf_arr *a, char *err, size_t errlen)
{
    int rc = gguf_get_arr(g, "tokenizer.ggml.tokens", a);
    if (rc != 0 || a->type != GGUF_VT_STRING) {
        tokenizer__err(err, errlen, "tokenizer.ggml.tokens: %s",
                       rc == -ENOENT ? "missing" : "expected an array of strings");
        return -EINVAL;
    }
    if (a->n == 0 || a->n > INT32_MAX) {
        tokenizer__err(err, errlen, "tokenizer.ggml.tokens: %llu tokens (expected 1 to %d)",
                       (unsigned long long)a->n, INT32_MAX);
        return -EINVAL;
    }
    return 0;
}

/* Bytes of the arena: every text (empty ones become "[EMPTY_<id>]") plus NULs. */
static int
arena_size(const struct gguf_arr *a, size_t *total, char *err, size_t errlen)
{
    *total = 0;
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t len = a->strs[i].len ? a->strs[i].len : 32;
        if (len > UINT32_MAX / 2) {
            tokenizer__err(err, errlen, "tokenizer.ggml.tokens: token %llu is %llu bytes long",
                           (unsigned long long)i, (unsigned long long)len);
            return -EINVAL;
        }
        *total += len + 1;
    }
    return 0;
}

static int
alloc_vocab(struct tokenizer *t, size_t n, size_t total)
{
    t->text = malloc(total);
    t->text_off = malloc(n * sizeof(*t->text_off));
    t->text_len = malloc(n * sizeof(*t->text_len));
    t->score = calloc(n, sizeof(*t->score));
    t->attr = malloc(n * sizeof(*t->attr));
    t->eog = calloc(n, 1);
    if (!t->text || !t->text_off || !t->text_len || !t->score || !t->attr || !t->eog)
        return -ENOMEM;
    return tokenizer__map_init(&t->vocab, n);
}

static int
copy_texts(struct tokenizer *t, const struct gguf_arr *a, char *err, size_t errlen)
{
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const struct gguf_str *s = &a->strs[i];
        char *dst = t->text + off;
        size_t len = s->len;
        if (len == 0) {
            len = (size_t)sprintf(dst, "[EMPTY_%d]", i); /* llama.cpp's name for it */
        } else {
            memcpy(dst, s->ptr, len);
            dst[len] = '\0';
        }
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)len;
        if (t->text_len[i] > t->max_token_len)
            t->max_token_len = t->text_len[i];
        off += len + 1;
        int32_t dup = vocab_insert(t, i);
        if (dup >= 0) {
            tokenizer__err(err, errlen,
                           "tokenizer.ggml.tokens: duplicate token '%.*s' (ids %d and %d)",
                           (int)(len > 64 ? 64 : len), dst, dup, i);
            return -EINVAL;
        }
    }
    return 0;
}

static int
load_tokens(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    struct gguf_arr a;
    size_t total = 0;
    int rc = tokens_array(g, &a, err, errlen);
    if (rc == 0)
        rc = arena_size(&a, &total, err, errlen);
    if (rc != 0)
        return rc;
    t->n_vocab = (int32_t)a.n;
    rc = alloc_vocab(t, a.n, total);
    return rc ? rc : copy_texts(t, &a, err, errlen);
}

/* An optional numeric array with one entry per token. 1 if present, 0 if absent. */
static int
per_token_array(const struct tokenizer *t, const struct gguf *g, const char *key, bool ints,
                struct gguf_arr *a, char *err, size_t errlen)
{
    int rc = gguf_get_arr(g, key, a);
    if (rc == -ENOENT)
        return 0;
    bool numeric = rc == 0 && a->type != GGUF_VT_STRING && a->type != GGUF_VT_ARRAY &&
                   (!ints || (a->type != GGUF_VT_FLOAT32 && a->type != GGUF_VT_FLOAT64));
    if (!numeric) {
        tokenizer__err(err, errlen, "%s: expected an array of %s", key,
                       ints ? "integers" : "numbers");
        return -EINVAL;
    }
    if (a->n != (uint64_t)t->n_vocab) {
        tokenizer__err(err, errlen, "%s: %llu entries, expected %d (one per token)", key,
                       (unsigned long long)a->n, t->n_vocab);
        return -EINVAL;
    }
    return 1;
}

static uint32_t
attr_of_type(int64_t type)
{
    switch (type) {
    case TOKENIZER_NORMAL: return TOK_ATTR_NORMAL;
    case TOKENIZER_UNKNOWN: return TOK_ATTR_UNKNOWN;
    case TOKENIZER_CONTROL: return TOK_ATTR_CONTROL;
    case TOKENIZER_USER_DEFINED: return TOK_ATTR_USER_DEFINED;
    case TOKENIZER_UNUSED: return TOK_ATTR_UNUSED;
    case TOKENIZER_BYTE: return TOK_ATTR_BYTE;
    default: return 0; /* undefined, as llama.cpp maps unknown numbers */
    }
}

static int
load_scores_types(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    struct gguf_arr sc, ty;
    int has_sc = per_token_array(t, g, "tokenizer.ggml.scores", false, &sc, err, errlen);
    if (has_sc < 0)
        return has_sc;
    int has_ty = per_token_array(t, g, "tokenizer.ggml.token_type", true, &ty, err, errlen);
    if (has_ty < 0)
        return has_ty;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (has_sc)
            t->score[i] = (float)gguf_arr_f64(&sc, (uint64_t)i);
        int64_t type = has_ty ? gguf_arr_i64(&ty, (uint64_t)i) : TOKENIZER_NORMAL;
        t->attr[i] = attr_of_type(type);
    }
    return 0;
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xNN>" text, or -1 if the text has another form. */
static int
byte_of_text(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* SPM byte tokens must be "<0xNN>": token_to_piece turns them into that byte. */
static int
check_byte_tokens(const struct tokenizer *t, char *err, size_t errlen)
{
    for (int32_t i = 0; t->kind == TOK_SPM && i < t->n_vocab; i++) {
        const char *s = t->text + t->text_off[i];
        if ((t->attr[i] & TOK_ATTR_BYTE) && byte_of_text(s, t->text_len[i]) < 0) {
            tokenizer__err(err, errlen,
                           "tokenizer.ggml.tokens: token %d '%.*s' has type BYTE but is not "
                           "'<0xNN>' with two hex digits",
                           i, (int)(t->text_len[i] > 64 ? 64 : t->text_len[i]), s);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- Special ids and flags ----------------------------------------------- */

static void
set_defaults(struct tokenizer *t)
{
    int32_t *none[] = {&t->eot, &t->eom, &t->sep, &t->pad, &t->mask, &t->fim_pre,
                       &t->fim_suf, &t->fim_mid, &t->fim_pad, &t->fim_rep, &t->fim_sep};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        *none[i] = -1;
    if (t->kind == TOK_SPM) {
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = true, t->add_space_prefix = true;
    } else if (t->kind == TOK_WPM) {
        t->bos = 101, t->eos = -1, t->unk = 100; /* [CLS], none, [UNK] */
        t->sep = 102, t->pad = 0, t->mask = 103;  /* [SEP], [PAD], [MASK] */
        t->add_bos = true, t->add_space_prefix = false;
    } else {
        unsigned flags = tokenizer__pre_flags(t->pre);
        t->bos = flags & TOK_PRE_NO_BOS ? -1 : 11;
        t->eos = 11, t->unk = -1;
        t->add_bos = flags & TOK_PRE_ADD_BOS;
        t->ignore_merges = flags & TOK_PRE_IGNORE_MERGES;
        t->add_space_prefix = false;
    }
    t->add_eos = false;
    int32_t *dflt[] = {&t->bos, &t->eos, &t->unk, &t->sep, &t->pad, &t->mask};
    for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++) {
        if (*dflt[i] >= t->n_vocab)
            *dflt[i] = -1; /* llama.cpp disables a default that is out of range */
    }
}

/*
 * Reads an id key: absent keeps the default; -1 (or its u32 form) means none.
 * An auxiliary id (padding, mask, FIM...) out of range also means none, as
 * real files set padding_token_id = n_vocab and llama.cpp only warns; BOS,
 * EOS, UNK (and SEP for WordPiece) out of range are errors, since every
 * request would use them.
 */
static int
read_id(const struct tokenizer *t, const struct gguf *g, const char *key, int32_t *id,
        bool strict, char *err, size_t errlen)
{
    int64_t v = 0;
    int rc = gguf_get_i64(g, key, &v);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0) {
        tokenizer__err(err, errlen, "%s: expected an integer token id", key);
        return -EINVAL;
    }
    if (v == -1 || v == UINT32_MAX) {
        *id = -1;
        return 0;
    }
    if ((v < 0 || v >= t->n_vocab) && !strict) {
        *id = -1;
        return 0;
    }
    if (v < 0 || v >= t->n_vocab) {
        tokenizer__err(err, errlen, "%s: %lld is out of range (vocabulary has %d tokens)", key,
                       (long long)v, t->n_vocab);
        return -EINVAL;
    }
    *id = (int32_t)v;
    return 0;
}

static int
read_ids(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    const struct {
        const char *key;
        int32_t *id;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},
        {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.eot_token_id", &t->eot},
        {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.unknown_token_id", &t->unk},
        {"tokenizer.ggml.seperator_token_id", &t->sep},
        {"tokenizer.ggml.padding_token_id", &t->pad},
        {"tokenizer.ggml.mask_token_id", &t->mask},
        {"tokenizer.ggml.fim_pre_token_id", &t->fim_pre},
        {"tokenizer.ggml.fim_suf_token_id", &t->fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &t->fim_mid},
        {"tokenizer.ggml.fim_pad_token_id", &t->fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &t->fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &t->fim_sep},
        {"tokenizer.ggml.prefix_token_id", &t->fim_pre}, /* deprecated names */
        {"tokenizer.ggml.suffix_token_id", &t->fim_suf},
        {"tokenizer.ggml.middle_token_id", &t->fim_mid},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        bool strict = keys[i].id == &t->bos || keys[i].id == &t->eos || keys[i].id == &t->unk ||
                      (keys[i].id == &t->sep && t->kind == TOK_WPM);
        int rc = read_id(t, g, keys[i].key, keys[i].id, strict, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
read_flag(const struct gguf *g, const char *key, bool *flag, char *err, size_t errlen)
{
    int rc = gguf_get_bool(g, key, flag);
    if (rc == 0 || rc == -ENOENT)
        return 0;
    tokenizer__err(err, errlen, "%s: expected a bool", key);
    return -EINVAL;
}

/* A WordPiece id that every encode or word needs: missing is an error. */
static int
wpm_need(int32_t id, const char *key, const char *why, char *err, size_t errlen)
{
    if (id >= 0)
        return 0;
    tokenizer__err(err, errlen, "tokenizer.ggml.%s is not set, but a 'bert' vocabulary %s", key,
                   why);
    return -EINVAL;
}

/*
 * WordPiece, as llama.cpp: [CLS] and [SEP] whenever special tokens are asked
 * for, whatever add_bos_token/add_eos_token say; lowercase defaults to true
 * and strip_accents to lowercase.
 */
static int
wpm_flags(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    t->add_bos = true, t->add_eos = false;
    t->wpm_lowercase = true;
    int rc = read_flag(g, "tokenizer.ggml.normalizer.lowercase", &t->wpm_lowercase, err, errlen);
    t->wpm_strip_accents = t->wpm_lowercase;
    if (rc == 0)
        rc = read_flag(g, "tokenizer.ggml.normalizer.strip_accents", &t->wpm_strip_accents, err,
                       errlen);
    if (rc == 0)
        rc = wpm_need(t->bos, "bos_token_id", "puts it ([CLS]) first in every input", err,
                      errlen);
    if (rc == 0)
        rc = wpm_need(t->sep, "seperator_token_id", "puts it ([SEP]) last in every input", err,
                      errlen);
    if (rc == 0)
        rc = wpm_need(t->unk, "unknown_token_id", "gives it for a word it cannot split", err,
                      errlen);
    return rc;
}

static int
read_flags(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    int rc = read_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen);
    if (rc == 0)
        rc = read_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen);
    if (rc == 0)
        rc = read_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen);
    if (rc != 0)
        return rc;
    if (t->kind == TOK_WPM)
        return wpm_flags(t, g, err, errlen);
    if (t->add_bos && t->bos < 0) {
        tokenizer__err(err, errlen, "tokenizer.ggml.add_bos_token is true, but "
                                    "tokenizer.ggml.bos_token_id is not set");
        return -EINVAL;
    }
    if (t->add_eos && t->eos < 0) {
        tokenizer__err(err, errlen, "tokenizer.ggml.add_eos_token is true, but "
                                    "tokenizer.ggml.eos_token_id is not set");
        return -EINVAL;
    }
    return 0;
}

/* SPM byte fallback: "<0xNN>", else the byte as a one-byte token, else <unk>. */
static void
init_byte_tokens(struct tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char hex[7], one = (char)b;
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = tokenizer__find(t, hex, 6);
        if (id < 0)
            id = tokenizer__find(t, &one, 1);
        t->byte_token[b] = id >= 0 ? id : t->unk;
    }
}

/* ---- Lifecycle ------------------------------------------------------------ */

static int
load(struct tokenizer *t, const struct gguf *g, char *err, size_t errlen)
{
    int rc = read_model(t, g, err, errlen);
    if (rc == 0)
        rc = read_pre(t, g, err, errlen);
    if (rc == 0 && t->kind == TOK_BPE)
        rc = tokenizer__pre_new(t->pre_name, &t->pre, err, errlen);
    if (rc == 0)
        rc = load_tokens(t, g, err, errlen);
    if (rc == 0)
        rc = load_scores_types(t, g, err, errlen);
    if (rc == 0)
        rc = check_byte_tokens(t, err, errlen);
    if (rc == 0 && t->kind == TOK_BPE)
        rc = tokenizer__bpe_load(t, g, err, errlen);
    if (rc != 0)
        return rc;
    set_defaults(t);
    rc = read_ids(t, g, err, errlen);
    if (rc == 0)
        rc = read_flags(t, g, err, errlen);
    if (rc == 0)
        rc = tokenizer__special_init(t, g);
    if (rc == 0)
        rc = tokenizer__pieces_init(t);
    if (rc == 0)
        init_byte_tokens(t);
    return rc;
}

int
tokenizer_new(const struct gguf *g, struct tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    struct tokenizer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    int rc = load(t, g, err, errlen);
    if (rc != 0) {
        if (rc == -ENOMEM)
            tokenizer__err(err, errlen, "tokenizer: out of memory");
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void
tokenizer_free(struct tokenizer *t)
{
    if (t == NULL)
        return;
    free(t->pre_name);
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->score);
    free(t->attr);
    tokenizer__map_release(&t->vocab);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->special);
    free(t->eog);
    free(t->merges);
    free(t->merge_off);
    free(t->merge_llen);
    free(t->merge_rlen);
    tokenizer__map_release(&t->merge_map);
    tokenizer__pre_free(t->pre);
    free(t);
}

/* ---- Accessors ------------------------------------------------------------ */

int32_t
tokenizer_n_vocab(const struct tokenizer *t)
{
    return t->n_vocab;
}

int32_t
tokenizer_bos(const struct tokenizer *t)
{
    return t->bos;
}

int32_t
tokenizer_eos(const struct tokenizer *t)
{
    return t->eos;
}

bool
tokenizer_add_bos(const struct tokenizer *t)
{
    return t->add_bos;
}

bool
tokenizer_is_eog(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

const char *
tokenizer_token_text(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->text + t->text_off[id] : NULL;
}

/* The type llama.cpp acts on: the file's, after its fix-ups (e.g. EOG texts -> CONTROL). */
enum tokenizer_ttype
tokenizer_token_type(const struct tokenizer *t, int32_t id)
{
    static const struct {
        uint32_t attr;
        enum tokenizer_ttype type;
    } order[] = {
        {TOK_ATTR_UNKNOWN, TOKENIZER_UNKNOWN}, {TOK_ATTR_CONTROL, TOKENIZER_CONTROL},
        {TOK_ATTR_USER_DEFINED, TOKENIZER_USER_DEFINED}, {TOK_ATTR_BYTE, TOKENIZER_BYTE},
        {TOK_ATTR_UNUSED, TOKENIZER_UNUSED}, {TOK_ATTR_NORMAL, TOKENIZER_NORMAL},
    };
    for (size_t i = 0; id >= 0 && id < t->n_vocab && i < 6; i++) {
        if (t->attr[id] & order[i].attr)
            return order[i].type;
    }
    return TOKENIZER_UNDEFINED;
}

const char *
tokenizer_model_name(const struct tokenizer *t)
{
    switch (t->kind) {
    case TOK_SPM: return "llama";
    case TOK_BPE: return "gpt2";
    case TOK_WPM: return "bert";
    }
    return "";
}

const char *
tokenizer_pre_name(const struct tokenizer *t)
{
    return t->pre_name;
}

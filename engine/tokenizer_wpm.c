/*
 * tokenizer_wpm.c - WordPiece ("bert" vocabularies), as llama.cpp's
 * llm_tokenizer_wpm_session applies it.
 *
 * The fragment is read one code point at a time. With strip_accents, a code
 * point is first replaced by the first code point of its canonical
 * decomposition (llama.cpp's quirk: not a full NFD, so a Hangul syllable
 * keeps only its leading jamo) and marks are dropped. Whitespace ends a word;
 * NUL, U+FFFD and Cc/Cf/Co/Cs are dropped; the rest is lowercased (if asked)
 * and either appended to the current word or, for punctuation, ASCII
 * symbols and CJK ideographs, made a word of its own. Each word, with U+2581
 * before it, is matched greedily from the left, longest first, by bytes; a
 * word with a position that matches nothing becomes one unk token.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "tokenizer_int.h"

/* U+2581, the vocabulary's mark of a word start: 3 bytes of UTF-8. */
#define PHANTOM 0x2581
#define PHANTOM_LEN 3

/* ---- Classifying code points ---------------------------------------------- */

enum wpm_class {
    WPM_DROP,  /* not part of any word */
    WPM_SPACE, /* ends the current word */
    WPM_ALONE, /* a word of its own */
    WPM_PART   /* appended to the current word */
};

/* llama.cpp's whitespace set (its flags' is_whitespace), not a Unicode category. */
static bool
is_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* The CJK ideograph blocks of HF's BertPreTokenizer (0x2B920, not 0x2B820, as HF has it). */
static bool
is_cjk(int32_t c)
{
    return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
           (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b73f) ||
           (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b920 && c <= 0x2ceaf) ||
           (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

static enum wpm_class
classify(const struct tokenizer *t, int32_t c)
{
    if (is_space(c)) /* before the control check: \t, \n and U+0085 are Cc */
        return WPM_SPACE;
    if (c == 0 || c == 0xfffd)
        return WPM_DROP;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return WPM_DROP;
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
        return t->wpm_strip_accents ? WPM_DROP : WPM_PART;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return WPM_ALONE;
    case UTF8PROC_CATEGORY_SM:
    case UTF8PROC_CATEGORY_SC:
    case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
        return c < 0x7f ? WPM_ALONE : WPM_PART;
    default: /* letters, numbers, separators, unassigned (Cn is kept) */
        return is_cjk(c) ? WPM_ALONE : WPM_PART;
    }
}

/* The first code point of c's canonical decomposition, or c if it has none. */
static int32_t
nfd_first(int32_t c)
{
    utf8proc_int32_t d[4];
    int boundclass = 0; /* unused without UTF8PROC_CHARBOUND */
    utf8proc_ssize_t n = utf8proc_decompose_char(c, d, 4, UTF8PROC_DECOMPOSE, &boundclass);
    return n >= 1 ? d[0] : c; /* d[0] is written even when the whole needs more room */
}

/* ---- WordPiece ------------------------------------------------------------- */

/* The current word, always starting with U+2581: v[0..n), room for cap bytes. */
struct wpm_word {
    char *v;
    size_t n, cap;
};

/* Appends code point c in UTF-8. */
static int
word_add(struct wpm_word *w, int32_t c)
{
    if (w->cap - w->n < 4) {
        if (w->cap > SIZE_MAX / 2)
            return -ENOMEM;
        size_t cap = w->cap ? 2 * w->cap : 64;
        char *v = realloc(w->v, cap);
        if (v == NULL)
            return -ENOMEM;
        w->v = v;
        w->cap = cap;
    }
    w->n += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)w->v + w->n);
    return 0;
}

/* Greedy longest match of w[0..n) from the left; any gap makes it one unk. */
static int
wordpiece(const struct tokenizer *t, const char *w, size_t n, struct tok_ids *out)
{
    size_t start = out->n, max = (size_t)t->max_token_len + 1;
    for (size_t i = 0; i < n;) {
        size_t j = n - i < max ? n : i + max; /* llama.cpp tries one byte past the longest */
        int32_t id = -1;
        while (j > i && (id = tokenizer__find(t, w + i, j - i)) < 0)
            j--;
        if (id < 0) {
            out->n = start; /* drop what the word matched so far */
            return tokenizer__push(out, t->unk);
        }
        int rc = tokenizer__push(out, id);
        if (rc != 0)
            return rc;
        i = j;
    }
    return 0;
}

/* Tokenizes the current word, if it has anything after U+2581, and starts a new one. */
static int
word_end(const struct tokenizer *t, struct wpm_word *w, struct tok_ids *out)
{
    int rc = w->n > PHANTOM_LEN ? wordpiece(t, w->v, w->n, out) : 0;
    w->n = PHANTOM_LEN;
    return rc;
}

/* Normalises code point c and adds it to the words. */
static int
feed(const struct tokenizer *t, struct wpm_word *w, int32_t c, struct tok_ids *out)
{
    if (t->wpm_strip_accents)
        c = nfd_first(c);
    enum wpm_class k = classify(t, c);
    if (k == WPM_DROP)
        return 0;
    if (k == WPM_SPACE)
        return word_end(t, w, out);
    if (t->wpm_lowercase)
        c = utf8proc_tolower(c);
    int rc = k == WPM_ALONE ? word_end(t, w, out) : 0;
    if (rc == 0)
        rc = word_add(w, c);
    if (rc == 0 && k == WPM_ALONE)
        rc = word_end(t, w, out);
    return rc;
}

int
tokenizer__wpm_encode(const struct tokenizer *t, const char *text, size_t len,
                      struct tok_ids *out)
{
    struct wpm_word w = {NULL, 0, 0};
    int rc = word_add(&w, PHANTOM);
    assert(rc != 0 || w.n == PHANTOM_LEN);
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)text;
    for (size_t i = 0; i < len && rc == 0;) {
        utf8proc_int32_t c = 0;
        utf8proc_ssize_t step = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &c);
        assert(step > 0); /* tokenizer_encode() checked the UTF-8 */
        i += (size_t)step;
        rc = feed(t, &w, c, out);
    }
    if (rc == 0)
        rc = word_end(t, &w, out);
    free(w.v);
    return rc;
}
